"""Many-to-many, T_x ≠ T_y: an encoder–decoder that writes numbers in words as digits.

    x = "three hundred and forty two"     T_x = 5 words
    y = "3 4 2 <EOS>"                     T_y = 4 symbols

The lengths differ and are not aligned, so no single RNN reads x<t> and writes y<t> at the
same step. The encoder reads the whole input first and hands its final state on; the decoder
starts from it and writes one digit per step, each fed back as the next step's input:

    encoder:  a<t> = GRU(x<t>, a<t-1>),  t = 1..T_x          →  a<T_x>
    decoder:  s<0> = a<T_x>;  s<t> = GRU(y<t-1>, s<t-1>);  ŷ<t> = softmax(W_y s<t> + b_y)

(trained with the true y<t-1> as input, "teacher forcing"; at test time it reads back its
own greedy choice). The numbers 0–999 are split: one in five is never seen in training, and
the accuracy is the fraction of those held-out numbers written exactly right.

Run it: `python examples/words_to_digits.py` (prints a few translations and the accuracy).
"""

from __future__ import annotations

import argparse

import numpy as np

import tinygrad_seq
from tinygrad_seq import Tensor
from tinygrad_seq.nn import Embedding, GRUCell, Linear, Module, Recurrent
from tinygrad_seq.nn.functional import cross_entropy
from tinygrad_seq.optim import Adam

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen \
fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
WORDS = ["<pad>", *ONES, *TENS[2:], "hundred", "and"]
WORD_ID = {w: i for i, w in enumerate(WORDS)}
EOS, START = 10, 11  # output symbols: the digits 0-9, then <EOS>; <START> is input only
MAX_T_Y = 4  # three digits and <EOS>


def in_words(n: int) -> str:
    """0 ≤ n ≤ 999 in British English: 342 → "three hundred and forty two"."""
    hundreds, rest = divmod(n, 100)
    if rest < 20:
        tail = ONES[rest]
    else:
        tail = TENS[rest // 10] + ("" if rest % 10 == 0 else " " + ONES[rest % 10])
    if hundreds == 0:
        return tail
    return f"{ONES[hundreds]} hundred" + ("" if rest == 0 else f" and {tail}")


def encode(numbers: np.ndarray):
    """Inputs (B, T_x) of word ids with their lengths, and targets (B, T_y) of digits + EOS,
    padded with −1 (ignored by the loss)."""
    sentences = [in_words(int(n)).split() for n in numbers]
    x = np.zeros((len(numbers), max(map(len, sentences))), np.int64)
    for b, words in enumerate(sentences):
        x[b, : len(words)] = [WORD_ID[w] for w in words]
    y = np.full((len(numbers), MAX_T_Y), -1, np.int64)
    for b, n in enumerate(numbers):
        digits = [int(d) for d in str(int(n))] + [EOS]
        y[b, : len(digits)] = digits
    return x, np.array([len(s) for s in sentences]), y


class Translator(Module):
    """A GRU encoder over word embeddings; a GRU decoder over digit embeddings."""

    def __init__(self, hidden: int = 64, dim: int = 16) -> None:
        self.embed_in = Embedding(len(WORDS), dim)
        self.encoder = Recurrent(GRUCell(dim, hidden))
        self.embed_out = Embedding(START + 1, dim)
        self.decoder = Recurrent(GRUCell(dim, hidden))
        self.out = Linear(hidden, EOS + 1)

    def encode(self, x: np.ndarray, lengths: np.ndarray) -> Tensor:
        _, a_last = self.encoder(self.embed_in(x), lengths=lengths)  # a<T_x> of each input
        return a_last

    def forward(self, x: np.ndarray, lengths: np.ndarray, y: np.ndarray) -> Tensor:
        """Logits (B, T_y, 11) with teacher forcing: decoder inputs <START>, y<1>, y<2>, …"""
        previous = np.concatenate([np.full((len(y), 1), START), np.maximum(y[:, :-1], 0)], 1)
        s, _ = self.decoder(self.embed_out(previous), state=self.encode(x, lengths))
        return self.out(s)

    def translate(self, x: np.ndarray, lengths: np.ndarray) -> list[str]:
        """Greedy decoding: each step's most likely digit is the next step's input."""
        with tinygrad_seq.no_grad():
            s = self.encode(x, lengths)
            previous = np.full(len(x), START)
            written = np.zeros((len(x), MAX_T_Y), np.int64)
            for t in range(MAX_T_Y):
                s = self.decoder.cell(self.embed_out(previous), s)
                previous = self.out(s).data.argmax(axis=-1)
                written[:, t] = previous
        texts = []
        for row in written:
            digits = list(row)
            texts.append(
                "".join(map(str, digits[: digits.index(EOS)] if EOS in digits else digits))
            )
        return texts


def main(steps: int = 400, seed: int = 0, verbose: bool = False) -> float:
    """Train for `steps` Adam steps; return the exact-match accuracy on held-out numbers."""
    tinygrad_seq.manual_seed(seed)
    rng = np.random.default_rng(seed)
    numbers = rng.permutation(1000)
    held_out, train = numbers[:200], numbers[200:]
    model = Translator()
    opt = Adam(model.parameters(), lr=0.01)
    for step in range(steps):
        x, lengths, y = encode(rng.choice(train, 64))
        logits = model(x, lengths, y)
        loss = cross_entropy(logits.reshape(-1, EOS + 1), y.reshape(-1), ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose and step % 100 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    x, lengths, _ = encode(held_out)
    written = model.translate(x, lengths)
    if verbose:
        for n, text in list(zip(held_out, written, strict=True))[:5]:
            print(f"{in_words(int(n))!r:>34} → {text}")
    return float(np.mean([text == str(int(n)) for n, text in zip(held_out, written, strict=True)]))


if __name__ == "__main__":
    tinygrad_seq.tune_allocator()  # a script owns its process (see README)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"held-out numbers written exactly right: {main(args.steps, args.seed, verbose=True):.3f}"
    )
