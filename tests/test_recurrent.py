"""Unrolling through time: Recurrent, masking, reverse, Bidirectional, Stacked, truncated BPTT.

References here are plain loops calling the cell step by step; gradients are checked
against finite differences through the property kit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_seq
from tinygrad_seq import Tensor, concat
from tinygrad_seq.nn import (
    Bidirectional,
    GRUCell,
    LSTMCell,
    Module,
    Parameter,
    Recurrent,
    RNNCell,
    Stacked,
    detach_state,
)
from tinygrad_seq.testing import assert_grads_close

BUILDS = {
    "rnn": lambda n_x, n_a: RNNCell(n_x, n_a),
    "gru": lambda n_x, n_a: GRUCell(n_x, n_a, reset_after=True),
    "lstm": lambda n_x, n_a: LSTMCell(n_x, n_a, peephole=True),
}


def random_cell(kind: str, n_x: int, n_a: int, rng: np.random.Generator) -> Any:
    cell = BUILDS[kind](n_x, n_a).to(np.float64)
    for p in cell.parameters():
        p.data = 0.7 * rng.standard_normal(p.shape)
    return cell


def parts(state: Any) -> list:
    return [state] if isinstance(state, Tensor | np.ndarray) else list(state)


def output_of(state: Any) -> Tensor:
    return parts(state)[0]


def random_initial(cell: Any, batch: int, rng: np.random.Generator) -> Any:
    zero = cell.init_state(batch)
    values = [Tensor(rng.standard_normal(p.shape)) for p in parts(zero)]
    return values[0] if isinstance(zero, Tensor) else tuple(values)


def take(state: Any, b: int) -> Any:
    """Sequence b's row of a state, keeping the batch axis."""
    rows = [Tensor(np.asarray(p)[b : b + 1]) for p in parts(state)]
    return rows[0] if len(rows) == 1 else tuple(rows)


problems = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(sorted(BUILDS)),
        "n_x": st.integers(1, 3),
        "n_a": st.integers(1, 3),
        "batch": st.integers(1, 3),
        "steps": st.integers(1, 4),
        "seed": st.integers(0, 2**32 - 1),
    }
)


def setup(problem: dict) -> tuple[Any, np.ndarray, Any, np.random.Generator]:
    rng = np.random.default_rng(problem["seed"])
    cell = random_cell(problem["kind"], problem["n_x"], problem["n_a"], rng)
    x = rng.standard_normal((problem["batch"], problem["steps"], problem["n_x"]))
    return cell, x, random_initial(cell, problem["batch"], rng), rng


# ---------------------------------------------------------------- Recurrent = the cell T times


@given(problem=problems)
def test_recurrent_equals_calling_the_cell_t_times(problem: dict) -> None:
    cell, x, state0, _ = setup(problem)
    outputs, final = Recurrent(cell)(x, state0)
    state, manual = state0, []
    for t in range(problem["steps"]):
        state = cell(x[:, t], state)
        manual.append(output_of(state).data)
    # equal up to rounding: built-in cells unroll through fused steps (same math, reordered)
    np.testing.assert_allclose(outputs.data, np.stack(manual, axis=1), rtol=1e-12, atol=1e-13)
    for got, want in zip(parts(final), parts(state), strict=True):
        np.testing.assert_allclose(got.data, want.data, rtol=1e-12, atol=1e-13)


@given(problem=problems)
def test_reverse_equals_a_backward_loop(problem: dict) -> None:
    cell, x, state0, _ = setup(problem)
    outputs, final = Recurrent(cell, reverse=True)(x, state0)
    state, manual = state0, {}
    for t in reversed(range(problem["steps"])):
        state = cell(x[:, t], state)
        manual[t] = output_of(state).data
    expected = np.stack([manual[t] for t in sorted(manual)], 1)
    np.testing.assert_allclose(outputs.data, expected, rtol=1e-12, atol=1e-13)
    for got, want in zip(parts(final), parts(state), strict=True):
        np.testing.assert_allclose(got.data, want.data, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("reverse", [False, True])
@given(problem=problems, data=st.data())
def test_masked_sequences_equal_running_each_sequence_alone(
    reverse: bool, problem: dict, data: st.DataObject
) -> None:
    cell, x, state0, _ = setup(problem)
    batch, steps = problem["batch"], problem["steps"]
    lengths = data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    outputs, final = Recurrent(cell, reverse=reverse)(x, state0, lengths=lengths)
    for b, n in enumerate(lengths):
        alone, alone_final = Recurrent(cell, reverse=reverse)(x[b : b + 1, :n], take(state0, b))
        np.testing.assert_allclose(outputs.data[b, :n], alone.data[0], rtol=1e-13, atol=1e-13)
        assert not outputs.data[b, n:].any(), "outputs past a sequence's end must be zero"
        for got, want in zip(parts(final), parts(alone_final), strict=True):
            np.testing.assert_allclose(got.data[b], want.data[0], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("reverse", [False, True])
@given(problem=problems, data=st.data())
def test_padded_steps_get_exactly_zero_gradient(
    reverse: bool, problem: dict, data: st.DataObject
) -> None:
    cell, x, state0, rng = setup(problem)
    batch, steps = problem["batch"], problem["steps"]
    lengths = data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    x = Tensor(x, requires_grad=True)
    outputs, final = Recurrent(cell, reverse=reverse)(x, state0, lengths=lengths)
    loss = (outputs * rng.standard_normal(outputs.shape)).sum()
    for p in parts(final):
        loss = loss + (p * rng.standard_normal(p.shape)).sum()
    loss.backward()
    for b, n in enumerate(lengths):
        assert (x.grad[b, n:] == 0.0).all()
        assert np.abs(x.grad[b, :n]).sum() > 0.0


@pytest.mark.parametrize("reverse", [False, True])
@given(problem=problems, data=st.data())
def test_bptt_gradients_equal_finite_differences(
    reverse: bool, problem: dict, data: st.DataObject
) -> None:
    problem = {**problem, "n_x": min(problem["n_x"], 2), "batch": min(problem["batch"], 2)}
    problem["steps"] = min(problem["steps"], 3)
    cell, x, state0, _ = setup(problem)
    batch, steps = problem["batch"], problem["steps"]
    lengths = data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    x = Tensor(x, requires_grad=True)
    initial = [Tensor(p.data, requires_grad=True) for p in parts(state0)]
    k = len(initial)

    def fn(x: Tensor, *rest: Tensor) -> Tensor:
        state = rest[0] if k == 1 else tuple(rest[:k])
        outputs, final = Recurrent(cell, reverse=reverse)(x, state, lengths=lengths)
        return concat([outputs.reshape(batch, -1), *parts(final)], axis=1)

    assert_grads_close(fn, x, *initial, *cell.parameters(), atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------- a user's own cell


class LeakySumCell(Module):
    """A user-defined cell with a 3-part state (a, s, n): a<t> = tanh(U a + V x), s += a, n += 1.

    It follows the protocol only (no library base class), so Recurrent must rely on nothing
    else: output = state[0], masking part by part.
    """

    def __init__(self, input_size: int, hidden_size: int, rng: np.random.Generator) -> None:
        self.input_size, self.hidden_size = input_size, hidden_size
        self.U = Parameter(rng.standard_normal((hidden_size, hidden_size)))
        self.V = Parameter(rng.standard_normal((hidden_size, input_size)))

    def init_state(self, batch_size: int) -> tuple:
        return tuple(Tensor(np.zeros((batch_size, self.hidden_size))) for _ in range(3))

    def forward(self, x: Any, state: Any = None) -> tuple:
        a_prev, s_prev, n_prev = self.init_state(len(x)) if state is None else state
        a = (a_prev @ self.U.T + x @ self.V.T).tanh()
        return a, s_prev + a, n_prev + 1.0


@given(problem=problems, data=st.data())
def test_a_user_defined_cell_unrolls_the_same_way(problem: dict, data: st.DataObject) -> None:
    rng = np.random.default_rng(problem["seed"])
    batch, steps, n_x, n_a = problem["batch"], problem["steps"], problem["n_x"], problem["n_a"]
    cell = LeakySumCell(n_x, n_a, rng)
    x = Tensor(rng.standard_normal((batch, steps, n_x)), requires_grad=True)
    lengths = data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))

    outputs, (_, s, n) = Recurrent(cell)(x, lengths=lengths)
    np.testing.assert_array_equal(n.data[:, 0], lengths)  # each sequence counted its own steps
    for b, length in enumerate(lengths):
        state = cell.init_state(1)
        for t in range(length):
            state = cell(x[b : b + 1, t], state)
            np.testing.assert_allclose(outputs.data[b, t], state[0].data[0], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(s.data[b], state[1].data[0], rtol=1e-12, atol=1e-13)
        assert not outputs.data[b, length:].any()

    def fn(x: Tensor, U: Tensor, V: Tensor) -> Tensor:
        outputs, (_, s, _) = Recurrent(cell, reverse=True)(x, lengths=lengths)
        return concat([outputs.reshape(batch, -1), s], axis=1)

    assert_grads_close(fn, x, cell.U, cell.V, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------- truncated BPTT


def truncated_bptt(cell: Any, x: Tensor, state0: Any, k: int, weights: np.ndarray) -> np.ndarray:
    """Run x in chunks of k steps, each chunk starting from the previous chunk's final state
    detached; backpropagate each chunk's loss Σ weights·outputs. Returns the outputs."""
    state, outputs = state0, []
    for start in range(0, x.shape[1], k):
        out, state = Recurrent(cell)(x[:, start : start + k], state)
        (out * weights[:, start : start + k]).sum().backward()
        state = detach_state(state)
        outputs.append(out.data)
    return np.concatenate(outputs, axis=1)


def grads(tensors: list) -> list:
    return [None if t.grad is None else t.grad.copy() for t in tensors]


@given(problem=problems, k=st.integers(1, 6))
def test_truncated_bptt_with_k_at_least_t_equals_full_bptt(problem: dict, k: int) -> None:
    cell, x_data, state0, rng = setup(problem)
    steps = problem["steps"]
    weights = rng.standard_normal((problem["batch"], steps, problem["n_a"]))
    x = Tensor(x_data, requires_grad=True)
    outputs_trunc = truncated_bptt(cell, x, state0, k, weights)
    truncated = grads([x, *cell.parameters()])

    # the forward values never depend on k: state flows across chunks, only gradients stop
    x.grad = None
    cell.zero_grad()
    outputs, _ = Recurrent(cell)(x, state0)
    np.testing.assert_allclose(outputs_trunc, outputs.data, rtol=1e-13, atol=1e-13)
    (outputs * weights).sum().backward()
    full = grads([x, *cell.parameters()])
    if k >= steps:
        for g_trunc, g_full in zip(truncated, full, strict=True):
            np.testing.assert_array_equal(g_trunc, g_full)


@given(problem=problems, k=st.integers(1, 3))
def test_steps_further_back_than_k_get_exactly_zero_gradient(problem: dict, k: int) -> None:
    """The loss of the last chunk reaches only the last chunk's inputs, exactly as full BPTT
    would there; everything before the truncation point gets an exact zero."""
    cell, x_data, state0, rng = setup(problem)
    steps = problem["steps"]
    weights = rng.standard_normal((problem["batch"], steps, problem["n_a"]))
    start = ((steps - 1) // k) * k  # first step of the last chunk
    weights[:, :start] = 0.0  # only the last chunk's outputs enter the loss
    x = Tensor(x_data, requires_grad=True)
    truncated_bptt(cell, x, state0, k, weights)
    assert (x.grad[:, :start] == 0.0).all()
    window = x.grad[:, start:].copy()

    x.grad = None
    outputs, _ = Recurrent(cell)(x, state0)
    (outputs * weights).sum().backward()
    np.testing.assert_allclose(window, x.grad[:, start:], rtol=1e-12, atol=1e-14)
    if start > 0:
        assert np.abs(x.grad[:, :start]).sum() > 0.0  # full BPTT does reach them


# ---------------------------------------------------------------- Bidirectional


@given(problem=problems, data=st.data())
def test_bidirectional_equals_forward_and_backward_loops(
    problem: dict, data: st.DataObject
) -> None:
    rng = np.random.default_rng(problem["seed"])
    batch, steps, n_x = problem["batch"], problem["steps"], problem["n_x"]
    fwd = random_cell(problem["kind"], n_x, problem["n_a"], rng)
    bwd = random_cell("gru", n_x, 2, rng)
    x = rng.standard_normal((batch, steps, n_x))
    lengths = data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))

    outputs, (final_f, final_b) = Bidirectional(fwd, bwd)(x, lengths=lengths)
    assert outputs.shape == (batch, steps, problem["n_a"] + 2)
    for b, n in enumerate(lengths):
        state_f, state_b = fwd.init_state(1), bwd.init_state(1)
        for t in range(n):
            state_f = fwd(x[b : b + 1, t], state_f)
            np.testing.assert_allclose(
                outputs.data[b, t, : problem["n_a"]],
                output_of(state_f).data[0],
                rtol=1e-12,
                atol=1e-13,
            )
        for t in reversed(range(n)):
            state_b = bwd(x[b : b + 1, t], state_b)
            np.testing.assert_allclose(
                outputs.data[b, t, problem["n_a"] :], state_b.data[0], rtol=1e-12, atol=1e-13
            )
        assert not outputs.data[b, n:].any()
        np.testing.assert_allclose(final_b.data[b], state_b.data[0], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(
            output_of(final_f).data[b], output_of(state_f).data[0], rtol=1e-12, atol=1e-13
        )


def test_bidirectional_gradients_equal_finite_differences() -> None:
    rng = np.random.default_rng(5)
    fwd, bwd = random_cell("lstm", 2, 2, rng), random_cell("rnn", 2, 3, rng)
    x = Tensor(rng.standard_normal((2, 3, 2)), requires_grad=True)
    bi = Bidirectional(fwd, bwd)
    assert [n for n, _ in bi.named_parameters()][:2] == ["forward_cell.W_u", "forward_cell.W_f"]

    def fn(x: Tensor, *params: Tensor) -> Tensor:
        return bi(x, lengths=[3, 2])[0]

    assert_grads_close(fn, x, *bi.parameters(), atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------- Stacked (deep RNNs)


def test_stacked_equals_layers_run_one_after_another() -> None:
    rng = np.random.default_rng(2)
    cells = [random_cell("lstm", 3, 4, rng), random_cell("gru", 4, 2, rng)]
    x = rng.standard_normal((2, 5, 3))
    deep = Stacked(cells)
    outputs, (final1, final2) = deep(x, lengths=[5, 3])
    hidden, want1 = Recurrent(cells[0])(x, lengths=[5, 3])
    want, want2 = Recurrent(cells[1])(hidden, lengths=[5, 3])
    np.testing.assert_array_equal(outputs.data, want.data)
    np.testing.assert_array_equal(final2.data, want2.data)
    np.testing.assert_array_equal(final1[1].data, want1[1].data)
    names = [n for n, _ in deep.named_parameters()]
    assert names[0] == "layers.0.W_u" and names[-1] == "layers.1.b_cc"


def test_stacked_accepts_initial_states_for_truncated_bptt() -> None:
    rng = np.random.default_rng(4)
    deep = Stacked([random_cell("rnn", 2, 3, rng), random_cell("lstm", 3, 3, rng)])
    x = rng.standard_normal((2, 6, 2))
    whole, finals = deep(x)
    first, states = deep(x[:, :4])
    second, finals_chunked = deep(x[:, 4:], states=[detach_state(s) for s in states])
    np.testing.assert_allclose(np.concatenate([first.data, second.data], 1), whole.data)
    np.testing.assert_allclose(finals_chunked[1][1].data, finals[1][1].data)
    with pytest.raises(ValueError, match="2 layers but 1 initial states"):
        deep(x, states=[None])


def test_stacked_dropout_only_between_layers_and_only_in_training() -> None:
    rng = np.random.default_rng(0)
    cells = [random_cell("rnn", 3, 50, rng), random_cell("rnn", 50, 4, rng)]
    x = rng.standard_normal((2, 3, 3))
    deep = Stacked(cells, dropout=0.5)
    no_dropout, _ = Stacked(cells)(x)

    deep.eval()
    np.testing.assert_array_equal(deep(x)[0].data, no_dropout.data)

    deep.train()
    tinygrad_seq.manual_seed(11)
    dropped, _ = deep(x)
    tinygrad_seq.manual_seed(11)
    again, _ = deep(x)
    np.testing.assert_array_equal(dropped.data, again.data)  # masks follow manual_seed
    assert not np.allclose(dropped.data, no_dropout.data)

    tinygrad_seq.manual_seed(11)  # the same mask, by hand: inverted dropout on layer 1's outputs
    keep = tinygrad_seq.random.default_rng().random((2, 3, 50)) >= 0.5
    hidden, _ = Recurrent(cells[0])(x)
    want, _ = Recurrent(cells[1])(hidden * (keep / 0.5))
    np.testing.assert_allclose(dropped.data, want.data, rtol=1e-12, atol=1e-13)


def test_stacked_build_makes_deep_and_bidirectional_layers() -> None:
    deep = Stacked.build("gru", 3, 4, num_layers=3, bidirectional=True, reset_after=True)
    outputs, finals = deep(np.ones((2, 5, 3), np.float32), lengths=[5, 1])
    assert outputs.shape == (2, 5, 8) and len(finals) == 3
    assert deep.layers[1].forward_cell.input_size == 8
    assert not outputs.data[1, 1:].any()
    lstm = Stacked.build("lstm", 3, 4, num_layers=2, dropout=0.2)
    assert lstm.dropout == 0.2 and lstm.layers[1].input_size == 4
    with pytest.raises(ValueError, match="'transformer'"):
        Stacked.build("transformer", 3, 4)
    with pytest.raises(ValueError, match="dropout"):
        Stacked([RNNCell(3, 4)], dropout=1.0)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "lengths, message",
    [
        ([3], r"2 sequences.*shape \(1,\)"),
        ([3, 3, 3], r"2 sequences.*shape \(3,\)"),
        ([0, 3], r"1\.\.T = 1\.\.4; got \[0\]"),
        ([4, 5], r"1\.\.T = 1\.\.4; got \[5\]"),
        ([-1, 2], r"got \[-1\]"),
        ([1.5, 2], r"integers.*1\.5"),
    ],
)
def test_bad_lengths_raise_naming_them(lengths: list, message: str) -> None:
    x = np.zeros((2, 4, 3), np.float32)
    with pytest.raises(ValueError, match=message):
        Recurrent(RNNCell(3, 2))(x, lengths=lengths)
    with pytest.raises(ValueError, match=message):
        Bidirectional(RNNCell(3, 2), RNNCell(3, 2))(x, lengths=lengths)


def test_lengths_may_be_an_array_or_whole_floats() -> None:
    x = np.ones((2, 4, 3), np.float32)
    a, _ = Recurrent(RNNCell(3, 2))(x, lengths=np.array([4, 2]))
    b, _ = Recurrent(RNNCell(3, 2))(x, lengths=[4.0, 2.0])
    assert not a.data[1, 2:].any() and not b.data[1, 2:].any()


def test_bad_sequence_shapes_and_states_raise_naming_the_shapes() -> None:
    layer = Recurrent(LSTMCell(3, 4))
    with pytest.raises(ValueError, match=r"\(B, T, n_x\), got \(2, 3\)"):
        layer(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(batch, 3\)"):
        layer(np.zeros((2, 6, 5), np.float32))
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"a<t-1> has shape \(3, 4\).*\(2, 4\)"):
        layer(np.zeros((2, 6, 3), np.float32), (z, z))
