"""The engine: `Tensor`, the `Function` extension point, and the reverse-mode pass.

Everything an op needs from the engine lives here and nowhere else: recording the graph
(`Function.apply`), ordering it (an iterative topological sort, so a 100,000-step chain
needs no recursion), reducing broadcast gradients back to each input's shape, accumulating
`.grad`, and freeing what backward no longer needs. Ops (`ops.py`) only know calculus.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections.abc import Iterator
from heapq import heappop, heappush
from typing import Any

import numpy as np

from . import anomaly

_FLOATS = (np.float32, np.float64)


class _GradMode:
    enabled = True


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Record no graph inside the block (inference, sampling, optimiser steps).

    >>> from tinygrad_seq import Tensor, no_grad
    >>> w = Tensor([1.0, 2.0], requires_grad=True)
    >>> with no_grad():
    ...     y = w * 2
    >>> y.requires_grad
    False
    """
    previous, _GradMode.enabled = _GradMode.enabled, False
    try:
        yield
    finally:
        _GradMode.enabled = previous


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    """Record the graph inside the block even within `no_grad()` (PyTorch's `enable_grad`):
    what a check needs that differentiates a gradient while the outer code records nothing."""
    previous, _GradMode.enabled = _GradMode.enabled, True
    try:
        yield
    finally:
        _GradMode.enabled = previous


def is_grad_enabled() -> bool:
    return _GradMode.enabled


def _as_array(data: Any) -> np.ndarray:
    """float32/float64 kept, integers and booleans kept, Python numbers become float32."""
    if isinstance(data, Tensor):
        return data.data
    if isinstance(data, np.ndarray):
        if data.dtype.kind == "f" and data.dtype not in _FLOATS:
            return data.astype(np.float32)
        if data.dtype.kind not in "biuf":
            raise TypeError(f"Tensor needs numeric data, got an array of dtype {data.dtype}")
        return data
    if isinstance(data, np.generic):
        return _as_array(np.asarray(data))
    array = np.asarray(data)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"Tensor needs numeric data, got {type(data).__name__}: {data!r:.60}")
    return array if array.dtype.kind == "b" else array.astype(np.float32)


class Tensor:
    """An n-dimensional array that records the operations applied to it.

    `Tensor(data, requires_grad=False)` wraps a NumPy array. float32 and float64 arrays keep
    their dtype, Python numbers and lists of them become float32, integer arrays stay integer
    (indices) and cannot require grad.

    >>> x = Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    >>> y = (x * x).sum()
    >>> y.backward()
    >>> x.grad
    array([[2., 4.],
           [6., 8.]], dtype=float32)
    """

    __slots__ = (
        "__weakref__",
        "_ctx",
        "_index",
        "data",
        "grad",
        "name",
        "requires_grad",
    )
    __array_priority__ = 1000  # so `ndarray + Tensor` defers to Tensor.__radd__

    def __init__(self, data: Any, requires_grad: bool = False, name: str | None = None) -> None:
        self.data: np.ndarray = _as_array(data)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                f"only floating-point tensors can require grad; got dtype {self.data.dtype}"
            )
        self.requires_grad = bool(requires_grad)
        self.grad: np.ndarray | None = None
        self.name = name
        self._ctx: Function | None = None  # the op that produced this tensor, if recorded
        self._index = 0  # which of that op's outputs this tensor is

    # ---- facts about the data ----
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy:  # np.array(t) asks for a copy: a snapshot must not follow in-place updates
            return np.array(self.data, dtype=dtype, copy=True)
        return self.data if dtype is None else self.data.astype(dtype, copy=False)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = f", grad_fn={type(self._ctx).__name__}" if self._ctx is not None else ""
        req = ", requires_grad=True" if self.requires_grad and not grad else ""
        return f"Tensor({np.array2string(self.data, separator=', ')}{req}{grad})"

    # ---- graph control ----
    def detach(self) -> Tensor:
        """Same data, cut from the graph (truncated BPTT)."""
        return Tensor(self.data)

    def retain_grad(self) -> Tensor:
        """Keep `.grad` on this non-leaf tensor after backward (e.g. ∂L/∂a<t> at every step)."""
        if self._ctx is not None:
            retained = self._ctx.__dict__.setdefault("retained", {})
            retained[self._index] = self
        return self

    def zero_grad(self) -> None:
        self.grad = None

    def backward(
        self, grad: Any = None, retain_graph: bool = False, create_graph: bool = False
    ) -> None:
        """Reverse-mode pass: accumulate ∂self/∂leaf · grad into every leaf's `.grad`.

        `grad` may be omitted only for a single-element tensor. The graph's saved buffers are
        freed as backward goes unless `retain_graph=True`. With `create_graph=True` the
        gradients are computed as recorded graph ops (the graph is kept), so that
        `autograd.grad` can differentiate them again; `.grad` still holds their values.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad (no input needed a gradient)"
            )
        seed = _seed_grad(self, grad)
        grads = run_backward([(self, seed)], retain_graph or create_graph, create_graph)
        for leaf, g in grads:
            _accumulate(leaf, _values(g))

    # ---- operators: each one line, the calculus lives in ops.py ----
    def __add__(self, other: Any) -> Tensor:
        return ops.Add.apply(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return ops.Add.apply(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return ops.Sub.apply(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return ops.Sub.apply(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return ops.Mul.apply(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return ops.Mul.apply(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return ops.Div.apply(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return ops.Div.apply(other, self)

    def __pow__(self, exponent: float) -> Tensor:
        return ops.Pow.apply(self, exponent=exponent)

    def __neg__(self) -> Tensor:
        return ops.Neg.apply(self)

    def __matmul__(self, other: Any) -> Tensor:
        return ops.MatMul.apply(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return ops.MatMul.apply(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return ops.GetItem.apply(self, index=index)

    # comparisons give plain boolean arrays (masks for `where`), never graph nodes
    def __lt__(self, other: Any) -> np.ndarray:
        return self.data < np.asarray(other)

    def __le__(self, other: Any) -> np.ndarray:
        return self.data <= np.asarray(other)

    def __gt__(self, other: Any) -> np.ndarray:
        return self.data > np.asarray(other)

    def __ge__(self, other: Any) -> np.ndarray:
        return self.data >= np.asarray(other)

    __hash__ = object.__hash__

    # ---- methods ----
    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / max(_count(self, axis), 1))

    def max(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def exp(self) -> Tensor:
        return ops.Exp.apply(self)

    def log(self) -> Tensor:
        return ops.Log.apply(self)

    def tanh(self) -> Tensor:
        return ops.Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        return ops.Sigmoid.apply(self)

    def relu(self) -> Tensor:
        return ops.Relu.apply(self)

    def softmax(self, axis: int = -1) -> Tensor:
        return ops.Softmax.apply(self, axis=axis)

    def log_softmax(self, axis: int = -1) -> Tensor:
        return ops.LogSoftmax.apply(self, axis=axis)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        return ops.Reshape.apply(self, shape=shape)

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and isinstance(axes[0], tuple | list):
            axes = tuple(axes[0])
        return ops.Transpose.apply(self, axes=axes or None)

    @property
    def T(self) -> Tensor:
        return self.transpose()

    # ---- for cell authors: compositions unless stability or speed needs a primitive ----
    def sqrt(self) -> Tensor:
        """√x;  ∂/∂x = 1 / (2√x)."""
        return ops.Sqrt.apply(self)

    def abs(self) -> Tensor:
        """|x|;  ∂/∂x = sign x, 0 at x = 0 (as PyTorch)."""
        return ops.Abs.apply(self)

    def clip(self, lo: float | None = None, hi: float | None = None) -> Tensor:
        """min(max(x, lo), hi) (a bound may be `None`);  the gradient passes where lo ≤ x ≤ hi."""
        return ops.Clip.apply(self, lo=lo, hi=hi)

    def softplus(self) -> Tensor:
        """log(1 + eˣ), stable for any magnitude;  ∂/∂x = σ(x)."""
        return ops.Softplus.apply(self)

    def min(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """min x = −max(−x) over `axis` (ties share the gradient evenly, like `max`)."""
        return -((-self).max(axis=axis, keepdims=keepdims))

    def var(
        self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False, ddof: int = 0
    ) -> Tensor:
        """Σ (x − mean x)² / (N − ddof) over `axis` (ddof = 0: the biased variance)."""
        d = self - self.mean(axis=axis, keepdims=True)
        return (d * d).sum(axis=axis, keepdims=keepdims) * _reciprocal(_count(self, axis) - ddof)

    def std(
        self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False, ddof: int = 0
    ) -> Tensor:
        """√var(x) over `axis`."""
        return self.var(axis=axis, keepdims=keepdims, ddof=ddof).sqrt()

    def logsumexp(self, axis: int = -1, keepdims: bool = False) -> Tensor:
        """log Σ eˣ along `axis` = m + log Σ e^(x − m) with m = max x held constant (stable)."""
        top = Tensor(np.max(self.data, axis=axis, keepdims=True))
        total = (self - top).exp().sum(axis=axis, keepdims=True).log() + top
        return total if keepdims else total.reshape(np.squeeze(total.data, axis).shape)

    def chunk(self, n: int, axis: int = -1) -> tuple[Tensor, ...]:
        """`n` parts along `axis`, each ⌈size/n⌉ long but the last, as PyTorch's `chunk`."""
        size = self.shape[axis]
        if n < 1:
            raise ValueError(f"chunk: n must be at least 1, got {n}")
        step = -(-size // n)
        offsets = tuple(range(step, size, step))
        return ops.Split.apply(self, offsets=offsets, axis=axis)


def _count(t: Tensor, axis: Any) -> int:
    """How many elements a reduction over `axis` combines."""
    if axis is None:
        return t.size
    axes = (axis,) if isinstance(axis, int) else axis
    return int(np.prod([t.shape[a] for a in axes]))


def _reciprocal(n: int) -> float:
    return 1.0 / n if n > 0 else float("inf")  # var with ddof ≥ N: nan or inf, as NumPy


class Function:
    """The extension point for a new op, and how every built-in op is defined.

    A subclass defines `forward(self, *arrays, **kwargs) -> ndarray` and
    `backward(self, grad) -> ndarray | tuple`: one gradient per positional input, in order
    (`None` where none is needed; a bare array when there is one input), each of the input's
    shape or, for an input that was broadcast, of the output's shape (the engine sums it
    back). Anything else raises, naming the Function. `self.needs_input_grad` tells backward
    which inputs want a gradient; keep on `self` what backward needs.

    Such a backward works on arrays, so it is differentiated once: a second derivative that
    needs it raises, naming the Function. Define instead `vjp(self, m, g, *inputs, out)` with
    operators and the functions of `m` (see `backends.py`), and the same code serves first
    order (arrays) and higher orders (Tensors), as for every built-in op.

    >>> import numpy as np
    >>> class Cube(Function):
    ...     def forward(self, x):
    ...         self.x = x
    ...         return x**3
    ...     def backward(self, grad):
    ...         return 3 * self.x**2 * grad
    >>> x = Tensor([2.0], requires_grad=True)
    >>> Cube.apply(x).backward()
    >>> x.grad
    array([12.], dtype=float32)
    """

    parents: tuple[Any, ...] | None
    needs_input_grad: tuple[bool, ...]
    n_outputs: int = 1
    tuple_output = False  # forward returned a tuple (even of one array)

    # set per class by __init_subclass__: call `formula` as the forward, `vjp` as the backward
    _formula_forward = False
    _vjp_backward = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._formula_forward = hasattr(cls, "formula") and "forward" not in _own(cls)
        cls._vjp_backward = cls.vjp is not Function.vjp and cls.backward is Function.backward

    def forward(self, *arrays: Any, **kwargs: Any) -> np.ndarray:
        if self._formula_forward:
            return self.formula(ARRAYS, *arrays)
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad: Any) -> Any:
        """The first-order backward: the `vjp` on the arrays forward saw."""
        if type(self).vjp is Function.vjp:
            raise NotImplementedError(f"{type(self).__name__} defines neither backward nor vjp")
        return self.vjp(ARRAYS, grad, *self.arrays, self.out)

    def vjp(self, m: Any, g: Any, *inputs_and_out: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.vjp")

    @classmethod
    def apply(cls, *inputs: Any, **kwargs: Any) -> Any:
        """Run `forward` on the inputs' arrays; record the node when a gradient is needed.

        Returns a Tensor, or a tuple of Tensors when `forward` returns a tuple of arrays (then
        `backward` receives a tuple of output gradients, zeros for outputs that got none).
        A recorded node keeps `parents`, `arrays` (what forward saw), `out` and `kwargs`, and
        makes its Tensor inputs' arrays read-only until backward has used them.
        """
        fn = cls()
        arrays = []
        needs = []
        record = False
        for x in inputs:
            if isinstance(x, Tensor):
                arrays.append(x.data)
                needs.append(x.requires_grad)
                record = record or x.requires_grad
            else:
                arrays.append(x if type(x) in _PLAIN_CONSTANTS else _constant(x, cls))
                needs.append(False)
        if cls._formula_forward:
            result = fn.formula(ARRAYS, *arrays)
        else:
            result = fn.forward(*arrays, **kwargs)
        record = record and _GradMode.enabled
        if record:
            fn.parents = inputs
            fn.needs_input_grad = tuple(needs)
            fn.seq = next(_sequence)
            fn.arrays, fn.out, fn.kwargs = arrays, result, kwargs
            held = None
            for x in inputs:  # saved arrays become read-only (see `_lock`)
                if isinstance(x, Tensor):
                    if x._ctx is None:
                        held = _lock(x.data, held)
                    else:
                        x.data.setflags(write=False)
            if held:
                fn.release = weakref.finalize(fn, _release, held)
            if anomaly.enabled:
                anomaly.on_forward(fn, result)
        if type(result) is tuple:
            fn.n_outputs = len(result)
            fn.tuple_output = True
            return tuple(_output(r, fn if record else None, i) for i, r in enumerate(result))
        return _output(result, fn if record else None, 0)


def _own(cls: type) -> set[str]:
    """The names a class defines below Function's own, e.g. whether it overrides forward."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is Function:
            break
        names.update(vars(klass))
    return names


def _output(data: Any, fn: Function | None, index: int) -> Tensor:
    out = Tensor.__new__(Tensor)
    out.data = data if type(data) is np.ndarray else np.asarray(data)
    out.grad = None
    out.name = None
    out.requires_grad = fn is not None
    out._ctx = fn
    out._index = index
    return out


_sequence = itertools.count(1)  # creation order of nodes: a topological order of the graph
_PLAIN_CONSTANTS = frozenset({float, int, np.ndarray, np.float32, np.float64})


def _constant(x: Any, op: type) -> Any:
    """A non-Tensor input: Python and NumPy numbers pass through (weak dtype), arrays stay."""
    if isinstance(x, np.ndarray | float | int | np.generic):
        return x
    if isinstance(x, list | tuple):
        array = np.asarray(x)
        if array.dtype.kind in "biuf":
            return array
    raise TypeError(
        f"{op.__name__}: cannot apply to an object of type {type(x).__name__}; "
        "expected a Tensor, a NumPy array or a number"
    )


# ================================================================ saved arrays are read-only


def _lock(data: np.ndarray, held: list | None) -> list | None:
    """Make a leaf's array read-only while graph nodes hold it.

    Every recorded node makes its Tensor inputs' arrays read-only, so an in-place write
    between forward and backward fails at the write instead of making backward mix old and
    new values. A leaf's array (a parameter, an input batch the user owns) is writable again
    once no live node holds it: after backward, or when the graph is dropped; `_LOCKS` counts
    the nodes holding each one. Returns the list of arrays the node holds.
    """
    lock = _LOCKS.get(id(data))
    if lock is not None:
        lock[1] += 1
    elif data.flags.writeable:
        data.setflags(write=False)
        _LOCKS[id(data)] = [data, 1]
    else:
        return held  # read-only already, and not by us: nothing to give back
    return [data] if held is None else [*held, data]


_LOCKS: dict[int, list[Any]] = {}  # id(array) -> [array, number of live nodes holding it]


def _release(arrays: list[np.ndarray]) -> None:
    for data in arrays:
        lock = _LOCKS[id(data)]
        lock[1] -= 1
        if lock[1] == 0:
            del _LOCKS[id(data)]
            data.setflags(write=True)


def _free(fn: Function) -> None:
    """Drop a node's saved arrays and its links to its inputs once backward has used them."""
    state = fn.__dict__
    release = state.get("release")
    if release is not None:
        release()
    seq, tuple_output, n = state["seq"], state.get("tuple_output"), state.get("n_outputs")
    state.clear()
    state["seq"], state["parents"] = seq, None  # what a 2nd backward needs for its clear error
    if tuple_output:
        state["tuple_output"], state["n_outputs"] = True, n


# ================================================================ deferred weight gradients


class DeferredMatmulGrad:
    """A weight gradient `leftᵀ @ right` that the engine sums over a whole backward pass.

    An op whose weight is used at every time step returns this instead of computing its
    per-step GEMM; every (left, right) pair a tensor receives is stacked and reduced in one
    GEMM when its gradient is read (K = T·B instead of T GEMMs with K = B).
    """

    __slots__ = ("left", "right", "shape")

    def __init__(self, left: np.ndarray, right: np.ndarray) -> None:
        self.left, self.right = left, right
        self.shape = (left.shape[-1], right.shape[-1])


class _GradSum:
    """Gradients arriving at one tensor once a deferred pair is among them: a dense sum plus
    the (left, right) pairs, reduced in one GEMM by `total`."""

    __slots__ = ("dense", "lefts", "rights")

    def __init__(self, dense: Any) -> None:
        self.dense = dense
        self.lefts: list[np.ndarray] = []
        self.rights: list[np.ndarray] = []

    def total(self) -> Any:
        product = _stack_rows(self.lefts).T @ _stack_rows(self.rights)
        return product if self.dense is None else self.dense + product


def _add(slot: Any, g: Any) -> Any:
    """The running sum of the gradients arriving at one tensor."""
    if slot is None and type(g) is not DeferredMatmulGrad:
        return g
    if type(g) is DeferredMatmulGrad:
        slot = slot if type(slot) is _GradSum else _GradSum(slot)
        slot.lefts.append(g.left)
        slot.rights.append(g.right)
        return slot
    if type(slot) is _GradSum:
        slot.dense = g if slot.dense is None else slot.dense + g
        return slot
    return g if slot is None else slot + g


def _total(slot: Any) -> Any:
    return slot.total() if type(slot) is _GradSum else slot


def _stack_rows(arrays: list[np.ndarray]) -> np.ndarray:
    arrays = [a.reshape(-1, a.shape[-1]) for a in arrays]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


# ================================================================ the reverse pass


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...], op: str = "op") -> np.ndarray:
    """Sum `grad` over the axes that NumPy broadcasting added or stretched to reach `shape`."""
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise ValueError(f"{op}: gradient of shape {grad.shape} cannot reduce to input {shape}")
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    if grad.shape != shape:
        raise ValueError(f"{op}: gradient of shape {grad.shape} does not match input {shape}")
    return grad


def run_backward(
    seeds: list[tuple[Tensor, Any]],
    retain_graph: bool,
    create_graph: bool,
    capture: dict[tuple[int, int], Any] | None = None,
    stop: set[int] | None = None,
) -> list[tuple[Tensor, Any]]:
    """Propagate the seeds' gradients to every leaf; return (leaf, total gradient) pairs.

    Nodes are visited newest first: outputs are created after their inputs, so creation
    order (`fn.seq`) is a topological order and a heap keyed on it replaces a separate sort,
    with no recursion. A node runs once all its consumers are done. With `create_graph` the
    gradients are Tensors and every vjp is recorded. `capture` maps (id(node), output index)
    to the total gradient of non-leaf tensors asked for (and then `retain_grad` is ignored).
    Tensors whose id is in `stop` are treated as leaves: the walk ends there.
    """
    pending: dict[int, Any] = {}  # node -> its output's gradient sum (a list for tuple outputs)
    heap: list[tuple[int, Function]] = []
    leaves: dict[int, list[Any]] = {}  # id(leaf) -> [leaf, gradient sum]
    for t, g in seeds:
        _send(t, g, pending, heap, leaves, stop)
    previous, _GradMode.enabled = _GradMode.enabled, create_graph
    try:
        while heap:
            fn = heappop(heap)[1]
            if fn.parents is None:
                raise RuntimeError(
                    "backward through a graph a second time: its buffers were freed by the "
                    "first backward(); pass retain_graph=True to that call"
                )
            upstream = _upstream(fn, pending.pop(id(fn)), capture)
            if create_graph:
                in_grads = _one_per_input(fn, _differentiable_backward(fn, upstream))
            else:
                in_grads = node_grads(fn, upstream)
            if anomaly.enabled:
                anomaly.on_backward(fn, in_grads)
            for i, (p, need, g) in enumerate(
                zip(fn.parents, fn.needs_input_grad, in_grads, strict=False)
            ):
                if need and g is not None:
                    if getattr(g, "shape", None) != p.data.shape:
                        g = _unbroadcast_checked(fn, i, g, p.data.shape, create_graph)
                    _send(p, g, pending, heap, leaves, stop)
            if not retain_graph:
                _free(fn)
    finally:
        _GradMode.enabled = previous
    return [(t, _total(total)) for t, total in leaves.values()]


def node_grads(fn: Function, upstream: Any) -> tuple[Any, ...]:
    """One node's first-order gradients (its `vjp` on arrays, or its `backward`), one per
    positional input: any other count raises, naming the Function."""
    if fn._vjp_backward:
        return _one_per_input(fn, fn.vjp(ARRAYS, upstream, *fn.arrays, fn.out))
    return _one_per_input(fn, fn.backward(upstream))


def _one_per_input(fn: Function, in_grads: Any) -> tuple[Any, ...]:
    if type(in_grads) is not tuple:
        in_grads = tuple(in_grads) if type(in_grads) is list else (in_grads,)
    if len(in_grads) != len(fn.arrays):
        raise RuntimeError(
            f"{type(fn).__name__}.backward returned {len(in_grads)} gradient(s) for "
            f"{len(fn.arrays)} input(s): return one per positional input, None where none"
        )
    return in_grads


def _send(
    t: Tensor, g: Any, pending: dict, heap: list, leaves: dict, stop: set[int] | None
) -> None:
    """Add `g` to the gradient sum of `t` (a leaf, or one output of a pending node)."""
    fn = t._ctx
    if fn is None or (stop is not None and id(t) in stop):
        entry = leaves.get(id(t))
        if entry is None:
            leaves[id(t)] = [t, _add(None, g)]
        else:
            entry[1] = _add(entry[1], g)
        return
    key = id(fn)
    if fn.tuple_output:
        slots = pending.get(key)
        if slots is None:
            slots = pending[key] = [None] * fn.n_outputs
            heappush(heap, (-fn.seq, fn))
        slots[t._index] = _add(slots[t._index], g)
    elif key in pending:
        pending[key] = _add(pending[key], g)
    else:
        pending[key] = _add(None, g)
        heappush(heap, (-fn.seq, fn))


def _upstream(fn: Function, got: Any, capture: Any) -> Any:
    """The node's output gradient(s): totals, zeros for tuple outputs that got none; retained
    and captured gradients are kept on the way."""
    if fn.tuple_output:
        grads = [
            np.zeros_like(o) if s is None else _total(s) for s, o in zip(got, fn.out, strict=False)
        ]
    else:
        grads = [_total(got)]
    if capture is not None:
        for i, g in enumerate(grads):
            if (id(fn), i) in capture:
                capture[id(fn), i] = g
    elif "retained" in fn.__dict__:
        for i, t in fn.retained.items():
            _accumulate(t, _values(grads[i]))
    return tuple(grads) if fn.tuple_output else grads[0]


def _unbroadcast_checked(fn: Function, i: int, g: Any, shape: tuple, create_graph: bool) -> Any:
    """A gradient of the output's shape summed back to a broadcast input's shape; any other
    shape breaks the contract and raises, naming the Function and the input."""
    if type(g) not in (np.ndarray, DeferredMatmulGrad, Tensor):
        g = np.asarray(g)
        if g.shape == shape:
            return g
    out_shape = None if fn.tuple_output else np.shape(fn.out)
    fits = g.shape == out_shape and type(g) is not DeferredMatmulGrad
    if fits and len(shape) <= len(out_shape):
        lead = len(out_shape) - len(shape)
        fits = all(n in (1, m) for n, m in zip(shape, out_shape[lead:], strict=False))
    if not fits:
        raise ValueError(
            f"{type(fn).__name__}.backward: the gradient for input {i} has shape {g.shape}; "
            f"expected the input's shape {shape}"
            + ("" if out_shape is None else f" or (broadcast) the output's shape {out_shape}")
        )
    return (TENSORS if create_graph else ARRAYS).unbroadcast(g, shape)


def _differentiable_backward(fn: Function, upstream: Any) -> Any:
    """The node's vjp on Tensors (so it is recorded), or its array backward behind a guard."""
    if type(fn).vjp is not Function.vjp:
        outs = fn.out if fn.tuple_output else (fn.out,)
        out = tuple(_output(o, fn, i) for i, o in enumerate(outs))
        return fn.vjp(TENSORS, upstream, *fn.parents, out if fn.tuple_output else out[0])
    grads = fn.backward(
        tuple(_values(u) for u in upstream) if fn.tuple_output else _values(upstream)
    )
    grads = grads if type(grads) in (tuple, list) else (grads,)
    sources = [t for t in (*fn.parents, *_as_tuple(upstream)) if isinstance(t, Tensor)]
    return tuple(
        g if g is None else OnceDifferentiable.apply(g, *sources, op=type(fn).__name__)
        for g in grads
    )


def _values(g: Any) -> Any:
    return g.data if isinstance(g, Tensor) else g


def _as_tuple(x: Any) -> tuple[Any, ...]:
    return x if isinstance(x, tuple) else (x,)


class OnceDifferentiable(Function):
    """Holds a gradient computed by an array-only `backward`: differentiating it raises."""

    def forward(self, value, *sources, op: str):
        self.op = op
        return value

    def backward(self, grad):
        raise RuntimeError(
            f"{self.op}.backward works on NumPy arrays, so its gradient cannot be "
            f"differentiated again; define {self.op}.vjp(self, m, g, *inputs, out) with "
            "operators and the functions of m to make it differentiable"
        )


def grad(
    outputs: Any,
    inputs: Any,
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
) -> tuple[Tensor | None, ...]:
    """The gradients of `outputs` with respect to `inputs`, as PyTorch's `torch.autograd.grad`.

    Returns a tuple with one Tensor per input, in order, or `None` for an input the outputs
    do not depend on (PyTorch's `allow_unused=True`). `grad_outputs` gives the upstream
    gradient of each output (ones for a single-element output when omitted). The inputs'
    `.grad` is left untouched. With `create_graph=True` the gradients are recorded graph
    Tensors that can be differentiated again; the graph is then kept unless
    `retain_graph=False`.

    >>> from tinygrad_seq import Tensor
    >>> x = Tensor([3.0], requires_grad=True)
    >>> (dx,) = grad((x**3).sum(), x, create_graph=True)   # 3x² = 27
    >>> (ddx,) = grad(dx.sum(), x)                          # 6x = 18
    >>> dx.data, ddx.data, x.grad
    (array([27.], dtype=float32), array([18.], dtype=float32), None)
    """
    outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
    inputs = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif not isinstance(grad_outputs, list | tuple):
        grad_outputs = [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: {len(outputs)} outputs but {len(grad_outputs)} grad_outputs")
    seeds = []
    for i, (o, g) in enumerate(zip(outputs, grad_outputs, strict=False)):
        if not isinstance(o, Tensor) or not o.requires_grad:
            raise RuntimeError(f"grad: output {i} does not require grad (nothing to differentiate)")
        keep = create_graph and isinstance(g, Tensor) and g.shape == o.shape
        seeds.append((o, g if keep else _seed_grad(o, g)))
    capture: dict[tuple[int, int], Any] = {}
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor) or not x.requires_grad:
            raise RuntimeError(f"grad: input {i} is not a Tensor that requires grad")
        if x._ctx is not None:
            capture[id(x._ctx), x._index] = None
    retain = create_graph if retain_graph is None else retain_graph
    leaf_grads = {id(t): g for t, g in run_backward(seeds, retain, create_graph, capture)}
    result: list[Tensor | None] = []
    for x in inputs:
        g = leaf_grads.get(id(x)) if x._ctx is None else capture[id(x._ctx), x._index]
        if g is not None and not isinstance(g, Tensor):
            g = Tensor(np.array(g, dtype=x.dtype))
        result.append(g)
    return tuple(result)


def _seed_grad(t: Tensor, grad: Any) -> Any:
    if grad is None:
        if t.data.size != 1:
            raise RuntimeError(
                f"backward() without a gradient needs a single-element tensor; this one has "
                f"shape {t.shape}: pass grad= of that shape"
            )
        return np.ones_like(t.data)
    grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad)
    if grad.shape != t.shape:
        raise ValueError(f"backward(grad): grad has shape {grad.shape}, tensor has shape {t.shape}")
    return grad.astype(t.dtype, copy=False)


def _accumulate(t: Tensor, g: Any) -> None:
    """`t.grad += g`, owning a copy of the first gradient (g may be a view or shared)."""
    if t.grad is None:
        t.grad = np.array(g, dtype=t.data.dtype)
    else:
        t.grad += g


from . import ops  # noqa: E402  (ops need Function and Tensor defined above)
from .backends import ARRAYS, TENSORS  # noqa: E402
