"""Gradient checking: `numerical_grad`, `gradcheck`, `GradcheckError`, and the kit's
`assert_grads_close`. Correct ops never false-fail (float32 inputs are checked in float64);
wrong ops fail with a message that says which input, which element and by how much."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pytest

from tinygrad_seq import Function, Tensor
from tinygrad_seq.autograd import GradcheckError, gradcheck, numerical_grad
from tinygrad_seq.testing import assert_grads_close

FLOAT = r"([-+]?[0-9.]+(?:e[-+]?[0-9]+)?|nan|inf)"


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ================================================================ numerical_grad


def test_numerical_grad_of_a_cube_is_central_differences_in_float64() -> None:
    x = Tensor(np.array([1.0, -2.0, 0.5]))
    [g] = numerical_grad(lambda x: (x**3).sum(), [x])
    assert g.dtype == np.float64 and g.shape == (3,)
    np.testing.assert_allclose(g, 3 * x.data**2, rtol=1e-8)
    # ((x + ε)³ − (x − ε)³) / 2ε = 3x² + ε² exactly: the difference is central, with this ε
    [g] = numerical_grad(lambda x: (x**3).sum(), [x], eps=1e-3)
    np.testing.assert_allclose(g, 3 * x.data**2 + 1e-6, rtol=1e-9)


def test_numerical_grad_of_a_broadcast_product_gives_one_array_per_input() -> None:
    x = Tensor(_rng().standard_normal((2, 3)))
    y = _rng(1).standard_normal(3)  # a plain array is an input too
    gx, gy = numerical_grad(lambda x, y: (x * y).sum(), [x, y])
    np.testing.assert_allclose(gx, np.broadcast_to(y, (2, 3)), rtol=1e-7)
    np.testing.assert_allclose(gy, x.data.sum(axis=0), rtol=1e-7)


def test_numerical_grad_of_softmax_cross_entropy() -> None:
    z = Tensor(np.array([[0.2, -1.0, 2.0], [0.0, 0.5, -0.5]]))
    target = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    [g] = numerical_grad(lambda z: -(z.log_softmax(axis=1) * target).sum(), [z])
    e = np.exp(z.data)
    np.testing.assert_allclose(g, e / e.sum(axis=1, keepdims=True) - target, rtol=1e-6)


def test_numerical_grad_works_in_float64_on_float32_inputs_and_restores_them() -> None:
    data = np.array([0.3, -1.1], dtype=np.float32)
    x = Tensor(data, requires_grad=True)
    [g] = numerical_grad(lambda x: (x.tanh() * x).sum(), [x])
    assert g.dtype == np.float64
    t = np.tanh(data.astype(np.float64))
    np.testing.assert_allclose(g, t + data * (1 - t**2), rtol=1e-7)  # float32 FD: ~1e-1 off
    assert x.data is data and x.dtype == np.float32 and x.grad is None


def test_numerical_grad_gives_none_for_integer_inputs() -> None:
    w = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]))
    ids = Tensor(np.array([1, 1, 0]))
    gw, gids = numerical_grad(lambda w, ids: w[ids].sum(), [w, ids])
    assert gids is None
    np.testing.assert_allclose(gw, [[1, 1], [2, 2]], rtol=1e-8)


def test_numerical_grad_refuses_a_non_scalar_function() -> None:
    with pytest.raises(ValueError, match=r"\(2,\)"):
        numerical_grad(lambda x: x * 2.0, [Tensor(np.ones(2))])


# ================================================================ gradcheck on correct ops


def test_gradcheck_passes_float32_inputs_through_float64_and_restores_them() -> None:
    x_data = _rng().standard_normal((3, 4)).astype(np.float32)
    w_data = _rng(1).standard_normal((4, 2)).astype(np.float32)
    x = Tensor(x_data, requires_grad=True)
    w = Tensor(w_data, requires_grad=True, name="W")
    previous_grad = np.full((4, 2), 7.0, dtype=np.float32)
    w.grad = previous_grad
    seen: list[np.dtype] = []

    def fn(x: Tensor, w: Tensor) -> Tensor:
        seen.append(x.dtype)
        return (x @ w).tanh() * x.sum(axis=1, keepdims=True)

    assert gradcheck(fn, [x, w]) is True
    assert set(seen) == {np.dtype(np.float64)}  # every evaluation ran on float64 copies
    assert x.data is x_data and w.data is w_data
    assert x.dtype == w.dtype == np.float32
    assert x.grad is None
    assert w.grad is previous_grad and (w.grad == 7.0).all()


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.sigmoid() * x,
        lambda x: (x * x).softmax(axis=0),
        lambda x: x.log_softmax() - x.mean(),
        lambda x: (x @ x.T).tanh(),
        lambda x: x[np.array([0, 0, 2])].exp() / (1 + x.sum()),
    ],
)
def test_gradcheck_never_false_fails_on_correct_ops_in_float32(fn) -> None:
    x = Tensor(_rng(3).uniform(-2, 2, (3, 3)).astype(np.float32), requires_grad=True)
    assert gradcheck(fn, [x]) is True
    assert gradcheck(fn, [x], directions=3) is True


def test_gradcheck_accepts_a_non_leaf_input_and_leaves_its_graph_intact() -> None:
    a = Tensor(np.array([1.0, -2.0, 0.5]), requires_grad=True)
    x = a * 2.0  # e.g. a hidden state a<t> produced by earlier steps
    assert gradcheck(lambda x: (x * x).tanh(), [x]) is True
    assert x.grad is None
    x.sum().backward()  # the graph that made x was neither walked nor freed
    np.testing.assert_array_equal(a.grad, [2.0, 2.0, 2.0])


def test_gradcheck_refuses_nothing_to_check_and_a_non_tensor_result() -> None:
    with pytest.raises(ValueError, match="requires grad"):
        gradcheck(lambda x: x * 2.0, [Tensor(np.ones(2))])
    with pytest.raises(TypeError, match="float"):
        gradcheck(lambda x: 1.0, [Tensor(np.ones(2), requires_grad=True)])


# ================================================================ gradcheck on wrong ops


class RecordsUpstream(Function):
    """Base for the wrong ops below: keeps the upstream gradient backward received."""

    upstream: ClassVar[list[np.ndarray]] = []

    def record(self, grad: np.ndarray) -> None:
        RecordsUpstream.upstream.append(np.array(grad))


class TransposeWithoutTransposingBack(RecordsUpstream):
    """z = xᵀ, but backward forgets to transpose back (right for ones, wrong otherwise)."""

    def forward(self, x):
        return x.T

    def backward(self, grad):
        self.record(grad)
        return grad


class BiasSummedOverTheWrongAxis(RecordsUpstream):
    """z = x + b (b broadcast over rows), but ∂L/∂b sums over columns: right for ones on a
    square x."""

    def forward(self, x, b):
        return x + b

    def backward(self, grad):
        self.record(grad)
        return grad, grad.sum(axis=1)


class IgnoresTheUpstreamGradient(RecordsUpstream):
    """z = 2x, but backward returns 2 whatever the upstream gradient is."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad):
        self.record(grad)
        return np.full_like(grad, 2.0)


WRONG_OPS: dict[str, tuple[Callable[..., Tensor], Callable[[], list[Tensor]]]] = {
    "transposition": (
        TransposeWithoutTransposingBack.apply,
        lambda: [Tensor(_rng(5).standard_normal((3, 3)), requires_grad=True, name="W")],
    ),
    "broadcast": (
        BiasSummedOverTheWrongAxis.apply,
        lambda: [
            Tensor(_rng(6).standard_normal((3, 3)), requires_grad=True, name="x"),
            Tensor(_rng(7).standard_normal(3), requires_grad=True, name="W"),
        ],
    ),
    "ignores upstream": (
        IgnoresTheUpstreamGradient.apply,
        lambda: [Tensor(_rng(8).standard_normal((2, 3)), requires_grad=True, name="W")],
    ),
}


@pytest.mark.parametrize("case", WRONG_OPS, ids=list(WRONG_OPS))
def test_a_ones_upstream_gradient_would_hide_the_wrong_ops(case: str) -> None:
    """Why gradcheck contracts with a random upstream gradient: with ones these pass."""
    op, make_inputs = WRONG_OPS[case]
    inputs = make_inputs()
    out = op(*inputs)
    out.backward(np.ones(out.shape))
    numerical = numerical_grad(lambda *xs: op(*xs).sum(), inputs)
    for x, n in zip(inputs, numerical, strict=True):
        np.testing.assert_allclose(x.grad, n, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", WRONG_OPS, ids=list(WRONG_OPS))
def test_gradcheck_catches_the_wrong_ops(case: str) -> None:
    op, make_inputs = WRONG_OPS[case]
    with pytest.raises(GradcheckError) as info:
        gradcheck(op, make_inputs())
    assert isinstance(info.value, AssertionError)
    assert "'W'" in str(info.value)
    assert gradcheck(op, make_inputs(), raise_exception=False) is False


@pytest.mark.parametrize("case", WRONG_OPS, ids=list(WRONG_OPS))
def test_directional_gradcheck_catches_the_wrong_ops(case: str) -> None:
    op, make_inputs = WRONG_OPS[case]
    with pytest.raises(GradcheckError, match="direction") as info:
        gradcheck(op, make_inputs(), directions=3)
    assert "'W'" in str(info.value)
    assert gradcheck(op, make_inputs(), directions=3, raise_exception=False) is False


def test_gradcheck_message_gives_the_worst_element_its_values_the_error_and_tolerance() -> None:
    RecordsUpstream.upstream.clear()
    w_data = _rng(5).standard_normal((3, 3)).astype(np.float32)
    w = Tensor(w_data, requires_grad=True, name="W")
    with pytest.raises(GradcheckError) as info:
        gradcheck(TransposeWithoutTransposingBack.apply, [w], atol=1e-4, rtol=1e-2)
    message = str(info.value)
    # the wrong op was run once backward; the check used this upstream gradient v
    [v] = RecordsUpstream.upstream
    analytic, numerical = v, v.T  # backward returns v; the true gradient of ⟨v, Wᵀ⟩ is vᵀ
    excess = np.abs(analytic - numerical) - (1e-4 + 1e-2 * np.abs(numerical))
    worst = np.unravel_index(np.argmax(excess), v.shape)

    found = re.search(
        rf"worst element \[(\d+), (\d+)\]: analytic {FLOAT}, numerical {FLOAT}", message
    )
    assert found, message
    assert (int(found[1]), int(found[2])) == worst
    assert float(found[3]) == pytest.approx(analytic[worst], rel=1e-6)
    assert float(found[4]) == pytest.approx(numerical[worst], rel=1e-6)
    relative = np.linalg.norm(analytic - numerical) / (2 * np.linalg.norm(v))
    found = re.search(rf"relative error.*= {FLOAT}", message)
    assert found, message
    assert float(found[1]) == pytest.approx(relative, rel=2e-3)
    assert "input 0 'W'" in message and "(3, 3)" in message
    assert "atol 0.0001" in message and "rtol 0.01" in message
    # restored afterwards, even on failure
    assert w.data is w_data and w.dtype == np.float32 and w.grad is None


def test_gradcheck_message_names_only_the_failing_input() -> None:
    def fn(x: Tensor, w: Tensor) -> Tensor:
        return x.tanh() * 3.0 + TransposeWithoutTransposingBack.apply(w)

    x = Tensor(_rng(1).standard_normal((3, 3)), requires_grad=True)
    w = Tensor(_rng(2).standard_normal((3, 3)), requires_grad=True)  # no name: "input 1"
    with pytest.raises(GradcheckError) as info:
        gradcheck(fn, [x, w])
    head, _, per_input = str(info.value).partition("\n")
    assert "input 1" in head and "input 0" not in head
    lines = {line.split(" shape")[0].strip(): line for line in per_input.splitlines()[1:]}
    assert "FAILED" in lines["input 1"] and "FAILED" not in lines["input 0"]


# ================================================================ directional mode and cost


def _counting(fn: Callable[..., Tensor]) -> tuple[Callable[..., Tensor], list[int]]:
    calls = [0]

    def counted(*xs: Tensor) -> Tensor:
        calls[0] += 1
        return fn(*xs)

    return counted, calls


def test_directional_mode_costs_one_difference_pair_per_direction_whatever_the_size() -> None:
    x = Tensor(_rng(1).standard_normal((20, 30)).astype(np.float32), requires_grad=True)
    w = Tensor(_rng(2).standard_normal((30, 10)).astype(np.float32), requires_grad=True)
    fn, calls = _counting(lambda x, w: (x @ w).tanh())
    assert gradcheck(fn, [x, w], directions=3) is True
    assert calls[0] == 1 + 2 * 3 * 2  # one forward, then 2 evaluations × 3 directions × 2 inputs


def test_full_mode_differentiates_only_inputs_that_require_grad() -> None:
    data = Tensor(_rng(1).standard_normal((50, 4)))  # a large constant input
    w = Tensor(_rng(2).standard_normal((4, 2)), requires_grad=True)
    fn, calls = _counting(lambda data, w: (data @ w).tanh())
    assert gradcheck(fn, [data, w]) is True
    assert calls[0] == 1 + 2 * w.size


# ================================================================ the kit's assertion


def test_assert_grads_close_passes_silently_on_a_correct_op() -> None:
    x = Tensor(_rng(4).standard_normal((2, 3)), requires_grad=True)
    assert assert_grads_close(lambda x: (x * x).tanh(), x) is None


def test_assert_grads_close_raises_a_readable_assertion_error() -> None:
    w = Tensor(_rng(5).standard_normal((3, 3)), requires_grad=True, name="W")
    with pytest.raises(AssertionError) as info:
        assert_grads_close(TransposeWithoutTransposingBack.apply, w)
    message = str(info.value)
    for words in ["input 0 'W'", "worst element [", "analytic", "numerical", "atol", "rtol"]:
        assert words in message, (words, message)
    assert "Traceback" not in message
    assert_grads_close(TransposeWithoutTransposingBack.apply, w, atol=10.0)  # tolerances pass
    with pytest.raises(AssertionError, match="direction"):
        assert_grads_close(TransposeWithoutTransposingBack.apply, w, directions=2)


def test_failure_names_a_modules_parameter():
    """A parameter is named by its module (`W_aa`), so the report says which weight is wrong."""
    from tinygrad_seq.nn import RNNCell

    class WrongTanh(Function):  # forgets the chain rule's (1 − tanh²)
        def forward(self, x):
            return np.tanh(x)

        def backward(self, grad):
            return grad

    cell = RNNCell(2, 3).to(np.float64)
    params = cell.parameters()
    x = Tensor(np.random.default_rng(0).standard_normal((2, 2)))

    def fn(*ps):
        return WrongTanh.apply(x @ cell.W_ax.T + cell.W_aa.sum() + cell.b_a)

    with pytest.raises(GradcheckError, match="'W_ax'"):
        gradcheck(fn, params)


class WrongCube(Function):
    """x³ whose backward says 7x² instead of 3x²: at x = 2, 28 instead of 12."""

    def forward(self, x):
        self.x = x
        return x**3

    def backward(self, grad):
        return grad * 7 * self.x**2


def test_scalar_output_failure_reports_the_derivative_itself():
    """For a scalar f the numbers in a failure are ∂f/∂x, not scaled by a random weight."""
    x = Tensor(np.full(6, 2.0), requires_grad=True)
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x: WrongCube.apply(x).sum(), [x])
    message = str(info.value)
    assert "analytic 28, numerical 12" in message, message
    assert "compared: ∂f/∂x (the output is a scalar)" in message


def test_vector_output_failure_says_what_is_compared_and_reproduces():
    """For a vector f the message names vᵀJ and v's seed, and the quoted numbers are exactly
    v[i]·28 and v[i]·12 for that v."""
    x = Tensor(np.full(6, 2.0), requires_grad=True)
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda x: WrongCube.apply(x), [x], seed=3)
    message = str(info.value)
    assert "v = np.random.default_rng(3).standard_normal((6,))" in message, message
    v = np.random.default_rng(3).standard_normal((6,))
    worst = int(np.argmax(np.abs(v * 28 - v * 12) - 1e-3 * np.abs(v * 12)))
    quoted = re.search(r"worst element \[(\d+)\]: analytic (\S+), numerical (\S+),", message)
    assert int(quoted[1]) == worst
    assert float(quoted[2]) == pytest.approx(v[worst] * 28, rel=1e-7)
    assert float(quoted[3]) == pytest.approx(v[worst] * 12, rel=1e-6)
