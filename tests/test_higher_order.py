"""Gradients of gradients: `create_graph=True`, `autograd.grad`, and once-differentiable ops."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrad_seq import Tensor
from tinygrad_seq.autograd import Function, grad


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
