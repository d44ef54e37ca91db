"""Checkpoint files: `.npz` archives written atomically and read without pickle.

`save_arrays` writes to a temporary file in the target's folder, syncs it and renames it
over the target, so a crash mid-write leaves the previous checkpoint intact. `load_arrays`
reads with `allow_pickle=False` (loading never runs code from a file) and turns every kind
of bad file into one `ValueError` that names the file.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from typing import Any

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file is missing pieces, corrupted, pickled or not a checkpoint at all."""


def save_arrays(path: str | os.PathLike[str], arrays: dict[str, Any]) -> None:
    """Atomically write `arrays` (name -> array) to `path` as an uncompressed `.npz`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    except OSError as exc:
        raise PermissionError(f"cannot write {path}: {exc.strerror}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint gets the usual mode
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every array of an `.npz` file into memory, refusing pickled objects."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        # np.load treats anything that is neither zip nor .npy as a pickle: name it first
        if magic.startswith(b"\x93NUMPY"):
            raise CheckpointError(f"{path} is a single .npy array, not an .npz checkpoint")
        if not magic.startswith(b"PK"):
            raise CheckpointError(f"{path} is not an .npz checkpoint (not a zip archive)")
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except CheckpointError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise CheckpointError(
                f"{path} holds pickled Python objects; refusing to load it (no pickle)"
            ) from None
        raise CheckpointError(f"{path} is not a readable .npz checkpoint: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, NotImplementedError) as exc:
        raise CheckpointError(f"{path} is not a readable .npz checkpoint: {exc}") from None
