"""A recurrent cell's time step compiled from its own graph: one graph node per step.

`compile_steps(cell, x, state)` traces `cell(x<t>, state)` (the graph the cell builds between
x<t>, the state's parts, its parameters and constants), plans it, and returns
`step(t, state)` that runs the plan as one `CompiledStep` node per time step. BPTT is still
the engine's reverse pass, over those nodes.

The plan, each rewrite exact:

- every primitive that depends only on parameters and constants (`W.T`, a stacked or sliced
  weight) runs once per sequence, as ordinary graph ops, and enters the step as an input;
- products that share their left operand, `h @ W_u.T`, `h @ W_f.T`, … (the gates of a
  cell), become one product with the right operands joined, `h @ [W_u.T | W_f.T | …]`, cut
  back into the gates' columns (one GEMM per step instead of one per gate);
- a product whose right operand is such a per-sequence input leaves its weight gradient
  deferred (`DeferredMatmulGrad`): the engine sums all steps' pairs in one GEMM with
  K = T·B rows instead of T GEMMs with K = B;
- the rest runs inside the step node, primitive by primitive, each with its own forward and
  derivative from `autograd/ops.py` (no derivative is written here), without building
  Tensors or walking the graph per primitive.

Guard, never guess. The cell is traced on two steps; the step runs interpreted (exactly as
with `compile=False`) when the two traces differ (a branch on values), a constant differs
between them (random numbers drawn per step, a mask computed from values), the returned
state does not have the given structure, anomaly detection is on, or the compiled step
disagrees with the interpreted one at any step of the first sequence it sees (checked step
by step, values). What no check can see is a branch on values that none of those steps
takes: a cell whose equations change with its data should say `compile=False`.
`explain(cell, x)` prints the plan
or the reason. A cell's parameters are found as the trainable leaves its step reaches; the
plan is remade when they are replaced, change dtype, or the batch size changes.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import random as _random
from ..autograd import Function, Tensor, anomaly, enable_grad, kernels, no_grad, unstack
from ..autograd.backends import ARRAYS
from ..autograd.functional import vjp_of
from ..autograd.ops import Add, Concat, GetItem, MatMul, Split
from ..autograd.tensor import DeferredMatmulGrad, _sequence, node_grads, unbroadcast
from .codegen import Member, Region, elementwise, region_kernels

__all__ = ["CompiledStep", "Plan", "compile_steps", "explain", "use_compiled_steps"]

Ref = tuple  # ("x",) x<t>; ("s", i) state part i; ("p", j) parameter; ("c", k) constant;
#              ("n", i, o) output o of node i


@dataclass
class Node:
    """One recorded primitive: its Function class, keyword arguments and input references."""

    cls: type
    kwargs: dict[str, Any]
    inputs: list[Any]  # a Ref for a Tensor input, else the plain value itself
    n_outputs: int
    tuple_output: bool
    shapes: list[tuple[int, ...]]
    per_sequence: bool = False  # depends on parameters and constants only
    input_side: bool = False  # runs before the loop over all T·B rows (x<t>'s side)
    defer: bool = False  # a product whose weight gradient is deferred to one GEMM
    produces: list[Any] | None = None  # the refs its outputs stand for (a fused region's)

    def refs(self, index: int) -> list[Any]:
        """The references other nodes use for this node's outputs."""
        if self.produces is not None:
            return self.produces
        return [("n", index, o) for o in range(self.n_outputs)]

    def describe(self) -> str:
        args = ", ".join(_ref_text(r) for r in self.inputs if isinstance(r, tuple))
        shape = self.shapes[0] if self.n_outputs == 1 else self.shapes
        return f"{self.cls.__name__}({args}) -> {shape}"


def _ref_text(ref: Ref) -> str:
    kind = ref[0]
    if kind == "x":
        return "x<t>"
    if kind == "s":
        return f"s{ref[1]}<t-1>"
    if kind == "n":
        return f"%{ref[1]}" + (f".{ref[2]}" if ref[2] else "")
    return f"{kind}{ref[1]}"


@dataclass
class Plan:
    """What a compiled step runs: per-sequence nodes, then per-step nodes, from a trace."""

    nodes: list[Node]
    outputs: list[Ref]  # the new state's parts
    params: list[Tensor]  # the trainable leaves the step reaches, by identity
    consts: list[Any]
    single: bool  # the state is one Tensor (else a tuple)
    n_state: int
    order: list[int] = field(default_factory=list)  # run order of the nodes
    step_order: list[int] = field(default_factory=list)  # the per-step ones, in order
    step_inputs: list[Ref] = field(default_factory=list)  # what enters each step node
    notes: list[str] = field(default_factory=list)  # rewrites, for `explain`
    needs_cache: dict[Any, Any] = field(default_factory=dict)
    traced_outputs: list[np.ndarray] = field(default_factory=list)
    input_shapes: dict[Any, tuple[int, ...]] = field(default_factory=dict)  # x<t>, s<t-1>
    graph_order: list[int] = field(default_factory=list)  # per-step, before fusing regions
    dtype: Any = np.float32  # of the new state: what generated kernels compute in
    program: Any = None  # the per-step nodes ready to run (made on first use)
    hoisted: list[Any] = field(default_factory=list)  # input-side values each step reads

    def describe(self) -> str:
        """The plan as `explain` prints it."""
        once = [i for i in self.order if self.nodes[i].per_sequence]
        early = [i for i in self.order if self.nodes[i].input_side]
        deferred = "   [weight gradient deferred: one GEMM over T·B rows]"
        lines = [
            f"compiled: {len(self.step_order)} primitives in one graph node per step, "
            f"{len(once)} once per sequence, {len(early)} before the loop over T·B rows",
            "once per sequence:",
            *(f"  %{i} = {self.nodes[i].describe()}" for i in once),
            "before the loop, over all T·B rows of x:",
            *(f"  %{i} = {self.nodes[i].describe()}" for i in early),
            "each step, inputs " + ", ".join(_ref_text(r) for r in self.step_inputs) + ":",
            *(
                f"  %{i} = {self.nodes[i].describe()}" + (deferred if self.nodes[i].defer else "")
                for i in self.step_order
            ),
            "  new state: " + ", ".join(_ref_text(r) for r in self.outputs),
            *self.notes,
        ]
        return "\n".join(lines)


class Fallback(Exception):
    """The step cannot be compiled exactly; the message says why."""


# ================================================================ trace


def trace(
    cell: Any, x_t: np.ndarray, state_parts: list[np.ndarray], single: bool, held: dict[int, Any]
) -> Plan:
    """Run `cell` once on fresh leaves and record the graph from them to the new state;
    `held` are the cell's own Tensors (by id), read per call even when frozen."""
    start = next(_sequence)  # nodes older than this were built before the step: inputs
    x = Tensor(x_t, requires_grad=True)
    s = [Tensor(p, requires_grad=True) for p in state_parts]
    with enable_grad():
        out = cell(x, s[0] if single else tuple(s))
    out_parts = [out] if single else (list(out) if isinstance(out, tuple | list) else [])
    if len(out_parts) != len(s) or not all(isinstance(p, Tensor) for p in out_parts):
        raise Fallback("the returned state does not have the structure of the given one")
    refs: dict[int, Ref] = {id(x): ("x",), **{id(p): ("s", i) for i, p in enumerate(s)}}
    params: list[Tensor] = []
    consts: list[Any] = []
    order: list[Function] = []
    seen: set[int] = set()
    stack = [p._ctx for p in out_parts if p._ctx is not None and p._ctx.seq > start]
    while stack:  # every node of the step (each newer than `start`)
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        order.append(fn)
        for p in fn.parents:
            if isinstance(p, Tensor) and p._ctx is not None and p._ctx.seq > start:
                stack.append(p._ctx)
    order.sort(key=lambda fn: fn.seq)
    index = {id(fn): i for i, fn in enumerate(order)}

    def ref_of(t: Tensor) -> Ref:
        if id(t) in refs:
            return refs[id(t)]
        if t._ctx is not None and id(t._ctx) in index:
            return ("n", index[id(t._ctx)], t._index)
        if t.requires_grad or id(t) in held:  # a parameter (frozen or not): read per call
            params.append(t)
            refs[id(t)] = ("p", len(params) - 1)
        else:
            consts.append(t.data)
            refs[id(t)] = ("c", len(consts) - 1)
        return refs[id(t)]

    def constant(value: np.ndarray) -> Ref:
        consts.append(value)
        return ("c", len(consts) - 1)

    nodes = []
    for fn in order:
        if any(isinstance(p, tuple | list) for p in fn.parents):
            raise Fallback(f"{type(fn).__name__} takes a tuple or list as a positional input")
        inputs = [
            ref_of(p)
            if isinstance(p, Tensor)
            else (constant(a) if isinstance(a, np.ndarray) else p)
            for p, a in zip(fn.parents, fn.arrays, strict=True)
        ]
        outs = fn.out if fn.tuple_output else (fn.out,)
        shapes = [tuple(np.shape(o)) for o in outs]
        nodes.append(Node(type(fn), dict(fn.kwargs), inputs, len(outs), fn.tuple_output, shapes))
    outputs = [ref_of(p) for p in out_parts]
    plan = Plan(nodes, outputs, params, consts, single, len(s), list(range(len(nodes))))
    plan.traced_outputs = [p.data for p in out_parts]
    plan.input_shapes = {("x",): x.shape, **{("s", i): p.shape for i, p in enumerate(s)}}
    plan.dtype = np.result_type(*(p.dtype for p in out_parts))
    return plan


def _same(a: Any, b: Any) -> bool:
    """Structural equality of traced values: arrays by value, containers element-wise."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and bool(np.array_equal(a, b))
        )
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _compare(first: Plan, second: Plan) -> None:
    """Raise `Fallback` unless two traces of the step are the same program."""
    if len(first.nodes) != len(second.nodes) or first.outputs != second.outputs:
        raise Fallback("the step builds a different graph at steps 1 and 2 (a branch on values?)")
    for i, (a, b) in enumerate(zip(first.nodes, second.nodes, strict=True)):
        if a.cls is not b.cls or a.shapes != b.shapes or not _same(a.inputs, b.inputs):
            raise Fallback(
                f"the step builds a different graph at steps 1 and 2 from primitive %{i} "
                f"({a.cls.__name__} / {b.cls.__name__}): a branch on values?"
            )
        if not _same(a.kwargs, b.kwargs):
            raise Fallback(f"{a.cls.__name__} (%{i}) has different arguments at steps 1 and 2")
    if [id(p) for p in first.params] != [id(p) for p in second.params]:
        raise Fallback("the step uses different parameters at steps 1 and 2")
    for k, (a, b) in enumerate(zip(first.consts, second.consts, strict=True)):
        if not _same(np.asarray(a), np.asarray(b)):
            raise Fallback(
                f"constant c{k} differs between steps 1 and 2 (random numbers drawn per step, "
                "or a value computed from the data outside the graph)"
            )


# ================================================================ plan


def _is_per_sequence(plan: Plan, ref: Any) -> bool:
    return isinstance(ref, tuple) and (
        ref[0] in ("p", "c") or (ref[0] == "n" and plan.nodes[ref[1]].per_sequence)
    )


def _shape(plan: Plan, ref: Ref) -> tuple[int, ...]:
    if ref[0] in ("x", "s", "xw"):
        return tuple(plan.input_shapes[ref])
    if ref[0] == "p":
        return tuple(plan.params[ref[1]].shape)
    if ref[0] == "c":
        return tuple(np.shape(plan.consts[ref[1]]))
    return plan.nodes[ref[1]].shapes[ref[2]]


def _stack_products(plan: Plan) -> None:
    """h @ W₁, h @ W₂, … (one h, per-sequence 2-D Wᵢ) → h @ [W₁ | W₂ | …], cut into columns."""
    groups: dict[Any, list[int]] = {}
    for i in plan.order:
        node = plan.nodes[i]
        if node.cls is MatMul and not node.per_sequence and len(node.shapes[0]) == 2:
            left, right = node.inputs
            if isinstance(right, tuple) and _is_per_sequence(plan, right):
                if len(_shape(plan, right)) == 2 and isinstance(left, tuple):
                    groups.setdefault(left, []).append(i)
    replace: dict[Ref, Ref] = {}
    inserted: dict[int, list[int]] = {}
    dropped: set[int] = set()
    for left, members in groups.items():
        if len(members) < 2:
            continue
        widths = [plan.nodes[i].shapes[0][1] for i in members]
        rows = plan.nodes[members[0]].shapes[0][0]
        rights = [plan.nodes[i].inputs[1] for i in members]
        base = len(plan.nodes)
        plan.nodes += [
            Node(Concat, {"axis": 1}, rights, 1, False,
                 [(_shape(plan, rights[0])[0], sum(widths))], per_sequence=True),
            Node(MatMul, {}, [left, ("n", base, 0)], 1, False, [(rows, sum(widths))]),
            Node(Split, {"offsets": tuple(int(o) for o in np.cumsum(widths)[:-1]), "axis": -1},
                 [("n", base + 1, 0)], len(members), True,
                 [plan.nodes[i].shapes[0] for i in members]),
        ]  # fmt: skip
        replace.update({("n", i, 0): ("n", base + 2, k) for k, i in enumerate(members)})
        inserted[members[0]] = [base, base + 1, base + 2]
        dropped.update(members)
        plan.notes.append(
            f"stacked: {len(members)} products of {_ref_text(left)} "
            f"({', '.join(f'%{i}' for i in members)}) as one GEMM %{base + 1}"
        )
    if not dropped:
        return
    for node in plan.nodes:
        node.inputs = [replace.get(r, r) if isinstance(r, tuple) else r for r in node.inputs]
    plan.outputs = [replace.get(r, r) for r in plan.outputs]
    order: list[int] = []
    joins = [nodes[0] for nodes in inserted.values()]  # after every other per-sequence node
    for i in plan.order:
        order += inserted.get(i, [])[1:]
        if i not in dropped:
            order.append(i)
    once = [i for i in order if plan.nodes[i].per_sequence]
    plan.order = once + joins + [i for i in order if not plan.nodes[i].per_sequence]


def _split_joined_products(plan: Plan) -> None:
    """[h₁, x<t>] @ W → h₁ @ W[rows₁] + x<t> @ W[rows₂]: the product of x<t> no longer waits
    for the state, so it can be hoisted out of the time loop."""
    replace: dict[Ref, Ref] = {}
    for i in list(plan.order):
        node = plan.nodes[i]
        if node.cls is not MatMul or node.per_sequence or len(node.shapes[0]) != 2:
            continue
        left, right = node.inputs
        if not (isinstance(left, tuple) and left[0] == "n" and _is_per_sequence(plan, right)):
            continue
        joined = plan.nodes[left[1]]
        parts = joined.inputs
        if joined.cls is not Concat or joined.kwargs.get("axis") not in (-1, 1):
            continue
        if ("x",) not in parts or not all(isinstance(r, tuple) for r in parts):
            continue
        if len(_shape(plan, right)) != 2 or any(len(_shape(plan, r)) != 2 for r in parts):
            continue
        rows, cols = node.shapes[0]
        start, total = 0, None
        for r in parts:
            width = _shape(plan, r)[1]
            block = Node(GetItem, {"index": slice(start, start + width)}, [right], 1, False,
                         [(width, cols)], per_sequence=True)  # fmt: skip
            plan.nodes.append(block)
            plan.order.insert(0, len(plan.nodes) - 1)  # per-sequence: before every step node
            product = Node(MatMul, {}, [r, ("n", len(plan.nodes) - 1, 0)], 1, False, [(rows, cols)])
            plan.nodes.append(product)
            at = plan.order.index(i)
            plan.order.insert(at, len(plan.nodes) - 1)
            term = ("n", len(plan.nodes) - 1, 0)
            if total is not None:
                plan.nodes.append(Node(Add, {}, [total, term], 1, False, [(rows, cols)]))
                plan.order.insert(at + 1, len(plan.nodes) - 1)
                term = ("n", len(plan.nodes) - 1, 0)
            total, start = term, start + width
        replace["n", i, 0] = total
        plan.order.remove(i)
        plan.notes.append(f"split: %{i}, a product of the joined {_ref_text(left)}, by blocks")
    if replace:
        for node in plan.nodes:
            node.inputs = [replace.get(r, r) if isinstance(r, tuple) else r for r in node.inputs]
        plan.outputs = [replace.get(r, r) for r in plan.outputs]


def _replace(plan: Plan, replace: dict[Ref, Ref]) -> None:
    """Point every use of a key of `replace` (node inputs, the new state) at its value."""
    if replace:
        for node in plan.nodes:
            node.inputs = [replace.get(r, r) if isinstance(r, tuple) else r for r in node.inputs]
        plan.outputs = [replace.get(r, r) for r in plan.outputs]


def _use_counts(plan: Plan) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for i in plan.order:
        for r in plan.nodes[i].inputs:
            if isinstance(r, tuple):
                counts[r] = counts.get(r, 0) + 1
    for r in plan.outputs:
        counts[r] = counts.get(r, 0) + 2  # handed out: never rewritten away
    return counts


def _input_side(plan: Plan) -> set[Any]:
    """The references that depend on x<t> and per-sequence values only (not on the state),
    through row-wise primitives: they can run once for all T·B rows before the loop."""
    side: set[Any] = {("x",)}
    rows = plan.input_shapes["x",][0]
    for i in plan.order:
        node = plan.nodes[i]
        tensors = [r for r in node.inputs if isinstance(r, tuple)]
        if node.per_sequence or not any(r in side for r in tensors):
            continue
        if node.cls is Split and node.kwargs.get("axis") in (-1, 1) and len(node.shapes[0]) == 2:
            side.update(("n", i, o) for o in range(node.n_outputs))  # column blocks: row-wise
            continue
        if node.n_outputs != 1 or len(node.shapes[0]) != 2:
            continue
        if node.cls is MatMul:
            left, right = node.inputs
            ok = left in side and _is_per_sequence(plan, right) and len(_shape(plan, right)) == 2
        elif getattr(node.cls, "elementwise", False):
            ok = all(
                (r in side and _shape(plan, r) == node.shapes[0])
                or (
                    _is_per_sequence(plan, r)
                    and (len(_shape(plan, r)) < 2 or _shape(plan, r)[0] == 1)
                )
                for r in tensors
            )
        else:
            ok = False
        if ok and node.shapes[0][0] == rows:
            side.add(("n", i, 0))
    return side


def _reassociate_sums(plan: Plan) -> None:
    """(h + x W) + b → h + (x W + b): in a sum of state and input-side terms, the input-side
    terms are added first, so their sum runs before the loop. Rounding may differ by an ulp
    (floating-point addition is not associative); the derivative is the same."""
    counts = _use_counts(plan)
    side = _input_side(plan)

    def terms(r: Any, top: bool) -> list[Any]:
        node = plan.nodes[r[1]] if isinstance(r, tuple) and r[0] == "n" else None
        inner = node is not None and node.cls is Add and not node.per_sequence
        if inner and (top or (counts.get(r) == 1 and r not in side)):
            return [t for a in node.inputs for t in terms(a, False)]
        return [r]

    def hoistable(r: Any) -> bool:
        return isinstance(r, tuple) and (r in side or _is_per_sequence(plan, r))

    for i in list(plan.order):
        node = plan.nodes[i]
        if node.cls is not Add or node.per_sequence or ("n", i, 0) in side:
            continue
        flat = terms(("n", i, 0), True)
        early = [r for r in flat if r in side]  # x<t>'s terms first: each partial sum is
        early += [r for r in flat if r not in side and hoistable(r)]  # on the input side
        late = [r for r in flat if not hoistable(r)]
        if len(early) < 2 or not late or not any(r in side for r in early):
            continue

        def chain(refs: list[Any], at: int) -> tuple[Any, int]:
            total = refs[0]
            for r in refs[1:]:
                shape = np.broadcast_shapes(_shape(plan, total), _shape(plan, r))
                plan.nodes.append(Node(Add, {}, [total, r], 1, False, [shape]))
                plan.order.insert(at, len(plan.nodes) - 1)
                total, at = ("n", len(plan.nodes) - 1, 0), at + 1
            return total, at

        at = plan.order.index(i)
        early_sum, at = chain(early, at)
        late_sum, at = chain(late, at)
        node.inputs = [late_sum, early_sum]
        side.add(early_sum)
        plan.notes.append(
            f"reassociated: %{i} adds its {len(early)} input-side terms first "
            f"({', '.join(_ref_text(r) for r in early)})"
        )


def _stack_biases(plan: Plan) -> None:
    """cut(P)ₖ + bₖ for every block k of P → cut(P + [b₀ | b₁ | …])ₖ: one addition of the
    joined biases (exact: the same sums, element by element)."""
    counts = _use_counts(plan)
    users: dict[Any, list[int]] = {}
    for i in plan.order:
        for r in plan.nodes[i].inputs:
            if isinstance(r, tuple):
                users.setdefault(r, []).append(i)
    for s in list(plan.order):
        split = plan.nodes[s]
        if split.cls is not Split or split.per_sequence or split.kwargs.get("axis") not in (-1, 1):
            continue
        if len(_shape(plan, split.inputs[0])) != 2:
            continue
        adds, biases = [], []
        for o in range(split.n_outputs):
            ref = ("n", s, o)
            if counts.get(ref) != 1 or len(users.get(ref, [])) != 1:
                break
            add = plan.nodes[users[ref][0]]
            other = [r for r in add.inputs if r != ref]
            if add.cls is not Add or len(other) != 1 or not _is_per_sequence(plan, other[0]):
                break
            bias_shape = _shape(plan, other[0])
            if add.shapes[0] != split.shapes[o] or bias_shape != (split.shapes[o][1],):
                break
            adds.append(users[ref][0])
            biases.append(other[0])
        else:
            whole = _shape(plan, split.inputs[0])
            base = len(plan.nodes)
            plan.nodes += [
                Node(Concat, {"axis": 0}, biases, 1, False, [(whole[1],)], per_sequence=True),
                Node(Add, {}, [split.inputs[0], ("n", base, 0)], 1, False, [whole]),
                Node(Split, dict(split.kwargs), [("n", base + 1, 0)], split.n_outputs, True,
                     list(split.shapes)),
            ]  # fmt: skip
            at = plan.order.index(s)
            plan.order[at : at + 1] = [base, base + 1, base + 2]
            _replace(plan, {("n", a, 0): ("n", base + 2, k) for k, a in enumerate(adds)})
            plan.notes.append(
                f"biases stacked: {len(adds)} additions to the blocks of %{s} "
                f"({', '.join(f'%{a}' for a in adds)}) as one %{base + 1}"
            )
            counts = _use_counts(plan)


def _hoist_input_side(plan: Plan) -> None:
    """Every input-side primitive (x<t>'s products with per-sequence weights, and element-wise
    work on them and per-sequence values) runs once over all T·B rows before the loop; each
    step gets its rows of the values the step uses as inputs ("xw", k)."""
    side = _input_side(plan)
    side.discard(("x",))
    users: dict[int, set[int]] = {}
    for i in plan.order:
        for r in plan.nodes[i].inputs:
            if isinstance(r, tuple) and r[0] == "n":
                users.setdefault(r[1], set()).add(i)
    nodes: set[int] = set()
    for i in plan.order:
        node = plan.nodes[i]
        if ("n", i, 0) not in side:
            continue
        if any(r in side and r[0] == "n" and r[1] not in nodes for r in node.inputs):
            continue  # it reads a cut that stays in the step
        # a cut into column blocks stays in the step, where a kernel reads them in place,
        # unless only input-side work reads it
        if node.cls is Split and not all(
            ("n", u, 0) in side and plan.nodes[u].cls is not Split for u in users.get(i, ())
        ):
            continue
        nodes.add(i)
    hoisted = {r for r in side if r[1] in nodes}
    for i in nodes:
        plan.nodes[i].input_side = True
    boundary: list[Any] = []
    for i in plan.order:
        node = plan.nodes[i]
        if i not in nodes and not node.per_sequence:
            boundary += [r for r in node.inputs if r in hoisted and r not in boundary]
    boundary += [r for r in plan.outputs if r in hoisted and r not in boundary]
    replace = {}
    for k, r in enumerate(boundary):
        plan.hoisted.append(r)
        plan.input_shapes["xw", k] = _shape(plan, r)
        replace[r] = ("xw", k)
    for i in plan.order:
        if i not in nodes:
            node = plan.nodes[i]
            node.inputs = [replace.get(r, r) if isinstance(r, tuple) else r for r in node.inputs]
    plan.outputs = [replace.get(r, r) for r in plan.outputs]
    if nodes:
        plan.notes.append(
            f"hoisted: {', '.join(f'%{i}' for i in sorted(nodes))}, once over all T·B rows "
            f"before the loop; each step reads its rows of "
            f"{', '.join(f'{_ref_text(r)} as xw{k}' for k, r in enumerate(boundary))}"
        )


def _drop_dead(plan: Plan) -> None:
    """Remove nodes whose outputs nothing uses (a join the split products replaced)."""
    live: set[Any] = {r for r in plan.outputs if isinstance(r, tuple)}
    live.update(r for r in plan.hoisted)
    keep = []
    for i in reversed(plan.order):
        node = plan.nodes[i]
        if any(("n", i, o) in live for o in range(node.n_outputs)):
            keep.append(i)
            live.update(r for r in node.inputs if isinstance(r, tuple))
    plan.order = keep[::-1]


def _per_sequence_first(plan: Plan) -> None:
    """All per-sequence nodes before the steps, by index: a node is only ever added after
    its inputs (traced in order, rewrites appended), so that order is topological."""
    once = sorted(i for i in plan.order if plan.nodes[i].per_sequence)
    plan.order = once + [i for i in plan.order if not plan.nodes[i].per_sequence]


def _tidy(plan: Plan) -> None:
    _per_sequence_first(plan)
    _drop_dead(plan)


def _in_step(node: Node) -> bool:
    """A node that runs inside every step node (not before the loop)."""
    return not node.per_sequence and not node.input_side


def make_plan(plan: Plan) -> Plan:
    """Mark per-sequence nodes, split joined products, hoist x<t>'s products, stack the
    rest, drop dead nodes, and choose the step's inputs and deferrals."""
    for i in plan.order:
        node = plan.nodes[i]
        node.per_sequence = all(
            not isinstance(r, tuple) or _is_per_sequence(plan, r) for r in node.inputs
        )
    _split_joined_products(plan)
    _stack_products(plan)
    _tidy(plan)  # the rewrites below count uses
    _reassociate_sums(plan)
    _tidy(plan)
    _stack_biases(plan)
    _hoist_input_side(plan)
    _tidy(plan)
    used: dict[Ref, int] = {}
    for i in plan.order:
        node = plan.nodes[i]
        if not node.per_sequence and not node.input_side:
            for r in node.inputs:
                if isinstance(r, tuple) and _is_per_sequence(plan, r) and r[0] != "c":
                    used[r] = used.get(r, 0) + 1
    for r in plan.outputs:
        if _is_per_sequence(plan, r) and r[0] != "c":
            used[r] = used.get(r, 0) + 2  # never deferred: it is handed out as well
    hoisted = [("xw", k) for k in range(len(plan.hoisted))]
    plan.step_inputs = [("x",), *(("s", i) for i in range(plan.n_state)), *hoisted, *used]
    for i in plan.order:
        node = plan.nodes[i]
        if node.cls is MatMul and _in_step(node) and len(node.shapes[0]) == 2:
            right = node.inputs[1]
            node.defer = used.get(right) == 1 and len(_shape(plan, right)) == 2
    return plan


def _fits(plan: Plan, node: Node) -> bool:
    """A node a generated kernel can hold: element-wise over a (B, N) output, its operands
    numbers or arrays that broadcast to it."""
    if not elementwise(node.cls) or node.n_outputs != 1 or len(node.shapes[0]) != 2:
        return False
    for r in node.inputs:
        if isinstance(r, tuple):
            shape = _shape(plan, r)
            if len(shape) > 2 or np.broadcast_shapes(shape, node.shapes[0]) != node.shapes[0]:
                return False
        elif not isinstance(r, int | float | bool | np.number | np.bool_) or r is None:
            return False
    return True


def fuse_regions(plan: Plan) -> None:
    """Each run of two or more element-wise primitives of one (B, N) shape becomes one
    `Region` node: a generated forward kernel and a generated backward kernel."""
    runs: list[list[int]] = []
    current: list[int] = []
    for i in plan.step_order:
        node = plan.nodes[i]
        fits = _fits(plan, node)
        if fits and current and plan.nodes[current[-1]].shapes[0] == node.shapes[0]:
            current.append(i)
            continue
        if len(current) > 1:
            runs.append(current)
        current = [i] if fits else []
    if len(current) > 1:
        runs.append(current)
    for run in runs:
        _fuse(plan, run)


def _uses(plan: Plan, outside: set[int]) -> set[Any]:
    """Every reference used by the per-step nodes outside `outside`, or as the new state."""
    return {r for i in plan.step_order if i not in outside for r in plan.nodes[i].inputs} | set(
        plan.outputs
    )


def _fuse(plan: Plan, run: list[int]) -> None:
    members_at = {("n", i, 0): m for m, i in enumerate(run)}
    inside = set(run)
    loads: list[tuple[int, int]] = []  # (input slot, column offset) of each load
    load_of: dict[Any, int] = {}
    slots: list[Any] = []
    absorbed: set[int] = set()

    def load(r: Any) -> int:
        if r not in load_of:
            base, offset = r, 0
            split = plan.nodes[r[1]] if r[0] == "n" else None
            # every block the region's shape: a (B, 1) block is read broadcast, not in place
            same_shape = split is not None and all(
                shape == plan.nodes[run[0]].shapes[0] for shape in split.shapes
            )
            if (
                split is not None
                and split.cls is Split
                and same_shape
                and _absorbable(plan, r[1], inside)
            ):
                base = split.inputs[0]
                offset = ([0, *split.kwargs["offsets"]])[r[2]]
                absorbed.add(r[1])
            if base not in slots:
                slots.append(base)
            load_of[r] = len(loads)
            loads.append((slots.index(base), offset))
        return load_of[r]

    members = []
    for i in run:
        node = plan.nodes[i]
        inputs: list[Any] = []
        for r in node.inputs:
            if isinstance(r, tuple) and r in members_at:
                inputs.append(("v", members_at[r]))
            elif isinstance(r, tuple):
                inputs.append(("in", load(r)))
            else:
                inputs.append(r)
        shapes = [_shape(plan, r) if isinstance(r, tuple) else None for r in node.inputs]
        members.append(Member(node.cls, node.kwargs, inputs, shapes))
    used_after = _uses(plan, inside | absorbed)
    exports = [m for m, i in enumerate(run) if ("n", i, 0) in used_after]
    grads = [k for k, r in enumerate(slots) if r[0] != "c"]
    shape = plan.nodes[run[0]].shapes[0]
    shapes = [_shape(plan, r) for r in slots]
    compiled = region_kernels(members, loads, shapes, exports, grads, shape, plan.dtype)
    region = Node(
        Region, {"kernels": compiled}, slots, len(exports), True, [shape] * len(exports),
        produces=[("n", run[m], 0) for m in exports],
    )  # fmt: skip
    plan.nodes.append(region)
    at = plan.step_order.index(run[0])
    gone = inside | absorbed
    plan.step_order = [
        *(i for i in plan.step_order[:at] if i not in gone), len(plan.nodes) - 1,
        *(i for i in plan.step_order[at:] if i not in gone),
    ]  # fmt: skip
    plan.notes.append(
        f"kernel %{len(plan.nodes) - 1}: {len(run)} element-wise primitives "
        f"({', '.join(f'%{i}' for i in run)}) as one generated forward and one backward kernel"
        + (
            f", reading the columns of %{', %'.join(map(str, sorted(absorbed)))} in place"
            if absorbed
            else ""
        )
    )


def _absorbable(plan: Plan, split: int, inside: set[int]) -> bool:
    """A cut of a 2-D product into column blocks, used only by this region: the region
    reads the blocks in place instead."""
    node = plan.nodes[split]
    if node.per_sequence or node.kwargs.get("axis") not in (-1, 1):
        return False
    if len(_shape(plan, node.inputs[0])) != 2:
        return False
    if not isinstance(node.inputs[0], tuple):
        return False
    return not any(("n", split, o) in _uses(plan, inside | {split}) for o in range(node.n_outputs))


# ================================================================ run


class _Contiguous(Function):
    """A C-contiguous copy (a per-sequence weight used in every step's product)."""

    def forward(self, x):
        return np.ascontiguousarray(x)

    def vjp(self, m, g, x, out):
        return (g,)


def _needs(plan: Plan, step_needs: tuple[bool, ...]) -> dict[int, tuple[bool, ...]]:
    """Which inputs of each per-step node need a gradient, given the step node's."""
    wants: dict[Any, bool] = dict(zip(plan.step_inputs, step_needs, strict=True))
    result = {}
    for i in plan.step_order:
        node = plan.nodes[i]
        needs = tuple(isinstance(r, tuple) and wants.get(r, False) for r in node.inputs)
        result[i] = needs
        for r in node.refs(i):
            wants[r] = any(needs)
    return result


_MATMUL, _REGION, _CONCAT, _OTHER = range(4)


@dataclass
class _Op:
    """One per-step node ready to run: what it is, and the registers it reads and writes."""

    kind: int  # _MATMUL (2-D, the shapes checked when traced), _REGION, _CONCAT or _OTHER
    index: int  # in the plan
    node: Node
    args: list[int]  # the register of each input (a plain value has one too)
    outs: list[int]
    shapes: list[Any]  # each input's shape, None for a plain value
    cut: list[tuple[int, int]] | None = None  # a Concat's input bounds along its axis


@dataclass
class _Program:
    """A plan's per-step nodes over a list of registers: the step's inputs first, then the
    constants and plain values, then every node's outputs."""

    initial: list[Any]  # the constants in place, the rest None
    n_inputs: int
    ops: list[_Op]
    outputs: list[int]
    copied: list[bool]  # a new-state part that is an input or a constant: handed out copied
    seeded: list[bool]  # a new-state part whose gradient enters the step (not a constant)


def _program(plan: Plan) -> _Program:
    register: dict[Any, int] = {r: k for k, r in enumerate(plan.step_inputs)}
    initial: list[Any] = [None] * len(register)

    def place(key: Any, value: Any) -> int:
        register[key] = len(initial)
        initial.append(value)
        return register[key]

    for k, c in enumerate(plan.consts):
        place(("c", k), c)
    ops = []
    for i in plan.step_order:
        node = plan.nodes[i]
        args = [
            register[r] if isinstance(r, tuple) else place(("k", i, n), r)
            for n, r in enumerate(node.inputs)
        ]
        outs = [place(r, None) for r in node.refs(i)]
        shapes = [_shape(plan, r) if isinstance(r, tuple) else None for r in node.inputs]
        kind, cut = _OTHER, None
        if node.cls is Region:
            kind = _REGION
        elif node.cls is Concat and node.n_outputs == 1:
            axis = node.kwargs.get("axis", 0)
            ends = np.cumsum([shape[axis] for shape in shapes]).tolist()
            kind, cut = _CONCAT, list(zip([0, *ends[:-1]], ends, strict=True))
        elif node.cls is MatMul and all(s is not None and len(s) == 2 for s in shapes):
            kind = _MATMUL
        ops.append(_Op(kind, i, node, args, outs, shapes, cut))
    outputs = [register[r] for r in plan.outputs]
    copied = [r[0] != "n" for r in plan.outputs]
    seeded = [r[0] != "c" for r in plan.outputs]
    plan.program = _Program(initial, len(plan.step_inputs), ops, outputs, copied, seeded)
    return plan.program


def _cut(g: np.ndarray, axis: int, bounds: list[tuple[int, int]]) -> tuple[np.ndarray, ...]:
    """g cut into the blocks a Concat joined, along `axis`."""
    axis = axis % g.ndim
    lead = (slice(None),) * axis
    return tuple(g[(*lead, slice(a, b))] for a, b in bounds)


class CompiledStep(Function):
    """One time step of a traced cell as one graph node: the plan's per-step primitives run
    on arrays (products as GEMMs, regions as their generated kernels, the rest each with its
    own forward), and backward runs their derivatives in reverse."""

    def forward(
        self,
        *arrays: np.ndarray,
        plan: Plan,
        needs: tuple[bool, ...],
        transposed: dict[Any, np.ndarray] | None = None,
    ) -> Any:
        program = plan.program or _program(plan)
        per_node = plan.needs_cache.get(needs)
        if per_node is None:
            per_node = plan.needs_cache[needs] = _needs(plan, needs)
        env = program.initial.copy()
        env[: program.n_inputs] = arrays
        saved: dict[int, Any] = {}  # a region's 2-D inputs, another node's Function
        for op in program.ops:
            kind, args, outs = op.kind, op.args, op.outs
            if kind == _MATMUL:
                env[outs[0]] = env[args[0]] @ env[args[1]]
            elif kind == _REGION:
                k = op.node.kwargs["kernels"]
                views = saved[op.index] = k.inputs_2d([env[a] for a in args])
                for r, out in zip(outs, k.run(views), strict=True):
                    env[r] = out
            elif kind == _CONCAT:
                env[outs[0]] = np.concatenate(
                    [env[a] for a in args], axis=op.node.kwargs.get("axis", 0)
                )
            else:
                node = op.node
                fn = saved[op.index] = node.cls()
                fn.needs_input_grad, fn.kwargs = per_node[op.index], node.kwargs
                values = [env[a] for a in args]
                if node.cls._formula_forward:
                    out = fn.formula(ARRAYS, *values)
                else:
                    out = fn.forward(*values, **node.kwargs)
                fn.arrays, fn.out = values, out
                for r, o in zip(outs, out if node.tuple_output else (out,), strict=True):
                    env[r] = o
        self.plan, self.env, self.saved, self.per_node = plan, env, saved, per_node
        self.transposed = transposed or {}
        outs = [
            np.array(env[r]) if copy else env[r]
            for r, copy in zip(program.outputs, program.copied, strict=True)
        ]
        return outs[0] if plan.single else tuple(outs)

    def backward(self, grads: Any) -> tuple[Any, ...]:
        plan, env, saved = self.plan, self.env, self.saved
        program = plan.program
        total: list[Any] = [None] * len(env)
        upstreams = (grads,) if plan.single else grads
        for r, g, seed in zip(program.outputs, upstreams, program.seeded, strict=True):
            if seed:
                total[r] = g if total[r] is None else total[r] + g
        for op in reversed(program.ops):
            node, args = op.node, op.args
            if node.tuple_output:
                got = [total[r] for r in op.outs]
                if all(g is None for g in got):
                    continue
                upstream: Any = tuple(
                    np.zeros_like(env[r]) if g is None else g
                    for g, r in zip(got, op.outs, strict=True)
                )
            else:
                upstream = total[op.outs[0]]
                if upstream is None:
                    continue
            needs = self.per_node[op.index]
            if op.kind == _MATMUL:
                x, w = env[args[0]], env[args[1]]
                if node.defer:  # ∂L/∂x now, ∂L/∂W = xᵀ g deferred to one GEMM over T·B rows
                    wT = self.transposed.get(node.inputs[1])
                    in_grads: Any = (
                        upstream @ (w.T if wT is None else wT) if needs[0] else None,
                        DeferredMatmulGrad(x, upstream) if needs[1] else None,
                    )
                else:
                    in_grads = (
                        upstream @ w.T if needs[0] else None,
                        x.T @ upstream if needs[1] else None,
                    )
            elif op.kind == _REGION:
                in_grads = node.kwargs["kernels"].grads(saved[op.index], upstream)
            elif op.kind == _CONCAT:  # slices of g: Concat's vjp, without np.split
                in_grads = _cut(upstream, node.kwargs.get("axis", 0), op.cut)
            else:
                in_grads = node_grads(saved[op.index], upstream)
            for a, g, need, shape in zip(args, in_grads, needs, op.shapes, strict=True):
                if g is None or not need:
                    continue
                if type(g) is not DeferredMatmulGrad and g.shape != shape:
                    g = unbroadcast(np.asarray(g), shape, node.cls.__name__)
                before = total[a]
                total[a] = g if before is None else before + g
        self.env = self.saved = None
        return tuple(total[: program.n_inputs])

    def vjp(self, m: Any, g: Any, *inputs_and_out: Any) -> tuple[Any, ...]:
        """The recorded derivative (`create_graph=True`): the plan replayed in graph ops."""
        inputs = inputs_and_out[:-1]
        plan = self.plan
        env: dict[Any, Any] = dict(zip(plan.step_inputs, inputs, strict=True))
        for i in plan.graph_order:
            node = plan.nodes[i]
            out = node.cls.apply(*(_value(plan, env, r) for r in node.inputs), **node.kwargs)
            for o, value in enumerate(out if node.tuple_output else (out,)):
                env["n", i, o] = value
        outs = [_value(plan, env, r) for r in plan.outputs]
        return vjp_of(outs, list(inputs), list((g,) if plan.single else g))


def _value(plan: Plan, env: dict[Any, Any], ref: Any) -> Any:
    if not isinstance(ref, tuple):
        return ref
    if ref[0] == "c":
        return plan.consts[ref[1]]
    return env[ref]


# ================================================================ building and caching


_enabled = os.environ.get("TINYGRAD_SEQ_COMPILE", "1") != "0"


def use_compiled_steps(flag: bool = True) -> None:
    """Let `Recurrent(compile=True)` compile cells' steps (`True`, the default); `False` (or
    `TINYGRAD_SEQ_COMPILE=0`) makes every layer interpret, for comparisons."""
    global _enabled
    _enabled = bool(flag)


_plans: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
_warned: set[tuple[str, str]] = set()


_HELD_LEAVES = (Tensor, np.ndarray, bool, int, float, str, type(None), np.number)


def _held(
    obj: Any, out: list[tuple[str, Any]], depth: int = 0, seen: set[int] | None = None
) -> None:
    """The Tensors, plain values (numbers, strings, flags such as `training`) and arrays a
    cell holds, through submodules, lists and tuples: what its step may read besides its
    inputs."""
    seen = set() if seen is None else seen
    if depth > 6 or not hasattr(obj, "__dict__") or id(obj) in seen:
        return
    seen.add(id(obj))
    for name, value in vars(obj).items():
        for item in value if isinstance(value, list | tuple) else (value,):
            if isinstance(item, _HELD_LEAVES):
                out.append((name, item))
            elif hasattr(item, "parameters") or (hasattr(item, "__dict__") and not callable(item)):
                _held(item, out, depth + 1, seen)


def _tensors_of(cell: Any) -> dict[int, Tensor]:
    found: list[tuple[str, Any]] = []
    _held(cell, found)
    return {id(v): v for _, v in found if isinstance(v, Tensor)}


def _fingerprint(value: Any) -> Any:
    """A held value as the plan's key sees it: a Tensor by identity, dtype, shape and
    requires_grad; an array by identity, shape, dtype and (when small) its bytes."""
    if isinstance(value, Tensor):
        return (id(value), value.dtype.str, value.shape, value.requires_grad)
    if isinstance(value, np.ndarray):
        small = value.size <= 65536
        return (id(value), value.shape, value.dtype.str, hash(value.tobytes()) if small else None)
    return value


def _key(cell: Any, x: Tensor, parts: list[Tensor]) -> tuple[Any, ...]:
    found: list[tuple[str, Any]] = []
    _held(cell, found)
    return (
        x.shape[0], x.shape[2], x.dtype.str,
        tuple((tuple(p.shape), p.dtype.str) for p in parts),
        tuple((name, _fingerprint(v)) for name, v in found),
    )  # fmt: skip


def build(cell: Any, x: Tensor, state: Any) -> Plan:
    """Trace `cell` on the first two steps of `x` and plan it; `Fallback` says why not."""
    if anomaly.enabled:
        raise Fallback("anomaly detection is on: every primitive is checked on its own")
    if x.dtype.kind != "f":  # a cell may cast it, or use it as indices: not one graph
        raise Fallback(f"x has dtype {x.dtype}: only floating-point inputs are compiled")
    single = isinstance(state, Tensor | np.ndarray)
    parts = [state] if single else list(state)
    if not all(isinstance(p, Tensor | np.ndarray) for p in parts):
        raise Fallback("the state is not made of Tensors or arrays")
    parts = [p if isinstance(p, Tensor) else Tensor(p) for p in parts]
    held = _tensors_of(cell)
    saved = _random._generator.bit_generator.state  # tracing and checking leave it alone
    try:
        first = trace(cell, x.data[:, 0], [p.data for p in parts], single, held)
        later = x.data[:, min(1, x.shape[1] - 1)]
        second = trace(cell, later, first.traced_outputs, single, held)
        _compare(first, second)
        for k, c in enumerate(first.consts):
            c = np.asarray(c)
            if c.dtype == bool or (c.ndim >= 1 and c.shape[0] == x.shape[0] > 1):
                raise Fallback(
                    f"constant c{k} {c.shape} {c.dtype} looks computed from the data outside "
                    "the graph (a mask, or an array with the batch's rows): it would be reused "
                    "for other data"
                )
        for p in first.params:
            if id(p) not in held:
                raise Fallback(
                    f"the step uses a Tensor {tuple(p.shape)} that requires grad but is not "
                    "held by the cell (computed before the step, or another module's)"
                )
        plan = make_plan(first)
        plan.step_order = [i for i in plan.order if _in_step(plan.nodes[i])]
        plan.graph_order = list(plan.step_order)
        if not kernels.using_reference_kernels():
            fuse_regions(plan)
        _check_first_sequence(cell, plan, x.data, [p.data for p in parts])
    finally:
        _random._generator.bit_generator.state = saved
    return plan


def _check_first_sequence(cell: Any, plan: Plan, x: np.ndarray, parts: list[np.ndarray]) -> None:
    """Before it is trusted, the compiled step must give the interpreted step's values at
    every step of the first sequence (each step from the interpreted state, so differences
    do not compound): a branch on values that the two traces did not see shows here."""
    fixed, per_step = _per_sequence_values(plan, Tensor(x))
    values = [v.data for v in fixed]
    single = plan.single
    state = parts
    for t in range(x.shape[1]):
        with no_grad():
            want = cell(Tensor(x[:, t]), Tensor(state[0]) if single else tuple(map(Tensor, state)))
        want = [p.data for p in ([want] if single else want)]
        arrays = [x[:, t], *state, *(rows[t].data for rows in per_step), *values]
        got = CompiledStep().forward(*arrays, plan=plan, needs=(False,) * len(arrays))
        got = [got] if single else list(got)
        for k, (a, b) in enumerate(zip(got, want, strict=True)):
            tol = 1e-12 if a.dtype == np.float64 else 1e-5
            scale = 1.0 + float(np.nanmax(np.abs(b), initial=0.0))
            close = np.allclose(a, b, rtol=tol, atol=tol * scale, equal_nan=True)
            if a.shape != b.shape or not close:
                raise Fallback(
                    f"the compiled step disagrees with the interpreted one at step {t + 1}, "
                    f"state part {k} (max difference {float(np.max(np.abs(a - b))):.2e}): "
                    "a branch on values?"
                )
        state = want


def _per_sequence_values(plan: Plan, x: Tensor) -> tuple[list[Tensor], list[Any]]:
    """Run the per-sequence primitives as graph ops: the step's per-sequence inputs; then the
    input-side ones once over all T·B rows (time-major, so each step's rows are contiguous),
    and of each value a step reads its T per-step row blocks."""
    env: dict[Any, Any] = {("p", j): p for j, p in enumerate(plan.params)}
    products = {n.inputs[1] for i in plan.step_order for n in [plan.nodes[i]] if n.cls is MatMul}
    B, T, n_x = x.shape
    hoisting = [i for i in plan.order if plan.nodes[i].input_side]
    if hoisting:
        env["x",] = x.transpose(1, 0, 2).reshape(T * B, n_x)
    for i in plan.order:
        node = plan.nodes[i]
        if node.per_sequence or node.input_side:
            out = node.cls.apply(*(_value(plan, env, r) for r in node.inputs), **node.kwargs)
            for o, value in enumerate(out if node.tuple_output else (out,)):
                env["n", i, o] = value
    values = []
    for r in plan.step_inputs[1 + plan.n_state + len(plan.hoisted) :]:
        value = _value(plan, env, r)
        if r in products and isinstance(value, Tensor) and not value.data.flags.c_contiguous:
            value = _Contiguous.apply(value)
        values.append(value)
    per_step = [unstack(env[r].reshape(T, B, -1), axis=0) for r in plan.hoisted]
    return values, per_step


def compile_steps(cell: Any, x: Tensor, state: Any) -> Callable[[int, Any], Any] | None:
    """`step(t, state) = cell(x<t>, state)` compiled (one node per step), or `None` when the
    step must run interpreted; the reason is warned once per cell class."""
    if not _enabled:
        return None
    parts = [state] if isinstance(state, Tensor | np.ndarray) else list(state)
    try:
        key = _key(cell, x, parts)
    except TypeError:  # a cell that cannot be weakly referenced or inspected
        return None
    cache = _plans.setdefault(cell, {})
    plan = cache.get(key)
    if plan is None:
        try:
            plan = build(cell, x, state)
        except Fallback as why:
            plan = str(why)
        cache[key] = plan
    if isinstance(plan, str):
        name = type(cell).__name__
        if (name, plan) not in _warned:
            _warned.add((name, plan))
            warnings.warn(
                f"Recurrent({name}) runs its step interpreted: {plan} "
                "(Recurrent(..., compile=False) says so without this warning)",
                RuntimeWarning,
                stacklevel=4,
            )
        return None
    values, per_step = _per_sequence_values(plan, x)
    xs = unstack(x, axis=1)
    fixed = tuple(isinstance(v, Tensor) and v.requires_grad for v in values)
    # a contiguous copy of each deferred product's Wᵀ, once per sequence: OpenBLAS runs
    # g @ Wᵀ on the transposed view about 1.5× slower at these sizes
    first = 1 + plan.n_state + len(plan.hoisted)
    at = {r: k for k, r in enumerate(plan.step_inputs[first:])}
    transposed = {
        r: np.ascontiguousarray(np.asarray(getattr(values[at[r]], "data", values[at[r]])).T)
        for i in plan.step_order
        for node in [plan.nodes[i]]
        if node.defer
        for r in [node.inputs[1]]
        if r in at
    }

    def step(t: int, state: Any) -> Any:
        parts = [state] if isinstance(state, Tensor | np.ndarray) else list(state)
        rows = [h[t] for h in per_step]
        needs = (
            xs[t].requires_grad,
            *(getattr(p, "requires_grad", False) for p in parts),
            *(r.requires_grad for r in rows),
            *fixed,
        )
        return CompiledStep.apply(
            xs[t], *parts, *rows, *values, plan=plan, needs=needs, transposed=transposed
        )

    return step


def explain(cell: Any, x: Any, state: Any = None) -> str:
    """What the compiler makes of `cell` on `x (B, T, n_x)`: the plan, or why it runs
    interpreted."""
    x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
    state = cell.init_state(x.shape[0]) if state is None else state
    try:
        return build(cell, x, state).describe()
    except Fallback as why:
        return f"interpreted: {why}"
