"""Gradient-check cases for every built-in cell, unrolled with `Recurrent` (BPTT included).

`tinygrad-seq gradcheck` runs them: each case's `make()` returns `(fn, inputs)` in float64,
`inputs = [x, a<0> (, c<0>), *cell.parameters()]`, and `fn(*inputs)` gives the outputs
`(B, T, n_a)` of a T = 3 step unroll (B = 2, n_x = 3, n_a = 4). Parameters are redrawn from
N(0, 0.5²) so that zero biases and peepholes do not hide a missing gradient path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..autograd import Tensor
from .gru import GRUCell
from .lstm import LSTMCell
from .recurrent import Recurrent
from .rnn import RNNCell

B, T, N_X, N_A = 2, 3, 3, 4

Make = Callable[[], tuple[Callable[..., Tensor], list[Tensor]]]


def _case(build: Callable[[np.random.Generator], Any], rng: np.random.Generator) -> Make:
    def make() -> tuple[Callable[..., Tensor], list[Tensor]]:
        cell = build(rng).to(np.float64)
        for p in cell.parameters():
            p.data = 0.5 * rng.standard_normal(p.shape)
        x = Tensor(rng.standard_normal((B, T, N_X)), requires_grad=True)
        state = [Tensor(rng.standard_normal((B, N_A)), requires_grad=True)]
        if isinstance(cell, LSTMCell):
            state.append(Tensor(rng.standard_normal((B, N_A)), requires_grad=True))
        layer = Recurrent(cell)
        n_state = len(state)

        def fn(x: Tensor, *rest: Tensor) -> Tensor:
            initial = rest[0] if n_state == 1 else tuple(rest[:n_state])
            outputs, _ = layer(x, initial)
            return outputs

        return fn, [x, *state, *cell.parameters()]

    return make


def cell_cases(rng: np.random.Generator) -> list[tuple[str, Make]]:
    """`(name, make)` for each built-in cell variant; `make()` -> `(fn, inputs)` in float64."""
    builds: list[tuple[str, Callable[[np.random.Generator], Any]]] = [
        ("RNNCell tanh", lambda r: RNNCell(N_X, N_A, "tanh", rng=r)),
        ("RNNCell relu", lambda r: RNNCell(N_X, N_A, "relu", rng=r)),
        ("GRUCell full", lambda r: GRUCell(N_X, N_A, full=True, rng=r)),
        ("GRUCell simplified", lambda r: GRUCell(N_X, N_A, full=False, rng=r)),
        ("GRUCell reset_after", lambda r: GRUCell(N_X, N_A, reset_after=True, rng=r)),
        ("LSTMCell", lambda r: LSTMCell(N_X, N_A, rng=r)),
        ("LSTMCell peephole", lambda r: LSTMCell(N_X, N_A, peephole=True, rng=r)),
    ]
    return [(f"Recurrent({name}) T={T}", _case(build, rng)) for name, build in builds]
