"""The package's Numba caches live outside the installed package, and importing it is inert.

A cache folder inside `site-packages/tinygrad_seq/` outlives `pip install -e .` and
`pip uninstall` and then shadows the package as a namespace package; `.ci/run` replays
that newcomer's sequence, these tests hold the mechanism.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tinygrad_seq

PACKAGE = Path(tinygrad_seq.__file__).resolve().parent
RUN_KERNEL = (
    "import numpy as np, tinygrad_seq.autograd.kernels as k; "
    "print(float(k.tanh(np.ones(3, np.float32))[0]))"
)


def _run(code: str, cache: Path) -> str:
    env = {**os.environ, "TINYGRAD_SEQ_CACHE_DIR": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def _package_caches() -> set[Path]:
    return set(PACKAGE.rglob("*.nbi")) | set(PACKAGE.rglob("*.nbc"))


def test_kernels_are_cached_under_the_cache_dir_not_in_the_package(tmp_path):
    before = {p: p.stat().st_mtime for p in _package_caches()}
    assert abs(float(_run(RUN_KERNEL, tmp_path)) - 0.7615941) < 1e-6
    written = sorted(p.name for p in tmp_path.rglob("*.nbi"))
    assert any(name.startswith("kernels._tanh_kernel") for name in written), written
    after = {p: p.stat().st_mtime for p in _package_caches()}
    assert after == before  # nothing new or rewritten inside the package


def test_a_second_process_loads_the_kernels_from_the_cache(tmp_path):
    _run(RUN_KERNEL, tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nbc")}
    assert stamps
    _run(RUN_KERNEL, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nbc")} == stamps


def test_importing_the_package_neither_imports_numba_nor_creates_the_cache(tmp_path):
    out = _run("import sys, tinygrad_seq, tinygrad_seq.nn; print('numba' in sys.modules)", tmp_path)
    assert out.strip() == "False"
    assert not any(tmp_path.iterdir())
