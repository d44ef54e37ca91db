"""Many-to-many, T_x = T_y: a named-entity tagger that marks which words are names.

    x = "he said teddy roosevelt was a great president"     T_x = 8 words
    y =   0   0    1      1      0   0   0       0           T_y = 8 tags, ŷ<t> = P(name)

One output per input word. A name is sometimes known only from the words *after* it: in
"teddy bears are on sale" teddy is not a name, in "teddy roosevelt was a great president" it
is. So the tagger is a bidirectional RNN: ŷ<t> = σ(W_y [a→<t>, a←<t>] + b_y) sees the whole
sentence. The sentences are generated here from a few templates (no download).

Run it: `python examples/ner_tagger.py` (prints the accuracy on held-out sentences).
"""

from __future__ import annotations

import argparse

import numpy as np

import tinygrad_seq
from tinygrad_seq.nn import Bidirectional, Embedding, GRUCell, Linear, Module
from tinygrad_seq.nn.functional import binary_cross_entropy_with_logits
from tinygrad_seq.optim import Adam

FIRST = ["harry", "hermione", "ron", "ginny", "luna", "neville", "albus", "sirius", "minerva"]
LAST = ["potter", "granger", "weasley", "lovegood", "longbottom", "dumbledore", "black"]
PLACES = ["hogwarts", "london", "the library", "the garden", "the station", "the shop"]
THINGS = ["a new spell", "a broom", "an owl", "the map", "a letter", "the book"]

# (template, tags): "F" a first name, "L" a last name, "P" a place, "T" a thing; words in a
# slot filled from a list are tagged 1 when the slot is F or L, else 0.
TEMPLATES = [
    "F L and F L invented T",
    "F met F at P",
    "yesterday F L went to P",
    "F gave T to F",
    "he said teddy roosevelt was a great president",
    "he said teddy bears are on sale",
    "teddy bears are in P",
    "teddy L found T",
    "F saw teddy bears at P",
    "the owl brought T to F L",
]


def sentence(rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """One generated sentence and its tags (1 for each word of a name)."""
    words: list[str] = []
    tags: list[int] = []
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    for slot in template.split():
        pool = {"F": FIRST, "L": LAST, "P": PLACES, "T": THINGS}.get(slot)
        filler = (pool[rng.integers(len(pool))] if pool else slot).split()
        words += filler
        tags += [int(slot in "FL")] * len(filler)
    for i, w in enumerate(words):  # teddy is a name exactly when a surname follows it
        if w == "teddy":
            tags[i] = int(i + 1 < len(words) and words[i + 1] in (*LAST, "roosevelt"))
        if w == "roosevelt":
            tags[i] = 1
    return words, tags


def dataset(n: int, rng: np.random.Generator, vocab: dict[str, int]):
    """`n` sentences as padded ids (n, T), tags (n, T) and lengths (n,)."""
    sentences = [sentence(rng) for _ in range(n)]
    T = max(len(w) for w, _ in sentences)
    ids = np.zeros((n, T), np.int64)
    tags = np.zeros((n, T), np.float32)
    lengths = np.array([len(w) for w, _ in sentences])
    for b, (words, y) in enumerate(sentences):
        ids[b, : len(words)] = [vocab[w] for w in words]
        tags[b, : len(y)] = y
    return ids, tags, lengths


def build_vocab() -> dict[str, int]:
    words = {"<pad>"}
    for template in TEMPLATES:
        words.update(template.split())
    for pool in (FIRST, LAST, PLACES, THINGS):
        for item in pool:
            words.update(item.split())
    return {w: i for i, w in enumerate(sorted(words, key=lambda w: (w != "<pad>", w)))}


class Tagger(Module):
    """ŷ<t> = σ(W_y [a→<t>, a←<t>] + b_y) over a bidirectional GRU of word embeddings."""

    def __init__(self, vocab_size: int, dim: int = 16, hidden: int = 16) -> None:
        self.embed = Embedding(vocab_size, dim)
        self.brnn = Bidirectional(GRUCell(dim, hidden), GRUCell(dim, hidden))
        self.out = Linear(2 * hidden, 1)

    def forward(self, ids: np.ndarray, lengths: np.ndarray):
        outputs, _ = self.brnn(self.embed(ids), lengths=lengths)  # (B, T, 2 n_a)
        return self.out(outputs).reshape(ids.shape)  # logits of P(name), (B, T)


def main(steps: int = 100, seed: int = 0, verbose: bool = False) -> float:
    """Train for `steps` Adam steps; return the tag accuracy on 500 held-out sentences."""
    tinygrad_seq.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocab = build_vocab()
    model = Tagger(len(vocab))
    opt = Adam(model.parameters(), lr=0.02)
    for step in range(steps):
        ids, tags, lengths = dataset(32, rng, vocab)
        mask = (np.arange(ids.shape[1]) < lengths[:, None]).astype(np.float32)
        loss_each = binary_cross_entropy_with_logits(model(ids, lengths), tags, reduction="none")
        loss = (loss_each * mask).sum() * (1.0 / mask.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose and step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    ids, tags, lengths = dataset(500, np.random.default_rng(seed + 10_000), vocab)
    with tinygrad_seq.no_grad():
        predicted = model(ids, lengths).data > 0
    mask = np.arange(ids.shape[1]) < lengths[:, None]
    accuracy = float((predicted == (tags > 0))[mask].mean())
    if verbose:
        teddy = mask & (ids == vocab["teddy"])
        print(f"'teddy' tagged right: {(predicted == (tags > 0))[teddy].mean():.3f}")
        print(f"always-'not a name' baseline: {1 - tags[mask].mean():.3f}")
    return accuracy


if __name__ == "__main__":
    tinygrad_seq.tune_allocator()  # a script owns its process (see README)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"tag accuracy: {main(args.steps, args.seed, verbose=True):.3f}")
