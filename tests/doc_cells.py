"""The four cells of docs/your_own_cell.md, as classes other tests can use.

`load_doc_cells()` runs the page's ```python blocks as the docs tests do (`blocks` from
tests/test_docs.py: in order, in one namespace, in a temporary working directory, skipping
`no-run` and `excerpt` blocks) and returns the cells it defines, by class name:
`MGUCell`, `IndRNNCell`, `LayerNormLSTMCell`, `MultiplicativeLSTMCell`, each built as
`cls(input_size, hidden_size, rng=None)`. The page's output is discarded and the library
generator (`tinygrad_seq.manual_seed`) is left as it was.

The tests directory is not a package (pytest imports test files by path), so load this
helper by path too:

    import importlib.util, pathlib
    path = pathlib.Path(__file__).with_name("doc_cells.py")
    spec = importlib.util.spec_from_file_location("doc_cells", path)
    doc_cells = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(doc_cells)
    cells = doc_cells.load_doc_cells()
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import tinygrad_seq.random

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "docs" / "your_own_cell.md"
CELL_NAMES = ("MGUCell", "IndRNNCell", "LayerNormLSTMCell", "MultiplicativeLSTMCell")

_cache: dict[str, type] | None = None


def _test_docs() -> ModuleType:
    """tests/test_docs.py, loaded by path (for its `blocks` extraction)."""
    spec = importlib.util.spec_from_file_location("_test_docs_blocks", HERE / "test_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_doc_cells() -> dict[str, type]:
    """`{name: class}` for the four cells of docs/your_own_cell.md (run once, then cached)."""
    global _cache
    if _cache is not None:
        return dict(_cache)
    namespace: dict = {"__name__": f"docs_{PAGE.stem}"}
    saved_generator = tinygrad_seq.random._generator
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        os.chdir(tmp)
        try:
            for block in _test_docs().blocks(PAGE):
                if block.info.split() != ["python"]:
                    continue
                code = compile("\n" * (block.line - 1) + block.code, str(PAGE), "exec")
                exec(code, namespace)
        finally:
            os.chdir(cwd)
            tinygrad_seq.random._generator = saved_generator
    missing = [name for name in CELL_NAMES if not isinstance(namespace.get(name), type)]
    if missing:
        raise LookupError(f"{PAGE.name} no longer defines {missing}")
    _cache = {name: namespace[name] for name in CELL_NAMES}
    return dict(_cache)
