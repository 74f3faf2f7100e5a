"""Summary table of contract runs: contract x method x expectation/check, with the verdict,
the measured value and the threshold it was compared against."""

from __future__ import annotations

import json
from typing import Any, Iterable

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from scopecheck.checks.catalog import CHECKS
from scopecheck.errors import visible
from scopecheck.report.jsonout import run_record


def fmt_number(v: Any) -> str:
    """A measured value, compactly (6 significant digits; token lists as quoted texts)."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_operand(x) if isinstance(x, str) else fmt_number(x) for x in v) + "]"
    return str(v)


def config_items(cfg: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A configuration as readable ``(name, value)`` pairs: unset values (``None``) left out,
    nested settings flattened as ``outer.inner``, values as :func:`fmt_number` writes them (never
    Python's dict or ``None`` syntax)."""
    if not isinstance(cfg, dict):
        return []
    out: list[tuple[str, str]] = []
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if v is None:
            continue
        if isinstance(v, dict):
            out += config_items(v, prefix=f"{name}.")
        else:
            out.append((name, fmt_number(v)))
    return out


def config_text(cfg: Any) -> str:
    """``name = value, ...`` of :func:`config_items`, or "—" when nothing is set."""
    return ", ".join(f"{k} = {v}" for k, v in config_items(cfg)) or "—"


def fmt_range(r: Any) -> str:
    if not r:
        return ""
    lo, hi = r

    def one(x: Any) -> str:
        return {"inf": "∞", "-inf": "−∞", "nan": "nan"}.get(x, fmt_number(x)) if isinstance(x, str) else fmt_number(x)

    return f"[{one(lo)}, {one(hi)}]"


def fmt_operand(v: Any) -> str:
    """A compared value: texts quoted, as in the contract."""
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return fmt_number(v)


def _default_field(c: dict[str, Any]) -> str | None:
    try:
        info = CHECKS.get(c["name"])
        if info is not None and info.default_field in c["fields"]:
            return info.default_field
    except Exception:  # pragma: no cover - the catalog is optional here
        pass
    return next(iter(c["fields"]), None)


def method_text(rec: dict[str, Any]) -> str:
    m = rec["method"]
    if not m.get("name"):
        return "—"
    shown = dict(m.get("params") or {})
    if rec.get("aggregate", "tokens") != "tokens":
        shown.setdefault("aggregate", rec["aggregate"])
    params = ", ".join(f"{k} = {fmt_number(v)}" for k, v in shown.items())
    return f"{m['name']}({params})" if params else str(m["name"])


def _bare_call(text: str) -> str:
    """A check call without an empty argument list: ``completeness()`` and ``completeness`` are one call."""
    return text[:-2] if text.endswith("()") else text


def _check_threshold(c: dict[str, Any]) -> str:
    field = _default_field(c)
    thr = ""
    if field is not None:
        better = c["better"].get(field, "none")
        thr = f"{field} ∈ {fmt_range(c['ranges'].get(field))}" + (f", {better} is better" if better != "none" else "")
    tol = c["config"].get("tolerance") if isinstance(c["config"], dict) else None
    if tol is not None:
        thr = f"tolerance {fmt_number(tol)}; " + thr
    return thr


def rows(runs: Iterable[Any]) -> list[dict[str, Any]]:
    """One row per expectation and per check of each run (one error row for a run that did not run).

    A check that a bare expectation states (``expect completeness``) is one row, the expectation's,
    with the check's threshold: not a second ``check completeness`` row with the same verdict."""
    out: list[dict[str, Any]] = []
    for run in runs:
        rec = run if isinstance(run, dict) else run_record(run)
        base = {"contract": rec["name"], "method": method_text(rec), "operator": rec["method"].get("operator")}
        if rec["error"] is not None:
            first = rec["error"].strip().splitlines()[0] if rec["error"].strip() else "error"
            out.append({**base, "item": "run", "status": "ERROR", "measured": first, "threshold": ""})
        checks = {_bare_call(c["call"]): c for c in rec["checks"] if not c["random"]}
        stated: set[str] = set()
        for e in rec["expectations"]:
            thr = ""
            if e["op"] is not None and not (e["measured"] is None and e["threshold"] is None):
                thr = f"{e['op']} {fmt_operand(e['threshold'])}"
            measured = fmt_operand(e["measured"]) if e["op"] is not None else fmt_number(e["measured"])
            if e["op"] is None:
                call = _bare_call(e["text"].removeprefix("expect ").strip())
                if call in checks:
                    stated.add(call)
                    thr = thr or _check_threshold(checks[call])
            out.append({**base, "item": e["text"], "status": "PASS" if e["passed"] else "FAIL",
                        "measured": measured, "threshold": thr, "line": e["line"]})
        for c in rec["checks"]:
            if not c["random"] and _bare_call(c["call"]) in stated:
                continue
            measured = ", ".join(f"{k} = {fmt_number(v)}" for k, v in c["fields"].items())
            thr = _check_threshold(c)
            status = "—" if c["passed"] is None else ("PASS" if c["passed"] else "FAIL")
            if not all(c["in_range"].values()):
                status = "OUT OF RANGE"
            label = ("random baseline of " if c["random"] else "check ") + c["call"]
            out.append({**base, "item": label, "status": status, "measured": measured, "threshold": thr})
        if rec["error"] is None and not rec["expectations"] and not rec["checks"]:
            out.append({**base, "item": "(no expectations)", "status": "RAN", "measured": "", "threshold": ""})
    return out


_STYLE = {"PASS": "bold green", "FAIL": "bold red", "ERROR": "bold red", "OUT OF RANGE": "bold magenta",
          "RAN": "cyan", "—": "dim"}


#: header, minimum and maximum content width of each column. No column is narrower than the longest
#: word of its header or than a 6-significant-digit number (``-1.23457e-05``); the free-text
#: columns (contract name, method) stop growing at their maximum and wrap, so a long name cannot
#: squeeze the verdicts and numbers. The minimums need 75 terminal columns with borders.
COLUMNS = (
    ("contract", 8, 28),
    ("method (operator)", 10, 34),
    ("expectation / check", 11, None),
    ("result", 6, 12),
    ("measured", 12, None),
    ("threshold", 9, None),
)
#: borders (7) and padding (one space each side of 6 columns) of the table
FRAME = 7 + 2 * len(COLUMNS)


def fit_widths(natural: list[int], width: int) -> list[int]:
    """Content widths of the columns for a table ``width`` characters wide. Each column wants its
    natural width (its widest cell, unwrapped) clamped to its [minimum, maximum]; when that does
    not fit, the room is filled level by level from the minimums (a column stops at what it
    wants), so narrow columns get all they want and only the widest ones wrap. Below 75
    characters the minimums stand (the table is then wider than ``width``)."""
    lo = [c[1] for c in COLUMNS]
    want = [max(a, min(n, b if b is not None else n)) for n, (_, a, b) in zip(natural, COLUMNS)]
    room = width - FRAME
    if sum(want) <= room:
        return want
    out = list(lo)
    while sum(out) < room:
        growing = [i for i in range(len(out)) if out[i] < want[i]]
        if not growing:
            break
        level = min(out[i] for i in growing)
        for i in growing:
            if out[i] == level and sum(out) < room:
                out[i] += 1
    return out


def summary_table(runs: Iterable[Any], title: str | None = "scopecheck results", width: int | None = None) -> Table:
    """A rich Table: contract, method (operator), expectation/check, result, measured, threshold.
    ``width``: the terminal's width, to size the columns for it (:func:`fit_widths`); without it
    each column is kept within its [minimum, maximum] and rich sizes the rest."""
    cells = []
    last = None
    for r in rows(runs):
        same = r["contract"] == last
        last = r["contract"]
        meth = r["method"] + (f" ({r['operator']})" if r["operator"] else "")
        cells.append(("" if same else visible(r["contract"]), "" if same else visible(meth), visible(r["item"]),
                      r["status"], visible(str(r["measured"])), visible(str(r["threshold"]))))
    table = Table(title=title, show_lines=False, header_style="bold")
    if width is not None:
        natural = [max([cell_len(h), *(cell_len(row[i]) for row in cells)]) for i, (h, _, _) in enumerate(COLUMNS)]
        for (header, _, _), w in zip(COLUMNS, fit_widths(natural, width)):
            table.add_column(header, overflow="fold", width=w)
    else:
        for header, lo, hi in COLUMNS:
            table.add_column(header, overflow="fold", min_width=lo, max_width=hi)
    for row in cells:
        table.add_row(*row[:3], Text(row[3], style=_STYLE.get(row[3], "")), *row[4:])
    return table


def totals(runs: Iterable[Any]) -> dict[str, int]:
    """Contracts, those that did not run (``errors``: invalid, or failed while running), and the
    expectations of those that ran, passed and failed. An expectation of a contract that did not
    run is not counted as failed: the contract is counted once, as not run."""
    recs = [r if isinstance(r, dict) else run_record(r) for r in runs]
    exp = [e for rec in recs if rec["error"] is None for e in rec["expectations"]]
    return {"contracts": len(recs), "errors": sum(rec["error"] is not None for rec in recs),
            "passed": sum(e["passed"] for e in exp), "failed": sum(not e["passed"] for e in exp)}


def summary_line(runs: Iterable[Any], other_errors: int = 0) -> str:
    """The one totals line of a run (``scopecheck run`` prints it once, under the summary table):
    ``3 contract(s): 4 expectation(s) passed, 1 failed, 1 did not run``. ``other_errors``:
    problems that belong to no contract (a file that cannot be read or parsed)."""
    t = totals(runs)
    line = (f"{t['contracts']} contract(s): {t['passed']} expectation(s) passed, {t['failed']} failed, "
            f"{t['errors']} did not run")
    if other_errors:
        line += f"; {other_errors} error(s) outside any contract"
    return line


def print_summary(runs: Iterable[Any], console: Console | None = None, other_errors: int = 0) -> dict[str, int]:
    """Print the summary table and the totals line; returns the totals."""
    recs = [r if isinstance(r, dict) else run_record(r) for r in runs]
    console = console or Console()
    console.print(summary_table(recs, width=console.width))
    t = totals(recs)
    style = "bold red" if (t["failed"] or t["errors"] or other_errors) else "bold green"
    console.print(Text(summary_line(recs, other_errors), style=style))
    return t


def work_rows(runs: Iterable[Any]) -> list[dict[str, Any]]:
    """What each run cost, phase by phase: one row per contract run (its wall seconds) and one per
    check it ran (planned, distinct and scored perturbation rows, model calls, seconds: the
    ``extra["work"]`` every planned check records). A check with no record (one that re-runs the
    method, e.g. ``randomization``) shows its row counts as unknown."""
    out: list[dict[str, Any]] = []
    for cr in runs:
        out.append({"contract": cr.contract.name, "phase": "contract (total)", "planned_rows": None,
                    "distinct_rows": None, "scored_rows": None, "model_calls": None, "seconds": cr.seconds})
        for text, res in (cr.checks or {}).items():
            work = (getattr(res, "extra", None) or {}).get("work") or {}
            out.append({"contract": cr.contract.name, "phase": str(text),
                        **{k: work.get(k) for k in ("planned_rows", "distinct_rows", "scored_rows", "model_calls",
                                                     "seconds")}})
    return out


def work_table(runs: Iterable[Any], width: int | None = None) -> Table:
    """:func:`work_rows` as a table (``scopecheck run --verbose``)."""
    t = Table(title="work per phase", title_justify="left", width=width)
    for name, justify in (("contract", "left"), ("phase", "left"), ("planned", "right"), ("distinct", "right"),
                          ("scored", "right"), ("calls", "right"), ("seconds", "right")):
        t.add_column(name, justify=justify, overflow="fold")
    for r in work_rows(runs):
        cells = [visible(r["contract"]), visible(r["phase"])]
        cells += ["—" if r[k] is None else str(r[k]) for k in ("planned_rows", "distinct_rows", "scored_rows",
                                                              "model_calls")]
        cells.append("—" if r["seconds"] is None else f"{r['seconds']:.2f}")
        t.add_row(*cells)
    return t
