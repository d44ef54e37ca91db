"""Jacobians through time: `state_jacobians` against finite differences and the chain rule,
and the bound of Pascanu, Mikolov and Bengio (2013) as a property of drawn weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_seq import Tensor, no_grad
from tinygrad_seq.cli import main
from tinygrad_seq.nn import GRUCell, LSTMCell, Recurrent, RNNCell
from tinygrad_seq.through_time import pascanu_bound, spectrum_table, state_jacobians

CELLS = {
    "rnn": lambda: RNNCell(2, 3),
    "gru": lambda: GRUCell(2, 3),
    "gru-simplified": lambda: GRUCell(2, 3, full=False),
    "lstm-peephole": lambda: LSTMCell(2, 3, peephole=True),
}


def _flat(state: Any) -> np.ndarray:
    parts = [state] if isinstance(state, Tensor) else list(state)
    return np.concatenate([p.data for p in parts], axis=1)


def _unflat(flat: np.ndarray, like: Any) -> Any:
    if isinstance(like, Tensor):
        return Tensor(flat)
    n = like[0].shape[1]
    return tuple(Tensor(flat[:, i * n : (i + 1) * n]) for i in range(len(like)))


def _finite_difference_jacobian(cell, x, t, k, eps=1e-6):
    """∂s<t>/∂s<k> per example by central differences: perturb s<k>, run steps k+1..t."""
    with no_grad():
        state = cell.init_state(x.shape[0])
        for step in range(k):
            state = cell(Tensor(x[:, step]), state)
        base = _flat(state)

        def run_from(flat):
            s = _unflat(flat, state)
            for step in range(k, t):
                s = cell(Tensor(x[:, step]), s)
            return _flat(s)

        columns = []
        for j in range(base.shape[1]):
            e = np.zeros_like(base)
            e[:, j] = eps
            columns.append((run_from(base + e) - run_from(base - e)) / (2 * eps))
    return np.stack(columns, axis=-1)  # (B, n_s, n_s): rows s<t>, columns s<k>


@pytest.mark.parametrize("kind", CELLS)
def test_state_jacobians_equal_finite_differences(kind: str) -> None:
    cell = CELLS[kind]().to(np.float64)
    x = np.random.default_rng(0).standard_normal((2, 5, 2))
    J = state_jacobians(cell, x, t=4)
    n_s = 3 * cell.state_parts
    assert J.jacobians.shape == (4, 2, n_s, n_s)
    for k in range(4):
        np.testing.assert_allclose(
            J.jacobians[k], _finite_difference_jacobian(cell, x, 4, k), rtol=1e-6, atol=1e-9
        )
    expected = np.linalg.svd(J.jacobians, compute_uv=False)
    np.testing.assert_allclose(J.singular_values, expected)
    np.testing.assert_allclose(J.at_distance(1), J.singular_values[3])


def test_jacobians_compose_by_the_chain_rule_and_honour_reverse() -> None:
    """∂s<t>/∂s<k> = ∂s<t>/∂s<k+1> · ∂s<k+1>/∂s<k>; a reversed layer reads x from the end."""
    cell = LSTMCell(2, 3).to(np.float64)
    x = np.random.default_rng(1).standard_normal((1, 6, 2))
    full = state_jacobians(cell, x, t=6).jacobians
    one_step = state_jacobians(cell, x, t=3).jacobians[2]  # ∂s<3>/∂s<2>
    np.testing.assert_allclose(full[2][0], full[3][0] @ one_step[0], rtol=1e-10, atol=1e-12)
    backwards = state_jacobians(Recurrent(cell, reverse=True), x).jacobians
    np.testing.assert_allclose(backwards, state_jacobians(cell, x[:, ::-1]).jacobians)


def test_bad_arguments_name_what_is_wrong() -> None:
    cell = RNNCell(2, 3)
    with pytest.raises(ValueError, match=r"t must be a step in 1\.\.4, got 5"):
        state_jacobians(cell, np.zeros((1, 4, 2), np.float32), t=5)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, n_x\), got \(4, 2\)"):
        state_jacobians(cell, np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match="vanilla RNN"):
        pascanu_bound(LSTMCell(2, 3), 1)


@given(
    W=hnp.arrays(np.float64, (3, 3), elements=st.floats(-1.5, 1.5)),
    x=hnp.arrays(np.float64, (2, 6, 2), elements=st.floats(-3, 3)),
    relu=st.booleans(),
)
def test_pascanu_bound_holds_for_drawn_weights_and_inputs(W, x, relu) -> None:
    """‖∂a<t>/∂a<k>‖₂ ≤ σ_max(W_aa)^(t−k) for a tanh or ReLU RNN, whatever W_aa and x."""
    cell = RNNCell(2, 3, nonlinearity="relu" if relu else "tanh").to(np.float64)
    cell.W_aa.data = W
    J = state_jacobians(cell, x)
    distance = 6 - np.arange(6)  # index k ↦ t − k
    bound = pascanu_bound(cell, distance)[:, None]
    assert np.all(J.largest <= bound * (1 + 1e-9) + 1e-12), (J.largest, bound)


def test_above_one_the_jacobian_grows_near_the_linear_regime() -> None:
    """σ_max(W_aa) = 1.5 with a<t> near 0 (tanh′ ≈ 1): the bound is nearly reached, so
    gradients grow like 1.5^(t−k) — the exploding side of the same bound."""
    cell = RNNCell(1, 2).to(np.float64)
    cell.W_aa.data = 1.5 * np.eye(2)
    cell.W_ax.data[:] = 0.0
    J = state_jacobians(cell, np.zeros((1, 5, 1)))  # a<t> = 0 exactly: J = W_aa^(t−k)
    np.testing.assert_allclose(J.largest[:, 0], 1.5 ** (5 - np.arange(5)))


def test_spectrum_table_and_cli_print_the_bound(capsys) -> None:
    [row] = spectrum_table(["rnn"], scales=[0.5], steps=10, hidden=4, batch=2)
    assert row.norms[0] == 1.0 and np.all(row.norms <= 0.5 ** np.arange(10) + 1e-12)
    assert row.norms[3] > 0.01 * 0.5**3  # a real decay, not zeros
    code = main(["vanishing", "--cell", "rnn", "--steps", "10", "--hidden", "4", "--spectrum"])
    out = capsys.readouterr().out
    assert code == 0
    assert "σ_max(∂s<T>/∂s<T-k>)" in out and "Pascanu" in out
    assert main(["vanishing", "--cell", "rnn", "--steps", "10", "--hidden", "4"]) == 0
    assert "σ_max" not in capsys.readouterr().out
