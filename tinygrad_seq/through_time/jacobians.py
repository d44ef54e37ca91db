"""Jacobians through time: ∂s<t>/∂s<k> for every k < t, their singular values, and the bound
of Pascanu, Mikolov and Bengio (2013) on them.

The state s<t> is everything a step hands the next: a<t>, or [a<t>, c<t>] for the LSTM. By
the chain rule the Jacobian over t − k steps is a product of one-step Jacobians,

    ∂s<t>/∂s<k> = ∂s<t>/∂s<t-1> · ∂s<t-1>/∂s<t-2> · … · ∂s<k+1>/∂s<k>,

and BPTT multiplies ∂L/∂s<t> by its transpose: ∂L/∂s<k> ⊇ (∂s<t>/∂s<k>)ᵀ ∂L/∂s<t>. How
fast its singular values fall with t − k is how fast a gradient vanishes. For the tanh RNN,
a<t> = tanh(W_aa a<t-1> + W_ax x<t> + b_a), each factor is diag(1 − a<t>²) W_aa, and since
0 < 1 − a² ≤ 1,

    ‖∂a<t>/∂a<k>‖₂ ≤ (σ_max(W_aa))^(t−k):

below 1, the gradient from step t vanishes geometrically; above 1 it can explode.

`state_jacobians` computes them with the engine itself: one reverse pass per component of
s<t> (batched over the examples), with every s<k> captured on the way, so all k < t come
from the same n passes. No Jacobian is written by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..autograd import Tensor, grad
from ..nn import RNNCell
from .gradients import _parts, unrolled

__all__ = ["StateJacobians", "pascanu_bound", "state_jacobians"]


@dataclass
class StateJacobians:
    """∂s<t>/∂s<k> for k = 0..t−1 (s<0> the initial state), per example.

    - `jacobians`: `(t, B, n_s, n_s)`, `jacobians[k][b]` = ∂s<t>/∂s<k> of example b (rows:
      components of s<t>, columns: of s<k>); n_s = n_a, or 2 n_a for (a, c).
    - `singular_values`: `(t, B, n_s)`, in decreasing order.
    - `t`: the step the Jacobians end at (1..T).
    """

    t: int
    jacobians: np.ndarray
    singular_values: np.ndarray

    @property
    def largest(self) -> np.ndarray:
        """‖∂s<t>/∂s<k>‖₂, the largest singular value, shape (t, B)."""
        return self.singular_values[:, :, 0]

    def at_distance(self, distance: int) -> np.ndarray:
        """The singular values of ∂s<t>/∂s<t−distance>, shape (B, n_s)."""
        if not 1 <= distance <= self.t:
            raise ValueError(f"distance must be in 1..{self.t}, got {distance}")
        return self.singular_values[self.t - distance]


def state_jacobians(model: Any, x: Any, t: int | None = None, state: Any = None) -> StateJacobians:
    """∂s<t>/∂s<k> for every k < t, for a cell (or a `Recurrent` wrapping one) on `x`.

    `x (B, T, n_x)`; `t` in 1..T (default T); `state` the initial state s<0> (zeros when
    `None`). The cell is applied once per step, as `Recurrent` applies it; a layer with
    `reverse=True` is unrolled from the last step, so its step t reads x<T+1−t>.

    >>> import numpy as np
    >>> from tinygrad_seq.nn import RNNCell
    >>> cell = RNNCell(2, 3).to(np.float64)
    >>> J = state_jacobians(cell, np.zeros((1, 4, 2)))           # a<0> = 0, x = 0: a<t> = 0
    >>> J.jacobians.shape, bool(np.allclose(J.jacobians[3][0], cell.W_aa.data))
    ((4, 1, 3, 3), True)
    """
    cell, reverse, x = unrolled(model, x, "state_jacobians")
    B, T = x.shape[:2]
    t = T if t is None else t
    if not (isinstance(t, int | np.integer) and 1 <= t <= T):
        raise ValueError(f"state_jacobians: t must be a step in 1..{T}, got {t!r}")
    t = int(t)
    start = cell.init_state(B) if state is None else state
    parts = [Tensor(np.array(p.data), requires_grad=True) for p in _parts(start)]
    s: Any = parts[0] if len(parts) == 1 else tuple(parts)
    states = [parts]
    order = list(reversed(range(T))) if reverse else list(range(T))
    for step in order[:t]:
        # a fresh node per part: the parts of s<k> must be independent inputs of the next
        # step for ∂/∂c<k> to hold a<k> fixed (a<k> is itself computed from c<k>)
        fresh = [p + 0.0 for p in _parts(cell(x[:, step], s))]
        s = fresh[0] if len(fresh) == 1 else tuple(fresh)
        states.append(fresh)
    final = states[-1]
    widths = [p.shape[1] for p in final]
    n_s = sum(widths)
    history = [p for k in range(t) for p in states[k]]
    jac = np.zeros((t, B, n_s, n_s))
    offsets = np.cumsum([0, *widths])
    for i in range(n_s):  # row i of every ∂s<t>/∂s<k>, all k and examples at once
        part = int(np.searchsorted(offsets, i, side="right") - 1)
        seeds = [np.zeros(p.shape, p.dtype) for p in final]
        seeds[part][:, i - offsets[part]] = 1.0
        used = [k for k, p in enumerate(final) if p.requires_grad]
        grads = grad(
            [final[k] for k in used], history, grad_outputs=[seeds[k] for k in used],
            retain_graph=True,
        )  # fmt: skip
        for index, g in enumerate(grads):
            k, j = divmod(index, len(widths))
            if g is not None:
                jac[k, :, i, offsets[j] : offsets[j + 1]] = g.data
    singular = np.linalg.svd(jac, compute_uv=False)
    return StateJacobians(t, jac, singular)


def pascanu_bound(cell: RNNCell, distance: int | np.ndarray) -> Any:
    """(σ_max(W_aa))^distance: for a tanh (or ReLU) RNN, an upper bound on ‖∂a<t>/∂a<k>‖₂
    with distance = t − k, because each step's Jacobian diag(g′) W_aa has 0 ≤ g′ ≤ 1.

    >>> import numpy as np
    >>> cell = RNNCell(2, 3).to(np.float64)
    >>> cell.W_aa.data = 0.5 * np.eye(3)
    >>> float(pascanu_bound(cell, 3))
    0.125
    """
    if not isinstance(cell, RNNCell):
        raise TypeError(
            f"pascanu_bound is the bound of the vanilla RNN (RNNCell); got {type(cell).__name__}"
        )
    sigma = float(np.linalg.svd(np.asarray(cell.W_aa.data, np.float64), compute_uv=False)[0])
    return sigma ** np.asarray(distance, dtype=np.float64)
