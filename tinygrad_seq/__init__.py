"""tinygrad_seq: build recurrent networks, watch autodiff unroll through time, test gradients.

>>> from tinygrad_seq import Tensor
>>> a = Tensor([1.0, 2.0], requires_grad=True)
>>> (a * a).sum().backward()
>>> a.grad
array([2., 4.], dtype=float32)
"""

from .autograd import (
    Function,
    Tensor,
    concat,
    enable_grad,
    maximum,
    minimum,
    no_grad,
    ones,
    ones_like,
    stack,
    unstack,
    where,
    zeros,
    zeros_like,
)
from .autograd.memory import tune_allocator
from .random import manual_seed

__version__ = "0.1.0"

__all__ = [
    "Function",
    "Tensor",
    "__version__",
    "concat",
    "enable_grad",
    "manual_seed",
    "maximum",
    "minimum",
    "no_grad",
    "ones",
    "ones_like",
    "stack",
    "tune_allocator",
    "unstack",
    "where",
    "zeros",
    "zeros_like",
]
