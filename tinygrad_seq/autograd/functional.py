"""Differentiating the backward pass: Hessian-vector products, and a node's own derivative.

H v for a loss L(θ) is the gradient of the scalar ⟨∇L(θ), v⟩: one backward pass recorded
(`create_graph=True`) and one more through it, never the n × n Hessian (Pearlmutter 1994).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .tensor import Tensor, _seed_grad, grad, run_backward


def hessian_vector_product(
    loss_fn: Callable[..., Tensor], params: Sequence[Tensor] | Tensor, v: Any
) -> tuple[Tensor, ...]:
    """H v = ∂⟨∇L, v⟩/∂θ for L = `loss_fn(*params)`, one Tensor per parameter.

    `params` are Tensors that require grad (a module's `parameters()`, say; a closure over
    a model may ignore the arguments it is called with: `lambda *_: loss(model)`); `v`
    holds one array or Tensor of each parameter's shape, in order (a bare one when
    `params` is a bare Tensor). The parameters' `.grad` is left untouched; a parameter
    the loss does not depend on gets zeros.

    >>> from tinygrad_seq import Tensor
    >>> x = Tensor([1.0, 2.0], requires_grad=True)
    >>> (hv,) = hessian_vector_product(lambda x: (x**3).sum(), [x], [[1.0, 1.0]])  # 6x
    >>> hv.data
    array([ 6., 12.], dtype=float32)
    """
    single = isinstance(params, Tensor)
    params = [params] if single else list(params)
    vs = [v] if single or (isinstance(v, np.ndarray | Tensor) and len(params) == 1) else list(v)
    if len(vs) != len(params):
        raise ValueError(
            f"hessian_vector_product: {len(params)} parameters but {len(vs)} vectors in v"
        )
    vs = [
        np.asarray(u.data if isinstance(u, Tensor) else u, dtype=p.dtype)
        for p, u in zip(params, vs, strict=True)
    ]
    for i, (p, u) in enumerate(zip(params, vs, strict=True)):
        if u.shape != p.shape:
            raise ValueError(
                f"hessian_vector_product: v[{i}] has shape {u.shape}, parameter {i} has {p.shape}"
            )
    loss = loss_fn(*params)
    if not isinstance(loss, Tensor) or loss.data.size != 1:
        raise ValueError("hessian_vector_product: loss_fn must return a single-element Tensor")
    grads = grad(loss, params, create_graph=True)
    projection = None
    for g, u in zip(grads, vs, strict=True):
        if g is not None and g.requires_grad:
            term = (g * u).sum()
            projection = term if projection is None else projection + term
    if projection is None:  # the gradient is constant: H = 0
        return tuple(Tensor(np.zeros(p.shape, p.dtype)) for p in params)
    hv = grad(projection, params)
    return tuple(
        Tensor(np.zeros(p.shape, p.dtype)) if h is None else h
        for p, h in zip(params, hv, strict=True)
    )


def local_vjp(outputs: list[Tensor], inputs: list[Tensor], grad_outputs: list[Any]) -> list[Any]:
    """The vector-Jacobian product of a subgraph built on `inputs`, recorded (differentiable),
    with every input held as a leaf: the walk stops at the inputs, even where one input is
    an ancestor of another. This is a node's own derivative, for an op that composes
    primitives to differentiate itself (a fused step at second order). `None` for an
    input the outputs do not reach."""
    seeds = [
        (o, g if isinstance(g, Tensor) else _seed_grad(o, g))
        for o, g in zip(outputs, grad_outputs, strict=True)
    ]
    found = {id(t): g for t, g in run_backward(seeds, True, True, stop={id(x) for x in inputs})}
    return [found.get(id(x)) for x in inputs]


def vjp_of(outs: list[Any], inputs: list[Any], upstream: list[Any]) -> tuple[Any, ...]:
    """The recorded vector-Jacobian product of `outs` (built on `inputs`) with `upstream`,
    one entry per input (`None` for inputs that are constants or do not need one)."""
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    keep = [k for k, o in enumerate(outs) if isinstance(o, Tensor) and o.requires_grad]
    grads = local_vjp(
        [outs[k] for k in keep], [inputs[i] for i in wrt], [upstream[k] for k in keep]
    )
    result: list[Any] = [None] * len(inputs)
    for i, gi in zip(wrt, grads, strict=True):
        result[i] = gi
    return tuple(result)
