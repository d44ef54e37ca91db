"""Vanishing and exploding gradients, measured (what `tinygrad-seq vanishing` prints).

Nothing is trained. For each cell and each recurrent weight scale s, a cell is built with
its recurrent weights (the hidden columns of every gate matrix, `W_aa` for the RNN)
multiplied by s, unrolled over T steps of random inputs x<t> ~ N(0, 1), with a loss at the
last step only, L = u · a<T> for a fixed random u of norm 1 (so ‖∂L/∂a<T>‖ = 1). Then

    ∂L/∂a<t-1> = (∂a<t>/∂a<t-1>)ᵀ ∂L/∂a<t>,    for the tanh RNN  = W_aaᵀ diag(1 − a<t>²) ∂L/∂a<t>

so ‖∂L/∂a<T-k>‖ shrinks (or grows) like a product of k Jacobians: at most s^k for a tanh
RNN with orthogonal W_aa scaled by s < 1. The LSTM's memory cell has the extra path
∂c<t>/∂c<t-1> = Γ_f, which with the forget bias b_f = 1 (σ(1) ≈ 0.73) loses far less per
step. The gradients come from `gradients_through_time`, the engine's ordinary BPTT.

The exploding case (a large scale) is then clipped the two ways the course gives, by norm
(`clip_grad_norm_`: all gradients scaled together, direction kept) and by value
(`clip_grad_value_`: each element clamped, direction changed), and the norms printed.

>>> rows = decay_table(["rnn"], scales=[0.5], steps=12, hidden=4, batch=1)
>>> row = rows[0]
>>> row.cell, row.state, row.norms.shape
('rnn', 'a', (12,))
>>> bool(row.norms[5] <= 0.5**5 * row.norms[0])       # ‖∂L/∂a<T-5>‖ ≤ s⁵ ‖∂L/∂a<T>‖
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..autograd import Tensor
from ..nn import GRUCell, LSTMCell, RNNCell
from ..optim import clip_grad_norm_, clip_grad_value_
from .gradients import GradientsThroughTime, gradients_through_time
from .jacobians import state_jacobians

CELLS = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}
THRESHOLD = 1e-3  # "reach": steps back until ‖∂L/∂a<t>‖ falls below this (‖∂L/∂a<T>‖ = 1)


def make_cell(
    kind: str,
    input_size: int,
    hidden_size: int,
    scale: float,
    rng: np.random.Generator,
    forget_bias: float | None = None,
) -> RNNCell | GRUCell | LSTMCell:
    """A float64 cell of kind `"rnn"`, `"gru"` or `"lstm"` with default initialisation
    (orthogonal recurrent weights, LSTM forget bias 1), its recurrent weights times `scale`.
    `forget_bias` replaces the LSTM's b_f (1 by default).

    >>> cell = make_cell("rnn", 2, 3, 0.5, np.random.default_rng(0))
    >>> np.linalg.svd(cell.W_aa.data, compute_uv=False).round(6).tolist()  # 0.5 × orthogonal
    [0.5, 0.5, 0.5]
    """
    if kind not in CELLS:
        raise ValueError(f"unknown cell {kind!r}; choose from {', '.join(CELLS)}")
    cell = CELLS[kind](input_size, hidden_size, rng=rng).to(np.float64)
    for name, p in cell.named_parameters():
        if name == "W_aa":
            p.data = p.data * scale
        elif name.startswith("W_") and p.ndim == 2 and p.shape[1] > hidden_size:
            p.data[:, :hidden_size] *= scale  # the columns acting on a<t-1> (or c<t-1>)
    if forget_bias is not None:
        if kind != "lstm":
            raise ValueError(f"forget_bias applies to the LSTM only, not {kind!r}")
        cell.b_f.data = np.full(hidden_size, float(forget_bias))
    return cell


def measure(
    kind: str,
    scale: float,
    steps: int = 100,
    hidden: int = 32,
    inputs: int = 8,
    batch: int = 4,
    seed: int = 0,
    forget_bias: float | None = None,
) -> GradientsThroughTime:
    """One BPTT pass of a `kind` cell at recurrent scale `scale` over `steps` random inputs,
    loss u · a<T> at the last step (‖u‖ = 1). The same `seed` gives the same numbers;
    `forget_bias` sets the LSTM's b_f.

    >>> g = measure("lstm", 1.0, steps=6, hidden=4, batch=1)
    >>> round(float(g.da_norms[-1]), 6), g.dc_norms.shape     # ‖∂L/∂a<T>‖ = ‖u‖ = 1
    (1.0, (6,))
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    rng = np.random.default_rng(seed)
    cell = make_cell(kind, inputs, hidden, scale, rng, forget_bias)
    x = rng.standard_normal((batch, steps, inputs))
    u = rng.standard_normal((batch, hidden))
    u = Tensor(u / np.linalg.norm(u))
    return gradients_through_time(cell, x, lambda outputs: (outputs[:, -1] * u).sum())


@dataclass
class DecayRow:
    """‖∂L/∂a<T-k>‖ (state `"a"`) or ‖∂L/∂c<T-k>‖ (`"c"`) for k = 0..T−1 in `norms`."""

    cell: str
    scale: float
    state: str
    norms: np.ndarray

    @property
    def per_step(self) -> float:
        """The geometric-mean factor per step, (‖g<1>‖ / ‖g<T>‖)^(1/(T−1))."""
        first, last = self.norms[0], self.norms[-1]
        if len(self.norms) < 2 or first == 0:
            return float("nan")
        if last == 0:
            return 0.0
        return float(math.exp(math.log(last / first) / (len(self.norms) - 1)))


def reach(norms: np.ndarray, threshold: float = THRESHOLD) -> int | None:
    """The first distance k from the loss at which the norm is below `threshold` × norm at
    k = 0; `None` if it never is within the sequence.

    >>> reach(np.array([1.0, 0.1, 0.01, 0.0001]))
    3
    """
    below = np.flatnonzero(np.asarray(norms) < threshold * norms[0])
    return int(below[0]) if below.size else None


def decay_table(
    cells: Sequence[str] = ("rnn", "gru", "lstm"),
    scales: Sequence[float] = (0.5, 1.0, 2.0),
    steps: int = 100,
    hidden: int = 32,
    inputs: int = 8,
    batch: int = 4,
    seed: int = 0,
) -> list[DecayRow]:
    """A `DecayRow` per cell and scale (and a second, for c<t>, for the LSTM), norms indexed
    by distance from the loss: `norms[k] = ‖∂L/∂a<T-k>‖`."""
    rows = []
    for kind in cells:
        for scale in scales:
            g = measure(kind, scale, steps, hidden, inputs, batch, seed)
            rows.append(DecayRow(kind, float(scale), "a", g.da_norms[::-1].copy()))
            if g.dc_norms is not None:
                rows.append(DecayRow(kind, float(scale), "c", g.dc_norms[::-1].copy()))
    return rows


def spectrum_table(
    cells: Sequence[str] = ("rnn", "gru", "lstm"),
    scales: Sequence[float] = (0.5, 1.0, 2.0),
    steps: int = 100,
    hidden: int = 32,
    inputs: int = 8,
    batch: int = 4,
    seed: int = 0,
) -> list[DecayRow]:
    """The set-up of `decay_table` (same cells, same inputs for the same seed), measured by
    the state Jacobians instead of one gradient: `norms[k]` is the largest singular value
    of ∂s<T>/∂s<T-k>, averaged over the batch (k = 0 is the identity, 1). The state s is
    a<t>, or [a<t>, c<t>] for the LSTM (row state `"s"`).

    >>> [row] = spectrum_table(["rnn"], scales=[0.5], steps=8, hidden=4, batch=1)
    >>> bool(np.all(row.norms <= 0.5 ** np.arange(8) + 1e-12))   # Pascanu's bound
    True
    """
    rows = []
    for kind in cells:
        for scale in scales:
            rng = np.random.default_rng(seed)
            cell = make_cell(kind, inputs, hidden, scale, rng)
            x = rng.standard_normal((batch, steps, inputs))
            J = state_jacobians(cell, x)
            largest = J.largest.mean(axis=1)  # index k: ∂s<T>/∂s<k>
            norms = np.concatenate([[1.0], largest[::-1][: steps - 1]])
            rows.append(DecayRow(kind, float(scale), "s" if kind == "lstm" else "a", norms))
    return rows


@dataclass
class ClipReport:
    """Norms of an exploding gradient before and after clipping, per parameter and total."""

    cell: str
    scale: float
    steps: int
    max_norm: float
    clip_value: float
    names: list[str]
    before: list[float]
    by_norm: list[float]
    by_value: list[float]
    cos_norm: float  # cosine between the clipped and the unclipped gradient
    cos_value: float


def _norm(arrays: Sequence[np.ndarray]) -> float:
    return float(np.sqrt(sum(float((a.astype(np.float64) ** 2).sum()) for a in arrays)))


def _cosine(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    dot = sum(float((x.astype(np.float64) * y).sum()) for x, y in zip(a, b, strict=True))
    return dot / (_norm(a) * _norm(b))


def clip_report(
    kind: str = "rnn",
    scale: float = 4.0,
    steps: int = 100,
    max_norm: float = 1.0,
    clip_value: float = 0.1,
    hidden: int = 32,
    inputs: int = 8,
    batch: int = 4,
    seed: int = 0,
) -> ClipReport:
    """∂L/∂W of an exploding set-up, then clipped with `clip_grad_norm_(max_norm)` and,
    separately, `clip_grad_value_(clip_value)`, as an optimiser step would see them.

    >>> r = clip_report("rnn", scale=4.0, steps=30, hidden=8, batch=1)
    >>> r.before[-1] > 10 * r.max_norm, round(r.by_norm[-1], 6), round(r.cos_norm, 6)
    (True, 1.0, 1.0)
    """
    g = measure(kind, scale, steps, hidden, inputs, batch, seed)
    names = list(g.grads)

    def clipped(clip: str) -> list[np.ndarray]:
        params = [Tensor(np.zeros_like(g.grads[n]), requires_grad=True) for n in names]
        for p, n in zip(params, names, strict=True):
            p.grad = g.grads[n].copy()
        if clip == "norm":
            clip_grad_norm_(params, max_norm)
        else:
            clip_grad_value_(params, clip_value)
        return [p.grad for p in params]

    raw = [g.grads[n] for n in names]
    by_norm, by_value = clipped("norm"), clipped("value")

    def norms(arrays: list[np.ndarray]) -> list[float]:
        return [_norm([a]) for a in arrays] + [_norm(arrays)]

    return ClipReport(
        kind,
        float(scale),
        steps,
        max_norm,
        clip_value,
        names,
        norms(raw),
        norms(by_norm),
        norms(by_value),
        _cosine(raw, by_norm),
        _cosine(raw, by_value),
    )
