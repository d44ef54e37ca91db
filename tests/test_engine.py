"""Engine semantics as example tests: dtypes, the graph's life cycle, errors,
backward that scales, memory release, anomaly detection and user-defined `Function`s."""

from __future__ import annotations

import gc
import os
import re
import tracemalloc
import warnings
import weakref

import numpy as np
import pytest

import tinygrad_seq
import tinygrad_seq.autograd as autograd
from tinygrad_seq import Function, Tensor, concat, no_grad, stack, where
from tinygrad_seq.autograd import AnomalyError, detect_anomaly
from tinygrad_seq.testing import assert_grads_close

THIS_FILE = os.path.basename(__file__)


def _line_of(marker: str) -> int:
    """The line number in this file of the line ending with the comment `# <marker>`."""
    with open(__file__, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.rstrip().endswith(f"# {marker}"):
                return number
    raise LookupError(marker)


def _nospace(text: str) -> str:
    return re.sub(r"\s+", "", text)


# ================================================================ names and dtypes


def test_public_names_are_the_same_objects_in_both_namespaces() -> None:
    for name in ["Tensor", "no_grad", "concat", "stack", "where", "Function"]:
        assert getattr(tinygrad_seq, name) is getattr(autograd, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_arrays_keep_their_dtype(dtype: type) -> None:
    a = np.arange(6, dtype=dtype).reshape(2, 3)
    t = Tensor(a, requires_grad=True)
    assert t.dtype == dtype
    assert (t * t).dtype == dtype
    assert t.tanh().sum().dtype == dtype


@pytest.mark.parametrize("data", [1.5, 3, -2, [1.0, 2.5], [[0.5], [1.5]], [1.0, 2]])
def test_python_scalars_and_lists_become_float32(data: object) -> None:
    t = Tensor(data)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.data, np.asarray(data, dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int8])
def test_integer_arrays_stay_integer_and_cannot_require_grad(dtype: type) -> None:
    ids = np.array([3, 1, 2], dtype=dtype)
    assert Tensor(ids).dtype == dtype
    with pytest.raises((TypeError, ValueError), match="int"):
        Tensor(ids, requires_grad=True)


def test_integer_tensor_indexes_a_float_tensor() -> None:
    w = Tensor(np.arange(8.0).reshape(4, 2), requires_grad=True)
    rows = w[Tensor(np.array([3, 0, 3]))]
    np.testing.assert_array_equal(rows.data, [[6, 7], [0, 1], [6, 7]])
    rows.sum().backward()
    np.testing.assert_array_equal(w.grad, [[1, 1], [0, 0], [0, 0], [2, 2]])


@pytest.mark.parametrize(
    "op",
    [
        lambda t: t + 1.5,
        lambda t: 1.5 + t,
        lambda t: t - 2,
        lambda t: 2 - t,
        lambda t: t * 0.1,
        lambda t: 0.1 * t,
        lambda t: t / 3.0,
        lambda t: 3.0 / t,
        lambda t: t**2,
        lambda t: t**0.5,
        lambda t: -t,
        lambda t: where(t > 1.5, t, 0.0),
    ],
)
def test_float32_tensor_with_a_python_scalar_stays_float32(op) -> None:
    t = Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    out = op(t)
    assert out.dtype == np.float32
    out.sum().backward()
    assert t.grad.dtype == np.float32


def test_float32_and_float64_promote_like_numpy_and_grads_keep_each_dtype() -> None:
    a = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    b = Tensor(np.full(3, 2.0), requires_grad=True)
    out = a * b
    assert out.dtype == np.float64
    out.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_array_equal(a.grad, [2, 2, 2])
    np.testing.assert_array_equal(b.grad, [1, 1, 1])


def test_array_facts_and_conversions() -> None:
    a = np.arange(6.0).reshape(2, 3)
    t = Tensor(a)
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == np.float64
    assert t.data is a
    assert t.numpy() is a
    assert np.asarray(t) is a
    np.testing.assert_array_equal(np.asarray(t, dtype=np.float32), a.astype(np.float32))
    assert np.add(t, 1).tolist() == (a + 1).tolist()


# ================================================================ the graph's life cycle


def test_gradients_accumulate_over_backward_calls_until_zeroed() -> None:
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2, -4, 6])
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [5, -1, 9])
    x.grad = None
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [3, 3, 3])


def test_only_leaves_that_require_grad_get_a_gradient() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    c = Tensor(np.array([3.0, 4.0]))
    h = x * c
    (h * h).sum().backward()
    np.testing.assert_array_equal(x.grad, [18.0, 64.0])  # 2 h c = 2 x c²
    assert c.grad is None
    assert h.grad is None  # a non-leaf keeps no grad unless asked


def test_retain_grad_keeps_a_non_leaf_gradient() -> None:
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    a = (x * 2.0).retain_grad()
    loss = (a * a).sum()
    loss.backward()
    np.testing.assert_array_equal(a.grad, 2 * a.data)  # ∂L/∂a = 2a
    np.testing.assert_array_equal(x.grad, 2 * 2 * a.data)


def test_retain_grad_at_every_step_of_an_unrolled_chain() -> None:
    """∂L/∂a<t> at every step, as used to watch gradients vanish through time."""
    a = Tensor(np.array([0.5]), requires_grad=True)
    states = []
    for _ in range(4):
        a = (a * 0.5).retain_grad()
        states.append(a)
    a.sum().backward()
    np.testing.assert_allclose([s.grad[0] for s in states], [0.125, 0.25, 0.5, 1.0])


def test_detach_shares_data_and_cuts_the_graph() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * x
    d = h.detach()
    assert d.data is h.data or np.shares_memory(d.data, h.data)
    assert not d.requires_grad
    (d * x).sum().backward()  # d is a constant: ∂/∂x (d·x) = d
    np.testing.assert_array_equal(x.grad, [1.0, 4.0])


def test_no_grad_records_nothing_and_restores_on_exit_and_error() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with no_grad():
        y = (x * 2.0).tanh()
        assert not autograd.is_grad_enabled()
    assert not y.requires_grad
    with pytest.raises(RuntimeError):
        y.sum().backward()
    assert autograd.is_grad_enabled()
    with pytest.raises(ZeroDivisionError), no_grad():
        raise ZeroDivisionError
    assert autograd.is_grad_enabled()
    assert (x * 2.0).requires_grad


def test_backward_without_grad_on_a_non_scalar_raises_naming_the_shape() -> None:
    y = Tensor(np.ones((2, 3)), requires_grad=True) * 2.0
    with pytest.raises((ValueError, RuntimeError)) as info:
        y.backward()
    assert "(2, 3)" in str(info.value)


def test_backward_without_grad_works_on_any_single_element_tensor() -> None:
    x = Tensor(np.array([[2.0]]), requires_grad=True)
    (x * x).backward()
    np.testing.assert_array_equal(x.grad, [[4.0]])


@pytest.mark.parametrize("wrap", [np.asarray, Tensor, list], ids=["array", "Tensor", "list"])
def test_backward_with_a_gradient(wrap) -> None:
    x = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    y = x * x
    g = np.array([[1.0, -1.0], [0.5, 2.0]])
    y.backward(wrap(g.tolist()) if wrap is list else wrap(g))
    np.testing.assert_array_equal(x.grad, 2 * x.data * g)


def test_backward_with_a_wrong_shape_gradient_names_both_shapes() -> None:
    y = Tensor(np.ones((2, 3)), requires_grad=True) * 2.0
    with pytest.raises((ValueError, RuntimeError)) as info:
        y.backward(np.ones((3, 2)))
    assert "(3, 2)" in str(info.value) and "(2, 3)" in str(info.value)


def test_second_backward_without_retain_graph_raises() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_backward_through_a_branch_freed_by_an_earlier_backward_raises() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 2.0
    h.sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        (h * 3.0).sum().backward()


def test_retain_graph_allows_a_second_backward() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (x * x).tanh().sum()
    loss.backward(retain_graph=True)
    first = x.grad.copy()
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * first)
    np.testing.assert_allclose(first, 2 * x.data * (1 - np.tanh(x.data**2) ** 2))


def test_backward_on_a_tensor_that_needs_no_grad_raises() -> None:
    with pytest.raises(RuntimeError):
        Tensor(np.ones(1)).backward()


def test_max_splits_the_gradient_evenly_between_ties() -> None:
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [1, 0, 0]])


def test_a_diamond_graph_sums_both_paths() -> None:
    x = Tensor(np.array([0.3, -0.7]), requires_grad=True)
    h = x.tanh()
    loss = (h * h + h.sigmoid()).sum() + concat([h, x]).sum()
    loss.backward()
    t = np.tanh(x.data)
    s = 1 / (1 + np.exp(-t))
    np.testing.assert_allclose(x.grad, (2 * t + s * (1 - s) + 1) * (1 - t**2) + 1)


# ================================================================ errors


def test_mismatched_shapes_in_add_name_both_shapes() -> None:
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.ones(4))
    with pytest.raises(ValueError) as info:
        a + b
    message = _nospace(str(info.value))
    assert "(2,3)" in message and "(4,)" in message


@pytest.mark.parametrize(
    ("left", "right"), [((2, 3), (4, 5)), ((2, 3), (4,)), ((3,), (2,)), ((2, 2, 3), (2, 4, 5))]
)
def test_mismatched_shapes_in_matmul_name_both_shapes(left, right) -> None:
    a = Tensor(np.ones(left), requires_grad=True)
    b = Tensor(np.ones(right), requires_grad=True)
    with pytest.raises(ValueError) as info:
        a @ b
    message = _nospace(str(info.value))
    assert _nospace(str(left)) in message and _nospace(str(right)) in message


def test_stack_and_concat_of_mismatched_shapes_name_the_shapes() -> None:
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        stack([a, b])
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        concat([a, b], axis=0)
    np.testing.assert_array_equal(concat([a, b], axis=1).shape, (2, 7))


@pytest.mark.parametrize("bad", ["abc", {"a": 1}, object(), None])
@pytest.mark.parametrize(
    "op",
    [
        lambda t, o: t + o,
        lambda t, o: o + t,
        lambda t, o: t * o,
        lambda t, o: o - t,
        lambda t, o: t / o,
        lambda t, o: t @ o,
        lambda t, o: where(np.array([True]), t, o),
    ],
)
def test_an_op_on_a_non_numeric_object_raises_type_error_naming_its_type(op, bad) -> None:
    t = Tensor(np.ones(1), requires_grad=True)
    with pytest.raises(TypeError, match=type(bad).__name__):
        op(t, bad)


@pytest.mark.parametrize("bad", ["abc", {"a": 1}, object()])
def test_a_tensor_of_non_numeric_data_raises_type_error(bad) -> None:
    with pytest.raises(TypeError):
        Tensor(bad)


# ================================================================ backward that scales


def test_backward_through_a_100000_op_chain_needs_no_recursion() -> None:
    """A long unrolled sequence: 50,000 × (multiply, add) = 100,000 ops."""
    x = Tensor(np.array([0.5]), requires_grad=True)
    y = x
    for _ in range(50_000):
        y = y * 1.00001
        y = y + 0.001
    y.backward()
    np.testing.assert_allclose(x.grad, [1.00001**50_000], rtol=1e-9)


def test_a_100000_op_graph_can_be_dropped_without_backward() -> None:
    x = Tensor(np.array([0.5]), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    del y  # deallocating a deep chain must not overflow the C stack
    gc.collect()


def _chain(x: Tensor, steps: int) -> tuple[Tensor, list[weakref.ref]]:
    """`steps` × (scale, tanh) from x; weak references to every intermediate array."""
    refs = []
    y = x
    for _ in range(steps):
        y = (y * 0.5).tanh()
        refs.append(weakref.ref(y.data))
    return y, refs


def test_backward_frees_the_graph_intermediates() -> None:
    x = Tensor(np.linspace(-1, 1, 50), requires_grad=True)
    y, refs = _chain(x, 100)
    loss = y.sum()
    assert all(r() is not None for r in refs)  # the graph holds every intermediate
    loss.backward()
    alive = [i for i, r in enumerate(refs[:-1]) if r() is not None]
    assert alive == [], f"intermediates still referenced after backward: {alive[:10]}"
    assert refs[-1]() is y.data  # y itself is still ours


def test_retain_graph_keeps_intermediates_until_the_last_backward() -> None:
    x = Tensor(np.linspace(-1, 1, 50), requires_grad=True)
    y, refs = _chain(x, 20)
    loss = y.sum()
    loss.backward(retain_graph=True)
    assert all(r() is not None for r in refs)
    loss.backward()
    assert all(r() is None for r in refs[:-1])


def test_memory_after_backward_returns_to_the_leaves_data_and_grads() -> None:
    x = Tensor(np.random.default_rng(0).standard_normal(20_000), requires_grad=True)
    leaf = x.data.nbytes
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        y = x
        for _ in range(100):
            y = y * 0.5 + 0.1
        loss = y.sum()
        built = tracemalloc.get_traced_memory()[0] - base
        loss.backward()
        del y  # the caller keeps `loss` (to print it, say): the graph behind it must be gone
        after = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert built > 100 * leaf  # the graph held ~200 intermediate arrays
    assert x.grad is not None and x.grad.nbytes == leaf
    assert after < 2 * leaf, f"{after / leaf:.2f} leaf sizes still allocated after backward"


# ================================================================ anomaly detection


def test_anomaly_forward_nan_names_the_op_and_the_user_line() -> None:
    x = Tensor(np.array([-1.0, 1.0]), requires_grad=True)
    with pytest.raises(AnomalyError) as info, detect_anomaly():
        x.log()  # anomaly-log-site
    message = str(info.value)
    assert "Log" in message and "NaN" in message
    assert f"{THIS_FILE}:{_line_of('anomaly-log-site')}" in message
    assert "x.log()" in message


def test_anomaly_forward_inf_names_the_op() -> None:
    x = Tensor(np.array([1.0, 1000.0]), requires_grad=True)
    with pytest.raises(AnomalyError) as info, detect_anomaly():
        _ = (x * 1.0).exp()  # anomaly-exp-site
    message = str(info.value)
    assert "Exp" in message and "Inf" in message
    assert f"{THIS_FILE}:{_line_of('anomaly-exp-site')}" in message


@pytest.mark.parametrize(("scale", "kind"), [(0.0, "NaN"), (1.0, "Inf")])
def test_anomaly_in_backward_names_the_op_and_where_it_was_created(scale, kind) -> None:
    x = Tensor(np.array([0.0, 4.0]), requires_grad=True)
    with pytest.raises(AnomalyError) as info, detect_anomaly():
        root = x**0.5  # anomaly-pow-site
        loss = (root * scale).sum()  # forward is finite: [0, 2] · scale
        loss.backward()  # d√x/dx at 0 is Inf (and 0 · Inf is NaN)
    message = str(info.value)
    assert "Pow" in message and "backward" in message and kind in message
    assert f"{THIS_FILE}:{_line_of('anomaly-pow-site')}" in message


def test_no_anomaly_error_outside_the_context() -> None:
    x = Tensor(np.array([-1.0, 0.0]), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AnomalyError), detect_anomaly():
            x.log()
        y = x.log()  # same op, outside: NaN and -Inf flow through silently
        (y * 0.0).sum().backward()
    assert np.isnan(y.data[0]) and np.isneginf(y.data[1])
    assert np.isnan(x.grad).any()


def test_detect_anomaly_passes_finite_computations_through() -> None:
    x = Tensor(np.array([0.5, 2.0]), requires_grad=True)
    with detect_anomaly():
        loss = (x.log() * x.sigmoid()).sum()
        loss.backward()
    s = 1 / (1 + np.exp(-x.data))
    np.testing.assert_allclose(x.grad, s / x.data + np.log(x.data) * s * (1 - s))


# ================================================================ user-defined Functions


class Square(Function):
    """z = x²; one input, backward returns a bare array."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        return 2 * self.x * grad


class ScaleBy(Function):
    """z = x · s; two inputs, backward gives `None` for the scale (held constant)."""

    def forward(self, x, s):
        self.s = s
        return x * s

    def backward(self, grad):
        ScaleBy.needs_seen_in_backward = self.needs_input_grad
        return grad * self.s, None


class AddBias(Function):
    """z = x + b with b broadcast; backward returns the output-shaped gradient for b."""

    def forward(self, x, b):
        return x + b

    def backward(self, grad):
        return grad, grad


def test_function_with_one_input_returning_a_bare_array() -> None:
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = Square.apply(x)
    assert isinstance(y, Tensor) and y.requires_grad
    np.testing.assert_array_equal(y.data, [1, 4, 9])
    y.backward(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(x.grad, [2, -8, 18])
    assert_grads_close(Square.apply, Tensor(np.array([0.3, -1.2]), requires_grad=True))


def test_function_with_two_inputs_returning_a_tuple_with_none() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    s = Tensor(np.array([3.0, -1.0]), requires_grad=True)
    y = ScaleBy.apply(x, s)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, -1.0])
    assert s.grad is None  # backward gave None: no gradient, no error
    assert ScaleBy.needs_seen_in_backward == (True, True)


def test_function_apply_accepts_arrays_and_scalars() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = ScaleBy.apply(x, 2.5)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [2.5, 2.5])
    assert ScaleBy.needs_seen_in_backward == (True, False)
    z = Square.apply(np.array([3.0]))  # nothing requires grad: a constant result
    assert isinstance(z, Tensor) and not z.requires_grad
    np.testing.assert_array_equal(z.data, [9.0])


def test_engine_reduces_a_user_function_gradient_to_the_input_shape() -> None:
    x = Tensor(np.ones((4, 3)), requires_grad=True)
    b = Tensor(np.zeros(3), requires_grad=True)
    g = np.arange(12.0).reshape(4, 3)
    AddBias.apply(x, b).backward(g)
    np.testing.assert_array_equal(b.grad, g.sum(axis=0))
    np.testing.assert_array_equal(x.grad, g)


def test_np_array_of_a_tensor_is_a_snapshot():
    t = Tensor([1.0, 2.0])
    snapshot = np.array(t)  # NumPy 2 asks for a copy here
    t.data += 1  # an optimiser step updates data in place
    np.testing.assert_array_equal(snapshot, [1.0, 2.0])
    assert np.asarray(t) is t.data  # asarray still shares, as documented for NumPy


def test_pow_zero_has_zero_gradient_at_zero():
    x = Tensor([0.0, 2.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (x**0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])
