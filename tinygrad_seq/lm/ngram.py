"""Count-based baselines: interpolated Kneser-Ney bigram and trigram models.

The yardstick a recurrent language model has to beat. Fitted on the training sequences only;
every discount comes from the training counts (Ney's estimate `D = n₁ / (n₁ + 2 n₂)`, with
`n_k` the number of n-grams seen exactly k times), so nothing is tuned on held-out text.

For an order-n model with history h = y<t-n+1..t-1> and h' = h without its oldest token:

    P(w | h) = max(c(h, w) − D, 0) / c(h) + D · N₁₊(h •) / c(h) · P(w | h')

where c counts n-grams at the highest order and counts *continuations* N₁₊(• h w) at lower
orders; an unseen history falls back to P(w | h'). The unigram level interpolates with the
uniform distribution over the vocabulary, so every token, `<UNK>` included, has P > 0.
A sequence is padded on the left with n − 1 start symbols (the counterpart of `x<1> = 0`)
and ends with `<EOS>`, which is predicted like any other token.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from .model import perplexity_of

_START = -1  # the left-padding symbol; never predicted


class KneserNey:
    """Interpolated Kneser-Ney n-gram model over token ids `0 .. vocab_size − 1`.

    >>> seqs = [[2, 3, 0], [2, 2, 3, 0], [3, 2, 0]]
    >>> lm = KneserNey(order=2, vocab_size=4).fit(seqs)
    >>> round(sum(lm.prob(w, [2]) for w in range(4)), 6)
    1.0
    >>> lm.perplexity(seqs) < lm.perplexity([[3, 3, 3, 0]])
    True
    """

    def __init__(self, order: int, vocab_size: int) -> None:
        if order < 1:
            raise ValueError(f"n-gram order must be at least 1, got {order}")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.order, self.vocab_size = order, vocab_size
        # per order k (1..n): counts[k][history][w], with len(history) == k − 1
        self.counts: list[dict[tuple[int, ...], Counter[int]]] = []
        self.discounts: list[float] = []

    def fit(self, sequences: Iterable[Sequence[int]]) -> KneserNey:
        """Count the n-grams of `sequences` (each ending with `<EOS>`)."""
        n = self.order
        top: dict[tuple[int, ...], Counter[int]] = defaultdict(Counter)
        for seq in sequences:
            padded = [_START] * (n - 1) + [int(w) for w in seq]
            for t in range(n - 1, len(padded)):
                top[tuple(padded[t - n + 1 : t])][padded[t]] += 1
        levels = [top]
        # each lower order counts distinct left extensions: N₁₊(• h' w)
        for _ in range(n - 1):
            higher, lower = levels[0], defaultdict(Counter)
            for history, following in higher.items():
                for w in following:
                    lower[history[1:]][w] += 1
            levels.insert(0, lower)
        self.counts = [dict(level) for level in levels]
        self.discounts = [_ney_discount(level) for level in self.counts]
        self._totals = [{h: sum(c.values()) for h, c in level.items()} for level in self.counts]
        return self

    def prob(self, w: int, history: Sequence[int]) -> float:
        """P(w | history), using the last `order − 1` tokens (fewer at a sequence start)."""
        if not self.counts:
            raise RuntimeError("KneserNey.prob before fit()")
        history = tuple(int(h) for h in history)
        history = ((_START,) * (self.order - 1) + history)[len(history) :]
        p = 1.0 / self.vocab_size
        for k in range(self.order):  # k = length of the history at this level
            h = history[len(history) - k :] if k else ()
            following = self.counts[k].get(h)
            if following is None:
                continue
            total, d = self._totals[k][h], self.discounts[k]
            p = (max(following.get(w, 0) - d, 0.0) + d * len(following) * p) / total
        return p

    def log_prob(self, seq: Sequence[int]) -> float:
        """Σ_t log P(y<t> | y<t-n+1..t-1>) for one sequence."""
        seq = [int(w) for w in seq]
        n = self.order - 1
        return sum(math.log(self.prob(w, seq[max(t - n, 0) : t])) for t, w in enumerate(seq))

    def perplexity(self, sequences: Iterable[Sequence[int]]) -> float:
        """exp of the mean negative log-likelihood per token over all `sequences`."""
        nll, tokens = 0.0, 0
        for seq in sequences:
            nll -= self.log_prob(seq)
            tokens += len(seq)
        if tokens == 0:
            raise ValueError("perplexity of an empty set of sequences")
        return perplexity_of(nll, tokens)


def _ney_discount(level: dict[tuple[int, ...], Counter[int]]) -> float:
    """D = n₁ / (n₁ + 2 n₂), kept inside [0.1, 0.9] for tiny or degenerate counts."""
    count_of_counts = Counter(c for following in level.values() for c in following.values())
    n1, n2 = count_of_counts[1], count_of_counts[2]
    d = n1 / (n1 + 2 * n2) if n1 + n2 else 0.75
    return min(max(d, 0.1), 0.9)
