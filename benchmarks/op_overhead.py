"""Per-op overhead: µs per op, forward + backward, on a chain of 1,000 element-wise ops.

    python benchmarks/op_overhead.py [--rounds 7] [--ops 1000] [--target 0.1]

The chain (`chain` below, defined once) cycles `y * 0.5`, `y + 0.1`, `tanh(y)` on a (32, 128)
float32 tensor. The same function runs on every implementation:

- tinygrad_seq with its Numba kernels, and again on the NumPy reference kernels
  (`use_reference_kernels(True)`, what `TINYGRAD_SEQ_KERNELS=numpy` selects);
- PyTorch eager, when `import torch` works;
- plain NumPy, forward only: the floor, what the arithmetic itself costs.

Forward-only rows (ours under `no_grad`, PyTorch under `torch.no_grad`) show how much of the
time is recording the graph. After a warm-up (which compiles the Numba kernels), each round
runs every implementation once, in an order rotated each round; the table gives medians over
rounds and `ours ÷ torch` as the median of per-round ratios. Garbage collection stays on, as
in real use. A busy machine (other processes using CPU during the run) is reported.

PyTorch runs with one intra-op thread by default (`--torch-threads`): every op here is
single-threaded in all three libraries (4,096 elements is below PyTorch's parallel grain), and
on a shared 2-core machine PyTorch's idle OpenMP workers otherwise cost it up to 100x.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _common as C  # noqa: E402

N_OPS = 1000
SHAPE = (32, 128)


def chain(y: Any, n_ops: int = N_OPS, tanh: Callable[[Any], Any] | None = None) -> Any:
    """`n_ops` element-wise ops cycling y * 0.5, y + 0.1, tanh(y) (ours, torch or NumPy)."""
    tanh = tanh or (lambda t: t.tanh())
    for i in range(n_ops):
        k = i % 3
        y = y * 0.5 if k == 0 else y + 0.1 if k == 1 else tanh(y)
    return y


def _import_torch() -> Any:
    try:
        import torch
    except Exception:  # absent or broken: the benchmark runs without it
        return None
    return torch


def build_tasks(
    x: np.ndarray, n_ops: int, torch: Any, baseline: Any = None
) -> dict[str, Callable[[], Any]]:
    """Every implementation as a zero-argument call that runs the chain once."""
    from tinygrad_seq import Tensor, no_grad
    from tinygrad_seq.autograd import kernels

    grad = np.ones_like(x)

    def ours() -> None:
        chain(Tensor(x, requires_grad=True), n_ops).backward(grad)

    def theirs() -> None:
        chain(baseline.Tensor(x, requires_grad=True), n_ops).backward(grad)

    def ours_reference() -> None:
        previous = kernels.using_reference_kernels()
        kernels.use_reference_kernels(True)
        try:
            ours()
        finally:
            kernels.use_reference_kernels(previous)

    def ours_forward() -> None:
        with no_grad():
            chain(Tensor(x), n_ops)

    tasks: dict[str, Callable[[], Any]] = {
        "tinygrad_seq, Numba kernels": ours,
        "tinygrad_seq, NumPy reference kernels": ours_reference,
    }
    if baseline is not None:
        tasks["baseline checkout, Numba kernels"] = theirs
    if torch is not None:
        grad_t = torch.ones(x.shape)

        def eager() -> None:
            chain(torch.tensor(x, requires_grad=True), n_ops).backward(grad_t)

        def eager_forward() -> None:
            with torch.no_grad():
                chain(torch.tensor(x), n_ops)

        tasks["PyTorch eager"] = eager
    tasks["tinygrad_seq forward only (no_grad)"] = ours_forward
    if torch is not None:
        tasks["PyTorch eager forward only (no_grad)"] = eager_forward
    tasks["NumPy forward only (floor)"] = lambda: chain(x, n_ops, np.tanh)
    return tasks


def check_same_chain(x: np.ndarray, n_ops: int, torch: Any) -> list[str]:
    """Every implementation computes the same values (so they time the same work)."""
    from tinygrad_seq import Tensor

    t = Tensor(x, requires_grad=True)
    y = chain(t, n_ops)
    y.backward(np.ones_like(x))
    floor = chain(x, n_ops, np.tanh)
    assert y.dtype == floor.dtype == np.float32
    lines = [f"max |ours − NumPy| forward: {np.abs(y.data - floor).max():.1e}"]
    if torch is not None:
        tt = torch.tensor(x, requires_grad=True)
        yt = chain(tt, n_ops)
        yt.backward(torch.ones(x.shape))
        dy = np.abs(y.data - yt.detach().numpy()).max()
        dg = np.abs(t.grad - tt.grad.numpy()).max()
        lines.append(f"max |ours − torch|: forward {dy:.1e}, gradient {dg:.1e}")
    return lines


def environment(torch: Any) -> list[str]:
    machine = C.machine_info()
    threads = C.thread_info(torch)
    numba_threads = "n/a"
    try:
        import numba

        numba_threads = str(numba.config.NUMBA_NUM_THREADS)
    except ImportError:
        pass
    env = ", ".join(f"{k}={threads[k]}" for k in C.THREAD_ENV)
    lines = [
        f"machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs "
        f"({machine['usable_cpus']} usable), SIMD {machine['simd']}, {machine['memory']}",
        f"platform: {__import__('platform').platform()}, Python {machine['python']}",
        f"versions: numpy {machine['numpy']} ({machine['blas']}), numba {machine['numba']}, "
        f"torch {torch.__version__ if torch is not None else 'not installed'}",
        f"threads: NumPy BLAS {threads['numpy_blas_threads']} ({threads['blas_threads_from']}), "
        f"torch {threads.get('torch_threads', 'n/a')} "
        f"(interop {threads.get('torch_interop_threads', 'n/a')}), "
        f"Numba {numba_threads} (kernels are single-threaded); {env}",
        f"kernels: TINYGRAD_SEQ_KERNELS={os.environ.get('TINYGRAD_SEQ_KERNELS', 'unset')}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--ops", type=int, default=N_OPS, help="ops in the chain (default 1000)")
    parser.add_argument(
        "--target", type=float, default=0.1, help="seconds per measurement (default 0.1)"
    )
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="PyTorch intra-op threads (default 1)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for other processes to go quiet",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also time the tinygrad_seq of another checkout (e.g. a worktree of an older commit)",
    )
    args = parser.parse_args(argv)

    import tinygrad_seq

    tinygrad_seq.tune_allocator()  # what a training program does (importing no longer does)
    torch = _import_torch()
    if torch is not None:
        torch.set_num_threads(args.torch_threads)
    if args.wait_quiet > 0:
        C.wait_for_quiet(args.wait_quiet)
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    print(f"Per-op overhead: a chain of {args.ops} element-wise ops (y*0.5, y+0.1, tanh)")
    print(f"on a {SHAPE} float32 tensor, forward + backward unless marked\n")
    for line in environment(torch):
        print(line)
    baseline = C.import_baseline(args.baseline) if args.baseline else None
    if baseline is not None:
        print(f"baseline: the tinygrad_seq of {args.baseline}")
    tasks = build_tasks(x, args.ops, torch, baseline)
    for fn in tasks.values():  # warm up: compile kernels, fill allocator caches
        fn()
        fn()
    for line in check_same_chain(x, args.ops, torch):
        print(line)

    load_before = C.load_average()[0]
    watch = C.CpuWatch().start()
    plan = {name: (fn, C.calibrate(fn, args.target)) for name, fn in tasks.items()}
    times = C.interleave(plan, args.rounds)
    others = watch.stop()

    base = times.get("PyTorch eager")
    rows = []
    for name, values in times.items():
        per_op = C.median(values) / args.ops * 1e6
        ratio = "—"
        if base is not None:
            per_round = [v / b for v, b in zip(values, base, strict=True)]
            ratio = f"{C.median(per_round):.2f}"
        rows.append([name, f"{per_op:.2f}", f"±{C.spread(values) / 2:.0%}", ratio])
    reps = ", ".join(str(reps) for _, reps in plan.values())
    print(f"\n{args.rounds} interleaved rounds; chains per measurement: {reps}\n")
    header = ["implementation", "µs per op", "± half range", "÷ PyTorch eager"]
    print(C.markdown_table(header, rows))
    if base is not None:
        ours = times["tinygrad_seq, Numba kernels"]
        ratio = C.median([o / b for o, b in zip(ours, base, strict=True)])
        verdict = "no slower than" if ratio <= 1.0 else "slower than"
        print(f"\nours ÷ PyTorch eager (forward + backward): {ratio:.2f}, {verdict} PyTorch eager")
    else:
        print("\nPyTorch is not installed: no comparison with PyTorch eager")
    if baseline is not None:
        ours, theirs = (
            times["tinygrad_seq, Numba kernels"],
            times["baseline checkout, Numba kernels"],
        )
        ratio = C.median([o / b for o, b in zip(ours, theirs, strict=True)])
        print(f"ours ÷ baseline checkout (forward + backward): {ratio:.2f}")
    busy = f"{others:.2f} cores" if others is not None else "unknown"
    print(f"load average before: {load_before:.2f}; CPU used by other processes: {busy}")
    if others is not None and others > C.DISTURBANCE_THRESHOLD:
        print("DISTURBED: other processes used CPU during the run; treat the numbers as noisy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
