"""The property-test kit is itself tested: its strategies draw what they promise,
its assertion catches a wrong op, and the three-line example from its docstring works."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from tinygrad_seq import Function, Tensor
from tinygrad_seq.testing import (
    assert_grads_close,
    broadcastable_shapes,
    load_profile,
    register_profiles,
    shapes,
    tensors,
)


@given(data=st.data())
def test_tensors_have_the_asked_shape_dtype_and_requires_grad(data: st.DataObject) -> None:
    shape = data.draw(shapes(), label="shape")
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    requires_grad = data.draw(st.booleans(), label="requires_grad")
    t = data.draw(tensors(shape=shape, dtype=dtype, requires_grad=requires_grad), label="t")
    assert isinstance(t, Tensor)
    assert t.shape == shape
    assert t.dtype == dtype
    assert t.requires_grad is requires_grad
    assert t.grad is None and t.is_leaf


@given(tensors())
def test_default_tensors_are_small_float64_leaves_with_values_in_range(t: Tensor) -> None:
    assert t.dtype == np.float64 and t.requires_grad
    assert 0 <= t.ndim <= 3 and all(1 <= n <= 4 for n in t.shape)
    assert np.isfinite(t.data).all()
    assert ((t.data >= -3) & (t.data <= 3)).all()


@given(tensors(shape=(3, 2), elements=st.floats(0.5, 2.0)))
def test_tensors_respect_the_elements_strategy(t: Tensor) -> None:
    assert t.shape == (3, 2)
    assert ((t.data >= 0.5) & (t.data <= 2.0)).all()


@given(tensors(shape=shapes(min_dims=2, max_dims=2, max_side=3), dtype=np.float32))
def test_tensors_accept_a_strategy_of_shapes(t: Tensor) -> None:
    assert t.ndim == 2 and max(t.shape) <= 3 and t.dtype == np.float32


@given(data=st.data())
def test_shapes_obey_their_bounds(data: st.DataObject) -> None:
    min_dims = data.draw(st.integers(0, 3))
    max_dims = data.draw(st.integers(min_dims, 4))
    min_side = data.draw(st.integers(1, 3))
    max_side = data.draw(st.integers(min_side, 5))
    shape = data.draw(shapes(min_dims, max_dims, min_side, max_side), label="shape")
    assert isinstance(shape, tuple)
    assert min_dims <= len(shape) <= max_dims
    assert all(min_side <= n <= max_side for n in shape)


@given(data=st.data())
def test_broadcastable_shapes_broadcast_with_the_given_shape(data: st.DataObject) -> None:
    shape = data.draw(shapes(), label="shape")
    other = data.draw(broadcastable_shapes(shape, max_dims=3), label="other")
    result = np.broadcast_shapes(shape, other)  # raises if they do not broadcast
    assert len(other) <= 3 and all(1 <= n <= 4 for n in other)
    assert len(result) == max(len(shape), len(other))
    for a, b in zip(shape[::-1], other[::-1], strict=False):  # aligned from the right
        assert a == b or 1 in (a, b)


def test_broadcastable_shapes_reach_size_1_axes_and_missing_leading_axes() -> None:
    """The kit draws the cases that exercise gradient reduction, not only equal shapes."""
    quick = settings(max_examples=500, database=None)
    assert find(broadcastable_shapes((3, 4)), lambda s: s[-1:] == (1,), settings=quick)
    assert len(find(broadcastable_shapes((3, 4)), lambda s: len(s) < 2, settings=quick)) < 2
    assert len(find(broadcastable_shapes((4,)), lambda s: len(s) > 1, settings=quick)) > 1


# ---------------------------------------------------------------- the docstring's example


@given(tensors(shape=(2, 3)))
def test_my_op(x: Tensor) -> None:
    """The three-line example of the module docstring, as a real test."""
    assert_grads_close(lambda x: (x * x).tanh(), x)


class TanhWithWrongDerivative(Function):
    """z = tanh x, but backward uses 1 − z instead of 1 − z²."""

    def forward(self, x):
        self.z = np.tanh(x)
        return self.z

    def backward(self, grad):
        return grad * (1 - self.z)


def test_the_kit_catches_a_wrong_user_function() -> None:
    @given(tensors(shape=(2, 3)))
    def test_wrong_op(x: Tensor) -> None:
        assert_grads_close(TanhWithWrongDerivative.apply, x)

    with pytest.raises(AssertionError, match="worst element"):
        test_wrong_op()


# ---------------------------------------------------------------- profiles


def test_profiles_are_registered_and_chosen_by_the_environment(monkeypatch) -> None:
    register_profiles()
    assert settings.get_profile("ci").max_examples < settings.get_profile("dev").max_examples
    assert settings.get_profile("dev").max_examples < settings.get_profile("thorough").max_examples
    original = settings.default.max_examples
    try:
        monkeypatch.setenv("HYPOTHESIS_PROFILE", "thorough")
        assert load_profile() == "thorough"
        assert settings.default.max_examples == settings.get_profile("thorough").max_examples
        monkeypatch.delenv("HYPOTHESIS_PROFILE")
        assert load_profile("dev") == "dev"
        assert settings.default.max_examples == settings.get_profile("dev").max_examples
    finally:
        monkeypatch.undo()
        load_profile("ci")
    assert settings.default.max_examples == original
