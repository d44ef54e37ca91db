"""Losses, optimisers and clipping against PyTorch in float64 (skipped without PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrad_seq import Tensor
from tinygrad_seq.nn import functional as F
from tinygrad_seq.optim import SGD, Adam, clip_grad_norm_, clip_grad_value_

torch = pytest.importorskip("torch")
TF = torch.nn.functional

REDUCTIONS = ["mean", "sum", "none"]


def both(array, requires_grad=True):
    """The same float64 values as a tinygrad_seq Tensor and a torch tensor."""
    array = np.array(array, dtype=np.float64)
    return Tensor(array.copy(), requires_grad=requires_grad), torch.tensor(
        array.copy(), requires_grad=requires_grad
    )


def backward_both(ours, theirs, rng):
    g = rng.standard_normal(ours.shape)
    ours.backward(g)
    theirs.backward(torch.tensor(g))


def close(ours, theirs, rtol=1e-12, atol=1e-14):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=rtol, atol=atol)


# ---------------------------------------------------------------- losses
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [None, -100, 2])
def test_cross_entropy_matches_torch(reduction, ignore_index):
    rng = np.random.default_rng(0)
    z, zt = both(rng.standard_normal((7, 5)) * 3)
    y = rng.integers(0, 5, 7)
    if ignore_index is not None:
        y[[1, 4]] = ignore_index
    ours = F.cross_entropy(z, y, reduction=reduction, ignore_index=ignore_index)
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    theirs = TF.cross_entropy(zt, torch.tensor(y), reduction=reduction, **kwargs)
    close(ours.data, theirs)
    backward_both(ours, theirs, rng)
    close(z.grad, zt.grad)


def test_cross_entropy_all_ignored_differs_from_torch_by_design():
    z, zt = both(np.ones((2, 3)))
    y = np.array([-100, -100])
    ours = F.cross_entropy(z, y, ignore_index=-100)
    theirs = TF.cross_entropy(zt, torch.tensor(y), ignore_index=-100)
    assert torch.isnan(theirs) and ours.item() == 0.0  # ours: 0, documented
    ours.backward()
    theirs.backward()
    close(z.grad, zt.grad)  # both zero


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_matches_torch(reduction):
    rng = np.random.default_rng(1)
    p_values = rng.uniform(0.01, 0.99, (3, 4))
    p_values[0, :2] = [0.0, 1.0]  # the clamped logs and the clamped gradient
    p, pt = both(p_values)
    t, tt = both(rng.uniform(0, 1, (3, 4)), requires_grad=False)
    ours = F.binary_cross_entropy(p, t, reduction=reduction)
    theirs = TF.binary_cross_entropy(pt, tt, reduction=reduction)
    close(ours.data, theirs)
    backward_both(ours, theirs, rng)
    close(p.grad, pt.grad, rtol=1e-8)  # at p ∈ {0, 1}: PyTorch's ε is 1e-12 in float32


def test_binary_cross_entropy_target_gradient_matches_torch():
    rng = np.random.default_rng(2)
    p, pt = both(rng.uniform(0.01, 0.99, 6), requires_grad=False)
    t, tt = both(rng.uniform(0, 1, 6))
    F.binary_cross_entropy(p, t, reduction="sum").backward()
    TF.binary_cross_entropy(pt, tt, reduction="sum").backward()
    close(t.grad, tt.grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_matches_torch(reduction):
    rng = np.random.default_rng(3)
    x_values = rng.standard_normal((4, 3)) * 5
    x_values[0] = [0.0, 40.0, -40.0]
    x, xt = both(x_values)
    t, tt = both(rng.uniform(0, 1, (4, 3)))
    ours = F.binary_cross_entropy_with_logits(x, t, reduction=reduction)
    theirs = TF.binary_cross_entropy_with_logits(xt, tt, reduction=reduction)
    close(ours.data, theirs)
    backward_both(ours, theirs, rng)
    close(x.grad, xt.grad)
    close(t.grad, tt.grad)


# ---------------------------------------------------------------- optimisers
def trajectories(make_ours, make_theirs, steps=5, seed=4):
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(s) for s in [(3, 2), (4,)]]
    ours = [Tensor(a.copy(), requires_grad=True) for a in start]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in start]
    opt, opt_t = make_ours(ours), make_theirs(theirs)
    for _ in range(steps):
        for p, pt in zip(ours, theirs, strict=True):
            g = rng.standard_normal(p.shape)
            p.grad, pt.grad = g.copy(), torch.tensor(g)
        opt.step()
        opt_t.step()
        for p, pt in zip(ours, theirs, strict=True):
            close(p.data, pt, rtol=1e-12, atol=1e-13)
    return ours


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.0), (0.5, 0.1)])
def test_sgd_trajectory_matches_torch(momentum, weight_decay):
    trajectories(
        lambda ps: SGD(ps, lr=0.1, momentum=momentum, weight_decay=weight_decay),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum, weight_decay=weight_decay),
    )


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6}, {"lr": 0.01, "weight_decay": 0.1}],
)
def test_adam_trajectory_matches_torch(kwargs):
    trajectories(lambda ps: Adam(ps, **kwargs), lambda ps: torch.optim.Adam(ps, **kwargs))


# ---------------------------------------------------------------- clipping
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal(s) for s in [(3, 2), (4,), ()]]
    ours = [Tensor(np.zeros(g.shape), requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, pt, g in zip(ours, theirs, grads, strict=True):
        p.grad, pt.grad = g.copy(), torch.tensor(g)
    norm = clip_grad_norm_(ours, max_norm)
    norm_t = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert norm == pytest.approx(float(norm_t), rel=1e-12)
    for p, pt in zip(ours, theirs, strict=True):
        # PyTorch scales by max_norm / (norm + 1e-6); ours by max_norm / norm exactly
        close(p.grad, pt.grad, rtol=1e-6)


def test_clip_grad_value_matches_torch():
    g = np.random.default_rng(6).standard_normal((5, 4)) * 3
    p, pt = both(np.zeros((5, 4)))
    p.grad, pt.grad = g.copy(), torch.tensor(g)
    clip_grad_value_([p], 1.5)
    torch.nn.utils.clip_grad_value_([pt], 1.5)
    close(p.grad, pt.grad, rtol=0, atol=0)
