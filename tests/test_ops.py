"""Every public operator, method and op function as one table of cases, each held to two
properties.

1. The forward pass equals NumPy on the same arrays (shape, dtype and values).
2. Reverse-mode gradients equal central finite differences, contracted with a random upstream
   gradient, through the public kit (`tinygrad_seq.testing.assert_grads_close`).
3. Second derivatives (the backward pass differentiated, `create_graph=True`) equal central
   differences of first derivatives (`assert_second_grads_close`), for every op.

A case draws a tuple of arguments. Tensors that require grad are the differentiated inputs;
everything else (Python scalars, NumPy arrays, axes, indices) is a constant. `op` runs on the
arguments as drawn; `ref` runs on the same arguments with every Tensor replaced by a copy of its
array (when `ref` is omitted, `op` itself runs on the arrays: the operators mean the same thing).
Values stay away from the points where an op is not smooth (log and fractional powers of
positives, divisors and ReLU inputs away from 0, maxima without ties).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_seq import Tensor, concat, maximum, minimum, stack, where
from tinygrad_seq.testing import (
    assert_grads_close,
    assert_second_grads_close,
    broadcastable_shapes,
    shapes,
    tensors,
)

# ---------------------------------------------------------------- element strategies
ANY = st.floats(-3, 3, width=32)
POSITIVE = st.floats(0.5, 3, width=32)  # log, fractional powers
AWAY_FROM_0 = st.floats(0.5, 3, width=32) | st.floats(-3, -0.5, width=32)  # divisors
RELU_SAFE = st.floats(0.0625, 3, width=32) | st.floats(-3, -0.0625, width=32)


@dataclass(frozen=True)
class Case:
    """One row of the table: a strategy of argument tuples, the op, and its NumPy reference."""

    name: str
    args: st.SearchStrategy[tuple[Any, ...]]
    op: Callable[..., Tensor]
    ref: Callable[..., Any] | None = None


# ---------------------------------------------------------------- argument strategies
def _operand(kind: str, shape: tuple[int, ...], elements: st.SearchStrategy[float]) -> Any:
    """A strategy for one operand: a Tensor requiring grad, a NumPy array, or a Python float."""
    if kind == "tensor":
        return tensors(shape=shape, elements=elements)
    if kind == "array":
        return hnp.arrays(np.float64, shape, elements=elements)
    return elements.map(float)


@st.composite
def binary(
    draw: st.DrawFn,
    left: str = "tensor",
    right: str = "tensor",
    right_elements: st.SearchStrategy[float] = ANY,
) -> tuple[Any, Any]:
    """Two operands whose shapes broadcast together (either may be the smaller one)."""
    shape = draw(shapes())
    other = draw(broadcastable_shapes(shape, max_dims=3))
    if draw(st.booleans()):
        shape, other = other, shape
    return draw(_operand(left, shape, ANY)), draw(_operand(right, other, right_elements))


def unary(elements: st.SearchStrategy[float] = ANY, min_dims: int = 0) -> Any:
    return st.tuples(tensors(shape=shapes(min_dims=min_dims), elements=elements))


@st.composite
def distinct(draw: st.DrawFn, shape: Any = None) -> Tensor:
    """A Tensor whose elements are pairwise ≥ 0.1 apart, so `max` has no ties."""
    shape = draw(shapes() if shape is None else shape)
    n = int(np.prod(shape))
    order = np.array(draw(st.permutations(range(n))), dtype=np.float64)
    spacing = draw(st.floats(0.1, 1.0))
    offset = draw(st.floats(-2.0, 2.0))
    return Tensor((order * spacing + offset).reshape(shape), requires_grad=True)


@st.composite
def reduction(draw: st.DrawFn, ties_free: bool = False) -> tuple[Tensor, Any, bool]:
    """(x, axis, keepdims) with axis None, an int (negative too) or a tuple of axes."""
    x = draw(distinct() if ties_free else tensors(shape=shapes()))
    axis_options = [st.none()]
    if x.ndim:
        axis_options += [
            st.integers(-x.ndim, x.ndim - 1),
            st.lists(st.integers(0, x.ndim - 1), min_size=1, unique=True).map(tuple),
        ]
    return x, draw(st.one_of(axis_options)), draw(st.booleans())


@st.composite
def with_axis(draw: st.DrawFn) -> tuple[Tensor, int]:
    """(x, axis) with x at least 1-D and axis in [-ndim, ndim)."""
    x = draw(tensors(shape=shapes(min_dims=1)))
    return x, draw(st.integers(-x.ndim, x.ndim - 1))


MATMUL_LAYOUTS = {
    "1d@1d": ("k", "k"),
    "1d@2d": ("k", "kp"),
    "2d@1d": ("nk", "k"),
    "2d@2d": ("nk", "kp"),
    "batched": ("bnk", "bkp"),
    "batch@2d": ("bnk", "kp"),
    "2d@batch": ("nk", "bkp"),
    "size1-batch@batch": ("1nk", "bkp"),
    "1d@batch": ("k", "bkp"),
    "batch@1d": ("bnk", "k"),
}


@st.composite
def matmul_args(draw: st.DrawFn, layout: str, left: str = "tensor", right: str = "tensor"):
    """Operands of a matmul laid out as e.g. ("bnk", "kp"); `1` is a literal size-1 axis."""
    dims = {c: draw(st.integers(1, 4)) for c in "bnkp"}
    dims["1"] = 1
    a, b = (tuple(dims[c] for c in s) for s in MATMUL_LAYOUTS[layout])
    return draw(_operand(left, a, ANY)), draw(_operand(right, b, ANY))


@st.composite
def reshape_args(draw: st.DrawFn) -> tuple[Tensor, tuple[int, ...]]:
    x = draw(tensors(shape=shapes()))
    targets = [(-1,), (x.size,), x.shape[::-1], (1, *x.shape), (x.size, 1)]
    if x.ndim:
        targets.append((-1, x.shape[-1]))
    return x, draw(st.sampled_from(targets))


@st.composite
def transpose_args(draw: st.DrawFn) -> tuple[Tensor, tuple[int, ...]]:
    x = draw(tensors(shape=shapes()))
    axes = draw(st.permutations(range(x.ndim)))
    # negative spellings of the same axes (−1 is the last) must transpose back the same way
    return x, tuple(a - x.ndim if draw(st.booleans()) else a for a in axes)


@st.composite
def index_args(draw: st.DrawFn, kind: str) -> tuple[Tensor, Any]:
    """(x, index) for one kind of index; integer arrays are drawn with repeats allowed."""
    x = draw(tensors(shape=shapes(min_dims=2 if kind in ("row-array", "pair") else 1)))
    n = x.shape[0]
    ints = st.integers(-n, n - 1)
    repeated = st.lists(ints, min_size=1, max_size=6)
    if kind == "int":
        index = draw(ints)
    elif kind == "slice":
        index = draw(st.slices(n))
    elif kind == "tuple":  # x[slice, None] or x[slice, None, int]
        index = (draw(st.slices(n)), None)
        if x.ndim > 1:
            index += (draw(st.integers(-x.shape[1], x.shape[1] - 1)),)
    elif kind == "none":
        index = (None, Ellipsis, None) if draw(st.booleans()) else None
    elif kind == "array":
        index = np.array(draw(repeated))
    elif kind == "array-2d":
        index = np.array(draw(st.lists(ints, min_size=2, max_size=2)))[:, None].repeat(3, 1)
    elif kind == "list":
        index = draw(repeated)
    elif kind == "int-tensor":
        index = Tensor(np.array(draw(repeated)))
    elif kind == "row-array":
        m = x.shape[1]
        index = (
            slice(None),
            np.array(draw(st.lists(st.integers(-m, m - 1), min_size=1, max_size=6))),
        )
    else:  # "pair": x[rows, cols], both arrays of one length, repeats allowed
        m = x.shape[1]
        pairs = draw(st.lists(st.tuples(ints, st.integers(-m, m - 1)), min_size=1, max_size=6))
        index = (np.array([r for r, _ in pairs]), np.array([c for _, c in pairs]))
    return x, index


@st.composite
def join_args(draw: st.DrawFn, new_axis: bool, with_array: bool = False) -> tuple[Any, ...]:
    """(axis, x1, x2, …): shapes equal except along `axis` for concat, equal for stack."""
    base = list(draw(shapes(min_dims=1)))
    nd = len(base)
    axis = draw(st.integers(-(nd + 1), nd) if new_axis else st.integers(-nd, nd - 1))
    count = draw(st.integers(1, 3))
    parts = []
    for i in range(count):
        shape = list(base)
        if not new_axis:
            shape[axis] = draw(st.integers(1, 3))
        kind = "array" if with_array and i == count - 1 and count > 1 else "tensor"
        parts.append(draw(_operand(kind, tuple(shape), ANY)))
    return (axis, *parts)


@st.composite
def where_args(draw: st.DrawFn, a: str = "tensor", b: str = "tensor", tensor_cond: bool = False):
    """(cond, a, b) of mutually broadcastable shapes; `cond` a bool array or bool Tensor."""
    (cond_shape, a_shape, b_shape), _ = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=4)
    )
    cond = draw(hnp.arrays(np.bool_, cond_shape))
    if tensor_cond:
        cond = Tensor(cond)
    return cond, draw(_operand(a, a_shape, ANY)), draw(_operand(b, b_shape, ANY))


# ---------------------------------------------------------------- NumPy references
def np_softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.log(np_softmax(a, axis))


def np_sigmoid(a: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-a))


# ---------------------------------------------------------------- the table
ARITHMETIC = {
    "add": (lambda x, y: x + y, ANY),
    "sub": (lambda x, y: x - y, ANY),
    "mul": (lambda x, y: x * y, ANY),
    "div": (lambda x, y: x / y, AWAY_FROM_0),
}
SIDES = [  # (left, right): Python scalars and NumPy arrays on either side
    ("tensor", "tensor"),
    ("tensor", "scalar"),
    ("scalar", "tensor"),
    ("tensor", "array"),
    ("array", "tensor"),
]

CASES: list[Case] = [
    Case(f"{name} {left}-{right}", binary(left, right, elements), fn)
    for name, (fn, elements) in ARITHMETIC.items()
    for left, right in SIDES
    if not (name == "div" and left != "tensor" and right == "tensor")
]
CASES += [
    # a divisor Tensor on the right needs its own elements, away from 0
    Case(f"div {left}-tensor", binary(left, "tensor", AWAY_FROM_0), lambda x, y: x / y)
    for left in ("scalar", "array")
]
CASES += [
    Case("neg", unary(), lambda x: -x),
    Case("x*x+x (one input used twice)", unary(), lambda x: x * x + x),
    Case("x-x", unary(), lambda x: x - x),
    Case("pow 2 (any sign)", unary(), lambda x: x**2),
    Case("pow 3 (any sign)", unary(), lambda x: x**3),
    Case(
        "pow p (positive base)",
        st.tuples(
            tensors(shape=shapes(), elements=POSITIVE),
            st.sampled_from([0, 1, 0.5, -1, -0.5, 1.5, 2.5, -2]),
        ),
        lambda x, p: x**p,
    ),
    Case("exp", unary(), lambda x: x.exp(), np.exp),
    Case("log", unary(POSITIVE), lambda x: x.log(), np.log),
    Case("tanh", unary(), lambda x: x.tanh(), np.tanh),
    Case("sigmoid", unary(), lambda x: x.sigmoid(), np_sigmoid),
    Case("sigmoid wide", unary(st.floats(-20, 20)), lambda x: x.sigmoid(), np_sigmoid),
    Case("relu", unary(RELU_SAFE), lambda x: x.relu(), lambda a: np.maximum(a, 0)),
]
CASES += [
    Case(f"matmul {layout}", matmul_args(layout), lambda x, y: x @ y) for layout in MATMUL_LAYOUTS
]
CASES += [
    Case("matmul array@tensor", matmul_args("batch@2d", "array"), lambda x, y: x @ y),
    Case("matmul tensor@array", matmul_args("2d@batch", right="array"), lambda x, y: x @ y),
    Case("matmul 1d-array@tensor", matmul_args("1d@2d", "array"), lambda x, y: x @ y),
]
CASES += [
    Case(
        "sum",
        reduction(),
        lambda x, axis, keepdims: x.sum(axis=axis, keepdims=keepdims),
        lambda a, axis, keepdims: np.sum(a, axis=axis, keepdims=keepdims),
    ),
    Case("sum()", unary(), lambda x: x.sum(), np.sum),
    Case(
        "mean",
        reduction(),
        lambda x, axis, keepdims: x.mean(axis=axis, keepdims=keepdims),
        lambda a, axis, keepdims: np.mean(a, axis=axis, keepdims=keepdims),
    ),
    Case("mean()", unary(), lambda x: x.mean(), np.mean),
    Case(
        "max",
        reduction(ties_free=True),
        lambda x, axis, keepdims: x.max(axis=axis, keepdims=keepdims),
        lambda a, axis, keepdims: np.max(a, axis=axis, keepdims=keepdims),
    ),
    Case("max()", st.tuples(distinct()), lambda x: x.max(), np.max),
    Case(
        "reshape(shape)",
        reshape_args(),
        lambda x, s: x.reshape(s),
        lambda a, s: np.reshape(a, s),
    ),
    Case(
        "reshape(*shape)",
        reshape_args(),
        lambda x, s: x.reshape(*s),
        lambda a, s: np.reshape(a, s),
    ),
    Case("transpose()", unary(), lambda x: x.transpose(), np.transpose),
    Case(
        "transpose(axes)",
        transpose_args(),
        lambda x, axes: x.transpose(axes),
        lambda a, axes: np.transpose(a, axes),
    ),
    Case(
        "transpose(*axes)",
        transpose_args(),
        lambda x, axes: x.transpose(*axes),
        lambda a, axes: np.transpose(a, axes),
    ),
    Case(
        "transpose(axes) 3-D cyclic",  # a permutation that is not its own inverse
        st.tuples(
            tensors(shape=shapes(min_dims=3, max_dims=3)), st.sampled_from([(1, 2, 0), (2, 0, 1)])
        ),
        lambda x, axes: x.transpose(axes),
        lambda a, axes: np.transpose(a, axes),
    ),
    Case(".T", unary(), lambda x: x.T, lambda a: a.T),
]
INDEX_KINDS = [
    "int",
    "slice",
    "tuple",
    "none",
    "array",
    "array-2d",
    "list",
    "int-tensor",
    "row-array",
    "pair",
]
CASES += [Case(f"getitem {kind}", index_args(kind), lambda x, i: x[i]) for kind in INDEX_KINDS]
CASES += [
    Case(
        "softmax(axis)",
        with_axis(),
        lambda x, axis: x.softmax(axis=axis),
        np_softmax,
    ),
    Case("softmax()", unary(min_dims=1), lambda x: x.softmax(), np_softmax),
    Case(
        "log_softmax(axis)",
        with_axis(),
        lambda x, axis: x.log_softmax(axis=axis),
        np_log_softmax,
    ),
    Case("log_softmax()", unary(min_dims=1), lambda x: x.log_softmax(), np_log_softmax),
    Case(
        "concat",
        join_args(new_axis=False),
        lambda axis, *xs: concat(xs, axis=axis),
        lambda axis, *xs: np.concatenate(xs, axis=axis),
    ),
    Case(
        "concat with an array",
        join_args(new_axis=False, with_array=True),
        lambda axis, *xs: concat(list(xs), axis=axis),
        lambda axis, *xs: np.concatenate(xs, axis=axis),
    ),
    Case(
        "stack",
        join_args(new_axis=True),
        lambda axis, *xs: stack(xs, axis=axis),
        lambda axis, *xs: np.stack(xs, axis=axis),
    ),
    Case(
        "stack with an array",
        join_args(new_axis=True, with_array=True),
        lambda axis, *xs: stack(list(xs), axis=axis),
        lambda axis, *xs: np.stack(xs, axis=axis),
    ),
    Case("where", where_args(), where, np.where),
    Case("where tensor-scalar", where_args(b="scalar"), where, np.where),
    Case("where array-tensor", where_args(a="array"), where, np.where),
    Case("where Tensor cond", where_args(tensor_cond=True), where, np.where),
]


# ---------------------------------------------------------------- ops for cell authors
CLIP_BOUNDS = [(-1.0, 1.0), (None, 0.5), (-0.5, None), (0.25, 2.0)]
KINK_FREE = st.floats(-3, 3, width=32).filter(
    lambda v: all(abs(v - b) > 0.05 for pair in CLIP_BOUNDS for b in pair if b is not None)
)


@st.composite
def distinct_pair(draw: st.DrawFn, left: str = "tensor", right: str = "tensor"):
    """Two broadcastable operands with no ties (so minimum/maximum are smooth there)."""
    shape = draw(shapes())
    other = draw(broadcastable_shapes(shape, max_dims=3))
    if draw(st.booleans()):
        shape, other = other, shape
    nx, ny = int(np.prod(shape)), int(np.prod(other))
    grid = draw(distinct(st.just((nx + ny,)))).data  # one grid: no value of x equals one of y
    x, y = grid[:nx].reshape(shape), grid[nx:].reshape(other)
    as_kind = {
        "tensor": lambda a: Tensor(a, requires_grad=True),
        "array": lambda a: a,
        "scalar": lambda a: float(a.flat[0]),
    }
    return as_kind[left](x), as_kind[right](y)


@st.composite
def var_args(draw: st.DrawFn) -> tuple[Tensor, Any, bool, int]:
    x, axis, keepdims = draw(reduction())
    count = x.size if axis is None else int(np.prod([x.shape[a] for a in np.atleast_1d(axis)]))
    ddof = draw(st.sampled_from([0, 1] if count > 1 else [0]))
    return x, axis, keepdims, ddof


@st.composite
def chunk_args(draw: st.DrawFn) -> tuple[Tensor, int, int, int]:
    x, axis = draw(with_axis())
    n = draw(st.integers(1, x.shape[axis]))
    parts = -(-x.shape[axis] // -(-x.shape[axis] // n))
    return x, n, axis, draw(st.integers(0, parts - 1))


def np_chunk(a: np.ndarray, n: int, axis: int, k: int) -> np.ndarray:
    step = -(-a.shape[axis] // n)
    return np.split(a, range(step, a.shape[axis], step), axis=axis)[k]


def np_logsumexp(a: np.ndarray, axis: int, keepdims: bool) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    out = np.log(np.exp(a - top).sum(axis=axis, keepdims=True)) + top
    return out if keepdims else np.squeeze(out, axis)


CASES += [
    Case("sqrt", unary(POSITIVE), lambda x: x.sqrt(), np.sqrt),
    Case("abs", unary(AWAY_FROM_0), lambda x: x.abs(), np.abs),
    Case(
        "clip",
        st.tuples(tensors(shape=shapes(), elements=KINK_FREE), st.sampled_from(CLIP_BOUNDS)),
        lambda x, b: x.clip(*b),
        lambda a, b: np.clip(a, *b),
    ),
    Case("softplus", unary(), lambda x: x.softplus(), lambda a: np.log1p(np.exp(a))),
    Case(
        "min",
        reduction(ties_free=True),
        lambda x, axis, keepdims: x.min(axis=axis, keepdims=keepdims),
        lambda a, axis, keepdims: np.min(a, axis=axis, keepdims=keepdims),
    ),
    Case(
        "var",
        var_args(),
        lambda x, axis, keepdims, ddof: x.var(axis=axis, keepdims=keepdims, ddof=ddof),
        lambda a, axis, keepdims, ddof: np.var(a, axis=axis, keepdims=keepdims, ddof=ddof),
    ),
    Case(
        "std",
        st.tuples(distinct(shapes(min_dims=1, min_side=2)), st.just(-1), st.booleans()),
        lambda x, axis, keepdims: x.std(axis=axis, keepdims=keepdims),
        lambda a, axis, keepdims: np.std(a, axis=axis, keepdims=keepdims),
    ),
    Case(
        "logsumexp",
        st.tuples(with_axis(), st.booleans()).map(lambda p: (*p[0], p[1])),
        lambda x, axis, keepdims: x.logsumexp(axis=axis, keepdims=keepdims),
        np_logsumexp,
    ),
    Case("chunk", chunk_args(), lambda x, n, axis, k: x.chunk(n, axis=axis)[k], np_chunk),
]
CASES += [
    Case(f"{name} {left}-{right}", distinct_pair(left, right), fn, ref)
    for name, fn, ref in [
        ("minimum", minimum, np.minimum),
        ("maximum", maximum, np.maximum),
    ]
    for left, right in [("tensor", "tensor"), ("tensor", "scalar"), ("array", "tensor")]
]


# ---------------------------------------------------------------- the two properties
def _arrays(args: tuple[Any, ...]) -> list[Any]:
    """The arguments as NumPy sees them: each Tensor replaced by a copy of its array."""
    return [np.array(a.data) if isinstance(a, Tensor) else a for a in args]


def _differentiable(case: Case, args: tuple[Any, ...]) -> tuple[Callable[..., Tensor], list]:
    """`case.op` as a function of the Tensors that require grad, the rest held constant."""
    slots = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]

    def fn(*inputs: Tensor) -> Tensor:
        full = list(args)
        for i, t in zip(slots, inputs, strict=True):
            full[i] = t
        return case.op(*full)

    return fn, [args[i] for i in slots]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@given(data=st.data())
def test_forward_equals_numpy(case: Case, data: st.DataObject) -> None:
    args = data.draw(case.args, label="args")
    before = _arrays(args)
    out = case.op(*args)
    expected = np.asarray((case.ref or case.op)(*_arrays(args)))
    assert isinstance(out, Tensor)
    assert out.shape == expected.shape
    assert out.dtype == expected.dtype == np.float64
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-12)
    for a, b in zip(_arrays(args), before, strict=True):  # inputs are never written
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@given(data=st.data())
def test_gradient_equals_finite_differences(case: Case, data: st.DataObject) -> None:
    args = data.draw(case.args, label="args")
    fn, inputs = _differentiable(case, args)
    assert inputs, f"case {case.name} drew no differentiable input"
    assert_grads_close(fn, *inputs)
    # the gradient the engine leaves on each leaf has the leaf's shape and dtype
    out = fn(*inputs)
    out.backward(np.ones(out.shape))
    for x in inputs:
        assert x.grad is not None
        assert x.grad.shape == x.shape
        assert x.grad.dtype == x.dtype


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@given(data=st.data())
def test_second_derivative_equals_finite_differences_of_the_first(
    case: Case, data: st.DataObject
) -> None:
    args = data.draw(case.args, label="args")
    fn, inputs = _differentiable(case, args)
    assert_second_grads_close(fn, *inputs)


def test_table_covers_every_public_op() -> None:
    """A guard against the table silently losing an op."""
    names = " ".join(c.name for c in CASES)
    for op in [
        "add", "sub", "mul", "div", "neg", "pow", "matmul", "sum", "mean", "max", "exp", "log",
        "tanh", "sigmoid", "relu", "reshape", "transpose", ".T", "getitem", "softmax",
        "log_softmax", "concat", "stack", "where", "sqrt", "abs", "clip", "min", "var", "std",
        "logsumexp", "softplus", "chunk", "minimum", "maximum",
    ]:  # fmt: skip
        assert op in names, op
    for side in ["tensor-scalar", "scalar-tensor", "tensor-array", "array-tensor"]:
        assert sum(side in c.name for c in CASES) >= 4, side
