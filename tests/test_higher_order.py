"""Gradients of gradients: `create_graph=True`, `autograd.grad`, once-differentiable ops,
`gradgradcheck`, Hessian-vector products, and second order through every recurrent cell."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tinygrad_seq import Tensor
from tinygrad_seq.autograd import (
    Function,
    GradcheckError,
    grad,
    gradcheck,
    gradgradcheck,
    hessian_vector_product,
)
from tinygrad_seq.autograd.functional import local_vjp
from tinygrad_seq.nn import GRUCell, LSTMCell, Recurrent, RNNCell
from tinygrad_seq.nn.fused import use_fused_cells
from tinygrad_seq.testing import assert_second_grads_close


def test_third_derivative_of_a_polynomial() -> None:
    x = Tensor(np.array([2.0, -1.0]), requires_grad=True)
    (d1,) = grad((x**4).sum(), x, create_graph=True)  # 4x³
    (d2,) = grad(d1.sum(), x, create_graph=True)  # 12x²
    (d3,) = grad(d2.sum(), x)  # 24x
    np.testing.assert_allclose(d1.data, 4 * x.data**3)
    np.testing.assert_allclose(d2.data, 12 * x.data**2)
    np.testing.assert_allclose(d3.data, 24 * x.data)
    assert x.grad is None  # grad() never touches .grad


def test_hessian_of_a_tanh_layer_matches_finite_differences_of_its_gradient() -> None:
    rng = np.random.default_rng(0)
    W = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    x = rng.standard_normal((2, 4))

    def gradient(w: np.ndarray) -> np.ndarray:
        t = Tensor(w, requires_grad=True)
        ((Tensor(x) @ t.T).tanh() ** 2).sum().backward()
        return t.grad

    (g,) = grad(((Tensor(x) @ W.T).tanh() ** 2).sum(), W, create_graph=True)
    v = rng.standard_normal(W.shape)
    (hv,) = grad((g * v).sum(), W)  # Hessian-vector product
    eps = 1e-6
    numeric = (gradient(W.data + eps * v) - gradient(W.data - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv.data, numeric, rtol=1e-6, atol=1e-8)


def test_backward_with_create_graph_leaves_values_in_grad() -> None:
    x = Tensor(np.array([3.0]), requires_grad=True)
    y = (x**3).sum()
    y.backward(create_graph=True)
    assert isinstance(x.grad, np.ndarray)
    np.testing.assert_allclose(x.grad, [27.0])


def test_grad_returns_none_for_unused_inputs_and_handles_non_leaves() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    unused = Tensor(np.array([5.0]), requires_grad=True)
    h = x * 3.0
    gx, gu, gh = grad((h * h).sum(), [x, unused, h])
    assert gu is None
    np.testing.assert_allclose(gh.data, 2 * h.data)
    np.testing.assert_allclose(gx.data, 18 * x.data)


def test_grad_outputs_and_multiple_outputs() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (g,) = grad([x * 2.0, x * x], x, grad_outputs=[np.array([1.0, 1.0]), np.array([0.5, 2.0])])
    np.testing.assert_allclose(g.data, [2.0 + 1.0, 2.0 + 8.0])
    with pytest.raises(ValueError, match="2 outputs but 1 grad_outputs"):
        grad([x * 2.0, x * x], x, grad_outputs=[np.ones(2)])


def test_a_tensor_grad_output_is_differentiated_too() -> None:
    # the double-backward trick: vᵀJ as a function of v gives J u back
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    v = Tensor(np.zeros(2), requires_grad=True)
    y = x.tanh() * x
    (vjp,) = grad(y, x, grad_outputs=v, create_graph=True)
    u = np.array([0.3, -0.7])
    (ju,) = grad((vjp * u).sum(), v)
    jac = np.diag(np.tanh(x.data) + x.data * (1 - np.tanh(x.data) ** 2))
    np.testing.assert_allclose(ju.data, jac @ u, rtol=1e-12)


class ArrayCube(Function):
    """A user op whose backward works on arrays: differentiable once."""

    def forward(self, x):
        self.x = x
        return x**3

    def backward(self, grad):
        return 3 * self.x**2 * grad


class TensorCube(Function):
    """The same op written as a vjp: differentiable to any order."""

    def forward(self, x):
        return x**3

    def vjp(self, m, g, x, out):
        return (g * 3.0 * x * x,)


def test_a_second_derivative_through_an_array_backward_raises_naming_it() -> None:
    x = Tensor(np.array([2.0]), requires_grad=True)
    (g,) = grad(ArrayCube.apply(x).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.data, [12.0])  # first order still works
    with pytest.raises(RuntimeError, match=r"ArrayCube\.backward works on NumPy arrays"):
        grad(g.sum(), x)


def test_a_user_function_with_a_vjp_is_differentiable_twice() -> None:
    x = Tensor(np.array([2.0]), requires_grad=True)
    (g,) = grad(TensorCube.apply(x).sum(), x, create_graph=True)
    (h,) = grad(g.sum(), x)
    np.testing.assert_allclose([g.data[0], h.data[0]], [12.0, 12.0])
    x2 = Tensor(np.array([2.0]), requires_grad=True)
    TensorCube.apply(x2).sum().backward()  # first order runs the same vjp on arrays
    np.testing.assert_allclose(x2.grad, [12.0])


def test_second_order_through_every_kind_of_primitive() -> None:
    """softmax, matmul, getitem, concat/split, where, max, broadcasting: H·v vs differences."""
    rng = np.random.default_rng(1)
    a0 = rng.standard_normal((3, 4))
    W = rng.standard_normal((4, 4))
    mask = rng.random((3, 4)) > 0.3

    def f(a: Tensor) -> Tensor:
        z = (a @ Tensor(W)).softmax(axis=-1)
        left, right = z.chunk(2, axis=-1)
        from tinygrad_seq import concat, where

        joined = concat([right * left, left.exp()], axis=-1)
        picked = where(mask, joined, a.sigmoid())[np.array([0, 2, 2])]
        return (picked * picked).sum() + a.max(axis=0).sum() + a.logsumexp(axis=1).sum()

    def first(a: np.ndarray) -> np.ndarray:
        t = Tensor(a, requires_grad=True)
        f(t).backward()
        return t.grad

    a = Tensor(a0, requires_grad=True)
    (g,) = grad(f(a), a, create_graph=True)
    np.testing.assert_allclose(g.data, first(a0), rtol=1e-12)
    v = rng.standard_normal(a0.shape)
    (hv,) = grad((g * v).sum(), a)
    eps = 1e-6
    numeric = (first(a0 + eps * v) - first(a0 - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv.data, numeric, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- gradgradcheck


class WrongSecondCube(Function):
    """x³ with the right first derivative 3x² on arrays, but a derivative on Tensors (what a
    second-order pass differentiates) of 7x²: at x = 2 its derivative is 28, the true 12."""

    def forward(self, x):
        return x**3

    def vjp(self, m, g, x, out):
        return (g * (3.0 if isinstance(x, np.ndarray) else 7.0) * x * x,)


def test_gradgradcheck_passes_on_smooth_functions_of_several_inputs() -> None:
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    W = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
    assert gradgradcheck(lambda x, W: (x @ W.T).sigmoid() * x.sum(), [x, W])
    assert gradgradcheck(lambda x: (x * 2.0).sum(), [x])  # a zero second derivative
    assert x.grad is None and W.grad is None


def test_gradgradcheck_reports_the_second_derivative_itself() -> None:
    x = Tensor(np.array([2.0]), requires_grad=True)
    assert gradcheck(lambda x: WrongSecondCube.apply(x).sum(), [x])  # first order is right
    with pytest.raises(GradcheckError) as info:
        gradgradcheck(lambda x: WrongSecondCube.apply(x).sum(), [x])
    message = str(info.value)
    assert "gradgradcheck (second derivatives) failed for input 0" in message
    assert "analytic 28, numerical 12" in message, message
    assert "v = 1 (f is a scalar), u = 1" in message
    assert not gradgradcheck(lambda x: WrongSecondCube.apply(x).sum(), [x], raise_exception=False)


def test_gradgradcheck_names_an_op_that_is_differentiable_once() -> None:
    x = Tensor(np.array([2.0, 0.5]), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"ArrayCube\.backward works on NumPy arrays"):
        gradgradcheck(lambda x: ArrayCube.apply(x).sum(), [x])
    with pytest.raises(ValueError, match="no input requires grad"):
        gradgradcheck(lambda x: x * x, [Tensor(np.ones(2))])


def test_kit_second_order_assertion_fails_with_the_numbers() -> None:
    x = Tensor(np.array([2.0]), requires_grad=True)
    assert_second_grads_close(lambda x: (x**3).sum(), x)
    with pytest.raises(AssertionError, match="analytic 28, numerical 12"):
        assert_second_grads_close(lambda x: WrongSecondCube.apply(x).sum(), x)


def test_local_vjp_holds_each_input_as_a_leaf() -> None:
    """h = 3x is built on x; the local derivative of y = h·x with respect to (x, h) is (h, x),
    not the total derivative through h's dependence on x."""
    x = Tensor(np.array([2.0]), requires_grad=True)
    h = x * 3.0
    y = h * x
    gx, gh = local_vjp([y], [x, h], [np.ones(1)])
    np.testing.assert_allclose([gx.data[0], gh.data[0]], [6.0, 2.0])


# ---------------------------------------------------------------- second order through time


def _loss_through(cell: Any, x: np.ndarray, fused: bool) -> Callable[..., Tensor]:
    def loss(*params: Tensor) -> Tensor:
        use_fused_cells(fused)
        try:
            outputs, _ = Recurrent(cell)(Tensor(x))
        finally:
            use_fused_cells(True)
        return (outputs * outputs).sum() + outputs[:, -1].tanh().sum()

    return loss


CELLS = {
    "rnn": lambda: RNNCell(2, 3),
    "rnn-relu": lambda: RNNCell(2, 3, nonlinearity="relu"),
    "gru": lambda: GRUCell(2, 3),
    "gru-reset-after": lambda: GRUCell(2, 3, reset_after=True),
    "gru-simplified": lambda: GRUCell(2, 3, full=False),
    "lstm": lambda: LSTMCell(2, 3),
    "lstm-peephole": lambda: LSTMCell(2, 3, peephole=True),
}


@pytest.mark.parametrize("kind", CELLS)
def test_every_cell_is_twice_differentiable_through_recurrent(kind: str) -> None:
    """Second derivatives of a loss through `Recurrent` against differences of gradients, and
    the fused path (first order in kernels, second order replayed) equal to the interpreted."""
    cell = CELLS[kind]().to(np.float64)
    x = np.random.default_rng(1).standard_normal((2, 4, 2))
    params = cell.parameters()
    assert gradgradcheck(_loss_through(cell, x, fused=True), params)
    v = [np.random.default_rng(2).standard_normal(p.shape) for p in params]
    fused = hessian_vector_product(_loss_through(cell, x, fused=True), params, v)
    interpreted = hessian_vector_product(_loss_through(cell, x, fused=False), params, v)
    for a, b in zip(fused, interpreted, strict=True):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-10, atol=1e-12)


def test_hessian_vector_product_equals_the_explicit_hessian_of_a_tiny_rnn() -> None:
    """A 2-unit tanh RNN over 3 steps: H v against H built column by column from finite
    differences of gradients, and against differences of gradients along v."""
    cell = RNNCell(1, 2).to(np.float64)
    x = np.random.default_rng(3).standard_normal((1, 3, 1))
    params = cell.parameters()
    loss = _loss_through(cell, x, fused=True)
    sizes = [p.data.size for p in params]
    theta0 = np.concatenate([p.data.ravel() for p in params])

    def gradient(theta: np.ndarray) -> np.ndarray:
        parts = np.split(theta, np.cumsum(sizes)[:-1])
        for p, part in zip(params, parts, strict=True):
            p.data = part.reshape(p.shape).copy()
        gs = grad(loss(*params), params)
        for p, part in zip(params, np.split(theta0, np.cumsum(sizes)[:-1]), strict=True):
            p.data = part.reshape(p.shape).copy()
        return np.concatenate([g.data.ravel() for g in gs])

    eps, n = 1e-6, theta0.size
    H = np.stack(
        [(gradient(theta0 + eps * e) - gradient(theta0 - eps * e)) / (2 * eps) for e in np.eye(n)],
        axis=1,
    )
    np.testing.assert_allclose(H, H.T, atol=1e-7)  # a Hessian is symmetric
    v = np.random.default_rng(4).standard_normal(n)
    vs = [
        u.reshape(p.shape) for p, u in zip(params, np.split(v, np.cumsum(sizes)[:-1]), strict=True)
    ]
    hv = np.concatenate([h.data.ravel() for h in hessian_vector_product(loss, params, vs)])
    np.testing.assert_allclose(hv, H @ v, rtol=1e-6, atol=1e-8)
    along_v = (gradient(theta0 + eps * v) - gradient(theta0 - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv, along_v, rtol=1e-6, atol=1e-8)
    assert all(p.grad is None for p in params)


def test_hessian_vector_product_refuses_mismatched_vectors() -> None:
    x = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match=r"v\[0\] has shape \(3,\), parameter 0 has \(2,\)"):
        hessian_vector_product(lambda x: (x**3).sum(), [x], [np.ones(3)])
    with pytest.raises(ValueError, match="1 parameters but 2 vectors"):
        hessian_vector_product(lambda x: (x**3).sum(), [x], [np.ones(2), np.ones(2)])
    (zero,) = hessian_vector_product(lambda x: (x * 2.0).sum(), x, np.ones(2))
    np.testing.assert_array_equal(zero.data, [0.0, 0.0])
