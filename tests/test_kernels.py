"""Kernel pairs (`tinygrad_seq.autograd.kernels.PAIRS`): every Numba kernel equals its NumPy
reference, both are stable at large magnitudes, and the reference switch really switches."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_seq import Tensor
from tinygrad_seq.autograd import kernels
from tinygrad_seq.autograd.kernels import PAIRS, use_reference_kernels, using_reference_kernels
from tinygrad_seq.testing import shapes

# float32 kernels use a rational tanh/σ (|error| ≤ 3.5e-7) and accumulate row sums in float64;
# `atol` is per unit of the row's magnitude (see `_scale`).
TOLERANCE = {np.float32: {"rtol": 1e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-13}}

KERNEL_SHAPES = st.one_of(
    st.just(()),
    shapes(min_dims=1, max_dims=1, max_side=40),  # 1-D
    shapes(min_dims=2, max_dims=2, max_side=17),
    shapes(min_dims=3, max_dims=3, max_side=5),  # 3-D
    st.tuples(st.integers(1, 8), st.just(1)),  # size-1 rows
)
DTYPES = st.sampled_from([np.float32, np.float64])


def _arguments(name: str, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, ...]:
    """A forward kernel takes x; a backward kernel takes (y, grad) with y its forward's output."""
    if name.endswith("_backward"):
        forward_reference = PAIRS[name.removesuffix("_backward")][0]
        return forward_reference(x), g
    return (x,)


def _scale(name: str, args: tuple[np.ndarray, ...]) -> float:
    """Magnitude of what a kernel sums: a row of the upstream gradient for backward kernels."""
    if not name.endswith("_backward") or args[-1].size == 0:
        return 1.0
    g = np.abs(args[-1].astype(np.float64))
    return 1.0 + float(g.reshape(-1, g.shape[-1] if g.ndim else 1).sum(axis=-1).max())


@pytest.mark.parametrize("name", sorted(PAIRS))
@given(shape=KERNEL_SHAPES, dtype=DTYPES, data=st.data())
def test_kernel_equals_its_reference(name: str, shape, dtype, data: st.DataObject) -> None:
    reference, kernel = PAIRS[name]
    x = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-20, 20, width=32)), label="x")
    g = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-3, 3, width=32)), label="grad")
    args = _arguments(name, x, g)
    saved = [a.copy() for a in args]
    expected = reference(*args)
    got = kernel(*args)
    assert got.shape == expected.shape == shape
    assert got.dtype == expected.dtype == dtype
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(
        got, expected, rtol=tol["rtol"], atol=tol["atol"] * _scale(name, args)
    )
    for a, b in zip(args, saved, strict=True):  # kernels never write their inputs
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("impl", ["reference", "kernel"])
@pytest.mark.parametrize("name", sorted(PAIRS))
@given(
    x=hnp.arrays(np.float32, KERNEL_SHAPES, elements=st.floats(-1e4, 1e4, width=32)),
    data=st.data(),
)
def test_pairs_are_stable_at_magnitude_1e4_in_float32(name, impl, x, data) -> None:
    """No NaN, no Inf, no overflow or invalid-value warning (underflow to 0 is expected)."""
    g = data.draw(hnp.arrays(np.float32, x.shape, elements=st.floats(-1e4, 1e4, width=32)))
    x = np.concatenate([x.ravel(), [-1e4, 1e4, 0]]).astype(np.float32)  # always the extremes
    g = np.concatenate([g.ravel(), [1e4, -1e4, 1]]).astype(np.float32)
    fn = PAIRS[name][0 if impl == "reference" else 1]
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        args = _arguments(name, x, g)
        out = fn(*args)
    assert out.dtype == np.float32
    assert np.isfinite(out).all(), out


@pytest.fixture(params=["kernels", "references"])
def engine_path(request) -> Iterator[str]:
    """Run a test once on the Numba kernels and once on the NumPy references."""
    previous = using_reference_kernels()
    use_reference_kernels(request.param == "references")
    try:
        yield request.param
    finally:
        use_reference_kernels(previous)


@pytest.mark.parametrize("method", ["sigmoid", "softmax", "log_softmax", "tanh"])
@pytest.mark.parametrize("shape", [(7,), (2, 7), (7, 1)])
def test_tensor_methods_are_stable_at_magnitude_1e4_in_float32(engine_path, method, shape):
    values = np.array([-1e4, -100.0, -1.0, 0.0, 1.0, 100.0, 1e4], dtype=np.float32)
    x = Tensor(np.resize(values, shape), requires_grad=True)
    g = np.resize(np.array([1.0, -2.0, 0.5], dtype=np.float32), shape)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        out = getattr(x, method)()
        out.backward(g)
    assert out.dtype == np.float32 and x.grad.dtype == np.float32
    assert np.isfinite(out.data).all() and np.isfinite(x.grad).all()


def test_stable_values_at_the_extremes(engine_path) -> None:
    x = Tensor(np.array([-1e4, 0.0, 1e4], dtype=np.float32), requires_grad=True)
    np.testing.assert_allclose(x.sigmoid().data, [0.0, 0.5, 1.0], atol=1e-7)
    np.testing.assert_allclose(x.softmax().data, [0.0, 0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(x.log_softmax().data, [-2e4, -1e4, 0.0], rtol=1e-6, atol=1e-6)
    x.log_softmax().backward(np.array([1.0, 1.0, 1.0], dtype=np.float32))
    np.testing.assert_allclose(x.grad, [1.0, 1.0, -2.0], atol=1e-6)  # g − softmax · Σg


def test_use_reference_kernels_switches_the_engine(monkeypatch) -> None:
    """Spy on compiled-kernel calls: none on the reference path, one per op on the kernel path."""
    calls: list[str] = []
    original = kernels._LazyJit.__call__

    def spy(self, *args):
        calls.append(self.py_func.__name__)
        return original(self, *args)

    monkeypatch.setattr(kernels._LazyJit, "__call__", spy)
    x32 = np.linspace(-5, 5, 64, dtype=np.float32).reshape(4, 16)
    previous = using_reference_kernels()
    outputs = {}
    try:
        for flag in (True, False):
            use_reference_kernels(flag)
            assert using_reference_kernels() is flag
            calls.clear()
            x = Tensor(x32, requires_grad=True)
            y = x.tanh() + x.sigmoid() + x.softmax(axis=-1) + x.log_softmax(axis=0)
            y.backward(np.ones_like(x32))
            outputs[flag] = (x.tanh().data, x.grad)
            if flag:
                assert calls == [], f"reference path ran compiled kernels: {calls}"
            else:
                assert {c.split("_kernel")[0].lstrip("_") for c in calls} >= {
                    "tanh",
                    "sigmoid",
                    "softmax",
                    "log_softmax",
                    "tanh_backward",
                    "sigmoid_backward",
                    "softmax_backward",
                    "log_softmax_backward",
                }, calls
    finally:
        use_reference_kernels(previous)
    # each path computes exactly what its implementation computes
    np.testing.assert_array_equal(outputs[True][0], PAIRS["tanh"][0](x32))
    np.testing.assert_array_equal(outputs[False][0], PAIRS["tanh"][1](x32))
    np.testing.assert_allclose(outputs[True][1], outputs[False][1], rtol=1e-5, atol=1e-5)


def _python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=True,
    )
    return result.stdout.strip()


def test_importing_the_package_does_not_import_numba() -> None:
    code = "import tinygrad_seq, tinygrad_seq.autograd, sys; print('numba' in sys.modules)"
    assert _python(code) == "False"


def test_environment_variable_selects_the_references_without_numba() -> None:
    code = (
        "import sys, numpy as np\n"
        "from tinygrad_seq import Tensor\n"
        "from tinygrad_seq.autograd import kernels\n"
        "x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)\n"
        "(x.tanh() + x.sigmoid() + x.softmax()).sum().backward()\n"
        "print(kernels.using_reference_kernels(), 'numba' in sys.modules)"
    )
    assert _python(code, TINYGRAD_SEQ_KERNELS="numpy") == "True False"


def test_float32_sigmoid_is_accurate_in_relative_terms_in_the_tails():
    """log σ(x) far in the tails needs relative accuracy (absolute is not enough there)."""
    x = np.linspace(-80, 0, 4001).astype(np.float32)
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    for flag in (False, True):
        use_reference_kernels(flag)
        try:
            got = Tensor(x).sigmoid().data
        finally:
            use_reference_kernels(False)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, exact, rtol=1e-6)
