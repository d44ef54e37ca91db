"""Our cells against PyTorch's through the weight converters (skipped without PyTorch).

Values and gradients (w.r.t. the inputs, the initial state and every weight) of RNNCell,
GRUCell(reset_after=True) and LSTMCell unrolled with `Recurrent` equal those of
`torch.nn.RNNCell`/`GRUCell`/`LSTMCell` loops and of `nn.LSTM`/`nn.GRU`, in float64.

Gradients are compared in PyTorch's layout. Our weights are a signed permutation of
PyTorch's, so a weight's gradient maps exactly like the weight (`to_torch_*`). Our biases
are sums of PyTorch's (b = b_ih + b_hh, GRU: b_r, b_u from both, b_c = b_in, b_cc = b_hn), so
∂L/∂b_ih and ∂L/∂b_hh are each the gradient of the bias they feed (chain rule, `torch_grads`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_seq import Tensor
from tinygrad_seq.nn import Bidirectional, GRUCell, LSTMCell, Recurrent, RNNCell, Stacked, convert

torch = pytest.importorskip("torch")

KINDS = {
    "rnn-tanh": (
        lambda n_x, n_a: torch.nn.RNNCell(n_x, n_a, nonlinearity="tanh"),
        lambda n_x, n_a: RNNCell(n_x, n_a, "tanh"),
        convert.from_torch_rnn_cell,
        convert.to_torch_rnn_cell,
    ),
    "rnn-relu": (
        lambda n_x, n_a: torch.nn.RNNCell(n_x, n_a, nonlinearity="relu"),
        lambda n_x, n_a: RNNCell(n_x, n_a, "relu"),
        convert.from_torch_rnn_cell,
        convert.to_torch_rnn_cell,
    ),
    "gru": (
        lambda n_x, n_a: torch.nn.GRUCell(n_x, n_a),
        lambda n_x, n_a: GRUCell(n_x, n_a, reset_after=True),
        convert.from_torch_gru_cell,
        convert.to_torch_gru_cell,
    ),
    "lstm": (
        lambda n_x, n_a: torch.nn.LSTMCell(n_x, n_a),
        lambda n_x, n_a: LSTMCell(n_x, n_a),
        convert.from_torch_lstm_cell,
        convert.to_torch_lstm_cell,
    ),
}


def numpy_state_dict(module: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def randomize_torch(module: Any, rng: np.random.Generator) -> None:
    """Every weight and both biases random (zero bias_hh would hide a bias mix-up)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(0.6 * rng.standard_normal(tuple(p.shape))))


def torch_grads(kind: str, ours: dict[str, np.ndarray], suffix: str = "") -> dict:
    """∂L/∂(PyTorch weights) from ∂L/∂(our weights), by the chain rule through the converter."""
    g = KINDS[kind][3](ours, suffix=suffix)
    if kind == "gru":
        n_a = ours["b_u"].shape[0]
        g[f"bias_hh{suffix}"] = np.concatenate([g[f"bias_ih{suffix}"][: 2 * n_a], ours["b_cc"]])
    else:
        g[f"bias_hh{suffix}"] = g[f"bias_ih{suffix}"].copy()
    return g


def close(a: Any, b: Any) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


sizes = st.fixed_dictionaries(
    {
        "n_x": st.integers(1, 4),
        "n_a": st.integers(1, 4),
        "batch": st.integers(1, 3),
        "steps": st.integers(1, 4),
        "seed": st.integers(0, 2**32 - 1),
    }
)


@pytest.mark.parametrize("kind", sorted(KINDS))
@given(size=sizes)
def test_cell_loop_matches_torch_values_and_gradients(kind: str, size: dict) -> None:
    make_torch, make_ours, from_torch, _ = KINDS[kind]
    rng = np.random.default_rng(size["seed"])
    n_x, n_a, batch, steps = size["n_x"], size["n_a"], size["batch"], size["steps"]
    torch_cell = make_torch(n_x, n_a).double()
    randomize_torch(torch_cell, rng)
    cell = make_ours(n_x, n_a).to(np.float64)
    cell.load_state_dict(from_torch(numpy_state_dict(torch_cell)))

    x_np = rng.standard_normal((batch, steps, n_x))
    state_np = [rng.standard_normal((batch, n_a)) for _ in range(2 if kind == "lstm" else 1)]
    v = rng.standard_normal((batch, steps, n_a))  # random upstream gradient

    # PyTorch: a loop over its cell
    x_t = torch.tensor(x_np, requires_grad=True)
    state_t = [torch.tensor(s, requires_grad=True) for s in state_np]
    state = state_t[0] if len(state_t) == 1 else tuple(state_t)
    outputs_t = []
    for t in range(steps):
        state = torch_cell(x_t[:, t], state)
        outputs_t.append(state if isinstance(state, torch.Tensor) else state[0])
    out_t = torch.stack(outputs_t, dim=1)
    (out_t * torch.from_numpy(v)).sum().backward()

    # ours: Recurrent over the converted cell
    x = Tensor(x_np, requires_grad=True)
    initial = [Tensor(s, requires_grad=True) for s in state_np]
    out, _ = Recurrent(cell)(x, initial[0] if len(initial) == 1 else tuple(initial))
    (out * v).sum().backward()

    close(out.data, out_t.detach().numpy())
    close(x.grad, x_t.grad.numpy())
    for ours_s, theirs_s in zip(initial, state_t, strict=True):
        close(ours_s.grad, theirs_s.grad.numpy())
    expected = torch_grads(kind, {n: p.grad for n, p in cell.named_parameters()})
    for name, p in torch_cell.named_parameters():
        close(expected[name], p.grad.numpy())


@given(size=sizes, layers=st.integers(1, 2))
def test_stacked_lstm_matches_torch_nn_lstm(size: dict, layers: int) -> None:
    rng = np.random.default_rng(size["seed"])
    n_x, n_a, batch, steps = size["n_x"], size["n_a"], size["batch"], size["steps"]
    lstm_t = torch.nn.LSTM(n_x, n_a, num_layers=layers, batch_first=True).double()
    randomize_torch(lstm_t, rng)
    sd = numpy_state_dict(lstm_t)
    cells = [LSTMCell(n_x if i == 0 else n_a, n_a).to(np.float64) for i in range(layers)]
    for i, cell in enumerate(cells):
        cell.load_state_dict(convert.from_torch_lstm_cell(sd, suffix=f"_l{i}"))
    assert convert.from_torch_lstm_cell(sd).keys() == cells[0].state_dict().keys()  # _l0 found

    x_np = rng.standard_normal((batch, steps, n_x))
    v = rng.standard_normal((batch, steps, n_a))
    x_t = torch.tensor(x_np, requires_grad=True)
    out_t, (h_n, c_n) = lstm_t(x_t)
    (out_t * torch.from_numpy(v)).sum().backward()

    x = Tensor(x_np, requires_grad=True)
    deep = Stacked(cells)
    out, finals = deep(x)
    (out * v).sum().backward()

    close(out.data, out_t.detach().numpy())
    for i, (a, c) in enumerate(finals):
        close(a.data, h_n[i].detach().numpy())
        close(c.data, c_n[i].detach().numpy())
    close(x.grad, x_t.grad.numpy())
    for i, cell in enumerate(cells):
        grads = {n: p.grad for n, p in cell.named_parameters()}
        expected = torch_grads("lstm", grads, suffix=f"_l{i}")
        for name, g in expected.items():
            close(g, dict(lstm_t.named_parameters())[name].grad.numpy())


@given(size=sizes, data=st.data())
def test_bidirectional_gru_with_lengths_matches_torch_packed_gru(
    size: dict, data: st.DataObject
) -> None:
    rng = np.random.default_rng(size["seed"])
    n_x, n_a, batch, steps = size["n_x"], size["n_a"], size["batch"], size["steps"]
    lengths = data.draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    gru_t = torch.nn.GRU(n_x, n_a, batch_first=True, bidirectional=True).double()
    randomize_torch(gru_t, rng)
    sd = numpy_state_dict(gru_t)
    fwd, bwd = GRUCell(n_x, n_a, reset_after=True), GRUCell(n_x, n_a, reset_after=True)
    fwd.to(np.float64).load_state_dict(convert.from_torch_gru_cell(sd, suffix="_l0"))
    bwd.to(np.float64).load_state_dict(convert.from_torch_gru_cell(sd, suffix="_l0_reverse"))

    x_np = rng.standard_normal((batch, steps, n_x))
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x_np), torch.tensor(lengths), batch_first=True, enforce_sorted=False
    )
    out_packed, h_n = gru_t(packed)
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(
        out_packed, batch_first=True, total_length=steps
    )

    out, (final_f, final_b) = Bidirectional(fwd, bwd)(x_np, lengths=lengths)
    close(out.data, out_t.detach().numpy())
    close(final_f.data, h_n[0].detach().numpy())
    close(final_b.data, h_n[1].detach().numpy())


# ---------------------------------------------------------------- converters


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_ours_to_torch_and_back_is_the_identity(kind: str) -> None:
    _, make_ours, from_torch, to_torch = KINDS[kind]
    cell = make_ours(3, 5)
    rng = np.random.default_rng(0)
    for p in cell.parameters():
        p.data = rng.standard_normal(p.shape).astype(np.float32)
    ours = cell.state_dict()
    back = from_torch(to_torch(ours))
    assert back.keys() == ours.keys()
    for name, value in ours.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == value.dtype
    with_suffix = to_torch(ours, suffix="_l1")
    assert sorted(with_suffix) == ["bias_hh_l1", "bias_ih_l1", "weight_hh_l1", "weight_ih_l1"]
    torch_cell = KINDS[kind][0](3, 5)
    torch_cell.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch(ours).items()})


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_torch_to_ours_and_back_keeps_weights_and_bias_sums(kind: str) -> None:
    make_torch, _, from_torch, to_torch = KINDS[kind]
    torch_cell = make_torch(2, 3).double()
    randomize_torch(torch_cell, np.random.default_rng(1))
    sd = numpy_state_dict(torch_cell)
    again = to_torch(from_torch(sd))
    for name in ("weight_ih", "weight_hh"):
        np.testing.assert_array_equal(again[name], sd[name])
    if kind == "gru":  # b_hn stays apart (it sits inside r * (…)); the others merge
        np.testing.assert_allclose(again["bias_hh"][6:], sd["bias_hh"][6:])
        np.testing.assert_allclose(again["bias_ih"][:6], sd["bias_ih"][:6] + sd["bias_hh"][:6])
    else:
        np.testing.assert_allclose(again["bias_ih"], sd["bias_ih"] + sd["bias_hh"])
        assert not again["bias_hh"].any()


def test_converters_reject_mismatched_layouts() -> None:
    sd = numpy_state_dict(torch.nn.GRUCell(2, 3))
    with pytest.raises(ValueError, match=r"weight_hh has shape \(9, 3\)"):
        convert.from_torch_lstm_cell(sd)
    with pytest.raises(KeyError, match="weight_ih_l0"):
        convert.from_torch_rnn_cell({"weight": np.zeros(3)})
    with pytest.raises(ValueError, match="b_cc"):
        convert.to_torch_gru_cell(GRUCell(2, 3).state_dict())
    with pytest.raises(ValueError, match="peephole"):
        convert.to_torch_lstm_cell(LSTMCell(2, 3, peephole=True).state_dict())
    no_bias = numpy_state_dict(torch.nn.LSTMCell(2, 3, bias=False))
    assert not convert.from_torch_lstm_cell(no_bias)["b_f"].any()
