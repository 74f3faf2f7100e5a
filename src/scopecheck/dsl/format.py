"""Print contracts as canonical text: a spec back as text, and a file reformatted (``scopecheck fmt``).

``format_document(d)`` prints a spec: one statement per line, SCOPE elements in S, C, O, P, E
order, four-space indent, strings JSON-escaped. ``parse_text(format_document(d))`` equals ``d``.

``format_text(text)`` reformats a file and keeps what the file says, and only that: every
statement in its order, each printed as ``format_document`` prints it; every comment on the
statement it was on (a comment inside a statement that spans lines goes on its own line just
above it); blank lines between statements as one; nothing added (no empty blocks, no defaults).
``parse_text(format_text(t))`` equals ``parse_text(t)``, and ``format_text`` of its own output
is that output.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lark import Token, Tree

from scopecheck.dsl.parser import ToSpec, parse_layout
from scopecheck.spec import model as m
from scopecheck.spec.text import (  # noqa: F401  (re-exported: the canonical text of spec nodes)
    fmt_dataset, fmt_expectation, fmt_features, fmt_model, fmt_number, fmt_operand, fmt_params, fmt_ref, fmt_score,
    fmt_selector, fmt_value, format_document, format_documents, output_line, prompt_lines, quote, scope_lines,
    source_field_line, states_line)

if TYPE_CHECKING:
    from scopecheck.dsl.parser import Layout

# --------------------------------------------------------------------------- file formatter

_INDENT = "    "
#: blocks printed over several lines: their statements go one a line, one indent deeper
_BLOCKS = {"prompt_segments": "prompt {", "prompt_chat": "prompt chat {", "computed_stmt": "computed {",
           "reported_stmt": "reported {", "source_block": "source {"}
_WS = " \t\f\r"       # the grammar's whitespace within a line (a CRLF comment token ends in \r)


@dataclass
class _Line:
    """One output line from the source: a statement, a block's opening, or a closing brace."""

    text: str
    depth: int
    start: tuple[int, int]          # (line, column) of its first token
    end: tuple[int, int]            # (line, column) just past its last token
    kind: str = "stmt"              # "stmt" | "open" | "close"
    doc_open: bool = False          # a document's first line
    leading: list[Token] = field(default_factory=list)
    hoisted: int = 0                # how many of `leading` lay inside the statement (put above it)
    trailing: Token | None = None


def _comment(tok: Token) -> str:
    return str(tok).rstrip(_WS)


def _line(tok: Token) -> int:
    assert tok.line is not None  # the lexer positions every token it emits
    return tok.line


def _column(tok: Token) -> int:
    assert tok.column is not None
    return tok.column


def _tree(node: Token | Tree[Token] | None) -> Tree[Token]:
    assert isinstance(node, Tree), node   # where the grammar has a rule, not a terminal
    return node


def _subtrees(node: Tree[Token], skip: int = 0) -> list[Tree[Token]]:
    """``node``'s children from ``skip`` on, placeholders (None) dropped: the grammar gives the
    nodes the formatter walks (the file, a document after its name, a block, a map) only rules."""
    return [_tree(c) for c in node.children[skip:] if c is not None]


def _start(node: Tree[Token]) -> tuple[int, int]:
    return (node.meta.line, node.meta.column)


def _end(node: Tree[Token]) -> tuple[int, int]:
    return (node.meta.end_line, node.meta.end_column)


class _Printer:
    def __init__(self, layout: Layout, path: str) -> None:
        self.spec = ToSpec(path)
        self.braces = [(_line(t), _column(t)) for t in layout.lbraces]
        self.lines: list[_Line] = []

    def _open_end(self, node: Tree[Token]) -> tuple[int, int]:
        """Just past the first `{` of a document or block (only keywords and comments precede it)."""
        line, col = self.braces[bisect.bisect_left(self.braces, _start(node))]
        return (line, col + 1)

    def document(self, doc: Tree[Token]) -> None:
        name = json.loads(str(doc.children[0]))
        self.lines.append(_Line(f"{doc.data} {quote(name)} {{", 0, _start(doc), self._open_end(doc), "open", True))
        for st in _subtrees(doc, 1):
            self.statement(st, 1, in_computed=False)
        self.lines.append(_Line("}", 0, (_end(doc)[0], _end(doc)[1] - 1), _end(doc), "close"))

    def statement(self, node: Tree[Token], depth: int, in_computed: bool) -> None:
        if node.data not in _BLOCKS:
            self.lines.append(_Line(self.stmt_text(node, in_computed), depth, _start(node), _end(node)))
            return
        self.lines.append(_Line(_BLOCKS[node.data], depth, _start(node), self._open_end(node), "open"))
        if node.data.startswith("prompt"):   # a prompt's texts line up after the longest segment name
            width = max(len(str(seg.children[0])) for seg in _subtrees(node)) + 1
            for seg in _subtrees(node):
                s = self.spec.transform(seg)
                value = f"field({quote(s.field)})" if s.field is not None else quote(s.text)
                self.lines.append(_Line(f"{s.name + ':':<{width}} {value}", depth + 1, _start(seg), _end(seg)))
        else:
            for child in _subtrees(node):
                self.statement(child, depth + 1, in_computed=node.data == "computed_stmt")
        self.lines.append(_Line("}", depth, (_end(node)[0], _end(node)[1] - 1), _end(node), "close"))

    def stmt_text(self, node: Tree[Token], in_computed: bool) -> str:
        if node.data == "metric_stmt":
            p = self.spec.transform(node)
            return f"metric {p.key} = {fmt_value(p.value)}"
        if node.data == "source_field":   # a year as written (an integer); a text quoted canonically
            name, value, _ = self.spec.transform(node)
            return source_field_line(str(name), value)
        if node.data == "map_stmt":   # each number as written (an integer stays one; it reads back as a float)
            entries = [f"{quote(json.loads(str(e.children[0])))}: "
                       f"{fmt_number(self.spec.transform(_tree(e.children[1])))}" for e in _subtrees(node)]
            return "map { " + ", ".join(entries) + " }" if entries else "map {}"
        st = self.spec.transform(node)
        key, v = st.key, st.value
        if key in m.Scope.ELEMENTS:
            return scope_lines(m.Scope(**{key: v}))[0]
        if key == "model":
            return f"model    {fmt_model(v)}"
        if key == "prompt":
            return prompt_lines(v, "")[0]
        if key == "output":
            return output_line(v, "")
        if key == "dataset":
            return f"dataset  {fmt_dataset(v)}"
        if key in ("use", "method"):
            pad = "method   " if key == "method" and in_computed else f"{key} "
            return f"{pad}{v.name}{fmt_params(v.params)}"
        if key == "seed":
            return f"seed {v}"
        if key == "expect":
            return fmt_expectation(v)
        if key == "source":
            return f"source   {quote(v)}"
        if key == "states":
            return states_line(v)
        if key == "question":
            return f"question {v}"
        if key == "toolkit":
            return f"toolkit  {v}"
        raise AssertionError(f"no canonical form for a `{key}` statement")  # the grammar has no other


def _attach(lines: list[_Line], comments: list[Token]) -> list[Token]:
    """Give each comment to the line it belongs to; returns the comments after the last line."""
    starts = [ln.start for ln in lines]
    tail: list[Token] = []
    for c in comments:
        pos = (c.line, c.column)
        i = bisect.bisect_right(starts, pos) - 1
        if i >= 0 and pos < lines[i].end:                  # inside a statement that spans lines
            lines[i].leading.append(c)
            lines[i].hoisted += 1
        elif i >= 0 and c.line == lines[i].end[0]:          # after the statement, on its last line
            lines[i].trailing = c
        elif i + 1 < len(lines):                            # on a line of its own: above what follows
            lines[i + 1].leading.append(c)
        else:
            tail.append(c)
    return tail


def format_text(text: str, path: str = "<string>") -> str:
    """Reformat contract source text; every comment and statement kept, in order (see module doc).

    Raises :class:`~scopecheck.errors.ContractSyntaxError` where :func:`parse_text` does.
    """
    layout = parse_layout(text, path)
    pr = _Printer(layout, path)
    for doc in _subtrees(layout.tree):
        pr.document(doc)
    lines = pr.lines
    tail = _attach(lines, layout.comments)

    out: list[str] = []
    prev_line = 0           # the last source line of what was printed last (0: nothing yet)
    after_open = True       # the last printed line opened a block, or nothing is printed yet
    gap_at: int | None = None  # where a blank line goes if the next document brings none of its own

    def put(s: str, first: int, last: int, blank_ok: bool = True) -> None:
        nonlocal prev_line, after_open, gap_at
        if blank_ok and not after_open and first - prev_line >= 2:   # one blank line for one or more
            out.append("")
            gap_at = None
        out.append(s)
        prev_line, after_open = last, False

    for ln in lines:
        ind = _INDENT * ln.depth
        cind = _INDENT * (ln.depth + 1) if ln.kind == "close" else ind   # comments before `}` are inside
        n_whole = len(ln.leading) - ln.hoisted
        for k, c in enumerate(ln.leading):
            put(cind + _comment(c), _line(c) if k < n_whole else ln.start[0], _line(c) if k < n_whole else ln.start[0])
        body = ind + ln.text
        if ln.trailing is not None:
            col = _column(ln.trailing) - 1                   # the comment keeps its column where it fits
            body = (body.ljust(col) if len(body) + 2 <= col else body + "  ") + _comment(ln.trailing)
        put(body, ln.start[0], ln.end[0], blank_ok=ln.kind != "close")
        if ln.doc_open and gap_at is not None:               # documents are set apart by a blank line
            out.insert(gap_at, "")
            gap_at = None
        after_open = ln.kind == "open"
        if ln.kind == "close" and ln.depth == 0:
            gap_at = len(out)
    for c in tail:
        put(_comment(c), _line(c), _line(c))
    return "\n".join(out) + "\n" if out else ""


__all__ = ["fmt_expectation", "fmt_features", "fmt_model", "fmt_number", "fmt_operand", "fmt_params", "fmt_ref",
           "fmt_score", "fmt_selector", "fmt_value", "format_document", "format_documents", "format_text",
           "output_line", "prompt_lines", "quote", "scope_lines"]
