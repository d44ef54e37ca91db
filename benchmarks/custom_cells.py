"""Cells compiled from their own graph against the same cells interpreted, and the built-ins
compiled against their hand-fused steps: one training step, tokens/s, interleaved.

The workload is `train_step.py`'s (a character-LM step: B=32, T=64, V=65 one-hot, one layer,
linear head, mean cross-entropy, full BPTT, SGD), shared through its `make_batch` and `LR`.
Each cell runs as

- `compiled`: `Recurrent(cell)` with the hand-fused steps off, so the built-ins take the
  compiler too (`tinygrad_seq.compiler`);
- `interpreted`: `Recurrent(cell, compile=False)`, op by op, as every user cell ran before;
- `hand-fused`: the built-in LSTM and GRU (reset after) through `nn/fused.py`;
- `torch loop`: the same cell's equations as a PyTorch Python loop of the same primitives
  (when PyTorch is installed; not written for the layer-norm LSTM and the reset-after GRU).

Every measurement is a median over rounds, each round running every implementation once in
a rotated order; the machine's quietness is reported (GEMM probe, CPU used by others). One
thread (far less disturbed by neighbours on these 2-core machines) and the library default
(all cores) are run one after the other in the same process, with `tune_allocator()` on, as
in `train_step.py` and the `tinygrad-seq` command. The last table is a step
node's fixed cost: µs per step, forward + backward, at B = 1 and n_a = 4.

    python benchmarks/custom_cells.py [--hidden 128,512] [--rounds 5] [--target 0.3]

The user cells are the four of docs/your_own_cell.md, loaded by `tests/doc_cells.py`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402
from train_step import LR, make_batch  # noqa: E402

COMPILED, INTERPRETED, FUSED = "compiled", "interpreted", "hand-fused"
TORCH = "torch loop"


def _torch_step_fn(name: str) -> Callable[..., Any] | None:
    """The cell's equations as a PyTorch loop body `(params, x_t, state) -> state`, the same
    primitives as ours (None where no such loop is written here)."""
    import torch

    cat, sig, tanh = torch.cat, torch.sigmoid, torch.tanh

    def mgu(P, x, a):
        f = sig(cat([a, x], 1) @ P["W_f"].T + P["b_f"])
        return (1 - f) * a + f * tanh(cat([f * a, x], 1) @ P["W_a"].T + P["b_a"])

    def indrnn(P, x, a):
        return torch.relu(x @ P["W"].T + P["u"] * a + P["b"])

    def gru_course(P, x, a):
        ax = cat([a, x], 1)
        r, u = sig(ax @ P["W_r"].T + P["b_r"]), sig(ax @ P["W_u"].T + P["b_u"])
        return u * tanh(cat([r * a, x], 1) @ P["W_c"].T + P["b_c"]) + (1 - u) * a

    def gru_simplified(P, x, a):
        ax = cat([a, x], 1)
        u = sig(ax @ P["W_u"].T + P["b_u"])
        return u * tanh(ax @ P["W_c"].T + P["b_c"]) + (1 - u) * a

    def lstm(P, x, state, peep=False):
        a, c = state
        ax = cat([a, x], 1)
        ct = tanh(ax @ P["W_c"].T + P["b_c"])
        gate = [ax @ P[f"W_{g}"].T + P[f"b_{g}"] for g in "ufo"]
        if peep:
            gate = [z + P[f"p_{g}"] * c for z, g in zip(gate, "ufo", strict=True)]
        u, f, o = (sig(z) for z in gate)
        c = u * ct + f * c
        return o * tanh(c), c

    return {
        "MGU (user)": mgu,
        "IndRNN (user)": indrnn,
        "GRU, course (reset before)": gru_course,
        "GRU, simplified": gru_simplified,
        "LSTM, peephole": lambda P, x, s: lstm(P, x, s, peep=True),
        "LSTM": lstm,
    }.get(name)


def build_torch(cell: Any, name: str, H: int, x: np.ndarray, y: np.ndarray) -> Any:
    """The same cell (its own initial weights) as a PyTorch Python loop, one SGD step."""
    body = _torch_step_fn(name)
    if body is None:
        return None
    import torch

    P = {n: torch.tensor(p.data, requires_grad=True) for n, p in cell.named_parameters()}
    head = torch.nn.Linear(H, x.shape[-1])
    params = [*P.values(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=LR)
    xt, yt = torch.tensor(x), torch.tensor(y.reshape(-1))
    parts = getattr(cell, "state_parts", 1)

    def step() -> Any:
        opt.zero_grad()
        zeros = torch.zeros(x.shape[0], H)
        state: Any = zeros if parts == 1 else (zeros, zeros)
        outs = []
        for t in range(x.shape[1]):
            state = body(P, xt[:, t], state)
            outs.append(state if parts == 1 else state[0])
        logits = head(torch.stack(outs, 1)).reshape(-1, x.shape[-1])
        loss = torch.nn.functional.cross_entropy(logits, yt)
        loss.backward()
        opt.step()
        return loss

    return step


def _doc_cells() -> dict[str, type]:
    path = HERE.parent / "tests" / "doc_cells.py"
    spec = importlib.util.spec_from_file_location("doc_cells", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["doc_cells"] = module
    spec.loader.exec_module(module)
    return module.load_doc_cells()


def cells() -> dict[str, tuple[Callable[[int, int, Any], Any], bool]]:
    """name -> (make(n_x, n_a, rng), has a hand-fused step)."""
    from tinygrad_seq.nn import GRUCell, LSTMCell

    doc = _doc_cells()
    return {
        "MGU (user)": (lambda n_x, n_a, rng: doc["MGUCell"](n_x, n_a, rng=rng), False),
        "IndRNN (user)": (lambda n_x, n_a, rng: doc["IndRNNCell"](n_x, n_a, rng=rng), False),
        "layer-norm LSTM (user)": (
            lambda n_x, n_a, rng: doc["LayerNormLSTMCell"](n_x, n_a, rng=rng),
            False,
        ),
        "GRU, course (reset before)": (lambda n_x, n_a, rng: GRUCell(n_x, n_a, rng=rng), False),
        "GRU, simplified": (lambda n_x, n_a, rng: GRUCell(n_x, n_a, full=False, rng=rng), False),
        "LSTM, peephole": (
            lambda n_x, n_a, rng: LSTMCell(n_x, n_a, peephole=True, rng=rng),
            True,
        ),
        "LSTM": (lambda n_x, n_a, rng: LSTMCell(n_x, n_a, rng=rng), True),
        "GRU, reset after": (
            lambda n_x, n_a, rng: GRUCell(n_x, n_a, reset_after=True, rng=rng),
            True,
        ),
    }


def build(make: Callable, how: str, H: int, x: np.ndarray, y: np.ndarray) -> Callable[[], Any]:
    """One SGD training step of the cell, run `how`."""
    from tinygrad_seq import Tensor
    from tinygrad_seq.nn import Linear, Recurrent
    from tinygrad_seq.nn.functional import cross_entropy
    from tinygrad_seq.nn.fused import use_fused_cells
    from tinygrad_seq.optim import SGD

    rng = np.random.default_rng(0)
    n_x = x.shape[-1]
    cell, head = make(n_x, H, rng), Linear(H, n_x, rng=rng)
    layer = Recurrent(cell, compile=how != INTERPRETED)
    opt = SGD(cell.parameters() + head.parameters(), lr=LR)
    x_in, y_flat = Tensor(x), y.reshape(-1)

    def step() -> Any:
        use_fused_cells(how == FUSED)
        opt.zero_grad()
        outputs, _ = layer(x_in)
        loss = cross_entropy(head(outputs).reshape(-1, n_x), y_flat)
        loss.backward()
        opt.step()
        return loss

    return step


def bench(hiddens: list[int], rounds: int, target: float, gap: float, torch_ok: bool) -> list[str]:
    x, y = make_batch()
    lines = []
    for H in hiddens:
        tasks: dict[tuple[str, str], tuple[Callable[[], Any], int]] = {}
        for name, (make, fused) in cells().items():
            for how in (COMPILED, INTERPRETED, *((FUSED,) if fused else ())):
                step = build(make, how, H, x, y)
                step()  # warm-up: tracing, kernel compilation (or the cache), allocator
                tasks[(name, how)] = (step, C.calibrate(step, target))
            if torch_ok:
                theirs = build_torch(make(x.shape[-1], H, np.random.default_rng(0)), name, H, x, y)
                if theirs is not None:
                    theirs()
                    tasks[(name, TORCH)] = (theirs, C.calibrate(theirs, target))
        times = C.interleave(tasks, rounds, gap=gap)
        rate = {key: B_T / C.median(v) for key, v in times.items()}
        rows = []
        for name in cells():
            c, i = rate[(name, COMPILED)], rate[(name, INTERPRETED)]
            f = rate.get((name, FUSED))
            tl = rate.get((name, TORCH))
            rows.append(
                [
                    name,
                    C.fmt_rate(c),
                    C.fmt_rate(i),
                    f"{c / i:.2f}×",
                    "" if f is None else C.fmt_rate(f),
                    "" if f is None else f"{c / f:.2f}×",
                    "" if tl is None else C.fmt_rate(tl),
                    "" if tl is None else f"{c / tl:.2f}×",
                    f"{max(C.spread(times[(name, how)]) for how in (COMPILED, INTERPRETED)):.0%}",
                ]
            )
        header = [
            "cell", COMPILED, INTERPRETED, "÷ interp.", FUSED, "÷ fused", TORCH, "÷ torch",
            "spread",
        ]  # fmt: skip
        lines.append(f"\nH = {H}, tokens/s (median of {rounds} rounds):\n")
        lines.append(C.markdown_table(header, rows, "lrrrrrrrr"))
    return lines


def fixed_cost(rounds: int) -> list[str]:
    """µs per step, forward + backward, at B = 1, n_a = 4, T = 64: the node's own cost."""
    from tinygrad_seq import Tensor
    from tinygrad_seq.nn import Recurrent

    make = cells()["MGU (user)"][0]
    x = Tensor(np.random.default_rng(0).standard_normal((1, 64, 4)).astype(np.float32))
    tasks = {}
    for how in (COMPILED, INTERPRETED):
        layer = Recurrent(make(4, 4, np.random.default_rng(0)), compile=how == COMPILED)

        def run(layer: Any = layer) -> None:
            outputs, _ = layer(x)
            outputs.sum().backward()

        run()
        tasks[how] = (run, C.calibrate(run, 0.2))
    times = C.interleave(tasks, rounds)
    rows = [[how, f"{C.median(v) / 64 * 1e6:.0f} µs"] for how, v in times.items()]
    return ["\nMGU step node, B = 1, n_a = 4 (µs per step, forward + backward):\n",
            C.markdown_table(["", "per step"], rows, "lr")]  # fmt: skip


B_T = 32 * 64


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", default="128", help="comma-separated hidden sizes")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--target", type=float, default=0.3, help="seconds per measurement")
    p.add_argument("--gap", type=float, default=0.05, help="sleep before each measurement")
    args = p.parse_args()
    hiddens = [int(h) for h in args.hidden.split(",")]
    import tinygrad_seq
    from tinygrad_seq.nn.fused import use_fused_cells

    tinygrad_seq.tune_allocator()  # what a training program does (importing does not)
    started = time.perf_counter()
    probe = C.GemmProbe()
    before = probe.measure()
    watch = C.CpuWatch().start()
    print("machine:", C.machine_info())
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed: no torch loop column (pip install torch==2.13.0)")
    default = os.cpu_count() or 1
    for threads in (1, default):
        C.set_threads(threads, torch)
        print(f"\n== {threads} thread(s): {C.thread_info(torch)}", flush=True)
        lines = bench(hiddens, args.rounds, args.target, args.gap, torch is not None)
        print("\n".join(lines), flush=True)
    C.set_threads(1)
    print("\n".join(fixed_cost(args.rounds)))
    use_fused_cells(True)
    others = watch.stop()
    lines, disturbed = C.disturbance_report(before, probe.measure(), others)
    print("\nMachine during the run:")
    for line in lines + disturbed:
        print(f"- {line}")
    print(f"- total time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
