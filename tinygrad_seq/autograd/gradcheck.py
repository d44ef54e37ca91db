"""Gradient checking: reverse-mode gradients against central finite differences, in float64.

Two promises users of other libraries miss:
- a correct op never false-fails in float32: every input is checked through a float64 copy
  (swapped into the same Tensor object for the duration, so closures over parameters work,
  and swapped back afterwards, `.grad` included);
- a failure says what is wrong: the input (by name when it has one), the worst element's
  index, the analytic and numerical values there, the relative error
  ‖g − g̃‖ / (‖g‖ + ‖g̃‖) of every input, and the tolerance.

A scalar output is checked as it is: the numbers in a failure are ∂f/∂x, the ones a user
derives by hand. Any other output is contracted with a random upstream gradient v (ones
would hide transposition and broadcasting bugs): the check compares the vector-Jacobian
product vᵀJ = ∂⟨v, f(x)⟩/∂x, with v = `np.random.default_rng(seed).standard_normal(shape)`,
and the failure message says so, so the numbers can be reproduced. `directions=k` checks
⟨∂⟨v, f⟩/∂x, u⟩ along k random directions u instead of the full Jacobian: one difference
pair per check, whatever the input's size.

`gradgradcheck` holds second derivatives to the same rule: it gradient-checks the map
x ↦ g(x) = ∂⟨v, f(x)⟩/∂x, whose reverse mode is the engine differentiating its own
backward pass (`create_graph=True`) and whose finite differences are differences of
first-order gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .ops import concat
from .tensor import Tensor, enable_grad, grad, is_grad_enabled, no_grad


class GradcheckError(AssertionError):
    """Reverse-mode and finite-difference gradients disagree."""


def _as_tensors(inputs: Sequence[Any]) -> list[Any]:
    return [x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=np.float64)) for x in inputs]


class _Float64:
    """Swap each float Tensor's data for a float64 copy (and back, grads included).

    Inside, every input is a leaf (its producing op is unhooked), so a non-leaf input gets
    its `.grad` and the graph that made it is neither walked nor freed."""

    def __init__(self, tensors: list[Any]) -> None:
        self.tensors = [t for t in tensors if isinstance(t, Tensor) and t.dtype.kind == "f"]

    def __enter__(self) -> None:
        self.saved = [(t.data, t.grad, t._ctx) for t in self.tensors]
        for t in self.tensors:
            t.data, t.grad = np.array(t.data, dtype=np.float64, order="C"), None
            t._ctx = None

    def __exit__(self, *exc: Any) -> None:
        for t, (data, saved_grad, ctx) in zip(self.tensors, self.saved, strict=True):
            t.data, t.grad, t._ctx = data, saved_grad, ctx


def _scalar(out: Any, v: np.ndarray | None) -> float:
    data = np.asarray(out.data if isinstance(out, Tensor) else out, dtype=np.float64)
    return float(data.sum() if v is None else (data * v).sum())


def _differences(
    fn: Callable[..., Any], tensors: list[Any], v: Any, eps: float, only_grad: bool = False
) -> list[Any]:
    """∂⟨v, fn⟩/∂x for every float input (or, `only_grad`, those requiring grad), element by
    element (2 evaluations per element)."""
    grads: list[Any] = []
    with no_grad():
        for t in tensors:
            skip = only_grad and not t.requires_grad
            if not isinstance(t, Tensor) or t.dtype.kind != "f" or skip:
                grads.append(None)
                continue
            flat = t.data.reshape(-1)  # a view: writing it perturbs the input in place
            g = np.zeros(flat.size)
            for i in range(flat.size):
                old = flat[i]
                flat[i] = old + eps
                plus = _scalar(fn(*tensors), v)
                flat[i] = old - eps
                minus = _scalar(fn(*tensors), v)
                flat[i] = old
                g[i] = (plus - minus) / (2 * eps)
            grads.append(g.reshape(t.shape))
    return grads


def numerical_grad(
    fn: Callable[..., Any], inputs: Sequence[Any], eps: float = 1e-6
) -> list[np.ndarray | None]:
    """Central differences (f(x + ε) − f(x − ε)) / 2ε of scalar `fn(*inputs)`, in float64.

    Returns one float64 array per input (`None` for integer inputs).

    >>> from tinygrad_seq import Tensor
    >>> [g] = numerical_grad(lambda x: (x * x).sum(), [Tensor([1.0, -2.0])])
    >>> g.round(6)
    array([ 2., -4.])
    """
    tensors = _as_tensors(inputs)
    with _Float64(tensors):
        with no_grad():
            out = fn(*tensors)
        if np.size(out.data if isinstance(out, Tensor) else out) != 1:
            raise ValueError(
                f"numerical_grad needs a scalar fn; it returned shape {np.shape(out)}: "
                "reduce it, or use gradcheck, which handles any output shape"
            )
        return _differences(fn, tensors, None, eps)


def _reverse_mode(
    fn: Callable[..., Any], tensors: list[Any], rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray]:
    """∂⟨v, fn⟩/∂x for every input by one backward pass: v = 1 for a scalar output, else a
    random upstream gradient."""
    out = fn(*tensors)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    v = np.ones(out.shape) if out.data.size == 1 else rng.standard_normal(out.shape)
    if out.requires_grad:
        out.backward(v)
    analytic = [
        np.zeros(t.shape) if t.grad is None else np.asarray(t.grad, np.float64) for t in tensors
    ]
    return analytic, v


def gradient_pairs(
    fn: Callable[..., Any], inputs: Sequence[Any], eps: float = 1e-6, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """(reverse-mode, finite-difference) gradients of ⟨v, fn(*inputs)⟩ in float64, v random.

    One pair per input that requires grad, `None` for the others: what `gradcheck` compares,
    for callers that want the errors themselves (`tinygrad-seq gradcheck` prints them).
    """
    tensors = _as_tensors(inputs)
    with _Float64(tensors):
        analytic, v = _reverse_mode(fn, tensors, np.random.default_rng(seed))
        numeric = _differences(fn, tensors, v, eps, only_grad=True)
    return [
        (a, n) if t.requires_grad else None
        for t, a, n in zip(tensors, analytic, numeric, strict=True)
    ]


def _label(t: Tensor, i: int) -> str:
    return f"input {i} '{t.name}'" if getattr(t, "name", None) else f"input {i}"


def gradcheck(
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    directions: int | None = None,
    seed: int = 0,
) -> bool:
    """Check reverse-mode gradients of `fn(*inputs)` against finite differences.

    Every input that requires grad is checked, in float64 whatever its dtype. An element
    passes when |analytic − numerical| ≤ atol + rtol · |numerical|. With `directions=k`,
    each input is checked along k random unit directions instead of element by element.
    Raises `GradcheckError` on disagreement (or returns False if `raise_exception=False`).

    >>> from tinygrad_seq import Tensor
    >>> x = Tensor([[0.5, -1.0], [2.0, 0.1]], requires_grad=True)
    >>> gradcheck(lambda x: x.tanh() * x, [x])
    True
    """
    tensors = _as_tensors(inputs)
    checked = [i for i, t in enumerate(tensors) if t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check")
    if directions is None:
        pairs = gradient_pairs(fn, tensors, eps, seed)
        report = _compare_full(tensors, checked, pairs, atol, rtol)
        compared = None if report is None else _what_is_compared(fn, tensors, seed)
    else:
        rng = np.random.default_rng(seed)
        with _Float64(tensors):
            analytic, v = _reverse_mode(fn, tensors, rng)
            report = _compare_directions(
                fn, tensors, checked, analytic, v, eps, atol, rtol, directions, rng
            )
        compared = None if report is None else _what_is_compared(fn, tensors, seed, v.shape)
    if report is None:
        return True
    report = f"{report}\n{compared}"
    if raise_exception:
        raise GradcheckError(report)
    return False


def _what_is_compared(
    fn: Callable[..., Any], tensors: list[Any], seed: int, shape: tuple[int, ...] | None = None
) -> str:
    """The line of a failure that says which numbers were compared, so they can be rebuilt."""
    if shape is None:
        with _Float64(tensors), no_grad():
            shape = np.shape(fn(*tensors).data)
    if int(np.prod(shape)) == 1:
        return "compared: ∂f/∂x (the output is a scalar)"
    return (
        f"compared: vᵀJ = ∂⟨v, f⟩/∂x, the output f of shape {tuple(shape)} contracted with "
        f"v = np.random.default_rng({seed}).standard_normal({tuple(shape)})"
    )


def _relative_error(g: np.ndarray, n: np.ndarray) -> float:
    denom = np.linalg.norm(g) + np.linalg.norm(n)
    return float(np.linalg.norm(g - n) / denom) if denom > 0 else 0.0


def _compare_full(
    tensors: list[Any],
    checked: list[int],
    pairs: list[Any],
    atol: float,
    rtol: float,
) -> str | None:
    lines, failed = [], []
    for i in checked:
        a, n = pairs[i]
        excess = np.abs(a - n) - (atol + rtol * np.abs(n))
        ok = bool(np.all(excess <= 0))
        lines.append(
            f"  {_label(tensors[i], i)} shape {tensors[i].shape}: relative error "
            f"‖g − g̃‖/(‖g‖ + ‖g̃‖) = {_relative_error(a, n):.3e}" + ("" if ok else "  FAILED")
        )
        if not ok:
            worst = np.unravel_index(int(np.argmax(excess)), a.shape) if a.ndim else ()
            failed.append(
                f"{_label(tensors[i], i)} shape {tensors[i].shape}: worst element "
                f"{list(map(int, worst))}: analytic {a[worst]:.8g}, numerical {n[worst]:.8g}, "
                f"|difference| {abs(a[worst] - n[worst]):.3e} > atol {atol:g} + "
                f"rtol {rtol:g} · |numerical|"
            )
    if not failed:
        return None
    return "gradcheck failed for " + "; ".join(failed) + "\nper input:\n" + "\n".join(lines)


def _compare_directions(
    fn: Callable[..., Any],
    tensors: list[Any],
    checked: list[int],
    analytic: list[np.ndarray],
    v: np.ndarray,
    eps: float,
    atol: float,
    rtol: float,
    directions: int,
    rng: np.random.Generator,
) -> str | None:
    failed = []
    with no_grad():
        for i in checked:
            t = tensors[i]
            original = t.data
            for k in range(directions):
                u = rng.standard_normal(t.shape)
                u /= max(np.linalg.norm(u), 1e-300)
                t.data = original + eps * u
                plus = _scalar(fn(*tensors), v)
                t.data = original - eps * u
                minus = _scalar(fn(*tensors), v)
                t.data = original
                numerical = (plus - minus) / (2 * eps)
                exact = float((analytic[i] * u).sum())
                if abs(exact - numerical) > atol + rtol * abs(numerical):
                    failed.append(
                        f"{_label(t, i)} shape {t.shape}, direction {k}: analytic ⟨g, u⟩ = "
                        f"{exact:.8g}, numerical {numerical:.8g}, |difference| "
                        f"{abs(exact - numerical):.3e} > atol {atol:g} + rtol {rtol:g} · |num|"
                    )
    return ("gradcheck failed for " + "; ".join(failed)) if failed else None


def gradgradcheck(
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    raise_exception: bool = True,
    seed: int = 0,
) -> bool:
    """Check second derivatives of `fn(*inputs)` against finite differences of its gradients.

    With g(x) = ∂⟨v, f(x)⟩/∂x the first derivatives (v = 1 for a scalar f, else random,
    seeded by `seed`), the check compares ∂⟨u, g(x)⟩/∂x (reverse mode through the backward
    pass, u random, seeded by `seed + 1`) with central differences of ⟨u, g(x)⟩ computed by
    the ordinary first-order pass, for every
    input that requires grad, in float64, with the pass rule of `gradcheck`. An op whose
    backward works on NumPy arrays cannot be differentiated again: the check raises the
    engine's error naming it. Raises `GradcheckError` on disagreement (or returns False
    when `raise_exception=False`).

    >>> from tinygrad_seq import Tensor
    >>> x = Tensor([[0.5, -1.0], [2.0, 0.1]], requires_grad=True)
    >>> gradgradcheck(lambda x: (x.tanh() * x).sum(), [x])
    True
    """
    tensors = _as_tensors(inputs)
    checked = [i for i, t in enumerate(tensors) if t.requires_grad]
    if not checked:
        raise ValueError("gradgradcheck: no input requires grad, so there is nothing to check")
    with _Float64(tensors), no_grad():
        out = fn(*tensors)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradgradcheck: fn must return a Tensor, got {type(out).__name__}")
    rng = np.random.default_rng(seed)
    v = np.ones(out.shape) if out.data.size == 1 else rng.standard_normal(out.shape)

    def first_derivatives(*xs: Any) -> Tensor:
        """g(x) = ∂⟨v, f(x)⟩/∂x of every checked input, flattened and joined: recorded for
        the reverse-mode side, the plain first-order pass for the differences (which
        `gradcheck` holds to f), so a derivative on Tensors that disagrees with the one on
        arrays is caught too."""
        recorded = is_grad_enabled()
        with enable_grad():
            out = fn(*xs)
            wrt = [xs[i] for i in checked]
            if not out.requires_grad:
                return Tensor(np.zeros(sum(x.data.size for x in wrt)))
            gs = grad(out, wrt, grad_outputs=v, create_graph=recorded)
            parts = [
                (Tensor(np.zeros(x.data.size)) if g is None else g.reshape(-1))
                for x, g in zip(wrt, gs, strict=True)
            ]
            return concat(parts) if len(parts) > 1 else parts[0]

    pairs = gradient_pairs(first_derivatives, tensors, eps, seed + 1)
    report = _compare_full(tensors, checked, pairs, atol, rtol)
    if report is None:
        return True
    u_size = sum(tensors[i].data.size for i in checked)
    v_text = (
        "v = 1 (f is a scalar)"
        if out.data.size == 1
        else f"v = np.random.default_rng({seed}).standard_normal({tuple(out.shape)})"
    )
    u_text = (
        "u = 1"
        if u_size == 1
        else f"u = np.random.default_rng({seed + 1}).standard_normal(({u_size},))"
    )
    report = (
        report.replace("gradcheck failed for", "gradgradcheck (second derivatives) failed for", 1)
        + f"\ncompared: ∂⟨u, g⟩/∂x with g = ∂⟨v, f⟩/∂x the first derivatives of the checked "
        f"inputs, flattened and joined; {v_text}, {u_text}"
    )
    if raise_exception:
        raise GradcheckError(report)
    return False
