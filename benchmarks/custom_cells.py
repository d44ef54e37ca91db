"""Cells compiled from their own graph against the same cells interpreted, and the built-ins
compiled against their hand-fused steps: one training step, tokens/s, interleaved.

The workload is `train_step.py`'s (a character-LM step: B=32, T=64, V=65 one-hot, one layer,
linear head, mean cross-entropy, full BPTT, SGD), shared through its `make_batch` and `LR`.
Each cell runs as

- `compiled`: `Recurrent(cell)` with the hand-fused steps off, so the built-ins take the
  compiler too (`tinygrad_seq.compiler`);
- `interpreted`: `Recurrent(cell, compile=False)`, op by op, as every user cell ran before;
- `hand-fused`: the built-in LSTM and GRU (reset after) through `nn/fused.py`.

Every measurement is a median over rounds, each round running every implementation once in
a rotated order; the machine's quietness is reported (GEMM probe, CPU used by others). One
thread (far less disturbed by neighbours on these 2-core machines) and the library default
(all cores) are run one after the other in the same process. The last table is a step
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


def bench(hiddens: list[int], rounds: int, target: float, gap: float) -> list[str]:
    x, y = make_batch()
    lines = []
    for H in hiddens:
        tasks: dict[tuple[str, str], tuple[Callable[[], Any], int]] = {}
        for name, (make, fused) in cells().items():
            for how in (COMPILED, INTERPRETED, *((FUSED,) if fused else ())):
                step = build(make, how, H, x, y)
                step()  # warm-up: tracing, kernel compilation (or the cache), allocator
                tasks[(name, how)] = (step, C.calibrate(step, target))
        times = C.interleave(tasks, rounds, gap=gap)
        rate = {key: B_T / C.median(v) for key, v in times.items()}
        rows = []
        for name in cells():
            c, i = rate[(name, COMPILED)], rate[(name, INTERPRETED)]
            f = rate.get((name, FUSED))
            rows.append(
                [
                    name,
                    C.fmt_rate(c),
                    C.fmt_rate(i),
                    f"{c / i:.2f}×",
                    "" if f is None else C.fmt_rate(f),
                    "" if f is None else f"{c / f:.2f}×",
                    f"{max(C.spread(times[(name, how)]) for how in (COMPILED, INTERPRETED)):.0%}",
                ]
            )
        header = ["cell", COMPILED, INTERPRETED, "÷ interp.", FUSED, "÷ fused", "spread"]
        lines.append(f"\nH = {H}, tokens/s (median of {rounds} rounds):\n")
        lines.append(C.markdown_table(header, rows, "lrrrrrr"))
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
    from tinygrad_seq.nn.fused import use_fused_cells

    started = time.perf_counter()
    probe = C.GemmProbe()
    before = probe.measure()
    watch = C.CpuWatch().start()
    print("machine:", C.machine_info())
    default = os.cpu_count() or 1
    for threads in (1, default):
        C.set_threads(threads)
        print(f"\n== {threads} thread(s): {C.thread_info()}", flush=True)
        print("\n".join(bench(hiddens, args.rounds, args.target, args.gap)), flush=True)
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
