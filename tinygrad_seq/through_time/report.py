"""The tables and the figure of `tinygrad-seq vanishing`: formatting only, no measurement."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .decay import THRESHOLD, ClipReport, DecayRow, reach


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
    return _table(rows, "‖∂L/∂a<T-k>‖ (‖∂L/∂c<T-k>‖ for state c), loss at step T only")


def format_spectrum(rows: Sequence[DecayRow]) -> str:
    """The spectrum table: the largest singular value of ∂s<T>/∂s<T-k> per distance k.

    >>> print(format_spectrum([DecayRow("rnn", 0.5, "a", np.array([1.0, 0.4, 0.2]))]))
    σ_max(∂s<T>/∂s<T-k>), mean over the batch; s = a<t>, or [a<t>, c<t>] for the LSTM
    cell  scale  state      k=0      k=1      k=2  per step  reach
    rnn     0.5      a 1.00e+00 4.00e-01 2.00e-01     0.447    > 2
    per step: geometric-mean factor per step; reach: first k with norm < 0.001 × norm at k=0
    tanh RNN bound (Pascanu et al. 2013): σ_max ≤ (σ_max(W_aa))^k = scale^k (orthogonal W_aa)
    """
    text = _table(
        rows,
        "σ_max(∂s<T>/∂s<T-k>), mean over the batch; s = a<t>, or [a<t>, c<t>] for the LSTM",
    )
    if any(row.cell == "rnn" for row in rows):
        text += (
            "\ntanh RNN bound (Pascanu et al. 2013): σ_max ≤ (σ_max(W_aa))^k = scale^k "
            "(orthogonal W_aa)"
        )
    return text


def _table(rows: Sequence[DecayRow], title: str) -> str:
    steps = len(rows[0].norms)
    ks = _distances(steps)
    head = f"{'cell':<4}  {'scale':>5}  {'state':>5}" + "".join(f"{f'k={k}':>9}" for k in ks)
    lines = [title, head + f"  {'per step':>8}  {'reach':>5}"]
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
