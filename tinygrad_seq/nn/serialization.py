"""Checkpoint files: `.npz` archives written atomically and read without pickle.

`save_arrays` writes to a temporary file in the target's folder, syncs it and renames it
over the target, so a crash mid-write leaves the previous checkpoint intact; temporary
files that an earlier crash left behind (older than ten minutes) are removed first.

`NpzReader` reads an archive with `zipfile` and `numpy.lib.format` directly, never with
pickle, so loading never runs code from a file. A hostile file cannot make it allocate or
compute for long before it refuses: the path must be a regular file (a FIFO or device is
refused without blocking), each member's `.npy` header is checked against the member's
size before any array is allocated, object dtypes are refused, and only the members asked
for are decompressed. Every kind of bad file becomes one `CheckpointError` (a
`ValueError`) whose one-line message names the file; a missing file is a
`FileNotFoundError`.
"""

from __future__ import annotations

import fnmatch
import io
import math
import os
import stat
import struct
import tempfile
import time
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_MEMBERS = 100_000  # entries in one archive
MAX_BYTES = 2**33  # uncompressed bytes read from one archive (8 GiB)
MAX_HEADER = 10_000  # bytes of one .npy header (numpy's own default limit)
CHUNK = 2**24  # bytes decompressed at a time
STALE_SECONDS = 600  # a temporary file this old is a crashed save's leftover


class CheckpointError(ValueError):
    """A checkpoint file is missing pieces, corrupted, pickled or not a checkpoint at all."""


def save_arrays(path: str | os.PathLike[str], arrays: dict[str, Any]) -> None:
    """Atomically write `arrays` (name -> array) to `path` as an uncompressed `.npz`.

    Before writing, `.tmp-*.npz` files in the target's folder older than ten minutes
    (by modification time) are deleted: they are what a crashed save leaves behind.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    _remove_stale_temporaries(folder)
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


def _remove_stale_temporaries(folder: str) -> None:
    """Delete regular files named `.tmp-*.npz` in `folder` older than `STALE_SECONDS`."""
    cutoff = time.time() - STALE_SECONDS
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if (
                        fnmatch.fnmatchcase(entry.name, ".tmp-*.npz")
                        and entry.is_file(follow_symlinks=False)
                        and entry.stat(follow_symlinks=False).st_mtime < cutoff
                    ):
                        os.unlink(entry.path)
                except OSError:
                    pass
    except OSError:
        pass


class NpzReader:
    """An `.npz` archive opened once, read member by member without pickle.

    `names` lists the arrays (member names without `.npy`); `header(name)` returns the
    `(shape, dtype)` a member declares, checked against its size, without reading its data;
    `read(name)` returns the array. Errors are `CheckpointError`s naming the file. Use as a
    context manager.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._read_bytes = 0
        self._file = _open_regular(self.path)
        try:
            with self._errors():
                magic = self._file.read(6)
                # np.load would treat anything neither zip nor .npy as a pickle: name it
                if magic.startswith(b"\x93NUMPY"):
                    raise CheckpointError(
                        f"{self.path} is a single .npy array, not an .npz checkpoint"
                    )
                if not magic.startswith(b"PK"):
                    raise CheckpointError(
                        f"{self.path} is not an .npz checkpoint (not a zip archive)"
                    )
                self._file.seek(0)
                self._zip = zipfile.ZipFile(self._file)
                members = self._zip.infolist()
                if len(members) > MAX_MEMBERS:
                    raise CheckpointError(
                        f"{self.path} has {len(members)} entries; a checkpoint has at most "
                        f"{MAX_MEMBERS}"
                    )
                self._members = {m.filename.removesuffix(".npy"): m for m in members}
        except BaseException:
            self._file.close()
            raise
        self.names = list(self._members)

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def header(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """The shape and dtype member `name` declares; `KeyError` if there is no such member."""
        with self._errors(name), self._zip.open(self._members[name]) as f:
            shape, _, dtype, _ = self._header(name, f)
        return shape, dtype

    def read(self, name: str) -> np.ndarray:
        """Member `name` as an array; `KeyError` if there is no such member."""
        info = self._members[name]
        with self._errors(name):
            self._read_bytes += info.file_size
            if self._read_bytes > MAX_BYTES:
                raise CheckpointError(
                    f"{self.path} is too large to load: more than {MAX_BYTES} bytes uncompressed"
                )
            with self._zip.open(info) as f:
                shape, fortran, dtype, nbytes = self._header(name, f)
                flat = np.empty(math.prod(shape), dtype=dtype)
                view, got = memoryview(flat).cast("B"), 0
                while got < nbytes:  # in chunks: no second full-size copy in memory
                    n = f.readinto(view[got : got + CHUNK])
                    if not n:
                        break
                    got += n
                if got != nbytes or f.read(1):  # the extra read checks the CRC
                    raise CheckpointError(f"{self.path}: entry '{name}' is truncated")
            return flat.reshape(shape, order="F" if fortran else "C")

    def _header(self, name: str, f: Any) -> tuple[tuple[int, ...], bool, np.dtype, int]:
        """Check member `name`'s `.npy` header: (shape, fortran order, dtype, data bytes)."""
        bad = f"{self.path}: entry '{name}'"
        prefix = f.read(10)
        if len(prefix) < 10 or not prefix.startswith(b"\x93NUMPY"):
            raise CheckpointError(f"{bad} is not a .npy array")
        version = (prefix[6], prefix[7])
        if version == (1, 0):
            start, length = 10, struct.unpack("<H", prefix[8:10])[0]
            parse = np.lib.format.read_array_header_1_0
        elif version == (2, 0):
            prefix += f.read(2)
            start, length = 12, struct.unpack("<I", prefix[8:12])[0]
            parse = np.lib.format.read_array_header_2_0
        else:
            raise CheckpointError(f"{bad} has unsupported .npy version {version[0]}.{version[1]}")
        if length > MAX_HEADER:
            raise CheckpointError(f"{bad} has a {length}-byte header; at most {MAX_HEADER}")
        raw = f.read(length)
        if len(raw) != length:
            raise CheckpointError(f"{bad} is truncated")
        stream = io.BytesIO(prefix[8:start] + raw)
        shape, fortran, dtype = parse(stream, max_header_size=MAX_HEADER)
        if dtype.hasobject:
            raise CheckpointError(
                f"{self.path} holds pickled Python objects (entry '{name}'); refusing to load "
                "it (no pickle)"
            )
        if dtype.itemsize == 0 or any(n < 0 for n in shape):
            raise CheckpointError(f"{bad} declares an invalid array {shape} of {dtype}")
        nbytes = math.prod(shape) * dtype.itemsize
        info = self._members[name]
        if nbytes != info.file_size - start - length:
            raise CheckpointError(
                f"{bad} declares {shape} of {dtype} ({nbytes} bytes) but holds "
                f"{info.file_size - start - length} bytes"
            )
        return shape, fortran, dtype, nbytes

    def _errors(self, name: str | None = None) -> _Refuse:
        return _Refuse(self.path, name)


class _Refuse:
    """Context manager: any exception but a `CheckpointError` becomes one naming the file."""

    def __init__(self, path: str, name: str | None) -> None:
        self.path, self.name = path, name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, CheckpointError) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, KeyError) and self.name is not None and exc.args == (self.name,):
            return False  # no such member: the caller's to report
        where = f" (entry '{self.name}')" if self.name is not None else ""
        if isinstance(exc, MemoryError):
            raise CheckpointError(f"{self.path} is too large to load{where}") from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{self.path} is not a readable .npz checkpoint{where}: {reason}"
        ) from None


def _open_regular(path: str) -> io.BufferedReader:
    """Open `path` for reading, refusing (without blocking) anything but a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise CheckpointError(f"checkpoint {path} is a directory")
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"checkpoint {path} is not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def describe_names(names: Any, limit: int = 5) -> str:
    """Up to `limit` of `names`, sorted, then how many more: a key list for a one-line message."""
    names = sorted(names)
    shown = ", ".join(names[:limit]) or "nothing"
    return shown + (f", ... and {len(names) - limit} more" if len(names) > limit else "")


def load_arrays(
    path: str | os.PathLike[str], names: Callable[[str], bool] | None = None
) -> dict[str, np.ndarray]:
    """Read the arrays of an `.npz` file (those whose name `names` accepts, if given).

    Members not asked for are never decompressed. Raises `CheckpointError` naming the file
    for any bad file (pickled objects included), `FileNotFoundError` for a missing one.
    """
    with NpzReader(path) as archive:
        return {n: archive.read(n) for n in archive.names if names is None or names(n)}
