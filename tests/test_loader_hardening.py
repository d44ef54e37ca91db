"""Loading hostile checkpoint files: refused fast, with one `CheckpointError` line, no pickle.

Every hostile file is built by hand: a real small checkpoint with one entry rewritten, or a
zip / `.npy` member written byte by byte.
"""

import io
import json
import os
import struct
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import tinygrad_seq.lm.checkpoint as checkpoint_module
from tinygrad_seq.autograd import Tensor
from tinygrad_seq.lm import LanguageModel, Vocab
from tinygrad_seq.lm.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from tinygrad_seq.nn import CheckpointError, Linear, Module, serialization

VOCAB = Vocab.from_text("abc")
ANY_BAD = "damaged checkpoint|not a readable|too large|not a tinygrad|not a .npy"


def good_checkpoint(tmp_path, name="good.npz", **kwargs):
    path = tmp_path / name
    save_checkpoint(path, Checkpoint(LanguageModel(len(VOCAB), 4), VOCAB, {}, **kwargs))
    return path


def npy(value):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=True)
    return buffer.getvalue()


def rewrite(path, **members):
    """Replace (bytes or array), add, or with None remove members of the .npz at `path`."""
    with zipfile.ZipFile(path) as old:
        raw = {info.filename: old.read(info) for info in old.infolist()}
    for key, value in members.items():
        name = f"{key}.npy"
        if value is None:
            raw.pop(name, None)
        else:
            raw[name] = value if isinstance(value, bytes) else npy(value)
    with zipfile.ZipFile(path, "w") as new:
        for name, data in raw.items():
            new.writestr(name, data)
    return path


def stored_config(path):
    with np.load(path, allow_pickle=False) as archive:
        return json.loads(str(archive["config"]))


def with_model_setting(path, **settings):
    config = stored_config(path)
    config["model"].update(settings)
    return rewrite(path, config=np.array(json.dumps(config)))


def refused(path, match, load=load_checkpoint):
    with pytest.raises(CheckpointError, match=match) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and len(message) < 400, message
    return message


# ---------------------------------------------------------------- config against stored shapes
@pytest.mark.parametrize("settings", [{"hidden_size": 4096}, {"num_layers": 100_000}])
def test_a_config_claiming_a_huge_model_is_refused_without_building_it(
    tmp_path, monkeypatch, settings
):
    path = with_model_setting(good_checkpoint(tmp_path), **settings)

    def never_built(*args, **kwargs):
        raise AssertionError("the model was built before the config was checked")

    monkeypatch.setattr(checkpoint_module, "LanguageModel", never_built)
    start = time.perf_counter()
    refused(path, "config implies .* model parameters but it stores")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"vocab_size": 99}, "vocabulary tokens for a model of 99"),
        ({"hidden_size": "4"}, "hidden_size must be a positive integer"),
        ({"num_layers": 0}, "num_layers must be a positive integer"),
        ({"cell": "transformer"}, "unknown cell"),
    ],
)
def test_model_settings_are_checked_before_building(tmp_path, monkeypatch, settings, match):
    path = with_model_setting(good_checkpoint(tmp_path), **settings)
    monkeypatch.setattr(checkpoint_module, "LanguageModel", None)  # calling it would fail
    refused(path, match)


def test_key_lists_in_messages_are_capped(tmp_path):
    extra = {f"model.extra{i:02d}": np.zeros(1, np.float32) for i in range(50)}
    message = refused(rewrite(good_checkpoint(tmp_path), **extra), r"unexpected: .*and 45 more")
    assert "extra49" not in message


# ---------------------------------------------------------------- not a regular file
def _load_in_thread(load, path):
    outcome = {}

    def run():
        try:
            load(path)
        except BaseException as exc:  # reported to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    return thread, outcome


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
@pytest.mark.parametrize("load", [load_checkpoint, Linear(2, 2).load], ids=["lm", "module"])
def test_a_fifo_is_refused_without_blocking(tmp_path, load):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    thread, outcome = _load_in_thread(load, fifo)
    if thread.is_alive():  # unblock the reader stuck in open(), then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("loading a FIFO blocked")
    assert isinstance(outcome.get("error"), CheckpointError), outcome
    assert "not a regular file" in str(outcome["error"]) and str(fifo) in str(outcome["error"])


def test_a_directory_is_refused(tmp_path):
    refused(tmp_path, "is a directory")


# ---------------------------------------------------------------- .npy headers
def huge_header():
    """A .npy member declaring 2**40 float64s (8 TiB) and holding 8 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)}
    )
    return header.getvalue() + b"\0" * 8


def oversized_header():
    """A version-2 .npy member whose header length field says 2 GiB."""
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{}"


@pytest.mark.parametrize(
    "member, value, match",
    [
        ("model.output.bias", huge_header(), "declares"),
        ("vocab", huge_header(), "declares"),
        ("vocab", b"", "not a .npy array"),
        ("vocab", b"hello, not an array", "not a .npy array"),
        ("model.output.bias", oversized_header(), "header"),
        ("config", npy(np.array([{"a": 1}], dtype=object)), "pickle"),
        ("model.output.bias", npy(np.array([1.0, None], dtype=object)), "pickle"),
    ],
    ids=["huge-shape", "huge-vocab", "empty", "not-npy", "huge-header", "pickle", "pickle-w"],
)
def test_bad_members_are_refused_before_allocating(tmp_path, member, value, match):
    path = rewrite(good_checkpoint(tmp_path), **{member: value})
    start = time.perf_counter()
    refused(path, match)
    assert time.perf_counter() - start < 5
    refused(path, match, load=lambda p: load_checkpoint(p))  # the same, twice: no state kept


def test_truncated_member_data_is_refused(tmp_path):
    data = npy(np.zeros(4, np.float32))
    path = rewrite(good_checkpoint(tmp_path), **{"model.output.bias": data[:-4]})
    refused(path, "declares|truncated")


def test_member_count_and_total_size_are_capped(tmp_path, monkeypatch):
    path = good_checkpoint(tmp_path)
    load_checkpoint(path)
    monkeypatch.setattr(serialization, "MAX_MEMBERS", 5)
    refused(path, "entries; a checkpoint has at most 5")
    monkeypatch.setattr(serialization, "MAX_MEMBERS", 100)
    monkeypatch.setattr(serialization, "MAX_BYTES", 1000)
    refused(path, "too large to load")


# ---------------------------------------------------------------- only needed members read
def add_deflated_zeros(path, name="junk.npy", nbytes=64 * 2**20):
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(name, "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.zeros(nbytes // 8))
    return path


def peak_bytes(run):
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_unused_64_mib_member_is_never_decompressed(tmp_path):
    """The extra member is skipped (loaded fine), not refused: checkpoints may carry extras."""
    path = add_deflated_zeros(good_checkpoint(tmp_path))
    assert os.path.getsize(path) < 2**20
    assert peak_bytes(lambda: load_checkpoint(path)) < 32 * 2**20
    assert load_checkpoint(path).vocab == VOCAB


def test_module_load_reads_only_its_own_parameters(tmp_path):
    path = tmp_path / "linear.npz"
    Linear(2, 2).save(path)
    add_deflated_zeros(path)
    layer = Linear(2, 2)
    assert peak_bytes(lambda: layer.load(path, strict=False)) < 32 * 2**20
    with pytest.raises(KeyError, match="unexpected keys junk"):
        layer.load(path)


# ---------------------------------------------------------------- the JSON config
def with_config_text(path, text):
    return rewrite(path, config=np.array(text))


def test_a_deeply_nested_config_is_refused(tmp_path):
    path = with_config_text(good_checkpoint(tmp_path), "[" * 100_000 + "]" * 100_000)
    refused(path, "nested more than")
    config = stored_config(path := good_checkpoint(tmp_path, "b.npz"))
    config["extra"] = json.loads("[" * 40 + "]" * 40)
    refused(with_config_text(path, json.dumps(config)), "nested more than")


def test_a_missing_config_is_named(tmp_path):
    refused(rewrite(good_checkpoint(tmp_path), config=None), "no 'config' entry")


def test_an_oversized_config_is_refused(tmp_path):
    path = good_checkpoint(tmp_path)
    config = stored_config(path)
    config["padding"] = "x" * 2_000_000
    refused(with_config_text(path, json.dumps(config)), "'config' is over")


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not valid JSON"),
        ("[]", "no 'model' settings"),
        ('{"model": {}}', "no 'level'"),
    ],
)
def test_a_malformed_config_is_refused(tmp_path, text, match):
    refused(with_config_text(good_checkpoint(tmp_path), text), match)


# ---------------------------------------------------------------- carry keys
def lstm_carry():
    return [(Tensor(np.zeros((2, 4), np.float32)), Tensor(np.ones((2, 4), np.float32)))]


def test_carried_state_round_trips(tmp_path):
    ckpt = load_checkpoint(good_checkpoint(tmp_path, carry=lstm_carry()))
    assert len(ckpt.carry) == 1 and ckpt.carry[0][1].data.tolist() == [[1.0] * 4] * 2


@pytest.mark.parametrize(
    "members, match",
    [
        ({"carry.x": np.zeros(2)}, "bad carry entry 'carry.x'"),
        ({"carry.0.0.1": np.zeros(2)}, "bad carry entry 'carry.0.0.1'"),
        ({"carry.00.0": np.zeros(2)}, "bad carry entry 'carry.00.0'"),
        ({"carry.2.0": np.zeros(2)}, "not numbered 0, 1"),
        ({"carry.0.1": None, "carry.0.3": np.zeros(2)}, "not numbered 0, 1"),
        ({"carry.1.0": np.zeros(2)}, "carried state for 2 layers of 1"),
    ],
)
def test_carry_keys_are_strict(tmp_path, members, match):
    path = rewrite(good_checkpoint(tmp_path, carry=lstm_carry()), **members)
    refused(path, match)


# ---------------------------------------------------------------- only CheckpointError
@pytest.mark.parametrize(
    "members",
    [
        {"vocab": np.array(7)},
        {"vocab": np.zeros((2, 2))},
        {"step": np.arange(3)},
        {"version": np.array("one")},
        {"losses": np.array(["a", "b"])},
        {"format": None},
        {"optim.m": b"junk"},
    ],
    ids=[
        "vocab-scalar",
        "vocab-floats",
        "step-vector",
        "version-text",
        "losses-text",
        "no-format",
        "optim-junk",
    ],
)
def test_damaged_entries_raise_only_checkpoint_error(tmp_path, members):
    refused(rewrite(good_checkpoint(tmp_path), **members), ANY_BAD)


@pytest.mark.parametrize("level", [None, 5, "bogus"])
def test_a_bad_vocabulary_level_raises_checkpoint_error(tmp_path, level):
    path = good_checkpoint(tmp_path)
    config = stored_config(path)
    config["level"] = level
    refused(with_config_text(path, json.dumps(config)), ANY_BAD)


def test_memory_error_while_building_becomes_checkpoint_error(tmp_path, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise MemoryError

    path = good_checkpoint(tmp_path)
    monkeypatch.setattr(checkpoint_module, "LanguageModel", out_of_memory)
    refused(path, ANY_BAD)


def test_module_load_turns_memory_error_into_checkpoint_error_and_changes_nothing(
    tmp_path, monkeypatch
):
    path = tmp_path / "linear.npz"
    Linear(2, 2).save(path)
    layer = Linear(2, 2)
    before = {name: p.data.copy() for name, p in layer.named_parameters()}

    def copy_half_then_fail(self, state, strict=True):
        next(iter(self.parameters())).data = np.full((2, 2), 7.0, np.float32)
        raise MemoryError

    monkeypatch.setattr(Module, "load_state_dict", copy_half_then_fail)
    refused(path, "too large", load=layer.load)
    for name, p in layer.named_parameters():
        np.testing.assert_array_equal(p.data, before[name])


def test_mutated_bytes_raise_only_checkpoint_error(tmp_path):
    raw = bytearray(good_checkpoint(tmp_path).read_bytes())
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.npz"
    for _ in range(200):
        data = bytearray(raw)
        for i in rng.integers(0, len(data), size=rng.integers(1, 4)):
            data[i] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(data[: int(rng.integers(len(data) // 2, len(data) + 1))]))
        try:
            load_checkpoint(bad)
        except CheckpointError as exc:
            assert "\n" not in str(exc) and str(bad) in str(exc)


# ---------------------------------------------------------------- stale temporary files
def test_save_removes_only_its_own_stale_temporary_files(tmp_path):
    old = time.time() - 3600
    names = [".tmp-stale.npz", ".tmp-fresh.npz", "keep-.tmp-x.npz", ".tmp-other.txt"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    for name in (".tmp-stale.npz", "keep-.tmp-x.npz", ".tmp-other.txt"):
        os.utime(tmp_path / name, (old, old))
    Linear(2, 2).save(tmp_path / "model.npz")
    assert sorted(os.listdir(tmp_path)) == sorted([*names[1:], "model.npz"])


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("input", ["onehot", "embedding"])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_every_built_in_model_passes_the_size_check(tmp_path, cell, input, num_layers):
    model = LanguageModel(len(VOCAB), 5, cell=cell, num_layers=num_layers, input=input)
    save_checkpoint(tmp_path / "m.npz", Checkpoint(model, VOCAB, {}))
    loaded = load_checkpoint(tmp_path / "m.npz").model
    assert loaded.config() == model.config()
    for (name, p), (_, q) in zip(loaded.named_parameters(), model.named_parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_padding_entries_cannot_vouch_for_a_huge_config(tmp_path, monkeypatch):
    """Cheap deflated zeros under an unexpected name do not let a huge model be built."""
    path = with_model_setting(good_checkpoint(tmp_path), hidden_size=4096)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("model.rnn.layers.0.pad.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.zeros(4 * 4096 * 4200, np.int8))
    real = LanguageModel

    def probe_only(**settings):
        assert settings["hidden_size"] == 1, "the model was built before its entries were checked"
        return real(**settings)

    monkeypatch.setattr(checkpoint_module, "LanguageModel", probe_only)
    refused(path, r"model entries missing: nothing; unexpected: rnn\.layers\.0\.pad")
