"""The architecture stays as the layout says: dependencies one way, a visible engine budget."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tinygrad_seq"

# a module may import from itself and from the packages listed (lm → nn → autograd)
ALLOWED = {
    "autograd": {"autograd"},
    "nn": {"autograd", "compiler", "nn", "random"},
    "compiler": {"autograd", "compiler", "random"},
    "optim": {"autograd"},
    "testing": {"autograd"},
    "lm": {"autograd", "nn", "lm", "optim", "random"},
    "through_time": {"autograd", "nn", "optim", "through_time"},
}
# lines of code (no blanks, comments or docstrings) in the engine: Tensor and the reverse pass,
# the primitives with their derivatives, and the two namespaces those derivatives run on.
# Raised from 700 when higher-order gradients and the cell authors' ops came in.
ENGINE_FILES = ("tensor.py", "ops.py", "backends.py")
ENGINE_BUDGET = 1000


def _top_level(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _internal_imports(path: Path) -> set[str]:
    """The tinygrad_seq subpackages a module imports (relative or absolute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for a module at the package top
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module == "tinygrad_seq":  # from tinygrad_seq import nn
                found.update(alias.name for alias in node.names)
            elif node.level == 0 and node.module and node.module.startswith("tinygrad_seq."):
                found.add(node.module.split(".")[1])
            elif node.level > 0:
                if node.level - 1 < depth:  # stays inside this subpackage
                    found.add(_top_level(path))
                elif node.module:  # from ..x import y
                    found.add(node.module.split(".")[0])
                else:  # from .. import x
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tinygrad_seq."):
                    found.add(alias.name.split(".")[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_dependencies_point_one_way(layer):
    root = PACKAGE / layer
    files = sorted(root.rglob("*.py")) if root.is_dir() else [PACKAGE / f"{layer}.py"]
    wrong = {
        str(f.relative_to(PACKAGE)): sorted(_internal_imports(f) - ALLOWED[layer]) for f in files
    }
    wrong = {name: deps for name, deps in wrong.items() if deps}
    assert not wrong, f"{layer} may import only {sorted(ALLOWED[layer])}; found {wrong}"


def _code_lines(path: Path) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    source = path.read_text(encoding="utf-8")
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (
            tokenize.COMMENT,
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def test_engine_stays_within_its_line_budget(capsys):
    counts = {name: _code_lines(PACKAGE / "autograd" / name) for name in ENGINE_FILES}
    total = sum(counts.values())
    with capsys.disabled():
        print(f"\nengine size: {counts} = {total} lines of code (budget {ENGINE_BUDGET})")
    assert total <= ENGINE_BUDGET, f"the engine grew to {total} lines (budget {ENGINE_BUDGET})"
