"""The audit table (:mod:`scopecheck.audit.table`) as Markdown and as one HTML page.

:func:`render_table_markdown` writes a GitHub table (one row per claim) and the summary under
it; every cell is escaped (``|``, Markdown emphasis and link characters, and ``<``, ``>``, ``&``
as HTML entities, so a cell never becomes markup), each source links to its URL, and each claim
to its file when ``link_base`` is given (the docs site links into the repository).

:func:`render_table_html` writes one self-contained page (no external script, style or font):
the summary, then the table, whose columns sort on a click on their header. It is rendered by a
Jinja2 template with autoescaping on, so every field is escaped; each claim links to its file by
its relative path (percent-encoded) and each source to its URL (only an ``http(s)://`` one).
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

from scopecheck.audit.table import AuditTable, ImpossibleCell, Summary, TableRow
from scopecheck.runtime.templates import html_templates

__all__ = ["render_table_html", "render_table_markdown", "summary_lines"]

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def md_cell(text: str) -> str:
    """``text`` as the content of one Markdown table cell: no markup, no line break."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(" ".join(text.split()), quote=False))


def _web(url: str | None) -> str | None:
    return url if url is not None and url.startswith(("https://", "http://")) else None


def _md_url(url: str) -> str:
    """A link destination Markdown cannot misread: spaces, brackets, pipes and quotes percent-encoded."""
    return quote(url, safe=":/?#@!$&'*+,;=%-._~")


def _num(v: float) -> str:
    return "inf" if v == float("inf") else "-inf" if v == float("-inf") else f"{v:g}"


def impossible_text(n: ImpossibleCell) -> str:
    return f"{n.name} = {_num(n.value)} (outside [{_num(n.low)}, {_num(n.high)}])"


def computed_text(r: TableRow) -> str:
    if r.verdict is None:
        return "-"
    if r.computed is None:
        text = "cannot be classified"
    else:
        text = r.computed
    if r.toolkit:
        text += f" (toolkit {r.toolkit})"
    if r.method:
        text += f"; method {r.method}"
    return text


def question_text(r: TableRow) -> str:
    if r.question is None:
        return "not stated"
    if r.answering is None:
        return r.question
    return f"{r.question} (answered by {r.answering})"


def unstated_text(r: TableRow) -> str:
    parts = list(r.unstated) + [f"{e} (implied)" for e in r.implied]
    return ", ".join(parts) if parts else "none"


def expected_text(r: TableRow) -> str:
    if r.expected is None:
        return "-"
    return f"{r.expected} ({'matches' if r.matched else 'does not match'})"


def summary_lines(s: Summary) -> list[str]:
    """The summary in words, one fact a line."""
    verdicts = ", ".join(f"{n} {st}" for st, n in s.verdicts.items())
    out = [f"claims: {s.claims}, from {s.sources} distinct source(s)",
           f"state every SCOPE element: {s.state_every_element} of {s.claims}",
           f"commit the self-attribution fallacy: {s.self_attribution}",
           f"report an impossible number: {s.impossible_numbers}",
           f"verdicts: {verdicts}",
           f"expected verdicts: {s.matched} of {s.expected} matched",
           f"re-run: {s.rerun}"]
    if s.not_loading:
        out.append(f"files or claims that do not load: {s.not_loading}")
    return out


def render_table_markdown(table: AuditTable, *, link_base: str | None = None,
                          title: str | None = "Attribution claim audit") -> str:
    """The table as GitHub Markdown, then the summary (module doc)."""
    out = [f"# {md_cell(title)}", ""] if title else []
    out += ["| claim | source | question | computed contract | unstated | fallacies | impossible numbers "
            "| verdict | expected | re-run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.rows:
        where = f"{r.path}:{r.line}" if r.line else r.path
        name = md_cell(r.name or "(does not load)")
        if link_base is not None:
            claim = f"[{name}]({link_base}{quote(r.path)}#L{r.line}) ({md_cell(where)})"
        else:
            claim = f"{name} ({md_cell(where)})"
        src = md_cell(r.citation) if r.citation else "not stated"
        url = _web(r.url)
        if url is not None:
            src += f" [link]({_md_url(url)})"
        if r.states is not None:
            src += f" — {r.states.kind}: “{md_cell(r.states.text)}”"
        verdict = f"**{r.verdict}**" if r.verdict else "does not load: " + md_cell(
            r.errors[0].splitlines()[0] if r.errors else "")
        cells = [claim, src, md_cell(question_text(r)), md_cell(computed_text(r)), md_cell(unstated_text(r)),
                 md_cell(", ".join(r.fallacies) or "none"),
                 md_cell("; ".join(impossible_text(n) for n in r.impossible) or "none"), verdict,
                 md_cell(expected_text(r)), md_cell(r.rerun_note)]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "**Summary**", ""] + [f"- {md_cell(x)}" for x in summary_lines(table.summary)]
    return "\n".join(out) + "\n"


def render_table_html(table: AuditTable, title: str = "Attribution claim audit") -> str:
    """The table as one self-contained HTML page (module doc)."""
    rows = []
    for r in table.rows:
        rows.append({
            "name": r.name or "(does not load)", "where": f"{r.path}:{r.line}" if r.line else r.path,
            "href": quote(r.path) + (f"#L{r.line}" if r.line else ""), "citation": r.citation or "not stated",
            "url": _web(r.url), "states": r.states, "question": question_text(r), "computed": computed_text(r),
            "unstated": unstated_text(r), "fallacies": ", ".join(r.fallacies) or "none",
            "impossible": [impossible_text(n) for n in r.impossible], "verdict": r.verdict,
            "expected": expected_text(r), "passed": r.passed, "rerun": r.rerun_note,
            "error": r.errors[0].splitlines()[0] if r.errors else None,
        })
    return str(html_templates("scopecheck.audit").get_template("table.html.j2").render(
        title=title, rows=rows, summary=summary_lines(table.summary)))
