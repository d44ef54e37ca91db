"""What every built-in recurrent cell shares: the cell protocol, input checks, initialisation.

The cell protocol, which `Recurrent` relies on and a user's own cell can follow too:

- `input_size` (n_x) and `hidden_size` (n_a);
- `init_state(batch_size)`: the zero state, a `Tensor (B, n_a)` or a tuple of them;
- `cell(x, state=None) -> state`: one time step, `x (B, n_x)`; `state=None` means zeros.

The step's output a<t> is the state itself when the state is a Tensor, else `state[0]`
(`state_output`). Nothing here is needed to follow the protocol; `Cell` only saves the
built-in cells from repeating their checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor
from . import init
from .module import Module, Parameter, check_float_input

State = Tensor | tuple[Tensor, ...]


def state_output(state: Any) -> Tensor:
    """The step's output a<t> of any cell: the state if it is one Tensor, else `state[0]`."""
    return state if isinstance(state, Tensor | np.ndarray) else state[0]


class Cell(Module):
    """Base class of the built-in cells: checks x<t> and the state, builds the zero state.

    Subclasses set `input_size`, `hidden_size`, `state_parts` (1 for a<t>, 2 for (a<t>, c<t>))
    and `reference_parameter`, and call `self._prepare(x, state)` at the top of `forward`.
    """

    input_size: int
    hidden_size: int
    state_parts: int = 1
    reference_parameter: str  # the parameter whose dtype the input and state must share

    def _describe(self) -> str:
        return (
            f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size})"
        )

    def _dtype(self) -> np.dtype:
        return getattr(self, self.reference_parameter).dtype

    def init_state(self, batch_size: int) -> State:
        """Zeros of shape (batch_size, n_a) in the parameters' dtype (a tuple for LSTM)."""
        zeros = [
            Tensor(np.zeros((batch_size, self.hidden_size), self._dtype()))
            for _ in range(self.state_parts)
        ]
        return zeros[0] if self.state_parts == 1 else tuple(zeros)

    def _prepare(self, x: Any, state: Any) -> tuple[Tensor, list[Tensor]]:
        """Check x<t> (B, n_x) and the state; return x as a Tensor and the state's parts."""
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.dtype.kind != "f":  # integer or boolean inputs (e.g. one-hot) are cast, not rejected
            x = Tensor(x.data.astype(self._dtype()))
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"{self._describe()}: x<t> has shape {x.shape}; expected (batch, {self.input_size})"
            )
        check_float_input(self, x, getattr(self, self.reference_parameter))
        batch = x.shape[0]
        if state is None:
            state = self.init_state(batch)
        parts = [state] if self.state_parts == 1 else state
        if self.state_parts == 1 and not isinstance(state, Tensor | np.ndarray):
            raise TypeError(
                f"{self._describe()}: the state must be one Tensor (B, n_a), "
                f"got {type(state).__name__}"
            )
        if self.state_parts > 1 and (
            not isinstance(state, tuple | list) or len(state) != self.state_parts
        ):
            raise TypeError(
                f"{self._describe()}: the state must be a tuple of {self.state_parts} "
                f"Tensors (a, c) of shape (B, n_a), got {type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, tuple | list) else "")
            )
        parts = [p if isinstance(p, Tensor) else Tensor(p) for p in parts]
        expected = (batch, self.hidden_size)
        for name, p in zip(("a<t-1>", "c<t-1>"), parts, strict=False):
            if p.shape != expected:
                raise ValueError(
                    f"{self._describe()}: state {name} has shape {p.shape} but x<t> has shape "
                    f"{x.shape}, so the state must have shape {expected}"
                )
            if p.dtype != self._dtype():
                raise TypeError(
                    f"{self._describe()}: state {name} has dtype {p.dtype} but the parameters "
                    f"are {self._dtype()}"
                )
        return x, parts


def gate_matrix(n_a: int, n_x: int, rng: np.random.Generator | None = None) -> Parameter:
    """A gate matrix `(n_a, n_a + n_x)` acting on `[a<t-1>, x<t>]`.

    Hidden (recurrent) columns: orthogonal `(n_a, n_a)`; input columns: Glorot-uniform
    U(−√(6/(n_x + n_a)), +√(…)) as an `(n_a, n_x)` matrix. Drawn in that order from `rng`.
    """
    recurrent = init.orthogonal((n_a, n_a), rng=rng)
    inputs = init.glorot_uniform((n_a, n_x), rng=rng)
    return Parameter(np.concatenate([recurrent, inputs], axis=1))


def bias(n_a: int, value: float = 0.0) -> Parameter:
    """A bias `(n_a,)` filled with `value` (float32)."""
    return Parameter(np.full(n_a, value, np.float32))
