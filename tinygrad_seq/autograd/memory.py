"""Keep freed buffers in the process instead of returning them to the system after each pass.

glibc hands large freed arrays back to the kernel (`munmap`, or trimming the heap top) and
then page-faults fresh ones in on the next forward pass. A graph engine frees and reallocates
every intermediate each training step, so that round trip can cost as much as the arithmetic
(measured here: 57k → 124k tokens/s on an LSTM step). Raising glibc's mmap and trim
thresholds makes freed buffers reusable, as PyTorch's caching allocator does. Set
`TINYGRAD_SEQ_MALLOC_TUNING=0` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
tuned = False


def tune_allocator(trim_threshold: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Raise glibc's trim and mmap thresholds; returns whether the allocator was tuned."""
    global tuned
    if not sys.platform.startswith("linux"):
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


if os.environ.get("TINYGRAD_SEQ_MALLOC_TUNING", "1") != "0":
    tune_allocator()
