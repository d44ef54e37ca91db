"""`tinygrad-seq vanishing`: the command line over `tinygrad_seq.through_time`.

Nothing is trained: each cell is unrolled over random inputs with a loss at the last step,
and the command prints how ‖∂L/∂a<T-k>‖ decays with the distance k from the loss, for a few
recurrent weight scales (see `through_time.decay` for the set-up), optionally the singular
values of the state Jacobians ∂s<T>/∂s<T-k> beside them, then the exploding case clipped by
norm and by value. The measurements live in `tinygrad_seq.through_time`; this module only
parses options and prints. Its names below stay importable from here.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from .through_time import (
    CELLS,
    ClipReport,
    DecayRow,
    clip_report,
    decay_table,
    format_clip_report,
    format_spectrum,
    format_table,
    make_cell,
    measure,
    plot_decay,
    reach,
    spectrum_table,
)

__all__ = [
    "CELLS",
    "ClipReport",
    "DecayRow",
    "add_command",
    "clip_report",
    "decay_table",
    "format_clip_report",
    "format_table",
    "make_cell",
    "measure",
    "plot_decay",
    "reach",
    "run",
]

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
    p.add_argument(
        "--spectrum",
        action="store_true",
        help="also print the largest singular value of the state Jacobians ∂s<T>/∂s<T-k>",
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
    if args.spectrum:
        spectrum = spectrum_table(
            args.cell, args.scales, args.steps, args.hidden, batch=args.batch, seed=args.seed
        )
        print(format_spectrum(spectrum))
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
