"""Property-test kit: Hypothesis strategies and gradient assertions for your own ops and cells.

Test a new `Function` in three lines:

>>> from hypothesis import given
>>> from tinygrad_seq.testing import assert_grads_close, tensors
>>> @given(tensors(shape=(2, 3)))
... def test_my_op(x):
...     assert_grads_close(lambda x: (x * x).tanh(), x)
>>> test_my_op()

The project's own tests use this kit. Profiles: `register_profiles()` defines `ci` (quick),
`dev` and `thorough`; `load_profile()` picks one from `$HYPOTHESIS_PROFILE` (default `ci`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .autograd import Tensor, gradcheck, gradgradcheck
from .autograd.gradcheck import GradcheckError

__all__ = [
    "assert_grads_close",
    "assert_second_grads_close",
    "broadcastable_shapes",
    "load_profile",
    "register_profiles",
    "shapes",
    "tensors",
]


def shapes(
    min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 4
) -> st.SearchStrategy[tuple[int, ...]]:
    """Array shapes, small by default (gradient checks cost two calls per element)."""
    return hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )


def broadcastable_shapes(
    shape: tuple[int, ...],
    min_dims: int = 0,
    max_dims: int | None = None,
    min_side: int = 1,
    max_side: int = 4,
) -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes that broadcast against `shape` (NumPy rules): size-1 axes and missing leading axes."""
    return hnp.broadcastable_shapes(
        shape, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )


def tensors(
    shape: tuple[int, ...] | st.SearchStrategy[tuple[int, ...]] | None = None,
    dtype: Any = np.float64,
    elements: st.SearchStrategy[float] | None = None,
    requires_grad: bool = True,
) -> st.SearchStrategy[Tensor]:
    """Tensors of `shape` (a tuple, or a strategy of shapes; small shapes when omitted).

    Elements default to finite floats in [-3, 3], where every built-in op is smooth enough
    for finite differences. `requires_grad` defaults to True, ready for `assert_grads_close`.
    """
    shape_strategy = shapes() if shape is None else shape
    if elements is None:
        elements = st.floats(-3, 3, allow_nan=False, allow_infinity=False, width=32)
    arrays = hnp.arrays(dtype=np.dtype(dtype), shape=shape_strategy, elements=elements)
    return arrays.map(lambda a: Tensor(a, requires_grad=requires_grad))


def assert_grads_close(
    fn: Callable[..., Tensor],
    *inputs: Any,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    eps: float = 1e-6,
    directions: int | None = None,
) -> None:
    """Assert that reverse-mode gradients of `fn(*inputs)` equal finite differences.

    Raises an `AssertionError` whose message names the input, the worst element, the
    analytic and the numerical value and the tolerance (see `gradcheck`).
    """
    try:
        gradcheck(fn, list(inputs), eps=eps, atol=atol, rtol=rtol, directions=directions)
    except GradcheckError as error:
        raise AssertionError(str(error)) from None


def assert_second_grads_close(
    fn: Callable[..., Tensor],
    *inputs: Any,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    eps: float = 1e-6,
) -> None:
    """Assert that second derivatives of `fn(*inputs)` equal finite differences of its first.

    Differentiates the backward pass (`create_graph=True`) and compares it with central
    differences of first-order gradients (see `gradgradcheck`); the `AssertionError` names
    the input, the worst element and both values. An op whose backward works on NumPy
    arrays fails with the engine's message naming it.
    """
    try:
        gradgradcheck(fn, list(inputs), eps=eps, atol=atol, rtol=rtol)
    except GradcheckError as error:
        raise AssertionError(str(error)) from None


def register_profiles() -> None:
    """Hypothesis profiles: `ci` (quick, the default), `dev`, `thorough` (on demand)."""
    common: dict[str, Any] = {
        "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    }
    settings.register_profile("ci", max_examples=12, derandomize=True, **common)
    settings.register_profile("dev", max_examples=40, **common)
    settings.register_profile("thorough", max_examples=400, **common)


def load_profile(default: str = "ci") -> str:
    """Load the profile named by `$HYPOTHESIS_PROFILE` (or `default`); returns its name."""
    import os

    register_profiles()
    name = os.environ.get("HYPOTHESIS_PROFILE", default)
    settings.load_profile(name)
    return name
