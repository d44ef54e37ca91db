"""The fused fast path is held to the readable cells, and its kernels to their references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_seq import Tensor, manual_seed, stack
from tinygrad_seq.autograd import Function, kernels
from tinygrad_seq.autograd.tensor import DeferredMatmulGrad
from tinygrad_seq.nn import GRUCell, LSTMCell, RNNCell
from tinygrad_seq.nn.fused import fused_steps, use_fused_cells
from tinygrad_seq.testing import assert_grads_close

VARIANTS = {
    "rnn-tanh": lambda n_x, n_a: RNNCell(n_x, n_a),
    "rnn-relu": lambda n_x, n_a: RNNCell(n_x, n_a, nonlinearity="relu"),
    "gru-reset-after": lambda n_x, n_a: GRUCell(n_x, n_a, reset_after=True),
    "lstm": lambda n_x, n_a: LSTMCell(n_x, n_a),
    "lstm-peephole": lambda n_x, n_a: LSTMCell(n_x, n_a, peephole=True),
}


def _perturbed(make, n_x: int, n_a: int, dtype, seed: int):
    """A cell whose every parameter (peepholes and b_cc included) is non-trivial."""
    rng = np.random.default_rng(seed)
    manual_seed(seed)
    cell = make(n_x, n_a).to(dtype)
    for p in cell.parameters():
        p.data = (p.data + 0.5 * rng.standard_normal(p.shape)).astype(dtype)
    return cell


def _unroll(cell, x: Tensor, state, fused: bool) -> Tensor:
    step = fused_steps(cell, x, state) if fused else None
    assert (step is not None) == fused
    outputs = []
    for t in range(x.shape[1]):
        state = step(t, state) if step else cell(x[:, t], state)
        outputs.append(state if isinstance(state, Tensor) else state[0])
    last = state if isinstance(state, Tensor) else stack(list(state), axis=0)
    return stack(outputs, axis=1).sum(axis=-1) * 0.5 + last.sum()


def _inputs(cell, B: int, T: int, dtype, seed: int):
    rng = np.random.default_rng(seed + 1)
    x = Tensor(rng.standard_normal((B, T, cell.input_size)).astype(dtype), requires_grad=True)
    shape = (B, cell.hidden_size)
    parts = [Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)]
    if isinstance(cell, LSTMCell):
        parts.append(Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True))
    return x, parts


def _grads(cell, x, parts, fused: bool):
    tensors = [x, *parts, *cell.parameters()]
    for t in tensors:
        t.grad = None
    state = parts[0] if len(parts) == 1 else tuple(parts)
    out = _unroll(cell, x, state, fused)
    upstream = np.random.default_rng(7).standard_normal(out.shape)
    out.backward(upstream.astype(out.dtype))
    return out.data.copy(), [t.grad.copy() for t in tensors]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@given(
    n_x=st.integers(1, 4),
    n_a=st.integers(1, 4),
    B=st.integers(1, 3),
    T=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_fused_equals_readable_cell_float64(variant, n_x, n_a, B, T, seed):
    cell = _perturbed(VARIANTS[variant], n_x, n_a, np.float64, seed)
    x, parts = _inputs(cell, B, T, np.float64, seed)
    out_ref, grads_ref = _grads(cell, x, parts, fused=False)
    out_fast, grads_fast = _grads(cell, x, parts, fused=True)
    np.testing.assert_allclose(out_fast, out_ref, rtol=1e-12, atol=1e-12)
    for g_fast, g_ref in zip(grads_fast, grads_ref, strict=True):
        np.testing.assert_allclose(g_fast, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fused_float32_is_close_to_readable_float64(variant):
    cell64 = _perturbed(VARIANTS[variant], 3, 5, np.float64, 3)
    cell32 = _perturbed(VARIANTS[variant], 3, 5, np.float64, 3).to(np.float32)
    x64, parts64 = _inputs(cell64, 2, 6, np.float64, 3)
    x32, parts32 = _inputs(cell32, 2, 6, np.float32, 3)
    out64, grads64 = _grads(cell64, x64, parts64, fused=False)
    out32, grads32 = _grads(cell32, x32, parts32, fused=True)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4)
    for g32, g64 in zip(grads32, grads64, strict=True):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fused_gradients_equal_finite_differences(variant):
    cell = _perturbed(VARIANTS[variant], 2, 3, np.float64, 11)
    x, parts = _inputs(cell, 2, 3, np.float64, 11)

    def fn(x, *tensors):
        state = tensors[0] if len(parts) == 1 else tuple(tensors[: len(parts)])
        return _unroll(cell, x, state, fused=True)

    assert_grads_close(fn, x, *parts, *cell.parameters())


def test_generic_path_for_other_variants_and_subclasses():
    x = Tensor(np.ones((2, 3, 2), np.float32))
    assert fused_steps(GRUCell(2, 3), x, None) is None  # the course's reset-before GRU
    assert fused_steps(GRUCell(2, 3, full=False), x, None) is None

    class MyLSTM(LSTMCell):  # a user's subclass may change forward: never bypass it
        pass

    assert fused_steps(MyLSTM(2, 3), x, None) is None
    use_fused_cells(False)
    try:
        assert fused_steps(LSTMCell(2, 3), x, None) is None
    finally:
        use_fused_cells(True)
    assert fused_steps(LSTMCell(2, 3), x, None) is not None


def test_fused_path_checks_its_input_like_the_cell():
    cell = LSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        fused_steps(cell, Tensor(np.ones((2, 5, 2), np.float32)), None)
    with pytest.raises(TypeError, match="float64"):
        fused_steps(cell, Tensor(np.ones((2, 5, 3))), None)


# ---------------------------------------------------------------- gate kernels vs references


def _gate_args(name: str, B: int, n: int, dtype, rng) -> tuple:
    def r(*shape, scale=2.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    if name == "lstm_gates":
        return r(B, 4 * n), r(B, 4 * n), r(B, n), r(3, n)
    if name == "lstm_gates_backward":
        _, _, gates, tc = kernels.lstm_gates_reference(r(B, 4 * n), r(B, 4 * n), r(B, n), r(3, n))
        return r(B, n), r(B, n), gates, tc, r(B, n), r(3, n)
    if name == "gru_gates":
        return r(B, 3 * n), r(B, 3 * n), r(B, n)
    _, gates = kernels.gru_gates_reference(r(B, 3 * n), r(B, 3 * n), r(B, n))
    return r(B, n), gates, r(B, 3 * n), r(B, n)


@pytest.mark.parametrize("name", sorted(kernels.GATE_PAIRS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(B=st.integers(1, 5), n=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_gate_kernels_equal_references(name, dtype, B, n, seed):
    reference, kernel = kernels.GATE_PAIRS[name]
    args = _gate_args(name, B, n, dtype, np.random.default_rng(seed))
    expected, got = reference(*args), kernel(*args)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol * max(1.0, float(np.abs(e).max())))


def test_gate_kernels_are_stable_for_huge_inputs():
    big = np.array([[-1e4, 1e4, -50.0, 50.0]], np.float32)
    with np.errstate(all="raise"):
        a, c, gates, _ = kernels.lstm_gates(
            np.repeat(big, 4, axis=1),
            np.zeros((1, 16), np.float32),
            big,
            np.zeros((3, 4), np.float32),
        )
    assert np.isfinite(a).all() and np.isfinite(c).all() and np.isfinite(gates).all()
    assert set(np.unique(gates[:, :4])) <= {0.0, 1.0}  # σ saturates exactly


# ---------------------------------------------------------------- engine pieces it relies on


class _MatmulDeferred(Function):
    """y = x Wᵀ with W's gradient deferred to one GEMM at the end of backward."""

    def forward(self, x, W):
        self.x, self.W = x, W
        return x @ W.T

    def backward(self, grad):
        return grad @ self.W, DeferredMatmulGrad(grad, self.x)


@pytest.mark.parametrize("through_node", [False, True])
def test_deferred_weight_gradient_sums_every_step(through_node):
    rng = np.random.default_rng(0)
    W = Tensor(rng.standard_normal((3, 3)), requires_grad=True)
    h0 = Tensor(rng.standard_normal((2, 3)), requires_grad=True)

    def fn(W, h0):
        weight = W * 1.0 if through_node else W  # a non-leaf weight gathers pairs too
        h = h0
        for _ in range(4):
            h = (_MatmulDeferred.apply(h, weight) + weight[0]).tanh()  # dense + deferred mix
        return h

    assert_grads_close(fn, W, h0)


def test_multi_output_function_gets_zeros_for_unused_outputs():
    class SplitHalves(Function):
        def forward(self, x):
            n = x.shape[-1] // 2
            return x[..., :n] * 2, x[..., n:] * 3

        def backward(self, grads):
            return np.concatenate([grads[0] * 2, grads[1] * 3], axis=-1)

    x = Tensor(np.arange(4.0), requires_grad=True)
    left, right = SplitHalves.apply(x)
    left.sum().backward()
    np.testing.assert_array_equal(x.grad, [2, 2, 0, 0])
    x.grad = None
    left, right = SplitHalves.apply(x)
    right.retain_grad()
    (left.sum() + (right * right).sum()).backward()
    np.testing.assert_array_equal(right.grad, 2 * right.data)
    np.testing.assert_array_equal(x.grad, [2, 2, 3 * 2 * 6, 3 * 2 * 9])
