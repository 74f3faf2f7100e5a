"""Audit reports: run the audit over claim files and render the result.

:func:`audit_paths` audits every claim in the given files and folders (folders searched
recursively for ``*.scope``; contracts in them are skipped) and returns one
:class:`AuditReport` per claim, or per file that does not load. Render them with
:func:`render_text` (terminal; ANSI colour only on a TTY and when ``NO_COLOR`` is unset),
:func:`render_markdown`, :func:`render_html` (one self-contained page) or :func:`to_json`.

Exit status (:func:`exit_code`), for ``scopecheck audit PATH...``:

* a claim **passes** when its verdict is ``supported``, or, if the claim carries an
  ``expect verdict == "..."`` clause, when that clause holds instead: the expected verdict
  documents a known finding (``contracts/audits/`` records published claims that are
  expected to be ``unsupported``), so a matching verdict is a pass and any other verdict
  a failure. The claim's other audit expectations (``fallacy``, ``unstated``) must hold too;
* a claim that does not validate fails, as does a file that does not parse, and so does
  a requested dynamic re-run that could not run (a model that cannot be loaded, say).
  Contracts in the same files are neither audited nor judged (``scopecheck run`` runs them);
* ``exit_code`` is 0 when every report passes, 1 otherwise, and 1 when nothing was
  audited (no claim found under the paths).
"""

from __future__ import annotations

import html
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from scopecheck.audit.dynamic import DynamicAudit, MapView, TokenView, audit_dynamic
from scopecheck.audit.static import ELEMENTS, QUESTION_TEXT, StaticAudit, audit_static, scope_text
from scopecheck.audit.verdict import ExpectOutcome, Verdict, evaluate_expectations, has_verdict_expectation, judge
from scopecheck.loader import check_file, collect
from scopecheck.spec import model as m
from scopecheck.spec.standard import STANDARD


@dataclass(frozen=True)
class AuditReport:
    path: str
    name: str
    line: int
    claim: m.Claim | None
    static: StaticAudit | None
    verdict: Verdict | None
    dynamic: DynamicAudit | None = None
    expectations: tuple[ExpectOutcome, ...] = ()
    errors: tuple[str, ...] = ()        # the file did not load

    @property
    def expects_verdict(self) -> bool:
        return self.claim is not None and has_verdict_expectation(self.claim)

    @property
    def passed(self) -> bool:
        if self.errors or self.verdict is None:
            return False
        if self.dynamic is not None and self.dynamic.errors:
            return False
        if any(not e.passed for e in self.expectations):
            return False
        return self.expects_verdict or self.verdict.supported

    @property
    def outcome(self) -> str:
        """One line: why this report passes or fails."""
        if self.errors:
            return "FAIL: the file does not load"
        assert self.verdict is not None
        failed = [e for e in self.expectations if not e.passed]
        if failed:
            return "FAIL: " + "; ".join(f"{e.text} ({e.explanation})" for e in failed)
        if self.dynamic is not None and self.dynamic.errors:
            return "FAIL: the dynamic re-run did not run"
        if self.expects_verdict:
            return f"PASS: the verdict is {self.verdict.status}, as the claim file expects"
        if self.verdict.supported:
            return "PASS: supported"
        return f"FAIL: {self.verdict.status}"


def audit_claim(claim: m.Claim, *, dynamic: bool = False, device: str = "auto", path: str = "") -> AuditReport:
    static = audit_static(claim)
    verdict = judge(static)
    # without a model and a prompt, audit_dynamic only records why there is no re-run
    dyn = audit_dynamic(claim, device, static=static) if dynamic else None
    return AuditReport(path or claim.span.path, claim.name, claim.span.line, claim, static, verdict, dyn,
                       evaluate_expectations(claim, static, verdict))


def audit_paths(paths: Iterable[str | Path], *, dynamic: bool = False, device: str = "auto") -> list[AuditReport]:
    """Audit every claim under ``paths`` (module doc)."""
    files, errors = collect([str(p) for p in paths])
    reports = [AuditReport(e.span.path, "", 0, None, None, None, errors=(e.render(),)) for e in errors]
    for f in files:
        sf = check_file(f)
        if not sf.documents:  # unreadable, or a syntax error
            if sf.errors:
                reports.append(AuditReport(str(f), "", 0, None, None, None,
                                           errors=tuple(e.render() for e in sf.errors)))
            continue
        for d in sf.documents:
            if not isinstance(d, m.Claim):
                continue  # contracts are run by `scopecheck run`, not audited
            mine = tuple(e.render() for e in sf.errors if d.span.line <= e.span.line <= d.span.end_line)
            if mine:
                reports.append(AuditReport(str(f), d.name, d.span.line, d, None, None, errors=mine))
            else:
                reports.append(audit_claim(d, dynamic=dynamic, device=device, path=str(f)))
    return reports


def exit_code(reports: list[AuditReport]) -> int:
    """0 when every report passes, else 1 (also 1 when there is nothing to audit)."""
    if not reports:
        return 1
    return 0 if all(r.passed for r in reports) else 1


# --------------------------------------------------------------------------- shared pieces


ORIGIN_TEXT = {"stated": "stated", "use": "from `use`", "toolkit": "from the toolkit", "implied": "implied"}


def element_lines(static: StaticAudit) -> list[tuple[str, str, str]]:
    """(element, canonical statement or 'not stated', origin) in SCOPE order."""
    origins = static.origins
    out = []
    for e in ELEMENTS:
        if e in origins:
            text = scope_text(m.Scope(**{e: getattr(static.scope, e)}))
            origin = origins[e]
            if origin == "toolkit" and static.toolkit:
                origin = f"from toolkit {static.toolkit} ({static.toolkit_contract})"
            elif origin == "use":
                origin = ORIGIN_TEXT["use"]
            out.append((e, text, origin))
        else:
            out.append((e, f"{e:<8} (not stated)", "unstated"))
    return out


def _question_line(static: StaticAudit) -> str:
    if static.question is None:
        return "question: not stated"
    q = f"question: {static.question} ({QUESTION_TEXT.get(static.question, '')})"
    if static.answering_kind:
        q += f"; answered by {static.answering_kind}"
    return q


def _computed_line(static: StaticAudit) -> str:
    if static.kind is None:
        return "computed: cannot be classified"
    title = STANDARD[static.kind].title if static.kind in STANDARD else static.kind
    ans = {True: "answers the question", False: "does not answer the question", None: "answer unknown"}[static.answers]
    return f"computed: {static.kind} ({title}); {ans}" + (f"; method {static.method}" if static.method else "")


def _cell(t: TokenView | None) -> tuple[float | None, str]:
    """(score when eligible, shown text) of one token in one map."""
    if t is None:
        return None, "-"
    if t.eligible:
        return t.score, f"{t.score:.3f}"
    return None, "target" if t.target else "fixed" if t.fixed else "-"


def _map_rows(d: DynamicAudit) -> list[tuple[str, str, float | None, str, float | None, str]]:
    """(token, role, own score, own text, answer score, answer text) for non-special tokens."""
    base = d.own or d.answer
    if base is None:
        return []
    rows = []
    for i, t in enumerate(base.tokens):
        if t.role == "special":
            continue
        own = _cell(d.own.tokens[i] if d.own is not None and i < len(d.own.tokens) else None)
        ans = _cell(d.answer.tokens[i] if d.answer is not None and i < len(d.answer.tokens) else None)
        rows.append((t.text, t.role, own[0], own[1], ans[0], ans[1]))
    return rows


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{v:+.3f}"


def _mass_lines(d: DynamicAudit) -> list[str]:
    out = []
    for v in (d.own, d.answer):
        if v is None:
            continue
        what = "own contract" if v.label == "own" else "answering contract"
        out.append(f"{what} ({v.kind}, {v.method}): prompt mass {_f(v.prompt_mass)}, generated-prefix mass "
                   f"{_f(v.prefix_mass)}, top prompt token {v.top_prompt!r}")
    if d.mass_moved is not None:
        out.append(f"mass moved to the prompt: {_signed(d.mass_moved)} (prefix mass {_f(d.own.prefix_mass)} -> "
                   f"{_f(d.answer.prefix_mass)}); Spearman over prompt tokens: {_f(d.spearman_prompt)}")
    if d.same_contract:
        out.append("the computation is the answering contract: one run")
    r = d.reported
    if r is not None:
        out.append(f"reported map vs own map: Spearman {_f(r.spearman_own)}, vs answering map: "
                   f"{_f(r.spearman_answer)}; same top token: {r.top_agrees_own}; matched {len(r.matched)}"
                   + (f", unmatched {', '.join(repr(u) for u in r.unmatched)}" if r.unmatched else ""))
    if d.faithfulness:
        for label, checks in d.faithfulness.items():
            for chk, fields in checks.items():
                vals = ", ".join(f"{k} {_f(v)}" for k, v in fields.items())
                how = d.protocols.get(label, {}).get(chk)
                what = "own" if label == "own" else "answering"
                out.append(f"faithfulness under the {what} contract: {chk}: {vals}" + (f" ({how})" if how else ""))
    return out


# --------------------------------------------------------------------------- terminal text


class _Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text


STATUS_CODE = {"supported": "32;1", "unsupported": "31;1", "underspecified": "33;1"}


def _bar(v: float | None, scale: float, width: int = 12) -> str:
    if v is None or scale <= 0:
        return ""
    n = int(round(abs(v) / scale * width))
    return ("#" if v >= 0 else "-") * n


def _use_color(color: bool | None, stream: Any) -> bool:
    if color is not None:
        return color
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def render_text(reports: list[AuditReport], *, color: bool | None = None, stream: Any = None) -> str:
    """Terminal report; colour only when ``color`` is True, or None and ``stream`` (stdout) is a TTY."""
    st = _Style(_use_color(color, stream if stream is not None else sys.stdout))
    out: list[str] = []
    for r in reports:
        where = f"{r.path}:{r.line}" if r.line else r.path
        if r.errors:
            out.append(st(f"{where}: does not load", "31;1"))
            out += ["  " + line for e in r.errors for line in e.splitlines()]
            out.append("")
            continue
        assert r.static is not None and r.verdict is not None
        s, v = r.static, r.verdict
        out.append(f"{where}: claim {json.dumps(r.name, ensure_ascii=False)}")
        out.append("  verdict: " + st(v.status.upper(), STATUS_CODE[v.status]))
        if v.reasons:
            out.append("  reasons:")
            out += [f"    - {x}" for x in v.reasons]
        out.append("  " + _question_line(s))
        out.append("  " + _computed_line(s))
        for e, text, origin in element_lines(s):
            line = f"      {text:<44} [{origin}]"
            out.append(st(line, "2") if origin == "unstated" else line)
        if v.unstated or v.implied:
            out.append(f"  unstated: {', '.join(v.unstated) or 'none'}"
                       + (f"; only implied: {', '.join(v.implied)}" if v.implied else ""))
        if s.filled_by_toolkit:
            out.append(f"  filled from {s.toolkit}'s usual contract ({s.toolkit_contract}): "
                       f"{', '.join(s.filled_by_toolkit)}")
        if v.impossible:
            out.append("  impossible numbers:")
            out += [f"    - {x}" for x in v.impossible]
        if v.answering_contract:
            out.append("  the contract that would answer the question:")
            out += ["      " + line for line in v.answering_contract.rstrip().splitlines()]
        if v.notes:
            out.append("  notes:")
            out += [f"    - {x}" for x in v.notes]
        if r.expectations:
            out.append("  expectations:")
            for e in r.expectations:
                mark = st("ok  ", "32") if e.passed else st("FAIL", "31;1")
                out.append(f"    {mark} {e.text}  ({e.explanation})")
        d = r.dynamic
        if d is not None:
            head = f"  re-run on {d.model}" + (f" ({d.device})" if d.device else "") if d.model else "  re-run"
            out.append(head + ":")
            out += [f"    {x}" for x in _mass_lines(d)]
            rows = _map_rows(d)
            if rows:
                scale = max([abs(x) for row in rows for x in (row[2], row[4]) if x is not None] or [0.0])
                out.append(f"    {'token':<14}{'role':<8}{'own':>9} {'':<12} {'answer':>9}")
                for tok, role, own, o, ans, a in rows:
                    out.append(f"    {tok[:13]:<14}{role:<8}{o:>9} {_bar(own, scale):<12} "
                               f"{a:>9} {_bar(ans, scale)}".rstrip())
            out += [f"    note: {x}" for x in d.notes]
            for e in d.errors:
                out.append(st("    error: ", "31;1") + e.splitlines()[0])
                out += ["      " + line for line in e.splitlines()[1:]]
        mark = r.outcome
        out.append("  " + st(mark, "32;1" if r.passed else "31;1"))
        out.append("")
    n_pass = sum(r.passed for r in reports)
    summary = f"{len(reports)} claim report(s): {n_pass} passed, {len(reports) - n_pass} failed"
    out.append(st(summary, "32;1" if reports and n_pass == len(reports) else "31;1"))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(reports: list[AuditReport]) -> str:
    out = ["# Attribution claim audit", ""]
    for r in reports:
        where = f"{r.path}:{r.line}" if r.line else r.path
        if r.errors:
            lines = [x for e in r.errors for x in e.splitlines()]
            out += [f"## `{where}`: does not load", "", "```", *lines, "```", ""]
            continue
        assert r.static is not None and r.verdict is not None
        s, v = r.static, r.verdict
        out += [f"## {r.name}", "", f"`{where}` — **verdict: {v.status}** — {r.outcome}", ""]
        if v.reasons:
            out += ["**Reasons**", ""] + [f"- {x}" for x in v.reasons] + [""]
        out += [f"- {_question_line(s)}", f"- {_computed_line(s)}", ""]
        out += ["| element | computed | origin |", "|---|---|---|"]
        for e, text, origin in element_lines(s):
            stmt = text.split(None, 1)[1] if " " in text else text
            out.append(f"| {e} | `{_md_escape(stmt)}` | {origin} |")
        out.append("")
        if v.unstated or v.implied:
            out += [f"**Unstated:** {', '.join(v.unstated) or 'none'}"
                    + (f"; only implied: {', '.join(v.implied)}" if v.implied else ""), ""]
        if s.filled_by_toolkit:
            out += [f"**Filled from {s.toolkit}'s usual contract ({s.toolkit_contract}):** "
                    f"{', '.join(s.filled_by_toolkit)}", ""]
        if v.impossible:
            out += ["**Impossible numbers**", ""] + [f"- {x}" for x in v.impossible] + [""]
        if v.answering_contract:
            out += ["**The contract that would answer the question**", "", "```", v.answering_contract.rstrip(),
                    "```", ""]
        if v.notes:
            out += ["**Notes**", ""] + [f"- {x}" for x in v.notes] + [""]
        if r.expectations:
            out += ["**Expectations**", ""]
            out += [f"- {'✅' if e.passed else '❌'} `{e.text}` — {e.explanation}" for e in r.expectations] + [""]
        d = r.dynamic
        if d is not None:
            out += [f"**Re-run** on `{d.model}`" + (f" ({d.device})" if d.device else ""), ""]
            out += [f"- {x}" for x in _mass_lines(d)] + [f"- note: {x}" for x in d.notes]
            out += [f"- error: {e.splitlines()[0]}" for e in d.errors] + [""]
            rows = _map_rows(d)
            if rows:
                out += ["| token | role | own | answer |", "|---|---|---:|---:|"]
                for tok, role, _, o, _, a in rows:
                    out.append(f"| `{_md_escape(tok)}` | {role} | {o} | {a} |")
                out.append("")
    n_pass = sum(r.passed for r in reports)
    out.append(f"{len(reports)} claim report(s): {n_pass} passed, {len(reports) - n_pass} failed")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- html


_CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222;line-height:1.45}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em;border-top:1px solid #ddd;padding-top:1em}
.status{font-weight:bold;padding:.1em .5em;border-radius:.3em;color:#fff}
.supported{background:#2e7d32}.unsupported{background:#c62828}.underspecified{background:#ef6c00}
pre{background:#f6f8fa;padding:.7em;overflow-x:auto}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left}
.unstated{color:#999}.tok{display:inline-block;padding:.1em .25em;margin:.1em;border-radius:.2em;
font-family:monospace}.fixed{background:repeating-linear-gradient(45deg,#eee,#eee 3px,#ccc 3px,#ccc 6px);color:#666}
.pass{color:#2e7d32;font-weight:bold}.fail{color:#c62828;font-weight:bold}
"""


def _heat(view: MapView, scale: float) -> str:
    spans = []
    for t in view.tokens:
        if t.role == "special":
            continue
        text = html.escape(t.text)
        if not t.eligible:
            what = "explained (target)" if t.target else "held fixed" if t.fixed else "not eligible"
            spans.append(f'<span class="tok fixed" title="{what}">{text}</span>')
            continue
        a = min(abs(t.score) / scale, 1.0) if scale > 0 else 0.0
        rgb = "220,50,47" if t.score >= 0 else "38,139,210"
        spans.append(f'<span class="tok" style="background:rgba({rgb},{a:.2f})" '
                     f'title="{t.score:.4f}">{text}</span>')
    return "".join(spans)


def render_html(reports: list[AuditReport], title: str = "Attribution claim audit") -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for r in reports:
        where = f"{r.path}:{r.line}" if r.line else r.path
        if r.errors:
            out.append(f"<h2>{e(where)}: does not load</h2><pre>{e(chr(10).join(r.errors))}</pre>")
            continue
        assert r.static is not None and r.verdict is not None
        s, v = r.static, r.verdict
        out.append(f"<h2>{e(r.name)}</h2>")
        cls = "pass" if r.passed else "fail"
        out.append(f'<p><code>{e(where)}</code> <span class="status {v.status}">{v.status}</span> '
                   f'<span class="{cls}">{e(r.outcome)}</span></p>')
        if v.reasons:
            out.append("<h3>Reasons</h3><ul>" + "".join(f"<li>{e(x)}</li>" for x in v.reasons) + "</ul>")
        out.append(f"<p>{e(_question_line(s))}<br>{e(_computed_line(s))}</p>")
        rows = []
        for el, text, origin in element_lines(s):
            stmt = text.split(None, 1)[1] if " " in text else text
            c = ' class="unstated"' if origin == "unstated" else ""
            rows.append(f"<tr{c}><td>{e(el)}</td><td><code>{e(stmt)}</code></td><td>{e(origin)}</td></tr>")
        out.append("<table><tr><th>element</th><th>computed</th><th>origin</th></tr>" + "".join(rows) + "</table>")
        if v.unstated or v.implied:
            out.append(f"<p><b>Unstated:</b> {e(', '.join(v.unstated) or 'none')}"
                       + (f"; only implied: {e(', '.join(v.implied))}" if v.implied else "") + "</p>")
        if s.filled_by_toolkit:
            out.append(f"<p><b>Filled from {e(s.toolkit or '')}'s usual contract ({e(s.toolkit_contract or '')}):"
                       f"</b> {e(', '.join(s.filled_by_toolkit))}</p>")
        if v.impossible:
            out.append("<h3>Impossible numbers</h3><ul>" + "".join(f"<li>{e(x)}</li>" for x in v.impossible)
                       + "</ul>")
        if v.answering_contract:
            out.append(f"<h3>The contract that would answer the question</h3><pre>{e(v.answering_contract)}</pre>")
        if v.notes:
            out.append("<h3>Notes</h3><ul>" + "".join(f"<li>{e(x)}</li>" for x in v.notes) + "</ul>")
        if r.expectations:
            out.append("<h3>Expectations</h3><ul>" + "".join(
                f'<li><span class="{"pass" if x.passed else "fail"}">{"ok" if x.passed else "FAIL"}</span> '
                f"<code>{e(x.text)}</code> — {e(x.explanation)}</li>" for x in r.expectations) + "</ul>")
        d = r.dynamic
        if d is not None:
            out.append(f"<h3>Re-run on <code>{e(d.model or '-')}</code>{' (' + e(d.device) + ')' if d.device else ''}"
                       "</h3><ul>" + "".join(f"<li>{e(x)}</li>" for x in _mass_lines(d))
                       + "".join(f"<li>note: {e(x)}</li>" for x in d.notes)
                       + "".join(f"<li class=\"fail\">error: <pre>{e(x)}</pre></li>" for x in d.errors) + "</ul>")
            views = [x for x in (d.own, d.answer) if x is not None]
            scale = max([abs(t.score) for vw in views for t in vw.tokens] or [0.0])
            for vw in views:
                what = "own contract" if vw.label == "own" else "answering contract"
                out.append(f"<p><b>{e(what)}</b> ({e(vw.kind)}, {e(vw.method)})<br>{_heat(vw, scale)}</p>"
                           f"<details><summary>contract</summary><pre>{e(vw.contract_text)}</pre></details>")
    n_pass = sum(r.passed for r in reports)
    out.append(f"<p>{len(reports)} claim report(s): {n_pass} passed, {len(reports) - n_pass} failed</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- json


def _view_json(v: MapView | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {"kind": v.kind, "contract": v.contract_text, "method": v.method, "prompt_mass": v.prompt_mass,
            "prefix_mass": v.prefix_mass, "top_prompt": v.top_prompt, "score_input": v.score_input,
            "tokens": [t.__dict__ for t in v.tokens]}


def to_json(report: AuditReport) -> dict[str, Any]:
    """A JSON-ready dict of one report."""
    out: dict[str, Any] = {"path": report.path, "line": report.line, "name": report.name,
                           "passed": report.passed, "outcome": report.outcome, "errors": list(report.errors)}
    if report.static is not None and report.verdict is not None:
        s, v = report.static, report.verdict
        out.update({
            "verdict": v.status, "reasons": list(v.reasons), "unstated": list(v.unstated),
            "implied": list(v.implied), "fallacy": v.fallacy,
            "impossible": [{"name": n.name, "value": n.value, "low": n.low, "high": n.high, "why": n.why}
                           for n in s.impossible],
            "question": s.question, "kind": s.kind, "answering_kind": s.answering_kind, "answers": s.answers,
            "answering_contract": s.answering_text, "origin": s.origins, "toolkit": s.toolkit,
            "filled_by_toolkit": list(s.filled_by_toolkit), "method": s.method, "notes": list(v.notes),
            "expectations": [{"text": e.text, "line": e.line, "passed": e.passed, "explanation": e.explanation}
                             for e in report.expectations],
        })
    d = report.dynamic
    if d is not None:
        out["dynamic"] = {"model": d.model, "device": d.device, "own": _view_json(d.own),
                          "answer": _view_json(d.answer), "same_contract": d.same_contract,
                          "mass_moved": d.mass_moved, "spearman_prompt": d.spearman_prompt,
                          "reported": None if d.reported is None else {
                              "matched": [list(x) for x in d.reported.matched],
                              "unmatched": list(d.reported.unmatched), "spearman_own": d.reported.spearman_own,
                              "spearman_answer": d.reported.spearman_answer,
                              "top_agrees_own": d.reported.top_agrees_own},
                          "faithfulness": d.faithfulness, "protocols": d.protocols, "notes": list(d.notes),
                          "errors": list(d.errors)}
    return out
