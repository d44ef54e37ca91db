"""Seeing the graph: the nodes behind a tensor, counts by op, and Graphviz pictures.

`Recurrent` unrolls a cell by calling it once per time step, so the graph behind a loss over
T_x steps holds T_x copies of the cell's ops, all reading the *same* parameter leaves. That is
backpropagation through time: the engine's ordinary reverse pass over this graph, summing
into `W_aa.grad` one term per step. `to_dot` draws it: each parameter appears once, with an
edge to every step that reads it.

    nodes(t)         the `Function` nodes behind `t`, inputs before outputs
    leaves(t)        the leaf tensors they read (parameters, inputs, initial states)
    count_ops(t)     how many nodes of each op, e.g. {"MatMul": 10, "Tanh": 5, ...}
    to_dot(t, ...)   Graphviz DOT text: op names, shapes and parameter names
    render(dot, p)   an image when Graphviz's `dot` is installed, else the DOT text

Walk the graph *before* `backward()`: backward frees each node as it goes (unless
`retain_graph=True`), and these functions then raise.

>>> from tinygrad_seq import Tensor
>>> W = Tensor([[0.5]], requires_grad=True, name="W")
>>> a = Tensor([[1.0]])
>>> for t in range(3):
...     a = (a @ W).tanh()
>>> count_ops(a)
{'MatMul': 3, 'Tanh': 3}
>>> [leaf.name for leaf in leaves(a) if leaf.requires_grad]
['W']
"""

from __future__ import annotations

import bisect
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .tensor import Function, Tensor

__all__ = ["count_ops", "leaves", "nodes", "render", "to_dot"]

# a mapping {Tensor or id(Tensor): name}, a Module (its named_parameters), or a list of them
Names = Any


def _parents(fn: Function) -> tuple[Any, ...]:
    parents = fn.__dict__.get("parents")
    if parents is None:
        raise RuntimeError(
            "the graph behind this tensor was freed by backward(); inspect it before calling "
            "backward(), or pass retain_graph=True to backward()"
        )
    return parents


def nodes(*roots: Tensor) -> list[Function]:
    """Every recorded `Function` node behind `roots`, in topological order (inputs first).

    The order is creation order (`fn.seq`): a node's inputs were always made before it, so
    walking the list forwards is the forward pass and backwards is the reverse pass.

    >>> from tinygrad_seq import Tensor
    >>> x = Tensor([1.0, 2.0], requires_grad=True)
    >>> [type(fn).__name__ for fn in nodes((x * x).sum())]
    ['Mul', 'Sum']
    """
    seen: dict[int, Function] = {}
    stack = [r._ctx for r in roots if isinstance(r, Tensor) and r._ctx is not None]
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen[id(fn)] = fn
        for p in _parents(fn):
            if isinstance(p, Tensor) and p._ctx is not None and id(p._ctx) not in seen:
                stack.append(p._ctx)
    return sorted(seen.values(), key=lambda fn: fn.seq)


def leaves(*roots: Tensor) -> list[Tensor]:
    """The leaf tensors (no producing node) read by the graph behind `roots`, each once, in
    the order the forward pass first read them: parameters, inputs x<t>, initial states.

    >>> from tinygrad_seq import Tensor
    >>> w = Tensor([2.0], requires_grad=True, name="w")
    >>> [t.name for t in leaves((w * Tensor([3.0], name="x") * w).sum())]
    ['w', 'x']
    """
    found: dict[int, Tensor] = {}
    for r in roots:
        if isinstance(r, Tensor) and r._ctx is None:
            found.setdefault(id(r), r)
    for fn in nodes(*roots):
        for p in _parents(fn):
            if isinstance(p, Tensor) and p._ctx is None:
                found.setdefault(id(p), p)
    return list(found.values())


def count_ops(*roots: Tensor) -> dict[str, int]:
    """How many nodes of each op the graph behind `roots` holds, by op class name.

    For an RNN unrolled over T_x steps, each of the cell's ops appears T_x times.

    >>> import numpy as np
    >>> from tinygrad_seq.nn import RNNCell
    >>> cell, a = RNNCell(2, 3), None
    >>> for t in range(4):
    ...     a = cell(np.ones((1, 2), np.float32), a)
    >>> count_ops(a)["Tanh"]
    4
    """
    return dict(Counter(type(fn).__name__ for fn in nodes(*roots)))


def _name_table(names: Names | None) -> dict[int, str]:
    """{id(tensor): name} from a mapping (keys: Tensors or ids), a Module, or a list of them."""
    if names is None:
        return {}
    if hasattr(names, "named_parameters"):
        return {id(p): n for n, p in names.named_parameters()}
    if isinstance(names, Mapping):
        return {(k if isinstance(k, int) else id(k)): str(v) for k, v in names.items()}
    if isinstance(names, Iterable):
        table: dict[int, str] = {}
        for item in names:
            table.update(_name_table(item))
        return table
    raise TypeError(
        f"names must be a Module, a mapping {{Tensor or id: name}} or a list of them, "
        f"got {type(names).__name__}"
    )


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(
    *roots: Tensor,
    names: Names | None = None,
    steps: Sequence[Tensor] | None = None,
    show_inputs: bool = True,
    rankdir: str = "LR",
    title: str | None = None,
) -> str:
    """Graphviz DOT text of the graph behind `roots`: one box per op, one oval per leaf.

    An op's box shows its name and output shape; a leaf's oval its name and shape. Leaves
    are named by `names` (a Module, whose `named_parameters()` give the names, or a mapping
    from Tensors or their `id`s to names, or a list of these), else by their own `.name`.
    A mapping may also name an intermediate tensor (say `a<3>`): its op's box then shows
    that name. Leaves that require grad (parameters) are drawn bold; inputs that do not
    (x<t>, a<0>) are drawn grey, or left out with `show_inputs=False`. Constants (Python
    numbers, arrays) are left out. The roots' boxes have a double border.

    `steps=[a<1>, ..., a<T>]` (the per-step outputs, in time order) boxes each time step's
    ops in a cluster labelled `t = 1`, `t = 2`, ...: the ops created after a<t-1> and up to
    a<t> (creation order is forward order).

    A parameter read at every time step is ONE oval with an edge to each step: the picture
    of weight sharing across time, and of why BPTT sums W's gradient over t.

    >>> import numpy as np
    >>> from tinygrad_seq.nn import RNNCell
    >>> cell, a = RNNCell(2, 3), None
    >>> for t in range(4):
    ...     a = cell(np.ones((1, 2), np.float32), a)
    >>> dot = to_dot(a, names=cell)
    >>> dot.count('label="W_aa')        # one node for W_aa ...
    1
    >>> dot.startswith("digraph")
    True
    """
    table = _name_table(names)
    graph_nodes = nodes(*roots)
    ids: dict[int, str] = {}
    counts = {"op": 0, "leaf": 0}

    def node_id(obj: Any, prefix: str) -> str:
        key = id(obj)
        if key not in ids:
            ids[key] = f"{prefix}{counts[prefix]}"
            counts[prefix] += 1
        return ids[key]

    bounds = [s._ctx.seq for s in steps or () if isinstance(s, Tensor) and s._ctx is not None]
    clusters: dict[int, list[str]] = {}
    root_ops = {id(r._ctx) for r in roots if isinstance(r, Tensor) and r._ctx is not None}

    # output shapes of each node, read off the tensors that carry them
    out_shapes: dict[tuple[int, int], tuple[int, ...]] = {}
    out_names: dict[int, list[str]] = {}
    carriers = [p for fn in graph_nodes for p in _parents(fn)] + list(roots)
    for t in carriers:
        if isinstance(t, Tensor) and t._ctx is not None:
            out_shapes[(id(t._ctx), t._index)] = t.shape
            name = table.get(id(t)) or t.name
            if name and name not in out_names.setdefault(id(t._ctx), []):
                out_names[id(t._ctx)].append(name)

    lines = [
        "digraph tinygrad_seq {",
        f"  rankdir={rankdir};",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [color="#555555", arrowsize=0.6];',
    ]
    if title:
        lines.append(f"  labelloc=t; label={_quote(title)};")
    edges: list[str] = []
    leaf_lines: list[str] = []
    seen_leaves: set[int] = set()
    unnamed = 0
    for fn in graph_nodes:
        fid = node_id(fn, "op")
        op = type(fn).__name__
        shapes = [
            _shape(out_shapes[(id(fn), i)])
            for i in range(fn.n_outputs)
            if (id(fn), i) in out_shapes
        ]
        label = "\n".join([op, *out_names.get(id(fn), []), " ".join(shapes)])
        border = ", peripheries=2" if id(fn) in root_ops else ""
        line = f"  {fid} [shape=box, style=rounded{border}, label={_quote(label.strip())}];"
        step = bisect.bisect_left(bounds, fn.seq)
        if step < len(bounds):
            clusters.setdefault(step, []).append("  " + line)
        else:
            lines.append(line)
        for p in _parents(fn):
            if not isinstance(p, Tensor):
                continue  # a constant
            if p._ctx is not None:
                tail = f" [taillabel={p._index}]" if p._ctx.n_outputs > 1 else ""
                edges.append(f"  {node_id(p._ctx, 'op')} -> {fid}{tail};")
                continue
            if not p.requires_grad and not show_inputs:
                continue
            lid = node_id(p, "leaf")
            edges.append(f"  {lid} -> {fid};")
            if id(p) in seen_leaves:
                continue
            seen_leaves.add(id(p))
            name = table.get(id(p)) or p.name
            if name is None and not p.requires_grad:
                name = "input"
            if name is None:
                unnamed += 1
                name = f"leaf {unnamed}"
            style = "bold" if p.requires_grad else "filled"
            colour = ', color="#1f4e9a"' if p.requires_grad else ', fillcolor="#eeeeee"'
            text = f"{name}\n{_shape(p.shape)}"
            leaf_lines.append(
                f"  {lid} [shape=ellipse, style={style}{colour}, label={_quote(text)}];"
            )
    for r in roots:
        if isinstance(r, Tensor) and r._ctx is None and id(r) not in seen_leaves:
            name = table.get(id(r)) or r.name or "leaf"
            text = f"{name}\n{_shape(r.shape)}"
            leaf_lines.append(f"  {node_id(r, 'leaf')} [shape=ellipse, label={_quote(text)}];")
    for step, members in clusters.items():
        lines.append(f"  subgraph cluster_t{step + 1} {{")
        lines.append(f'    label="t = {step + 1}"; style=dashed; color="#999999";')
        lines += members
        lines.append("  }")
    lines += leaf_lines + list(dict.fromkeys(edges)) + ["}"]
    return "\n".join(lines) + "\n"


def render(dot_text: str, path: str | Path, quiet: bool = False) -> Path:
    """Write the graph to `path`: an image if Graphviz's `dot` is on PATH, else DOT text.

    The image format follows `path`'s suffix (`.png`, `.svg`, `.pdf`, ...). Without `dot`,
    or when `path` ends in `.dot`/`.gv`, the DOT text is written instead, next to `path`
    with the suffix `.dot`, and a line says so on stderr (unless `quiet`). Returns the path
    written.

    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> written = render("digraph { a -> b }", os.path.join(folder, "g.dot"))
    >>> written.read_text()
    'digraph { a -> b }'
    """
    path = Path(path)
    dot = shutil.which("dot")
    if path.suffix in (".dot", ".gv") or dot is None:
        target = path if path.suffix in (".dot", ".gv") else path.with_suffix(".dot")
        target.write_text(dot_text)
        if dot is None and target != path and not quiet:
            print(
                f"Graphviz's `dot` is not on PATH: wrote the DOT text to {target} "
                f"(render it with `dot -T{path.suffix.lstrip('.') or 'png'} {target} -o {path}`)",
                file=sys.stderr,
            )
        return target
    fmt = path.suffix.lstrip(".") or "png"
    done = subprocess.run(
        [dot, f"-T{fmt}", "-o", str(path)], input=dot_text, text=True, capture_output=True
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise RuntimeError(f"Graphviz `dot -T{fmt}` failed: {reason}")
    return path
