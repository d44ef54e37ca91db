"""One-to-many: a language model that invents new dinosaur-like names by sampling.

    x<1> = 0  →  ŷ<1>, ŷ<2>, …, ŷ<T_y> = "mokisaurus<EOS>"       one (empty) input, many outputs

Training learns P(y<t> | y<1>, …, y<t-1>) with `tinygrad_seq.lm.LanguageModel`; generation
draws y<1> from ŷ<1>, feeds it back as x<2>, and so on until `<EOS>` (`tinygrad_seq.lm.sample`).
The training names are generated here by a small grammar, one to three syllables of a
consonant and a vowel, then one of four endings:

    name = (consonant vowel){1,3} (saurus | raptor | don | tops)

so a sample can be checked: the accuracy is the fraction of sampled names (temperature 1,
as the course samples) made of consonant-vowel syllables and an ending. An untrained
model's samples never are.

Run it: `python examples/generate_names.py` (prints a few samples and the accuracy).
"""

from __future__ import annotations

import argparse
import re

import numpy as np

import tinygrad_seq
from tinygrad_seq.lm import LanguageModel, Vocab, sample
from tinygrad_seq.optim import Adam

CONSONANTS = "bdgklmnprstvz"
VOWELS = "aeiou"
ENDINGS = ["saurus", "raptor", "don", "tops"]
# what a sample must look like to count: syllables (of any number), then an ending
GRAMMAR = re.compile(rf"^([{CONSONANTS}][{VOWELS}])+({'|'.join(ENDINGS)})$")


def names(n: int, rng: np.random.Generator) -> list[str]:
    """`n` names drawn from the grammar."""
    syllables = rng.integers(1, 4, n)
    consonants = rng.integers(len(CONSONANTS), size=(n, 3))
    vowels = rng.integers(len(VOWELS), size=(n, 3))
    endings = rng.integers(len(ENDINGS), size=n)
    return [
        "".join(CONSONANTS[c] + VOWELS[v] for c, v in zip(cs[:k], vs[:k], strict=True)) + ENDINGS[e]
        for k, cs, vs, e in zip(syllables, consonants, vowels, endings, strict=True)
    ]


def batch(words: list[str], vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """Padded ids (B, T) with `<EOS>` ending each name, and the lengths (EOS included)."""
    seqs = [[*vocab.encode(w), vocab.eos_id] for w in words]
    lengths = np.array([len(s) for s in seqs])
    ids = np.full((len(seqs), lengths.max()), vocab.eos_id, np.int64)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = s
    return ids, lengths


def main(steps: int = 300, seed: int = 0, verbose: bool = False) -> float:
    """Train for `steps` Adam steps; return the fraction of 200 samples that follow the grammar."""
    tinygrad_seq.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocab = Vocab.from_text("\n".join([CONSONANTS, VOWELS, *ENDINGS]))
    model = LanguageModel(len(vocab), hidden_size=32, cell="gru")
    opt = Adam(model.parameters(), lr=0.02)
    for step in range(steps):
        ids, lengths = batch(names(64, rng), vocab)
        # maximise log P(y<1>, …, y<T_y>) = Σ_t log P(y<t> | y<1..t-1>), per token
        loss = -model.log_prob(ids, lengths).sum() * (1.0 / lengths.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose and step % 50 == 0:
            print(f"step {step:4d}  loss per token {loss.item():.4f}")
    draws = np.random.default_rng(seed + 10_000)
    samples = [sample(model, vocab, max_len=20, seed=draws) for _ in range(200)]
    if verbose:
        print("samples:", ", ".join(samples[:8]))
    return sum(bool(GRAMMAR.match(s)) for s in samples) / len(samples)


if __name__ == "__main__":
    tinygrad_seq.tune_allocator()  # a script owns its process (see README)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"samples that follow the grammar: {main(args.steps, args.seed, verbose=True):.3f}")
