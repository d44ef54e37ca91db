"""Gradients through time: per-step terms of ∂L/∂W and ∂L/∂a<t>, checked three ways.

1. The per-step terms sum to the gradient the engine computes through `Recurrent`.
2. ∂L/∂a<t> (and ∂L/∂c<t>) equal central finite differences of L in a perturbation of the
   state at step t.
3. For the RNN, step t's terms equal the textbook formulas δ<t>ᵀ a<t-1>, δ<t>ᵀ x<t>, Σ δ<t>
   with δ<t> = ∂L/∂a<t> ⊙ (1 − a<t>²).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tinygrad_seq import Tensor, no_grad
from tinygrad_seq.nn import GRUCell, Linear, LSTMCell, Recurrent, RNNCell
from tinygrad_seq.through_time import GradientsThroughTime, gradients_through_time

B, T, N_X, N_A = 2, 5, 3, 4

CELLS: dict[str, Callable[[np.random.Generator], object]] = {
    "rnn tanh": lambda r: RNNCell(N_X, N_A, rng=r),
    "rnn relu": lambda r: RNNCell(N_X, N_A, "relu", rng=r),
    "gru": lambda r: GRUCell(N_X, N_A, rng=r),
    "gru simplified": lambda r: GRUCell(N_X, N_A, full=False, rng=r),
    "gru reset_after": lambda r: GRUCell(N_X, N_A, reset_after=True, rng=r),
    "lstm": lambda r: LSTMCell(N_X, N_A, rng=r),
    "lstm peephole": lambda r: LSTMCell(N_X, N_A, peephole=True, rng=r),
}


def setup(kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    cell = CELLS[kind](rng).to(np.float64)
    for p in cell.parameters():  # non-zero biases and peepholes: every path carries gradient
        p.data = 0.5 * rng.standard_normal(p.shape)
    x = rng.standard_normal((B, T, N_X))
    weights = Tensor(rng.standard_normal((B, T, N_A)))  # a random upstream, not ones

    def loss(outputs: Tensor) -> Tensor:
        return (outputs * weights).sum() + (outputs[:, -1] * outputs[:, -1]).sum()

    return cell, x, loss


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_per_step_contributions_sum_to_the_gradient(kind, reverse):
    cell, x, loss = setup(kind)
    layer = Recurrent(cell, reverse=reverse)
    g = gradients_through_time(layer, x, loss)
    assert all(p.grad is None for p in cell.parameters())  # the cell's own grads untouched
    outputs, _ = layer(x)
    value = loss(outputs)
    value.backward()
    assert g.loss == pytest.approx(float(value.data), rel=1e-12)
    assert set(g.contributions) == {name for name, _ in cell.named_parameters()}
    for name, p in cell.named_parameters():
        terms = g.contributions[name]
        assert terms.shape == (T, *p.shape)
        np.testing.assert_allclose(terms.sum(axis=0), p.grad, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g.grads[name], p.grad, rtol=1e-10, atol=1e-12)
        # every step adds a term (but W_aa's at the first step, which acts on a<0> = 0)
        assert np.count_nonzero(np.linalg.norm(terms.reshape(T, -1), axis=1)) >= T - 1
        np.testing.assert_allclose(
            g.contribution_norms(name), np.linalg.norm(terms.reshape(T, -1), axis=1)
        )


def run_with_perturbation(cell, x, loss, t: int, part: int, delta: np.ndarray) -> float:
    """L with `delta` added to part `part` of the state after step t (a<t> is the last
    thing a step makes, so adding to it afterwards is adding to it where it is made)."""
    with no_grad():
        state = cell.init_state(B)
        outputs = []
        for s in range(T):
            state = cell(x[:, s], state)
            if s == t:
                parts = [state] if isinstance(state, Tensor) else list(state)
                parts[part] = Tensor(parts[part].data + delta)
                state = parts[0] if isinstance(state, Tensor) else tuple(parts)
            outputs.append(state if isinstance(state, Tensor) else state[0])
        return float(loss(Tensor(np.stack([o.data for o in outputs], axis=1))).data)


def finite_differences(cell, x, loss, t: int, part: int, eps: float = 1e-6) -> np.ndarray:
    grad = np.zeros((B, N_A))
    for i in np.ndindex(B, N_A):
        delta = np.zeros((B, N_A))
        delta[i] = eps
        up = run_with_perturbation(cell, x, loss, t, part, delta)
        down = run_with_perturbation(cell, x, loss, t, part, -delta)
        grad[i] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("kind", ["rnn tanh", "gru", "lstm"])
def test_dL_da_matches_finite_differences(kind):
    cell, x, loss = setup(kind, seed=1)
    g = gradients_through_time(cell, x, loss)
    assert g.dL_da.shape == (T, B, N_A)
    for t in range(T):
        numeric = finite_differences(cell, x, loss, t, part=0)
        np.testing.assert_allclose(g.dL_da[t], numeric, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g.da_norms, np.linalg.norm(g.dL_da.reshape(T, -1), axis=1))


def lstm_loss_with_c_perturbed(cell, x, loss, t: int, delta: np.ndarray) -> float:
    """The SPEC's peephole LSTM in NumPy, with `delta` added to c<t> where it is made, so
    a<t> = Γ_o * tanh(c<t>) sees it too (c<t> feeds a<t> and step t+1)."""
    p = {name: q.data for name, q in cell.named_parameters()}
    sigma = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    a, c = np.zeros((B, N_A)), np.zeros((B, N_A))
    outputs = []
    for s in range(T):
        ax = np.concatenate([a, x[:, s]], axis=1)
        c_tilde = np.tanh(ax @ p["W_c"].T + p["b_c"])
        gamma_u = sigma(ax @ p["W_u"].T + p["p_u"] * c + p["b_u"])
        gamma_f = sigma(ax @ p["W_f"].T + p["p_f"] * c + p["b_f"])
        gamma_o = sigma(ax @ p["W_o"].T + p["p_o"] * c + p["b_o"])
        c = gamma_u * c_tilde + gamma_f * c + (delta if s == t else 0.0)
        a = gamma_o * np.tanh(c)
        outputs.append(a)
    return float(loss(Tensor(np.stack(outputs, axis=1))).data)


def test_dL_dc_matches_finite_differences_for_lstm():
    cell, x, loss = setup("lstm peephole", seed=2)
    g = gradients_through_time(cell, x, loss)
    assert g.dL_dc is not None and g.dL_dc.shape == (T, B, N_A)
    eps = 1e-6
    for t in range(T):
        numeric = np.zeros((B, N_A))
        for i in np.ndindex(B, N_A):
            delta = np.zeros((B, N_A))
            delta[i] = eps
            up = lstm_loss_with_c_perturbed(cell, x, loss, t, delta)
            down = lstm_loss_with_c_perturbed(cell, x, loss, t, -delta)
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g.dL_dc[t], numeric, rtol=1e-5, atol=1e-7)


def test_cells_without_memory_have_no_dL_dc():
    cell, x, loss = setup("gru")
    g = gradients_through_time(cell, x, loss)
    assert g.dL_dc is None and g.dc_norms is None


def test_rnn_step_terms_are_the_textbook_formulas():
    cell, x, loss = setup("rnn tanh", seed=3)
    g = gradients_through_time(cell, x, loss)
    a_prev = np.zeros((B, N_A))
    for t in range(T):
        a = np.tanh(a_prev @ cell.W_aa.data.T + x[:, t] @ cell.W_ax.data.T + cell.b_a.data)
        delta = g.dL_da[t] * (1 - a**2)  # ∂L/∂z<t>
        np.testing.assert_allclose(g.contributions["W_aa"][t], delta.T @ a_prev, atol=1e-12)
        np.testing.assert_allclose(g.contributions["W_ax"][t], delta.T @ x[:, t], atol=1e-12)
        np.testing.assert_allclose(g.contributions["b_a"][t], delta.sum(axis=0), atol=1e-12)
        a_prev = a


def test_a_loss_at_the_last_step_only_gives_nothing_after_it():
    cell, x, _ = setup("rnn tanh")
    g = gradients_through_time(cell, x, lambda outputs: outputs[:, 2].sum())
    assert np.all(g.dL_da[3:] == 0) and np.all(g.dL_da[:3] != 0)
    assert np.all(g.contributions["W_aa"][3:] == 0)


def test_a_readout_in_the_loss_gets_its_gradient_as_usual():
    cell, x, _ = setup("lstm")
    readout = Linear(N_A, 2).to(np.float64)
    g = gradients_through_time(cell, x, lambda outputs: readout(outputs[:, -1]).sum())
    assert readout.weight.grad is not None and readout.weight.grad.shape == (2, N_A)
    np.testing.assert_allclose(g.dL_da[-1], np.tile(readout.weight.data.sum(axis=0), (B, 1)))


def test_parameters_are_restored_even_when_the_loss_fails():
    cell, x, _ = setup("gru")
    before = {name: p for name, p in cell.named_parameters()}

    def broken(outputs):
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError):
        gradients_through_time(cell, x, broken)
    assert {name: p for name, p in cell.named_parameters()} == before
    with pytest.raises(ValueError, match="single-element"):
        gradients_through_time(cell, x, lambda outputs: outputs)
    assert all(getattr(cell, name) is p for name, p in before.items())


def test_a_cell_that_fails_mid_sequence_is_restored():
    cell, x, loss = setup("rnn tanh")
    W_aa = cell.W_aa
    with pytest.raises(ValueError, match="x<t> has shape"):
        gradients_through_time(cell, x[:, :, :2], loss)
    assert cell.W_aa is W_aa


def test_bad_input_shape_is_a_clear_error():
    cell, x, loss = setup("rnn tanh")
    with pytest.raises(ValueError, match=r"\(B, T, n_x\)"):
        gradients_through_time(cell, x[0], loss)


def test_a_plain_object_following_the_cell_protocol_works():
    """A user's cell need not be a Module: parameters are found among its attributes."""

    class LeakyCell:
        input_size, hidden_size = N_X, N_A

        def __init__(self):
            rng = np.random.default_rng(0)
            self.W = Tensor(rng.standard_normal((N_A, N_X)), requires_grad=True)
            self.leak = 0.9

        def init_state(self, batch_size):
            return Tensor(np.zeros((batch_size, N_A)))

        def __call__(self, x, state=None):
            return self.leak * state + (x @ self.W.T).tanh()

    cell = LeakyCell()
    x = np.random.default_rng(1).standard_normal((B, T, N_X))
    g = gradients_through_time(cell, x, lambda outputs: outputs[:, -1].sum())
    assert isinstance(g, GradientsThroughTime)
    # ∂L/∂a<t> = leak^(T-t) for a loss Σ a<T>
    np.testing.assert_allclose(g.da_norms, np.sqrt(B * N_A) * 0.9 ** np.arange(T - 1, -1, -1))
    assert g.contributions["W"].shape == (T, N_A, N_X)
