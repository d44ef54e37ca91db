"""A small reverse-mode autodiff engine on NumPy, with Numba kernels for the hot paths.

`Tensor` records the ops applied to it; `Tensor.backward()` walks that graph in reverse.
Every op is a `Function` subclass (see `ops.py`), the same extension point users get.
"""

from . import graph, kernels, memory
from .anomaly import AnomalyError, detect_anomaly
from .functional import hessian_vector_product, local_vjp
from .gradcheck import GradcheckError, gradcheck, gradgradcheck, gradient_pairs, numerical_grad
from .graph import count_ops, leaves, nodes, render, to_dot
from .ops import (
    concat,
    maximum,
    minimum,
    ones,
    ones_like,
    stack,
    unstack,
    where,
    zeros,
    zeros_like,
)
from .tensor import Function, Tensor, enable_grad, grad, is_grad_enabled, no_grad, unbroadcast

__all__ = [
    "AnomalyError",
    "Function",
    "GradcheckError",
    "Tensor",
    "concat",
    "count_ops",
    "detect_anomaly",
    "enable_grad",
    "grad",
    "gradcheck",
    "gradgradcheck",
    "gradient_pairs",
    "graph",
    "hessian_vector_product",
    "is_grad_enabled",
    "kernels",
    "leaves",
    "local_vjp",
    "maximum",
    "memory",
    "minimum",
    "no_grad",
    "nodes",
    "numerical_grad",
    "ones",
    "ones_like",
    "render",
    "stack",
    "to_dot",
    "unbroadcast",
    "unstack",
    "where",
    "zeros",
    "zeros_like",
]
