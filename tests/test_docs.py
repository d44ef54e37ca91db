"""Every page of docs/ runs: its ```python blocks, in order, in one namespace per page.

Fenced blocks are read by their info string:

- ```python                  run (in a temporary working directory);
- ```python no-run           shown, not run (used sparingly: a block that needs a network,
                             Graphviz, or minutes);
- ```python excerpt PATH     lines quoted from the library: each must still be a line of
                             PATH, so a page cannot drift from the code it shows;
- anything else (text, bash) shown only.

Each page is its own test; a page whose block imports an optional package that is not
installed (torch, matplotlib) is skipped, and says so. The index must list every page, and
every relative link must point at a file that exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
RUNNABLE = [*PAGES, ROOT / "README.md"]  # the README's examples must run too


@dataclass
class Block:
    info: str
    line: int  # 1-based line of the first code line in the page
    code: str


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page (``` fences, not nested)."""
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)```(.*)$", lines[i])
        if not opening:
            i += 1
            continue
        indent, info = opening.group(1), opening.group(2).strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise AssertionError(f"{page.name}:{i + 1}: a ``` block is never closed")
        found.append(Block(info, i + 2, "\n".join(body) + "\n"))
        i = j + 1
    return found


def check_excerpt(page: Path, block: Block) -> None:
    parts = block.info.split()
    assert len(parts) == 3, f"{page.name}:{block.line}: write ```python excerpt PATH"
    source = ROOT / parts[2]
    assert source.is_file(), f"{page.name}:{block.line}: {parts[2]} does not exist"
    known = {line.strip() for line in source.read_text(encoding="utf-8").splitlines()}
    for offset, line in enumerate(block.code.splitlines()):
        text = line.strip()
        if not text or text in ("...", "…"):
            continue
        assert text in known, (
            f"{page.name}:{block.line + offset}: the excerpt line {text!r} is no longer in "
            f"{parts[2]}; update the page"
        )


@pytest.mark.parametrize("page", RUNNABLE, ids=[p.name for p in RUNNABLE])
def test_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pages may write files (graphs, checkpoints)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for block in blocks(page):
        kind = block.info.split()
        if not kind or kind[0] != "python":
            continue
        if kind[1:2] == ["no-run"]:
            continue
        if kind[1:2] == ["excerpt"]:
            check_excerpt(page, block)
            continue
        assert len(kind) == 1, f"{page.name}:{block.line}: unknown block marker {block.info!r}"
        # pad so tracebacks give the line number within the page
        code = compile("\n" * (block.line - 1) + block.code, str(page), "exec")
        try:
            exec(code, namespace)
        except ModuleNotFoundError as error:
            # a page may show interop with an optional package (torch, matplotlib): it runs
            # where that package is installed; a missing part of tinygrad_seq still fails
            if (error.name or "").split(".")[0] in ("", "tinygrad_seq"):
                raise
            pytest.skip(f"{page.name}:{block.line} needs {error.name}, not installed")


def test_index_lists_every_page():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w./-]+\.md)\)", index))
    missing = {p.name for p in PAGES if p.name != "index.md"} - linked
    assert not missing, f"docs/index.md does not link {sorted(missing)}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\((?!https?:|#|mailto:)([^)#\s]+)", text):
        assert (page.parent / target).exists(), f"{page.name}: broken link to {target}"


def test_no_run_is_used_sparingly():
    skipped = [(p.name, b.line) for p in PAGES for b in blocks(p) if b.info == "python no-run"]
    runnable = [b for p in PAGES for b in blocks(p) if b.info == "python"]
    assert len(skipped) <= max(3, len(runnable) // 10), skipped
