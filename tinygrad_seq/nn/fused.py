"""The fast path `Recurrent` takes for the built-in cells: one graph node per time step.

BPTT still comes from the generic graph; only the node is bigger. For a sequence x (B, T, n_x):

1. The gate matrices are stacked once per sequence, W = [W_u; W_f; W_o; W_c] for the LSTM,
   and split into the hidden columns W_a and the input columns W_x (graph nodes, so gradients
   reach every W_u, W_f, …).
2. The input projection of every step is one GEMM, xz = x W_xᵀ + b, split into T tensors xz<t>.
3. Each step is one `Function`: z = xz<t> + a<t-1> W_aᵀ, then the gate arithmetic in one Numba
   kernel (`kernels.lstm_gates`), with its own backward kernel. The weight gradient of every
   step is deferred (`DeferredMatmulGrad`) so backward sums all steps in one GEMM.

The readable cells (`LSTMCell.forward`, …) stay the reference: tests hold this path to them,
values and gradients. The kernels give the first derivative only. When a gradient is itself
differentiated (`create_graph=True`) each step replays its `equations` — the same step in
recorded primitives, on the node's own inputs — and the engine differentiates those, so
second and higher derivatives through a fused LSTM, GRU or RNN are exact too.
`use_fused_cells(False)` (or `TINYGRAD_SEQ_FUSED=0`) turns it off; users' own cells, and
subclasses of the built-in ones, always take the generic path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ..autograd import Function, Tensor, concat, kernels, unstack
from ..autograd.backends import TENSORS
from ..autograd.functional import vjp_of
from ..autograd.tensor import DeferredMatmulGrad
from .gru import GRUCell
from .lstm import LSTMCell
from .rnn import RNNCell

_enabled = os.environ.get("TINYGRAD_SEQ_FUSED", "1") != "0"

Step = Callable[[int, Any], Any]


def use_fused_cells(flag: bool = True) -> None:
    """Let `Recurrent` run the built-in cells through fused steps (`True`, the default)."""
    global _enabled
    _enabled = bool(flag)


def fused_steps(cell: Any, x: Tensor, state: Any) -> Step | None:
    """A function `step(t, state) -> state` equal to `cell(x[:, t], state)`, or `None`."""
    if not _enabled:
        return None
    build = _BUILDERS.get(type(cell))
    if build is None:
        return None
    cell._prepare(x.data[:, 0], state)  # checks x<t> and the initial state, as each step would
    return build(cell, x)


# ================================================================ the step ops


class _Replayed(Function):
    """A step whose first-order backward is a fused kernel, and whose derivative on Tensors
    (what `create_graph=True` asks for) differentiates `equations(m, *inputs)` replayed as
    recorded primitives: one definition of the step beside the kernels, not a hand-written
    second derivative."""

    def equations(self, m: Any, *inputs: Any) -> Any:
        raise NotImplementedError

    def vjp(self, m: Any, g: Any, *inputs_and_out: Any) -> tuple[Any, ...]:
        inputs = inputs_and_out[:-1]
        outs = self.equations(TENSORS, *inputs)
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        return vjp_of(outs, list(inputs), list(g) if isinstance(g, tuple) else [g])


class LSTMStep(_Replayed):
    """z = xz<t> + a<t-1> W_aᵀ; Γ_{u,f,o} = σ(z + p c<t-1>), c̃ = tanh(z_c),
    c<t> = Γ_u c̃<t> + Γ_f c<t-1>, a<t> = Γ_o tanh(c<t>)  →  (a<t>, c<t>)."""

    def forward(self, xz, a_prev, c_prev, W_a, peep, *, W_aT, W_a_c):
        self.a_prev, self.c_prev, self.W_a, self.peep = a_prev, c_prev, W_a_c, peep
        a, c, self.gates, self.tc = kernels.lstm_gates(xz, a_prev @ W_aT, c_prev, peep)
        return a, c

    def backward(self, grads):
        ga, gc = grads
        dz, dc_prev, dpeep = kernels.lstm_gates_backward(
            ga, gc, self.gates, self.tc, self.c_prev, self.peep
        )
        need = self.needs_input_grad
        return (
            dz,
            dz @ self.W_a if need[1] else None,
            dc_prev,
            DeferredMatmulGrad(dz, self.a_prev) if need[3] else None,
            dpeep if need[4] else None,
        )

    def equations(self, m, xz, a_prev, c_prev, W_a, peep):
        n = a_prev.shape[1]
        z = xz + a_prev @ W_a.T
        gamma_u = m.sigmoid(z[:, :n] + peep[0] * c_prev)
        gamma_f = m.sigmoid(z[:, n : 2 * n] + peep[1] * c_prev)
        gamma_o = m.sigmoid(z[:, 2 * n : 3 * n] + peep[2] * c_prev)
        c = gamma_u * m.tanh(z[:, 3 * n :]) + gamma_f * c_prev
        return gamma_o * m.tanh(c), c


class GRUStep(_Replayed):
    """h = a<t-1> W_aᵀ + [0, 0, b_cc]; Γ_u = σ(xz_u + h_u), Γ_r = σ(xz_r + h_r),
    c̃ = tanh(xz_c + Γ_r h_c), c<t> = Γ_u c̃ + (1 − Γ_u) c<t-1>  (reset after, a<t> = c<t>)."""

    def forward(self, xz, c_prev, W_a, b_cc, *, W_aT, W_a_c):
        n = c_prev.shape[1]
        h = c_prev @ W_aT
        h[:, 2 * n :] += b_cc
        self.c_prev, self.W_a, self.h = c_prev, W_a_c, h
        c, self.gates = kernels.gru_gates(xz, h, c_prev)
        return c

    def backward(self, grad):
        dxz, dh, dc_prev = kernels.gru_gates_backward(grad, self.gates, self.h, self.c_prev)
        need = self.needs_input_grad
        n = self.c_prev.shape[1]
        if need[1]:
            dc_prev += dh @ self.W_a
        return (
            dxz,
            dc_prev,
            DeferredMatmulGrad(dh, self.c_prev) if need[2] else None,
            dh[:, 2 * n :].sum(axis=0) if need[3] else None,
        )

    def equations(self, m, xz, c_prev, W_a, b_cc):
        n = c_prev.shape[1]
        h = c_prev @ W_a.T
        gamma_u = m.sigmoid(xz[:, :n] + h[:, :n])
        gamma_r = m.sigmoid(xz[:, n : 2 * n] + h[:, n : 2 * n])
        c_tilde = m.tanh(xz[:, 2 * n :] + gamma_r * (h[:, 2 * n :] + b_cc))
        return gamma_u * c_tilde + (1 - gamma_u) * c_prev


class RNNStep(_Replayed):
    """a<t> = g(xz<t> + a<t-1> W_aaᵀ) with g = tanh or relu."""

    def forward(self, xz, a_prev, W_aa, *, W_aaT, W_aa_c, relu):
        self.a_prev, self.W_aa, self.relu = a_prev, W_aa_c, relu
        z = a_prev @ W_aaT
        z += xz
        self.a = np.maximum(z, 0) if relu else kernels.tanh(z)
        return self.a

    def backward(self, grad):
        dz = grad * (self.a > 0) if self.relu else kernels.tanh_backward(self.a, grad)
        need = self.needs_input_grad
        return (
            dz,
            dz @ self.W_aa if need[1] else None,
            DeferredMatmulGrad(dz, self.a_prev) if need[2] else None,
        )

    def equations(self, m, xz, a_prev, W_aa):
        z = xz + a_prev @ W_aa.T
        return m.maximum(z, 0.0) if self.relu else m.tanh(z)


# ================================================================ per-cell plans


def _project(x: Tensor, W: Tensor, b: Tensor, n_a: int) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Split W = [W_a | W_x]; return W_a and xz<t> = x<t> W_xᵀ + b for every t (one GEMM)."""
    B, T, n_x = x.shape
    W_a, W_x = W[:, :n_a], W[:, n_a:]
    x_tb = x.transpose(1, 0, 2).reshape(T * B, n_x)
    xz = (x_tb @ W_x.T + b).reshape(T, B, -1)
    return W_a, unstack(xz)


def _contiguous(W: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous copies of Wᵀ (forward) and W (backward): OpenBLAS runs these small products
    on strided views of the stacked matrix up to several times slower."""
    return np.ascontiguousarray(W.data.T), np.ascontiguousarray(W.data)


def _lstm_steps(cell: LSTMCell, x: Tensor) -> Step:
    W = concat([cell.W_u, cell.W_f, cell.W_o, cell.W_c], axis=0)
    b = concat([cell.b_u, cell.b_f, cell.b_o, cell.b_c])
    W_a, xz = _project(x, W, b, cell.hidden_size)
    W_aT, W_a_c = _contiguous(W_a)
    if cell.peephole:
        peep: Any = concat([cell.p_u, cell.p_f, cell.p_o]).reshape(3, -1)
    else:
        peep = np.zeros((3, cell.hidden_size), W_aT.dtype)

    def step(t: int, state: Any) -> tuple[Tensor, Tensor]:
        a_prev, c_prev = state
        return LSTMStep.apply(xz[t], a_prev, c_prev, W_a, peep, W_aT=W_aT, W_a_c=W_a_c)

    return step


def _gru_steps(cell: GRUCell, x: Tensor) -> Step | None:
    if not (cell.full and cell.reset_after):
        return None  # the course's reset-before GRU takes the generic path
    W = concat([cell.W_u, cell.W_r, cell.W_c], axis=0)
    b = concat([cell.b_u, cell.b_r, cell.b_c])
    W_a, xz = _project(x, W, b, cell.hidden_size)
    W_aT, W_a_c = _contiguous(W_a)

    def step(t: int, state: Tensor) -> Tensor:
        return GRUStep.apply(xz[t], state, W_a, cell.b_cc, W_aT=W_aT, W_a_c=W_a_c)

    return step


def _rnn_steps(cell: RNNCell, x: Tensor) -> Step:
    W = concat([cell.W_aa, cell.W_ax], axis=1)
    W_aa, xz = _project(x, W, cell.b_a, cell.hidden_size)
    W_aaT, W_aa_c = _contiguous(W_aa)
    relu = cell.nonlinearity == "relu"

    def step(t: int, state: Tensor) -> Tensor:
        return RNNStep.apply(xz[t], state, W_aa, W_aaT=W_aaT, W_aa_c=W_aa_c, relu=relu)

    return step


_BUILDERS: dict[type, Callable[[Any, Tensor], Step | None]] = {
    LSTMCell: _lstm_steps,
    GRUCell: _gru_steps,
    RNNCell: _rnn_steps,
}
