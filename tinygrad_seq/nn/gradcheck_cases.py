"""Gradient-check cases for every built-in cell, unrolled with `Recurrent` (BPTT included).

`tinygrad-seq gradcheck` runs them: each case's `make()` returns `(fn, inputs)` in float64,
`inputs = [x, a<0> (, c<0>), *cell.parameters()]`, and `fn(*inputs)` gives the outputs
`(B, T, n_a)` of a T = 3 step unroll (B = 2, n_x = 3, n_a = 4). Parameters are redrawn from
N(0, 0.5²) so that zero biases and peepholes do not hide a missing gradient path.

The cells come from the table `nn.kinds.CELL_KINDS`, each with the variants listed in
`VARIANTS` (a kind missing there is checked with its default arguments).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..autograd import Tensor
from .kinds import CELL_KINDS
from .recurrent import Recurrent

B, T, N_X, N_A = 2, 3, 3, 4

Make = Callable[[], tuple[Callable[..., Tensor], list[Tensor]]]


def _case(build: Callable[[np.random.Generator], Any], rng: np.random.Generator) -> Make:
    def make() -> tuple[Callable[..., Tensor], list[Tensor]]:
        cell = build(rng).to(np.float64)
        for p in cell.parameters():
            p.data = 0.5 * rng.standard_normal(p.shape)
        x = Tensor(rng.standard_normal((B, T, N_X)), requires_grad=True)
        zero = cell.init_state(B)
        n_state = 1 if isinstance(zero, Tensor) else len(zero)
        state = [Tensor(rng.standard_normal((B, N_A)), requires_grad=True) for _ in range(n_state)]
        layer = Recurrent(cell)

        def fn(x: Tensor, *rest: Tensor) -> Tensor:
            initial = rest[0] if n_state == 1 else tuple(rest[:n_state])
            outputs, _ = layer(x, initial)
            return outputs

        return fn, [x, *state, *cell.parameters()]

    return make


# kind -> [(variant name, constructor keyword arguments)]
VARIANTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "rnn": [("tanh", {"nonlinearity": "tanh"}), ("relu", {"nonlinearity": "relu"})],
    "gru": [
        ("full", {"full": True}),
        ("simplified", {"full": False}),
        ("reset_after", {"reset_after": True}),
    ],
    "lstm": [("", {}), ("peephole", {"peephole": True})],
}


def cell_cases(rng: np.random.Generator) -> list[tuple[str, Make]]:
    """`(name, make)` for each built-in cell variant; `make()` -> `(fn, inputs)` in float64."""
    cases = []
    for kind, cls in CELL_KINDS.items():
        for variant, kwargs in VARIANTS.get(kind, [("", {})]):
            name = f"{cls.__name__} {variant}".strip()

            def build(r: np.random.Generator, cls: Any = cls, kwargs: Any = kwargs) -> Any:
                return cls(N_X, N_A, rng=r, **kwargs)

            cases.append((f"Recurrent({name}) T={T}", _case(build, rng)))
    return cases
