"""Second derivatives against PyTorch's `torch.autograd.grad(..., create_graph=True)`, in
float64: Hessian-vector products of each kind of op and of a small RNN loss (skipped
without PyTorch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tinygrad_seq import Tensor, maximum, where
from tinygrad_seq.autograd import hessian_vector_product
from tinygrad_seq.nn import RNNCell
from tinygrad_seq.nn import functional as F

torch = pytest.importorskip("torch")

MASK = np.random.default_rng(9).random((3, 4)) > 0.4
OPS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "tanh·x": (lambda x: x.tanh() * x, lambda x: x.tanh() * x),
    "sigmoid²": (lambda x: x.sigmoid() ** 2, lambda x: x.sigmoid() ** 2),
    "exp/log": (lambda x: (x * x + 1.0).log() * x.exp(), lambda x: (x * x + 1).log() * x.exp()),
    "softmax": (lambda x: x.softmax(axis=-1) * x, lambda x: x.softmax(-1) * x),
    "log_softmax": (lambda x: x.log_softmax(axis=0) ** 2, lambda x: x.log_softmax(0) ** 2),
    "logsumexp": (lambda x: x.logsumexp(axis=-1) ** 3, lambda x: x.logsumexp(-1) ** 3),
    "softplus": (lambda x: x.softplus() * x, lambda x: torch.nn.functional.softplus(x) * x),
    "sqrt/abs": (lambda x: (x.abs() + 1.0).sqrt() * x, lambda x: (x.abs() + 1).sqrt() * x),
    "matmul": (lambda x: (x @ x.T).tanh(), lambda x: (x @ x.T).tanh()),
    "var": (lambda x: x.var(axis=-1) * x.sum(), lambda x: x.var(-1, unbiased=False) * x.sum()),
    "maximum/where": (
        lambda x: where(MASK, maximum(x, x * 0.5), x * x) * x,
        lambda x: torch.where(torch.tensor(MASK), torch.maximum(x, x * 0.5), x * x) * x,
    ),
    "layer_norm": (
        lambda x: F.layer_norm(x).tanh(),
        lambda x: torch.nn.functional.layer_norm(x, (x.shape[-1],)).tanh(),
    ),
}


def _torch_hvp(f: Callable[..., Any], xs: list[np.ndarray], vs: list[np.ndarray]) -> list:
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    gs = torch.autograd.grad(f(*ts), ts, create_graph=True)
    dot = sum((g * torch.tensor(v)).sum() for g, v in zip(gs, vs, strict=True))
    return [h.detach().numpy() for h in torch.autograd.grad(dot, ts)]


@pytest.mark.parametrize("name", OPS)
def test_hessian_vector_products_of_each_op_match_torch(name: str) -> None:
    ours, theirs = OPS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    v = rng.standard_normal((3, 4))
    u = rng.standard_normal(np.shape(theirs(torch.tensor(x))))  # a random projection of f
    (hv,) = hessian_vector_product(
        lambda t: (ours(t) * u).sum(), [Tensor(x, requires_grad=True)], [v]
    )
    [expected] = _torch_hvp(lambda t: (theirs(t) * torch.tensor(u)).sum(), [x], [v])
    np.testing.assert_allclose(hv.data, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("compile", [True, False])
def test_hessian_vector_product_of_an_rnn_loss_matches_torch(compile: bool) -> None:
    """a<t> = tanh(W_aa a<t-1> + W_ax x<t> + b_a) over 4 steps, loss Σ_t ‖a<t>‖²."""
    from tinygrad_seq.nn import Recurrent
    from tinygrad_seq.nn.fused import use_fused_cells

    cell = RNNCell(2, 3).to(np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 2))
    params = cell.parameters()
    vs = [rng.standard_normal(p.shape) for p in params]

    def loss(*_: Tensor) -> Tensor:
        use_fused_cells(compile)
        try:
            outputs, _ = Recurrent(cell, compile=compile)(Tensor(x))
        finally:
            use_fused_cells(True)
        return (outputs * outputs).sum()

    ours = hessian_vector_product(loss, params, vs)

    def torch_loss(W_aa: Any, W_ax: Any, b_a: Any) -> Any:
        a = torch.zeros(2, 3, dtype=torch.float64)
        total = 0
        for t in range(4):
            a = torch.tanh(a @ W_aa.T + torch.tensor(x[:, t]) @ W_ax.T + b_a)
            total = total + (a * a).sum()
        return total

    names = [n for n, _ in cell.named_parameters()]
    assert names == ["W_aa", "W_ax", "b_a"]
    expected = _torch_hvp(torch_loss, [p.data for p in params], vs)
    for h, e in zip(ours, expected, strict=True):
        np.testing.assert_allclose(h.data, e, rtol=1e-10, atol=1e-12)
