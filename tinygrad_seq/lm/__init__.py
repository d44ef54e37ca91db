"""Language models: learn P(y<t> | y<1..t-1>) from a corpus and sample novel sequences.

>>> import tinygrad_seq
>>> from tinygrad_seq.lm import LanguageModel, Vocab, perplexity, sample
>>> vocab = Vocab.from_text("tyrannosaurus\\nvelociraptor\\n")
>>> model = LanguageModel(len(vocab), hidden_size=16, cell="lstm")
>>> ids = [vocab.encode("trex") + [vocab.eos_id]]
>>> perplexity(model, ids) > 1.0
True
>>> isinstance(sample(model, vocab, seed=0, max_len=5), str)
True

`tinygrad-seq train` (see `train.py`) trains one on the bundled dinosaur names.
"""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data import CorpusError, read_corpus
from .model import LanguageModel, perplexity, stream_perplexity
from .ngram import KneserNey
from .sampling import sample
from .vocab import Vocab

__all__ = [
    "Checkpoint",
    "CorpusError",
    "KneserNey",
    "LanguageModel",
    "Vocab",
    "load_checkpoint",
    "perplexity",
    "read_corpus",
    "sample",
    "save_checkpoint",
    "stream_perplexity",
]
