"""The speed report, in one command: training-step speed, per-op overhead, memory, cold start.

    python benchmarks/train_step.py [--cells rnn,gru,lstm] [--hidden 128,512] [--rounds N]
                                    [--quick] [--write-readme] [--profile] [--wait-quiet S]
                                    [--skip train,overhead,memory,cold] [--threads N]

1. Training step of a character LM: B=32, T=64, V=65, one-hot input, one recurrent layer, a
   linear head, mean cross-entropy over all B·T positions, full BPTT, one SGD step; tokens per
   second = B·T / step time, float32, for each cell (rnn = tanh RNN, gru = reset-after GRU,
   PyTorch's variant, lstm) at each hidden size, and for four implementations:
   - ours: `Recurrent(cell)` + `Linear` + `nn.functional.cross_entropy` + `backward()` +
     `optim.SGD`, through the public API only;
   - numpy BPTT: a hand-written forward + backward-through-time of the same network, written
     below (stacked gate weights, the input projection of all steps in one GEMM, one recurrent
     GEMM per step each way, weight gradients as one GEMM over all steps). At startup its
     gradients are checked against ours in float64 on a tiny shape (to 1e-6), so it computes
     exactly what ours computes;
   - torch fused (`nn.RNN`/`nn.GRU`/`nn.LSTM`, batch_first) and torch cell loop
     (`nn.RNNCell`/`GRUCell`/`LSTMCell` called in a Python loop), when torch imports.
   After warm-up, each round times every (implementation, cell) once in a rotated order; the
   tables give medians over rounds, and ratios ours ÷ baseline as the median of per-round
   ratios (> 1: ours is faster).
2. Per-op overhead: forward + backward of a chain of 1,000 element-wise ops on a (32, 128)
   float32 tensor, µs per op, ours against PyTorch eager (plain NumPy forward for scale).
3. Memory: peak RSS growth during one training step, in a fresh subprocess per implementation
   (ours against the NumPy baseline), and ours' RSS after step 5 against step 20.
4. Cold start: a fresh subprocess with an empty NUMBA_CACHE_DIR runs import + the first
   training step (Numba compiles); a second one with that cache warm runs import + one step.

The machine's quietness is checked before and after (a fixed NumPy GEMM probe, the CPU time
other processes used, the load average); a noisy run prints `DISTURBED: ...` lines.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _common as C  # noqa: E402

B, T, V = 32, 64, 65
LR = 0.05
CELLS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
OURS, NUMPY, FUSED, LOOP = "ours", "numpy BPTT", "torch fused", "torch cell loop"
BASELINE = "baseline checkout"
IMPLS = (OURS, BASELINE, NUMPY, FUSED, LOOP)
TARGETS = {NUMPY: 1.0, LOOP: 1.0, FUSED: 0.8, BASELINE: 1.0}  # ours ÷ baseline, at least
CHAIN_OPS = 1000
README = HERE / "README.md"
RESULTS_HEADING = "## Latest results"


def make_batch(
    seed: int = 0, batch: int = B, steps: int = T, vocab: int = V, dtype: Any = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """One-hot inputs x (B, T, V) and next-character targets (B, T) of a random sequence."""
    ids = np.random.default_rng(seed).integers(0, vocab, size=(batch, steps + 1))
    return np.eye(vocab, dtype=dtype)[ids[:, :-1]], ids[:, 1:].copy()


# ================================================================ ours, through the public API


def build_ours(
    kind: str,
    H: int,
    x: np.ndarray,
    targets: np.ndarray,
    dtype: Any = np.float32,
    seed: int = 0,
    package: str = "tinygrad_seq",
) -> SimpleNamespace:
    """`package` may name another checkout's copy (`--baseline`, `_common.import_baseline`)."""
    import importlib

    Tensor = importlib.import_module(package).Tensor
    nn = importlib.import_module(f"{package}.nn")
    GRUCell, Linear, LSTMCell, Recurrent, RNNCell = (
        nn.GRUCell, nn.Linear, nn.LSTMCell, nn.Recurrent, nn.RNNCell
    )  # fmt: skip
    cross_entropy = importlib.import_module(f"{package}.nn.functional").cross_entropy
    SGD = importlib.import_module(f"{package}.optim").SGD

    rng = np.random.default_rng(seed)
    n_x = x.shape[-1]
    if kind == "rnn":
        cell = RNNCell(n_x, H, nonlinearity="tanh", rng=rng)
    elif kind == "gru":
        cell = GRUCell(n_x, H, reset_after=True, rng=rng)
    else:
        cell = LSTMCell(n_x, H, rng=rng)
    head = Linear(H, n_x, rng=rng)
    if np.dtype(dtype) != np.float32:
        cell.to(dtype)
        head.to(dtype)
    layer = Recurrent(cell)
    opt = SGD(cell.parameters() + head.parameters(), lr=LR)
    x_in, y_flat = Tensor(x.astype(dtype)), targets.reshape(-1)

    def loss_fn() -> Any:
        outputs, _ = layer(x_in)
        return cross_entropy(head(outputs).reshape(-1, n_x), y_flat)

    def step() -> Any:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss

    return SimpleNamespace(cell=cell, head=head, loss_fn=loss_fn, step=step)


def stacked_from_ours(kind: str, cell: Any, head: Any, attr: str = "data") -> dict:
    """Our per-gate parameters (or their `.grad`s) in the baseline's stacked layout."""

    def get(p: Any) -> np.ndarray:
        return getattr(p, attr)

    if kind == "rnn":
        out = {"W": np.concatenate([get(cell.W_aa), get(cell.W_ax)], axis=1), "b": get(cell.b_a)}
    elif kind == "gru":
        out = {
            "W": np.concatenate([get(cell.W_u), get(cell.W_r), get(cell.W_c)]),
            "b": np.concatenate([get(cell.b_u), get(cell.b_r), get(cell.b_c)]),
            "b_cc": get(cell.b_cc),
        }
    else:
        out = {
            "W": np.concatenate([get(p) for p in (cell.W_u, cell.W_f, cell.W_o, cell.W_c)]),
            "b": np.concatenate([get(p) for p in (cell.b_u, cell.b_f, cell.b_o, cell.b_c)]),
        }
    out.update(Wy=get(head.weight), by=get(head.bias))
    return {k: np.array(v) for k, v in out.items()}


# ================================================================ hand-written NumPy BPTT
# Time-major inside: x_tm (T·B, V); A, Cs (T+1, B, H) hold a<0..T>, c<0..T>. W (G·H, H + V) is
# the gate matrices stacked (hidden columns first, as in ours), b (G·H,).


def _sigmoid(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """σ(z) = ½ + ½ tanh(z/2): no overflow for any z."""
    np.multiply(z, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def _head_loss(hs: np.ndarray, y: np.ndarray, Wy: np.ndarray, by: np.ndarray):
    """Mean cross-entropy of softmax(hs Wyᵀ + by) and its gradients: loss, dWy, dby, dhs."""
    n = hs.shape[0]
    z = hs @ Wy.T
    z += by
    z -= z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    loss = float(np.mean(lse[:, 0] - z[rows, y]))
    dz = z
    dz -= lse
    np.exp(dz, out=dz)  # softmax
    dz[rows, y] -= 1.0
    dz *= 1.0 / n
    return loss, dz.T @ hs, dz.sum(axis=0), dz @ Wy


def _time_major(x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b, t, v = x.shape
    return np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(t * b, v), targets.T.reshape(-1)


def numpy_rnn(P: dict, x: np.ndarray, targets: np.ndarray) -> tuple[float, dict]:
    """a<t> = tanh(W_a a<t-1> + W_x x<t> + b)."""
    Bn, Tn, _ = x.shape
    W, H = P["W"], P["Wy"].shape[1]
    x_tm, y_tm = _time_major(x, targets)
    xz = (x_tm @ W[:, H:].T).reshape(Tn, Bn, H)
    xz += P["b"]
    WaT, Wa = np.ascontiguousarray(W[:, :H].T), np.ascontiguousarray(W[:, :H])
    A = np.zeros((Tn + 1, Bn, H), W.dtype)
    for t in range(Tn):
        z = A[t + 1]
        np.matmul(A[t], WaT, out=z)
        z += xz[t]
        np.tanh(z, out=z)
    loss, dWy, dby, dhs = _head_loss(A[1:].reshape(Tn * Bn, H), y_tm, P["Wy"], P["by"])
    dhs = dhs.reshape(Tn, Bn, H)
    dZ = np.empty((Tn, Bn, H), W.dtype)
    da_next = np.zeros((Bn, H), W.dtype)
    for t in reversed(range(Tn)):
        dz = dZ[t]
        np.add(dhs[t], da_next, out=dz)
        dz *= 1.0 - A[t + 1] * A[t + 1]
        da_next = dz @ Wa
    dZ2 = dZ.reshape(Tn * Bn, H)
    dW = np.empty_like(W)
    dW[:, :H] = dZ2.T @ A[:-1].reshape(Tn * Bn, H)
    dW[:, H:] = dZ2.T @ x_tm
    return loss, {"W": dW, "b": dZ2.sum(axis=0), "Wy": dWy, "by": dby}


def numpy_gru(P: dict, x: np.ndarray, targets: np.ndarray) -> tuple[float, dict]:
    """Reset after: h = W_a c<t-1> + [0, 0, b_cc]; Γ_u = σ(xz_u + h_u), Γ_r = σ(xz_r + h_r),
    c̃ = tanh(xz_c + Γ_r h_c), c<t> = Γ_u c̃ + (1 − Γ_u) c<t-1>."""
    Bn, Tn, _ = x.shape
    W, H = P["W"], P["Wy"].shape[1]
    x_tm, y_tm = _time_major(x, targets)
    xz = (x_tm @ W[:, H:].T).reshape(Tn, Bn, 3 * H)
    xz += P["b"]
    WaT, Wa = np.ascontiguousarray(W[:, :H].T), np.ascontiguousarray(W[:, :H])
    Cs = np.zeros((Tn + 1, Bn, H), W.dtype)
    G = np.empty((Tn, Bn, 3 * H), W.dtype)  # [Γ_u, Γ_r, c̃]
    Hc = np.empty((Tn, Bn, H), W.dtype)  # h_c = W_cc c<t-1> + b_cc
    h = np.empty((Bn, 3 * H), W.dtype)
    for t in range(Tn):
        np.matmul(Cs[t], WaT, out=h)
        h[:, 2 * H :] += P["b_cc"]
        g, zx = G[t], xz[t]
        np.add(zx[:, : 2 * H], h[:, : 2 * H], out=g[:, : 2 * H])
        _sigmoid(g[:, : 2 * H], out=g[:, : 2 * H])
        u, r, ct = g[:, :H], g[:, H : 2 * H], g[:, 2 * H :]
        Hc[t] = h[:, 2 * H :]
        np.multiply(r, Hc[t], out=ct)
        ct += zx[:, 2 * H :]
        np.tanh(ct, out=ct)
        c = Cs[t + 1]
        np.subtract(ct, Cs[t], out=c)
        c *= u
        c += Cs[t]
    loss, dWy, dby, dhs = _head_loss(Cs[1:].reshape(Tn * Bn, H), y_tm, P["Wy"], P["by"])
    dhs = dhs.reshape(Tn, Bn, H)
    dXZ = np.empty((Tn, Bn, 3 * H), W.dtype)
    dH = np.empty((Tn, Bn, 3 * H), W.dtype)
    dc_next = np.zeros((Bn, H), W.dtype)
    for t in reversed(range(Tn)):
        u, r, ct = G[t, :, :H], G[t, :, H : 2 * H], G[t, :, 2 * H :]
        dc = dhs[t] + dc_next
        dzc = dc * u * (1.0 - ct * ct)
        dXZ[t, :, :H] = dc * (ct - Cs[t]) * u * (1.0 - u)
        dXZ[t, :, H : 2 * H] = dzc * Hc[t] * r * (1.0 - r)
        dXZ[t, :, 2 * H :] = dzc
        dH[t, :, : 2 * H] = dXZ[t, :, : 2 * H]
        np.multiply(dzc, r, out=dH[t, :, 2 * H :])
        dc_next = dH[t] @ Wa
        dc_next += dc * (1.0 - u)
    dXZ2, dH2 = dXZ.reshape(Tn * Bn, 3 * H), dH.reshape(Tn * Bn, 3 * H)
    dW = np.empty_like(W)
    dW[:, :H] = dH2.T @ Cs[:-1].reshape(Tn * Bn, H)
    dW[:, H:] = dXZ2.T @ x_tm
    grads = {"W": dW, "b": dXZ2.sum(axis=0), "b_cc": dH2[:, 2 * H :].sum(axis=0)}
    return loss, {**grads, "Wy": dWy, "by": dby}


def numpy_lstm(P: dict, x: np.ndarray, targets: np.ndarray) -> tuple[float, dict]:
    """z = W_a a<t-1> + W_x x<t> + b; Γ_{u,f,o} = σ(z_{u,f,o}), c̃ = tanh(z_c),
    c<t> = Γ_u c̃ + Γ_f c<t-1>, a<t> = Γ_o tanh(c<t>)."""
    Bn, Tn, _ = x.shape
    W, H = P["W"], P["Wy"].shape[1]
    x_tm, y_tm = _time_major(x, targets)
    xz = (x_tm @ W[:, H:].T).reshape(Tn, Bn, 4 * H)
    xz += P["b"]
    WaT, Wa = np.ascontiguousarray(W[:, :H].T), np.ascontiguousarray(W[:, :H])
    A = np.zeros((Tn + 1, Bn, H), W.dtype)
    Cs = np.zeros((Tn + 1, Bn, H), W.dtype)
    G = np.empty((Tn, Bn, 4 * H), W.dtype)  # [Γ_u, Γ_f, Γ_o, c̃]
    TC = np.empty((Tn, Bn, H), W.dtype)  # tanh(c<t>)
    for t in range(Tn):
        g = G[t]
        np.matmul(A[t], WaT, out=g)
        g += xz[t]
        _sigmoid(g[:, : 3 * H], out=g[:, : 3 * H])
        np.tanh(g[:, 3 * H :], out=g[:, 3 * H :])
        u, f, o, ct = g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H], g[:, 3 * H :]
        c = Cs[t + 1]
        np.multiply(u, ct, out=c)
        c += f * Cs[t]
        np.tanh(c, out=TC[t])
        np.multiply(o, TC[t], out=A[t + 1])
    loss, dWy, dby, dhs = _head_loss(A[1:].reshape(Tn * Bn, H), y_tm, P["Wy"], P["by"])
    dhs = dhs.reshape(Tn, Bn, H)
    dZ = np.empty((Tn, Bn, 4 * H), W.dtype)
    da_next = np.zeros((Bn, H), W.dtype)
    dc_next = np.zeros((Bn, H), W.dtype)
    for t in reversed(range(Tn)):
        g, tc = G[t], TC[t]
        u, f, o, ct = g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H], g[:, 3 * H :]
        da = dhs[t] + da_next
        dc = da * o * (1.0 - tc * tc)
        dc += dc_next
        dz = dZ[t]
        dz[:, :H] = dc * ct * u * (1.0 - u)
        dz[:, H : 2 * H] = dc * Cs[t] * f * (1.0 - f)
        dz[:, 2 * H : 3 * H] = da * tc * o * (1.0 - o)
        dz[:, 3 * H :] = dc * u * (1.0 - ct * ct)
        da_next = dz @ Wa
        dc_next = dc * f
    dZ2 = dZ.reshape(Tn * Bn, 4 * H)
    dW = np.empty_like(W)
    dW[:, :H] = dZ2.T @ A[:-1].reshape(Tn * Bn, H)
    dW[:, H:] = dZ2.T @ x_tm
    return loss, {"W": dW, "b": dZ2.sum(axis=0), "Wy": dWy, "by": dby}


NUMPY_CELLS = {"rnn": numpy_rnn, "gru": numpy_gru, "lstm": numpy_lstm}


def numpy_params(kind: str, H: int, vocab: int = V, seed: int = 0, dtype: Any = np.float32):
    """PyTorch-style U(−1/√H, 1/√H) parameters in the baseline's stacked layout."""
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(H)
    shapes = {"W": (GATES[kind] * H, H + vocab), "b": (GATES[kind] * H,), "Wy": (vocab, H)}
    shapes["by"] = (vocab,)
    if kind == "gru":
        shapes["b_cc"] = (H,)
    return {name: rng.uniform(-k, k, s).astype(dtype) for name, s in shapes.items()}


def build_numpy(kind: str, P: dict, x: np.ndarray, targets: np.ndarray) -> SimpleNamespace:
    forward_backward = NUMPY_CELLS[kind]

    def step() -> float:
        loss, grads = forward_backward(P, x, targets)
        for name, g in grads.items():  # SGD
            P[name] -= LR * g
        return loss

    return SimpleNamespace(params=P, step=step)


def check_numpy_baseline(kind: str) -> tuple[float, dict[str, int]]:
    """Max relative gradient difference, ours vs the baseline (float64, tiny shape), and the
    op counts of our graph. Raises SystemExit above 1e-6: a baseline computing something else
    would make every ratio meaningless."""
    from tinygrad_seq.autograd import count_ops

    x, y = make_batch(seed=1, batch=3, steps=5, vocab=7, dtype=np.float64)
    ours = build_ours(kind, 4, x, y, dtype=np.float64, seed=1)
    P = stacked_from_ours(kind, ours.cell, ours.head)
    loss = ours.loss_fn()
    ops = count_ops(loss)
    loss.backward()
    ours_grads = stacked_from_ours(kind, ours.cell, ours.head, attr="grad")
    base_loss, base_grads = NUMPY_CELLS[kind](P, x, y)
    worst = abs(base_loss - loss.item())
    for name, g in base_grads.items():
        worst = max(worst, float(np.max(np.abs(g - ours_grads[name]))))
    scale = max(1.0, *(float(np.max(np.abs(g))) for g in ours_grads.values()))
    if worst / scale > 1e-6:
        raise SystemExit(
            f"the NumPy {kind} baseline disagrees with ours: max gradient difference {worst:.2e}"
        )
    return worst / scale, ops


# ================================================================ PyTorch


def build_torch(kind: str, H: int, x: np.ndarray, targets: np.ndarray, loop: bool):
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    n_x, steps = x.shape[-1], x.shape[1]
    if loop:
        core = {"rnn": lambda: nn.RNNCell(n_x, H), "gru": lambda: nn.GRUCell(n_x, H),
                "lstm": lambda: nn.LSTMCell(n_x, H)}[kind]()  # fmt: skip
    else:
        core = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind](n_x, H, batch_first=True)
    head = nn.Linear(H, n_x)
    opt = torch.optim.SGD([*core.parameters(), *head.parameters()], lr=LR)
    x_in, y_flat = torch.from_numpy(x), torch.from_numpy(targets.reshape(-1)).long()

    def forward() -> Any:
        if loop:
            state, outputs = None, []
            for t in range(steps):
                state = core(x_in[:, t], state)
                outputs.append(state[0] if kind == "lstm" else state)
            out = torch.stack(outputs, dim=1)
        else:
            out, _ = core(x_in)
        return F.cross_entropy(head(out).reshape(-1, n_x), y_flat)

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        opt.step()
        return loss

    return SimpleNamespace(step=step)


def import_torch() -> Any:
    try:
        import torch

        return torch
    except Exception as exc:  # missing, or a broken install: the benchmark runs without it
        print(f"PyTorch not available ({type(exc).__name__}: {exc}); torch rows skipped")
        return None


# ================================================================ 1. training step


def bench_training(
    cells: list[str],
    hiddens: list[int],
    rounds: int,
    target: float,
    torch: Any,
    gap: float,
    baseline: Any = None,
) -> dict[int, dict[tuple[str, str], list[float]]]:
    """{H: {(implementation, cell): seconds per step, one per round}}."""
    x, y = make_batch()
    results = {}
    for H in hiddens:
        tasks: dict[tuple[str, str], tuple[Callable[[], Any], int]] = {}
        for kind in cells:
            steps = {
                OURS: build_ours(kind, H, x, y).step,
                NUMPY: build_numpy(kind, numpy_params(kind, H), x, y).step,
            }
            if baseline is not None:
                steps[BASELINE] = build_ours(kind, H, x, y, package=baseline.__name__).step
            if torch is not None:
                steps[FUSED] = build_torch(kind, H, x, y, loop=False).step
                steps[LOOP] = build_torch(kind, H, x, y, loop=True).step
            for name, step in steps.items():
                step()  # warm-up: compilation, allocator, BLAS threads (calibrate: a 2nd)
                tasks[(name, kind)] = (step, C.calibrate(step, target))
        t0 = time.perf_counter()

        def progress(r: int, _times: dict, H: int = H, t0: float = t0) -> None:
            print(f"  H={H}: round {r + 1}/{rounds} ({time.perf_counter() - t0:.0f} s)", flush=True)

        results[H] = C.interleave(tasks, rounds, on_round=progress, gap=gap)
    return results


def _ratio_cell(ratios: list[float], target: float) -> str:
    r = C.median(ratios)
    mark = "✓" if r >= target else f"✗ ({r / target - 1:+.0%})"
    return f"{r:.2f} {mark}"


def training_tables(results: dict, cells: list[str]) -> list[str]:
    out = []
    for H, times in results.items():
        impls = [i for i in IMPLS if any((i, k) in times for k in cells)]
        rows = []
        for impl in impls:
            row = [impl]
            for kind in cells:
                t = times.get((impl, kind))
                rate = "—" if t is None else C.fmt_rate(B * T / C.median(t))
                row.append(rate if t is None else f"{rate} ±{C.spread(t) / 2:.0%}")
            rows.append(row)
        out.append(f"Tokens per second, H={H} (median over rounds, ± half the range):\n")
        out.append(C.markdown_table(["implementation", *cells], rows) + "\n")
    header = ["ours ÷", *[f"{k} {H}" for H in results for k in cells], "target"]
    rows = []
    for impl in (BASELINE, NUMPY, LOOP, FUSED):
        if not any((impl, k) in times for times in results.values() for k in cells):
            continue
        row = [impl]
        for times in results.values():
            for kind in cells:
                if (impl, kind) not in times:
                    row.append("—")
                    continue
                pairs = zip(times[(OURS, kind)], times[(impl, kind)], strict=True)
                ratios = [base / ours for ours, base in pairs]
                row.append(_ratio_cell(ratios, TARGETS[impl]))
        rows.append([*row, f"≥ {TARGETS[impl]:.1f}"])
    out.append("Ratios, ours ÷ baseline in tokens per second (median of per-round ratios):\n")
    out.append(C.markdown_table(header, rows) + "\n")
    return out


# ================================================================ 2. per-op overhead


def chain(y: Any, n_ops: int = CHAIN_OPS) -> Any:
    """`n_ops` element-wise ops cycling y * 0.5, y + 0.1, tanh(y): works on ours and torch."""
    for i in range(n_ops):
        k = i % 3
        y = y * 0.5 if k == 0 else y + 0.1 if k == 1 else y.tanh()
    return y


def numpy_chain(y: np.ndarray, n_ops: int = CHAIN_OPS) -> np.ndarray:
    for i in range(n_ops):
        k = i % 3
        y = y * np.float32(0.5) if k == 0 else y + np.float32(0.1) if k == 1 else np.tanh(y)
    return y


def load_chain() -> tuple[Callable[[Any], Any], int, str]:
    """The chain of benchmarks/op_overhead.py when it imports and runs on ours, else ours.

    Returns (fn taking a tensor, number of ops in it as counted in our graph, source).
    """
    from tinygrad_seq import Tensor
    from tinygrad_seq.autograd import count_ops

    try:
        import op_overhead

        fn = op_overhead.chain
        y = fn(Tensor(np.ones((2, 3), np.float32), requires_grad=True), CHAIN_OPS)
        n = sum(count_ops(y).values())
        if y.shape == (2, 3) and n > 0:
            return (lambda t: fn(t, CHAIN_OPS)), n, "benchmarks/op_overhead.py: chain"
    except Exception:  # absent, or a different signature: fall back to the chain defined here
        pass
    y = chain(Tensor(np.ones((2, 3), np.float32), requires_grad=True))
    return chain, sum(count_ops(y).values()), "train_step.chain (y*0.5, y+0.1, tanh)"


def bench_op_overhead(rounds: int, torch: Any, target: float, gap: float) -> list[str]:
    from tinygrad_seq import Tensor

    fn, n_ops, source = load_chain()
    x = np.random.default_rng(0).standard_normal((32, 128)).astype(np.float32)
    ones = np.ones_like(x)

    def ours() -> None:
        fn(Tensor(x, requires_grad=True)).backward(ones)

    tasks: dict[str, Callable[[], Any]] = {"ours (forward + backward)": ours}
    torch_threads = None
    if torch is not None:
        # 4,096 elements is below PyTorch's parallel grain: every op is single-threaded in
        # every library, and idle OpenMP workers only cost PyTorch time on a shared machine
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        ones_t = torch.ones(x.shape)

        def eager() -> None:
            fn(torch.tensor(x, requires_grad=True)).backward(ones_t)

        tasks["PyTorch eager (forward + backward)"] = eager
    tasks["plain NumPy (forward only)"] = lambda: numpy_chain(x, n_ops)
    try:
        for f in tasks.values():
            f()
        plan = {k: (f, C.calibrate(f, target)) for k, f in tasks.items()}
        times = C.interleave(plan, rounds, gap=gap)
    finally:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
    per_op = {k: C.median(t) / n_ops * 1e6 for k, t in times.items()}
    rows = [[k, f"{v:.1f}", f"±{C.spread(times[k]) / 2:.0%}"] for k, v in per_op.items()]
    out = [
        f"Per-op overhead: chain of {n_ops} element-wise ops on a (32, 128) float32 tensor "
        f"({source}), µs per op; PyTorch with 1 intra-op thread for this part:\n",
        C.markdown_table(["", "µs per op", "± half range"], rows) + "\n",
    ]
    if torch is not None:
        names = list(times)
        pairs = zip(times[names[0]], times[names[1]], strict=True)
        ratios = [ours / eager for ours, eager in pairs]
        r = C.median(ratios)
        mark = "✓" if r <= 1.0 else f"✗ ({r - 1:+.0%})"
        out.append(f"ours ÷ PyTorch eager, per-op time: {r:.2f} {mark} (target ≤ 1.0)\n")
    return out


# ================================================================ 3. memory (subprocesses)


def child_memory(spec: dict) -> dict:
    """In a fresh process: peak RSS growth of one training step after a tiny warm-up step
    (which compiles every kernel), and for ours RSS after steps 5 and 20."""
    kind, H, impl = spec["cell"], spec["H"], spec["impl"]
    x, y = make_batch()
    tiny_x, tiny_y = make_batch(seed=2, batch=2, steps=3)
    C.GemmProbe(samples=1)._once()  # start the BLAS threads (their buffers) before measuring
    if impl == OURS:
        build_ours(kind, 8, tiny_x, tiny_y).step()
        step = build_ours(kind, H, x, y).step
    else:
        build_numpy(kind, numpy_params(kind, 8), tiny_x, tiny_y).step()
        step = build_numpy(kind, numpy_params(kind, H), x, y).step
    gc.collect()
    rss0, hwm0 = C.rss_kib(), C.hwm_kib()
    reset = C.reset_hwm()
    t0 = time.perf_counter()
    step()
    first_seconds = time.perf_counter() - t0
    hwm1 = C.hwm_kib()
    growth = hwm1 - rss0 if reset else max(hwm1 - hwm0, 0)
    out = {"growth_kib": growth, "hwm_reset": reset, "first_step_s": first_seconds}
    t0 = time.perf_counter()
    step()
    out["second_step_s"] = time.perf_counter() - t0
    if impl == OURS:
        rss = {}
        for k in range(3, 21):
            step()
            if k in (5, 20):
                rss[k] = C.rss_kib()
        out["rss5_kib"], out["rss20_kib"] = rss[5], rss[20]
    return out


def run_child(spec: dict, env: dict | None = None, timeout: float = 900) -> dict:
    """Run `child_memory`/`child_cold` in a fresh interpreter; its JSON result."""
    code = (
        "import time; t0 = time.perf_counter(); import sys; "
        f"sys.path.insert(0, {str(HERE)!r}); import train_step, json; "
        f"print('RESULT' + json.dumps(train_step.child_main({json.dumps(spec)!r}, t0)))"
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout
    )
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"child {spec} failed ({proc.returncode}): " + " | ".join(tail))
    return {**json.loads(lines[-1][len("RESULT") :]), "process_wall_s": wall}


def child_main(spec_json: str, t0: float) -> dict:
    spec = json.loads(spec_json)
    if spec["mode"] == "numba":  # what importing Numba alone costs, for reading the cold start
        t1 = time.perf_counter()
        import numba  # noqa: F401

        return {"import_s": time.perf_counter() - t1}
    return child_memory(spec) if spec["mode"] == "memory" else child_cold(spec, t0)


def bench_memory(cells: list[str], hiddens: list[int]) -> list[str]:
    rows, notes = [], set()
    for H in hiddens:
        for kind in cells:
            res = {
                impl: run_child({"mode": "memory", "cell": kind, "H": H, "impl": impl})
                for impl in (OURS, NUMPY)
            }
            ours, base = res[OURS], res[NUMPY]
            ratio = ours["growth_kib"] / max(base["growth_kib"], 1)
            mark = "✓" if ratio <= 1.5 else f"✗ ({ratio / 1.5 - 1:+.0%})"
            drift = ours["rss20_kib"] - ours["rss5_kib"]
            rows.append([
                f"{kind} {H}",
                f"{ours['growth_kib'] / 1024:.1f}",
                f"{base['growth_kib'] / 1024:.1f}",
                f"{ratio:.2f} {mark}",
                f"{ours['rss5_kib'] / 1024:.1f} → {ours['rss20_kib'] / 1024:.1f} "
                f"({drift / 1024:+.1f})" + (" ✓" if drift <= 1024 else " ✗"),
            ])  # fmt: skip
            for name, r in res.items():
                if not r["hwm_reset"]:
                    notes.add("VmHWM could not be reset: growth is the rise of the peak")
                if r["first_step_s"] > 3 * r["second_step_s"] + 0.2:
                    notes.add(
                        f"{name} {kind} {H}: the measured step took {r['first_step_s']:.2f} s, "
                        f"the next {r['second_step_s']:.2f} s (compilation, or a busy machine)"
                    )
    out = [
        "Memory: peak RSS growth during one training step (MiB), each in a fresh process "
        "after a tiny warm-up step; ours' RSS after step 5 → step 20:\n",
        C.markdown_table(
            ["cell H", "ours", "numpy BPTT", "ours ÷ numpy (≤ 1.5)", "ours RSS MiB, step 5 → 20"],
            rows,
        )
        + "\n",
    ]
    out += [f"note: {n}\n" for n in sorted(notes)]
    return out


# ================================================================ 4. cold start (subprocesses)


def child_cold(spec: dict, t0: float) -> dict:
    """Import the package, then build and run the first training step, timed from `t0`."""
    import tinygrad_seq.nn
    import tinygrad_seq.optim  # noqa: F401

    t1 = time.perf_counter()
    x, y = make_batch()
    step = build_ours(spec["cell"], spec["H"], x, y).step
    step()
    t2 = time.perf_counter()
    step()
    return {"import_s": t1 - t0, "first_step_s": t2 - t1, "next_step_s": time.perf_counter() - t2}


def bench_cold(cells: list[str], H: int = 128) -> list[str]:
    rows = []
    for kind in cells:
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            cold = run_child({"mode": "cold", "cell": kind, "H": H}, env=env)
            warm = run_child({"mode": "cold", "cell": kind, "H": H}, env=env)
        row = [f"{kind} {H}"]
        for res, limit in ((cold, 5.0), (warm, 1.5)):
            total = res["import_s"] + res["first_step_s"]
            mark = "✓" if total < limit else f"✗ ({total / limit - 1:+.0%})"
            row += [
                f"{res['import_s']:.2f}",
                f"{res['first_step_s']:.2f}",
                f"{total:.2f} {mark}",
                f"{res['process_wall_s']:.2f}",
            ]
        row.append(f"{warm['next_step_s']:.3f}")
        rows.append(row)
    header = ["cell H", "cold: import", "first step", "sum (< 5 s)", "process"]
    header += ["warm cache: import", "first step", "sum (< 1.5 s)", "process", "a later step"]
    numba_import = run_child({"mode": "numba"})["import_s"]
    return [
        "Cold start (seconds): a fresh process with an empty NUMBA_CACHE_DIR (Numba compiles), "
        "then one with that cache warm; import = numpy + tinygrad_seq; process = the whole "
        "interpreter run (start-up, a second step and exit included):\n",
        C.markdown_table(header, rows) + "\n",
        f"For reference, `import numba` alone takes {numba_import:.2f} s in a fresh interpreter "
        "(tinygrad_seq imports it on the first kernel call, inside the first step).\n",
    ]


# ================================================================ profile


def profile_ours(cells: list[str], hiddens: list[int], top: int = 15) -> None:
    x, y = make_batch()
    for H in hiddens:
        for kind in cells:
            step = build_ours(kind, H, x, y).step
            for _ in range(2):
                step()
            plain = C.median([C.time_calls(step, 1) for _ in range(3)])
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(5):
                step()
            profiler.disable()
            buf = io.StringIO()
            stats = pstats.Stats(profiler, stream=buf)
            stats.sort_stats("tottime").print_stats(top)
            print(
                f"\n==== cProfile of ours, {kind} H={H}, 5 steps, top {top} by tottime "
                f"(unprofiled: {plain * 1e3:.0f} ms a step, {B * T / plain / 1e3:.1f}k tokens/s)"
            )
            print(buf.getvalue().strip())


# ================================================================ main


def write_readme(text: str) -> None:
    doc = README.read_text() if README.exists() else f"# Benchmarks\n\n{RESULTS_HEADING}\n"
    start = doc.find(RESULTS_HEADING)
    if start < 0:
        doc = doc.rstrip("\n") + f"\n\n{RESULTS_HEADING}\n"
        start = doc.find(RESULTS_HEADING)
    body_start = start + len(RESULTS_HEADING)
    nxt = doc.find("\n## ", body_start)
    tail = "" if nxt < 0 else doc[nxt:]
    README.write_text(doc[:body_start] + "\n\n" + text.strip() + "\n" + tail)
    print(f"wrote the tables to {README}")


def header_lines(torch: Any) -> list[str]:
    m = C.machine_info()
    th = C.thread_info(torch)
    try:
        from tinygrad_seq.autograd import memory

        tuned = "yes" if memory.tuned else "no"
    except Exception:
        tuned = "unknown"
    load = C.load_average()
    lines = [
        f"- machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), "
        f"SIMD {m['simd']}, {m['memory']}",
        f"- software: Python {m['python']}, NumPy {m['numpy']} ({m['blas']}, kernel "
        f"{th['openblas_core']}), Numba {m['numba']}, PyTorch "
        + (torch.__version__ if torch is not None else "not installed"),
        f"- threads: NumPy BLAS {th['numpy_blas_threads']} ({th['blas_threads_from']})"
        + (
            f", PyTorch {th['torch_threads']} intra-op / {th['torch_interop_threads']} inter-op"
            if torch is not None
            else ""
        ),
        "- environment: " + ", ".join(f"{v}={th[v]}" for v in C.THREAD_ENV + C.OPENBLAS_ENV),
        f"- glibc malloc thresholds raised (tinygrad_seq.tune_allocator()): {tuned} "
        "(process-wide, so every implementation timed in this process runs with them)",
        f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="rnn,gru,lstm", help="comma-separated: rnn,gru,lstm")
    parser.add_argument("--hidden", default="128,512", help="comma-separated hidden sizes")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7; --quick 3)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, shorter measurements")
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: train,overhead,memory,cold"
    )
    parser.add_argument("--write-readme", action="store_true", help="update benchmarks/README.md")
    parser.add_argument("--profile", action="store_true", help="cProfile ours' step and exit")
    parser.add_argument(
        "--wait-quiet", type=float, default=0.0, metavar="S",
        help="wait up to S seconds for other processes to leave the CPUs idle",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", metavar="PATH",
        help="also time the training step of another checkout's tinygrad_seq (a git worktree)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="set NumPy BLAS and PyTorch to N threads (default: leave each library's own)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    hiddens = [int(h) for h in args.hidden.split(",") if h.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if bad := [c for c in cells if c not in CELLS]:
        parser.error(f"unknown cells {bad}; choose from {CELLS}")
    if bad := skip - {"train", "overhead", "memory", "cold"}:
        parser.error(f"unknown parts to skip {sorted(bad)}")
    rounds = args.rounds or (3 if args.quick else 7)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    target = 0.12 if args.quick else 0.25  # seconds per measurement
    gap = 0.05 if args.quick else 0.15  # pause between measurements: BLAS/OpenMP threads park

    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")

    if args.profile:
        if args.threads:
            print("; ".join(C.set_threads(args.threads)))
        profile_ours(cells, hiddens)
        return 0
    if args.wait_quiet > 0:
        C.wait_for_quiet(args.wait_quiet)

    torch = import_torch()
    import tinygrad_seq

    baseline = C.import_baseline(args.baseline) if args.baseline else None

    tinygrad_seq.tune_allocator()  # what a training program does (importing does not)

    if args.threads:
        print("threads set: " + "; ".join(C.set_threads(args.threads, torch)))

    started = time.perf_counter()
    probe = C.GemmProbe(samples=5 if args.quick else 7)
    before = probe.measure()
    used = C.others_cpu(1.0)
    if C.spread(before) > C.DISTURBANCE_THRESHOLD or (used or 0) > C.DISTURBANCE_THRESHOLD:
        print(
            f"DISTURBED (at start): GEMM probe spread {C.spread(before):.0%}, other processes "
            f"use {used or 0:.2f} cores; expect noisy numbers (see --wait-quiet)",
            flush=True,
        )
    watch = C.CpuWatch().start()
    report = [f"Run of `{' '.join(['python benchmarks/train_step.py', *sys.argv[1:]])}`, "
              f"{rounds} rounds, {time.strftime('%Y-%m-%d %H:%M')}:\n",
              "\n".join(header_lines(torch)) + "\n"]  # fmt: skip
    print("\n".join(report), flush=True)

    checks = []
    for kind in cells:
        err, ops = check_numpy_baseline(kind)
        shown = ", ".join(f"{k}×{v}" for k, v in sorted(ops.items(), key=lambda kv: -kv[1]))
        checks.append(f"- {kind}: max gradient difference {err:.1e}; our graph at T=5: {shown}")
    report.append(
        "NumPy baseline vs ours, float64, B=3 T=5 V=7 H=4 (must agree to 1e-6):\n\n"
        + "\n".join(checks)
        + "\n"
    )
    print(report[-1], flush=True)

    parts: list[tuple[str, Callable[[], list[str]]]] = []
    if "train" not in skip:

        def train() -> list[str]:
            return training_tables(
                bench_training(cells, hiddens, rounds, target, torch, gap, baseline), cells
            )

        parts.append(("training step", train))
    if "overhead" not in skip:
        parts.append(("per-op overhead", lambda: bench_op_overhead(rounds, torch, target, gap)))
    if "memory" not in skip:
        parts.append(("memory", lambda: bench_memory(cells, hiddens)))
    if "cold" not in skip:
        parts.append(("cold start", lambda: bench_cold(cells)))
    for name, run in parts:
        print(f"== {name} ...", flush=True)
        try:
            section = run()
        except Exception as exc:  # report the failure and go on with the other parts
            section = [f"{name}: FAILED ({type(exc).__name__}: {exc})\n"]
        print("\n".join(section), flush=True)
        report += section

    others = watch.stop()
    after = probe.measure()
    lines, disturbed = C.disturbance_report(before, after, others)
    load = C.load_average()
    lines.append(f"load average at end: {load[0]:.2f} (1 min), on {os.cpu_count()} CPUs")
    lines.append(f"total time: {time.perf_counter() - started:.0f} s")
    quiet = "\n".join(["Machine during the run:\n", *[f"- {x}" for x in lines + disturbed]])
    report.append(quiet + "\n")
    print(quiet)
    if args.write_readme:
        write_readme("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
