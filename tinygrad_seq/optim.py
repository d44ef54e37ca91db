"""Optimisers and gradient clipping, in PyTorch's form.

An optimiser takes any iterable of float `Tensor`s (e.g. `model.parameters()`), reads each one's
`.grad` in `step()` and updates `.data` in place, in the parameter's own dtype; a parameter whose
`.grad` is `None` is skipped, its state untouched. `state_dict()` is a flat `dict[str, ndarray]`
(hyper-parameters, per-parameter step counts and moments, keyed by the parameter's position), so
a training checkpoint can hold it beside the model's weights in one `.npz` and resume exactly.

This module depends on `tinygrad_seq.autograd` only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .autograd import Tensor, no_grad

__all__ = ["SGD", "Adam", "Optimizer", "clip_grad_norm_", "clip_grad_value_"]


def _as_params(params: Tensor | Iterable[Tensor], who: str) -> list[Tensor]:
    """A list of distinct float Tensors (a tensor given twice is kept once, first place)."""
    items = [params] if isinstance(params, Tensor) else list(params)
    out: list[Tensor] = []
    seen: set[int] = set()
    for i, p in enumerate(items):
        if not isinstance(p, Tensor):
            raise TypeError(f"{who}: parameter {i} is a {type(p).__name__}, not a Tensor")
        if p.dtype.kind != "f":
            raise TypeError(f"{who}: parameter {i} has dtype {p.dtype}; it must be float")
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _grad(p: Tensor, i: int, who: str) -> np.ndarray | None:
    g = p.grad
    if g is None:
        return None
    if g.shape != p.shape:
        raise ValueError(f"{who}: parameter {i} has shape {p.shape} but its grad {g.shape}")
    return g if g.dtype == p.dtype else g.astype(p.dtype)


def _update(p: Tensor, delta: np.ndarray) -> None:
    """p.data −= delta, in place (keeps dtype and every alias of the array) when writable."""
    if p.data.flags.writeable:
        np.subtract(p.data, delta, out=p.data, casting="same_kind")
    else:
        p.data = (p.data - delta).astype(p.dtype)


class Optimizer:
    """Base class: holds the parameters, per-parameter state and the hyper-parameters.

    Subclasses name their hyper-parameters in `_hyper` and the entries of a parameter's state
    in `_slots` (arrays shaped like the parameter, or the integer `step`), and implement
    `_step_one(i, p, g)`, which creates that state on the parameter's first step.
    """

    _hyper: tuple[str, ...] = ()
    _slots: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Tensor]) -> None:
        self.params = _as_params(params, type(self).__name__)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def zero_grad(self) -> None:
        """Set every parameter's `.grad` to `None` (the next backward starts afresh)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        with no_grad():
            for i, p in enumerate(self.params):
                g = _grad(p, i, type(self).__name__)
                if g is not None:
                    self._step_one(i, p, g)

    def _step_one(self, i: int, p: Tensor, g: np.ndarray) -> None:
        raise NotImplementedError

    # ---- checkpoints ----
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the hyper-parameters (`lr`, …) and of `state.{i}.{name}` for parameter i."""
        out = {name: np.asarray(getattr(self, name), dtype=np.float64) for name in self._hyper}
        for i, s in enumerate(self.state):
            for name, value in s.items():
                out[f"state.{i}.{name}"] = np.array(value)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore hyper-parameters and state saved by `state_dict`, checking everything first.

        Raises `KeyError` for missing or unknown keys and `ValueError` for a state array
        whose shape differs from its parameter's; on error nothing has changed.
        """
        who = f"{type(self).__name__}.load_state_dict"
        missing = [name for name in self._hyper if name not in state]
        unknown, new_state = [], [{} for _ in self.params]
        problems = []
        for key, value in state.items():
            if key in self._hyper:
                value = np.asarray(value, dtype=np.float64)
                if value.shape != np.shape(getattr(self, key)):
                    problems.append(f"'{key}' has shape {value.shape}")
                continue
            parts = key.split(".")
            if (
                len(parts) != 3
                or parts[0] != "state"
                or not parts[1].isdigit()
                or int(parts[1]) >= len(self.params)
                or parts[2] not in self._slots
            ):
                unknown.append(key)
                continue
            i, name = int(parts[1]), parts[2]
            value = np.array(value)
            p = self.params[i]
            if name == "step":  # a count, not an array shaped like the parameter
                if value.shape != () or value.dtype.kind not in "iu":
                    problems.append(f"'{key}' must be an integer scalar, got {value!r}")
                else:
                    new_state[i][name] = np.int64(value)
            elif value.shape != p.shape or value.dtype.kind != "f":
                problems.append(
                    f"'{key}' has shape {value.shape} and dtype {value.dtype}, "
                    f"parameter {i} has shape {p.shape}"
                )
            else:
                new_state[i][name] = value.astype(p.dtype)
        if missing or unknown:
            raise KeyError(f"{who}: missing keys {sorted(missing)}, unexpected keys {unknown}")
        incomplete = [
            f"state.{i}" for i, s in enumerate(new_state) if s and set(s) != set(self._slots)
        ]
        if incomplete:
            problems.append(f"incomplete state for {incomplete}")
        if problems:
            raise ValueError(f"{who}: " + "; ".join(problems))
        for name in self._hyper:
            value = np.asarray(state[name], dtype=np.float64)
            setattr(self, name, float(value) if value.ndim == 0 else tuple(map(float, value)))
        self.state = new_state


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, in PyTorch's form.

    g ← ∂L/∂p + λ p (λ = `weight_decay`);  v ← μ v + g (v = g at the first step);  p ← p − lr · v.
    With μ = 0 (the default) this is p ← p − lr · g.

    >>> p = Tensor([1.0, 2.0], requires_grad=True)
    >>> opt = SGD([p], lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     p.grad = np.array([1.0, -1.0], np.float32)
    ...     opt.step()
    >>> p.data  # v = 1, then 1.9: p = 1 − 0.1 − 0.19
    array([0.71, 2.29], dtype=float32)
    """

    _hyper = ("lr", "momentum", "weight_decay")
    _slots = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr >= 0:
            raise ValueError(f"SGD: lr must be >= 0, got {lr}")
        if not momentum >= 0:
            raise ValueError(f"SGD: momentum must be >= 0, got {momentum}")
        if not weight_decay >= 0:
            raise ValueError(f"SGD: weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params)
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)

    def _step_one(self, i: int, p: Tensor, g: np.ndarray) -> None:
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        s = self.state[i]
        if self.momentum:
            v = s.get("momentum_buffer")
            if v is None:
                v = s["momentum_buffer"] = g.copy()  # PyTorch: v = g at the first step
            else:
                v *= self.momentum
                v += g
            g = v
        _update(p, self.lr * g)


class Adam(Optimizer):
    """Adam, in PyTorch's form (bias-corrected moments, ε added to √v̂).

    g ← ∂L/∂p + λ p;  m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;  k ← k + 1 (per parameter);
    m̂ = m / (1 − β₁ᵏ);  v̂ = v / (1 − β₂ᵏ);  p ← p − lr · m̂ / (√v̂ + ε).

    >>> p = Tensor([1.0, 2.0], requires_grad=True)
    >>> opt = Adam([p], lr=0.1)
    >>> p.grad = np.array([0.5, -3.0], np.float32)
    >>> opt.step()
    >>> p.data.round(4)  # the first step moves each entry by lr · sign(g)
    array([0.9, 2.1], dtype=float32)
    """

    _hyper = ("lr", "betas", "eps", "weight_decay")
    _slots = ("step", "exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr >= 0:
            raise ValueError(f"Adam: lr must be >= 0, got {lr}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Adam: betas must be two numbers in [0, 1), got {betas}")
        if not eps >= 0:
            raise ValueError(f"Adam: eps must be >= 0, got {eps}")
        if not weight_decay >= 0:
            raise ValueError(f"Adam: weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params)
        self.lr, self.eps, self.weight_decay = float(lr), float(eps), float(weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))

    def _step_one(self, i: int, p: Tensor, g: np.ndarray) -> None:
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        beta1, beta2 = self.betas
        s = self.state[i]
        if not s:
            zeros = np.zeros_like(p.data)
            s.update(step=np.int64(0), exp_avg=zeros, exp_avg_sq=zeros.copy())
        s["step"] += 1
        m, v, k = s["exp_avg"], s["exp_avg_sq"], int(s["step"])
        m *= beta1
        m += (1 - beta1) * g  # m
        v *= beta2
        v += (1 - beta2) * g * g  # v
        # PyTorch's arrangement: lr/(1 − β₁ᵏ) · m / (√v / √(1 − β₂ᵏ) + ε)
        denom = np.sqrt(v) / math.sqrt(1 - beta2**k) + self.eps
        _update(p, (self.lr / (1 - beta1**k)) * m / denom)


def clip_grad_norm_(
    params: Tensor | Iterable[Tensor], max_norm: float, error_if_nonfinite: bool = False
) -> float:
    """Scale all gradients together so their total L2 norm is at most `max_norm`.

    ‖g‖ = √(Σ_p Σ gₚ²) over every parameter with a gradient (`None` grads are skipped);
    when ‖g‖ > max_norm each g is multiplied by max_norm / ‖g‖, in place, otherwise left
    alone. Returns ‖g‖ before clipping, as a float. (PyTorch divides by ‖g‖ + 1e-6 instead,
    so its clipped norm falls short of `max_norm` by a relative ~1e-6/‖g‖.) A non-finite
    norm raises `RuntimeError` when `error_if_nonfinite`.

    >>> p = Tensor([0.0, 0.0], requires_grad=True)
    >>> p.grad = np.array([3.0, 4.0], np.float32)
    >>> clip_grad_norm_([p], max_norm=1.0)
    5.0
    >>> p.grad
    array([0.6, 0.8], dtype=float32)
    """
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    grads = [p for p in _as_params(params, "clip_grad_norm_") if p.grad is not None]
    total = 0.0
    for p in grads:
        g = p.grad.astype(np.float64, copy=False).reshape(-1)
        total += float(np.dot(g, g))
    norm = math.sqrt(total)
    if not math.isfinite(norm) and error_if_nonfinite:
        raise RuntimeError(f"clip_grad_norm_: the total gradient norm is {norm}")
    if norm > max_norm:
        scale = max_norm / norm
        for p in grads:
            if p.grad.flags.writeable:
                p.grad *= p.grad.dtype.type(scale)
            else:
                p.grad = p.grad * p.grad.dtype.type(scale)
    return norm


def clip_grad_value_(params: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clip every gradient element-wise to [−clip_value, clip_value], in place (the course's).

    >>> p = Tensor([0.0, 0.0, 0.0], requires_grad=True)
    >>> p.grad = np.array([-7.0, 0.5, 12.0], np.float32)
    >>> clip_grad_value_([p], 5.0)
    >>> p.grad
    array([-5. ,  0.5,  5. ], dtype=float32)
    """
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for p in _as_params(params, "clip_grad_value_"):
        if p.grad is not None:
            c = p.grad.dtype.type(clip_value)
            if p.grad.flags.writeable:
                np.clip(p.grad, -c, c, out=p.grad)
            else:
                p.grad = np.clip(p.grad, -c, c)
