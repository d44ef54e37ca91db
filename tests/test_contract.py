"""The engine's promises to op authors: the Function contract is enforced, arrays saved for
backward cannot be changed unnoticed, kinks follow PyTorch, and importing changes nothing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import tinygrad_seq as ts
from tinygrad_seq import Tensor
from tinygrad_seq.autograd import Function
from tinygrad_seq.nn import Parameter
from tinygrad_seq.optim import SGD


# ---------------------------------------------------------------- the Function contract
class OneGradForTwo(Function):
    def forward(self, x, y):
        return x * y

    def backward(self, grad):
        return grad  # forgets y's gradient


class ThreeGradsForTwo(Function):
    def forward(self, x, y):
        return x + y

    def backward(self, grad):
        return grad, grad, grad


class ExtraLeadingAxis(Function):
    def forward(self, x):
        return x * 2

    def backward(self, grad):
        return np.stack([grad, grad])  # (2, *shape): not broadcasting, a wrong gradient


class BroadcastGrad(Function):
    """y = x + b with b (n,) broadcast to (B, n): returning the output-shaped gradient is fine."""

    def forward(self, x, b):
        return x + b

    def backward(self, grad):
        return grad, grad


def test_too_few_gradients_raise_naming_the_function() -> None:
    x, y = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0, 4.0], requires_grad=True)
    with pytest.raises(
        RuntimeError, match=r"OneGradForTwo.backward returned 1 gradient\(s\) for 2"
    ):
        OneGradForTwo.apply(x, y).sum().backward()


def test_too_many_gradients_raise_naming_the_function() -> None:
    x, y = Tensor([1.0], requires_grad=True), Tensor([3.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"ThreeGradsForTwo.backward returned 3 .* for 2 input"):
        ThreeGradsForTwo.apply(x, y).sum().backward()


def test_a_gradient_of_another_shape_raises_with_both_shapes() -> None:
    x = Tensor(np.ones((3, 2)), requires_grad=True)
    with pytest.raises(ValueError) as info:
        ExtraLeadingAxis.apply(x).sum().backward()
    message = str(info.value)
    assert "ExtraLeadingAxis.backward" in message and "input 0" in message
    assert "(2, 3, 2)" in message and "(3, 2)" in message


def test_an_output_shaped_gradient_is_summed_back_to_a_broadcast_input() -> None:
    x = Tensor(np.ones((4, 3)), requires_grad=True)
    b = Tensor(np.zeros(3), requires_grad=True)
    g = np.arange(12.0).reshape(4, 3)
    BroadcastGrad.apply(x, b).backward(g)
    np.testing.assert_array_equal(x.grad, g)
    np.testing.assert_array_equal(b.grad, g.sum(axis=0))


# ---------------------------------------------------------------- in-place writes
def test_writing_a_saved_parameter_before_backward_is_refused() -> None:
    w = Parameter(np.array([1.0, 2.0]))
    loss = (w * w).sum()
    with pytest.raises(ValueError, match="read-only"):
        w.data[...] = 10.0
    loss.backward()
    np.testing.assert_array_equal(w.grad, [2.0, 4.0])  # the forward's values, not a mix
    w.data[...] = 0.0  # after backward the parameter is the user's again
    np.testing.assert_array_equal(w.data, [0.0, 0.0])


def test_a_dropped_graph_gives_the_arrays_back() -> None:
    batch = np.ones((2, 3))
    w = Tensor(np.ones(3), requires_grad=True)
    out = (Tensor(batch) * w).sum()
    assert not batch.flags.writeable  # the user's own array, shared by Tensor(batch)
    del out
    batch[0, 0] = 5.0  # no graph holds it any more
    assert batch[0, 0] == 5.0 and w.data.flags.writeable


def test_two_live_graphs_keep_a_shared_weight_locked_until_both_are_done() -> None:
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    first, second = (w * 2.0).sum(), (w * w).sum()
    first.backward()
    assert not w.data.flags.writeable  # `second` still needs w's values
    second.backward()
    assert w.data.flags.writeable
    np.testing.assert_array_equal(w.grad, [2.0 + 2.0, 2.0 + 4.0])


def test_an_intermediate_saved_for_backward_is_read_only() -> None:
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3.0
    y = (h * h).sum()
    with pytest.raises(ValueError, match="read-only"):
        h.data[0] = 0.0
    y.backward()
    np.testing.assert_array_equal(x.grad, 18.0 * x.data)


def test_optimiser_steps_while_a_retained_graph_holds_the_weights() -> None:
    w = Parameter(np.array([1.0, 2.0]))
    loss = (w * w).sum()
    loss.backward(retain_graph=True)
    SGD([w], lr=0.5).step()  # replaces the locked array instead of writing into it
    np.testing.assert_allclose(w.data, [0.0, 0.0])
    w.grad = None
    loss.backward()  # the retained graph still has the forward's values
    np.testing.assert_array_equal(w.grad, [2.0, 4.0])


def test_replacing_data_after_forward_keeps_the_forward_values_in_backward() -> None:
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (w * w).sum()
    w.data = np.array([5.0, 5.0])
    y.backward()
    np.testing.assert_array_equal(w.grad, [2.0, 4.0])


# ---------------------------------------------------------------- kinks, as PyTorch
def _grad(fn, x):
    t = Tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    fn(t).sum().backward()
    return t.grad


def test_abs_has_zero_gradient_at_zero() -> None:
    np.testing.assert_array_equal(_grad(lambda t: t.abs(), [-2.0, 0.0, 3.0]), [-1.0, 0.0, 1.0])


def test_clip_passes_the_gradient_at_its_bounds() -> None:
    g = _grad(lambda t: t.clip(-1.0, 1.0), [-2.0, -1.0, 0.0, 1.0, 2.0])
    np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(_grad(lambda t: t.clip(None, 0.0), [-1.0, 0.0, 1.0]), [1, 1, 0])


def test_minimum_and_maximum_split_ties_in_half() -> None:
    a = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = Tensor(np.array([2.0, 2.0, 2.0]), requires_grad=True)
    ts.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(b.grad, [1.0, 0.5, 0.0])
    a.grad = b.grad = None
    ts.minimum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(b.grad, [0.0, 0.5, 1.0])


def test_logsumexp_and_softplus_are_stable_at_1e4_in_float32() -> None:
    x = Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], np.float32), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        lse = x.logsumexp(axis=-1)
        sp = x.softplus()
        (lse.sum() + sp.sum()).backward()
    np.testing.assert_allclose(lse.data, [1e4, -1e4 + np.log(3.0)], rtol=1e-6)
    np.testing.assert_allclose(sp.data, [[1e4, 0.0, np.log(2.0)], [0.0, 0.0, 0.0]], rtol=1e-6)
    assert lse.dtype == sp.dtype == x.grad.dtype == np.float32
    assert np.isfinite(x.grad).all()


def test_chunk_follows_pytorch_sizes() -> None:
    x = Tensor(np.arange(10.0), requires_grad=True)
    parts = x.chunk(3)
    assert [p.shape for p in parts] == [(4,), (4,), (2,)]
    assert len(x.chunk(4)) == 4 and [p.shape[0] for p in x.chunk(4)] == [3, 3, 3, 1]
    (parts[0] * 1.0 + 0.0).sum().backward()  # unused parts get zero gradient
    np.testing.assert_array_equal(x.grad, [1.0] * 4 + [0.0] * 6)


def test_creation_helpers() -> None:
    z, o = ts.zeros(2, 3), ts.ones((2,), dtype=np.float64, requires_grad=True)
    assert z.shape == (2, 3) and z.dtype == np.float32 and not z.data.any()
    assert o.dtype == np.float64 and o.requires_grad and (o.data == 1).all()
    assert ts.zeros_like(o).shape == (2,) and ts.ones_like(z).data.sum() == 6


# ---------------------------------------------------------------- import changes nothing
def test_importing_the_package_leaves_the_allocator_alone() -> None:
    code = (
        "import tinygrad_seq, tinygrad_seq.nn, tinygrad_seq.lm\n"
        "from tinygrad_seq.autograd import memory\n"
        "print(memory.tuned)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    tuned = subprocess.run(
        [sys.executable, "-c", "import tinygrad_seq as t; print(t.tune_allocator())"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "TINYGRAD_SEQ_MALLOC_TUNING": "0"},
    )
    assert tuned.stdout.strip() == "False"  # the opt-out still holds for the explicit call
