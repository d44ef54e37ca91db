"""The step compiler's guards, one case each that once made a compiled step silently differ
from `Recurrent(cell, compile=False)`: a (B, 1) block of a stacked product, a changed plain
attribute, a frozen or unfrozen parameter, a mask computed from the data, a product read
whole and cut. The rule: compiled == interpreted (values and every gradient, float64 to
1e-10), or the step runs interpreted with a message."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from tinygrad_seq import Tensor, concat, where
from tinygrad_seq.autograd import grad
from tinygrad_seq.compiler import use_compiled_steps
from tinygrad_seq.nn import Cell, Parameter, Recurrent


@pytest.fixture(autouse=True)
def _compiled_on():
    use_compiled_steps(True)
    yield
    use_compiled_steps(True)


def _run(cell: Any, x: np.ndarray, compiled: bool, state: np.ndarray | None = None):
    """Outputs, final state and the gradients (parameters, x, initial state) of one loss."""
    use_compiled_steps(compiled)
    try:
        params = cell.parameters()
        for p in params:
            p.grad = None
        xt = Tensor(x, requires_grad=True)
        s0 = None if state is None else Tensor(state.copy(), requires_grad=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outputs, final = Recurrent(cell)(xt, s0)
        loss = (outputs * outputs).sum() + final.tanh().sum()
        loss.backward()
        grads = [np.zeros(p.shape) if p.grad is None else p.grad.copy() for p in params]
        grads.append(xt.grad.copy())
        if s0 is not None:
            grads.append(s0.grad.copy())
        return [outputs.data.copy(), final.data.copy()], grads, [str(w.message) for w in caught]
    finally:
        use_compiled_steps(True)


def _assert_compiled_equals_interpreted(cell: Any, x: np.ndarray, state: Any = None) -> None:
    got, got_grads, warned = _run(cell, x, True, state)
    want, want_grads, _ = _run(cell, x, False, state)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=f"values; {warned}")
    for k, (a, b) in enumerate(zip(got_grads, want_grads, strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=f"grad {k}; {warned}")


class ScalarGateCell(Cell):
    """h = tanh(a W + x U);  a<t> = h + h * (a v), with v (n_a, 1): a per-example scalar gate.
    `a @ v` and `a @ W` share their left operand, so they are stacked into one GEMM whose
    Split has a (B, 1) block that the element-wise region broadcasts."""

    def __init__(self, n_x: int, n_a: int) -> None:
        self.input_size, self.hidden_size = n_x, n_a
        rng = np.random.default_rng(1)
        self.v = Parameter(rng.standard_normal((n_a, 1)) * 0.5)
        self.W = Parameter(rng.standard_normal((n_a, n_a)) * 0.5)
        self.U = Parameter(rng.standard_normal((n_x, n_a)) * 0.5)

    def forward(self, x: Any, state: Any = None) -> Tensor:
        x, (a,) = self.check_step(x, state)
        g = a @ self.v  # (B, 1), first: its block sits at column offset 0 (no out-of-bounds)
        h = (a @ self.W + x @ self.U).tanh()
        return h + h * g


def test_a_broadcast_column_block_of_a_stacked_product_is_read_as_a_column() -> None:
    """Expected: compiled == interpreted. The region absorbs the Split of the stacked GEMM
    [a W | a v] and reads the (B, 1) block `a v` as `i0[b, j + offset]` for every column j
    instead of broadcasting `i0[b, offset]` (the values of `a W`'s columns are used as the
    gate; with a nonzero offset it reads and writes past the row, past the array on the last
    row). The first-sequence guard misses it when the plan is built on a call with T = 1 and
    the zero state (a first generation step, say): every later call is silently wrong."""
    cell = ScalarGateCell(3, 4)
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    Recurrent(cell)(Tensor(x[:, :1]))  # the plan is built (and trusted) here
    _assert_compiled_equals_interpreted(cell, x)


class TemperatureCell(Cell):
    """a<t> = tanh([a<t-1>, x<t>] W / temperature), the temperature a plain attribute."""

    def __init__(self, n_x: int, n_a: int) -> None:
        self.input_size, self.hidden_size = n_x, n_a
        rng = np.random.default_rng(2)
        self.W = Parameter(rng.standard_normal((n_a + n_x, n_a)) * 0.5)
        self.b = Parameter(rng.standard_normal(n_a) * 0.5)
        self.temperature = 1.0

    def forward(self, x: Any, state: Any = None) -> Tensor:
        x, (a,) = self.check_step(x, state)
        return ((concat([a, x], axis=-1) @ self.W + self.b) / self.temperature).tanh()


def test_a_changed_python_attribute_is_not_baked_into_the_cached_plan() -> None:
    """Expected: after `cell.temperature = 3.0` the compiled layer uses 3.0 (or replans, or
    runs interpreted). The traced 1.0 is a plain value in the plan's nodes and `_key` only
    looks at Tensors (ids, shapes, dtypes) and `training`: the old plan is reused silently."""
    cell = TemperatureCell(3, 4)
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    Recurrent(cell)(Tensor(x))
    cell.temperature = 3.0  # annealing, a hyperparameter sweep, ...
    _assert_compiled_equals_interpreted(cell, x)


def test_a_frozen_parameter_loaded_from_a_checkpoint_is_not_a_stale_constant() -> None:
    """Expected: a frozen (requires_grad=False) parameter whose value is loaded with
    `load_state_dict` is used with its new value. Frozen, it is traced as a constant: its
    array is copied into `plan.consts`; `load_state_dict` assigns `p.data`, which leaves
    the cache key (id, dtype, shape) unchanged, so the old values keep being used."""
    cell = TemperatureCell(3, 4)
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    cell.b.requires_grad = False  # fine-tuning with a frozen bias
    Recurrent(cell)(Tensor(x))
    state = cell.state_dict()
    state["b"] = state["b"] + 1.0
    cell.load_state_dict(state)
    _assert_compiled_equals_interpreted(cell, x)


def test_a_parameter_unfrozen_after_the_first_call_gets_its_gradient() -> None:
    """Expected: after `p.requires_grad = True` the parameter gets a gradient, as with
    compile=False. The plan traced it as a constant while it was frozen and `_key` does not
    include `requires_grad`: its gradient stays None, silently (an optimiser skips it)."""
    cell = TemperatureCell(3, 4)
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    cell.b.requires_grad = False
    Recurrent(cell)(Tensor(x))
    cell.b.requires_grad = True
    _assert_compiled_equals_interpreted(cell, x)


class FlagCell(TemperatureCell):
    """Updates only where the first input feature is positive (a 0/1 'valid' flag)."""

    def forward(self, x: Any, state: Any = None) -> Tensor:
        x, (a,) = self.check_step(x, state)
        new = (concat([a, x], axis=-1) @ self.W + self.b).tanh()
        return where(x[:, :1] > 0, new, a)


def test_a_mask_computed_from_x_is_not_reused_for_other_data() -> None:
    """The mask `x[:, :1] > 0` is a constant of the trace, the same at every step of a first
    batch whose flags are all set: a boolean constant (or one with the batch's rows) makes
    the step run interpreted, so a later batch is not computed with the old mask."""
    from tinygrad_seq.compiler import explain

    cell = FlagCell(3, 4)
    rng = np.random.default_rng(0)
    first = np.abs(rng.standard_normal((2, 4, 3)))  # all flags set
    assert "looks computed from the data outside the graph" in explain(cell, first)
    with pytest.warns(RuntimeWarning, match="looks computed from the data"):
        Recurrent(cell)(Tensor(first))
    _assert_compiled_equals_interpreted(cell, rng.standard_normal((2, 4, 3)))


# ---------------------------------------------------------------- verified to work


class ChunkCell(TemperatureCell):
    """Two gates cut from one product with `chunk`, a softmax and a column reduction."""

    def __init__(self, n_x: int, n_a: int) -> None:
        super().__init__(n_x, n_a)
        self.W = Parameter(np.random.default_rng(3).standard_normal((n_a + n_x, 2 * n_a)) * 0.5)

    def forward(self, x: Any, state: Any = None) -> Tensor:
        x, (a,) = self.check_step(x, state)
        p, q = (concat([a, x], axis=-1) @ self.W).chunk(2)
        return p.tanh() * q.sigmoid() + a.softmax() * a.sum(axis=-1, keepdims=True) * 0.1


def test_second_order_through_absorbed_splits_and_softmax_matches_interpreted() -> None:
    """create_graph=True through a compiled step (its `vjp` replays the plan before regions
    were fused, absorbed Splits and deferred weight gradients included) gives the interpreted
    first and second derivatives."""
    x = np.random.default_rng(4).standard_normal((2, 3, 3))
    s0 = np.random.default_rng(5).standard_normal((2, 4))

    def derivatives(compiled: bool) -> list[np.ndarray]:
        use_compiled_steps(compiled)
        cell = ChunkCell(3, 4)
        xt, st = Tensor(x, requires_grad=True), Tensor(s0, requires_grad=True)
        outputs, _ = Recurrent(cell)(xt, st)
        inputs = [cell.W, xt, st]  # (b is unused by this cell)
        first = grad((outputs * outputs).sum(), inputs, create_graph=True)
        second = grad(sum((g * g).sum() for g in first), inputs)
        return [g.data for g in (*first, *second)]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled, not a fallback
        got = derivatives(True)
    for a, b in zip(got, derivatives(False), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


class WholeChunkCell(TemperatureCell):
    """a<t> = tanh(L * L.chunk(1)[0] + a/2), L = [a, x] W: one region reads the product L
    both directly and through the (absorbed) Split, at the same columns."""

    def forward(self, x: Any, state: Any = None) -> Tensor:
        x, (a,) = self.check_step(x, state)
        product = concat([a, x], axis=-1) @ self.W
        return (product.chunk(1)[0] * product + a * 0.5).tanh()


def test_two_loads_of_one_input_at_the_same_columns_add_their_gradients() -> None:
    """Expected: compiled gradients == interpreted ones. With the (uncommitted) one-buffer
    backward in codegen.py, each load's gradient is *stored* at `D[b, start + column]`, so
    two loads of one slot at the same columns (the product and its absorbed one-part Split)
    overwrite each other instead of adding. Values are right, so the value-only
    first-sequence guard cannot see it: the gradients are silently wrong."""
    cell = WholeChunkCell(3, 4)
    rng = np.random.default_rng(0)
    _assert_compiled_equals_interpreted(
        cell, rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4))
    )
