"""The primitive ops: one `Function` each, its forward and its derivative side by side.

Each derivative is written once, as `vjp(self, m, g, *inputs, out)`: one gradient per input
from the upstream gradient `g`, the inputs and the output, using Python operators and the
functions of the namespace `m` (see `backends.py`). The engine calls it with NumPy arrays
for a first-order pass and with Tensors when a graph of the gradient is asked for; the step
compiler calls it with symbolic operands. Element-wise primitives also give their forward as
`formula(self, m, *inputs)`, so a compiled kernel derives both directions from the same lines.

Each vjp is only calculus: the engine reduces broadcast gradients to each input's shape,
accumulates them and skips inputs that need none. Ops that are not here (`mean`, `var`,
`logsumexp`, losses, cells) are compositions of these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import kernels
from .backends import ARRAYS, TENSORS, _floating
from .tensor import Function, Tensor

__all__ = ["ARRAYS", "TENSORS"]


class Elementwise(Function):
    """An element-wise primitive: its forward is its `formula` on arrays, broadcasting."""

    elementwise = True

    def formula(self, m: Any, *xs: Any) -> Any:
        raise NotImplementedError


# ================================================================ binary element-wise


class Add(Elementwise):
    """z = x + y;  ∂z/∂x = 1, ∂z/∂y = 1."""

    def formula(self, m, x, y):
        return x + y

    def vjp(self, m, g, x, y, out):
        return g, g


class Sub(Elementwise):
    """z = x − y;  ∂z/∂x = 1, ∂z/∂y = −1."""

    def formula(self, m, x, y):
        return x - y

    def vjp(self, m, g, x, y, out):
        return g, (-g if self.needs_input_grad[1] else None)


class Mul(Elementwise):
    """z = x · y;  ∂z/∂x = y, ∂z/∂y = x."""

    def formula(self, m, x, y):
        return x * y

    def vjp(self, m, g, x, y, out):
        gx, gy = self.needs_input_grad
        return (g * y if gx else None), (g * x if gy else None)


class Div(Elementwise):
    """z = x / y;  ∂z/∂x = 1/y, ∂z/∂y = −x/y² = −z/y."""

    def formula(self, m, x, y):
        return x / y

    def vjp(self, m, g, x, y, out):
        gx = g / y
        return gx, (-gx * out if self.needs_input_grad[1] else None)


class Minimum(Elementwise):
    """z = min(x, y);  the gradient goes to the smaller input, split in half at ties."""

    def formula(self, m, x, y):
        return m.minimum(x, y)

    def vjp(self, m, g, x, y, out):
        half = g * 0.5
        return m.where(x < y, g, m.where(x > y, 0.0, half)), m.where(
            x > y, g, m.where(x < y, 0.0, half)
        )


class Maximum(Elementwise):
    """z = max(x, y);  the gradient goes to the larger input, split in half at ties."""

    def formula(self, m, x, y):
        return m.maximum(x, y)

    def vjp(self, m, g, x, y, out):
        half = g * 0.5
        return m.where(x > y, g, m.where(x < y, 0.0, half)), m.where(
            x < y, g, m.where(x > y, 0.0, half)
        )


class Where(Elementwise):
    """z = a where cond else b;  ∂L/∂a = g · cond, ∂L/∂b = g · ¬cond."""

    def formula(self, m, cond, a, b):
        return m.where(cond, a, b)

    def vjp(self, m, g, cond, a, b, out):
        _, ga, gb = self.needs_input_grad
        return (
            None,
            (m.where(cond, g, 0.0) if ga else None),
            (m.where(cond, 0.0, g) if gb else None),
        )


# ================================================================ unary element-wise


class Pow(Elementwise):
    """z = xᵖ for a constant p;  ∂z/∂x = p · xᵖ⁻¹ (0 everywhere when p = 0)."""

    def forward(self, x, exponent: float):
        if isinstance(exponent, Tensor) or np.ndim(exponent) != 0:
            raise TypeError("Tensor ** exponent: the exponent must be a Python number")
        self.p = exponent
        return x**exponent

    def formula(self, m, x):
        return x**self.p

    def vjp(self, m, g, x, out):
        return (m.zeros_like(g) if self.p == 0 else g * self.p * x ** (self.p - 1),)


class Neg(Elementwise):
    """z = −x."""

    def formula(self, m, x):
        return -x

    def vjp(self, m, g, x, out):
        return (-g,)


class Exp(Elementwise):
    """z = eˣ;  ∂z/∂x = z."""

    def formula(self, m, x):
        return m.exp(x)

    def vjp(self, m, g, x, out):
        return (g * out,)


class Log(Elementwise):
    """z = ln x;  ∂z/∂x = 1/x."""

    def formula(self, m, x):
        return m.log(x)

    def vjp(self, m, g, x, out):
        return (g / x,)


class Sqrt(Elementwise):
    """z = √x;  ∂z/∂x = 1 / (2z)."""

    def formula(self, m, x):
        return m.sqrt(x)

    def vjp(self, m, g, x, out):
        return (g / (2.0 * out),)


class Abs(Elementwise):
    """z = |x|;  ∂z/∂x = sign x (0 at x = 0, as PyTorch)."""

    def formula(self, m, x):
        return m.abs(x)

    def vjp(self, m, g, x, out):
        return (g * m.sign(x),)


class Clip(Elementwise):
    """z = min(max(x, lo), hi), a bound `None` meaning none;  ∂z/∂x = [lo ≤ x ≤ hi]."""

    def forward(self, x, lo=None, hi=None):
        if lo is None and hi is None:
            raise ValueError("clip needs at least one of lo and hi")
        self.lo, self.hi = lo, hi
        return self.formula(ARRAYS, x)

    def formula(self, m, x):
        return m.clip(x, self.lo, self.hi)

    def vjp(self, m, g, x, out):
        if self.lo is None:
            return (m.where(x <= self.hi, g, 0.0),)
        if self.hi is None:
            return (m.where(x >= self.lo, g, 0.0),)
        return (m.where(x >= self.lo, m.where(x <= self.hi, g, 0.0), 0.0),)


class Tanh(Elementwise):
    """z = tanh x;  ∂z/∂x = 1 − z²."""

    def formula(self, m, x):
        return m.tanh(x)

    def vjp(self, m, g, x, out):
        return (g * (1.0 - out * out),)

    def backward(self, grad):  # the vjp above, as one Numba kernel
        return kernels.tanh_backward(self.out, grad)


class Sigmoid(Elementwise):
    """z = σ(x) = 1 / (1 + e⁻ˣ), computed without overflow;  ∂z/∂x = z (1 − z)."""

    def formula(self, m, x):
        return m.sigmoid(x)

    def vjp(self, m, g, x, out):
        return (g * out * (1.0 - out),)

    def backward(self, grad):  # the vjp above, as one Numba kernel
        return kernels.sigmoid_backward(self.out, grad)


class Softplus(Elementwise):
    """z = log(1 + eˣ), computed without overflow;  ∂z/∂x = σ(x)."""

    def formula(self, m, x):
        return m.softplus(x)

    def vjp(self, m, g, x, out):
        return (g * m.sigmoid(x),)


class Relu(Elementwise):
    """z = max(x, 0);  ∂z/∂x = [x > 0]."""

    def formula(self, m, x):
        return m.where(x > 0, x, 0.0)

    def vjp(self, m, g, x, out):
        return (m.where(x > 0, g, 0.0),)


# ================================================================ row-wise (along one axis)


def _to_last(x: np.ndarray, axis: int) -> np.ndarray:
    return x if axis in (-1, x.ndim - 1) else np.moveaxis(x, axis, -1)


def _from_last(x: np.ndarray, axis: int) -> np.ndarray:
    return x if axis in (-1, x.ndim - 1) else np.moveaxis(x, -1, axis)


class Softmax(Function):
    """z = e^(x − max x) / Σ e^(x − max x) along `axis`;  ∂L/∂x = z (g − Σ g z)."""

    def forward(self, x, axis: int = -1):
        self.axis = axis
        return _from_last(kernels.softmax(_to_last(_floating(x), axis)), axis)

    def vjp(self, m, g, x, out):
        return (out * (g - (g * out).sum(axis=self.axis, keepdims=True)),)

    def backward(self, grad):  # the vjp above, as one Numba kernel
        z, g = _to_last(self.out, self.axis), _to_last(grad, self.axis)
        return _from_last(kernels.softmax_backward(z, g), self.axis)


class LogSoftmax(Function):
    """z = x − max x − log Σ e^(x − max x) along `axis`;  ∂L/∂x = g − e^z Σ g."""

    def forward(self, x, axis: int = -1):
        self.axis = axis
        return _from_last(kernels.log_softmax(_to_last(_floating(x), axis)), axis)

    def vjp(self, m, g, x, out):
        return (g - m.exp(out) * g.sum(axis=self.axis, keepdims=True),)

    def backward(self, grad):  # the vjp above, as one Numba kernel
        z, g = _to_last(self.out, self.axis), _to_last(grad, self.axis)
        return _from_last(kernels.log_softmax_backward(z, g), self.axis)


# ================================================================ reductions


def _kept_shape(shape: tuple[int, ...], axis: Any) -> tuple[int, ...]:
    """The reduced shape with the reduced axes kept as size 1."""
    if axis is None:
        return (1,) * len(shape)
    axes = {a % len(shape) for a in ((axis,) if isinstance(axis, int) else axis)}
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    """z = Σ x over `axis`;  ∂z/∂x = 1 (the gradient broadcast back)."""

    def forward(self, x, axis=None, keepdims: bool = False):
        self.axis = axis
        return np.sum(x, axis=axis, keepdims=keepdims)

    def vjp(self, m, g, x, out):
        return (m.broadcast_to(g.reshape(_kept_shape(x.shape, self.axis)), x.shape),)


class Max(Function):
    """z = max x over `axis`;  the gradient goes to the maxima, split evenly between ties."""

    def forward(self, x, axis=None, keepdims: bool = False):
        self.axis = axis
        top = np.max(x, axis=axis, keepdims=True)
        at_max = x == top
        self.share = at_max / at_max.sum(axis=axis, keepdims=True)  # a constant of x's shape
        return top if keepdims else top.reshape(()) if axis is None else np.squeeze(top, axis)

    def vjp(self, m, g, x, out):
        kept = g.reshape(_kept_shape(x.shape, self.axis))
        return (m.broadcast_to(kept, x.shape) * self.share.astype(g.dtype, copy=False),)


class BroadcastTo(Function):
    """z = x broadcast to `shape` (a view);  ∂L/∂x = g summed over the broadcast axes."""

    def forward(self, x, shape):
        return np.broadcast_to(x, shape)

    def vjp(self, m, g, x, out):
        return (m.unbroadcast(g, np.shape(x)),)


# ================================================================ linear algebra


class MatMul(Function):
    """z = x @ y (NumPy semantics);  ∂L/∂x = g @ yᵀ, ∂L/∂y = xᵀ @ g."""

    def forward(self, x, y):
        if np.ndim(x) == 0 or np.ndim(y) == 0:
            raise ValueError("matmul: both operands need at least one dimension")
        if x.shape[-1] != y.shape[0 if y.ndim == 1 else -2]:
            raise ValueError(f"matmul: shapes {x.shape} and {y.shape} do not align")
        return x @ y

    def vjp(self, m, g, x, y, out):
        gx_needed, gy_needed = self.needs_input_grad
        if x.ndim == 1 and y.ndim == 1:
            return (g * y if gx_needed else None), (g * x if gy_needed else None)
        # view 1-D operands as matrices, as NumPy does, and drop the added axis afterwards
        x2 = x.reshape((1, -1)) if x.ndim == 1 else x
        y2 = y.reshape((-1, 1)) if y.ndim == 1 else y
        g2 = g.reshape((*g.shape[:-1], 1, g.shape[-1])) if x.ndim == 1 else g
        g2 = g2.reshape((*g2.shape, 1)) if y.ndim == 1 else g2
        gx = gy = None
        if gx_needed:
            gx = g2 @ m.swapaxes(y2, -1, -2)
            gx = gx.reshape(gx.shape[:-2] + gx.shape[-1:]) if x.ndim == 1 else gx
        if gy_needed:
            if y2.ndim == 2 and x2.ndim > 2:  # a shared weight: one GEMM over all leading dims
                gy = x2.reshape((-1, x2.shape[-1])).T @ g2.reshape((-1, g2.shape[-1]))
            else:
                gy = m.swapaxes(x2, -1, -2) @ g2
            gy = gy.reshape(gy.shape[:-1]) if y.ndim == 1 else gy
        # a batched product's gradient is summed over the batch axes an operand was broadcast on
        gx = gx if gx is None or gx.shape == x.shape else m.unbroadcast(gx, x.shape)
        gy = gy if gy is None or gy.shape == y.shape else m.unbroadcast(gy, y.shape)
        return gx, gy


# ================================================================ movement


class Reshape(Function):
    """z = x viewed with a new shape;  ∂L/∂x = g reshaped back."""

    def forward(self, x, shape):
        return x.reshape(shape)

    def vjp(self, m, g, x, out):
        return (g.reshape(x.shape),)


class Transpose(Function):
    """z = x with axes permuted;  ∂L/∂x = g with the inverse permutation."""

    def forward(self, x, axes=None):
        self.axes = None if axes is None else [a % x.ndim for a in axes]  # (-1, 0) → (n−1, 0)
        return np.transpose(x, axes)

    def vjp(self, m, g, x, out):
        return (m.transpose(g, None if self.axes is None else np.argsort(self.axes)),)


def _plain_index(index: Any) -> Any:
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index.data if isinstance(index, Tensor) else index


class GetItem(Function):
    """z = x[index];  ∂L/∂x scatters g back, adding where an index repeats."""

    def forward(self, x, index):
        self.index = _plain_index(index)
        return x[self.index]

    def vjp(self, m, g, x, out):
        return (m.scatter(g, self.index, x.shape, x.dtype),)


class Scatter(Function):
    """z = zeros(shape) with g added at `index` (the derivative of x[index]);  ∂L/∂g = dz[index]."""

    def forward(self, g, index, shape):
        self.index = index
        return ARRAYS.scatter(g, index, shape, g.dtype)

    def vjp(self, m, gz, g, out):
        return (gz[self.index],)


class Concat(Function):
    """z = [x₁, x₂, …] joined along `axis`;  each ∂L/∂xᵢ is its slice of g."""

    def forward(self, *xs, axis: int = 0):
        self.axis = axis
        self.offsets = np.cumsum([x.shape[axis] for x in xs])[:-1]
        return np.concatenate(xs, axis=axis)

    def vjp(self, m, g, *xs_and_out):
        return m.split(g, self.offsets, self.axis)


class Split(Function):
    """(z₁, …, z_n) = x cut at `offsets` along `axis` (views);  ∂L/∂x joins the gᵢ back."""

    def forward(self, x, offsets, axis: int = -1):
        self.axis = axis
        return tuple(np.split(x, offsets, axis=axis))

    def vjp(self, m, grads, x, out):
        return (m.concat(grads, self.axis),)


class Stack(Function):
    """z = [x₁, x₂, …] stacked on a new `axis`;  each ∂L/∂xᵢ is g taken at i."""

    def forward(self, *xs, axis: int = 0):
        self.axis = axis
        return np.stack(xs, axis=axis)

    def vjp(self, m, g, *xs_and_out):
        return m.unstack(g, self.axis)


class Unstack(Function):
    """(z₁, …, z_n) = the slices of x along `axis` (views);  ∂L/∂x stacks the gᵢ back.

    One node for all n slices: slicing step by step with `x[:, t]` would scatter a full-size
    gradient per step in backward (quadratic in the sequence length).
    """

    def forward(self, x, axis: int = 0):
        self.axis = axis
        return tuple(np.moveaxis(x, axis, 0))

    def vjp(self, m, grads, x, out):
        return (m.stack(grads, self.axis),)


# ================================================================ functional entry points


def concat(tensors: list[Tensor] | tuple[Tensor, ...], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (differentiable `np.concatenate`)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concat needs at least one tensor")
    shapes = [np.shape(t) for t in tensors]
    ndim = len(shapes[0])
    ax = axis % ndim if ndim else 0
    for s in shapes:
        if len(s) != ndim or any(
            a != b for i, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if i != ax
        ):
            raise ValueError(f"concat along axis {axis}: shapes {shapes} do not match")
    return Concat.apply(*tensors, axis=axis)


def stack(tensors: list[Tensor] | tuple[Tensor, ...], axis: int = 0) -> Tensor:
    """Stack same-shaped tensors on a new axis (differentiable `np.stack`)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    shapes = {np.shape(t) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack needs tensors of one shape, got {sorted(shapes)}")
    return Stack.apply(*tensors, axis=axis)


def unstack(x: Tensor, axis: int = 0) -> tuple[Tensor, ...]:
    """The slices of `x` along `axis`, as one graph node (the inverse of `stack`)."""
    return Unstack.apply(x, axis=axis)


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """Pick `a` where `cond` is true and `b` elsewhere; `cond` is a boolean array or Tensor."""
    cond = np.asarray(cond.data if isinstance(cond, Tensor) else cond, dtype=bool)
    return Where.apply(cond, a, b)


def minimum(a: Any, b: Any) -> Tensor:
    """Element-wise min(a, b), broadcasting; at ties each input gets half the gradient."""
    return Minimum.apply(a, b)


def maximum(a: Any, b: Any) -> Tensor:
    """Element-wise max(a, b), broadcasting; at ties each input gets half the gradient."""
    return Maximum.apply(a, b)


def _creation(fill: float, shape: Any, dtype: Any, requires_grad: bool) -> Tensor:
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
    return Tensor(np.full(shape, fill, dtype=dtype), requires_grad=requires_grad)


def zeros(*shape: Any, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
    """A Tensor of zeros: `zeros(2, 3)` or `zeros((2, 3))`, float32 unless `dtype` says."""
    return _creation(0.0, shape, dtype, requires_grad)


def ones(*shape: Any, dtype: Any = np.float32, requires_grad: bool = False) -> Tensor:
    """A Tensor of ones: `ones(2, 3)` or `ones((2, 3))`, float32 unless `dtype` says."""
    return _creation(1.0, shape, dtype, requires_grad)


def zeros_like(t: Any, requires_grad: bool = False) -> Tensor:
    """Zeros of `t`'s shape and dtype."""
    return Tensor(np.zeros(np.shape(t), np.result_type(np.asarray(t))), requires_grad)


def ones_like(t: Any, requires_grad: bool = False) -> Tensor:
    """Ones of `t`'s shape and dtype."""
    return Tensor(np.ones(np.shape(t), np.result_type(np.asarray(t))), requires_grad)
