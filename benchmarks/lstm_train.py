"""One training step of a character LSTM language model: tinygrad_seq beside PyTorch.

    python benchmarks/lstm_train.py [--hidden 128 512] [--rounds 7] [--batch 32] [--steps 64]

The step: one-hot input x (B, T, V) float32 → `Recurrent(LSTMCell(V, H))` → `Linear(H, V)` →
mean cross-entropy over every step (B·T targets) → `backward()` (full BPTT) → one SGD step.
B = 32, T = 64, V = 65 (a Shakespeare-sized character vocabulary), H = 128 and 512.

When PyTorch imports, the same network is timed in the same run as `nn.LSTM` (fused, oneDNN)
and as an `nn.LSTMCell` called in a Python loop. Each round times every implementation once,
in a rotated order, so a slow spell of a shared machine hits all of them; the table gives
medians over rounds, tokens per second = B·T / step time, and ratios ours ÷ theirs in tokens
per second (> 1: ours is faster) as the median of per-round ratios. Thread counts (BLAS,
PyTorch) and versions are printed first: two-core machines are noisy, trust ratios.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

import tinygrad_seq
from tinygrad_seq import Tensor
from tinygrad_seq.nn import Linear, LSTMCell, Recurrent
from tinygrad_seq.nn import functional as F

try:
    import torch
except ImportError:  # the PyTorch columns are simply left out
    torch = None

V = 65


# ---------------------------------------------------------------- facts about the machine


def blas_threads() -> str:
    """OpenBLAS's thread count, asked from the library NumPy loaded (or 'unknown')."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        paths = set()
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for name in (
            "scipy_openblas_get_num_threads64_",
            "openblas_get_num_threads64_",
            "openblas_get_num_threads",
        ):
            if hasattr(lib, name):
                return f"{getattr(lib, name)()} (OpenBLAS)"
    return "unknown"


def print_facts(args: argparse.Namespace) -> None:
    import numba

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"tinygrad_seq {tinygrad_seq.__version__}, torch {torch.__version__ if torch else '-'}"
    )
    print(
        f"cpu cores {os.cpu_count()}, {platform.machine()}; numpy BLAS threads {blas_threads()}; "
        f"torch threads {torch.get_num_threads() if torch else '-'}"
    )
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS") if k in os.environ}
    print(
        f"thread env {env or '{}'}; B={args.batch}, T={args.steps}, V={V}, float32, "
        f"{args.rounds} rounds after {args.warmup} warm-up"
    )


# ---------------------------------------------------------------- the three implementations


def ours(H: int, B: int, T: int, x: np.ndarray, y: np.ndarray) -> Callable[[], float]:
    rng = np.random.default_rng(0)
    layer, head = Recurrent(LSTMCell(V, H, rng=rng)), Linear(H, V, rng=rng)
    params = layer.parameters() + head.parameters()
    cross_entropy = getattr(F, "cross_entropy", None)

    def loss_of(logits: Tensor, targets: np.ndarray) -> Tensor:
        if cross_entropy is not None:
            return cross_entropy(logits, targets)
        picked = logits.log_softmax(axis=-1)[np.arange(len(targets)), targets]
        return -picked.mean()

    def step() -> float:
        outputs, _ = layer(x)  # (B, T, H)
        loss = loss_of(head(outputs).reshape(B * T, V), y.reshape(-1))
        for p in params:
            p.grad = None
        loss.backward()
        for p in params:  # plain SGD, lr 0.1
            p.data -= np.float32(0.1) * p.grad
        return loss.item()

    return step


def torch_fused(H: int, B: int, T: int, x: np.ndarray, y: np.ndarray) -> Callable[[], float]:
    torch.manual_seed(0)
    lstm, head = torch.nn.LSTM(V, H, batch_first=True), torch.nn.Linear(H, V)
    opt = torch.optim.SGD([*lstm.parameters(), *head.parameters()], lr=0.1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.reshape(-1))

    def step() -> float:
        outputs, _ = lstm(xt)
        loss = torch.nn.functional.cross_entropy(head(outputs).reshape(B * T, V), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step


def torch_cell_loop(H: int, B: int, T: int, x: np.ndarray, y: np.ndarray) -> Callable[[], float]:
    torch.manual_seed(0)
    cell, head = torch.nn.LSTMCell(V, H), torch.nn.Linear(H, V)
    opt = torch.optim.SGD([*cell.parameters(), *head.parameters()], lr=0.1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.reshape(-1))

    def step() -> float:
        state, outputs = None, []
        for t in range(T):
            state = cell(xt[:, t], state)
            outputs.append(state[0])
        loss = torch.nn.functional.cross_entropy(
            head(torch.stack(outputs, 1)).reshape(B * T, V), yt
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step


# ---------------------------------------------------------------- timing


def run(H: int, args: argparse.Namespace) -> dict[str, list[float]]:
    rng = np.random.default_rng(H)
    B, T = args.batch, args.steps
    ids = rng.integers(0, V, size=(B, T + 1))
    x = np.eye(V, dtype=np.float32)[ids[:, :-1]]  # one-hot x<t> = y<t-1>
    y = ids[:, 1:].astype(np.int64)
    impls: dict[str, Callable[[], float]] = {"tinygrad_seq": ours(H, B, T, x, y)}
    if torch is not None:
        impls["torch nn.LSTM"] = torch_fused(H, B, T, x, y)
        impls["torch LSTMCell loop"] = torch_cell_loop(H, B, T, x, y)
    names = list(impls)
    for _ in range(args.warmup):
        for name in names:
            impls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            impls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def report(H: int, times: dict[str, list[float]], tokens: int) -> list[str]:
    ours_times = times["tinygrad_seq"]
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        ratio = statistics.median(t / o for t, o in zip(ts, ours_times, strict=True))
        rows.append(
            f"| {H} | {name} | {1e3 * median:.1f} | {tokens / median:,.0f} | "
            f"{'' if name == 'tinygrad_seq' else f'{ratio:.2f}'} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    tinygrad_seq.tune_allocator()  # what a training program does (importing does not)
    print_facts(args)
    lines = [
        "| H | implementation | ms / step | tokens / s | ours ÷ this (tokens/s) |",
        "|---:|---|---:|---:|---:|",
    ]
    for H in args.hidden:
        lines += report(H, run(H, args), args.batch * args.steps)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
