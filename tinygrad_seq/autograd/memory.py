"""An opt-in allocator setting for training scripts: keep freed buffers in the process.

glibc hands large freed arrays back to the kernel (`munmap`, or trimming the heap top) and
then page-faults fresh ones in on the next forward pass. A graph engine frees and reallocates
every intermediate each training step, so that round trip can cost as much as the arithmetic.
Raising glibc's mmap and trim thresholds makes freed buffers reusable, as PyTorch's caching
allocator does. It changes the allocator of the whole process, so importing the library never
does it: a program that owns its process calls `tinygrad_seq.tune_allocator()` (the
`tinygrad-seq` command, the examples and the benchmarks do). `TINYGRAD_SEQ_MALLOC_TUNING=0`
makes the call a no-op.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
tuned = False


def tune_allocator(trim_threshold: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Raise glibc's trim and mmap thresholds for this process; returns whether it was done.

    A process-wide change: call it from a program's entry point, not from a library.
    """
    global tuned
    if not sys.platform.startswith("linux") or os.environ.get("TINYGRAD_SEQ_MALLOC_TUNING") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        tuned = bool(
            libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
            and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
        )
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        tuned = False
    return tuned
