"""The recurrent cells against independent NumPy transcriptions of the SPEC's equations.

Every cell variant: one step equals the NumPy equations written below (not the library's
code); gradients of every parameter, of x<t> and of the initial state, unrolled over
Hypothesis-drawn T and lengths, equal finite differences; identities between variants;
clear errors on bad input; reproducible, documented initialisation.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_seq
from tinygrad_seq import Tensor, concat
from tinygrad_seq.nn import GRUCell, LSTMCell, Recurrent, RNNCell
from tinygrad_seq.testing import assert_grads_close

# ---------------------------------------------------------------- NumPy transcriptions


def sigma(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def np_rnn(p: dict, x: np.ndarray, a_prev: np.ndarray, g: str) -> np.ndarray:
    """a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a)."""
    z = a_prev @ p["W_aa"].T + x @ p["W_ax"].T + p["b_a"]
    return np.tanh(z) if g == "tanh" else np.maximum(z, 0.0)


def np_gru(p: dict, x: np.ndarray, c_prev: np.ndarray, full: bool, reset_after: bool):
    """Γ_r, c̃<t>, Γ_u, c<t> of the SPEC, with the gate matrices split into hidden | input."""
    n_a = c_prev.shape[1]

    def affine(W: np.ndarray, h: np.ndarray, b: np.ndarray) -> np.ndarray:
        return h @ W[:, :n_a].T + x @ W[:, n_a:].T + b

    gamma_r = sigma(affine(p["W_r"], c_prev, p["b_r"])) if full else np.ones_like(c_prev)
    if reset_after:
        W_cc, W_cx = p["W_c"][:, :n_a], p["W_c"][:, n_a:]
        c_tilde = np.tanh(x @ W_cx.T + p["b_c"] + gamma_r * (c_prev @ W_cc.T + p["b_cc"]))
    else:
        c_tilde = np.tanh(affine(p["W_c"], gamma_r * c_prev, p["b_c"]))
    gamma_u = sigma(affine(p["W_u"], c_prev, p["b_u"]))
    return gamma_u * c_tilde + (1.0 - gamma_u) * c_prev


def np_lstm(p: dict, x: np.ndarray, state: tuple, peephole: bool) -> tuple:
    """c̃<t>, Γ_u, Γ_f, Γ_o, c<t>, a<t> of the SPEC (peepholes see c<t-1>)."""
    a_prev, c_prev = state
    ax = np.concatenate([a_prev, x], axis=1)

    def gate(g: str) -> np.ndarray:
        peep = p[f"p_{g}"] * c_prev if peephole else 0.0
        return sigma(ax @ p[f"W_{g}"].T + peep + p[f"b_{g}"])

    c_tilde = np.tanh(ax @ p["W_c"].T + p["b_c"])
    c = gate("u") * c_tilde + gate("f") * c_prev
    return gate("o") * np.tanh(c), c


# name -> (build(n_x, n_a), reference step, state parts)
VARIANTS: dict[str, tuple[Callable[[int, int], Any], Callable[..., Any], int]] = {
    "rnn-tanh": (lambda n_x, n_a: RNNCell(n_x, n_a), partial(np_rnn, g="tanh"), 1),
    "rnn-relu": (lambda n_x, n_a: RNNCell(n_x, n_a, "relu"), partial(np_rnn, g="relu"), 1),
    "gru-full": (
        lambda n_x, n_a: GRUCell(n_x, n_a),
        partial(np_gru, full=True, reset_after=False),
        1,
    ),
    "gru-simplified": (
        lambda n_x, n_a: GRUCell(n_x, n_a, full=False),
        partial(np_gru, full=False, reset_after=False),
        1,
    ),
    "gru-reset-after": (
        lambda n_x, n_a: GRUCell(n_x, n_a, reset_after=True),
        partial(np_gru, full=True, reset_after=True),
        1,
    ),
    "gru-simplified-reset-after": (
        lambda n_x, n_a: GRUCell(n_x, n_a, full=False, reset_after=True),
        partial(np_gru, full=False, reset_after=True),
        1,
    ),
    "lstm": (lambda n_x, n_a: LSTMCell(n_x, n_a), partial(np_lstm, peephole=False), 2),
    "lstm-peephole": (
        lambda n_x, n_a: LSTMCell(n_x, n_a, peephole=True),
        partial(np_lstm, peephole=True),
        2,
    ),
}


def random_cell(variant: str, n_x: int, n_a: int, rng: np.random.Generator) -> Any:
    """The variant's cell in float64 with every parameter drawn from N(0, 0.7²)."""
    cell = VARIANTS[variant][0](n_x, n_a).to(np.float64)
    for p in cell.parameters():
        p.data = 0.7 * rng.standard_normal(p.shape)
    return cell


def random_state(variant: str, batch: int, n_a: int, rng: np.random.Generator) -> list:
    return [rng.standard_normal((batch, n_a)) for _ in range(VARIANTS[variant][2])]


def pack(parts: list) -> Any:
    return parts[0] if len(parts) == 1 else tuple(parts)


sizes = st.fixed_dictionaries(
    {
        "n_x": st.integers(1, 3),
        "n_a": st.integers(1, 3),
        "batch": st.integers(1, 3),
        "seed": st.integers(0, 2**32 - 1),
    }
)


# ---------------------------------------------------------------- forward = the equations


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@given(size=sizes)
def test_one_step_equals_numpy_equations(variant: str, size: dict) -> None:
    rng = np.random.default_rng(size["seed"])
    cell = random_cell(variant, size["n_x"], size["n_a"], rng)
    x = rng.standard_normal((size["batch"], size["n_x"]))
    state = random_state(variant, size["batch"], size["n_a"], rng)
    params = {name: p.data for name, p in cell.named_parameters()}

    got = cell(x, pack([Tensor(s) for s in state]))
    want = VARIANTS[variant][1](params, x, pack(state))

    got_parts = [got] if isinstance(got, Tensor) else list(got)
    want_parts = [want] if isinstance(want, np.ndarray) else list(want)
    assert len(got_parts) == len(want_parts)
    for g, w in zip(got_parts, want_parts, strict=True):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g.data, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_float32_cell_stays_float32_and_close_to_float64(variant: str) -> None:
    rng = np.random.default_rng(3)
    cell64 = random_cell(variant, 3, 4, rng)
    cell32 = VARIANTS[variant][0](3, 4)
    cell32.load_state_dict(cell64.state_dict())
    x = rng.standard_normal((2, 3))
    out32 = cell32(x.astype(np.float32))
    out64 = cell64(x)
    for a32, a64 in zip(
        out32 if isinstance(out32, tuple) else (out32,),
        out64 if isinstance(out64, tuple) else (out64,),
        strict=True,
    ):
        assert a32.dtype == np.float32
        np.testing.assert_allclose(a32.data, a64.data, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- gradients (BPTT)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@given(size=sizes, steps=st.integers(1, 3), data=st.data())
def test_gradients_of_input_state_and_every_parameter(
    variant: str, size: dict, steps: int, data: st.DataObject
) -> None:
    """∂/∂x, ∂/∂(initial state), ∂/∂(each parameter) of a T-step unroll with lengths."""
    n_x, n_a, batch = min(size["n_x"], 2), size["n_a"], min(size["batch"], 2)
    lengths = data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    rng = np.random.default_rng(size["seed"])
    cell = random_cell(variant, n_x, n_a, rng)
    x = Tensor(rng.standard_normal((batch, steps, n_x)), requires_grad=True)
    state = [Tensor(s, requires_grad=True) for s in random_state(variant, batch, n_a, rng)]
    params = cell.parameters()
    k = len(state)

    def fn(x: Tensor, *rest: Tensor) -> Tensor:
        outputs, final = Recurrent(cell)(x, pack(list(rest[:k])), lengths=lengths)
        finals = [final] if isinstance(final, Tensor) else list(final)
        return concat([outputs.reshape(batch, -1), *finals], axis=1)

    assert_grads_close(fn, x, *state, *params, atol=1e-6, rtol=1e-4)


def test_relu_rnn_gradient_is_zero_where_inactive() -> None:
    cell = RNNCell(2, 3, "relu").to(np.float64)
    cell.b_a.data = np.array([-100.0, 0.0, 100.0])
    a = cell(np.ones((1, 2)), np.zeros((1, 3)))
    a.sum().backward()
    assert cell.b_a.grad[0] == 0.0 and cell.b_a.grad[2] == 1.0


# ---------------------------------------------------------------- identities between variants


@given(size=sizes, steps=st.integers(1, 3))
def test_peephole_lstm_with_zero_peepholes_equals_plain_lstm(size: dict, steps: int) -> None:
    rng = np.random.default_rng(size["seed"])
    peep = random_cell("lstm-peephole", size["n_x"], size["n_a"], rng)
    for p in (peep.p_u, peep.p_f, peep.p_o):
        p.data = np.zeros_like(p.data)
    plain = LSTMCell(size["n_x"], size["n_a"]).to(np.float64)
    plain.load_state_dict(peep.state_dict(), strict=False)
    x = rng.standard_normal((size["batch"], steps, size["n_x"]))
    state = tuple(Tensor(s) for s in random_state("lstm", size["batch"], size["n_a"], rng))
    out_p, (_, c_p) = Recurrent(peep)(x, state)
    out, (_, c) = Recurrent(plain)(x, state)
    np.testing.assert_array_equal(out_p.data, out.data)
    np.testing.assert_array_equal(c_p.data, c.data)


@pytest.mark.parametrize("reset_after", [False, True])
@given(size=sizes, steps=st.integers(1, 3))
def test_full_gru_with_reset_gate_forced_to_one_equals_simplified_gru(
    reset_after: bool, size: dict, steps: int
) -> None:
    """Γ_r ≡ 1 (b_r = 1e4 saturates σ to exactly 1.0 in float64) gives the simplified GRU."""
    rng = np.random.default_rng(size["seed"])
    n_x, n_a, batch = size["n_x"], size["n_a"], size["batch"]
    full = random_cell("gru-reset-after" if reset_after else "gru-full", n_x, n_a, rng)
    full.W_r.data = 0.01 * full.W_r.data
    full.b_r.data = np.full(n_a, 1e4)
    simple = GRUCell(n_x, n_a, full=False, reset_after=reset_after).to(np.float64)
    simple.load_state_dict(full.state_dict(), strict=False)
    assert {"W_r", "b_r"}.isdisjoint(simple.state_dict())
    x = rng.standard_normal((batch, steps, n_x))
    c0 = rng.standard_normal((batch, n_a))
    out_full, _ = Recurrent(full)(x, c0)
    out_simple, _ = Recurrent(simple)(x, c0)
    np.testing.assert_allclose(out_full.data, out_simple.data, rtol=1e-14, atol=1e-14)


@given(size=sizes)
def test_reset_after_with_zero_b_cc_and_unit_reset_gate_equals_course_gru(size: dict) -> None:
    """With Γ_r ≡ 1 and b_cc = 0 both placements of the reset gate compute the same c̃<t>."""
    rng = np.random.default_rng(size["seed"])
    after = random_cell("gru-simplified-reset-after", size["n_x"], size["n_a"], rng)
    after.b_cc.data = np.zeros(size["n_a"])
    before = GRUCell(size["n_x"], size["n_a"], full=False).to(np.float64)
    before.load_state_dict(after.state_dict(), strict=False)
    x = rng.standard_normal((size["batch"], size["n_x"]))
    c0 = rng.standard_normal((size["batch"], size["n_a"]))
    np.testing.assert_allclose(after(x, c0).data, before(x, c0).data, rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- protocol and parameters


def test_parameter_names_and_shapes_follow_the_spec() -> None:
    n_x, n_a = 3, 5
    gate, vec = (n_a, n_a + n_x), (n_a,)

    def shapes(cell: Any) -> dict:
        return {name: p.shape for name, p in cell.named_parameters()}

    assert shapes(RNNCell(n_x, n_a)) == {"W_aa": (n_a, n_a), "W_ax": (n_a, n_x), "b_a": vec}
    assert shapes(GRUCell(n_x, n_a)) == {
        **{k: gate for k in ("W_u", "W_r", "W_c")},
        **{k: vec for k in ("b_u", "b_r", "b_c")},
    }
    assert list(shapes(GRUCell(n_x, n_a, full=False))) == ["W_u", "W_c", "b_u", "b_c"]
    assert list(shapes(GRUCell(n_x, n_a, reset_after=True)))[-1] == "b_cc"
    assert shapes(LSTMCell(n_x, n_a)) == {
        **{k: gate for k in ("W_u", "W_f", "W_o", "W_c")},
        **{k: vec for k in ("b_u", "b_f", "b_o", "b_c")},
    }
    assert list(shapes(LSTMCell(n_x, n_a, peephole=True)))[-3:] == ["p_u", "p_f", "p_o"]
    for cell in (RNNCell(n_x, n_a), GRUCell(n_x, n_a), LSTMCell(n_x, n_a)):
        assert (cell.input_size, cell.hidden_size) == (n_x, n_a)
        assert all(p.dtype == np.float32 for p in cell.parameters())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_init_state_is_zeros_and_state_none_means_zeros(variant: str) -> None:
    cell = VARIANTS[variant][0](3, 4)
    state = cell.init_state(2)
    parts = [state] if isinstance(state, Tensor) else list(state)
    assert len(parts) == VARIANTS[variant][2]
    assert all(p.shape == (2, 4) and p.dtype == np.float32 and not p.data.any() for p in parts)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    for got, want in zip(np.atleast_1d(cell(x)), np.atleast_1d(cell(x, state)), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    cell.to(np.float64)
    parts = cell.init_state(1)
    assert all(p.dtype == np.float64 for p in ([parts] if isinstance(parts, Tensor) else parts))


def test_input_may_be_a_tensor_an_array_or_integers() -> None:
    cell = GRUCell(3, 2)
    x = np.array([[0, 1, 0]])
    a_int = cell(x)
    a_arr = cell(x.astype(np.float32))
    a_ten = cell(Tensor(x.astype(np.float32)))
    assert a_int.dtype == np.float32
    np.testing.assert_array_equal(a_int.data, a_arr.data)
    np.testing.assert_array_equal(a_ten.data, a_arr.data)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("variant", ["rnn-tanh", "gru-full", "lstm"])
def test_wrong_input_size_names_the_shapes(variant: str) -> None:
    cell = VARIANTS[variant][0](3, 4)
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(batch, 3\)"):
        cell(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 3, 3\)"):
        cell(np.zeros((2, 3, 3), np.float32))


def test_wrong_state_batch_or_size_names_the_shapes() -> None:
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"a<t-1> has shape \(5, 4\).*\(2, 4\)"):
        RNNCell(3, 4)(x, np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 7\).*\(2, 4\)"):
        GRUCell(3, 4)(x, np.zeros((2, 7), np.float32))
    z = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"c<t-1> has shape \(1, 4\)"):
        LSTMCell(3, 4)(x, (z, np.zeros((1, 4), np.float32)))
    with pytest.raises(TypeError, match="tuple of 2"):
        LSTMCell(3, 4)(x, z)
    with pytest.raises(TypeError, match="one Tensor"):
        GRUCell(3, 4)(x, (z, z))


def test_float_dtype_mixing_names_both_dtypes() -> None:
    cell = LSTMCell(3, 4)
    with pytest.raises(TypeError, match=r"float64.*float32"):
        cell(np.zeros((2, 3)))  # float64 input, float32 parameters
    z64 = np.zeros((2, 4))
    with pytest.raises(TypeError, match=r"float64.*float32"):
        cell(np.zeros((2, 3), np.float32), (z64, z64))
    with pytest.raises(TypeError, match=r"float64.*float32"):
        Recurrent(RNNCell(3, 4))(np.zeros((2, 5, 3)))


def test_unknown_nonlinearity_raises() -> None:
    with pytest.raises(ValueError, match="'sigmoid'"):
        RNNCell(3, 4, nonlinearity="sigmoid")


# ---------------------------------------------------------------- initialisation


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_seed_gives_identical_parameters(variant: str) -> None:
    build = VARIANTS[variant][0]
    tinygrad_seq.manual_seed(7)
    first = build(3, 5).state_dict()
    tinygrad_seq.manual_seed(7)
    second = build(3, 5).state_dict()
    third = build(3, 5).state_dict()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert any(not np.array_equal(first[n], third[n]) for n in first if n.startswith("W"))
    from_rng_a = RNNCell(3, 5, rng=np.random.default_rng(1)).state_dict()
    from_rng_b = RNNCell(3, 5, rng=np.random.default_rng(1)).state_dict()
    assert all(np.array_equal(from_rng_a[n], from_rng_b[n]) for n in from_rng_a)


@pytest.mark.parametrize("n_x, n_a", [(3, 5), (7, 2), (1, 1)])
def test_initialisation_is_as_documented(n_x: int, n_a: int) -> None:
    lstm = LSTMCell(n_x, n_a, peephole=True)
    gru = GRUCell(n_x, n_a, reset_after=True)
    rnn = RNNCell(n_x, n_a)
    bound = np.sqrt(6.0 / (n_x + n_a))
    for cell, weights in (
        (lstm, ("W_u", "W_f", "W_o", "W_c")),
        (gru, ("W_u", "W_r", "W_c")),
    ):
        for name in weights:
            W = getattr(cell, name).data
            np.testing.assert_allclose(W[:, :n_a] @ W[:, :n_a].T, np.eye(n_a), atol=1e-5)
            assert np.abs(W[:, n_a:]).max() <= bound
    np.testing.assert_allclose(rnn.W_aa.data @ rnn.W_aa.data.T, np.eye(n_a), atol=1e-5)
    assert np.abs(rnn.W_ax.data).max() <= bound
    np.testing.assert_array_equal(lstm.b_f.data, np.ones(n_a, np.float32))
    for cell, zeros in (
        (lstm, ("b_u", "b_o", "b_c", "p_u", "p_f", "p_o")),
        (gru, ("b_u", "b_r", "b_c", "b_cc")),
        (rnn, ("b_a",)),
    ):
        for name in zeros:
            assert not getattr(cell, name).data.any(), name
