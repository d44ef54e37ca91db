"""The `tinygrad-seq` command line (also `python -m tinygrad_seq`).

A usage error exits 2 (argparse); any other failure prints one `error:` line to stderr, no
traceback, and exits 1.
"""

from __future__ import annotations

import argparse
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
    import importlib.util

    if importlib.util.find_spec("tinygrad_seq.nn.gradcheck_cases") is None:
        return cases  # the cells are not built yet
    from .nn.gradcheck_cases import cell_cases

    return cases + cell_cases(rng)


def cmd_gradcheck(args: argparse.Namespace) -> int:
    """Check every built-in cell (and core ops) against finite differences; one row each."""
    from .autograd import gradcheck as check

    rows = []
    failures = 0
    for name, make in _gradcheck_cases():
        fn, inputs = make()
        ok = check(fn, inputs, atol=args.atol, rtol=args.rtol, raise_exception=False)
        worst_abs, worst_rel = _worst_errors(fn, inputs)
        failures += not ok
        rows.append((name, sum(int(np.size(t.data)) for t in inputs), worst_abs, worst_rel, ok))
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'values':>6}  {'max abs err':>11}  {'rel err':>9}  result")
    for name, size, worst_abs, worst_rel, ok in rows:
        print(
            f"{name:<{width}}  {size:>6}  {worst_abs:>11.2e}  {worst_rel:>9.2e}  "
            f"{'pass' if ok else 'FAIL'}"
        )
    return 1 if failures else 0


def _worst_errors(fn: Callable, inputs: list) -> tuple[float, float]:
    """Largest |analytic − numerical| and relative error over all inputs, random upstream."""
    from .autograd import Tensor, numerical_grad

    rng = np.random.default_rng(1)
    for t in inputs:
        t.grad = None
    out = fn(*inputs)
    v = rng.standard_normal(out.shape)
    out.backward(v)
    numeric = numerical_grad(lambda *xs: (fn(*xs) * Tensor(v)).sum(), inputs)
    worst_abs = worst_rel = 0.0
    for t, n in zip(inputs, numeric, strict=True):
        a = np.zeros(t.shape) if t.grad is None else t.grad
        worst_abs = max(worst_abs, float(np.max(np.abs(a - n))))
        denom = np.linalg.norm(a) + np.linalg.norm(n)
        worst_rel = max(worst_rel, float(np.linalg.norm(a - n) / denom) if denom else 0.0)
        t.grad = None
    return worst_abs, worst_rel


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
    p.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance")
    p.set_defaults(run=cmd_gradcheck)
    _add_lm_commands(sub)
    from .vanishing import add_command as add_vanishing

    add_vanishing(sub)
    return parser


def _add_lm_commands(sub: argparse._SubParsersAction) -> None:
    import importlib.util

    if importlib.util.find_spec("tinygrad_seq.lm.commands") is None:
        return  # the language-model commands are not built yet
    from .lm.commands import add_commands

    add_commands(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, no traceback, for any failure
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
