"""The user documentation as the tests read it: README.md and every page under docs/.

Tests that pin a sentence or a table of the documentation find it by a unique phrase in
:func:`text` (all pages, whitespace-normalised), so a passage may move between pages without its
test losing it; :func:`page_with` names the one page that holds a phrase (a table read line by
line). :func:`blocks` is every fenced code block, with its page, line and language, which
``tests/test_docs.py`` executes or validates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def pages() -> list[Path]:
    """README.md, then every Markdown page under docs/ (pages other branches add included)."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def text() -> str:
    """Every page's text joined, runs of whitespace as one space (line breaks do not matter)."""
    return " ".join(" ".join(p.read_text(encoding="utf-8").split()) for p in pages())


def page_with(phrase: str) -> Path:
    """The one page whose text contains ``phrase``; an AssertionError when none or several do."""
    found = [p for p in pages() if phrase in p.read_text(encoding="utf-8")]
    assert len(found) == 1, f"{phrase!r} is on {len(found)} pages ({[str(p.relative_to(ROOT)) for p in found]})"
    return found[0]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int           # 1-based line of the opening fence
    lang: str           # the fence's info string ("" when untagged)
    body: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[^\s`]*)[^`]*$")


def blocks_of(path: Path) -> list[Block]:
    """The fenced code blocks of one page (indented ones, e.g. inside an admonition, dedented)."""
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        mo = FENCE.match(lines[i])
        if not mo:
            i += 1
            continue
        indent, fence = mo["indent"], mo["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence[:3]) and not lines[j].strip().strip(fence[0])):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        assert j < len(lines), f"{path.relative_to(ROOT)}:{i + 1}: code block never closed"
        out.append(Block(path, i + 1, mo["lang"].lower(), "\n".join(body) + "\n"))
        i = j + 1
    return out


def blocks() -> list[Block]:
    return [b for p in pages() for b in blocks_of(p)]
