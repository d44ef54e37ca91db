"""Vanishing and exploding gradients, measured: `tinygrad-seq vanishing`.

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

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .autograd import Tensor
from .nn import GRUCell, LSTMCell, RNNCell
from .nn.bptt import GradientsThroughTime, gradients_through_time
from .optim import clip_grad_norm_, clip_grad_value_

__all__ = [
    "CELLS",
    "ClipReport",
    "DecayRow",
    "clip_report",
    "decay_table",
    "format_clip_report",
    "format_table",
    "make_cell",
    "measure",
    "plot_decay",
    "reach",
]

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


def _distances(steps: int) -> list[int]:
    picks = [k for k in (0, 1, 2, 5, 10, 20, 50) if k < steps - 1]
    return [*picks, steps - 1] if steps - 1 not in picks else picks


def format_table(rows: Sequence[DecayRow]) -> str:
    """The decay table: one row per cell, scale and state; one column per distance k.

    >>> print(format_table([DecayRow("rnn", 0.5, "a", np.array([1.0, 0.5, 0.25]))]))
    ‖∂L/∂a<T-k>‖ (‖∂L/∂c<T-k>‖ for state c), loss at step T only
    cell  scale  state      k=0      k=1      k=2  per step  reach
    rnn     0.5      a 1.00e+00 5.00e-01 2.50e-01     0.500    > 2
    per step: geometric-mean factor per step; reach: first k with norm < 0.001 × norm at k=0
    """
    steps = len(rows[0].norms)
    ks = _distances(steps)
    head = f"{'cell':<4}  {'scale':>5}  {'state':>5}" + "".join(f"{f'k={k}':>9}" for k in ks)
    lines = [
        "‖∂L/∂a<T-k>‖ (‖∂L/∂c<T-k>‖ for state c), loss at step T only",
        head + f"  {'per step':>8}  {'reach':>5}",
    ]
    for row in rows:
        cells = "".join(f"{row.norms[k]:>9.2e}" for k in ks)
        r = reach(row.norms)
        far = f"> {steps - 1}" if r is None else str(r)
        lines.append(
            f"{row.cell:<4}  {row.scale:>5.2g}  {row.state:>5}{cells}  {row.per_step:>8.3f}"
            f"  {far:>5}"
        )
    lines.append(
        f"per step: geometric-mean factor per step; reach: first k with norm < "
        f"{THRESHOLD:g} × norm at k=0"
    )
    return "\n".join(lines)


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


def format_clip_report(r: ClipReport) -> str:
    """The clipping table: ‖∂L/∂W‖ before and after each kind of clipping."""
    width = max(5, *(len(n) for n in r.names))
    norm_head = f"by norm ({r.max_norm:g})"
    value_head = f"by value ({r.clip_value:g})"
    lines = [
        f"exploding: {r.cell}, recurrent scale {r.scale:g}, T = {r.steps}: ‖∂L/∂W‖ before "
        "and after clipping",
        f"{'param':<{width}}  {'before':>9}  {norm_head:>16}  {value_head:>16}",
    ]
    for name, b, n, v in zip([*r.names, "total"], r.before, r.by_norm, r.by_value, strict=True):
        lines.append(f"{name:<{width}}  {b:>9.2e}  {n:>16.2e}  {v:>16.2e}")
    lines.append(f"{'cos':<{width}}  {1.0:>9.3f}  {r.cos_norm:>16.3f}  {r.cos_value:>16.3f}")
    lines.append(
        "cos: cosine with the unclipped gradient. Clipping by norm rescales all gradients "
        "together\n(direction kept); clipping by value clamps each element (direction changed)."
    )
    return "\n".join(lines)


def plot_decay(rows: Sequence[DecayRow], path: str) -> None:
    """Draw ‖∂L/∂a<T-k>‖ against k on a log scale, one line per row, to `path` (matplotlib,
    the optional `plot` extra: `pip install 'tinygrad_seq[plot]'`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(
            "--plot needs matplotlib, which is not installed: pip install 'tinygrad_seq[plot]' "
            "(or pip install matplotlib)"
        ) from None
    kinds = list(dict.fromkeys(row.cell for row in rows))
    scales = sorted({row.scale for row in rows})
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(len(scales), 1)))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 4), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for row in (r for r in rows if r.cell == kind):
            k = np.arange(len(row.norms))
            values = np.where(row.norms > 0, row.norms, np.nan)
            style = "--" if row.state == "c" else "-"
            label = f"s = {row.scale:g}" + (", ‖∂L/∂c‖" if row.state == "c" else "")
            colour = colours[scales.index(row.scale)]
            ax.semilogy(k, values, style, color=colour, label=label)
        ax.set_title(kind)
        ax.set_xlabel("k, steps back from the loss at T")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("‖∂L/∂a<T−k>‖")
    fig.suptitle("Vanishing and exploding gradients through time (s: recurrent weight scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- command line


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values

    return parse


def _cells(text: str) -> list[str]:
    values = _csv(str)(text)
    unknown = [v for v in values if v not in CELLS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown cell {unknown[0]!r}; choose from {','.join(CELLS)}"
        )
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def add_command(sub: argparse._SubParsersAction) -> None:
    """Add `vanishing` to the `tinygrad-seq` subcommands."""
    p = sub.add_parser(
        "vanishing",
        help="measure how ‖∂L/∂a<t>‖ decays through time for each cell (trains nothing)",
        description=(
            "Unroll each cell over random inputs with a loss at the last step only and print "
            "‖∂L/∂a<T-k>‖ against the distance k from the loss, for a few recurrent weight "
            "scales; then the exploding case and what clipping by norm and by value does."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--cell", type=_cells, default="rnn,gru,lstm", help="cells, e.g. rnn,lstm")
    p.add_argument("--steps", type=_positive, default=100, help="sequence length T")
    p.add_argument("--scales", type=_csv(float), default="0.5,1,2", help="recurrent weight scales")
    p.add_argument("--hidden", type=_positive, default=32, help="hidden size n_a")
    p.add_argument("--batch", type=_positive, default=4, help="batch size B")
    p.add_argument("--seed", type=_non_negative, default=0, help="random seed")
    p.add_argument(
        "--explode-scale",
        type=_positive_float,
        default=4.0,
        help="recurrent scale of the exploding case",
    )
    p.add_argument(
        "--clip-norm", type=_positive_float, default=1.0, help="max_norm of clip_grad_norm_"
    )
    p.add_argument(
        "--clip-value", type=_positive_float, default=0.1, help="clip_value of clip_grad_value_"
    )
    p.add_argument("--plot", metavar="PATH", help="also draw the decay curves (needs matplotlib)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """The `vanishing` command: print the decay table and the clipping table."""
    if args.plot:  # fail before the work, not after
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise RuntimeError(
                "--plot needs matplotlib, which is not installed: "
                "pip install 'tinygrad_seq[plot]' (or pip install matplotlib)"
            ) from None
    rows = decay_table(
        args.cell, args.scales, args.steps, args.hidden, batch=args.batch, seed=args.seed
    )
    print(format_table(rows))
    print()
    report = clip_report(
        "rnn",
        args.explode_scale,
        args.steps,
        args.clip_norm,
        args.clip_value,
        args.hidden,
        batch=args.batch,
        seed=args.seed,
    )
    print(format_clip_report(report))
    if args.plot:
        plot_decay(rows, args.plot)
        print(f"\nwrote {args.plot}")
    return 0
