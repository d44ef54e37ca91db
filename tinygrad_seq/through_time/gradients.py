"""Gradients through time: ∂L/∂a<t> at every step, and each step's share of ∂L/∂W.

Backpropagation through time computes, for a weight W used at every step,

    ∂L/∂W = Σ_t ∂L/∂W|_t        (step t's term: the gradient through W's use at step t)

and the engine adds those terms into one `W.grad` as it goes. `gradients_through_time`
keeps them apart without a second, hand-written BPTT: it unrolls the cell itself, one call
per step as `Recurrent` does, but hands step t its own *alias* of each parameter, a leaf
tensor that shares W's array. The ordinary reverse pass then leaves step t's term in
`W_t.grad`, and `retain_grad()` on each state keeps ∂L/∂a<t> (and ∂L/∂c<t> for an LSTM).

>>> import numpy as np
>>> from tinygrad_seq.nn import Recurrent, RNNCell
>>> layer = Recurrent(RNNCell(2, 3))
>>> x = np.ones((1, 4, 2), np.float32)
>>> g = gradients_through_time(layer, x, lambda outputs: outputs[:, -1].sum())
>>> g.da_norms.shape, g.contributions["W_aa"].shape      # (T,), (T, n_a, n_a)
((4,), (4, 3, 3))
>>> bool(np.allclose(g.contributions["W_aa"].sum(axis=0), g.grads["W_aa"]))
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..autograd import Tensor, stack
from ..nn import Module, state_output

__all__ = ["GradientsThroughTime", "gradients_through_time"]


@dataclass
class GradientsThroughTime:
    """What one BPTT pass computed, kept per time step t = 1..T (index t − 1).

    - `loss`: the value of L.
    - `dL_da`: `(T, B, n_a)`, ∂L/∂a<t>, the *total* derivative (through the loss at t and
      through every later step); `da_norms (T,)` its norm ‖∂L/∂a<t>‖ over the batch.
    - `dL_dc`, `dc_norms`: the same for the memory cell c<t> of a cell whose state is
      `(a, c)` (LSTM), else `None`.
    - `contributions`: `{name: (T, *W.shape)}`, step t's term of ∂L/∂W; `grads`: their sum
      over t, which is ∂L/∂W as the engine computes it.
    """

    loss: float
    dL_da: np.ndarray
    da_norms: np.ndarray
    dL_dc: np.ndarray | None
    dc_norms: np.ndarray | None
    contributions: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]

    def contribution_norms(self, name: str) -> np.ndarray:
        """‖∂L/∂W|_t‖ for t = 1..T: how much each step adds to W's gradient, shape (T,)."""
        terms = self.contributions[name]
        return np.sqrt((terms.reshape(len(terms), -1).astype(np.float64) ** 2).sum(axis=1))


def _owner(module: Any, dotted: str) -> tuple[Any, str]:
    """The object holding parameter `dotted` and the attribute (or list index) holding it."""
    *path, last = dotted.split(".")
    obj = module
    for part in path:
        obj = obj[int(part)] if isinstance(obj, list | tuple) else getattr(obj, part)
    return obj, last


def _set(owner: Any, key: str, value: Any) -> None:
    if isinstance(owner, list):
        owner[int(key)] = value
    else:
        setattr(owner, key, value)


def _get(owner: Any, key: str) -> Any:
    return owner[int(key)] if isinstance(owner, list) else getattr(owner, key)


def _parts(state: Any) -> list[Tensor]:
    return [state] if isinstance(state, Tensor) else list(state)


def unrolled(model: Any, x: Any, who: str) -> tuple[Any, bool, Tensor]:
    """(cell, reverse, x) for a cell or a `Recurrent` wrapping one, x checked `(B, T, n_x)`."""
    cell = getattr(model, "cell", model)
    reverse = bool(getattr(model, "reverse", False)) and cell is not model
    x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
    if x.ndim != 3:
        raise ValueError(f"{who}: x must have shape (B, T, n_x), got {x.shape}")
    return cell, reverse, x


def gradients_through_time(
    model: Any,
    x: Any,
    loss_fn: Callable[[Tensor], Tensor],
    state: Any = None,
) -> GradientsThroughTime:
    """Run one BPTT pass and return ∂L/∂a<t> per step and each step's share of ∂L/∂W.

    `model` is a cell following the cell protocol, or a `Recurrent` wrapping one (its
    `reverse` is honoured). `x (B, T, n_x)`; `loss_fn(outputs) -> L` maps the outputs
    `(B, T, n_a)` (a<t> at every step, as `Recurrent` returns them) to a scalar Tensor; it
    may use other modules (a read-out layer), whose parameters then get `.grad` as usual.
    `state` is the initial state (zeros when `None`).

    The cell's own parameters are *not* touched: their `.grad` stays as it was, and the
    per-step aliases carry the gradients instead. Nested parameters (a cell made of
    submodules or lists of them) are aliased too.

    >>> import numpy as np
    >>> from tinygrad_seq.nn import LSTMCell
    >>> g = gradients_through_time(LSTMCell(2, 3), np.ones((2, 5, 2), np.float32),
    ...                            lambda outputs: outputs.sum())
    >>> g.dc_norms.shape, sorted(g.grads)[:2]
    ((5,), ['W_c', 'W_f'])
    """
    cell, reverse, x = unrolled(model, x, "gradients_through_time")
    B, T = x.shape[:2]
    named = (
        list(cell.named_parameters())
        if isinstance(cell, Module)
        else [(n, p) for n, p in vars(cell).items() if isinstance(p, Tensor) and p.requires_grad]
    )
    owners = [(name, *_owner(cell, name)) for name, _ in named]
    aliases: dict[str, list[Any]] = {name: [None] * T for name, _ in named}
    originals = {name: _get(owner, key) for name, owner, key in owners}
    outputs: list[Any] = [None] * T
    states: list[Any] = [None] * T
    state = cell.init_state(B) if state is None else state
    try:
        for t in reversed(range(T)) if reverse else range(T):
            for name, owner, key in owners:
                # a new leaf sharing W's array: its .grad will be step t's term of ∂L/∂W
                alias = Tensor(originals[name].data, requires_grad=True, name=f"{name}<{t + 1}>")
                aliases[name][t] = alias
                _set(owner, key, alias)
            state = cell(x[:, t], state)
            for part in _parts(state):
                part.retain_grad()
            states[t] = state
            outputs[t] = state_output(state)
    finally:
        for name, owner, key in owners:
            _set(owner, key, originals[name])
    loss = loss_fn(stack(outputs, axis=1))
    if not isinstance(loss, Tensor) or loss.size != 1:
        raise ValueError("gradients_through_time: loss_fn must return a single-element Tensor")
    loss.backward()

    def grads_of(index: int) -> np.ndarray:
        return np.stack(
            [
                np.zeros(p.shape, p.dtype) if p.grad is None else p.grad
                for p in (_parts(s)[index] for s in states)
            ]
        )

    def norms(g: np.ndarray) -> np.ndarray:
        return np.sqrt((g.reshape(T, -1).astype(np.float64) ** 2).sum(axis=1))

    dL_da = grads_of(0)
    has_c = len(_parts(states[0])) > 1
    dL_dc = grads_of(1) if has_c else None
    contributions = {
        name: np.stack([np.zeros(a.shape, a.dtype) if a.grad is None else a.grad for a in row])
        for name, row in aliases.items()
    }
    return GradientsThroughTime(
        loss=float(loss.data),
        dL_da=dL_da,
        da_norms=norms(dL_da),
        dL_dc=dL_dc,
        dc_norms=None if dL_dc is None else norms(dL_dc),
        contributions=contributions,
        grads={name: terms.sum(axis=0) for name, terms in contributions.items()},
    )
