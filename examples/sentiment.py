"""Many-to-one: a sentiment classifier that reads a whole review, then answers once.

    x = "the plot was not very good"      T_x = 6 words
    ŷ = σ(w_y · a<T_x> + b_y) = P(positive)                 one output, from the final state

Word order matters: "not" flips the words after it, so "the plot was not very good" is
negative and "the plot was very good" positive, with nearly the same bag of words. A model
that ignored order would be stuck near 75 % on these reviews; the LSTM reads them in order.
The reviews are generated here from a few templates (no download).

Run it: `python examples/sentiment.py` (prints the accuracy on held-out reviews).
"""

from __future__ import annotations

import argparse

import numpy as np

import tinygrad_seq
from tinygrad_seq.nn import Embedding, Linear, LSTMCell, Module, Recurrent
from tinygrad_seq.nn.functional import binary_cross_entropy_with_logits
from tinygrad_seq.optim import Adam

SUBJECTS = ["the movie", "this film", "the plot", "the acting", "the ending", "the music"]
VERBS = ["was", "is", "seemed", "felt"]
POSITIVE = ["good", "great", "wonderful", "funny", "moving", "brilliant"]
NEGATIVE = ["bad", "boring", "awful", "dull", "silly", "terrible"]
INTENSIFIERS = ["", "", "very", "really", "quite"]


def review(rng: np.random.Generator) -> tuple[list[str], int]:
    """One review and its label (1 positive, 0 negative)."""
    positive = bool(rng.integers(2))
    negated = bool(rng.integers(2))
    if rng.random() < 0.1:  # the course's example, and its mirror image
        return (
            ("there is nothing to like in this movie".split(), 0)
            if rng.integers(2)
            else (
                "there is nothing to dislike in this movie".split(),
                1,
            )
        )
    words = [*rng.choice(SUBJECTS).split(), str(rng.choice(VERBS))]
    if negated:
        words.append("not")
    words += [w for w in [str(rng.choice(INTENSIFIERS))] if w]
    words.append(str(rng.choice(POSITIVE if positive else NEGATIVE)))
    return words, int(positive != negated)


def build_vocab() -> dict[str, int]:
    words = {"<pad>", "not", "there", "is", "nothing", "to", "like", "dislike", "in", "this"}
    for pool in (SUBJECTS, VERBS, POSITIVE, NEGATIVE, INTENSIFIERS):
        for item in pool:
            words.update(item.split())
    return {w: i for i, w in enumerate(sorted(words, key=lambda w: (w != "<pad>", w)))}


def dataset(n: int, rng: np.random.Generator, vocab: dict[str, int]):
    """`n` reviews as padded ids (n, T), lengths (n,) and labels (n,)."""
    reviews = [review(rng) for _ in range(n)]
    T = max(len(w) for w, _ in reviews)
    ids = np.zeros((n, T), np.int64)
    for b, (words, _) in enumerate(reviews):
        ids[b, : len(words)] = [vocab[w] for w in words]
    lengths = np.array([len(w) for w, _ in reviews])
    labels = np.array([y for _, y in reviews], np.float32)
    return ids, lengths, labels


class Classifier(Module):
    """ŷ = σ(w_y · a<T_x> + b_y): an LSTM over word embeddings, read out at its last step."""

    def __init__(self, vocab_size: int, dim: int = 16, hidden: int = 24) -> None:
        self.embed = Embedding(vocab_size, dim)
        self.rnn = Recurrent(LSTMCell(dim, hidden))
        self.out = Linear(hidden, 1)

    def forward(self, ids: np.ndarray, lengths: np.ndarray):
        _, (a_last, _c_last) = self.rnn(self.embed(ids), lengths=lengths)  # a<T_x> per review
        return self.out(a_last).reshape(-1)  # logit of P(positive), (B,)


def main(steps: int = 150, seed: int = 0, verbose: bool = False) -> float:
    """Train for `steps` Adam steps; return the accuracy on 1000 held-out reviews."""
    tinygrad_seq.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocab = build_vocab()
    model = Classifier(len(vocab))
    opt = Adam(model.parameters(), lr=0.02)
    for step in range(steps):
        ids, lengths, labels = dataset(32, rng, vocab)
        loss = binary_cross_entropy_with_logits(model(ids, lengths), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose and step % 50 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    ids, lengths, labels = dataset(1000, np.random.default_rng(seed + 10_000), vocab)
    with tinygrad_seq.no_grad():
        predicted = model(ids, lengths).data > 0
    return float((predicted == (labels > 0)).mean())


if __name__ == "__main__":
    tinygrad_seq.tune_allocator()  # a script owns its process (see README)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"accuracy: {main(args.steps, args.seed, verbose=True):.3f}")
