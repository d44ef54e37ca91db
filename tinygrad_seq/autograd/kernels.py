"""Hot kernels, each a Numba JIT kernel standing under the plain NumPy reference it must equal.

`PAIRS` lists the element-wise and row-wise (reference, kernel) pairs, `GATE_PAIRS` the
fused recurrent-cell gate kernels; property tests hold every kernel to its reference on
random shapes and values in float32 and float64. Set the environment variable
`TINYGRAD_SEQ_KERNELS=numpy` (or call `use_reference_kernels(True)`) to run the engine on
the references alone. Numba is imported and each kernel compiled on first use, never at
import, and compiled code is cached on disk (`cache=True`) under `cache.cache_dir()`, outside the
installed package.

float32 kernels compute tanh with a rational approximation (|error| ≤ 3.5e-7, relative near
0, see `tanh32`), because without Intel's SVML Numba turns `math.tanh`/`math.exp` into scalar
library calls that do not vectorise (about 5x slower). The fused gate kernels also take
σ(x) = ½ + ½ tanh(x/2) from it: accurate in absolute terms, which is all a gate needs. The
stand-alone σ kernel stays exact in relative terms (users take log σ). float64 kernels are
exact, so gradient checks compare against true values. All kernels are stable for inputs of
any magnitude.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from . import cache

_use_reference = os.environ.get("TINYGRAD_SEQ_KERNELS", "numba").lower() == "numpy"


def use_reference_kernels(flag: bool = True) -> None:
    """Run every kernel as its NumPy reference (`True`) or as compiled Numba code (`False`)."""
    global _use_reference
    _use_reference = bool(flag)


def using_reference_kernels() -> bool:
    return _use_reference


# ================================================================ lazy compilation

_SCALAR_HELPERS: list[str] = []


def _scalar_helper(py_func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a scalar function that kernels call; it is compiled (inlined) with the first kernel."""
    _SCALAR_HELPERS.append(py_func.__name__)
    return py_func


def _compile(py_func: Callable[..., Any]) -> Any:
    import numba

    scalar_helpers()
    return numba.njit(cache=True, nogil=True, error_model="numpy")(py_func)


def scalar_helpers() -> tuple[Any, Any]:
    """`act_tanh` and `act_sigmoid`, ready to be called from any Numba kernel (the step
    compiler's generated kernels use them, so they compute exactly what these kernels do)."""
    import numba

    module = globals()
    if not module.get("_helpers_ready"):
        cache.install_locator()  # compiled kernels are cached outside the package (cache.py)
        for name in _SCALAR_HELPERS:  # kernels resolve these globals when they compile
            module[name] = numba.njit(cache=True)(module[name])
        _register_activation_overloads()
        module["_helpers_ready"] = True
    return act_tanh, act_sigmoid


class _LazyJit:
    """`numba.njit(cache=True)` applied on the first call, so importing compiles nothing."""

    def __init__(self, py_func: Callable[..., Any]) -> None:
        self.py_func = py_func
        self._dispatcher: Any = None

    def __call__(self, *args: Any) -> Any:
        dispatcher = self._dispatcher
        if dispatcher is None:
            dispatcher = self._dispatcher = _compile(self.py_func)
        return dispatcher(*args)


def _jit(py_func: Callable[..., Any]) -> _LazyJit:
    return _LazyJit(py_func)


# ================================================================ scalar activations

# float32 tanh as a rational function x·P(x²)/Q(x²) on |x| < 9 (beyond, tanh is ±1 in
# float32), fitted here by iteratively reweighted least squares for relative error and
# evaluated in float32: |error| ≤ 3.5e-7 for every float32 input. It vectorises.
_F = np.float32
_TANH_CLAMP, _ONE, _HALF = _F(9.0), _F(1.0), _F(0.5)
_P0, _P1, _P2 = _F(0.9999999944194784), _F(0.13089801178163463), _F(0.003110437655010523)
_P3, _P4 = _F(1.1222539743636176e-05), _F(-2.0505097361167614e-08)
_P5, _P6 = _F(5.414534861288092e-11), _F(-8.84431735868536e-14)
_Q1, _Q2, _Q3 = _F(0.4642312919836796), _F(0.024520952914936774), _F(0.0002555607989872484)


@_scalar_helper
def tanh32(x):  # pragma: no cover - compiled
    c = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    s = c * c
    p = _P0 + s * (_P1 + s * (_P2 + s * (_P3 + s * (_P4 + s * (_P5 + s * _P6)))))
    q = _ONE + s * (_Q1 + s * (_Q2 + s * _Q3))
    r = min(max(c * p / q, -_ONE), _ONE)
    if abs(x) < _TANH_CLAMP:
        return r
    return _ONE if x > 0 else (-_ONE if x < 0 else x)  # saturate exactly; NaN stays NaN


@_scalar_helper
def sigmoid32(x):  # pragma: no cover - compiled
    return _HALF + _HALF * tanh32(_HALF * x)  # σ(x) = ½ + ½ tanh(x/2)


@_scalar_helper
def sigmoid64(x):  # pragma: no cover - compiled
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)  # e ≤ 1: no overflow for very negative x
    return e / (1.0 + e)


def act_tanh(x):  # pragma: no cover - compiled
    """Scalar tanh inside kernels: `tanh32` for float32, exact `math.tanh` otherwise."""
    return math.tanh(x)


def act_sigmoid(x):  # pragma: no cover - compiled
    """Scalar σ inside kernels: `sigmoid32` for float32, exact `sigmoid64` otherwise."""
    return sigmoid64(x)


def _register_activation_overloads() -> None:
    """Give `act_tanh`/`act_sigmoid` per-dtype implementations, chosen when a kernel compiles."""
    from numba.core import types
    from numba.extending import overload

    @overload(act_tanh)
    def _tanh(x):
        if x == types.float32:
            return lambda x: tanh32(x)
        return lambda x: math.tanh(x)

    @overload(act_sigmoid)
    def _sigmoid(x):
        if x == types.float32:
            return lambda x: sigmoid32(x)
        return lambda x: sigmoid64(x)


# ================================================================ adapters


def _elementwise(jitted: _LazyJit) -> Callable[..., np.ndarray]:
    """Adapt a kernel over flat arrays to arrays of any shape (inputs share one shape)."""

    def run(*arrays: np.ndarray) -> np.ndarray:
        shape = arrays[0].shape
        flat = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
        return jitted(*flat).reshape(shape)

    run.__name__ = jitted.py_func.__name__
    return run


def _rowwise(jitted: _LazyJit, reference: Callable[..., np.ndarray]):
    """Adapt a kernel over 2-D arrays (rows along the last axis) to any number of dims."""

    def run(*arrays: np.ndarray) -> np.ndarray:
        shape = arrays[0].shape
        if arrays[0].size == 0:
            return reference(*arrays)
        n = shape[-1] if shape else 1
        rows = [np.ascontiguousarray(a).reshape(-1, n) for a in arrays]
        return jitted(*rows).reshape(shape)

    run.__name__ = jitted.py_func.__name__
    return run


# ================================================================ element-wise


# ---------------------------------------------------------------- sigmoid σ(x) = 1 / (1 + e^-x)
def sigmoid_reference(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # never overflows: the exponent is ≤ 0
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


@_jit
def _sigmoid_kernel(x):  # pragma: no cover - compiled
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = sigmoid64(x[i])  # exact in relative terms, also far in the tails (log σ)
    return out


# ---------------------------------------------------------------- σ'(x) · g = y (1 − y) g
def sigmoid_backward_reference(y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return grad * y * (1 - y)


@_jit
def _sigmoid_backward_kernel(y, grad):  # pragma: no cover - compiled
    out = np.empty_like(y)
    for i in range(y.size):
        out[i] = grad[i] * y[i] * (1 - y[i])
    return out


# ---------------------------------------------------------------- tanh(x)
def tanh_reference(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


@_jit
def _tanh_kernel(x):  # pragma: no cover - compiled
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = act_tanh(x[i])
    return out


# ---------------------------------------------------------------- tanh'(x) · g = (1 − y²) g
def tanh_backward_reference(y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return grad * (1 - y * y)


@_jit
def _tanh_backward_kernel(y, grad):  # pragma: no cover - compiled
    out = np.empty_like(y)
    for i in range(y.size):
        out[i] = grad[i] * (1 - y[i] * y[i])
    return out


# ================================================================ row-wise


@_scalar_helper
def _row_max(row):  # pragma: no cover - compiled
    m = row[0]  # a plain loop compiles in a fraction of the time `row.max()` takes
    for j in range(1, row.size):
        m = max(m, row[j])
    return m


# ---------------------------------------------------------------- softmax: e^(x−m) / Σ e^(x−m)
def softmax_reference(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@_jit
def _softmax_kernel(x):  # pragma: no cover - compiled
    out = np.empty_like(x)
    for r in range(x.shape[0]):
        row = x[r]
        m = _row_max(row)
        total = 0.0
        for j in range(row.size):
            e = math.exp(row[j] - m)
            out[r, j] = e
            total += e
        inv = 1.0 / total
        for j in range(row.size):
            out[r, j] *= inv
    return out


# ---------------------------------------------------------------- softmax backward: y (g − Σ g y)
def softmax_backward_reference(y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


@_jit
def _softmax_backward_kernel(y, grad):  # pragma: no cover - compiled
    out = np.empty_like(y)
    for r in range(y.shape[0]):
        dot = 0.0
        for j in range(y.shape[1]):
            dot += grad[r, j] * y[r, j]
        for j in range(y.shape[1]):
            out[r, j] = y[r, j] * (grad[r, j] - dot)
    return out


# ------------------------------------------------------------ log-softmax: x − m − log Σ e^(x−m)
def log_softmax_reference(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@_jit
def _log_softmax_kernel(x):  # pragma: no cover - compiled
    out = np.empty_like(x)
    for r in range(x.shape[0]):
        row = x[r]
        m = _row_max(row)
        total = 0.0
        for j in range(row.size):
            total += math.exp(row[j] - m)
        shift = m + math.log(total)
        for j in range(row.size):
            out[r, j] = row[j] - shift
    return out


# ---------------------------------------------------------------- log-softmax backward: g − e^y Σ g
def log_softmax_backward_reference(y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    return grad - np.exp(y) * grad.sum(axis=-1, keepdims=True)


@_jit
def _log_softmax_backward_kernel(y, grad):  # pragma: no cover - compiled
    out = np.empty_like(y)
    for r in range(y.shape[0]):
        total = 0.0
        for j in range(y.shape[1]):
            total += grad[r, j]
        for j in range(y.shape[1]):
            out[r, j] = grad[r, j] - math.exp(y[r, j]) * total
    return out


# ================================================================ fused LSTM gates
# Columns of z (B, 4n_a) are the pre-activations of [Γ_u, Γ_f, Γ_o, c̃], in that order.


# ---- forward: Γ = σ(z + p c<t-1>), c̃ = tanh(z_c), c<t> = Γ_u c̃ + Γ_f c<t-1>, a<t> = Γ_o tanh c<t>
def lstm_gates_reference(xz, h, c_prev, peep):
    """z = xz + h; returns a<t>, c<t>, the activations [Γ_u, Γ_f, Γ_o, c̃] and tanh(c<t>)."""
    n = c_prev.shape[1]
    z = xz + h
    gu = sigmoid_reference(z[:, :n] + peep[0] * c_prev)
    gf = sigmoid_reference(z[:, n : 2 * n] + peep[1] * c_prev)
    go = sigmoid_reference(z[:, 2 * n : 3 * n] + peep[2] * c_prev)
    ct = np.tanh(z[:, 3 * n :])
    c = gu * ct + gf * c_prev
    tc = np.tanh(c)
    return go * tc, c, np.concatenate([gu, gf, go, ct], axis=1), tc


@_jit
def _lstm_gates_kernel(xz, h, c_prev, peep):  # pragma: no cover - compiled
    B, n = c_prev.shape
    a = np.empty_like(c_prev)
    c = np.empty_like(c_prev)
    tc = np.empty_like(c_prev)
    gates = np.empty_like(xz)
    for b in range(B):
        z, hb, cp = xz[b], h[b], c_prev[b]
        zu, zf, zo, zc = z[:n], z[n : 2 * n], z[2 * n : 3 * n], z[3 * n :]
        hu, hf, ho, hc = hb[:n], hb[n : 2 * n], hb[2 * n : 3 * n], hb[3 * n :]
        gu, gf, go, gc = (
            gates[b, :n],
            gates[b, n : 2 * n],
            gates[b, 2 * n : 3 * n],
            gates[b, 3 * n :],
        )
        for j in range(n):
            u = act_sigmoid(zu[j] + hu[j] + peep[0, j] * cp[j])
            f = act_sigmoid(zf[j] + hf[j] + peep[1, j] * cp[j])
            o = act_sigmoid(zo[j] + ho[j] + peep[2, j] * cp[j])
            ct = act_tanh(zc[j] + hc[j])
            cn = u * ct + f * cp[j]
            t = act_tanh(cn)
            gu[j], gf[j], go[j], gc[j] = u, f, o, ct
            c[b, j], tc[b, j], a[b, j] = cn, t, o * t
    return a, c, gates, tc


# ---- backward: from ∂L/∂a<t>, ∂L/∂c<t> to ∂L/∂z, ∂L/∂c<t-1>, ∂L/∂p
def lstm_gates_backward_reference(ga, gc, gates, tc, c_prev, peep):
    n = c_prev.shape[1]
    gu, gf, go, ct = (gates[:, k * n : (k + 1) * n] for k in range(4))
    dc = gc + ga * go * (1 - tc * tc)
    dzu = dc * ct * gu * (1 - gu)
    dzf = dc * c_prev * gf * (1 - gf)
    dzo = ga * tc * go * (1 - go)
    dzc = dc * gu * (1 - ct * ct)
    dc_prev = dc * gf + dzu * peep[0] + dzf * peep[1] + dzo * peep[2]
    dpeep = np.stack([(dzu * c_prev).sum(0), (dzf * c_prev).sum(0), (dzo * c_prev).sum(0)])
    return np.concatenate([dzu, dzf, dzo, dzc], axis=1), dc_prev, dpeep


@_jit
def _lstm_gates_backward_kernel(ga, gc, gates, tc, c_prev, peep):  # pragma: no cover - compiled
    B, n = c_prev.shape
    dz = np.empty_like(gates)
    dc_prev = np.empty_like(c_prev)
    dpeep = np.zeros_like(peep)
    for b in range(B):
        g, cp = gates[b], c_prev[b]
        gu, gf, go, ct = g[:n], g[n : 2 * n], g[2 * n : 3 * n], g[3 * n :]
        du, df, do, dct = dz[b, :n], dz[b, n : 2 * n], dz[b, 2 * n : 3 * n], dz[b, 3 * n :]
        for j in range(n):
            t = tc[b, j]
            dc = gc[b, j] + ga[b, j] * go[j] * (1 - t * t)
            du[j] = dc * ct[j] * gu[j] * (1 - gu[j])
            df[j] = dc * cp[j] * gf[j] * (1 - gf[j])
            do[j] = ga[b, j] * t * go[j] * (1 - go[j])
            dct[j] = dc * gu[j] * (1 - ct[j] * ct[j])
            dc_prev[b, j] = (
                dc * gf[j] + du[j] * peep[0, j] + df[j] * peep[1, j] + do[j] * peep[2, j]
            )
            dpeep[0, j] += du[j] * cp[j]
            dpeep[1, j] += df[j] * cp[j]
            dpeep[2, j] += do[j] * cp[j]
    return dz, dc_prev, dpeep


# ================================================================ fused GRU gates (reset after)
# Columns of xz and h (B, 3n_a) are [Γ_u, Γ_r, c̃]: xz from the input, h = W_a a<t-1> + [0, 0, b_cc].


# ---- forward: Γ_u = σ(xz_u + h_u), Γ_r = σ(xz_r + h_r), c̃ = tanh(xz_c + Γ_r h_c),
#               c<t> = Γ_u c̃ + (1 − Γ_u) c<t-1>
def gru_gates_reference(xz, h, c_prev):
    """Returns c<t> and the activations [Γ_u, Γ_r, c̃]."""
    n = c_prev.shape[1]
    gu = sigmoid_reference(xz[:, :n] + h[:, :n])
    gr = sigmoid_reference(xz[:, n : 2 * n] + h[:, n : 2 * n])
    ct = np.tanh(xz[:, 2 * n :] + gr * h[:, 2 * n :])
    return gu * ct + (1 - gu) * c_prev, np.concatenate([gu, gr, ct], axis=1)


@_jit
def _gru_gates_kernel(xz, h, c_prev):  # pragma: no cover - compiled
    B, n = c_prev.shape
    c = np.empty_like(c_prev)
    gates = np.empty_like(xz)
    for b in range(B):
        z, hb, cp, cb = xz[b], h[b], c_prev[b], c[b]
        zu, zr, zc, hu, hr, hc = z[:n], z[n : 2 * n], z[2 * n :], hb[:n], hb[n : 2 * n], hb[2 * n :]
        gu, gr, gc = gates[b, :n], gates[b, n : 2 * n], gates[b, 2 * n :]
        for j in range(n):
            u = act_sigmoid(zu[j] + hu[j])
            r = act_sigmoid(zr[j] + hr[j])
            ct = act_tanh(zc[j] + r * hc[j])
            gu[j], gr[j], gc[j] = u, r, ct
            cb[j] = u * ct + (1 - u) * cp[j]
    return c, gates


# ---- backward: from ∂L/∂c<t> to ∂L/∂xz, ∂L/∂h and the direct part of ∂L/∂c<t-1>
def gru_gates_backward_reference(gc, gates, h, c_prev):
    n = c_prev.shape[1]
    gu, gr, ct = (gates[:, k * n : (k + 1) * n] for k in range(3))
    dzc = gc * gu * (1 - ct * ct)
    dzu = gc * (ct - c_prev) * gu * (1 - gu)
    dzr = dzc * h[:, 2 * n :] * gr * (1 - gr)
    dxz = np.concatenate([dzu, dzr, dzc], axis=1)
    dh = np.concatenate([dzu, dzr, dzc * gr], axis=1)
    return dxz, dh, gc * (1 - gu)


@_jit
def _gru_gates_backward_kernel(gc, gates, h, c_prev):  # pragma: no cover - compiled
    B, n = c_prev.shape
    dxz = np.empty_like(gates)
    dh = np.empty_like(gates)
    dc_prev = np.empty_like(c_prev)
    for b in range(B):
        g, hc, cp, gcb, dcp = gates[b], h[b, 2 * n :], c_prev[b], gc[b], dc_prev[b]
        gu, gr, ct = g[:n], g[n : 2 * n], g[2 * n :]
        xu, xr, xc = dxz[b, :n], dxz[b, n : 2 * n], dxz[b, 2 * n :]
        hu, hr, hcd = dh[b, :n], dh[b, n : 2 * n], dh[b, 2 * n :]
        for j in range(n):
            u, r, t = gu[j], gr[j], ct[j]
            dzc = gcb[j] * u * (1 - t * t)
            dzu = gcb[j] * (t - cp[j]) * u * (1 - u)
            dzr = dzc * hc[j] * r * (1 - r)
            xu[j], xr[j], xc[j] = dzu, dzr, dzc
            hu[j], hr[j], hcd[j] = dzu, dzr, dzc * r
            dcp[j] = gcb[j] * (1 - u)
    return dxz, dh, dc_prev


# ================================================================ the tables of pairs

PAIRS: dict[str, tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]] = {
    "sigmoid": (sigmoid_reference, _elementwise(_sigmoid_kernel)),
    "sigmoid_backward": (sigmoid_backward_reference, _elementwise(_sigmoid_backward_kernel)),
    "tanh": (tanh_reference, _elementwise(_tanh_kernel)),
    "tanh_backward": (tanh_backward_reference, _elementwise(_tanh_backward_kernel)),
    "softmax": (softmax_reference, _rowwise(_softmax_kernel, softmax_reference)),
    "softmax_backward": (
        softmax_backward_reference,
        _rowwise(_softmax_backward_kernel, softmax_backward_reference),
    ),
    "log_softmax": (log_softmax_reference, _rowwise(_log_softmax_kernel, log_softmax_reference)),
    "log_softmax_backward": (
        log_softmax_backward_reference,
        _rowwise(_log_softmax_backward_kernel, log_softmax_backward_reference),
    ),
}
"""name -> (NumPy reference, Numba kernel), arrays of any shape in, same shape out."""

GATE_PAIRS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "lstm_gates": (lstm_gates_reference, _lstm_gates_kernel),
    "lstm_gates_backward": (lstm_gates_backward_reference, _lstm_gates_backward_kernel),
    "gru_gates": (gru_gates_reference, _gru_gates_kernel),
    "gru_gates_backward": (gru_gates_backward_reference, _gru_gates_backward_kernel),
}
"""name -> (NumPy reference, Numba kernel) of the fused cell gates: 2-D (B, ·) arrays in, a
tuple of arrays out (see each reference's signature)."""


def _dispatch(table: dict[str, tuple[Callable[..., Any], Callable[..., Any]]], name: str):
    reference, kernel = table[name]

    def run(*arrays: np.ndarray) -> Any:
        return reference(*arrays) if _use_reference else kernel(*arrays)

    run.__name__ = name
    run.__doc__ = reference.__doc__
    return run


sigmoid = _dispatch(PAIRS, "sigmoid")
sigmoid_backward = _dispatch(PAIRS, "sigmoid_backward")
tanh = _dispatch(PAIRS, "tanh")
tanh_backward = _dispatch(PAIRS, "tanh_backward")
softmax = _dispatch(PAIRS, "softmax")
softmax_backward = _dispatch(PAIRS, "softmax_backward")
log_softmax = _dispatch(PAIRS, "log_softmax")
log_softmax_backward = _dispatch(PAIRS, "log_softmax_backward")
lstm_gates = _dispatch(GATE_PAIRS, "lstm_gates")
lstm_gates_backward = _dispatch(GATE_PAIRS, "lstm_gates_backward")
gru_gates = _dispatch(GATE_PAIRS, "gru_gates")
gru_gates_backward = _dispatch(GATE_PAIRS, "gru_gates_backward")
