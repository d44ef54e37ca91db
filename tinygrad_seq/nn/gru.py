"""`GRUCell`: the gated recurrent unit, full or simplified, reset before or after the product."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor, concat
from .cell import Cell, bias, gate_matrix


class GRUCell(Cell):
    """One step of the gated recurrent unit (the state c<t> is also the output a<t>):

        Γ_r  = σ(W_r [c<t-1>, x<t>] + b_r)                   relevance (reset) gate
        c̃<t> = tanh(W_c [Γ_r * c<t-1>, x<t>] + b_c)          candidate
        Γ_u  = σ(W_u [c<t-1>, x<t>] + b_u)                   update gate
        c<t> = Γ_u * c̃<t> + (1 − Γ_u) * c<t-1>
        a<t> = c<t>

    `full=False` is the simplified GRU of the course: Γ_r ≡ 1, and no `W_r`, `b_r`.

    `reset_after=True` is the form PyTorch and cuDNN use (Keras's `reset_after=True`): with
    `W_c = [W_cc | W_cx]` (hidden columns first) and one more bias `b_cc (n_a,)`,

        c̃<t> = tanh(W_cx x<t> + b_c + Γ_r * (W_cc c<t-1> + b_cc))

    Γ_u weights the candidate, as in the course; PyTorch's and Keras's z weights the old
    state, so z = 1 − Γ_u (see `tinygrad_seq.nn.convert` and docs/conventions.md).

    Shapes: x<t> `(B, n_x)`, c<t> `(B, n_a)`; `W_u, W_r, W_c (n_a, n_a + n_x)` acting on
    `[c<t-1>, x<t>]` (hidden part first), `b_u, b_r, b_c (n_a,)`, and `b_cc (n_a,)` when
    `reset_after=True`.

    Initialisation (drawn from `rng`, default the library generator seeded by
    `tinygrad_seq.manual_seed`), for each gate matrix in the order W_u, W_r, W_c: hidden
    columns orthogonal, input columns Glorot-uniform U(−√(6/(n_x + n_a)), +√(…)); every
    bias zero.

    >>> import numpy as np
    >>> cell = GRUCell(3, 4, full=False)
    >>> [name for name, _ in cell.named_parameters()]
    ['W_u', 'W_c', 'b_u', 'b_c']
    >>> cell(np.ones((2, 3), np.float32)).shape
    (2, 4)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        full: bool = True,
        reset_after: bool = False,
        rng: np.random.Generator | None = None,
    ) -> None:
        n_a, n_x = hidden_size, input_size
        self.input_size, self.hidden_size = input_size, hidden_size
        self.full, self.reset_after = full, reset_after
        self.W_u = gate_matrix(n_a, n_x, rng)
        self.W_r = gate_matrix(n_a, n_x, rng) if full else None
        self.W_c = gate_matrix(n_a, n_x, rng)
        self.b_u = bias(n_a)
        self.b_r = bias(n_a) if full else None
        self.b_c = bias(n_a)
        self.b_cc = bias(n_a) if reset_after else None

    def forward(self, x: Any, state: Any = None) -> Tensor:
        x, (c_prev,) = self.check_step(x, state)
        cx = concat([c_prev, x], axis=-1)  # [c<t-1>, x<t>]
        gamma_r = (cx @ self.W_r.T + self.b_r).sigmoid() if self.full else 1.0  # Γ_r
        c_tilde = self._candidate(gamma_r, c_prev, x)  # c̃<t>
        gamma_u = (cx @ self.W_u.T + self.b_u).sigmoid()  # Γ_u
        c = gamma_u * c_tilde + (1.0 - gamma_u) * c_prev  # c<t>
        return c  # a<t> = c<t>

    def _candidate(self, gamma_r: Tensor | float, c_prev: Tensor, x: Tensor) -> Tensor:
        """c̃<t>, with Γ_r applied before the matrix product or, if `reset_after`, after it."""
        if self.reset_after:
            W_cc, W_cx = self.W_c[:, : self.hidden_size], self.W_c[:, self.hidden_size :]
            return (x @ W_cx.T + self.b_c + gamma_r * (c_prev @ W_cc.T + self.b_cc)).tanh()
        return (concat([gamma_r * c_prev, x], axis=-1) @ self.W_c.T + self.b_c).tanh()
