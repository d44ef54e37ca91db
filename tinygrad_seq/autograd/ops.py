"""The primitive ops: one `Function` each, forward and backward side by side.

Each backward is only calculus: the engine reduces broadcast gradients to each input's shape,
accumulates them, and skips inputs that need none (`self.needs_input_grad`). Ops that are not
here (`mean`, `-`, losses, cells) are composed from these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import kernels
from .tensor import Function, Tensor

# ================================================================ binary element-wise


class Add(Function):
    """z = x + y;  ∂z/∂x = 1, ∂z/∂y = 1."""

    def forward(self, x, y):
        return x + y

    def backward(self, grad):
        return grad, grad


class Sub(Function):
    """z = x − y;  ∂z/∂x = 1, ∂z/∂y = −1."""

    def forward(self, x, y):
        return x - y

    def backward(self, grad):
        return grad, (-grad if self.needs_input_grad[1] else None)


class Mul(Function):
    """z = x · y;  ∂z/∂x = y, ∂z/∂y = x."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, grad):
        gx, gy = self.needs_input_grad
        return (grad * self.y if gx else None), (grad * self.x if gy else None)


class Div(Function):
    """z = x / y;  ∂z/∂x = 1/y, ∂z/∂y = −x/y² = −z/y."""

    def forward(self, x, y):
        self.y = y
        self.z = x / y
        return self.z

    def backward(self, grad):
        gx = grad / self.y
        return gx, (-gx * self.z if self.needs_input_grad[1] else None)


class Pow(Function):
    """z = xᵖ for a constant p;  ∂z/∂x = p · xᵖ⁻¹."""

    def forward(self, x, exponent: float):
        if isinstance(exponent, Tensor) or np.ndim(exponent) != 0:
            raise TypeError("Tensor ** exponent: the exponent must be a Python number")
        self.x, self.p = x, exponent
        return x**exponent

    def backward(self, grad):
        if self.p == 0:  # d/dx x⁰ = 0 everywhere, x = 0 included (not 0 · 0⁻¹ = nan)
            return np.zeros_like(grad)
        return grad * self.p * self.x ** (self.p - 1)


# ================================================================ unary element-wise


def _floating(x: Any) -> np.ndarray:
    """Integer or boolean input to a float-valued op computes in float32 (not truncated)."""
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float32)


class Neg(Function):
    """z = −x."""

    def forward(self, x):
        return -x

    def backward(self, grad):
        return -grad


class Exp(Function):
    """z = eˣ;  ∂z/∂x = z."""

    def forward(self, x):
        self.z = np.exp(_floating(x))
        return self.z

    def backward(self, grad):
        return grad * self.z


class Log(Function):
    """z = ln x;  ∂z/∂x = 1/x."""

    def forward(self, x):
        self.x = _floating(x)
        return np.log(self.x)

    def backward(self, grad):
        return grad / self.x


class Tanh(Function):
    """z = tanh x;  ∂z/∂x = 1 − z²."""

    def forward(self, x):
        self.z = kernels.tanh(_floating(x))
        return self.z

    def backward(self, grad):
        return kernels.tanh_backward(self.z, grad)


class Sigmoid(Function):
    """z = σ(x) = 1 / (1 + e⁻ˣ), computed without overflow;  ∂z/∂x = z (1 − z)."""

    def forward(self, x):
        self.z = kernels.sigmoid(_floating(x))
        return self.z

    def backward(self, grad):
        return kernels.sigmoid_backward(self.z, grad)


class Relu(Function):
    """z = max(x, 0);  ∂z/∂x = [x > 0]."""

    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, grad):
        return grad * self.mask


# ================================================================ row-wise (along one axis)


def _to_last(x: np.ndarray, axis: int) -> np.ndarray:
    return x if axis in (-1, x.ndim - 1) else np.moveaxis(x, axis, -1)


def _from_last(x: np.ndarray, axis: int) -> np.ndarray:
    return x if axis in (-1, x.ndim - 1) else np.moveaxis(x, -1, axis)


class Softmax(Function):
    """z = e^(x − max x) / Σ e^(x − max x) along `axis`;  ∂L/∂x = z (g − Σ g z)."""

    def forward(self, x, axis: int = -1):
        self.axis = axis
        self.z = kernels.softmax(_to_last(_floating(x), axis))
        return _from_last(self.z, axis)

    def backward(self, grad):
        return _from_last(kernels.softmax_backward(self.z, _to_last(grad, self.axis)), self.axis)


class LogSoftmax(Function):
    """z = x − max x − log Σ e^(x − max x) along `axis`;  ∂L/∂x = g − e^z Σ g."""

    def forward(self, x, axis: int = -1):
        self.axis = axis
        self.z = kernels.log_softmax(_to_last(_floating(x), axis))
        return _from_last(self.z, axis)

    def backward(self, grad):
        g = _to_last(grad, self.axis)
        return _from_last(kernels.log_softmax_backward(self.z, g), self.axis)


# ================================================================ reductions


def _restore_axes(grad: np.ndarray, shape: tuple, axis: Any, keepdims: bool) -> np.ndarray:
    """Re-insert the reduced axes as size 1 so `grad` broadcasts against the input."""
    if keepdims or axis is None:
        return grad.reshape([1] * len(shape)) if axis is None and not keepdims else grad
    axes = (axis,) if isinstance(axis, int) else axis
    return np.expand_dims(grad, tuple(a % len(shape) for a in axes))


class Sum(Function):
    """z = Σ x over `axis`;  ∂z/∂x = 1 (the gradient broadcast back)."""

    def forward(self, x, axis=None, keepdims: bool = False):
        self.shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return np.sum(x, axis=axis, keepdims=keepdims)

    def backward(self, grad):
        grad = _restore_axes(np.asarray(grad), self.shape, self.axis, self.keepdims)
        return np.broadcast_to(grad, self.shape)


class Max(Function):
    """z = max x over `axis`;  the gradient goes to the maxima, split evenly between ties."""

    def forward(self, x, axis=None, keepdims: bool = False):
        self.x, self.axis, self.keepdims = x, axis, keepdims
        self.z = np.max(x, axis=axis, keepdims=True)
        return self.z if keepdims else np.max(x, axis=axis, keepdims=False)

    def backward(self, grad):
        grad = _restore_axes(np.asarray(grad), self.x.shape, self.axis, self.keepdims)
        at_max = self.x == self.z
        return grad * at_max / at_max.sum(axis=self.axis, keepdims=True)


# ================================================================ linear algebra


class MatMul(Function):
    """z = x @ y (NumPy semantics);  ∂L/∂x = g @ yᵀ, ∂L/∂y = xᵀ @ g."""

    def forward(self, x, y):
        if np.ndim(x) == 0 or np.ndim(y) == 0:
            raise ValueError("matmul: both operands need at least one dimension")
        if x.shape[-1] != y.shape[0 if y.ndim == 1 else -2]:
            raise ValueError(f"matmul: shapes {x.shape} and {y.shape} do not align")
        self.x, self.y = x, y
        return x @ y

    def backward(self, grad):
        x, y = self.x, self.y
        gx_needed, gy_needed = self.needs_input_grad
        if x.ndim == 1 and y.ndim == 1:
            return (grad * y if gx_needed else None), (grad * x if gy_needed else None)
        # view 1-D operands as matrices, as NumPy does, and drop the added axis afterwards
        x2 = x[None, :] if x.ndim == 1 else x
        y2 = y[:, None] if y.ndim == 1 else y
        g2 = np.expand_dims(grad, -2) if x.ndim == 1 else grad
        g2 = np.expand_dims(g2, -1) if y.ndim == 1 else g2
        gx = gy = None
        if gx_needed:
            gx = g2 @ np.swapaxes(y2, -1, -2)
            gx = gx[..., 0, :] if x.ndim == 1 else gx
        if gy_needed:
            if y2.ndim == 2 and x2.ndim > 2:  # a shared weight: one GEMM over all leading dims
                gy = x2.reshape(-1, x2.shape[-1]).T @ g2.reshape(-1, g2.shape[-1])
            else:
                gy = np.swapaxes(x2, -1, -2) @ g2
            gy = gy[..., 0] if y.ndim == 1 else gy
        return gx, gy


# ================================================================ movement


class Reshape(Function):
    """z = x viewed with a new shape;  ∂L/∂x = g reshaped back."""

    def forward(self, x, shape):
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, grad):
        return grad.reshape(self.shape)


class Transpose(Function):
    """z = x with axes permuted;  ∂L/∂x = g with the inverse permutation."""

    def forward(self, x, axes=None):
        self.axes = None if axes is None else [a % x.ndim for a in axes]  # (-1, 0) → (n−1, 0)
        return np.transpose(x, axes)

    def backward(self, grad):
        return np.transpose(grad, None if self.axes is None else np.argsort(self.axes))


class GetItem(Function):
    """z = x[index];  ∂L/∂x scatters g back, adding where an index repeats."""

    def forward(self, x, index):
        if isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        elif isinstance(index, Tensor):
            index = index.data
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        return x[index]

    def backward(self, grad):
        out = np.zeros(self.shape, dtype=np.result_type(self.dtype, grad.dtype))
        parts = self.index if isinstance(self.index, tuple) else (self.index,)
        if any(isinstance(i, np.ndarray | list) for i in parts):
            np.add.at(out, self.index, grad)  # repeated indices accumulate
        else:
            out[self.index] = grad
        return out


class Concat(Function):
    """z = [x₁, x₂, …] joined along `axis`;  each ∂L/∂xᵢ is its slice of g."""

    def forward(self, *xs, axis: int = 0):
        self.axis = axis
        self.splits = np.cumsum([x.shape[axis] for x in xs])[:-1]
        return np.concatenate(xs, axis=axis)

    def backward(self, grad):
        return tuple(np.split(grad, self.splits, axis=self.axis))


class Stack(Function):
    """z = [x₁, x₂, …] stacked on a new `axis`;  each ∂L/∂xᵢ is g taken at i."""

    def forward(self, *xs, axis: int = 0):
        self.axis = axis
        return np.stack(xs, axis=axis)

    def backward(self, grad):
        return tuple(np.moveaxis(grad, self.axis, 0))


class Unstack(Function):
    """(z₁, …, z_n) = the slices of x along `axis` (views);  ∂L/∂x stacks the gᵢ back.

    One node for all n slices: slicing step by step with `x[:, t]` would scatter a full-size
    gradient per step in backward (quadratic in the sequence length).
    """

    def forward(self, x, axis: int = 0):
        self.axis = axis
        return tuple(np.moveaxis(x, axis, 0))

    def backward(self, grads):
        return np.stack(grads, axis=self.axis)


class Where(Function):
    """z = a where cond else b;  ∂L/∂a = g · cond, ∂L/∂b = g · ¬cond."""

    def forward(self, cond, a, b):
        self.cond = cond
        return np.where(cond, a, b)

    def backward(self, grad):
        _, ga, gb = self.needs_input_grad
        zero = np.zeros((), dtype=grad.dtype)
        return (
            None,
            np.where(self.cond, grad, zero) if ga else None,
            np.where(self.cond, zero, grad) if gb else None,
        )


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
