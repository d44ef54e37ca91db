"""What `tinygrad_seq.tune_allocator()` buys: the training step with and without it.

    python benchmarks/allocator.py [--rounds 5] [--steps 8] [--cells lstm] [--hidden 128]

The workload is `train_step.py`'s (B=32, T=64, V=65 one-hot, full BPTT, SGD). The tuning is
process-wide, so every measurement is a fresh interpreter: one with the call, one without,
alternating, `--rounds` pairs. Each child warms up (compiles, fills caches) for two steps and
then times `--steps` steps; the table gives the median tokens/s of each side and the median of
the per-round ratios. Thread count: whatever the environment gives (report both
`OPENBLAS_NUM_THREADS=1` and the default).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _common as C  # noqa: E402


def child(kind: str, hidden: int, steps: int, tune: bool) -> dict:
    """Run in a fresh interpreter: time `steps` training steps, with or without the tuning."""
    import train_step as S

    import tinygrad_seq

    tuned = tinygrad_seq.tune_allocator() if tune else False
    x, y = S.make_batch()
    ours = S.build_ours(kind, hidden, x, y)
    ours.step()
    ours.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        ours.step()
    seconds = (time.perf_counter() - t0) / steps
    return {"tokens_per_s": S.B * S.T / seconds, "tuned": tuned}


def run(kind: str, hidden: int, steps: int, tune: bool) -> dict:
    code = (
        f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import allocator; "
        f"print('RESULT' + json.dumps(allocator.child({kind!r}, {hidden}, {steps}, {tune})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cells", default="lstm", help="comma-separated: rnn,gru,lstm")
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args(argv)
    threads, source = C.blas_threads()
    print(f"training step, B=32 T=64 V=65, H={args.hidden}, {args.steps} timed steps per child;")
    print(f"BLAS threads {threads} ({source}); one fresh process per measurement\n")
    rows = []
    watch = C.CpuWatch().start()
    for kind in args.cells.split(","):
        on, off = [], []
        for r in range(args.rounds):
            pair = [True, False] if r % 2 == 0 else [False, True]
            for tune in pair:
                result = run(kind, args.hidden, args.steps, tune)
                (on if tune else off).append(result["tokens_per_s"])
        ratio = C.median([a / b for a, b in zip(on, off, strict=True)])
        rows.append([kind, C.fmt_rate(C.median(off)), C.fmt_rate(C.median(on)), f"{ratio:.2f}"])
    others = watch.stop()
    print(
        C.markdown_table(
            ["cell", "without (tok/s)", "with tune_allocator()", "with ÷ without"], rows
        )
    )
    busy = f"{others:.2f} cores" if others is not None else "unknown"
    print(f"\nCPU used by other processes during the run: {busy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
