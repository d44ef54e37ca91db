"""Initialisers for your own cells and layers, the ones the built-in cells use.

Each returns a new float32 NumPy array (wrap it in `Parameter(...)`) drawn from `rng`, by
default the library's generator (`tinygrad_seq.manual_seed`), so one seed makes two runs
identical. Matrices follow the cells' layout: a gate matrix has shape `(n_a, n_a + n_x)`
and acts on `[a<t-1>, x<t>]`, fan_out = rows, fan_in = columns.

>>> import numpy as np
>>> W = gate_matrix(4, 3, rng=np.random.default_rng(0))  # [orthogonal (4, 4) | Glorot (4, 3)]
>>> W.shape, bool(np.allclose(W[:, :4] @ W[:, :4].T, np.eye(4), atol=1e-6))
((4, 7), True)
"""

from __future__ import annotations

import numpy as np

from ..random import default_rng

__all__ = ["gate_matrix", "glorot_uniform", "normal", "ones", "orthogonal", "uniform", "zeros"]


def uniform(
    shape: tuple[int, ...], bound: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Each entry drawn from U(−bound, +bound)."""
    return default_rng(rng).uniform(-bound, bound, shape).astype(np.float32)


def normal(
    shape: tuple[int, ...], std: float = 1.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Each entry drawn from N(0, std²)."""
    return (std * default_rng(rng).standard_normal(shape)).astype(np.float32)


def glorot_uniform(shape: tuple[int, int], rng: np.random.Generator | None = None) -> np.ndarray:
    """Glorot (Xavier) uniform for a matrix `(fan_out, fan_in)`:
    U(−√(6/(fan_in + fan_out)), +√(6/(fan_in + fan_out))), which keeps the variance of
    W x close to that of x, forwards and backwards."""
    fan_out, fan_in = shape
    return uniform(shape, float(np.sqrt(6.0 / (fan_in + fan_out))), rng)


def orthogonal(
    shape: tuple[int, int], gain: float = 1.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """gain · Q, Q a (semi-)orthogonal matrix `(rows, cols)`: Q Qᵀ = I if rows ≤ cols, else
    Qᵀ Q = I. Q comes from the QR decomposition of a Gaussian matrix, with the signs of R's
    diagonal folded in so that Q is uniformly distributed. For a recurrent matrix W_aa this
    keeps ‖W_aa a‖ = ‖a‖ at the start of training: no vanishing or exploding through W_aa."""
    rows, cols = shape
    a = default_rng(rng).standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    q = q if rows >= cols else q.T
    return (gain * q[:rows, :cols]).astype(np.float32)


def gate_matrix(n_a: int, n_x: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """A gate matrix `(n_a, n_a + n_x)` acting on `[a<t-1>, x<t>]`, as the built-in cells
    initialise theirs: `[orthogonal (n_a, n_a) | glorot_uniform (n_a, n_x)]`, the recurrent
    columns drawn first."""
    recurrent = orthogonal((n_a, n_a), rng=rng)
    inputs = glorot_uniform((n_a, n_x), rng=rng)
    return np.concatenate([recurrent, inputs], axis=1)


def zeros(shape: tuple[int, ...]) -> np.ndarray:
    """All entries 0 (biases)."""
    return np.zeros(shape, np.float32)


def ones(shape: tuple[int, ...]) -> np.ndarray:
    """All entries 1 (e.g. a forget-gate bias b_f = 1, a layer norm's weight)."""
    return np.ones(shape, np.float32)
