"""Module, Parameter, Linear, Embedding: discovery, state dicts, checkpoints, init."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_seq
from tinygrad_seq import Tensor
from tinygrad_seq.nn import CheckpointError, Embedding, Linear, Module, Parameter
from tinygrad_seq.testing import assert_grads_close, shapes, tensors

# Net holds a plain Tensor on purpose (it must not count as a parameter); the warning that
# it would never be trained is tested on its own below
pytestmark = pytest.mark.filterwarnings("ignore:Net.not_a_param:UserWarning")


class Block(Module):
    def __init__(self):
        self.scale = Parameter(np.ones(2, np.float32))
        self.proj = Linear(2, 2)

    def forward(self, x):
        return self.proj(x) * self.scale


class Net(Module):
    """Own parameter, a submodule, a list of modules, a nested module, a tuple of parameters."""

    def __init__(self):
        self.emb = Embedding(5, 2)
        self.layers = [Linear(2, 3), Linear(3, 2, bias=False)]
        self.gain = Parameter(np.ones(1, np.float32))
        self.block = Block()
        self.extra = (Parameter(np.zeros(3, np.float32)),)
        self.not_a_param = Tensor(np.zeros(2))  # a plain Tensor is not a parameter
        self.config = {"size": 2}

    def forward(self, ids):
        h = self.emb(ids)
        for layer in self.layers:
            h = layer(h).tanh()
        return self.block(h) * self.gain + self.extra[0].sum()


# a module's own parameters (lists and tuples of them too) in attribute order, then its
# submodules depth first, as PyTorch orders a module's own parameters before its children's
NET_NAMES = [
    "gain",
    "extra.0",
    "emb.weight",
    "layers.0.weight",
    "layers.0.bias",
    "layers.1.weight",
    "block.scale",
    "block.proj.weight",
    "block.proj.bias",
]


def params_snapshot(module):
    return {name: p.data.copy() for name, p in module.named_parameters()}


def assert_unchanged(module, snapshot):
    now = params_snapshot(module)
    assert now.keys() == snapshot.keys()
    for name, value in snapshot.items():
        assert now[name].dtype == value.dtype
        np.testing.assert_array_equal(now[name], value, err_msg=name)


# ---------------------------------------------------------------- discovery
def test_named_parameters_pytorch_style_names_in_stable_order():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == NET_NAMES
    assert [n for n, _ in Net().named_parameters()] == NET_NAMES  # same for every instance
    assert net.parameters() == [p for _, p in net.named_parameters()]
    assert net.parameters()[3] is net.layers[0].weight
    assert all(isinstance(p, Parameter) and p.requires_grad for p in net.parameters())
    assert all(p.dtype == np.float32 for p in net.parameters())
    assert len(list(net.modules())) == 6  # net, emb, 2 layers, block, block.proj


def test_shared_parameter_and_shared_module_appear_once():
    class Tied(Module):
        def __init__(self):
            self.emb = Embedding(4, 3)
            self.out = Linear(3, 4)
            self.out.weight = self.emb.weight  # weight tying
            self.again = self.out  # the same submodule under a second name

    tied = Tied()
    names = [n for n, _ in tied.named_parameters()]
    assert names == ["emb.weight", "out.bias"]
    assert len(tied.state_dict()) == 2
    tied.to(np.float64)
    assert tied.out.weight is tied.emb.weight and tied.emb.weight.dtype == np.float64


def test_a_child_holding_its_parent_does_not_loop():
    net = Block()
    net.proj.owner = net
    assert [n for n, _ in net.named_parameters()] == ["scale", "proj.weight", "proj.bias"]
    assert len(list(net.modules())) == 2


def test_zero_grad_clears_all():
    net = Net()
    net(np.array([[0, 1, 4]])).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_call_runs_forward_and_base_forward_raises():
    block = Block()
    x = np.ones((1, 2), np.float32)
    np.testing.assert_array_equal(block(x).data, block.forward(x).data)
    with pytest.raises(NotImplementedError):
        Module()(x)


# ---------------------------------------------------------------- state dicts
def test_state_dict_is_a_copy():
    net = Net()
    sd = net.state_dict()
    assert list(sd) == NET_NAMES
    sd["gain"][...] = 7.0
    assert net.gain.data[0] == 1.0
    net.gain.data[...] = 3.0
    assert sd["gain"][0] == 7.0


def test_load_state_dict_round_trip_and_cast():
    src, dst = Net(), Net()
    state = {k: v.astype(np.float64) for k, v in src.state_dict().items()}
    dst.load_state_dict(state)
    assert_unchanged(dst, src.state_dict())  # values equal, dtype stays float32
    state["gain"][...] = 5.0
    assert dst.gain.data[0] != 5.0  # loaded by copy


@pytest.mark.parametrize(
    ("edit", "error", "names"),
    [
        (lambda sd: sd.pop("layers.1.weight"), KeyError, ["layers.1.weight"]),
        (lambda sd: sd.update(bogus=np.zeros(2)), KeyError, ["bogus"]),
        (lambda sd: sd.update({"block.scale": np.zeros(3)}), ValueError, ["block.scale", "(3,)"]),
        (lambda sd: sd.update(gain=np.array(["a"])), ValueError, ["gain"]),
    ],
)
def test_load_state_dict_strict_errors_name_keys_and_change_nothing(edit, error, names):
    net, other = Net(), Net()
    sd = other.state_dict()
    edit(sd)
    before = params_snapshot(net)
    with pytest.raises(error) as info:
        net.load_state_dict(sd)
    for name in names:
        assert name in str(info.value)
    assert_unchanged(net, before)


def test_load_state_dict_non_strict():
    net, other = Net(), Net()
    sd = other.state_dict()
    del sd["gain"]
    sd["bogus"] = np.zeros(1)
    before = params_snapshot(net)
    net.load_state_dict(sd, strict=False)
    np.testing.assert_array_equal(net.gain.data, before["gain"])  # missing: left alone
    np.testing.assert_array_equal(net.emb.weight.data, other.emb.weight.data)
    sd["layers.0.bias"] = np.zeros(9)  # a wrong shape is still an error, as in PyTorch
    snapshot = params_snapshot(net)
    with pytest.raises(ValueError, match=r"layers\.0\.bias.*\(9,\)"):
        net.load_state_dict(sd, strict=False)
    assert_unchanged(net, snapshot)


def test_to_float64_in_place_and_returns_module():
    net = Net()
    objects = net.parameters()
    assert net.to(np.float64) is net
    assert net.parameters() == objects
    assert all(p.dtype == np.float64 for p in objects)
    assert net(np.array([[1, 2]])).dtype == np.float64
    with pytest.raises(TypeError, match="floating"):
        net.to(np.int32)


def test_assigning_data_replaces_a_value():
    layer = Linear(2, 1)
    layer.weight.data = np.array([[2.0, 3.0]], np.float32)
    layer.bias.data = np.array([1.0], np.float32)
    np.testing.assert_array_equal(layer(np.array([[1.0, 1.0]], np.float32)).data, [[6.0]])
    assert layer.state_dict()["weight"].tolist() == [[2.0, 3.0]]


# ---------------------------------------------------------------- Linear
@pytest.mark.parametrize("lead", [(), (4,), (2, 3), (2, 1, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_equals_x_wT_plus_b_over_leading_dims(lead, bias):
    layer = Linear(3, 5, bias=bias)
    x = np.random.default_rng(0).standard_normal((*lead, 3)).astype(np.float32)
    y = layer(x)
    expected = x @ layer.weight.data.T + (layer.bias.data if bias else 0)
    assert y.shape == (*lead, 5) and y.dtype == np.float32
    np.testing.assert_allclose(y.data, expected, rtol=1e-6, atol=1e-6)
    assert [n for n, _ in layer.named_parameters()] == (["weight", "bias"] if bias else ["weight"])
    assert layer.weight.shape == (5, 3)


@given(st.data(), shapes(min_dims=0, max_dims=2, max_side=3), st.integers(1, 3), st.integers(1, 3))
def test_linear_gradients(data, lead, n_in, n_out):
    layer = Linear(n_in, n_out).to(np.float64)
    x = data.draw(tensors(shape=(*lead, n_in)))
    assert_grads_close(lambda x, w, b: layer(x), x, layer.weight, layer.bias)


def test_linear_dtype_mixing_and_shape_errors():
    layer = Linear(3, 2)
    with pytest.raises(TypeError, match=r"float64.*float32"):
        layer(np.ones((1, 3), np.float64))
    with pytest.raises(ValueError, match=r"\(4, 2\).*3"):
        layer(np.ones((4, 2), np.float32))


# ---------------------------------------------------------------- Embedding
def test_embedding_lookup_and_repeated_ids_accumulate():
    emb = Embedding(6, 3).to(np.float64)
    ids = np.array([[1, 4, 1], [1, 0, 5]])
    out = emb(Tensor(ids))
    np.testing.assert_array_equal(out.data, emb.weight.data[ids])
    g = np.random.default_rng(0).standard_normal((2, 3, 3))
    out.backward(g)
    expected = np.zeros((6, 3))
    for (b, t), i in np.ndenumerate(ids):
        expected[i] += g[b, t]
    np.testing.assert_allclose(emb.weight.grad, expected, rtol=1e-12)
    np.testing.assert_allclose(emb.weight.grad[1], g[0, 0] + g[0, 2] + g[1, 0], rtol=1e-12)
    assert np.all(emb.weight.grad[[2, 3]] == 0)


def test_embedding_gradients_fd():
    emb = Embedding(4, 2).to(np.float64)
    ids = np.array([[0, 3, 3], [2, 0, 0]])
    assert_grads_close(lambda w: emb(ids).tanh(), emb.weight)


@pytest.mark.parametrize(
    ("ids", "error", "match"),
    [
        (np.array([0, 6]), IndexError, "max 6"),
        (np.array([-1, 2]), IndexError, "min -1"),
        (np.array([0.0, 1.0]), TypeError, "integer"),
    ],
)
def test_embedding_bad_ids(ids, error, match):
    with pytest.raises(error, match=match):
        Embedding(6, 2)(ids)


# ---------------------------------------------------------------- initialisation
def test_manual_seed_reproduces_init():
    def build():
        return Linear(4, 3).state_dict() | Embedding(5, 2).state_dict()

    tinygrad_seq.manual_seed(123)
    a = build()
    tinygrad_seq.manual_seed(123)
    b = build()
    tinygrad_seq.manual_seed(124)
    c = build()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["weight"], c["weight"])
    bound = 1 / np.sqrt(4)  # Linear: U(−1/√in, 1/√in)
    assert np.all(np.abs(Linear(4, 3).weight.data) <= bound)
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(
        Linear(2, 2, rng=rng1).weight.data, Linear(2, 2, rng=rng2).weight.data
    )


# ---------------------------------------------------------------- checkpoints
def test_save_load_round_trip(tmp_path):
    net, other = Net(), Net()
    path = tmp_path / "model.npz"
    net.save(path)
    assert other.load(path) is other
    assert_unchanged(other, params_snapshot(net))
    with np.load(path, allow_pickle=False) as f:
        assert sorted(f.files) == sorted(NET_NAMES)
    assert os.listdir(tmp_path) == ["model.npz"]


def test_save_is_atomic_when_the_write_crashes(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    Net().save(path)
    original = path.read_bytes()

    def crashing_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crashing_savez)
    with pytest.raises(OSError, match="disk full"):
        Net().save(path)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind


def _corrupted(path, raw):
    bad = bytearray(raw)
    for i in range(len(bad) // 2, len(bad) // 2 + 8):
        bad[i] ^= 0xFF
    path.write_bytes(bytes(bad))


def _truncated(path, raw):
    path.write_bytes(raw[: len(raw) // 2])


def _text(path, raw):
    path.write_text("weight,bias\n1,2\n")


def _pickled(path, raw):
    with open(path, "wb") as f:  # keep the name: np.savez appends .npz to bare paths
        np.savez(f, gain=np.array([1.0, "x", None], dtype=object))


def _npy(path, raw):
    with open(path, "wb") as f:
        np.save(f, np.ones(3))


@pytest.mark.parametrize(
    ("make_bad", "match"),
    [
        (_corrupted, "not a readable"),
        (_truncated, "not a readable"),
        (_text, "not an .npz"),
        (_pickled, "pickle"),
        (_npy, ".npy"),
    ],
)
def test_bad_checkpoint_raises_naming_file_and_changes_nothing(tmp_path, make_bad, match):
    good = tmp_path / "good.npz"
    Net().save(good)
    bad = tmp_path / "bad.npz"
    make_bad(bad, good.read_bytes())
    net = Net()
    before = params_snapshot(net)
    with pytest.raises(CheckpointError, match=match) as info:
        net.load(bad)
    assert str(bad) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert_unchanged(net, before)


def test_missing_checkpoint_and_wrong_model(tmp_path):
    net = Net()
    before = params_snapshot(net)
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        net.load(missing)
    other = tmp_path / "linear.npz"
    Linear(2, 2).save(other)
    with pytest.raises(KeyError, match=r"emb\.weight"):
        net.load(other)
    assert_unchanged(net, before)
    with pytest.raises(FileNotFoundError, match="folder"):
        net.save(tmp_path / "no_such_dir" / "m.npz")


def test_linear_computes_integer_input_in_its_own_dtype():
    layer = Linear(3, 2)
    out = layer(np.ones((2, 3), np.int64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, layer(np.ones((2, 3), np.float32)).data)
