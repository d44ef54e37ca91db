"""Language-model checkpoints: one `.npz` holding everything `sample`, `eval` and `--resume` need.

Written atomically (`nn.serialization.save_arrays`: a crash mid-write leaves the previous file)
and read without pickle (`nn.serialization.NpzReader`). Every entry is a plain array,
strings included:

| key | what |
|---|---|
| `format`, `version` | `"tinygrad_seq.lm"` and 1: what tells our files from other programs' |
| `config` | JSON: model constructor arguments, vocabulary level, data mode, training settings |
| `vocab` | the token list, a unicode array (`<EOS>`, `<UNK>`, then the rest) |
| `model.<name>` | each parameter, e.g. `model.rnn.layers.0.W_u` |
| `optim.<key>` | the optimiser's `state_dict()` (moments, step counts, hyper-parameters) |
| `step`, `losses` | optimiser steps taken, and the training loss of each |
| `carry.<layer>.<part>` | running text only: the state carried into the next BPTT window |

No random-generator state is stored: batch order is a function of `(seed, step)` and
sampling takes its own seed, so `seed` (in `config`) and `step` fix the rest of a run.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..nn.serialization import CheckpointError, NpzReader, describe_names, save_arrays
from .model import LanguageModel
from .vocab import Vocab

FORMAT = "tinygrad_seq.lm"
VERSION = 1


@dataclass
class Checkpoint:
    """What a checkpoint holds, rebuilt: the model, its vocabulary and the run's progress."""

    model: LanguageModel
    vocab: Vocab
    config: dict[str, Any]
    step: int = 0
    losses: list[float] = field(default_factory=list)
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    carry: list[Any] | None = None


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint) -> None:
    """Write `ckpt` to `path` atomically.

    >>> import os, tempfile
    >>> from tinygrad_seq.lm import LanguageModel, Vocab
    >>> vocab = Vocab.from_text("abc")
    >>> path = os.path.join(tempfile.mkdtemp(), "m.npz")
    >>> save_checkpoint(path, Checkpoint(LanguageModel(len(vocab), 4), vocab, {}))
    >>> load_checkpoint(path).vocab == vocab
    True
    """
    config = {**ckpt.config, "model": ckpt.model.config(), "level": ckpt.vocab.level}
    arrays: dict[str, Any] = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION),
        "config": np.array(json.dumps(config, sort_keys=True)),
        "vocab": ckpt.vocab.to_array(),
        "step": np.array(ckpt.step, dtype=np.int64),
        "losses": np.asarray(ckpt.losses, dtype=np.float64),
    }
    arrays.update({f"model.{k}": v for k, v in ckpt.model.state_dict().items()})
    arrays.update({f"optim.{k}": v for k, v in ckpt.optimizer.items()})
    for layer, state in enumerate(ckpt.carry or []):
        parts = [state] if isinstance(state, Tensor) else list(state)
        arrays.update({f"carry.{layer}.{i}": p.data for i, p in enumerate(parts)})
    save_arrays(path, arrays)


MAX_CONFIG = 1_000_000  # characters of the JSON config
MAX_DEPTH = 32  # nesting of the JSON config
_ENTRIES = ("format", "version", "config", "vocab", "step", "losses")
_CARRY = re.compile(r"carry\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)", re.ASCII)
_GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # weight blocks per layer of each built-in cell


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`.

    Raises `FileNotFoundError` for a missing file and `CheckpointError` (one line naming the
    file) for anything else wrong with it. Every entry's header is checked before any data
    is read, and the model is built only once the stored `model.*` entries are exactly the
    ones its config names and hold exactly as many numbers as it implies, so a config
    claiming a huge model is refused at once. Entries this format does not use are never
    decompressed.
    """
    path = os.fspath(path)
    with NpzReader(path) as archive:
        try:
            return _load(path, archive)
        except CheckpointError:
            raise
        except Exception as exc:  # anything else is a damaged file, e.g. a malformed config
            raise CheckpointError(f"{path} is a damaged checkpoint: {_reason(exc)}") from None


def _load(path: str, archive: NpzReader) -> Checkpoint:
    names = set(archive.names)
    if _text(path, archive, "format", 100) != FORMAT:
        raise CheckpointError(
            f"{path} is not a tinygrad-seq language-model checkpoint (no '{FORMAT}' format "
            f"entry; it holds {describe_names(names)})"
        )
    for key in sorted(names):  # every header checked (pickles refused) before any data is read
        if key in _ENTRIES or key.startswith(("model.", "optim.", "carry.")):
            archive.header(key)
    version = int(archive.read("version"))
    if version > VERSION:
        raise CheckpointError(f"{path} has checkpoint version {version}; this reads {VERSION}")
    config = _config(path, archive)
    carry_keys = _carry_keys(path, names)
    vocab = Vocab.from_array(archive.read("vocab"), config["level"])
    settings = config["model"]
    stored = {k[6:]: archive.header(k)[0] for k in names if k.startswith("model.")}
    _check_model(path, settings, len(vocab), stored)
    model = LanguageModel(**settings)
    try:
        model.load_state_dict({k: archive.read(f"model.{k}") for k in stored})
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged checkpoint: {_reason(exc)}") from None
    step = int(archive.read("step"))
    losses = [float(x) for x in np.asarray(archive.read("losses"), dtype=np.float64)]
    optimizer = {k[6:]: archive.read(k) for k in sorted(names) if k.startswith("optim.")}
    carry = _carry(path, archive, carry_keys, model.num_layers)
    return Checkpoint(model, vocab, config, step, losses, optimizer, carry)


def _config(path: str, archive: NpzReader) -> dict[str, Any]:
    """The JSON config: a string of at most `MAX_CONFIG` characters, nested at most
    `MAX_DEPTH` deep, an object with a `model` object and a `level`."""
    if "config" not in archive.names:
        raise CheckpointError(f"{path} is a damaged checkpoint: no 'config' entry")
    text = _text(path, archive, "config", MAX_CONFIG)
    if text is None:
        raise CheckpointError(f"{path} is a damaged checkpoint: 'config' is not a JSON string")
    try:
        config = json.loads(text)
    except RecursionError:
        config = None  # too deep: reported below
    except ValueError as exc:
        raise CheckpointError(
            f"{path} is a damaged checkpoint: 'config' is not valid JSON: {_reason(exc)}"
        ) from None
    if config is None or _too_deep(config, MAX_DEPTH):
        raise CheckpointError(
            f"{path} is a damaged checkpoint: 'config' is nested more than {MAX_DEPTH} deep"
        )
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path} is a damaged checkpoint: 'config' has no 'model' settings")
    if "level" not in config:
        raise CheckpointError(f"{path} is a damaged checkpoint: 'config' has no 'level'")
    return config


def _too_deep(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _check_model(path: str, settings: dict[str, Any], vocab_size: int, stored: Any) -> None:
    """Refuse a model config that disagrees with the vocabulary or with the file's `model.*`
    arrays (`stored`: name -> shape), before building the model: the config must name exactly
    the stored entries and imply exactly as many numbers as they hold, so the model built is
    no larger than the data stored for it. The parameter names come from a one-unit probe
    model; the count, from the built-in cells' sizes: `gates * H * (n_in + H + 1)` a layer."""
    dims = {}
    for key in ("vocab_size", "hidden_size", "num_layers"):
        value = settings.get(key, 1 if key == "num_layers" else None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(
                f"{path} is a damaged checkpoint: model {key} must be a positive integer, "
                f"got {str(value)[:40]}"
            )
        dims[key] = value
    v, h, layers = dims["vocab_size"], dims["hidden_size"], dims["num_layers"]
    if v != vocab_size:
        raise CheckpointError(
            f"{path} is a damaged checkpoint: {vocab_size} vocabulary tokens for a model of {v}"
        )
    gates = _GATES.get(settings.get("cell", "lstm"))
    if gates is None:
        raise CheckpointError(
            f"{path} is a damaged checkpoint: unknown cell {str(settings.get('cell'))[:40]!r}"
        )
    n_x, count = v, v * h + v  # one-hot input; the output layer
    if settings.get("input", "onehot") == "embedding":
        e = settings.get("embedding_dim") or min(h, 64)
        if not isinstance(e, int) or isinstance(e, bool) or e < 1:
            raise CheckpointError(
                f"{path} is a damaged checkpoint: embedding_dim must be a positive integer"
            )
        n_x, count = e, count + v * e
    count += gates * h * (n_x + h + 1) + (layers - 1) * gates * h * (2 * h + 1)
    held = sum(math.prod(shape) for shape in stored.values())
    wrong_size = CheckpointError(
        f"{path} is a damaged checkpoint: its config implies {count} model parameters "
        f"but it stores {held}"
    )
    if count > held or layers > len(stored):
        raise wrong_size
    probe = LanguageModel(**{**settings, "vocab_size": 2, "hidden_size": 1, "num_layers": 1})
    names = set(probe.state_dict())
    per_layer = [n[len("rnn.layers.0.") :] for n in names if n.startswith("rnn.layers.0.")]
    expected = {n for n in names if not n.startswith("rnn.layers.0.")}
    expected |= {f"rnn.layers.{i}.{n}" for i in range(layers) for n in per_layer}
    if set(stored) != expected:
        raise CheckpointError(
            f"{path} is a damaged checkpoint: model entries missing: "
            f"{describe_names(expected - set(stored))}; unexpected: "
            f"{describe_names(set(stored) - expected)}"
        )
    if count != held:
        raise wrong_size


def _carry_keys(path: str, names: set[str]) -> dict[int, dict[int, str]]:
    """`carry.<layer>.<part>` entries by layer and part, numbered 0, 1, ... without gaps."""
    layers: dict[int, dict[int, str]] = {}
    for key in sorted(k for k in names if k.startswith("carry.")):
        match = _CARRY.fullmatch(key)
        if match is None:
            raise CheckpointError(
                f"{path} is a damaged checkpoint: bad carry entry {key[:60]!r} "
                "(expected carry.<layer>.<part>)"
            )
        layers.setdefault(int(match[1]), {})[int(match[2])] = key
    if sorted(layers) != list(range(len(layers))) or any(
        sorted(parts) != list(range(len(parts))) for parts in layers.values()
    ):
        raise CheckpointError(
            f"{path} is a damaged checkpoint: carry entries are not numbered 0, 1, ... "
            f"({describe_names(k for parts in layers.values() for k in parts.values())})"
        )
    return layers


def _carry(
    path: str, archive: NpzReader, keys: dict[int, dict[int, str]], num_layers: int
) -> list[Any] | None:
    if not keys:
        return None
    if len(keys) != num_layers:
        raise CheckpointError(
            f"{path} is a damaged checkpoint: carried state for {len(keys)} layers of {num_layers}"
        )
    carry: list[Any] = []
    for layer in range(len(keys)):
        parts = [Tensor(archive.read(keys[layer][i])) for i in range(len(keys[layer]))]
        carry.append(parts[0] if len(parts) == 1 else tuple(parts))
    return carry


def _text(path: str, archive: NpzReader, key: str, limit: int) -> str | None:
    """Entry `key` if it is a single string of at most `limit` characters, else None."""
    if key not in archive.names:
        return None
    shape, dtype = archive.header(key)
    if dtype.kind != "U" or shape != ():
        return None
    if dtype.itemsize > 4 * limit:
        raise CheckpointError(f"{path} is a damaged checkpoint: '{key}' is over {limit} characters")
    return str(archive.read(key))


def _reason(exc: BaseException) -> str:
    """An exception's message on one line (a `KeyError`'s without its quotes)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    text = f"missing entry {text!r}" if isinstance(exc, KeyError) and " " not in str(text) else text
    return str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
