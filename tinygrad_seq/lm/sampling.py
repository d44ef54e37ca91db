"""Sampling novel sequences from a trained `LanguageModel`, one token at a time.

    x<1> = 0;  then repeatedly  ŷ<t> = softmax(z<t> / τ),  y<t> ~ ŷ<t>,  x<t+1> = y<t>

until `<EOS>` is drawn or `max_len` new tokens are out. The temperature τ sharpens (τ < 1)
or flattens (τ > 1) the distribution; `top_k` keeps only the k most likely tokens (k = 1 is
greedy decoding). The cell is stepped incrementally: each new token costs one cell step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..autograd import no_grad
from .model import LanguageModel, evaluating
from .vocab import Vocab


def sample(
    model: LanguageModel,
    vocab: Vocab,
    max_len: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | np.random.Generator | None = None,
    prefix: str = "",
) -> str:
    """Draw one sequence: `prefix` followed by up to `max_len` new tokens (no `<EOS>`).

    The same `seed` gives the same text; `seed=None` draws from a fresh generator and leaves
    every global random state alone. A `np.random.Generator` may be passed as `seed` to draw
    several samples from one stream. At word level the prefix and the new words are joined
    by a space.

    >>> import tinygrad_seq
    >>> from tinygrad_seq.lm import LanguageModel, Vocab
    >>> vocab = Vocab.from_text("abc\\nbca\\n")
    >>> model = LanguageModel(len(vocab), hidden_size=8)
    >>> sample(model, vocab, seed=3) == sample(model, vocab, seed=3)
    True
    >>> sample(model, vocab, max_len=4, top_k=1, prefix="ab").startswith("ab")
    True
    """
    check_sampling_args(max_len, temperature, top_k)
    if len(vocab) != model.vocab_size:
        raise ValueError(
            f"sample: the vocabulary has {len(vocab)} tokens but the model predicts "
            f"{model.vocab_size}"
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    new: list[int] = []
    with no_grad(), evaluating(model):
        logits, state = model.step(None)  # x<1> = 0
        for token in vocab.encode(prefix):
            logits, state = model.step([token], state)
        for _ in range(max_len):
            token = draw(logits.data[0], rng, temperature, top_k)
            if token == vocab.eos_id:
                break
            new.append(token)
            logits, state = model.step([token], state)
    text = vocab.decode(new)
    joiner = " " if vocab.level == "word" and prefix.strip() and text else ""
    return prefix + joiner + text


def draw(
    logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None
) -> int:
    """One token id drawn from softmax(logits / τ), restricted to the `top_k` largest.

    >>> rng = np.random.default_rng(0)
    >>> draw(np.array([0.0, 3.0, 1.0]), rng, top_k=1)
    1
    """
    z = np.asarray(logits, dtype=np.float64) / temperature
    if top_k is not None and top_k < z.size:
        kept = np.argsort(-z, kind="stable")[:top_k]  # ties go to the lower id, as argmax
        z = np.where(np.isin(np.arange(z.size), kept), z, -np.inf)
    p = np.exp(z - z.max())
    cdf = np.cumsum(p)
    index = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return min(index, z.size - 1)


def check_sampling_args(max_len: Any, temperature: Any, top_k: Any) -> None:
    """`ValueError` for a temperature that is not > 0, `top_k < 1` or a negative `max_len`."""
    try:
        temperature = float(temperature)  # Python and NumPy numbers, 0-d arrays
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a finite number, got {temperature!r}") from None
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number, got {temperature!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use top_k=1 for greedy)")
    if top_k is not None and (not isinstance(top_k, int | np.integer) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if not isinstance(max_len, int | np.integer) or max_len < 0:
        raise ValueError(f"max_len must be a non-negative integer, got {max_len!r}")
