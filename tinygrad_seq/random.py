"""One seedable source of randomness for initialisation, dropout and sampling.

`manual_seed(n)` makes every later default initialisation and dropout mask reproducible,
like `torch.manual_seed`. Functions that take `rng=` use that generator instead.
"""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the library's generator; two runs after the same seed are identical.

    >>> import tinygrad_seq, tinygrad_seq.nn
    >>> _ = tinygrad_seq.manual_seed(0); a = tinygrad_seq.nn.Linear(2, 2).weight.data.copy()
    >>> _ = tinygrad_seq.manual_seed(0); b = tinygrad_seq.nn.Linear(2, 2).weight.data
    >>> bool((a == b).all())
    True
    """
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_rng(rng: np.random.Generator | None = None) -> np.random.Generator:
    """`rng` if given, else the library's generator (see `manual_seed`)."""
    return _generator if rng is None else rng
