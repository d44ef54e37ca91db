"""The `tinygrad-seq` command line (also `python -m tinygrad_seq`).

A usage error exits 2 (argparse); any other failure prints one `error:` line to stderr, no
traceback, and exits 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence

import numpy as np


def _gradcheck_cases() -> list[tuple[str, Callable[[], tuple[Callable, list]]]]:
    """(name, make) pairs; `make()` returns (fn, inputs) in float64 for `gradcheck`."""
    from .autograd import Tensor

    rng = np.random.default_rng(0)

    def leaf(*shape: int) -> Tensor:
        return Tensor(rng.standard_normal(shape), requires_grad=True)

    def case(fn: Callable, *shapes: tuple[int, ...]) -> Callable[[], tuple[Callable, list]]:
        return lambda: (fn, [leaf(*s) for s in shapes])

    cases = [
        ("matmul+tanh", case(lambda x, w: (x @ w).tanh(), (3, 4), (4, 2))),
        ("sigmoid*x", case(lambda x: x.sigmoid() * x, (3, 4))),
        ("log_softmax", case(lambda x: x.log_softmax(), (3, 5))),
        ("softmax(axis=0)", case(lambda x: x.softmax(axis=0), (3, 5))),
        ("broadcast add/div", case(lambda x, b: (x + b) / (b * b + 1), (3, 4), (4,))),
    ]
    from .nn.gradcheck_cases import cell_cases

    return cases + cell_cases(rng)


def cmd_gradcheck(args: argparse.Namespace) -> int:
    """Check every built-in cell (and core ops) against finite differences; one row each.

    A case passes when every element has |analytic − numerical| ≤ atol + rtol · |numerical|,
    `gradcheck`'s rule; the finite differences are computed once and give the row's errors too.
    """
    from .autograd import gradient_pairs
    from .autograd.gradcheck import _relative_error  # ‖g − g̃‖ / (‖g‖ + ‖g̃‖), as gradcheck reports

    rows = []
    for name, make in _gradcheck_cases():
        fn, inputs = make()
        pairs = [p for p in gradient_pairs(fn, inputs) if p is not None]
        ok = all(np.all(np.abs(a - n) <= args.atol + args.rtol * np.abs(n)) for a, n in pairs)
        worst_abs = max(float(np.max(np.abs(a - n))) for a, n in pairs)
        worst_rel = max(_relative_error(a, n) for a, n in pairs)
        rows.append((name, sum(int(np.size(t.data)) for t in inputs), worst_abs, worst_rel, ok))
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'values':>6}  {'max abs err':>11}  {'rel err':>9}  result")
    for name, size, worst_abs, worst_rel, ok in rows:
        print(
            f"{name:<{width}}  {size:>6}  {worst_abs:>11.2e}  {worst_rel:>9.2e}  "
            f"{'pass' if ok else 'FAIL'}"
        )
    failed = [row[0] for row in rows if not row[-1]]
    if failed:
        print(
            f"error: {len(failed)} of {len(rows)} cases failed (atol {args.atol:g}, rtol "
            f"{args.rtol:g}): {', '.join(failed)}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def tolerance(text: str) -> float:
    """argparse type: a finite number >= 0, else a usage error."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"a tolerance must be a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinygrad-seq",
        description="Train, sample and gradient-check recurrent networks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "gradcheck",
        help="check every built-in cell against finite differences",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--atol", type=tolerance, default=1e-5, help="absolute tolerance (>= 0)")
    p.add_argument("--rtol", type=tolerance, default=1e-3, help="relative tolerance (>= 0)")
    p.set_defaults(run=cmd_gradcheck)
    from .lm.commands import add_commands
    from .vanishing import add_command as add_vanishing

    add_commands(sub)
    add_vanishing(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    from .autograd.memory import tune_allocator

    tune_allocator()  # the command owns its process; importing the library never does this
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, no traceback, for any failure
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
