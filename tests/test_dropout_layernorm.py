"""layer_norm / LayerNorm against a NumPy reference and finite differences; dropout /
Dropout: mask statistics, exact scaling, evaluation identity, gradient = mask / (1 − p)."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_seq
from tinygrad_seq import Tensor
from tinygrad_seq.nn import Dropout, LayerNorm, Linear, Module
from tinygrad_seq.nn.functional import dropout, dropout_mask, layer_norm
from tinygrad_seq.testing import assert_grads_close


def np_layer_norm(x, weight=None, bias=None, eps=1e-5):
    """(x − mean) / √(var + eps) · weight + bias over the last axis, biased variance."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


# ---------------------------------------------------------------- layer_norm


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 6)])
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm_equals_numpy(shape, affine):
    rng = np.random.default_rng(0)
    x = 3.0 * rng.standard_normal(shape) + 1.5
    w = rng.standard_normal(shape[-1]) if affine else None
    b = rng.standard_normal(shape[-1]) if affine else None
    got = layer_norm(Tensor(x), None if w is None else Tensor(w), None if b is None else Tensor(b))
    np.testing.assert_allclose(got.data, np_layer_norm(x, w, b), rtol=1e-12, atol=1e-12)
    if not affine:  # normalised rows: mean 0, biased variance var/(var + eps) ≈ 1
        np.testing.assert_allclose(got.data.mean(axis=-1), 0.0, atol=1e-12)
        var = x.var(axis=-1)
        np.testing.assert_allclose(got.data.var(axis=-1), var / (var + 1e-5), rtol=1e-12)


def test_layer_norm_eps_enters_under_the_root():
    x = np.array([[1.0, -1.0]])  # mean 0, biased variance 1
    got = layer_norm(Tensor(x), eps=3.0).data
    np.testing.assert_allclose(got, x / 2.0, rtol=1e-15)  # 1 / √(1 + 3)


def test_layer_norm_gradients_equal_finite_differences():
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((3, 5)), requires_grad=True)
    w = Tensor(rng.standard_normal(5), requires_grad=True)
    b = Tensor(rng.standard_normal(5), requires_grad=True)
    r = rng.standard_normal((3, 5))  # a random read-out, so Σ y (whose ∂/∂x is 0) is not all

    assert_grads_close(lambda x, w, b: layer_norm(x, w, b) * r, x, w, b, atol=1e-7, rtol=1e-5)
    assert_grads_close(lambda x: layer_norm(x) * r, x, atol=1e-7, rtol=1e-5)


def test_layer_norm_weight_and_bias_gradients_are_exact():
    """∂L/∂weight = Σ_rows g ⊙ x̂ and ∂L/∂bias = Σ_rows g, for upstream gradient g."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3))
    g = rng.standard_normal((4, 3))
    norm = LayerNorm(3).to(np.float64)
    (norm(x) * g).sum().backward()
    np.testing.assert_allclose(norm.weight.grad, (g * np_layer_norm(x)).sum(0), rtol=1e-12)
    np.testing.assert_allclose(norm.bias.grad, g.sum(0), rtol=1e-12)


def test_layer_norm_module_parameters_and_checks():
    norm = LayerNorm(4, eps=1e-3)
    assert [(n, p.shape) for n, p in norm.named_parameters()] == [
        ("weight", (4,)),
        ("bias", (4,)),
    ]
    np.testing.assert_array_equal(norm.weight.data, np.ones(4, np.float32))
    np.testing.assert_array_equal(norm.bias.data, np.zeros(4, np.float32))
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    y = norm(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, np_layer_norm(x.astype(np.float64), eps=1e-3), rtol=1e-5)
    with pytest.raises(ValueError, match=r"LayerNorm\(4\).*\(2, 3\).*last dimension 4"):
        norm(np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match=r"float64.*float32"):
        norm(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"weight has shape \(3,\); expected \(4,\)"):
        layer_norm(Tensor(np.zeros((2, 4))), weight=np.ones(3))


# ---------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_mask_statistics_and_exact_scaling(p):
    tinygrad_seq.manual_seed(123)
    x = np.random.default_rng(4).uniform(0.5, 2.0, (200, 100)).astype(np.float32)
    y = dropout(Tensor(x), p).data
    kept = y != 0
    n = kept.size
    # the kept fraction is Binomial(n, 1 − p) / n: within 5 standard deviations
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_array_equal(y[kept], x[kept] * np.float32(1.0 / (1.0 - p)))
    assert y.dtype == np.float32
    # the mask is the library generator's draw, rng.random(shape) >= p
    tinygrad_seq.manual_seed(123)
    keep = tinygrad_seq.random.default_rng().random(x.shape) >= p
    np.testing.assert_array_equal(kept, keep)


def test_dropout_follows_the_seed_and_an_explicit_rng():
    x = Tensor(np.ones((10, 10)))
    tinygrad_seq.manual_seed(5)
    a = dropout(x, 0.3).data
    tinygrad_seq.manual_seed(5)
    b = dropout(x, 0.3).data
    c = dropout(x, 0.3).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)
    d = dropout(x, 0.3, rng=np.random.default_rng(9)).data
    e = dropout(x, 0.3, rng=np.random.default_rng(9)).data
    np.testing.assert_array_equal(d, e)


def test_dropout_is_the_identity_when_not_training_or_p_zero():
    x = Tensor(np.arange(6.0).reshape(2, 3))
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    np.testing.assert_array_equal(dropout(np.ones(3, np.float32), 0.5, training=False).data, 1.0)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, "0.5", None])
def test_dropout_p_outside_the_unit_interval_raises_naming_p(p):
    with pytest.raises(ValueError, match=r"p must"):
        dropout(Tensor(np.ones(3)), p)
    with pytest.raises(ValueError, match=r"p must"):
        dropout(Tensor(np.ones(3)), p, training=False)  # checked in evaluation too
    with pytest.raises(ValueError, match=r"Dropout: p must"):
        Dropout(p)


def test_dropout_gradient_is_the_mask_over_one_minus_p():
    p = 0.4
    rng = np.random.default_rng(6)
    x = Tensor(rng.uniform(1.0, 2.0, (5, 7)), requires_grad=True)
    g = rng.standard_normal((5, 7))
    tinygrad_seq.manual_seed(7)
    y = dropout(x, p)
    (y * g).sum().backward()
    keep = y.data != 0
    np.testing.assert_array_equal(x.grad, g * keep / (1 - p))

    def seeded(x):  # the same mask at every evaluation: finite differences see a linear map
        tinygrad_seq.manual_seed(7)
        return dropout(x, p)

    assert_grads_close(seeded, x, atol=1e-9, rtol=1e-7)


def test_dropout_mask_values_and_dtype():
    m = dropout_mask((1000,), 0.75, np.float64, rng=np.random.default_rng(0))
    assert m.dtype == np.float64 and set(np.unique(m)) == {0.0, 4.0}


def test_dropout_module_trains_when_created_and_follows_train_eval():
    class Net(Module):
        def __init__(self):
            self.linear = Linear(4, 4)
            self.drop = Dropout(0.5)

        def forward(self, x):
            return self.drop(self.linear(x))

    net = Net()
    assert net.drop.training and Dropout().p == 0.5
    assert net.parameters() == [net.linear.weight, net.linear.bias]  # no parameters of its own
    x = np.ones((50, 4), np.float32)
    tinygrad_seq.manual_seed(1)
    trained = net(x).data
    tinygrad_seq.manual_seed(1)
    want = dropout(net.linear(x), 0.5).data
    np.testing.assert_array_equal(trained, want)
    assert (trained == 0).any()
    net.eval()
    assert not net.drop.training
    np.testing.assert_array_equal(net(x).data, net.linear(x).data)
    net.train()
    assert (net(x).data == 0).any()
