"""Losses and softmax wrappers: values against NumPy transcriptions, gradients against finite
differences (Hypothesis-drawn shapes), stability at magnitude 1e4 in float32, error cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_seq import Tensor
from tinygrad_seq.nn import functional as F
from tinygrad_seq.testing import assert_grads_close, tensors

REDUCTIONS = ["mean", "sum", "none"]


# ---------------------------------------------------------------- NumPy transcriptions (float64)
def ref_cross_entropy(z, y, reduction="mean", ignore_index=None):
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    keep = np.ones(len(y), bool) if ignore_index is None else y != ignore_index
    safe = np.where(keep, y, 0)
    loss = np.where(keep, lse - z[np.arange(len(y)), safe], 0.0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / keep.sum() if keep.any() else 0.0


def ref_bce(p, t, reduction="mean"):
    p, t = np.asarray(p, np.float64), np.asarray(t, np.float64)
    with np.errstate(divide="ignore"):
        loss = -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log(1 - p), -100))
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


def ref_bce_logits(x, t, reduction="mean"):
    x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
    # −t log σ(x) − (1 − t) log(1 − σ(x)), with −log σ(x) = log(1 + e^(−x))
    loss = t * np.logaddexp(0, -x) + (1 - t) * np.logaddexp(0, x)
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


@st.composite
def class_problems(draw, ignore=False):
    """(logits Tensor (N, V) float64, targets (N,) int64, ignore_index or None)."""
    n = draw(st.integers(1, 4))
    v = draw(st.integers(2, 5))
    z = draw(tensors(shape=(n, v)))
    y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, v - 1)))
    ignore_index = None
    if ignore:
        ignore_index = draw(st.sampled_from([-100, 0]))
        y = np.where(draw(hnp.arrays(bool, (n,))), ignore_index, y)
    return z, y, ignore_index


# ---------------------------------------------------------------- cross_entropy values
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_numpy(reduction):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 5)) * 3
    y = rng.integers(0, 5, 6)
    got = F.cross_entropy(Tensor(z), y, reduction=reduction)
    assert got.dtype == np.float64
    assert got.shape == (() if reduction != "none" else (6,))
    np.testing.assert_allclose(got.data, ref_cross_entropy(z, y, reduction), rtol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_ignore_index_averages_over_kept_rows(reduction):
    z = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = np.array([0, -100, 2, -100])
    got = F.cross_entropy(Tensor(z), y, reduction=reduction, ignore_index=-100)
    expected = ref_cross_entropy(z, y, reduction, ignore_index=-100)
    np.testing.assert_allclose(got.data, expected, rtol=1e-12)
    if reduction == "mean":  # the mean is over the 2 kept rows, not all 4
        kept = ref_cross_entropy(z[[0, 2]], y[[0, 2]], "sum") / 2
        assert got.item() == pytest.approx(kept, rel=1e-12)
    if reduction == "none":
        assert got.data[1] == 0 and got.data[3] == 0


def test_cross_entropy_ignored_rows_get_zero_gradient():
    z = Tensor(np.random.default_rng(1).standard_normal((4, 3)), requires_grad=True)
    y = np.array([1, 2, 1, 0])
    F.cross_entropy(z, y, ignore_index=1).backward()
    assert np.all(z.grad[[0, 2]] == 0)
    # kept rows: (softmax − onehot) / number kept
    s = np.exp(z.data) / np.exp(z.data).sum(axis=1, keepdims=True)
    expected = (s - np.eye(3)[y]) / 2
    np.testing.assert_allclose(z.grad[[1, 3]], expected[[1, 3]], rtol=1e-12)


def test_cross_entropy_all_ignored_is_zero_with_zero_gradient():
    z = Tensor(np.ones((3, 4)), requires_grad=True)
    loss = F.cross_entropy(z, np.full(3, -100), ignore_index=-100)
    assert loss.item() == 0.0
    loss.backward()
    assert np.array_equal(z.grad, np.zeros((3, 4)))
    total = F.cross_entropy(z, np.full(3, -100), reduction="sum", ignore_index=-100)
    assert total.item() == 0.0


def test_cross_entropy_accepts_int_tensor_and_narrow_int_targets():
    z = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    y = np.array([3, 0, 1])
    expected = F.cross_entropy(Tensor(z), y).item()
    assert F.cross_entropy(Tensor(z), Tensor(y)).item() == expected
    assert F.cross_entropy(Tensor(z), y.astype(np.uint8)).item() == expected
    assert F.cross_entropy(z, y.astype(np.int32)).item() == expected  # ndarray logits too
    assert expected == pytest.approx(ref_cross_entropy(z, y), rel=1e-6)


def test_cross_entropy_float32_stays_float32():
    z = Tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    loss = F.cross_entropy(z, np.array([0, 1]), ignore_index=1)
    assert loss.dtype == np.float32
    loss.backward()
    assert z.grad.dtype == np.float32
    assert loss.item() == pytest.approx(np.log(3), rel=1e-6)


# ---------------------------------------------------------------- cross_entropy gradients
@given(class_problems(), st.sampled_from(REDUCTIONS))
def test_cross_entropy_gradients(problem, reduction):
    z, y, _ = problem
    assert_grads_close(lambda z: F.cross_entropy(z, y, reduction=reduction), z)


@given(class_problems(ignore=True), st.sampled_from(REDUCTIONS))
def test_cross_entropy_ignore_index_gradients(problem, reduction):
    z, y, ignore_index = problem
    out = F.cross_entropy(z, y, reduction=reduction, ignore_index=ignore_index)
    np.testing.assert_allclose(
        out.data, ref_cross_entropy(z.data, y, reduction, ignore_index), rtol=1e-10, atol=1e-12
    )
    assert_grads_close(
        lambda z: F.cross_entropy(z, y, reduction=reduction, ignore_index=ignore_index), z
    )


# ---------------------------------------------------------------- binary cross-entropies
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_matches_numpy_including_clamp(reduction):
    p = np.array([[0.0, 0.2, 0.5], [0.9, 1.0, 0.999]])
    t = np.array([[1.0, 0.0, 0.3], [1.0, 0.0, 1.0]])  # soft target 0.3 too
    got = F.binary_cross_entropy(Tensor(p), t, reduction=reduction)
    np.testing.assert_allclose(got.data, ref_bce(p, t, reduction), rtol=1e-12)
    assert F.binary_cross_entropy(Tensor([0.0]), np.array([1.0]), "sum").item() == 100.0


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_matches_numpy(reduction):
    x = np.array([[-30.0, -2.0, 0.0], [0.5, 7.0, 40.0]])
    t = np.array([[0.0, 1.0, 0.5], [1.0, 0.25, 0.0]])
    got = F.binary_cross_entropy_with_logits(Tensor(x), t, reduction=reduction)
    np.testing.assert_allclose(got.data, ref_bce_logits(x, t, reduction), rtol=1e-12)


def test_bce_with_logits_equals_bce_of_sigmoid():
    x = np.linspace(-4, 4, 9)
    t = np.linspace(0, 1, 9)
    a = F.binary_cross_entropy_with_logits(Tensor(x), t, "none").data
    b = F.binary_cross_entropy(Tensor(x).sigmoid(), t, "none").data
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_bce_with_logits_gradient_at_zero_is_half_minus_target():
    x = Tensor(np.zeros(3), requires_grad=True)
    F.binary_cross_entropy_with_logits(x, np.array([0.0, 1.0, 0.25]), "sum").backward()
    np.testing.assert_array_equal(x.grad, [0.5, -0.5, 0.25])


@st.composite
def binary_problems(draw, low=-3.0, high=3.0):
    shape = draw(st.sampled_from([(3,), (2, 3), (1, 2, 2)]))
    x = draw(tensors(shape=shape, elements=st.floats(low, high)))
    t = draw(tensors(shape=shape, elements=st.floats(0, 1)))
    return x, t


@given(binary_problems(0.05, 0.95), st.sampled_from(REDUCTIONS))
def test_bce_gradients_wrt_probs_and_targets(problem, reduction):
    p, t = problem
    assert_grads_close(lambda p, t: F.binary_cross_entropy(p, t, reduction), p, t)


@given(binary_problems(), st.sampled_from(REDUCTIONS))
def test_bce_with_logits_gradients_wrt_logits_and_targets(problem, reduction):
    x, t = problem
    assert_grads_close(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction), x, t)


def test_binary_targets_as_tensor_int_or_bool():
    x = Tensor(np.array([0.3, -1.0], np.float32), requires_grad=True)
    expected = F.binary_cross_entropy_with_logits(x, np.array([1.0, 0.0], np.float32))
    for t in (np.array([1, 0]), np.array([True, False]), Tensor(np.array([1.0, 0.0]))):
        got = F.binary_cross_entropy_with_logits(x, t)
        assert got.dtype == np.float32 and got.item() == expected.item()


# ---------------------------------------------------------------- stability at 1e4 in float32
BIG = np.array([[1e4, -1e4, 0.0, 3.0], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4, -5.0, 1e4]], np.float32)


def test_softmax_log_softmax_wrappers_stable_and_equal_methods():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, ls = F.softmax(BIG), F.log_softmax(BIG, axis=1)
        s0 = F.softmax(Tensor(BIG), axis=0)
    assert np.array_equal(s.data, Tensor(BIG).softmax().data)
    assert np.array_equal(ls.data, Tensor(BIG).log_softmax(axis=1).data)
    assert s.dtype == ls.dtype == np.float32
    assert np.isfinite(ls.data).all() and np.isfinite(s0.data).all()
    np.testing.assert_allclose(s.data.sum(axis=-1), 1, rtol=1e-6)
    np.testing.assert_allclose(s0.data.sum(axis=0), 1, rtol=1e-6)
    np.testing.assert_allclose(ls.data[0], [0.0, -2e4, -1e4, -9997.0], rtol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_stable_at_1e4_float32(reduction):
    z = Tensor(BIG, requires_grad=True)
    y = np.array([1, 2, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.cross_entropy(z, y, reduction=reduction)
        loss.backward(np.ones(loss.shape, np.float32))
    assert np.isfinite(loss.data).all() and np.isfinite(z.grad).all()
    np.testing.assert_allclose(loss.data, ref_cross_entropy(BIG, y, reduction), rtol=1e-5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_losses_stable_at_extremes_float32(reduction):
    x = Tensor(np.array([1e4, 1e4, -1e4, -1e4, 0.0], np.float32), requires_grad=True)
    t = np.array([1.0, 0.0, 1.0, 0.0, 1.0], np.float32)
    p = Tensor(np.array([1.0, 1.0, 0.0, 0.0, 0.5], np.float32), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lx = F.binary_cross_entropy_with_logits(x, t, reduction=reduction)
        lx.backward(np.ones(lx.shape, np.float32))
        lp = F.binary_cross_entropy(p, t, reduction=reduction)
        lp.backward(np.ones(lp.shape, np.float32))
    for loss, inp in ((lx, x), (lp, p)):
        assert loss.dtype == inp.grad.dtype == np.float32
        assert np.isfinite(loss.data).all() and np.isfinite(inp.grad).all()
    np.testing.assert_allclose(lx.data, ref_bce_logits(x.data, t, reduction), rtol=1e-6)
    np.testing.assert_allclose(lp.data, ref_bce(p.data, t, reduction), rtol=1e-6)
    if reduction == "none":
        np.testing.assert_allclose(lx.data, [0, 1e4, 1e4, 0, np.log(2)], rtol=1e-6)
        np.testing.assert_array_equal(x.grad, [0.0, 1.0, -1.0, 0.0, -0.5])  # σ(x) − t
        np.testing.assert_allclose(lp.data, [0, 100, 100, 0, np.log(2)], rtol=1e-6)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "call",
    [
        lambda: F.cross_entropy(Tensor(np.zeros((2, 3))), np.array([0, 1]), reduction="avg"),
        lambda: F.binary_cross_entropy(Tensor([0.5]), np.array([1.0]), reduction="avg"),
        lambda: F.binary_cross_entropy_with_logits(Tensor([0.5]), np.array([1.0]), reduction=""),
    ],
)
def test_unknown_reduction_raises(call):
    with pytest.raises(ValueError, match="reduction"):
        call()


def test_cross_entropy_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        F.cross_entropy(Tensor(np.zeros((2, 3, 4))), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        F.cross_entropy(Tensor(np.zeros(3)), np.zeros(3, int))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        F.cross_entropy(Tensor(np.zeros((2, 3))), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"\(2, 1\)"):
        F.cross_entropy(Tensor(np.zeros((2, 3))), np.zeros((2, 1), int))


def test_cross_entropy_non_integer_targets_raise():
    with pytest.raises(TypeError, match="integer"):
        F.cross_entropy(Tensor(np.zeros((2, 3))), np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="integer"):
        F.cross_entropy(Tensor(np.zeros((2, 3))), Tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="floating"):
        F.cross_entropy(Tensor(np.zeros((2, 3), int)), np.array([0, 1]))


@pytest.mark.parametrize("bad", [3, 7, -1])
def test_cross_entropy_out_of_range_target_names_the_value(bad):
    with pytest.raises(IndexError, match=rf"target {bad} \(at position 1\).*\[0, 2\]"):
        F.cross_entropy(Tensor(np.zeros((3, 3))), np.array([0, bad, 1]))


def test_cross_entropy_ignored_value_may_lie_out_of_range():
    loss = F.cross_entropy(Tensor(np.zeros((2, 3))), np.array([-100, 1]), ignore_index=-100)
    assert loss.item() == pytest.approx(np.log(3))
    with pytest.raises(IndexError, match="target -100"):
        F.cross_entropy(Tensor(np.zeros((2, 3))), np.array([-100, 1]), ignore_index=-1)


def test_binary_cross_entropy_errors():
    with pytest.raises(ValueError, match=r"\[0, 1\].*1\.5"):
        F.binary_cross_entropy(Tensor([0.5, 1.5]), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"-0\.1"):
        F.binary_cross_entropy(Tensor([-0.1]), np.array([1.0]))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        F.binary_cross_entropy(Tensor([0.5, 0.5]), np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(2, 1\).*\(2,\)"):
        F.binary_cross_entropy_with_logits(Tensor([0.5, 0.5]), np.ones((2, 1)))
    with pytest.raises(TypeError, match="dtype"):
        F.binary_cross_entropy_with_logits(Tensor([0.5]), np.array(["a"]))
    with pytest.raises(TypeError, match=r"float64.*float32"):
        F.binary_cross_entropy_with_logits(Tensor([0.5]), Tensor(np.ones(1), requires_grad=True))
