"""A small reverse-mode autodiff engine on NumPy, with Numba kernels for the hot paths.

`Tensor` records the ops applied to it; `Tensor.backward()` walks that graph in reverse.
Every op is a `Function` subclass (see `ops.py`), the same extension point users get.
"""

from . import kernels, memory
from .anomaly import AnomalyError, detect_anomaly
from .gradcheck import GradcheckError, gradcheck, numerical_grad
from .ops import concat, stack, where
from .tensor import Function, Tensor, is_grad_enabled, no_grad, unbroadcast

__all__ = [
    "AnomalyError",
    "Function",
    "GradcheckError",
    "Tensor",
    "concat",
    "detect_anomaly",
    "gradcheck",
    "is_grad_enabled",
    "kernels",
    "memory",
    "no_grad",
    "numerical_grad",
    "stack",
    "unbroadcast",
    "where",
]
