"""`Linear`, `Embedding`, `LayerNorm` and `Dropout`: the non-recurrent layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor
from . import functional as F
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


class LayerNorm(Module):
    """y = (x − μ) / √(σ² + eps) * weight + bias over the last axis of size n (as PyTorch's
    `LayerNorm(n)`): μ and the biased σ² are the mean and variance of each row.

    Parameters `weight (n,)` = 1 and `bias (n,)` = 0 (float32 until `module.to(...)`). See
    `functional.layer_norm`.

    >>> import numpy as np
    >>> norm = LayerNorm(3)
    >>> norm(np.array([[1.0, 2.0, 3.0]], np.float32)).data.round(4)
    array([[-1.2247,  0.    ,  1.2247]], dtype=float32)
    """

    def __init__(self, n: int, eps: float = 1e-5) -> None:
        self.n, self.eps = int(n), float(eps)
        self.weight = Parameter(init.ones((self.n,)))
        self.bias = Parameter(init.zeros((self.n,)))

    def forward(self, x: Any) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        if x.dtype.kind != "f":
            x = Tensor(x.data.astype(self.weight.dtype))
        if x.shape[-1:] != (self.n,):
            raise ValueError(
                f"LayerNorm({self.n}): input of shape {x.shape} needs last dimension {self.n}"
            )
        check_float_input(self, x, self.weight)
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class Dropout(Module):
    """Inverted dropout with probability `p` in training mode, the identity in evaluation
    mode: y = m ⊙ x with mᵢ = 1/(1 − p) or 0 (see `functional.dropout`).

    A new `Dropout` is in training mode; it follows `module.train()` / `module.eval()` of
    any module holding it. Masks come from the library generator (`tinygrad_seq.manual_seed`).

    >>> import numpy as np
    >>> drop = Dropout(0.5).eval()
    >>> drop(np.ones(3, np.float32)).data
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = F._check_p(p, "Dropout")
        self.training = True

    def forward(self, x: Any) -> Tensor:
        return F.dropout(x, self.p, self.training)
