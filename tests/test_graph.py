"""Graph introspection: topological walk, op counts, DOT export, rendering."""

from __future__ import annotations

import os
import re
import stat
import sys

import numpy as np
import pytest

import tinygrad_seq.autograd as autograd
from tinygrad_seq import Tensor, stack
from tinygrad_seq.autograd import count_ops, leaves, nodes, render, to_dot
from tinygrad_seq.nn import LSTMCell, Recurrent, RNNCell, Stacked


def rnn_unroll(T: int = 5, B: int = 2, n_x: int = 3, n_a: int = 4):
    """A cell called once per step (the cell protocol), as `Recurrent` unrolls it."""
    cell = RNNCell(n_x, n_a, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((B, T, n_x)).astype(np.float32)
    a = cell.init_state(B)
    states = []
    for t in range(T):
        a = cell(x[:, t], a)
        states.append(a)
    return cell, stack(states, axis=1), a


def hand_rnn(T: int):
    """a<t> = tanh(a<t-1> W_aaᵀ + x<t> W_axᵀ + b_a) written with Tensor ops only."""
    rng = np.random.default_rng(0)
    W_aa = Tensor(rng.standard_normal((4, 4)), requires_grad=True, name="W_aa")
    W_ax = Tensor(rng.standard_normal((4, 3)), requires_grad=True, name="W_ax")
    b_a = Tensor(np.zeros(4), requires_grad=True, name="b_a")
    a = Tensor(np.zeros((2, 4)))
    for _ in range(T):
        a = (a @ W_aa.T + Tensor(rng.standard_normal((2, 3))) @ W_ax.T + b_a).tanh()
    return a


def edges(dot: str) -> list[tuple[str, str]]:
    return re.findall(r"^\s*(\w+) -> (\w+)", dot, flags=re.M)


def node_with_label(dot: str, text: str) -> list[str]:
    return re.findall(rf'^\s*(\w+) \[[^\]]*label="{re.escape(text)}', dot, flags=re.M)


def test_public_names_are_exported():
    assert autograd.to_dot is autograd.graph.to_dot
    for name in ("nodes", "leaves", "count_ops", "to_dot", "render", "graph"):
        assert name in autograd.__all__


def test_nodes_are_in_topological_order_and_complete():
    _, outputs, a_T = rnn_unroll()
    loss = (outputs * outputs).sum()
    order = nodes(loss)
    position = {id(fn): i for i, fn in enumerate(order)}
    assert order[-1] is loss._ctx
    for fn in order:
        for p in fn.parents:
            if isinstance(p, Tensor) and p._ctx is not None:
                assert position[id(p._ctx)] < position[id(fn)]  # inputs come first
    assert len(order) == len(set(map(id, order)))
    assert set(map(id, nodes(a_T))) <= set(map(id, order))


def test_count_ops_grows_with_time_steps():
    for T in (1, 4, 7):
        counts = count_ops(hand_rnn(T))
        # per step: 2 transposes, 2 matmuls, 2 adds, 1 tanh
        assert counts == {"Transpose": 2 * T, "MatMul": 2 * T, "Add": 2 * T, "Tanh": T}


def test_count_ops_of_a_cell_unroll_is_per_step():
    one = count_ops(rnn_unroll(T=1)[2])
    five = count_ops(rnn_unroll(T=5)[2])
    assert five == {op: 5 * n for op, n in one.items()}


def test_count_ops_of_a_leaf_is_empty():
    assert count_ops(Tensor([1.0], requires_grad=True)) == {}
    assert nodes(Tensor([1.0])) == []


def test_leaves_are_parameters_inputs_and_initial_state_each_once():
    cell, _, a_T = rnn_unroll(T=4)
    found = leaves(a_T)
    params = [p for p in found if p.requires_grad]
    assert {id(p) for p in params} == {id(p) for p in cell.parameters()}
    assert len(found) == len({id(t) for t in found})
    # the inputs: x<1..4> slices and the zero initial state a<0>
    assert sum(not t.requires_grad for t in found) == 4 + 1


def test_dot_draws_a_shared_weight_once_with_an_edge_to_every_step():
    T = 6
    cell, outputs, _ = rnn_unroll(T)
    dot = to_dot(outputs.sum(), names=cell)
    for name in ("W_aa", "W_ax", "b_a"):
        ids = node_with_label(dot, name)
        assert len(ids) == 1, name  # one node ...
        out = [e for e in edges(dot) if e[0] == ids[0]]
        assert len(out) == T, name  # ... with an edge to each of the T steps
    assert 'label="W_aa\\n(4, 4)"' in dot  # parameter name and shape


def test_dot_shows_op_names_and_output_shapes():
    dot = to_dot(hand_rnn(T=2))
    assert 'label="Tanh\\n(2, 4)"' in dot
    assert 'label="Transpose\\n(4, 4)"' in dot
    assert "peripheries=2" in dot  # the root is marked


def test_dot_is_well_formed():
    cell = LSTMCell(2, 3)
    outputs, _ = Recurrent(cell)(np.ones((1, 3, 2), np.float32))
    dot = to_dot(outputs.sum(), names=cell, steps=[outputs])
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    declared = set(re.findall(r"^\s*(\w+) \[", dot, flags=re.M))
    for tail, head in edges(dot):
        assert tail in declared and head in declared
    # no edge twice, counting which output of a multi-output node it leaves from
    # (a fused LSTM step hands both a<t> and c<t> to the next step)
    labelled = re.findall(r"^\s*(\w+ -> \w+(?: \[taillabel=\d+\])?)", dot, flags=re.M)
    assert len(labelled) == len(set(labelled))


def test_names_from_mapping_by_tensor_or_id_and_from_leaf_name():
    W = Tensor(np.eye(2, dtype=np.float32), requires_grad=True)
    b = Tensor(np.zeros(2, np.float32), requires_grad=True)
    v = Tensor(np.ones(2, np.float32), requires_grad=True, name="v_leaf")
    y = ((Tensor(np.ones((1, 2), np.float32)) @ W + b) * v).sum()
    dot = to_dot(y, names={W: "W", id(b): "bias"})
    assert node_with_label(dot, "W\\n(2, 2)")
    assert node_with_label(dot, "bias\\n(2)")
    assert node_with_label(dot, "v_leaf\\n(2)")


def test_names_from_a_nested_module_use_dotted_names():
    deep = Stacked([RNNCell(2, 3), RNNCell(3, 3)])
    outputs, _ = deep(np.ones((1, 2, 2), np.float32))
    dot = to_dot(outputs, names=deep)
    assert node_with_label(dot, "layers.0.W_aa")
    assert node_with_label(dot, "layers.1.W_ax")


def test_intermediate_tensors_can_be_named_and_steps_clustered():
    cell = RNNCell(2, 3)
    a = cell.init_state(1)
    states = []
    for _ in range(3):
        a = cell(np.ones((1, 2), np.float32), a)
        states.append(a)
    names = {s: f"a<{t + 1}>" for t, s in enumerate(states)}
    dot = to_dot(states[-1], names=[cell, names], steps=states)
    for t in (1, 2, 3):
        assert f'label="Tanh\\na<{t}>\\n(1, 3)"' in dot
        assert f"subgraph cluster_t{t} {{" in dot
    assert "cluster_t4" not in dot


def test_inputs_can_be_left_out():
    _, _, a_T = rnn_unroll(T=3)
    assert 'label="input' in to_dot(a_T)
    assert 'label="input' not in to_dot(a_T, show_inputs=False)


def test_bad_names_argument_is_a_clear_error():
    _, _, a_T = rnn_unroll(T=1)
    with pytest.raises(TypeError, match="names must be"):
        to_dot(a_T, names=3.5)


def test_walking_a_freed_graph_says_why():
    W = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    y = (W @ W).tanh().sum()
    y.backward()
    with pytest.raises(RuntimeError, match="freed by backward"):
        count_ops(y)
    y2 = (W @ W).tanh().sum()
    y2.backward(retain_graph=True)
    assert count_ops(y2) == {"MatMul": 1, "Tanh": 1, "Sum": 1}


# ---------------------------------------------------------------- render


def test_render_without_graphviz_writes_dot_text_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("shutil.which", lambda name: None)
    written = render("digraph { a -> b }", tmp_path / "g.png")
    assert written == tmp_path / "g.dot"
    assert written.read_text() == "digraph { a -> b }"
    assert not (tmp_path / "g.png").exists()
    err = capsys.readouterr().err
    assert "not on PATH" in err and "g.dot" in err


def test_render_to_a_dot_path_never_needs_graphviz(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert render("digraph {}", tmp_path / "g.gv") == tmp_path / "g.gv"
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as a fake `dot`")
def test_render_with_graphviz_calls_dot_with_the_suffix_format(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    # a stand-in for Graphviz: records its arguments and copies stdin to the -o file
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\ncat > "$3"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    written = render("digraph { x }", tmp_path / "g.svg")
    assert written == tmp_path / "g.svg"
    assert written.read_text() == "digraph { x }"
    assert (fake.parent / "args").read_text().split() == ["-Tsvg", "-o", str(written)]


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as a fake `dot`")
def test_render_reports_a_failing_dot(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'syntax error in line 1' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="syntax error in line 1"):
        render("digraph {", tmp_path / "g.png")


def test_multi_output_nodes_show_every_output_and_which_one_an_edge_carries():
    from tinygrad_seq.autograd import Function

    class Split(Function):
        """(x[:1], x[1:]); the gradient is both parts' gradients joined."""

        def forward(self, x):
            return x[:1].copy(), x[1:].copy()

        def backward(self, grads):
            return np.concatenate(grads)

    x = Tensor(np.arange(4.0), requires_grad=True, name="x")
    first, rest = Split.apply(x)
    y = (first * 2).sum() + (rest * 3).sum()
    dot = to_dot(y)
    assert 'label="Split\\n(1) (3)"' in dot  # both output shapes
    assert "[taillabel=0]" in dot and "[taillabel=1]" in dot
    assert count_ops(y)["Split"] == 1
