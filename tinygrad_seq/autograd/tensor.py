"""The engine: `Tensor`, the `Function` extension point, and the reverse-mode pass.

Everything an op needs from the engine lives here and nowhere else: recording the graph
(`Function.apply`), ordering it (an iterative topological sort, so a 100,000-step chain
needs no recursion), reducing broadcast gradients back to each input's shape, accumulating
`.grad`, and freeing what backward no longer needs. Ops (`ops.py`) only know calculus.
"""

from __future__ import annotations

import contextlib
import itertools
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


def is_grad_enabled() -> bool:
    return _GradMode.enabled


def _as_array(data: Any) -> np.ndarray:
    """SPEC §1 dtype rules: float32/float64 kept, ints kept, Python numbers become float32."""
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

    __slots__ = ("__weakref__", "_ctx", "_index", "data", "grad", "name", "requires_grad")
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

    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Reverse-mode pass: accumulate ∂self/∂leaf · grad into every leaf's `.grad`.

        `grad` may be omitted only for a single-element tensor. The graph's saved buffers are
        freed as backward goes unless `retain_graph=True`.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad (no input needed a gradient)"
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a single-element tensor; this one has "
                    f"shape {self.shape}: pass grad= of that shape"
                )
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad)
            if grad.shape != self.shape:
                raise ValueError(
                    f"backward(grad): grad has shape {grad.shape}, tensor has shape {self.shape}"
                )
            grad = grad.astype(self.dtype, copy=False)
        _backward(self, grad, retain_graph)

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
        axes = range(self.ndim) if axis is None else (axis,) if isinstance(axis, int) else axis
        count = int(np.prod([self.shape[a] for a in axes]))
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / max(count, 1))

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


class Function:
    """The extension point for a new op, and how every built-in op is defined.

    A subclass defines `forward(self, *arrays, **kwargs) -> ndarray` and
    `backward(self, grad) -> ndarray | tuple` (one gradient per positional input, `None` where
    none is needed), keeping on `self` what backward needs. `self.needs_input_grad` tells
    backward which inputs want a gradient. The engine undoes broadcasting: a gradient may
    have the output's broadcast shape.

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

    def forward(self, *arrays: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad: np.ndarray) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.backward")

    @classmethod
    def apply(cls, *inputs: Any, **kwargs: Any) -> Any:
        """Run `forward` on the inputs' arrays; record the node when a gradient is needed.

        Returns a Tensor, or a tuple of Tensors when `forward` returns a tuple of arrays (then
        `backward` receives a tuple of output gradients, zeros for outputs that got none).
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
        result = fn.forward(*arrays, **kwargs)
        record = record and _GradMode.enabled
        if record:
            fn.parents = inputs
            fn.needs_input_grad = tuple(needs)
            fn.seq = next(_sequence)
            if anomaly.enabled:
                anomaly.on_forward(fn, result)
        if type(result) is tuple:
            fn.n_outputs = len(result)
            fn.tuple_output = True
            fn.output_meta = tuple((np.shape(r), np.result_type(r)) for r in result)
            return tuple(_output(r, fn if record else None, i) for i, r in enumerate(result))
        fn.n_outputs = 1
        return _output(result, fn if record else None, 0)


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


class DeferredMatmulGrad:
    """A weight gradient `leftᵀ @ right` that the engine sums over a whole backward pass.

    An op whose weight is used at every time step can return this instead of computing its
    per-step GEMM; the engine stacks every (left, right) pair a leaf receives and computes
    one GEMM at the end of backward (K = T·B instead of T GEMMs with K = B).
    """

    __slots__ = ("left", "right", "shape")

    def __init__(self, left: np.ndarray, right: np.ndarray) -> None:
        self.left, self.right = left, right
        self.shape = (left.shape[-1], right.shape[-1])

    def materialize(self) -> np.ndarray:
        return self.left.T @ self.right


class _GradSum:
    """Gradients arriving at one tensor: a dense sum plus deferred (left, right) GEMM pairs."""

    __slots__ = ("dense", "lefts", "rights")

    def __init__(self, g: Any) -> None:
        self.dense: np.ndarray | None = None
        self.lefts: list[np.ndarray] = []
        self.rights: list[np.ndarray] = []
        self.add(g)

    def add(self, g: Any) -> None:
        if type(g) is DeferredMatmulGrad:
            self.lefts.append(g.left)
            self.rights.append(g.right)
        else:
            self.dense = g if self.dense is None else self.dense + g

    def total(self) -> np.ndarray:
        """Dense part + (stacked lefts)ᵀ @ (stacked rights): one GEMM for every deferred pair."""
        if not self.lefts:
            return self.dense
        product = _stack_rows(self.lefts).T @ _stack_rows(self.rights)
        return product if self.dense is None else self.dense + product


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


def _backward(root: Tensor, grad: np.ndarray, retain_graph: bool) -> None:
    """Visit the graph's nodes newest first, so each is run after all of its consumers.

    Outputs are always created after their inputs, so creation order (`fn.seq`) is a
    topological order and a heap keyed on it replaces a separate sort, with no recursion.
    A leaf's gradient is accumulated as soon as it arrives (deferred weight GEMMs at the end);
    a node runs once its last consumer is done.
    """
    fn = root._ctx
    if fn is None:
        _accumulate(root, grad)
        return
    pending: dict[int, Any] = {id(fn): _first_grads(fn, root._index, grad)}
    heap: list[tuple[int, Function]] = [(-fn.seq, fn)]
    deferred: dict[int, tuple[Tensor, _GradSum]] = {}
    while heap:
        fn = heappop(heap)[1]
        out_grads = pending.pop(id(fn))
        if type(out_grads) is _GradSum:
            out_grads = out_grads.total()
        if fn.parents is None:
            raise RuntimeError(
                "backward through a graph a second time: its buffers were freed by the "
                "first backward(); pass retain_graph=True to that call"
            )
        if fn.tuple_output:
            out_grads = tuple(
                np.zeros(shape, dtype) if g is None else g
                for g, (shape, dtype) in zip(out_grads, fn.output_meta, strict=True)
            )
        retained = fn.__dict__.get("retained")
        if retained:
            for i, t in retained.items():
                _accumulate(t, out_grads[i] if fn.tuple_output else out_grads)
        in_grads = fn.backward(out_grads)
        if type(in_grads) is not tuple:
            in_grads = (in_grads,)
        if anomaly.enabled:
            anomaly.on_backward(fn, in_grads)
        for p, need, gi in zip(fn.parents, fn.needs_input_grad, in_grads, strict=False):
            if not need or gi is None:
                continue
            if gi.shape != p.data.shape:
                gi = unbroadcast(gi, p.data.shape, type(fn).__name__)
            node = p._ctx
            deferred_gi = type(gi) is DeferredMatmulGrad
            if node is None:
                if deferred_gi:
                    entry = deferred.get(id(p))
                    if entry is None:
                        deferred[id(p)] = (p, _GradSum(gi))
                    else:
                        entry[1].add(gi)
                else:
                    _accumulate(p, gi)
                continue
            if deferred_gi and node.tuple_output:
                gi = gi.materialize()
            key = id(node)
            slot = pending.get(key)
            if slot is None:
                pending[key] = _GradSum(gi) if deferred_gi else _first_grads(node, p._index, gi)
                heappush(heap, (-node.seq, node))
            elif not node.tuple_output:
                if type(slot) is _GradSum:
                    slot.add(gi)
                elif deferred_gi:
                    pending[key] = _GradSum(slot)
                    pending[key].add(gi)
                else:
                    pending[key] = slot + gi
            else:
                i = p._index
                slot[i] = gi if slot[i] is None else slot[i] + gi
        if not retain_graph:
            _free(fn)
    for p, total in deferred.values():
        _accumulate(p, total.total())


def _first_grads(fn: Function, index: int, grad: np.ndarray) -> Any:
    """A single-output node's gradient, or a list with one slot per output."""
    if not fn.tuple_output:
        return grad
    slots: list[Any] = [None] * fn.n_outputs
    slots[index] = grad
    return slots


def _stack_rows(arrays: list[np.ndarray]) -> np.ndarray:
    arrays = [a.reshape(-1, a.shape[-1]) for a in arrays]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _accumulate(t: Tensor, g: Any) -> None:
    """`t.grad += g`, owning a copy of the first gradient (g may be a view or shared)."""
    if type(g) is DeferredMatmulGrad:
        g = g.materialize()
    if t.grad is None:
        t.grad = np.array(g, dtype=t.data.dtype)
    else:
        t.grad += g


def _free(fn: Function) -> None:
    """Drop a node's saved arrays and its links to its inputs once backward has used them."""
    state = fn.__dict__
    kept = {k: state[k] for k in ("seq", "n_outputs", "tuple_output") if k in state}
    state.clear()
    state.update(kept, parents=None)  # what a 2nd backward needs to reach its clear error


from . import ops  # noqa: E402  (ops need Function and Tensor defined above)
