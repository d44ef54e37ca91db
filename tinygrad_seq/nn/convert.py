"""Convert PyTorch-layout recurrent weights to our cells' state dicts, and back.

Inputs and outputs are plain NumPy arrays keyed as in PyTorch's `state_dict`: `weight_ih`,
`weight_hh`, `bias_ih`, `bias_hh` for `torch.nn.RNNCell`/`GRUCell`/`LSTMCell`, or the same
names with a suffix (`weight_ih_l0`, `weight_hh_l1_reverse`, …) for `torch.nn.RNN`/`GRU`/
`LSTM`. With `suffix=None` the plain names are used if present, else `_l0`. A missing bias
(PyTorch's `bias=False`) counts as zero.

PyTorch stacks the gates row-wise in `weight_ih (G·n_a, n_x)` and `weight_hh (G·n_a, n_a)`
(RNN G = 1; GRU order r, z, n; LSTM order i, f, g, o) and has two biases, `b_ih + b_hh`.
Our gate matrices act on `[a<t-1>, x<t>]`, so each is `[W_h*, W_i*]` (columns joined, hidden
columns first),
with one bias per gate. Blocks below are PyTorch's row blocks (`W_ir = weight_ih[0:n_a]`,
`W_hz = weight_hh[n_a:2n_a]`, …):

| ours (to)             | from PyTorch        | back to PyTorch                                 |
|-----------------------|---------------------|-------------------------------------------------|
| RNN `W_aa`            | `weight_hh`         | `weight_hh = W_aa`                              |
| RNN `W_ax`            | `weight_ih`         | `weight_ih = W_ax`                              |
| RNN `b_a`             | `bias_ih + bias_hh` | `bias_ih = b_a`, `bias_hh = 0`                  |
| LSTM `W_u` (Γ_u = i)  | `[W_hi, W_ii]`      | rows 0:n_a of `weight_hh`, `weight_ih`          |
| LSTM `W_f` (Γ_f = f)  | `[W_hf, W_if]`      | rows n_a:2n_a                                   |
| LSTM `W_c` (c̃ = g)    | `[W_hg, W_ig]`      | rows 2n_a:3n_a                                  |
| LSTM `W_o` (Γ_o = o)  | `[W_ho, W_io]`      | rows 3n_a:4n_a                                  |
| LSTM `b_*`            | `b_i* + b_h*`       | in `bias_ih`, `bias_hh = 0`                     |
| GRU `W_r` (Γ_r = r)   | `[W_hr, W_ir]`      | rows 0:n_a                                      |
| GRU `W_u` (Γ_u = 1−z) | `−[W_hz, W_iz]`     | rows n_a:2n_a, negated                          |
| GRU `W_c` (c̃ = n)     | `[W_hn, W_in]`      | rows 2n_a:3n_a                                  |
| GRU `b_r`             | `b_ir + b_hr`       | `bias_ih` block r, `bias_hh` block r = 0        |
| GRU `b_u`             | `−(b_iz + b_hz)`    | `bias_ih` block z = −b_u, `bias_hh` block z = 0 |
| GRU `b_c`             | `b_in`              | `bias_ih` block n = b_c                         |
| GRU `b_cc`            | `b_hn`              | `bias_hh` block n = b_cc                        |

The GRU conversion is for `GRUCell(reset_after=True)`: PyTorch applies r after the product
(`n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`), so `b_hn` cannot merge into `b_in`.
Converting to PyTorch and back is the identity; from PyTorch and back gives PyTorch weights
that compute the same function (the two biases of each gate merged into `bias_ih`).

>>> import numpy as np
>>> from tinygrad_seq.nn import LSTMCell
>>> cell = LSTMCell(3, 4)
>>> torch_sd = to_torch_lstm_cell(cell.state_dict())
>>> torch_sd["weight_ih"].shape, torch_sd["weight_hh"].shape
((16, 3), (16, 4))
>>> back = from_torch_lstm_cell(torch_sd)
>>> all(np.array_equal(back[k], v) for k, v in cell.state_dict().items())
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "from_torch_gru_cell",
    "from_torch_lstm_cell",
    "from_torch_rnn_cell",
    "to_torch_gru_cell",
    "to_torch_lstm_cell",
    "to_torch_rnn_cell",
]

Arrays = dict[str, np.ndarray]


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor slipped in: take its values
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _read_torch(sd: Mapping[str, Any], gates: int, suffix: str | None) -> tuple[np.ndarray, ...]:
    """`(weight_ih, weight_hh, bias_ih, bias_hh)` from a PyTorch state dict, checked."""
    if suffix is None:
        suffix = "" if "weight_ih" in sd else "_l0"
    names = [f"{n}{suffix}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    missing = [n for n in names[:2] if n not in sd]
    if missing:
        raise KeyError(f"PyTorch state dict lacks {missing}; it has keys {sorted(sd)}")
    w_ih, w_hh = _array(sd[names[0]]), _array(sd[names[1]])
    if w_hh.ndim != 2 or w_hh.shape[0] != gates * w_hh.shape[1]:
        raise ValueError(
            f"{names[1]} has shape {w_hh.shape}; expected ({gates}·n_a, n_a) for {gates} gate(s)"
        )
    n_a = w_hh.shape[1]
    if w_ih.ndim != 2 or w_ih.shape[0] != gates * n_a:
        raise ValueError(f"{names[0]} has shape {w_ih.shape}; expected ({gates * n_a}, n_x)")
    biases = []
    for name in names[2:]:
        b = _array(sd[name]) if name in sd else np.zeros(gates * n_a, w_hh.dtype)
        if b.shape != (gates * n_a,):
            raise ValueError(f"{name} has shape {b.shape}; expected ({gates * n_a},)")
        biases.append(b)
    return w_ih, w_hh, biases[0], biases[1]


def _blocks(array: np.ndarray, gates: int) -> list[np.ndarray]:
    return np.split(array, gates, axis=0)


def _names(suffix: str) -> list[str]:
    return [f"{n}{suffix}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def _check(ours: Mapping[str, Any], keys: list[str]) -> Arrays:
    missing = [k for k in keys if k not in ours]
    if missing:
        raise KeyError(f"state dict lacks {missing}; it has keys {sorted(ours)}")
    return {k: _array(ours[k]) for k in keys}


# ---------------------------------------------------------------- RNN


def from_torch_rnn_cell(sd: Mapping[str, Any], suffix: str | None = None) -> Arrays:
    """PyTorch `RNNCell`/`RNN` weights -> our `RNNCell` state dict (`W_aa, W_ax, b_a`)."""
    w_ih, w_hh, b_ih, b_hh = _read_torch(sd, 1, suffix)
    return {"W_aa": w_hh.copy(), "W_ax": w_ih.copy(), "b_a": b_ih + b_hh}


def to_torch_rnn_cell(ours: Mapping[str, Any], suffix: str = "") -> Arrays:
    """Our `RNNCell` state dict -> PyTorch `RNNCell` weights (`bias_hh` zero)."""
    p = _check(ours, ["W_aa", "W_ax", "b_a"])
    values = [p["W_ax"].copy(), p["W_aa"].copy(), p["b_a"].copy(), np.zeros_like(p["b_a"])]
    return dict(zip(_names(suffix), values, strict=True))


# ---------------------------------------------------------------- LSTM (i, f, g, o)

_LSTM_ORDER = ("u", "f", "c", "o")  # our names of PyTorch's i, f, g, o blocks


def from_torch_lstm_cell(sd: Mapping[str, Any], suffix: str | None = None) -> Arrays:
    """PyTorch `LSTMCell`/`LSTM` weights -> our `LSTMCell` state dict (no peepholes)."""
    w_ih, w_hh, b_ih, b_hh = _read_torch(sd, 4, suffix)
    blocks = zip(_LSTM_ORDER, _blocks(w_hh, 4), _blocks(w_ih, 4), strict=True)
    weights = {f"W_{g}": np.concatenate([hh, ih], axis=1) for g, hh, ih in blocks}
    biases = {f"b_{g}": b for g, b in zip(_LSTM_ORDER, _blocks(b_ih + b_hh, 4), strict=True)}
    return {k: weights[k] for k in ("W_u", "W_f", "W_o", "W_c")} | {
        k: biases[k] for k in ("b_u", "b_f", "b_o", "b_c")
    }


def to_torch_lstm_cell(ours: Mapping[str, Any], suffix: str = "") -> Arrays:
    """Our `LSTMCell` state dict -> PyTorch `LSTMCell` weights (`bias_hh` zero).

    A peephole LSTM has no PyTorch equivalent: its `p_*` keys raise `ValueError`."""
    if any(k in ours for k in ("p_u", "p_f", "p_o")):
        raise ValueError("a peephole LSTMCell (p_u, p_f, p_o) has no PyTorch equivalent")
    p = _check(ours, [f"{w}_{g}" for w in ("W", "b") for g in _LSTM_ORDER])
    n_a = p["b_u"].shape[0]
    w_hh = np.concatenate([p[f"W_{g}"][:, :n_a] for g in _LSTM_ORDER], axis=0)
    w_ih = np.concatenate([p[f"W_{g}"][:, n_a:] for g in _LSTM_ORDER], axis=0)
    b_ih = np.concatenate([p[f"b_{g}"] for g in _LSTM_ORDER])
    return dict(zip(_names(suffix), [w_ih, w_hh, b_ih, np.zeros_like(b_ih)], strict=True))


# ---------------------------------------------------------------- GRU, reset after (r, z, n)


def from_torch_gru_cell(sd: Mapping[str, Any], suffix: str | None = None) -> Arrays:
    """PyTorch `GRUCell`/`GRU` weights -> our `GRUCell(reset_after=True)` state dict.

    PyTorch's z weights the old state, our Γ_u the candidate: Γ_u = 1 − z = σ(−(…)), so the
    update gate's weights and biases are negated."""
    w_ih, w_hh, b_ih, b_hh = _read_torch(sd, 3, suffix)
    (w_ir, w_iz, w_in), (w_hr, w_hz, w_hn) = _blocks(w_ih, 3), _blocks(w_hh, 3)
    (b_ir, b_iz, b_in), (b_hr, b_hz, b_hn) = _blocks(b_ih, 3), _blocks(b_hh, 3)
    return {
        "W_u": -np.concatenate([w_hz, w_iz], axis=1),
        "W_r": np.concatenate([w_hr, w_ir], axis=1),
        "W_c": np.concatenate([w_hn, w_in], axis=1),
        "b_u": -(b_iz + b_hz),
        "b_r": b_ir + b_hr,
        "b_c": b_in.copy(),
        "b_cc": b_hn.copy(),
    }


def to_torch_gru_cell(ours: Mapping[str, Any], suffix: str = "") -> Arrays:
    """Our `GRUCell(reset_after=True)` state dict -> PyTorch `GRUCell` weights."""
    if "b_cc" not in ours:
        raise ValueError(
            "only GRUCell(reset_after=True) matches PyTorch's GRU; this state dict has no b_cc"
        )
    p = _check(ours, ["W_u", "W_r", "W_c", "b_u", "b_r", "b_c", "b_cc"])
    n_a = p["b_u"].shape[0]
    rows = [p["W_r"], -p["W_u"], p["W_c"]]
    w_hh = np.concatenate([w[:, :n_a] for w in rows], axis=0)
    w_ih = np.concatenate([w[:, n_a:] for w in rows], axis=0)
    b_ih = np.concatenate([p["b_r"], -p["b_u"], p["b_c"]])
    zeros = np.zeros_like(p["b_u"])
    b_hh = np.concatenate([zeros, zeros, p["b_cc"]])
    return dict(zip(_names(suffix), [w_ih, w_hh, b_ih, b_hh], strict=True))
