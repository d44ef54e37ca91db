"""The two namespaces every derivative runs on: `ARRAYS` (NumPy) and `TENSORS` (graph ops).

Each primitive in `ops.py` writes its derivative once, as `vjp(self, m, g, *inputs, out)`:
Python operators on the operands plus the functions of a namespace `m`. Called with `ARRAYS`
and arrays, it is the first-order backward; called with `TENSORS` and Tensors, every step
of it is recorded, so the gradient can be differentiated again (`create_graph=True`); the
step compiler calls it with symbolic operands to emit kernel source. An element-wise
derivative uses only operators, comparisons (masks) and `where`, `sign`, `abs`, `exp`,
`log`, `tanh`, `sigmoid`, `sqrt`, `minimum`, `maximum`, `clip`, `softplus`, `zeros_like`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import kernels


def _floating(x: Any) -> np.ndarray:
    """Integer or boolean input to a float-valued op computes in float32 (not truncated)."""
    if type(x) is not np.ndarray:
        x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float32)


class Arrays:
    """NumPy (and the Numba kernels): what the first-order reverse pass computes with."""

    where = staticmethod(np.where)
    sign = staticmethod(np.sign)
    abs = staticmethod(np.abs)
    sqrt = staticmethod(np.sqrt)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    broadcast_to = staticmethod(np.broadcast_to)
    transpose = staticmethod(np.transpose)
    swapaxes = staticmethod(np.swapaxes)
    stack = staticmethod(np.stack)
    concat = staticmethod(np.concatenate)
    zeros_like = staticmethod(np.zeros_like)

    @staticmethod
    def exp(x: Any) -> np.ndarray:
        return np.exp(_floating(x))

    @staticmethod
    def log(x: Any) -> np.ndarray:
        return np.log(_floating(x))

    @staticmethod
    def tanh(x: Any) -> np.ndarray:
        return kernels.tanh(_floating(x))

    @staticmethod
    def sigmoid(x: Any) -> np.ndarray:
        return kernels.sigmoid(_floating(x))

    @staticmethod
    def softplus(x: Any) -> np.ndarray:
        return np.logaddexp(0, _floating(x)).astype(_floating(x).dtype, copy=False)

    @staticmethod
    def clip(x: Any, lo: Any, hi: Any) -> np.ndarray:
        return np.clip(x, lo, hi)

    @staticmethod
    def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        from .tensor import unbroadcast

        return unbroadcast(g, shape)

    @staticmethod
    def unstack(x: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
        return tuple(np.moveaxis(x, axis, 0))

    @staticmethod
    def split(x: np.ndarray, offsets: Any, axis: int) -> tuple[np.ndarray, ...]:
        return tuple(np.split(x, offsets, axis=axis))

    @staticmethod
    def scatter(g: np.ndarray, index: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """zeros(shape) with g written at `index` (added where an index repeats)."""
        out = np.zeros(shape, dtype=np.result_type(dtype, g.dtype))
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, np.ndarray | list) for i in parts):
            np.add.at(out, index, g)
        else:
            out[index] = g
        return out


def _lift(method: str, array_fn: Any) -> Any:
    """A function applying the Tensor method `method`, or `array_fn` to a plain constant."""

    def apply(x: Any, *args: Any) -> Any:
        from .tensor import Tensor

        return getattr(x, method)(*args) if isinstance(x, Tensor) else array_fn(x, *args)

    return staticmethod(apply)


class Tensors:
    """The same functions as recorded graph ops, so a derivative can be differentiated."""

    exp = _lift("exp", Arrays.exp)
    log = _lift("log", Arrays.log)
    tanh = _lift("tanh", Arrays.tanh)
    sigmoid = _lift("sigmoid", Arrays.sigmoid)
    sqrt = _lift("sqrt", np.sqrt)
    abs = _lift("abs", np.abs)
    softplus = _lift("softplus", Arrays.softplus)
    clip = _lift("clip", np.clip)
    zeros_like = staticmethod(lambda x: np.zeros(x.shape, x.dtype))

    @staticmethod
    def sign(x: Any) -> np.ndarray:  # piecewise constant: its derivative is 0, a constant
        return np.sign(np.asarray(x))

    @staticmethod
    def where(cond: Any, a: Any, b: Any) -> Any:
        from .ops import where

        return where(cond, a, b)

    @staticmethod
    def minimum(a: Any, b: Any) -> Any:
        from .ops import minimum

        return minimum(a, b)

    @staticmethod
    def maximum(a: Any, b: Any) -> Any:
        from .ops import maximum

        return maximum(a, b)

    @staticmethod
    def broadcast_to(x: Any, shape: tuple[int, ...]) -> Any:
        from .ops import BroadcastTo

        return BroadcastTo.apply(x, shape=tuple(shape))

    @staticmethod
    def unbroadcast(g: Any, shape: tuple[int, ...]) -> Any:
        extra = g.ndim - len(shape)
        if extra:
            g = g.sum(axis=tuple(range(extra)))
        axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
        return g.sum(axis=axes, keepdims=True) if axes else g

    @staticmethod
    def transpose(x: Any, axes: Any) -> Any:
        return x.transpose(*(() if axes is None else tuple(axes)))

    @staticmethod
    def swapaxes(x: Any, a: int, b: int) -> Any:
        axes = list(range(x.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return x.transpose(*axes)

    @staticmethod
    def stack(xs: Any, axis: int) -> Any:
        from .ops import stack

        return stack(xs, axis=axis)

    @staticmethod
    def concat(xs: Any, axis: int) -> Any:
        from .ops import concat

        return concat(xs, axis=axis)

    @staticmethod
    def unstack(x: Any, axis: int) -> Any:
        from .ops import Unstack

        return Unstack.apply(x, axis=axis)

    @staticmethod
    def split(x: Any, offsets: Any, axis: int) -> Any:
        from .ops import Split

        return Split.apply(x, offsets=tuple(int(o) for o in offsets), axis=axis)

    @staticmethod
    def scatter(g: Any, index: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        from .ops import Scatter

        return Scatter.apply(g, index=index, shape=tuple(shape))


ARRAYS = Arrays()
TENSORS = Tensors()
