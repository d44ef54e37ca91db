"""Initialisers. Each returns a new float32 array drawn from `rng` (default: the library's
generator, see `tinygrad_seq.manual_seed`), so one seed makes two runs identical."""

from __future__ import annotations

import numpy as np

from ..random import default_rng


def uniform(shape: tuple[int, ...], bound: float, rng: np.random.Generator | None = None):
    """U(−bound, bound)."""
    return default_rng(rng).uniform(-bound, bound, shape).astype(np.float32)


def normal(shape: tuple[int, ...], std: float = 1.0, rng: np.random.Generator | None = None):
    """N(0, std²)."""
    return (std * default_rng(rng).standard_normal(shape)).astype(np.float32)


def glorot_uniform(shape: tuple[int, int], rng: np.random.Generator | None = None):
    """U(−√(6/(fan_in + fan_out)), +√(…)) for a matrix of shape (fan_out, fan_in)."""
    fan_out, fan_in = shape
    return uniform(shape, float(np.sqrt(6.0 / (fan_in + fan_out))), rng)


def orthogonal(shape: tuple[int, int], gain: float = 1.0, rng: np.random.Generator | None = None):
    """A (semi-)orthogonal matrix: QR of a Gaussian matrix, signs fixed so Q is uniform."""
    rows, cols = shape
    a = default_rng(rng).standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    q = q if rows >= cols else q.T
    return (gain * q[:rows, :cols]).astype(np.float32)


def zeros(shape: tuple[int, ...]):
    return np.zeros(shape, np.float32)
