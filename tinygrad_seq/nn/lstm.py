"""`LSTMCell`: long short-term memory, with the course's optional peephole connections."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor, concat
from .cell import Cell, bias, gate_matrix


class LSTMCell(Cell):
    """One step of the LSTM; the state is the pair (a<t>, c<t>) and the output is a<t>:

        c̃<t> = tanh(W_c [a<t-1>, x<t>] + b_c)              candidate
        Γ_u  = σ(W_u [a<t-1>, x<t>] + b_u)                  update gate
        Γ_f  = σ(W_f [a<t-1>, x<t>] + b_f)                  forget gate
        Γ_o  = σ(W_o [a<t-1>, x<t>] + b_o)                  output gate
        c<t> = Γ_u * c̃<t> + Γ_f * c<t-1>
        a<t> = Γ_o * tanh(c<t>)

    With `peephole=True` every gate also sees the previous memory cell through a diagonal
    weight: Γ_{u,f,o} = σ(W_{u,f,o} [a<t-1>, x<t>] + p_{u,f,o} * c<t-1> + b_{u,f,o})
    (all three, the output gate included, look at c<t-1>).

    Shapes: x<t> `(B, n_x)`, a<t> and c<t> `(B, n_a)`; `W_u, W_f, W_o, W_c (n_a, n_a + n_x)`
    acting on `[a<t-1>, x<t>]` (hidden part first), `b_u, b_f, b_o, b_c (n_a,)`, and
    `p_u, p_f, p_o (n_a,)` when `peephole=True`.

    Initialisation (drawn from `rng`, default the library generator seeded by
    `tinygrad_seq.manual_seed`), for each gate matrix in the order W_u, W_f, W_o, W_c: hidden
    columns orthogonal, input columns Glorot-uniform U(−√(6/(n_x + n_a)), +√(…)). Biases are
    zero except the forget bias `b_f = 1` (so the cell remembers by default); peepholes zero.

    >>> import numpy as np
    >>> cell = LSTMCell(3, 4)
    >>> a, c = cell(np.ones((2, 3), np.float32))      # state=None means a<0> = c<0> = 0
    >>> a, c = cell(np.ones((2, 3), np.float32), (a, c))
    >>> a.shape, c.shape
    ((2, 4), (2, 4))
    >>> float(cell.b_f.data[0])
    1.0
    """

    state_parts = 2

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        peephole: bool = False,
        rng: np.random.Generator | None = None,
    ) -> None:
        n_a, n_x = hidden_size, input_size
        self.input_size, self.hidden_size, self.peephole = input_size, hidden_size, peephole
        self.W_u = gate_matrix(n_a, n_x, rng)
        self.W_f = gate_matrix(n_a, n_x, rng)
        self.W_o = gate_matrix(n_a, n_x, rng)
        self.W_c = gate_matrix(n_a, n_x, rng)
        self.b_u = bias(n_a)
        self.b_f = bias(n_a, 1.0)
        self.b_o = bias(n_a)
        self.b_c = bias(n_a)
        self.p_u = bias(n_a) if peephole else None
        self.p_f = bias(n_a) if peephole else None
        self.p_o = bias(n_a) if peephole else None

    def forward(self, x: Any, state: Any = None) -> tuple[Tensor, Tensor]:
        x, (a_prev, c_prev) = self.check_step(x, state)
        ax = concat([a_prev, x], axis=-1)  # [a<t-1>, x<t>]
        c_tilde = (ax @ self.W_c.T + self.b_c).tanh()  # c̃<t>
        gamma_u = self._gate(self.W_u, self.p_u, self.b_u, ax, c_prev)  # Γ_u
        gamma_f = self._gate(self.W_f, self.p_f, self.b_f, ax, c_prev)  # Γ_f
        gamma_o = self._gate(self.W_o, self.p_o, self.b_o, ax, c_prev)  # Γ_o
        c = gamma_u * c_tilde + gamma_f * c_prev  # c<t>
        a = gamma_o * c.tanh()  # a<t>
        return a, c

    def _gate(self, W: Tensor, p: Tensor | None, b: Tensor, ax: Tensor, c_prev: Tensor) -> Tensor:
        """σ(W [a<t-1>, x<t>] + p * c<t-1> + b), the peephole term only when `peephole=True`."""
        z = ax @ W.T + b
        return (z + p * c_prev if self.peephole else z).sigmoid()
