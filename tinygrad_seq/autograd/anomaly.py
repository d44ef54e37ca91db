"""Anomaly detection: stop at the first op whose forward or backward makes NaN or Inf.

Inside `detect_anomaly()` every recorded op remembers the line of user code that created it,
and the engine checks each forward output and each backward gradient. The error names the op
and that line, which is what you need when a loss turns into NaN at step 9,000.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

enabled = False
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class AnomalyError(FloatingPointError):
    """An op produced NaN or Inf under `detect_anomaly()`."""


@contextlib.contextmanager
def detect_anomaly() -> Iterator[None]:
    """Raise `AnomalyError` at the first op whose forward or backward gives NaN or Inf.

    >>> import numpy as np
    >>> from tinygrad_seq import Tensor
    >>> x = Tensor(np.array([-1.0, 1.0]), requires_grad=True)
    >>> with detect_anomaly():
    ...     y = x.log()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tinygrad_seq.autograd.anomaly.AnomalyError: Log forward produced NaN; created at ...
    """
    global enabled
    previous, enabled = enabled, True
    try:
        with np.errstate(all="ignore"):
            yield
    finally:
        enabled = previous


def _user_site() -> str:
    """`file:line: source` of the innermost frame outside this package."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    filename, line = frame.f_code.co_filename, frame.f_lineno
    source = linecache.getline(filename, line).strip()
    return f"{filename}:{line}: {source}"


def _bad(array: Any) -> str | None:
    if isinstance(array, np.generic):
        array = np.asarray(array)
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        return None
    if np.isnan(array).any():
        return "NaN"
    if np.isinf(array).any():
        return "Inf"
    return None


def on_forward(fn: Any, out: Any) -> None:
    fn.created_at = _user_site()
    kind = next(filter(None, map(_bad, out if isinstance(out, tuple) else (out,))), None)
    if kind:
        raise AnomalyError(
            f"{type(fn).__name__} forward produced {kind}; created at {fn.created_at}"
        )


def on_backward(fn: Any, grads: tuple[Any, ...]) -> None:
    for i, g in enumerate(grads):
        kind = _bad(g)
        if kind:
            where = getattr(fn, "created_at", "<unknown>")
            raise AnomalyError(
                f"{type(fn).__name__} backward produced {kind} in the gradient of input {i}; "
                f"the op was created at {where}"
            )
