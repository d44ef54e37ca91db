"""Language-model checkpoints: one `.npz` holding everything `sample`, `eval` and `--resume` need.

Written atomically (`nn.serialization.save_arrays`: a crash mid-write leaves the previous file)
and read with `allow_pickle=False`. Every entry is a plain array, strings included:

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
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..nn.serialization import CheckpointError, load_arrays, save_arrays
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


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; `CheckpointError` for any other file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a directory")
    try:
        arrays = load_arrays(path)
    except (CheckpointError, OSError):
        raise
    except Exception as exc:  # e.g. zipfile's NotImplementedError on a mangled header
        raise CheckpointError(f"{path} is not a readable .npz checkpoint: {_reason(exc)}") from None
    if _text(arrays, "format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a tinygrad-seq language-model checkpoint (no '{FORMAT}' format "
            f"entry; it holds {', '.join(sorted(arrays)[:5]) or 'nothing'})"
        )
    try:
        version = int(arrays["version"])
        config = json.loads(_text(arrays, "config"))
        vocab = Vocab.from_array(arrays["vocab"], config["level"])
        model = LanguageModel(**config["model"])
        step = int(arrays["step"])
        losses = [float(x) for x in np.asarray(arrays["losses"], dtype=np.float64)]
        carry = _carry(arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged checkpoint: {_reason(exc)}") from None
    if version > VERSION:
        raise CheckpointError(f"{path} has checkpoint version {version}; this reads {VERSION}")
    if len(vocab) != model.vocab_size:
        raise CheckpointError(
            f"{path} is a damaged checkpoint: {len(vocab)} vocabulary tokens for a model "
            f"of {model.vocab_size}"
        )
    weights = {k[6:]: v for k, v in arrays.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged checkpoint: {_reason(exc)}") from None
    optimizer = {k[6:]: v for k, v in arrays.items() if k.startswith("optim.")}
    return Checkpoint(model, vocab, config, step, losses, optimizer, carry)


def _carry(arrays: dict[str, np.ndarray]) -> list[Any] | None:
    layers: dict[int, dict[int, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("carry."):
            _, layer, part = key.split(".")
            layers.setdefault(int(layer), {})[int(part)] = value
    if not layers:
        return None
    carry: list[Any] = []
    for layer in range(len(layers)):
        parts = [Tensor(layers[layer][i]) for i in range(len(layers[layer]))]
        carry.append(parts[0] if len(parts) == 1 else tuple(parts))
    return carry


def _text(arrays: dict[str, np.ndarray], key: str) -> str | None:
    value = arrays.get(key)
    if value is None or value.dtype.kind != "U" or value.ndim != 0:
        return None
    return str(value)


def _reason(exc: BaseException) -> str:
    """An exception's message on one line (a `KeyError`'s without its quotes)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    text = f"missing entry {text!r}" if isinstance(exc, KeyError) and " " not in str(text) else text
    return str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
