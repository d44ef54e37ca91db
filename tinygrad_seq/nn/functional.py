"""Losses, activations and layers as functions: `cross_entropy`, the binary cross-entropies,
softmax, `layer_norm`, `dropout`.

Every loss is composed from the engine's primitives (`log_softmax`, integer indexing, sums),
except the two binary cross-entropies, which are one small `Function` each: their stable
formulas need `log1p`, a clamp and a hand-written gradient that no composition gives exactly
(see each class). All of them are stable for inputs of magnitude 1e4 in float32.

`reduction` is `"mean"` (the default), `"sum"` or `"none"` (one loss per element), as in PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Function, Tensor, kernels
from ..random import default_rng

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "dropout",
    "dropout_mask",
    "layer_norm",
    "log_softmax",
    "softmax",
]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def _float_tensor(x: Any, what: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{what} must be floating point, got dtype {x.dtype}")
    return x


def softmax(x: Any, axis: int = -1) -> Tensor:
    """softmax(x)ᵢ = e^(xᵢ − max x) / Σⱼ e^(xⱼ − max x) along `axis` (stable for any magnitude).

    >>> softmax(Tensor([[0.0, 0.0]])).data
    array([[0.5, 0.5]], dtype=float32)
    """
    return _float_tensor(x, "softmax input").softmax(axis=axis)


def log_softmax(x: Any, axis: int = -1) -> Tensor:
    """log_softmax(x)ᵢ = xᵢ − max x − log Σⱼ e^(xⱼ − max x) along `axis`.

    >>> log_softmax(Tensor([[0.0, 0.0]])).data.round(4)
    array([[-0.6931, -0.6931]], dtype=float32)
    """
    return _float_tensor(x, "log_softmax input").log_softmax(axis=axis)


# ================================================================ normalisation, dropout


def layer_norm(x: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last axis, as PyTorch's `layer_norm(x, (n,), …)`:

        μ = mean(x),  σ² = mean((x − μ)²)   (biased variance, over the last axis of size n)
        y = (x − μ) / √(σ² + eps) * weight + bias

    `weight` and `bias` `(n,)` are optional (`None`: 1 and 0). Composed of the engine's
    primitives only (a mean and a variance over the last axis, then element-wise ops), so
    its gradient is the chain rule through them.

    >>> y = layer_norm(Tensor([[1.0, 2.0, 3.0]]))
    >>> y.data.round(4)
    array([[-1.2247,  0.    ,  1.2247]], dtype=float32)
    """
    x = _float_tensor(x, "layer_norm input")
    n = x.shape[-1] if x.ndim else 0
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and tuple(np.shape(value)) != (n,):
            raise ValueError(
                f"layer_norm: {name} has shape {tuple(np.shape(value))}; expected ({n},) "
                f"for input of shape {x.shape}"
            )
    if not eps > 0.0:
        raise ValueError(f"layer_norm: eps must be positive, got {eps}")
    centred = x - x.mean(axis=-1, keepdims=True)  # x − μ
    y = centred / (x.var(axis=-1, keepdims=True) + eps).sqrt()  # (x − μ) / √(σ² + eps)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def _check_p(p: Any, who: str, name: str = "p") -> float:
    """`p` as a float in [0, 1), else `ValueError` naming `who` and `name`."""
    if isinstance(p, bool) or not isinstance(p, int | float | np.floating | np.integer):
        raise ValueError(f"{who}: {name} must be a number in [0, 1), got {p!r}")
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{who}: {name} must lie in [0, 1), got {name}={p}")
    return float(p)


def dropout_mask(
    shape: tuple[int, ...], p: float, dtype: Any, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The inverted-dropout mask m: m = 1/(1 − p) with probability 1 − p, else 0.

    Drawn as `rng.random(shape) >= p` (default: the library generator, see
    `tinygrad_seq.manual_seed`). `dropout` multiplies by one such mask; variational dropout
    (see `Recurrent`) reuses one mask `(B, n)` at every time step.
    """
    p = _check_p(p, "dropout_mask")
    keep = default_rng(rng).random(shape) >= p
    return (keep / (1.0 - p)).astype(dtype)


def dropout(
    x: Any, p: float = 0.5, training: bool = True, rng: np.random.Generator | None = None
) -> Tensor:
    """Inverted dropout: y = m ⊙ x with mᵢ = 1/(1 − p) (probability 1 − p) or 0 (probability p).

    Kept values are scaled by 1/(1 − p) so that E[y] = x and evaluation needs no rescaling;
    the gradient is ∂y/∂x = m. When `training` is false, or p = 0, x is returned unchanged.
    `p` outside [0, 1) raises `ValueError`. Masks come from `rng`, by default the library
    generator (`tinygrad_seq.manual_seed`), so one seed replays the same masks.

    >>> import tinygrad_seq
    >>> _ = tinygrad_seq.manual_seed(0)
    >>> dropout(Tensor([1.0, 1.0, 1.0, 1.0]), p=0.5).data
    array([2., 0., 0., 0.], dtype=float32)
    >>> dropout(Tensor([1.0, 1.0]), p=0.5, training=False).data
    array([1., 1.], dtype=float32)
    """
    p = _check_p(p, "dropout")
    x = x if isinstance(x, Tensor) else Tensor(x)
    if not training or p == 0.0:
        return x
    if x.dtype.kind != "f":
        raise TypeError(f"dropout: input must be floating point, got dtype {x.dtype}")
    return x * dropout_mask(x.shape, p, x.dtype, rng)


# ================================================================ multi-class


def cross_entropy(
    logits: Any,
    targets: Any,
    reduction: str = "mean",
    ignore_index: int | None = None,
) -> Tensor:
    """Cross-entropy of integer class targets under softmax(logits), as in PyTorch.

    ℓᵢ = −log softmax(zᵢ)_{yᵢ} = −z_{i,yᵢ} + log Σ_v e^(z_{i,v}) for logits `z (N, V)` and
    targets `y (N,)` with 0 ≤ yᵢ < V. `"mean"` gives (1/N) Σᵢ ℓᵢ, `"sum"` Σᵢ ℓᵢ, `"none"` the
    vector ℓ `(N,)`.

    With `ignore_index=k`, rows whose target is k contribute nothing: their entry of `"none"`
    is 0 and `"mean"` averages over the other rows only, Σᵢ wᵢ ℓᵢ / Σᵢ wᵢ with wᵢ = [yᵢ ≠ k].
    When every row is ignored, `"mean"` returns 0 with a zero gradient (PyTorch returns nan),
    so a batch made only of padding leaves a training run unharmed.

    For a sequence batch `(B, T, V)`, pass `logits.reshape(-1, V)` and `targets.reshape(-1)`.

    >>> import numpy as np
    >>> z = Tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    >>> loss = cross_entropy(z, np.array([0, 2]))
    >>> round(loss.item(), 4)  # (log(1 + 2e⁻²) + log 3) / 2
    0.6691
    >>> loss.backward()
    >>> z.grad.round(3)  # (softmax(z) − onehot(y)) / N
    array([[-0.107,  0.053,  0.053],
           [ 0.167,  0.167, -0.333]], dtype=float32)
    """
    _check_reduction(reduction)
    logits = _float_tensor(logits, "cross_entropy: logits")
    if isinstance(targets, Tensor):
        if targets.requires_grad:
            raise TypeError("cross_entropy: targets are class indices and cannot require grad")
        targets = targets.data
    targets = np.asarray(targets)
    if logits.ndim != 2:
        raise ValueError(
            f"cross_entropy: logits must have shape (N, V), got {logits.shape}; "
            "for (B, T, V) pass logits.reshape(-1, V) and targets.reshape(-1)"
        )
    n, v = logits.shape
    if targets.shape != (n,):
        raise ValueError(
            f"cross_entropy: targets must have shape ({n},) for logits of shape {logits.shape}, "
            f"got {targets.shape}"
        )
    if targets.dtype.kind not in "iu":
        raise TypeError(
            f"cross_entropy: targets must be integer class indices, got dtype {targets.dtype}"
        )
    kept = np.ones(n, bool) if ignore_index is None else targets != ignore_index
    bad = (targets < 0) | (targets >= v)
    bad &= kept
    if bad.any():
        i = int(np.argmax(bad))
        raise IndexError(
            f"cross_entropy: target {int(targets[i])} (at position {i}) is out of range "
            f"for {v} classes; targets must lie in [0, {v - 1}]"
        )
    rows = np.arange(n)
    safe = np.where(kept, targets, 0)  # ignored rows pick class 0, then weigh 0
    picked = logits.log_softmax(axis=-1)[rows, safe]  # log softmax(zᵢ)_{yᵢ}, shape (N,)
    if ignore_index is None:
        return _reduce(-picked, reduction)
    weights = kept.astype(logits.dtype)
    loss = picked * (-weights)
    if reduction != "mean":
        return _reduce(loss, reduction)
    return loss.sum() * (1.0 / max(int(kept.sum()), 1))


# ================================================================ binary


def _binary_targets(targets: Any, like: Tensor, name: str) -> Any:
    """Targets as a Tensor or array of `like`'s shape and float dtype."""
    if isinstance(targets, Tensor):
        if targets.requires_grad and targets.dtype != like.dtype:
            raise TypeError(
                f"{name}: targets dtype {targets.dtype} does not match input dtype {like.dtype}"
            )
        shape = targets.shape
        value = targets if targets.requires_grad else targets.data.astype(like.dtype)
    else:
        value = np.asarray(targets)
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{name}: targets must be numeric, got dtype {value.dtype}")
        value = value.astype(like.dtype)
        shape = value.shape
    if shape != like.shape:
        raise ValueError(
            f"{name}: targets of shape {shape} must have the input's shape {like.shape}"
        )
    return value


class BinaryCrossEntropy(Function):
    """ℓ = −(t · max(log p, −100) + (1 − t) · max(log(1 − p), −100)), element-wise.

    The clamp at −100 (PyTorch's) keeps ℓ finite at p ∈ {0, 1}; so does the gradient
    ∂ℓ/∂p = (p − t) / max(p (1 − p), 1e-12), also PyTorch's. ∂ℓ/∂t = log_(1 − p) − log_ p
    with the same clamped logs.
    """

    def forward(self, p, t):
        with np.errstate(divide="ignore"):  # log 0 = −inf, clamped just below
            self.log_p = np.maximum(np.log(p), -100)
            self.log_q = np.maximum(np.log1p(-p), -100)
        self.p, self.t = p, t
        return -(t * self.log_p + (1 - t) * self.log_q)

    def backward(self, grad):
        gp, gt = self.needs_input_grad
        p, t = self.p, self.t
        dp = grad * (p - t) / np.maximum(p * (1 - p), 1e-12) if gp else None
        return dp, (grad * (self.log_q - self.log_p) if gt else None)


def binary_cross_entropy(probs: Any, targets: Any, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of probabilities p ∈ [0, 1] against targets t ∈ [0, 1].

    ℓ = −(t log p + (1 − t) log(1 − p)), each log clamped at −100 as in PyTorch, so p = 0 or 1
    gives a finite loss and gradient. Targets may be soft (any value in [0, 1]). Prefer
    `binary_cross_entropy_with_logits` on logits: it is exact where σ saturates.

    >>> import numpy as np
    >>> round(binary_cross_entropy(Tensor([0.5, 0.9]), np.array([1.0, 1.0])).item(), 4)
    0.3993
    """
    _check_reduction(reduction)
    probs = _float_tensor(probs, "binary_cross_entropy: probs")
    p = probs.data
    if p.size and not (np.all(p >= 0) and np.all(p <= 1)):
        bad = p[~((p >= 0) & (p <= 1))].reshape(-1)[0]
        raise ValueError(
            f"binary_cross_entropy: probs must lie in [0, 1], got {bad}; "
            "for logits use binary_cross_entropy_with_logits"
        )
    t = _binary_targets(targets, probs, "binary_cross_entropy")
    return _reduce(BinaryCrossEntropy.apply(probs, t), reduction)


class BinaryCrossEntropyWithLogits(Function):
    """ℓ = max(x, 0) − x t + log(1 + e^(−|x|)), element-wise;  ∂ℓ/∂x = σ(x) − t, ∂ℓ/∂t = −x.

    One op rather than a composition: e^(−|x|) never overflows, `log1p` keeps small losses
    exact, and the gradient σ(x) − t is right at x = 0, where composing |x| from `relu`s
    would give a wrong subgradient.
    """

    def forward(self, x, t):
        self.x, self.t = x, t
        return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))

    def backward(self, grad):
        gx, gt = self.needs_input_grad
        # the exact NumPy σ: σ(x) − t must be exactly 0 where σ saturates and t ∈ {0, 1}
        dx = grad * (kernels.sigmoid_reference(self.x) - self.t) if gx else None
        return dx, (-grad * self.x if gt else None)


def binary_cross_entropy_with_logits(logits: Any, targets: Any, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of σ(x) against targets t, computed stably from the logits x.

    ℓ = −(t log σ(x) + (1 − t) log(1 − σ(x))) = max(x, 0) − x t + log(1 + e^(−|x|)), with
    ∂ℓ/∂x = σ(x) − t; finite, without overflow, for |x| up to 1e4 and beyond in float32.

    >>> import numpy as np
    >>> x = Tensor([0.0, 1e4, -1e4], requires_grad=True)
    >>> loss = binary_cross_entropy_with_logits(x, np.array([1.0, 0.0, 0.0]), reduction="none")
    >>> loss.data.round(4)
    array([6.931e-01, 1.000e+04, 0.000e+00], dtype=float32)
    >>> loss.sum().backward(); x.grad
    array([-0.5,  1. ,  0. ], dtype=float32)
    """
    _check_reduction(reduction)
    logits = _float_tensor(logits, "binary_cross_entropy_with_logits: logits")
    t = _binary_targets(targets, logits, "binary_cross_entropy_with_logits")
    return _reduce(BinaryCrossEntropyWithLogits.apply(logits, t), reduction)
