"""The cell protocol, and `Cell`: the public base class of the built-in cells and of yours.

The cell protocol, which `Recurrent` relies on and any object can follow:

- `input_size` (n_x) and `hidden_size` (n_a);
- `init_state(batch_size)`: the zero state, a `Tensor (B, n_a)` or a tuple of them;
- `cell(x, state=None) -> state`: one time step, `x (B, n_x)`; `state=None` means zeros.

The step's output a<t> is the state itself when the state is a Tensor, else `state[0]`
(`state_output`). Subclassing `Cell` is optional; it gives a cell the built-in cells' zero
state and input checks (see `Cell`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor
from . import init
from .module import Module, Parameter

State = Tensor | tuple[Tensor, ...]


def state_output(state: Any) -> Tensor:
    """The step's output a<t> of any cell: the state if it is one Tensor, else `state[0]`."""
    return state if isinstance(state, Tensor | np.ndarray) else state[0]


def _first_float_tensor(module: Module, seen: set[int]) -> Tensor | None:
    seen.add(id(module))
    for value in vars(module).values():
        for item in value if isinstance(value, list | tuple) else (value,):
            if isinstance(item, Tensor) and item.dtype.kind == "f":
                return item
            if isinstance(item, Module) and id(item) not in seen:
                found = _first_float_tensor(item, seen)
                if found is not None:
                    return found
    return None


class Cell(Module):
    """Base class of recurrent cells: builds the zero state and checks x<t> and the state.

    A subclass sets `input_size` (n_x) and `hidden_size` (n_a) in `__init__`, and
    `state_parts` as a class attribute (1: the state is a<t>; 2: the pair (a<t>, c<t>); k: a
    tuple of k Tensors `(B, n_a)`, the first being the output a<t>). At the top of `forward`
    it calls `x, parts = self.check_step(x, state)`:

        class MyCell(Cell):
            def __init__(self, input_size, hidden_size):
                self.input_size, self.hidden_size = input_size, hidden_size
                self.W = Parameter(init.gate_matrix(hidden_size, input_size))
                self.b = Parameter(init.zeros((hidden_size,)))

            def forward(self, x, state=None):
                x, (a_prev,) = self.check_step(x, state)  # state=None gives the zero state
                return (concat([a_prev, x], axis=-1) @ self.W.T + self.b).tanh()

    `check_step` raises an error naming the cell, its sizes and the offending shape or
    dtype when x<t> is not `(B, n_x)` or the state is not `state_parts` Tensors `(B, n_a)`.
    The rule on dtypes is the one of every layer (`Linear` too): integer or boolean inputs
    (one-hot rows) are cast to the cell's dtype, a float input of another dtype raises
    `TypeError` naming both (cast it, or call `cell.to(...)`); the state must have the
    cell's dtype exactly. The cell's dtype is its first parameter's (`dtype`; override the
    property if another parameter should decide).
    """

    input_size: int
    hidden_size: int
    state_parts: int = 1

    @property
    def dtype(self) -> np.dtype:
        """The dtype x<t> and the state must have: the first parameter's, i.e. of the first
        float Tensor the cell holds in attribute order, submodules searched depth first (a
        stand-in Tensor, such as the per-step aliases of `gradients_through_time`, counts).
        float32 if none."""
        found = _first_float_tensor(self, set())
        return np.dtype(np.float32) if found is None else found.dtype

    def _describe(self) -> str:
        return (
            f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size})"
        )

    def _state_name(self, i: int) -> str:
        if self.state_parts <= 2:
            return ("a<t-1>", "c<t-1>")[i]
        return "a<t-1>" if i == 0 else f"state[{i}]"

    def init_state(self, batch_size: int) -> State:
        """Zeros of shape (batch_size, n_a) in the cell's dtype (a tuple if `state_parts > 1`)."""
        zeros = [
            Tensor(np.zeros((batch_size, self.hidden_size), self.dtype))
            for _ in range(self.state_parts)
        ]
        return zeros[0] if self.state_parts == 1 else tuple(zeros)

    def check_step(self, x: Any, state: Any) -> tuple[Tensor, list[Tensor]]:
        """Check x<t> `(B, n_x)` and the state; return x as a Tensor and the state's parts
        (a list of `state_parts` Tensors `(B, n_a)`; zeros when `state` is `None`)."""
        dtype = self.dtype
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.dtype.kind != "f":  # integer or boolean inputs (e.g. one-hot) are cast, not rejected
            x = Tensor(x.data.astype(dtype))
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"{self._describe()}: x<t> has shape {x.shape}; expected (batch, {self.input_size})"
            )
        if x.dtype != dtype:
            raise TypeError(
                f"{self._describe()}: input dtype {x.dtype} does not match parameter dtype "
                f"{dtype}; cast the input or call cell.to(np.{x.dtype})"
            )
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
            what = " (a, c)" if self.state_parts == 2 else ""
            raise TypeError(
                f"{self._describe()}: the state must be a tuple of {self.state_parts} "
                f"Tensors{what} of shape (B, n_a), got {type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, tuple | list) else "")
            )
        parts = [p if isinstance(p, Tensor) else Tensor(p) for p in parts]
        expected = (batch, self.hidden_size)
        for i, p in enumerate(parts):
            if p.shape != expected:
                raise ValueError(
                    f"{self._describe()}: state {self._state_name(i)} has shape {p.shape} but "
                    f"x<t> has shape {x.shape}, so the state must have shape {expected}"
                )
            if p.dtype != dtype:
                raise TypeError(
                    f"{self._describe()}: state {self._state_name(i)} has dtype {p.dtype} but "
                    f"the parameters are {dtype}"
                )
        return x, parts

    def _prepare(self, x: Any, state: Any) -> tuple[Tensor, list[Tensor]]:
        """The former name of `check_step` (the fused steps call it)."""
        return self.check_step(x, state)


def gate_matrix(n_a: int, n_x: int, rng: np.random.Generator | None = None) -> Parameter:
    """A gate matrix `(n_a, n_a + n_x)` acting on `[a<t-1>, x<t>]`.

    Hidden (recurrent) columns: orthogonal `(n_a, n_a)`; input columns: Glorot-uniform
    U(−√(6/(n_x + n_a)), +√(…)) as an `(n_a, n_x)` matrix. Drawn in that order from `rng`.
    """
    return Parameter(init.gate_matrix(n_a, n_x, rng))


def bias(n_a: int, value: float = 0.0) -> Parameter:
    """A bias `(n_a,)` filled with `value` (float32)."""
    return Parameter(np.full(n_a, value, np.float32))  # = init.zeros / init.ones for 0 / 1
