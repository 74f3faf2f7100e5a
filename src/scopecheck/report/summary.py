"""Summary table of contract runs: contract x method x expectation/check, with the verdict,
the measured value and the threshold it was compared against."""

from __future__ import annotations

import json
from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

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
        from scopecheck.checks.catalog import CHECKS

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
    params = ", ".join(f"{k} = {fmt_number(v)}" for k, v in (m.get("params") or {}).items())
    return f"{m['name']}({params})" if params else str(m["name"])


def rows(runs: Iterable[Any]) -> list[dict[str, Any]]:
    """One row per expectation and per check of each run (one error row for a run that failed)."""
    out: list[dict[str, Any]] = []
    for run in runs:
        rec = run if isinstance(run, dict) else run_record(run)
        base = {"contract": rec["name"], "method": method_text(rec), "operator": rec["method"].get("operator")}
        if rec["error"] is not None:
            first = rec["error"].strip().splitlines()[0] if rec["error"].strip() else "error"
            out.append({**base, "item": "run", "status": "ERROR", "measured": first, "threshold": ""})
        for e in rec["expectations"]:
            thr = ""
            if e["op"] is not None and not (e["measured"] is None and e["threshold"] is None):
                thr = f"{e['op']} {fmt_operand(e['threshold'])}"
            measured = fmt_operand(e["measured"]) if e["op"] is not None else fmt_number(e["measured"])
            out.append({**base, "item": e["text"], "status": "PASS" if e["passed"] else "FAIL",
                        "measured": measured, "threshold": thr, "line": e["line"]})
        for c in rec["checks"]:
            field = _default_field(c)
            measured = ", ".join(f"{k} = {fmt_number(v)}" for k, v in c["fields"].items())
            thr = ""
            if field is not None:
                better = c["better"].get(field, "none")
                thr = f"{field} ∈ {fmt_range(c['ranges'].get(field))}" + (f", {better} is better"
                                                                         if better != "none" else "")
            tol = c["config"].get("tolerance") if isinstance(c["config"], dict) else None
            if tol is not None:
                thr = f"tolerance {fmt_number(tol)}; " + thr
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


def summary_table(runs: Iterable[Any], title: str | None = "scopecheck results") -> Table:
    """A rich Table: contract, method (operator), expectation/check, result, measured, threshold."""
    table = Table(title=title, show_lines=False, header_style="bold")
    table.add_column("contract", no_wrap=True)
    table.add_column("method (operator)", overflow="fold")
    table.add_column("expectation / check", overflow="fold")
    table.add_column("result", no_wrap=True)
    table.add_column("measured", overflow="fold")
    table.add_column("threshold", overflow="fold")
    last = None
    for r in rows(runs):
        same = r["contract"] == last
        last = r["contract"]
        meth = r["method"] + (f" ({r['operator']})" if r["operator"] else "")
        table.add_row("" if same else visible(r["contract"]), "" if same else visible(meth), visible(r["item"]),
                      Text(r["status"], style=_STYLE.get(r["status"], "")), visible(str(r["measured"])),
                      visible(str(r["threshold"])))
    return table


def totals(runs: Iterable[Any]) -> dict[str, int]:
    recs = [r if isinstance(r, dict) else run_record(r) for r in runs]
    exp = [e for rec in recs for e in rec["expectations"]]
    return {"contracts": len(recs), "errors": sum(rec["error"] is not None for rec in recs),
            "passed": sum(e["passed"] for e in exp), "failed": sum(not e["passed"] for e in exp)}


def print_summary(runs: Iterable[Any], console: Console | None = None) -> None:
    """Print the summary table and a totals line."""
    recs = [r if isinstance(r, dict) else run_record(r) for r in runs]
    console = console or Console()
    console.print(summary_table(recs))
    t = totals(recs)
    style = "bold red" if (t["failed"] or t["errors"]) else "bold green"
    console.print(Text(f"{t['contracts']} contract(s): {t['passed']} expectation(s) passed, "
                       f"{t['failed']} failed, {t['errors']} run error(s)", style=style))
