"""The audit as a table: one row per claim, and a summary over them.

:func:`build_table` turns the :class:`~scopecheck.audit.render.AuditReport` list that
:func:`~scopecheck.audit.render.audit_paths` returns into an :class:`AuditTable`. Nothing is
re-judged here: every cell is read from the report's static audit, its verdict, its expectation
outcomes and its dynamic re-run (or the reason there is none). A row holds

* the **source**: the short citation "Authors (year), title, locator" and its URL (a text
  ``source "..."`` is its own citation), and what the source states (``states quote|paraphrase``);
* the **question** the claim's text answers, and the **computed contract** (the contract kind
  the static audit derives, with the toolkit that filled it, if any);
* the **unstated** SCOPE elements (a process only implied by the notation listed as such), the
  **fallacies** found (the self-attribution fallacy, another contract mismatch), the
  **impossible** reported numbers (``metric = value`` outside ``[low, high]``);
* the **verdict**, the verdict the claim file **expects** (``expect verdict == "..."``) and
  whether they match;
* the **re-run**: whether the claim was re-run (``--dynamic``) and, when not, why.

The :class:`Summary` counts claims, distinct sources, claims that state every SCOPE element
(each element stated in the claim or given by a ``use`` standard contract, none filled from a
toolkit's convention or only implied), claims that commit the self-attribution fallacy, claims
that report an impossible number, and each verdict. Files that do not load are rows with
their errors and no verdict, counted apart.

:func:`table_json` is the JSON document (``table.schema.json`` in this package, draft 2020-12);
the markdown and HTML renderings are in :mod:`scopecheck.audit.table_render`.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from scopecheck.audit.dynamic import rerun_problem
from scopecheck.audit.render import AuditReport
from scopecheck.audit.static import ELEMENTS, claim_model
from scopecheck.audit.verdict import STATUSES
from scopecheck.dsl.format import fmt_model
from scopecheck.spec import model as m
from scopecheck.spec.standard import STANDARD

__all__ = ["AuditTable", "ImpossibleCell", "Summary", "TABLE_SCHEMA_FILE", "TableRow", "build_table",
           "expected_verdict", "rerun_cell", "source_key", "states_every_element", "table_json", "table_schema"]

TABLE_SCHEMA_FILE = "table.schema.json"
SCHEMA_ID = "https://scopecheck.dev/schema/audit-table.schema.json"

#: the fallacy names a row can carry
SELF_ATTRIBUTION = "self-attribution"
CONTRACT_MISMATCH = "contract mismatch"


@dataclass(frozen=True)
class ImpossibleCell:
    name: str
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class TableRow:
    path: str                           # the claim file, as given or relative to the table's base
    line: int
    name: str
    citation: str | None                # "Authors (year), title, locator", or the text citation
    url: str | None
    publication: m.Source | None        # the structured source block, when the claim has one
    states: m.Statement | None
    question: str | None
    computed: str | None                # contract kind the audit derives ("local_next_token"), None: unclassified
    computed_title: str | None
    toolkit: str | None                 # the toolkit that filled elements (None: none did)
    method: str | None
    answering: str | None               # contract kind that answers the question
    answers: bool | None
    unstated: tuple[str, ...]
    implied: tuple[str, ...]            # not stated, only implied by the notation
    fallacies: tuple[str, ...]          # SELF_ATTRIBUTION and/or CONTRACT_MISMATCH
    mismatch: str | None                # the audit's sentence on the mismatch
    impossible: tuple[ImpossibleCell, ...]
    verdict: str | None                 # None: the file or claim does not load
    expected: str | None                # the verdict the claim file expects
    matched: bool | None                # verdict == expected (None: no expectation)
    passed: bool                        # the report's pass/fail (every expectation, a dynamic error)
    every_element_stated: bool
    rerun: bool                         # re-run with --dynamic (own or answering contract ran)
    rerun_note: str                     # what the re-run did, or why there is none
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Summary:
    claims: int                         # rows with a verdict
    sources: int                        # distinct sources among them (source_key; rows without one not counted)
    state_every_element: int
    self_attribution: int
    impossible_numbers: int
    verdicts: dict[str, int]
    expected: int                       # claims that carry an expected verdict
    matched: int                        # ... and whose verdict matches it
    rerun: int
    not_loading: int                    # rows whose file or claim does not load


@dataclass(frozen=True)
class AuditTable:
    rows: tuple[TableRow, ...]
    summary: Summary
    dynamic: bool                       # whether re-runs were requested


# --------------------------------------------------------------------------- cells


def expected_verdict(claim: m.Claim) -> str | None:
    """The verdict a claim's ``expect verdict == "..."`` names (either side), or None."""
    for ex in claim.expects:
        if ex.op != "==":
            continue
        for a, b in ((ex.left, ex.right), (ex.right, ex.left)):
            if isinstance(a, m.Call) and a.name == "verdict" and not a.called and not a.fields and \
                    isinstance(b, m.Text):
                return b.value
    return None


def states_every_element(report: AuditReport) -> bool:
    """Every SCOPE element stated by the claim or given by its ``use`` standard contract."""
    if report.static is None:
        return False
    origins = report.static.origins
    return all(origins.get(e) in ("stated", "use") for e in ELEMENTS)


def _model_text(claim: m.Claim) -> str | None:
    ref = claim_model(claim)
    return None if ref is None else fmt_model(ref)


def rerun_cell(report: AuditReport, dynamic: bool) -> tuple[bool, str]:
    """(re-run?, what it did or why not). Without ``--dynamic`` it says whether one could run."""
    claim = report.claim
    if claim is None:
        return False, "not re-run: the claim does not load"
    d = report.dynamic
    if d is None:
        problem = rerun_problem(claim)
        if problem is not None:
            return False, f"not re-run: {problem}"
        return False, f"not re-run: static audit only (--dynamic re-runs it on {_model_text(claim)})"
    ran = d.own is not None or d.answer is not None
    if ran:
        parts = [f"re-run on {d.model}" + (f" ({d.device})" if d.device else "")]
        labels = [w for w, v in (("own contract", d.own), ("answering contract", d.answer)) if v is not None]
        parts.append(" and ".join(labels))
        if d.mass_moved is not None:
            parts.append(f"prompt mass moved {d.mass_moved:+.3f}")
        if d.errors:
            parts.append(f"{len(d.errors)} run(s) failed")
        return True, "; ".join(parts)
    if d.errors:
        first = d.errors[0].splitlines()[0]
        return False, f"not re-run: the re-run failed ({first})"
    if d.skipped:
        return False, f"not re-run: {d.skipped}"
    why = next((n for n in d.notes if n.startswith("no ")), None)
    return False, f"not re-run: {why}" if why else "not re-run"


def _row(report: AuditReport, dynamic: bool, base: Path | None) -> TableRow:
    path = report.path
    if base is not None and path:
        try:
            path = Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()
        except ValueError:      # another drive (Windows): keep the path as given
            pass
    claim = report.claim
    src = claim.source if claim is not None else None
    publication = src if isinstance(src, m.Source) else None
    citation = publication.citation() if publication is not None else src if isinstance(src, str) else None
    url = publication.url if publication is not None else None
    rerun, note = rerun_cell(report, dynamic)
    s, v = report.static, report.verdict
    expected = expected_verdict(claim) if claim is not None else None
    if s is None or v is None:
        return TableRow(path, report.line, report.name, citation, url, publication,
                        claim.states if claim is not None else None, claim.question if claim is not None else None,
                        None, None, None, None, None, None, (), (), (), None, (), None, expected, None,
                        report.passed, False, rerun, note, report.errors)
    fallacies = ((SELF_ATTRIBUTION,) if s.fallacy else ()) + (
        (CONTRACT_MISMATCH,) if s.mismatch is not None and not s.fallacy else ())
    filled = s.filled_by_toolkit
    return TableRow(
        path, report.line, report.name, citation, url, publication, claim.states if claim is not None else None,
        s.question, s.kind, STANDARD[s.kind].title if s.kind in STANDARD else None,
        s.toolkit if filled else None, s.method, s.answering_kind, s.answers, v.unstated, v.implied, fallacies,
        s.mismatch, tuple(ImpossibleCell(n.name, n.value, n.low, n.high) for n in s.impossible), v.status,
        expected, None if expected is None else expected == v.status, report.passed,
        states_every_element(report), rerun, note, report.errors)


def source_key(r: TableRow) -> tuple[str, ...] | None:
    """What makes two rows' sources one source: a publication's authors, title and year (not the
    locator: two figures of one paper are one source), or a text citation as written."""
    if r.publication is not None:
        p = r.publication
        return (" ".join(p.authors.lower().split()), " ".join(p.title.lower().split()), str(p.year))
    return None if r.citation is None else (r.citation,)


def build_table(reports: list[AuditReport], *, dynamic: bool = False, base: str | Path | None = None) -> AuditTable:
    """The table of ``reports`` (module doc); paths relative to ``base`` when given."""
    b = Path(base) if base is not None else None
    rows = tuple(_row(r, dynamic, b) for r in reports)
    judged = [r for r in rows if r.verdict is not None]
    verdicts = {st: sum(r.verdict == st for r in judged) for st in STATUSES}
    summary = Summary(
        claims=len(judged),
        sources=len({k for k in map(source_key, judged) if k is not None}),
        state_every_element=sum(r.every_element_stated for r in judged),
        self_attribution=sum(SELF_ATTRIBUTION in r.fallacies for r in judged),
        impossible_numbers=sum(bool(r.impossible) for r in judged),
        verdicts=verdicts,
        expected=sum(r.expected is not None for r in judged),
        matched=sum(bool(r.matched) for r in judged),
        rerun=sum(r.rerun for r in judged),
        not_loading=len(rows) - len(judged),
    )
    return AuditTable(rows, summary, dynamic)


# --------------------------------------------------------------------------- JSON


def _num(v: float) -> float | str:
    """A bound as JSON: a finite number, or "inf" / "-inf" (strict JSON has no infinity)."""
    if v == float("inf"):
        return "inf"
    if v == float("-inf"):
        return "-inf"
    return v


def _row_json(r: TableRow) -> dict[str, Any]:
    pub = r.publication
    return {
        "path": r.path, "line": r.line, "name": r.name,
        "source": {"citation": r.citation, "url": r.url,
                   "publication": None if pub is None else {
                       "authors": pub.authors, "title": pub.title, "venue": pub.venue, "year": pub.year,
                       "locator": pub.locator, "url": pub.url},
                   "states": None if r.states is None else {"kind": r.states.kind, "text": r.states.text}},
        "question": r.question,
        "computed": {"kind": r.computed, "title": r.computed_title, "toolkit": r.toolkit, "method": r.method},
        "answering": r.answering, "answers": r.answers,
        "unstated": list(r.unstated), "implied": list(r.implied),
        "fallacies": list(r.fallacies), "mismatch": r.mismatch,
        "impossible": [{"metric": n.name, "value": _num(n.value), "low": _num(n.low), "high": _num(n.high)}
                       for n in r.impossible],
        "verdict": r.verdict, "expected": r.expected, "matched": r.matched, "passed": r.passed,
        "every_element_stated": r.every_element_stated,
        "rerun": {"done": r.rerun, "note": r.rerun_note},
        "errors": list(r.errors),
    }


def table_json(table: AuditTable) -> dict[str, Any]:
    """The table as one JSON document (validated by :func:`table_schema`)."""
    s = table.summary
    return {
        "$schema": SCHEMA_ID,
        "dynamic": table.dynamic,
        "rows": [_row_json(r) for r in table.rows],
        "summary": {"claims": s.claims, "sources": s.sources, "state_every_element": s.state_every_element,
                    "self_attribution": s.self_attribution, "impossible_numbers": s.impossible_numbers,
                    "verdicts": dict(s.verdicts), "expected": s.expected, "matched": s.matched,
                    "rerun": s.rerun, "not_loading": s.not_loading},
    }


@functools.cache
def _schema_text() -> str:
    return resources.files("scopecheck.audit").joinpath(TABLE_SCHEMA_FILE).read_text(encoding="utf-8")


def table_schema() -> dict[str, Any]:
    """The published JSON Schema of :func:`table_json` (a fresh copy)."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema
