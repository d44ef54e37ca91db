"""Where Numba's on-disk cache of the package's kernels lives: outside the installed package.

Numba caches a `cache=True` kernel next to its source, in `__pycache__`. For an installed
package that folder is inside `site-packages/tinygrad_seq/`, and pip does not remove files
it did not install: after `pip install .`, a first run, then `pip install -e .` (or
`pip uninstall`), an empty `site-packages/tinygrad_seq/` holding only caches is left behind,
and Python imports it as a namespace package that shadows the real one.

So the kernels of this package are cached under `cache_dir()`:
`$TINYGRAD_SEQ_CACHE_DIR` if set, else `$XDG_CACHE_HOME/tinygrad_seq` or
`~/.cache/tinygrad_seq`, in a folder per Numba and Python version. The locator is
registered with Numba when the first kernel compiles (never at import) and claims only
source files inside this package; other libraries' caches are untouched. If the folder
cannot be written, Numba's own locators take over, as before.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent.parent  # .../tinygrad_seq


def cache_dir() -> Path:
    """The folder of the package's caches (compiled kernels)."""
    explicit = os.environ.get("TINYGRAD_SEQ_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tinygrad_seq"


def install_locator() -> None:
    """Put the package's cache locator first in Numba's list (idempotent)."""
    from numba.core import caching

    classes = (getattr(caching, "CacheImpl", None) or caching._CacheImpl)._locator_classes
    if not any(getattr(c, "_tinygrad_seq", False) for c in classes):
        classes.insert(0, _locator_class(caching))


def _locator_class(caching: Any) -> type:
    import numba

    # Numba checks each source file's hash itself; the folder only separates Numba and Python
    version = f"numba-{numba.__version__}-py{sys.version_info[0]}{sys.version_info[1]}"

    class PackageCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
        """Numba cache files of this package's kernels, under `cache_dir()`."""

        _tinygrad_seq = True

        def __init__(self, py_func: Any, py_file: str) -> None:
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            relative = Path(py_file).resolve().relative_to(_PACKAGE.parent).parent
            self._cache_path = str(cache_dir() / "numba" / version / relative)

        def get_cache_path(self) -> str:
            return self._cache_path

        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            if not Path(py_file).resolve().is_relative_to(_PACKAGE):
                return None
            return super().from_function(py_func, py_file)

    return PackageCacheLocator
