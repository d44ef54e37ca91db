"""`RNNCell`: the basic recurrent cell, a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor
from . import init
from .cell import Cell, bias
from .module import Parameter


class RNNCell(Cell):
    """One step of the basic RNN:

        a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a),    g = tanh (default) or relu

    Shapes: x<t> `(B, n_x)`, a<t-1> and a<t> `(B, n_a)`; parameters `W_aa (n_a, n_a)`,
    `W_ax (n_a, n_x)`, `b_a (n_a,)`. Together `[W_aa | W_ax]` is the one matrix acting on
    `[a<t-1>, x<t>]`. The state is a<t> itself.

    Initialisation (drawn from `rng`, default the library generator seeded by
    `tinygrad_seq.manual_seed`): `W_aa` orthogonal, `W_ax` Glorot-uniform
    U(−√(6/(n_x + n_a)), +√(…)), `b_a = 0`.

    >>> import numpy as np
    >>> cell = RNNCell(input_size=3, hidden_size=4)
    >>> a = cell(np.ones((2, 3), np.float32))        # state=None means a<0> = 0
    >>> a = cell(np.ones((2, 3), np.float32), a)     # a<2> from a<1>
    >>> a.shape
    (2, 4)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: str = "tanh",
        rng: np.random.Generator | None = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"
            )
        self.input_size, self.hidden_size, self.nonlinearity = input_size, hidden_size, nonlinearity
        self.W_aa = Parameter(init.orthogonal((hidden_size, hidden_size), rng=rng))
        self.W_ax = Parameter(init.glorot_uniform((hidden_size, input_size), rng=rng))
        self.b_a = bias(hidden_size)

    def forward(self, x: Any, state: Any = None) -> Tensor:
        x, (a_prev,) = self.check_step(x, state)
        z = a_prev @ self.W_aa.T + x @ self.W_ax.T + self.b_a  # W_aa a<t-1> + W_ax x<t> + b_a
        a = z.tanh() if self.nonlinearity == "tanh" else z.relu()  # a<t> = g(·)
        return a
