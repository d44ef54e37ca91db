"""Hot kernels, each a Numba JIT kernel standing under the plain NumPy reference it must equal.

`PAIRS` lists every (reference, kernel) pair; one property test holds each kernel to its
reference on random shapes and values in float32 and float64. Set the environment variable
`TINYGRAD_SEQ_KERNELS=numpy` (or call `use_reference_kernels(True)`) to run the engine on
the references alone. Numba is imported and each kernel compiled on first use, never at
import, and compiled code is cached on disk (`cache=True`).

Element-wise kernels see a flat contiguous array; row-wise kernels see a 2-D array and work
along its last axis. All of them are numerically stable for inputs of any magnitude.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

_use_reference = os.environ.get("TINYGRAD_SEQ_KERNELS", "numba").lower() == "numpy"


def use_reference_kernels(flag: bool = True) -> None:
    """Run every kernel as its NumPy reference (`True`) or as compiled Numba code (`False`)."""
    global _use_reference
    _use_reference = bool(flag)


def using_reference_kernels() -> bool:
    return _use_reference


_SCALAR_HELPERS: list[str] = []


def _scalar_helper(py_func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a scalar function that kernels call; it is compiled (inlined) with the first kernel."""
    _SCALAR_HELPERS.append(py_func.__name__)
    return py_func


def _compile(py_func: Callable[..., Any]) -> Any:
    import numba

    module = globals()
    for name in _SCALAR_HELPERS:  # kernels resolve these globals when they compile
        if not isinstance(module[name], numba.core.dispatcher.Dispatcher):
            module[name] = numba.njit(inline="always", cache=True)(module[name])
    return numba.njit(cache=True, nogil=True, error_model="numpy")(py_func)


class _LazyJit:
    """`numba.njit(cache=True)` applied on the first call, so importing compiles nothing."""

    def __init__(self, py_func: Callable[..., Any]) -> None:
        self.py_func = py_func
        self._dispatcher: Any = None

    def __call__(self, *args: Any) -> Any:
        dispatcher = self._dispatcher
        if dispatcher is None:
            dispatcher = self._dispatcher = _compile(self.py_func)
        return dispatcher(*args)


def _jit(py_func: Callable[..., Any]) -> _LazyJit:
    return _LazyJit(py_func)


# float32 tanh as a rational function x·P(x²)/Q(x²) on |x| ≤ 9 (beyond, tanh is ±1 in
# float32), fitted here by iteratively reweighted least squares for relative error and
# evaluated in float32: |error| ≤ 3.5e-7 for every float32 input. Unlike `math.tanh` (a
# scalar libm call when Numba has no SVML) it vectorises. float64 kernels stay exact, so
# gradient checks compare against true values.
_F = np.float32
_TANH_CLAMP, _ONE = _F(9.0), _F(1.0)
_P0, _P1, _P2 = _F(0.9999999944194784), _F(0.13089801178163463), _F(0.003110437655010523)
_P3, _P4 = _F(1.1222539743636176e-05), _F(-2.0505097361167614e-08)
_P5, _P6 = _F(5.414534861288092e-11), _F(-8.84431735868536e-14)
_Q1, _Q2, _Q3 = _F(0.4642312919836796), _F(0.024520952914936774), _F(0.0002555607989872484)
_HALF = _F(0.5)


@_scalar_helper
def tanh32(x):  # pragma: no cover - compiled
    c = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    s = c * c
    p = _P0 + s * (_P1 + s * (_P2 + s * (_P3 + s * (_P4 + s * (_P5 + s * _P6)))))
    q = _ONE + s * (_Q1 + s * (_Q2 + s * _Q3))
    r = min(max(c * p / q, -_ONE), _ONE)
    if abs(x) < _TANH_CLAMP:
        return r
    return _ONE if x > 0 else (-_ONE if x < 0 else x)  # saturate exactly; NaN stays NaN


@_scalar_helper
def sigmoid32(x):  # pragma: no cover - compiled
    return _HALF + _HALF * tanh32(_HALF * x)  # σ(x) = ½ + ½ tanh(x/2)


def _elementwise(jitted: _LazyJit) -> Callable[..., np.ndarray]:
    """Adapt a kernel over flat arrays to arrays of any shape (inputs share one shape)."""

    def run(*arrays: np.ndarray) -> np.ndarray:
        shape = arrays[0].shape
        flat = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
        return jitted(*flat).reshape(shape)

    run.__name__ = jitted.py_func.__name__
    return run


def _by_dtype(exact: Callable[..., np.ndarray], fast32: Callable[..., np.ndarray]):
    """The float32 fast kernel for float32 input, the exact one otherwise."""

    def run(x: np.ndarray) -> np.ndarray:
        return fast32(x) if x.dtype == np.float32 else exact(x)

    run.__name__ = getattr(exact, "__name__", "kernel")
    return run


def _rowwise(jitted: _LazyJit) -> Callable[..., np.ndarray]:
    """Adapt a kernel over 2-D arrays (rows along the last axis) to any number of dims."""

    def run(*arrays: np.ndarray) -> np.ndarray:
        shape = arrays[0].shape
        n = shape[-1] if shape else 1
        rows = [np.ascontiguousarray(a).reshape(-1, n) for a in arrays]
        return jitted(*rows).reshape(shape)

    run.__name__ = jitted.py_func.__name__
    return run


# ---------------------------------------------------------------- sigmoid σ(x) = 1 / (1 + e^-x)
def sigmoid_reference(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # never overflows: the exponent is ≤ 0
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


@_jit
def _sigmoid_kernel(x):  # pragma: no cover - compiled
    out = np.empty_like(x)
    for i in range(x.size):
        v = x[i]
        if v >= 0:
            out[i] = 1 / (1 + math.exp(-v))
        else:
            e = math.exp(v)
            out[i] = e / (1 + e)
    return out


@_jit
def _sigmoid32_kernel(x):  # pragma: no cover - compiled
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = sigmoid32(x[i])
    return out


# ---------------------------------------------------------------- σ'(x) · g = y (1 − y) g
def sigmoid_backward_reference(y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return grad * y * (1 - y)


@_jit
def _sigmoid_backward_kernel(y, grad):  # pragma: no cover - compiled
    out = np.empty_like(y)
    for i in range(y.size):
        out[i] = grad[i] * y[i] * (1 - y[i])
    return out


# ---------------------------------------------------------------- tanh(x)
def tanh_reference(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


@_jit
def _tanh_kernel(x):  # pragma: no cover - compiled
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = math.tanh(x[i])
    return out


@_jit
def _tanh32_kernel(x):  # pragma: no cover - compiled
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = tanh32(x[i])
    return out


# ---------------------------------------------------------------- tanh'(x) · g = (1 − y²) g
def tanh_backward_reference(y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return grad * (1 - y * y)


@_jit
def _tanh_backward_kernel(y, grad):  # pragma: no cover - compiled
    out = np.empty_like(y)
    for i in range(y.size):
        out[i] = grad[i] * (1 - y[i] * y[i])
    return out


# ---------------------------------------------------------------- softmax: e^(x−m) / Σ e^(x−m)
def softmax_reference(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@_jit
def _softmax_kernel(x):  # pragma: no cover - compiled
    out = np.empty_like(x)
    for r in range(x.shape[0]):
        row = x[r]
        m = row.max()
        total = 0.0
        for j in range(row.size):
            e = math.exp(row[j] - m)
            out[r, j] = e
            total += e
        inv = 1.0 / total
        for j in range(row.size):
            out[r, j] *= inv
    return out


# ---------------------------------------------------------------- softmax backward: y (g − Σ g y)
def softmax_backward_reference(y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


@_jit
def _softmax_backward_kernel(y, grad):  # pragma: no cover - compiled
    out = np.empty_like(y)
    for r in range(y.shape[0]):
        dot = 0.0
        for j in range(y.shape[1]):
            dot += grad[r, j] * y[r, j]
        for j in range(y.shape[1]):
            out[r, j] = y[r, j] * (grad[r, j] - dot)
    return out


# ------------------------------------------------------------ log-softmax: x − m − log Σ e^(x−m)
def log_softmax_reference(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@_jit
def _log_softmax_kernel(x):  # pragma: no cover - compiled
    out = np.empty_like(x)
    for r in range(x.shape[0]):
        row = x[r]
        m = row.max()
        total = 0.0
        for j in range(row.size):
            total += math.exp(row[j] - m)
        shift = m + math.log(total)
        for j in range(row.size):
            out[r, j] = row[j] - shift
    return out


# ---------------------------------------------------------------- log-softmax backward: g − e^y Σ g
def log_softmax_backward_reference(y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return grad - np.exp(y) * grad.sum(axis=-1, keepdims=True)


@_jit
def _log_softmax_backward_kernel(y, grad):  # pragma: no cover - compiled
    out = np.empty_like(y)
    for r in range(y.shape[0]):
        total = 0.0
        for j in range(y.shape[1]):
            total += grad[r, j]
        for j in range(y.shape[1]):
            out[r, j] = grad[r, j] - math.exp(y[r, j]) * total
    return out


# ---------------------------------------------------------------- the table of pairs
PAIRS: dict[str, tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]] = {
    "sigmoid": (
        sigmoid_reference,
        _by_dtype(_elementwise(_sigmoid_kernel), _elementwise(_sigmoid32_kernel)),
    ),
    "sigmoid_backward": (sigmoid_backward_reference, _elementwise(_sigmoid_backward_kernel)),
    "tanh": (tanh_reference, _by_dtype(_elementwise(_tanh_kernel), _elementwise(_tanh32_kernel))),
    "tanh_backward": (tanh_backward_reference, _elementwise(_tanh_backward_kernel)),
    "softmax": (softmax_reference, _rowwise(_softmax_kernel)),
    "softmax_backward": (softmax_backward_reference, _rowwise(_softmax_backward_kernel)),
    "log_softmax": (log_softmax_reference, _rowwise(_log_softmax_kernel)),
    "log_softmax_backward": (
        log_softmax_backward_reference,
        _rowwise(_log_softmax_backward_kernel),
    ),
}
"""name -> (NumPy reference, Numba kernel), arrays of any shape in, same shape out."""


def _dispatch(name: str) -> Callable[..., np.ndarray]:
    reference, kernel = PAIRS[name]

    def run(*arrays: np.ndarray) -> np.ndarray:
        return reference(*arrays) if _use_reference else kernel(*arrays)

    run.__name__ = name
    run.__doc__ = reference.__doc__
    return run


sigmoid = _dispatch("sigmoid")
sigmoid_backward = _dispatch("sigmoid_backward")
tanh = _dispatch("tanh")
tanh_backward = _dispatch("tanh_backward")
softmax = _dispatch("softmax")
softmax_backward = _dispatch("softmax_backward")
log_softmax = _dispatch("log_softmax")
log_softmax_backward = _dispatch("log_softmax_backward")
