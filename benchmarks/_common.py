"""Helpers shared by the benchmarks: machine and thread facts, timing, noise checks, memory.

Nothing here imports tinygrad_seq or torch at import time, so a benchmark's child processes
(memory, cold start) can use these helpers without paying for, or being changed by, either.

- `machine_info()`, `thread_info()`: what the numbers were measured on (CPU model, cores, SIMD
  flags, library versions, BLAS and PyTorch thread counts, the OpenBLAS environment variables).
- `median`, `spread`, `interleave`, `calibrate`: timing. Every measurement is a median over
  rounds, and each round runs every implementation once, in a rotated order, so a slow spell of
  the machine hits all of them rather than one.
- `GemmProbe`, `CpuWatch`, `wait_for_quiet`, `load_average`: is the machine quiet? A fixed NumPy
  GEMM workload timed before and after (two-thread BLAS on 2 cores stalls badly when another
  process runs), and the CPU time other processes used during the run, from /proc/stat.
- `rss_kib`, `hwm_kib`, `reset_hwm`: resident memory of this process, from /proc/self/status.
"""

from __future__ import annotations

import ctypes
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DISTURBANCE_THRESHOLD = 0.25  # relative spread or drift of the GEMM probe that flags a run


# ================================================================ statistics


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> float:
    """(max − min) / median: how far apart the rounds were (0.1 = 10 %)."""
    m = median(values)
    return (max(values) - min(values)) / m if m > 0 else 0.0


# ================================================================ machine and threads


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def _meminfo_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # not installed, or broken: say so rather than fail the benchmark
        return "not installed"


def machine_info() -> dict[str, Any]:
    """CPU model, cores, SIMD flags, memory, and the versions of the libraries measured."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    blas = "unknown"
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{deps.get('name')} {deps.get('version')}"
    except Exception:  # older NumPy: no dict mode
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    mem = _meminfo_gib()
    return {
        "cpu": cpu.get("model name", platform.processor() or "unknown"),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "simd": " ".join(f for f in ("avx2", "fma", "avx512f") if f in flags) or "none listed",
        "memory": f"{mem:.1f} GiB" if mem else "unknown",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "numba": _version("numba"),
    }


def _openblas() -> ctypes.CDLL | None:
    """The OpenBLAS library this process loaded (NumPy's), found in /proc/self/maps."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def _openblas_call(names: Sequence[str], restype: Any) -> Any:
    lib = _openblas()
    for name in names:
        fn = getattr(lib, name, None) if lib is not None else None
        if fn is not None:
            fn.restype = restype
            return fn()
    return None


def blas_threads() -> tuple[int | None, str]:
    """(thread count of NumPy's BLAS, how it was found)."""
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                return int(pool["num_threads"]), f"threadpoolctl ({pool.get('internal_api')})"
    except ImportError:
        pass
    n = _openblas_call(
        (
            "scipy_openblas_get_num_threads64_",
            "openblas_get_num_threads64_",
            "openblas_get_num_threads",
        ),
        ctypes.c_int,
    )
    if n is not None:
        return int(n), "OpenBLAS get_num_threads"
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var):
            return int(os.environ[var]), f"${var}"
    return os.cpu_count(), "assumed: one per CPU (OpenBLAS default)"


def blas_core() -> str:
    """The OpenBLAS kernel family chosen at run time (e.g. Haswell, Zen, SkylakeX)."""
    name = _openblas_call(
        ("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename"),
        ctypes.c_char_p,
    )
    return name.decode() if name else "unknown"


def set_threads(n: int, torch: Any = None) -> list[str]:
    """Set NumPy's BLAS (and PyTorch's intra-op) thread count to `n` in this process, and the
    thread variables in `os.environ` so child processes start with `n` too. What was done."""
    done = []
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n, user_api="blas")
        done.append(f"NumPy BLAS → {n} (threadpoolctl)")
    except ImportError:
        lib = _openblas()
        names = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                 "openblas_set_num_threads")  # fmt: skip
        fn = next((getattr(lib, s) for s in names if hasattr(lib, s)), None) if lib else None
        if fn is not None:
            fn(ctypes.c_int(n))
            done.append(f"NumPy BLAS → {n} (OpenBLAS set_num_threads)")
        else:
            done.append("NumPy BLAS: could not set the thread count")
    if torch is not None:
        torch.set_num_threads(n)
        done.append(f"PyTorch → {n}")
    for var in THREAD_ENV:
        os.environ[var] = str(n)
    return done


def thread_info(torch: Any = None) -> dict[str, Any]:
    """BLAS and PyTorch thread counts, and the thread and OpenBLAS environment variables."""
    n, how = blas_threads()
    info: dict[str, Any] = {"numpy_blas_threads": n, "blas_threads_from": how}
    info["openblas_core"] = blas_core()
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
    for var in THREAD_ENV + OPENBLAS_ENV:
        info[var] = os.environ.get(var, "unset")
    return info


# ================================================================ timing


def calibrate(fn: Callable[[], Any], target_seconds: float, max_reps: int = 200) -> int:
    """How many calls of `fn` (already warm) take about `target_seconds`."""
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    return max(1, min(max_reps, round(target_seconds / once)))


def time_calls(fn: Callable[[], Any], reps: int) -> float:
    """Seconds per call of `fn`, averaged over `reps` consecutive calls."""
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def interleave(
    tasks: dict[Any, tuple[Callable[[], Any], int]],
    rounds: int,
    on_round: Callable[[int, dict[Any, float]], None] | None = None,
    gap: float = 0.0,
) -> dict[Any, list[float]]:
    """Run every task once per round, in an order rotated each round; seconds per call.

    `tasks` maps a name to `(fn, reps)`: each measurement is `reps` consecutive calls. `gap`
    seconds of sleep before each measurement let the previous library's spinning worker
    threads (OpenBLAS, OpenMP) park, so they do not steal a core from the next one.
    """
    names = list(tasks)
    times: dict[Any, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        this_round = {}
        for name in names[shift:] + names[:shift]:
            fn, reps = tasks[name]
            if gap:
                time.sleep(gap)
            this_round[name] = time_calls(fn, reps)
            times[name].append(this_round[name])
        if on_round is not None:
            on_round(r, this_round)
    return times


# ================================================================ is the machine quiet?


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def _cpu_busy_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot (all cores)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuWatch:
    """CPU time that *other* processes used between `start()` and `stop()`, in cores.

    Machine-wide busy time from /proc/stat minus this process's own (and its waited-for
    children's). 0.0 is a quiet machine; 1.0 means another process kept a whole core busy.
    """

    def start(self) -> CpuWatch:
        self.t0, self.busy0 = time.perf_counter(), _cpu_busy_seconds()
        self.own0 = _own_cpu_seconds()
        return self

    def stop(self) -> float | None:
        busy1 = _cpu_busy_seconds()
        if self.busy0 is None or busy1 is None:
            return None
        wall = max(time.perf_counter() - self.t0, 1e-9)
        others = (busy1 - self.busy0) - (_own_cpu_seconds() - self.own0)
        return max(others, 0.0) / wall


def others_cpu(seconds: float = 1.0) -> float | None:
    """Cores' worth of CPU that other processes use right now (sampled over `seconds`)."""
    watch = CpuWatch().start()
    time.sleep(seconds)
    return watch.stop()


def wait_for_quiet(
    timeout: float, max_others: float = 0.15, log: Callable[[str], None] = print
) -> bool:
    """Wait up to `timeout` seconds until other processes use under `max_others` cores."""
    deadline = time.perf_counter() + timeout
    while True:
        used = others_cpu(1.0)
        if used is None or used < max_others:
            return True
        if time.perf_counter() >= deadline:
            log(f"machine still busy after {timeout:.0f} s: other processes use {used:.2f} cores")
            return False
        log(f"waiting for a quiet machine: other processes use {used:.2f} cores")
        time.sleep(4.0)


class GemmProbe:
    """A fixed small NumPy GEMM workload, timed to tell a quiet machine from a busy one.

    (32, 512) @ (512, 2048) in float32, 20 times per sample: the 32-row shape of a recurrent
    step, where two BLAS threads suffer most when a neighbour takes a core.
    """

    def __init__(self, samples: int = 7, inner: int = 20) -> None:
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((32, 512)).astype(np.float32)
        self.b = rng.standard_normal((512, 2048)).astype(np.float32)
        self.out = np.empty((32, 2048), np.float32)
        self.samples, self.inner = samples, inner

    def _once(self) -> float:
        t0 = time.perf_counter()
        for _ in range(self.inner):
            np.matmul(self.a, self.b, out=self.out)
        return (time.perf_counter() - t0) / self.inner

    def measure(self) -> list[float]:
        self._once()  # warm the BLAS threads
        return [self._once() for _ in range(self.samples)]


def disturbance_report(
    before: list[float],
    after: list[float],
    others: float | None,
    threshold: float = DISTURBANCE_THRESHOLD,
) -> tuple[list[str], list[str]]:
    """(summary lines, DISTURBED lines) from the GEMM probe and the CPU others used."""
    mb, ma = median(before), median(after)
    drift = (ma - mb) / mb
    lines = [
        f"GEMM probe (32x512 @ 512x2048 float32): before {mb * 1e6:.0f} µs (spread "
        f"{spread(before):.0%}), after {ma * 1e6:.0f} µs (spread {spread(after):.0%}), "
        f"drift {drift:+.0%}",
    ]
    if others is not None:
        lines.append(f"CPU used by other processes during the run: {others:.2f} cores on average")
    bad = []
    for name, values in (("before", before), ("after", after)):
        if spread(values) > threshold:
            bad.append(f"the GEMM probe {name} the run varied by {spread(values):.0%}")
    if abs(drift) > threshold:
        bad.append(f"the GEMM probe changed by {drift:+.0%} from before to after the run")
    if others is not None and others > threshold:
        bad.append(f"other processes used {others:.2f} cores during the run")
    disturbed = [
        f"DISTURBED: {reason} (threshold {threshold:.0%}); treat these numbers as noisy"
        for reason in bad
    ]
    return lines, disturbed


# ================================================================ memory


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_kib() -> int | None:
    """Resident set size now (VmRSS)."""
    return _status_kib("VmRSS")


def hwm_kib() -> int | None:
    """Peak resident set size since start or the last `reset_hwm()` (VmHWM)."""
    value = _status_kib("VmHWM")
    if value is None:  # not Linux: ru_maxrss is the peak too (KiB on Linux, bytes on macOS)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        value = peak // 1024 if sys.platform == "darwin" else peak
    return value


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0, /proc/self/clear_refs); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ================================================================ output


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table; `align` is 'l' or 'r' per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def fmt_rate(tokens_per_second: float) -> str:
    if tokens_per_second >= 1e5:
        return f"{tokens_per_second / 1e3:.0f}k"
    if tokens_per_second >= 1e3:
        return f"{tokens_per_second / 1e3:.1f}k"
    return f"{tokens_per_second:.0f}"


def import_baseline(source: str, name: str = "tinygrad_seq_baseline") -> Any:
    """Import another checkout's `tinygrad_seq` (a git worktree of an older commit, say) under
    the package name `name`, beside the current one, so one run can time both interleaved.

    The package's imports are all relative, so a copy renamed to `name` is self-contained;
    its Numba cache lives in the copy.
    """
    import importlib
    import shutil
    import tempfile
    from pathlib import Path

    src = Path(source).resolve()
    src = src / "tinygrad_seq" if (src / "tinygrad_seq").is_dir() else src
    if not (src / "__init__.py").is_file():
        raise SystemExit(f"--baseline {source}: no tinygrad_seq package there")
    root = Path(tempfile.gettempdir()) / f"{name}-{abs(hash(str(src))) % 10**8}"
    shutil.rmtree(root / name, ignore_errors=True)
    shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(root))
    return importlib.import_module(name)
