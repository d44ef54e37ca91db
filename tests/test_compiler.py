"""Compiled steps: the step a cell builds, traced from its graph and run as one node per step,
equals the interpreted step (values and every gradient) or runs interpreted, saying why."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_seq
from tinygrad_seq import Function, Tensor, concat
from tinygrad_seq.autograd import gradgradcheck
from tinygrad_seq.compiler import CompiledStep, explain, use_compiled_steps
from tinygrad_seq.nn import (
    Bidirectional,
    Cell,
    GRUCell,
    LSTMCell,
    Parameter,
    Recurrent,
    RNNCell,
    Stacked,
    init,
)
from tinygrad_seq.nn.fused import use_fused_cells
from tinygrad_seq.testing import assert_grads_close

_spec = importlib.util.spec_from_file_location(
    "doc_cells", Path(__file__).with_name("doc_cells.py")
)
doc_cells = importlib.util.module_from_spec(_spec)
sys.modules["doc_cells"] = doc_cells
_spec.loader.exec_module(doc_cells)

BUILT_IN = {
    "rnn-tanh": lambda n_x, n_a: RNNCell(n_x, n_a),
    "rnn-relu": lambda n_x, n_a: RNNCell(n_x, n_a, nonlinearity="relu"),
    "gru": lambda n_x, n_a: GRUCell(n_x, n_a),
    "gru-reset-after": lambda n_x, n_a: GRUCell(n_x, n_a, reset_after=True),
    "gru-simplified": lambda n_x, n_a: GRUCell(n_x, n_a, full=False),
    "lstm": lambda n_x, n_a: LSTMCell(n_x, n_a),
    "lstm-peephole": lambda n_x, n_a: LSTMCell(n_x, n_a, peephole=True),
}


def _cell(kind: str, n_x: int = 3, n_a: int = 4) -> Any:
    if kind in BUILT_IN:
        return BUILT_IN[kind](n_x, n_a)
    return doc_cells.load_doc_cells()[kind](n_x, n_a)


KINDS = [*BUILT_IN, *doc_cells.CELL_NAMES]


@pytest.fixture(autouse=True)
def _fused_off():
    """The built-in cells take the compiler, not their hand-fused steps, in these tests."""
    use_fused_cells(False)
    yield
    use_fused_cells(True)
    use_compiled_steps(True)


def _run(model: Any, x: np.ndarray, compiled: bool, **kwargs: Any) -> tuple[list, list]:
    """Outputs and the gradients of a loss w.r.t. every parameter, x and the initial state."""
    use_compiled_steps(compiled)
    params = model.parameters()
    for p in params:
        p.grad = None
    xt = Tensor(x, requires_grad=True)
    state = kwargs.pop("state", None)
    if state is not None:
        kwargs["state"] = state
    outputs, final = model(xt, **kwargs)
    finals = [final] if isinstance(final, Tensor) else list(_flatten(final))
    loss = (outputs * outputs).sum() + sum((f.tanh()).sum() for f in finals)
    loss.backward()
    grads = [np.zeros(p.shape) if p.grad is None else p.grad.copy() for p in params]
    grads.append(np.zeros(x.shape) if xt.grad is None else xt.grad.copy())
    if state is not None:
        grads += [p.grad.copy() for p in _flatten(state)]
        for p in _flatten(state):
            p.grad = None
    return [outputs.data, *(f.data for f in finals)], grads


def _flatten(state: Any) -> list[Tensor]:
    if isinstance(state, Tensor):
        return [state]
    return [t for part in state for t in _flatten(part)]


def _assert_same(model: Any, x: np.ndarray, rtol: float = 1e-10, **kwargs: Any) -> None:
    state = kwargs.pop("state", None)
    fresh = (lambda: None) if state is None else (lambda: _copy_state(state))
    got, got_grads = _run(model, x, True, state=fresh(), **kwargs)
    want, want_grads = _run(model, x, False, state=fresh(), **kwargs)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    assert len(got_grads) == len(want_grads)
    for a, b in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


def _copy_state(state: Any) -> Any:
    if isinstance(state, Tensor):
        return Tensor(state.data.copy(), requires_grad=True)
    return tuple(_copy_state(s) for s in state)


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_equals_interpreted_in_float64(kind: str) -> None:
    cell = _cell(kind).to(np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3))
    layer = Recurrent(cell)
    assert explain(cell, x).startswith("compiled:"), explain(cell, x)
    parts = cell.init_state(2)
    state = tuple(Tensor(rng.standard_normal(p.shape), requires_grad=True) for p in _flatten(parts))
    _assert_same(layer, x, state=state[0] if isinstance(parts, Tensor) else state)
    _assert_same(layer, x, lengths=[5, 2])
    _assert_same(Recurrent(cell, reverse=True), x, lengths=[3, 5])


@pytest.mark.parametrize("kind", ["lstm-peephole", "gru", "MGUCell", "LayerNormLSTMCell"])
def test_compiled_equals_interpreted_in_float32(kind: str) -> None:
    cell = _cell(kind)
    x = np.random.default_rng(1).standard_normal((3, 6, 3)).astype(np.float32)
    # float32 sums (a bias gradient over B·T) run in another order inside the kernels
    _assert_same(Recurrent(cell), x, rtol=1e-4)


def test_bidirectional_and_stacked_layers_compile_their_cells() -> None:
    x = np.random.default_rng(2).standard_normal((2, 4, 3))
    bi = Bidirectional(_cell("MGUCell").to(np.float64), _cell("lstm").to(np.float64))
    _assert_same(bi, x, lengths=[4, 3])
    deep = Stacked([_cell("gru").to(np.float64), _cell("IndRNNCell", 4, 4).to(np.float64)])
    _assert_same(deep, x)


def test_one_graph_node_per_step() -> None:
    cell = _cell("MGUCell")
    outputs, _ = Recurrent(cell)(np.ones((2, 6, 3), np.float32))
    steps = set()
    todo, seen = [outputs._ctx], set()
    while todo:
        fn = todo.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if isinstance(fn, CompiledStep):
            steps.add(id(fn))
        todo += [p._ctx for p in fn.parents if isinstance(p, Tensor)]
    assert len(steps) == 6


def test_the_lstm_plan_stacks_its_four_gate_products_and_defers_the_weight_gradient() -> None:
    text = explain(LSTMCell(3, 4), np.ones((2, 5, 3), np.float32))
    assert text.startswith("compiled: 2 primitives in one graph node per step")
    assert "stacked: 4 products of s0<t-1>" in text  # a<t-1> @ [W_c, W_u, W_f, W_o]ᵀ
    assert "stacked: 4 products of x<t>" in text and "hoisted: %" in text  # one T·B GEMM
    assert text.count("weight gradient deferred") == 1
    assert "Region(" in text and "reading the columns of" in text
    assert text.count("Transpose(") == 4
    assert Recurrent(LSTMCell(3, 4), compile=False).explain(np.ones((2, 5, 3))) == (
        "interpreted: compile=False"
    )
    use_fused_cells(True)
    assert (
        Recurrent(LSTMCell(3, 4)).explain(np.ones((2, 5, 3), np.float32)).startswith("hand-fused")
    )


class InputSideCell(Cell):
    """a<t> = tanh(a<t-1> W_aᵀ + s ⊙ tanh(x<t> W_xᵀ + b_x) + b): everything on x<t>'s side,
    the tanh included, can run once over all T·B rows."""

    def __init__(self, n_x: int, n_a: int) -> None:
        rng = np.random.default_rng(3)
        self.input_size, self.hidden_size = n_x, n_a
        self.W_a = Parameter(rng.standard_normal((n_a, n_a)) * 0.5)
        self.W_x = Parameter(rng.standard_normal((n_a, n_x)) * 0.5)
        self.b_x = Parameter(rng.standard_normal(n_a) * 0.1)
        self.s = Parameter(rng.standard_normal(n_a))
        self.b = Parameter(rng.standard_normal(n_a) * 0.1)

    def forward(self, x, state=None):
        x, (a,) = self.check_step(x, state)
        u = (x @ self.W_x.T + self.b_x).tanh() * self.s
        return ((a @ self.W_a.T + u) + self.b).tanh()


def test_input_side_work_runs_before_the_loop_and_keeps_every_gradient() -> None:
    cell = InputSideCell(3, 4).to(np.float64)
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    text = explain(cell, x)
    before = text.split("before the loop, over all T·B rows of x:")[1].split("each step")[0]
    assert "MatMul(x<t>" in before and "Tanh(" in before and "Mul(" in before
    assert "reassociated:" in text  # (a W_aᵀ + u) + b → a W_aᵀ + (u + b)
    assert text.count("\n  %") - text.count("once per sequence") > 0
    _assert_same(Recurrent(cell), x)
    use_compiled_steps(True)

    def loss(*params: Tensor) -> Tensor:
        outputs, _ = Recurrent(cell)(Tensor(x))
        return (outputs * outputs).sum()

    assert_grads_close(loss, *cell.parameters(), atol=1e-6, rtol=1e-4)


def test_the_lstm_kernel_stores_one_gradient_block_for_both_addends() -> None:
    """∂L/∂(a W_aᵀ) and ∂L/∂(x W_xᵀ + b) are the same values: one block of D, 4 n_a wide,
    and n_a more for c<t-1>."""
    from tinygrad_seq.compiler.step import build

    cell = LSTMCell(3, 4)
    plan = build(cell, Tensor(np.ones((2, 5, 3), np.float32)), cell.init_state(2))
    (region,) = [n.kwargs["kernels"] for n in plan.nodes if "kernels" in n.kwargs]
    assert region.width == 5 * 4
    assert "biases stacked: 4 additions" in plan.describe()


def test_second_order_through_a_compiled_step() -> None:
    cell = _cell("MGUCell", 2, 3).to(np.float64)
    x = np.random.default_rng(3).standard_normal((2, 3, 2))

    def loss(*params: Tensor) -> Tensor:
        outputs, _ = Recurrent(cell)(Tensor(x))
        return (outputs * outputs).sum()

    assert explain(cell, x).startswith("compiled:")
    assert gradgradcheck(loss, cell.parameters())


# ---------------------------------------------------------------- guards


class Halve(Function):
    """A user op: z = x / 2 with its own backward."""

    def forward(self, x):
        return x / 2

    def backward(self, grad):
        return grad / 2


class UserOpCell(Cell):
    def __init__(self, n_x: int, n_a: int) -> None:
        self.input_size, self.hidden_size = n_x, n_a
        self.W = Parameter(init.glorot_uniform((n_a, n_a + n_x)))

    def forward(self, x, state=None):
        x, (a,) = self.check_step(x, state)
        return Halve.apply(concat([a, x], axis=-1) @ self.W.T).tanh()


class BranchCell(UserOpCell):
    """Chooses its equation from the values: no single graph is the step."""

    def forward(self, x, state=None):
        x, (a,) = self.check_step(x, state)
        z = concat([a, x], axis=-1) @ self.W.T
        return z.tanh() if float(x.data.sum()) >= 0 else z.sigmoid()


class NoisyCell(UserOpCell):
    """Draws fresh noise every step from the library generator."""

    def forward(self, x, state=None):
        x, (a,) = self.check_step(x, state)
        noise = tinygrad_seq.random.default_rng().standard_normal(a.shape)
        return (concat([a, x], axis=-1) @ self.W.T + noise).tanh()


def test_a_user_function_compiles_and_keeps_its_own_derivative() -> None:
    cell = UserOpCell(3, 4).to(np.float64)
    x = np.random.default_rng(4).standard_normal((2, 5, 3))
    assert "Halve(" in explain(cell, x)
    _assert_same(Recurrent(cell), x)


@pytest.mark.parametrize(
    "cell, reason",
    [
        (BranchCell(3, 4), "disagrees with the interpreted one at step"),
        (NoisyCell(3, 4), "constant c0 differs between steps 1 and 2"),
    ],
)
def test_a_step_the_compiler_cannot_take_runs_interpreted_and_says_why(cell, reason) -> None:
    cell.to(np.float64)
    rng = np.random.default_rng(5)
    x = np.abs(rng.standard_normal((2, 5, 3)))
    x[:, 3:] *= -1  # steps 1 and 2 trace alike; the branch turns at step 4
    state = Tensor(rng.standard_normal((2, 4)))
    assert reason in explain(cell, x, state)
    with pytest.warns(RuntimeWarning, match=reason):
        tinygrad_seq.manual_seed(0)
        compiled, _ = Recurrent(cell)(Tensor(x), state)
    tinygrad_seq.manual_seed(0)
    interpreted, _ = Recurrent(cell, compile=False)(Tensor(x), state)
    np.testing.assert_array_equal(compiled.data, interpreted.data)  # tracing drew no numbers


def test_a_state_of_another_structure_gets_the_interpreted_error() -> None:
    class PairCell(UserOpCell):
        def forward(self, x, state=None):
            a = UserOpCell.forward(self, x, state)
            return a, a

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(TypeError, match=r"PairCell\): the cell's first step returned"):
            Recurrent(PairCell(3, 4))(np.ones((2, 3, 3), np.float32))
    assert "structure" in explain(PairCell(3, 4), np.ones((2, 3, 3), np.float32))


def test_the_plan_follows_replaced_parameters_and_new_dtypes() -> None:
    cell = _cell("MGUCell")
    x = np.random.default_rng(6).standard_normal((2, 4, 3)).astype(np.float32)
    Recurrent(cell)(x)
    name, old = next(iter(cell.named_parameters()))
    setattr(cell, name, Parameter(old.data * 0.5))  # a new object: the plan must follow
    _assert_same(Recurrent(cell), x, rtol=1e-5)
    cell.to(np.float64)
    _assert_same(Recurrent(cell), x.astype(np.float64))


# ---------------------------------------------------------------- drawn cells

UNARY = {
    "tanh": lambda v: v.tanh(),
    "sigmoid": lambda v: v.sigmoid(),
    "softplus": lambda v: v.softplus(),
    "square": lambda v: v * v,
    "neg": lambda v: -v,
    "layer_norm": lambda v: (
        (v - v.mean(axis=-1, keepdims=True)) / (v.var(axis=-1, keepdims=True) + 1.0).sqrt()
    ),
}
BINARY = {
    "add": lambda u, v: u + v,
    "sub": lambda u, v: u - v,
    "mul": lambda u, v: u * v,
    "maximum": lambda u, v: tinygrad_seq.maximum(u, v),
    "gate": lambda u, v: u.sigmoid() * v + (1 - u.sigmoid()) * v.tanh(),
}


class DrawnCell(Cell):
    """A random program over [a<t-1>, x<t>]: two projections, then drawn primitives."""

    def __init__(self, n_x: int, n_a: int, program: list, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.input_size, self.hidden_size, self.program = n_x, n_a, program
        self.W_1 = Parameter(rng.standard_normal((n_a, n_a + n_x)) * 0.5)
        self.W_2 = Parameter(rng.standard_normal((n_a, n_a + n_x)) * 0.5)
        self.b = Parameter(rng.standard_normal(n_a) * 0.1)
        self.W_3 = Parameter(rng.standard_normal((n_a, n_x)) * 0.5)

    def forward(self, x, state=None):
        x, (a,) = self.check_step(x, state)
        ax = concat([a, x], axis=-1)
        # the last value depends on x<t> only: drawn work on it runs before the loop
        values = [ax @ self.W_1.T + self.b, ax @ self.W_2.T, a, x @ self.W_3.T]
        for op, i, j in self.program:
            if op in UNARY:
                values.append(UNARY[op](values[i % len(values)]))
            else:
                values.append(BINARY[op](values[i % len(values)], values[j % len(values)]))
        return (values[-1] + values[0]).tanh()  # always reaches the parameters


@given(
    program=st.lists(
        st.tuples(st.sampled_from([*UNARY, *BINARY]), st.integers(0, 20), st.integers(0, 20)),
        min_size=1,
        max_size=8,
    ),
    n_x=st.integers(1, 3),
    n_a=st.integers(1, 4),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_drawn_cells_compile_to_the_interpreted_step_and_pass_gradcheck(
    program, n_x, n_a, batch, seed
) -> None:
    cell = DrawnCell(n_x, n_a, program, seed).to(np.float64)
    x = np.random.default_rng(seed).standard_normal((batch, 3, n_x))
    assert explain(cell, x).startswith("compiled:")
    _assert_same(Recurrent(cell), x)
    use_compiled_steps(True)

    def loss(*params: Tensor) -> Tensor:
        outputs, _ = Recurrent(cell)(Tensor(x))
        return (outputs * outputs).sum()

    assert_grads_close(loss, *cell.parameters(), atol=1e-6, rtol=1e-4)


def test_integer_inputs_run_interpreted_and_say_so() -> None:
    cell = _cell("MGUCell")
    x = np.random.default_rng(7).random((2, 4, 3)) > 0.5  # a boolean one-hot-like input
    assert explain(cell, x.astype(np.int64)) == (
        "interpreted: x has dtype int64: only floating-point inputs are compiled"
    )
    with pytest.warns(RuntimeWarning, match="x has dtype bool"):
        compiled, _ = Recurrent(cell)(x)
    interpreted, _ = Recurrent(cell, compile=False)(x)
    np.testing.assert_array_equal(compiled.data, interpreted.data)
