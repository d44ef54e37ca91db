"""`Linear` and `Embedding`: the two non-recurrent layers a sequence model needs."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor
from . import init
from .module import Module, Parameter, check_float_input


class Linear(Module):
    """y = x @ weightᵀ + bias over any leading dims; `weight (out, in)`, `bias (out,)`.

    Initialised as PyTorch does: weight and bias ~ U(−1/√in, 1/√in).

    >>> import numpy as np
    >>> layer = Linear(3, 2)
    >>> layer(np.ones((4, 5, 3), np.float32)).shape
    (4, 5, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        rng: np.random.Generator | None = None,
    ) -> None:
        bound = 1.0 / np.sqrt(in_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.uniform((out_features, in_features), bound, rng))
        self.bias = Parameter(init.uniform((out_features,), bound, rng)) if bias else None

    def forward(self, x: Any) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.dtype.kind != "f":  # integer or boolean input (e.g. one-hot) computes in our dtype
            x = Tensor(x.data.astype(self.weight.dtype))
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}): input of shape {x.shape} "
                f"needs last dimension {self.in_features}"
            )
        check_float_input(self, x, self.weight)
        y = x @ self.weight.T
        return y if self.bias is None else y + self.bias


class Embedding(Module):
    """Row lookup `weight[ids]`; `weight (num_embeddings, dim)` ~ N(0, 1) as in PyTorch.

    >>> import numpy as np
    >>> Embedding(10, 4)(np.array([[1, 2, 2]])).shape
    (1, 3, 4)
    """

    def __init__(
        self, num_embeddings: int, dim: int, rng: np.random.Generator | None = None
    ) -> None:
        self.num_embeddings, self.dim = num_embeddings, dim
        self.weight = Parameter(init.normal((num_embeddings, dim), 1.0, rng))

    def forward(self, ids: Any) -> Tensor:
        ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding: ids must be integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise IndexError(
                f"Embedding({self.num_embeddings}, {self.dim}): ids must lie in "
                f"[0, {self.num_embeddings - 1}], got min {ids.min()} and max {ids.max()}"
            )
        return self.weight[ids]
