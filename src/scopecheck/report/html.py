"""Self-contained HTML report of contract runs (``index.html``).

Per contract: the whole contract text, the five SCOPE elements with their origin, the
method and every parameter, the baseline/perturbation operator, model, device, dtype and
seed, the frozen output; the map as a colored token heatmap with a legend (held-fixed
tokens hatched gray); the check table (value, range, direction, configuration, verdict);
deletion/insertion curves drawn with matplotlib and embedded as inline SVG data; the
expectations with their verdicts. A dataset contract's section states the dataset contract as
written (titled by its name), the data source and n, every aggregate with its measured value, n
and interval, a per-example table (failing examples first, sortable by clicking a column header)
and a histogram per aggregated numeric quantity (the random baseline's overlaid); the map shown
is one example's, labelled so. No network resources: CSS is inline, images are data
URIs. The page is rendered completely in memory, then written atomically.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from scopecheck.dsl.format import fmt_expectation
from scopecheck.orchestration.examples import argument_key, canonical_text, inner_items
from scopecheck.runtime.files import atomic_write_text
from scopecheck.runtime.templates import html_templates
from scopecheck.report.jsonout import as_run, results_json
from scopecheck.report.summary import config_items, config_text, fmt_number, fmt_operand, fmt_range, method_text, summary_line
from scopecheck.spec import model as m
from scopecheck.spec.text import format_document

POS_RGB = (220, 38, 38)      # positive attribution: red
NEG_RGB = (37, 99, 235)      # negative attribution: blue
LETTERS = (("S", "score", "score"), ("C", "fixed", "held fixed"), ("O", "explain", "output explained"),
           ("P", "process", "process"), ("E", "eligible", "eligible features"))
CURVE_CHECKS = ("deletion", "insertion", "aopc")


def _f(v: Any) -> float:
    if isinstance(v, str):
        return {"inf": math.inf, "-inf": -math.inf}.get(v, math.nan)
    return math.nan if v is None else float(v)


def fmt_score(v: Any) -> str:
    x = _f(v)
    if not math.isfinite(x):
        return str(v)
    if x == 0:
        return "0"
    return f"{x:+.2e}"


def shown(text: str) -> str:
    """Token text for display: whitespace made visible where it would vanish."""
    if text == "":
        return "∅"
    out = text.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "␍")
    return out if out.strip() else out.replace(" ", "␣")


def _shade(s: float, peak: float) -> str:
    """CSS shading of a score: red (+) or blue (−), opacity |s| / peak (at least 0.04), white text when dark."""
    a = 0.0 if peak <= 0 or not math.isfinite(s) else min(1.0, abs(s) / peak)
    rgb = POS_RGB if s >= 0 else NEG_RGB
    style = f"background-color: rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {max(a, 0.04):.3f});"
    return style + " color: #fff;" if a > 0.55 else style


def _token_view(t: dict[str, Any], peak: float) -> dict[str, Any]:
    s = _f(t["score"])
    classes = ["tok", t["role"]]
    style = ""
    if t["eligible"]:
        classes.append("eligible")
        style = _shade(s, peak)
    elif t["fixed"]:
        classes.append("fixed")
    else:
        classes.append("ineligible")
    if t["target"]:
        classes.append("target")
    ref = {"prompt": f"x[{t['index']}]", "output": f"y[{t['index']}]"}.get(t["role"], t["role"])
    marks = [m for m, on in (("eligible (E)", t["eligible"]), ("held fixed", t["fixed"]),
                             ("target (O)", t["target"])) if on]
    title = f"{ref} {t['text']!r}: score {fmt_score(t['score'])}" + (f" — {', '.join(marks)}" if marks else "")
    return {**t, "shown": shown(t["text"]), "text_json": json.dumps(t["text"], ensure_ascii=False), "cls": " ".join(classes), "style": style, "ref": ref,
            "score_text": fmt_score(t["score"]), "title": title, "marks": ", ".join(marks)}


def _word_views(words: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """The word map: each word shaded like a token (by |score| / max |score| over words with
    eligible tokens), with the positions of its tokens."""
    peak = max((abs(_f(w["score"])) for w in words if w["eligible"] != "none" and math.isfinite(_f(w["score"]))),
               default=0.0)
    views = []
    for w in words:
        s = _f(w["score"])
        classes = ["word", "tok", w["role"]]
        style = ""
        if w["eligible"] != "none":
            classes.append("eligible")
            style = _shade(s, peak)
            if w["eligible"] == "partial":
                classes.append("partial")
        else:
            classes.append("fixed" if w["role"] in ("special", "output") else "ineligible")
        if w["target"]:
            classes.append("target")
        pos = w["positions"]
        span = str(pos[0]) if len(pos) == 1 else f"{pos[0]}–{pos[-1]}"
        marks = [m for m, on in (("partly eligible: the sum over its eligible tokens", w["eligible"] == "partial"),
                                 ("target (O)", w["target"])) if on]
        title = (f"{w['text']!r} (tokens {span}): score {fmt_score(w['score'])}, the sum of its tokens' scores"
                 + (f" — {', '.join(marks)}" if marks else ""))
        views.append({**w, "shown": shown(w["text"]), "text_json": json.dumps(w["text"], ensure_ascii=False),
                      "cls": " ".join(classes), "style": style, "span": span, "score_text": fmt_score(w["score"]),
                      "title": title, "marks": ", ".join(marks)})
    return views, peak


def _check_views(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for c in checks:
        fields = []
        for k, v in c["fields"].items():
            fields.append({"name": k, "value": fmt_number(v) if not isinstance(v, str) else v,
                           "range": fmt_range(c["ranges"].get(k)), "better": c["better"].get(k, "none"),
                           "in_range": c["in_range"].get(k, True)})
        rows.append({"call": c["call"], "name": c["name"], "random": c["random"], "fields": fields,
                     "config": config_text(c["config"]),
                     "passed": c["passed"], "note": c["note"], "n_curve": len(c["curve"])})
    return rows


def _curve_plots(checks: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One SVG per check with a curve (deletion/insertion/aopc), its random baseline overlaid."""
    with_curves = [c for c in checks if len(c["curve"]) >= 2 and (c["name"] in CURVE_CHECKS or c["name"] in c["call"])]
    main = [c for c in with_curves if not c["random"] and c["name"] in CURVE_CHECKS]
    if not main:
        return []
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "scopecheck", "svg.fonttype": "path"}):
        return _draw(main, {c["call"]: c for c in with_curves if c["random"]})


def _draw(main: list[dict[str, Any]], randoms: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    plots = []
    for c in main:
        fig = Figure(figsize=(5.0, 3.2), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        ys = [_f(v) for v in c["curve"]]
        xs = [i / (len(ys) - 1) for i in range(len(ys))]
        color = "#dc2626" if c["name"] == "deletion" else "#16a34a" if c["name"] == "insertion" else "#7c3aed"
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.8, color=color, label=f"map ranking ({c['name']})")
        rnd = randoms.get(c["call"])
        if rnd is not None:
            ry = [_f(v) for v in rnd["curve"]]
            rx = [i / (len(ry) - 1) for i in range(len(ry))]
            ax.plot(rx, ry, linestyle="--", linewidth=1.4, color="#6b7280", label="random ranking")
        verb = "inserted" if c["name"] == "insertion" else "perturbed"
        ax.set_xlabel(f"fraction of eligible features {verb}")
        ax.set_ylabel("score S")
        cfg = c["config"] if isinstance(c["config"], dict) else {}
        op = cfg.get("operator")
        ax.set_title(c["call"] if op is None or f"operator = {op}" in c["call"] else f"{c['call']}  [operator {op}]",
                     fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        vals = ", ".join(f"{k} = {fmt_number(v)}" for k, v in c["fields"].items())
        plots.append({"title": c["call"], "uri": f"data:image/svg+xml;base64,{data}",
                      "alt": f"{c['name']} curve of {c['call']}: {vals}", "fields": vals})
    return plots


def _diffusion_view(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded chain (what each stage committed) and, for stage contracts, a per-stage bar chart."""
    d = rec.get("diffusion")
    if not d:
        return None
    chain = d.get("chain") or {}
    settings = [{"key": k, "value": fmt_number(d.get(k))} for k in
                ("sampler", "steps", "length", "blocks", "temperature", "sampler_seed", "chain_mode", "estimator",
                 "samples", "elbo_standard_error", "adapter") if k in d]
    steps = [{"stage": st["stage"], "positions": ", ".join(f"r[{p}]" for p in st["positions"]) or "—",
              "texts": " ".join(st["texts"]) or "(nothing)",
              "logprobs": ", ".join(f"{_f(v):.3f}" for v in st["logprobs"]) or "—"} for st in chain.get("steps", [])]
    plot = None
    stage_toks = [t for t in rec["tokens"] if t["role"] == "stage"]
    if stage_toks:
        import matplotlib
        from matplotlib.figure import Figure

        with matplotlib.rc_context({"svg.hashsalt": "scopecheck", "svg.fonttype": "path"}):
            fig = Figure(figsize=(5.0, 3.0), dpi=100, layout="constrained")
            ax = fig.add_subplot()
            labels = [str(t["index"]) for t in stage_toks]
            vals = [_f(t["score"]) for t in stage_toks]
            ax.bar(labels, vals, color=["#dc2626" if v > 0 else "#2563eb" for v in vals])
            ax.axhline(0, color="#6b7280", linewidth=0.8)
            ax.set_xlabel("stage (runs first on the left)")
            ax.set_ylabel("S(chain) - S(chain; pert(stage))")
            ax.set_title(f"per-stage attribution [{rec['method'].get('operator')}]", fontsize=9)
            buf = io.BytesIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
        text = ", ".join(f"stage {t['index']} = {fmt_score(t['score'])}" for t in stage_toks)
        plot = {"uri": "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
                "alt": f"per-stage attribution: {text}"}
    return {"settings": settings, "steps": steps, "plot": plot}


def _view(rec: dict[str, Any]) -> dict[str, Any]:
    peak = max((abs(_f(t["score"])) for t in rec["tokens"] if t["eligible"] and math.isfinite(_f(t["score"]))),
               default=0.0)
    scope = [{"letter": L, "key": k, "label": label, "text": rec["scope"][k]["text"],
              "origin": rec["scope"][k]["origin"]} for L, k, label in LETTERS]
    params = [{"key": k, "value": v} for k, v in config_items(rec["method"]["params"] or {})]
    word_views, word_peak = _word_views(rec["words"]) if rec.get("words") is not None else ([], 0.0)
    if rec.get("aggregate", "tokens") != "tokens" and "aggregate" not in (rec["method"]["params"] or {}):
        params.append({"key": "aggregate", "value": rec["aggregate"]})
    exps = [{**e, "measured_text": fmt_operand(e["measured"]) if e["op"] else fmt_number(e["measured"]),
             "threshold_text": fmt_operand(e["threshold"]) if e["op"] and e["threshold"] is not None else ""}
            for e in rec["expectations"]]
    return {
        **rec,
        "anchor": "",
        "peak": peak,
        "peak_text": f"{peak:.3e}",
        "scope_rows": scope,
        "params": params,
        "method_text": method_text(rec),
        "token_views": [_token_view(t, peak) for t in rec["tokens"]],
        "word_views": word_views,
        "word_peak_text": f"{word_peak:.3e}",
        "check_views": _check_views(rec["checks"]),
        "plots": _curve_plots(rec["checks"]),
        "diffusion_view": _diffusion_view(rec),
        "exp_views": exps,
        "n_passed": sum(e["passed"] for e in rec["expectations"]),
        "n_failed": sum(not e["passed"] for e in rec["expectations"]),
        "score_input_text": fmt_number(rec["score_input"]),
        "score_baseline_text": fmt_number(rec["score_baseline"]),
        "info_rows": [{"key": k, "value": fmt_number(v)} for k, v in (rec.get("info") or {}).items()],
    }


# --------------------------------------------------------------------------- dataset contracts


def _cell(v: Any) -> tuple[str, str]:
    """A per-example value as (shown text, sort key): booleans yes/no (1/0), numbers compactly."""
    if v is None:
        return "—", ""
    if isinstance(v, bool):
        return ("yes" if v else "no"), ("1" if v else "0")
    if isinstance(v, (int, float)):
        x = _f(v)
        return fmt_number(v), (repr(x) if math.isfinite(x) else "")
    return fmt_number(v), str(v)


def _column_label(key: str, kind: str) -> str:
    """A per-example quantity's header: its canonical text; a random baseline as ``random.<field>``
    with the check it is the baseline of."""
    if kind == "random":
        base, _, fld = key.removeprefix("random:").rpartition(".")
        return f"random.{fld} (of {base})"
    if kind == "plain":
        return key.split(" ", 1)[1] if key.startswith("expect[") and " " in key else key
    return key


def _hist(key: str, xs: list[float], rnd: list[float] | None) -> dict[str, str]:
    """One histogram (inline SVG data URI) of a quantity over the examples, the random baseline's
    distribution overlaid."""
    import numpy as np
    from matplotlib.figure import Figure

    both = xs + (rnd or [])
    edges = np.histogram_bin_edges(np.asarray(both, dtype=float), bins=min(20, max(3, len(both) // 2)))
    fig = Figure(figsize=(5.0, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.hist(xs, bins=edges, color="#7c3aed", alpha=0.75, label=f"map ranking (n = {len(xs)})")
    if rnd:
        ax.hist(rnd, bins=edges, color="#6b7280", alpha=0.45, hatch="//", label=f"random ranking (n = {len(rnd)})")
    ax.axvline(float(np.mean(xs)), color="#7c3aed", linewidth=1.2, linestyle="-")
    if rnd:
        ax.axvline(float(np.mean(rnd)), color="#6b7280", linewidth=1.2, linestyle="--")
    ax.set_xlabel(key)
    ax.set_ylabel("examples")
    ax.set_title(f"distribution of {key} over the examples", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    stats_text = f"n = {len(xs)}, mean {fmt_number(float(np.mean(xs)))}, median {fmt_number(float(np.median(xs)))}"
    if rnd:
        stats_text += (f"; random baseline n = {len(rnd)}, mean {fmt_number(float(np.mean(rnd)))}, "
                       f"median {fmt_number(float(np.median(rnd)))}")
    return {"title": key, "uri": "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
            "alt": f"histogram of {key} over the examples: {stats_text}", "fields": stats_text}


def _finite(vals: Iterable[Any]) -> list[float]:
    return [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v))]


def _aggregate_rows(run: Any, rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Each expectation of the dataset contract: every aggregate side with its measured value, n and
    95% interval (recomputed from the examples, as the expectation was), the verdict, the explanation."""
    from scopecheck.orchestration.dataset import aggregate  # lazy: imports numpy

    contract = run.contract
    outcomes = {(e["line"], e["text"]): e for e in rec["expectations"]}
    rows = []
    for ex in contract.expects:
        text = fmt_expectation(ex)
        out = outcomes.get((ex.span.line, text))
        sides = []
        for s in (ex.left, ex.right):
            if isinstance(s, m.Aggregate):
                side: dict[str, Any] = {"text": canonical_text(s), "value": "—", "n": "—", "ci": "—", "note": ""}
                if run.error is None and run.examples:
                    try:
                        res = aggregate(run, s, ex, contract.seed or 0)
                        fld = s.fields[0] if s.fields else ("p" if s.func == "paired" else "value")
                        lo, hi = res.ci
                        side.update(value=fmt_number(float(res.field_value(fld))), n=str(res.n),
                                    ci=f"[{fmt_number(float(lo))}, {fmt_number(float(hi))}]",
                                    note=res.method + (f"; {res.dropped} missing" if res.dropped else ""))
                    except Exception as exc:  # noqa: BLE001 - a report states what it could not recompute
                        side["note"] = f"not recomputed: {exc}"
                sides.append(side)
            elif s is not None:
                sides.append({"text": canonical_text(s), "value": canonical_text(s), "n": "", "ci": "",
                              "note": "constant"})
        rows.append({"text": text, "line": ex.span.line, "op": ex.op or "", "sides": sides,
                     "passed": bool(out["passed"]) if out is not None else None,
                     "explanation": out["explanation"] if out is not None else "not evaluated"})
    return rows


def _dataset_view(run: Any, rec: dict[str, Any]) -> dict[str, Any]:
    """What a dataset contract's section shows beyond one example's map (see the module docstring)."""
    contract = run.contract
    ds = rec["dataset"]
    items = inner_items(contract)
    # the per-example verdicts: a comparison a rate(...) counts, a plain expectation (must hold on each)
    fail_keys = {it.key for it in items if it.kind == "plain"}
    for ex in contract.expects:
        for s in (ex.left, ex.right):
            if isinstance(s, m.Aggregate) and s.func == "rate":
                fail_keys.update(argument_key(s, a, ex) for a in s.args)
    columns = [{"key": it.key, "label": _column_label(it.key, it.kind), "kind": it.kind} for it in items]
    rows = []
    for i, e in enumerate(run.examples):
        failed_on = [c["label"] for c in columns if c["key"] in fail_keys and e.values.get(c["key"]) is not True]
        failing = bool(e.error) or bool(failed_on)
        cells = [dict(zip(("text", "sort"), _cell(e.values.get(c["key"])))) for c in columns]
        rows.append({"id": e.id, "order": i, "failing": failing, "failed_on": ", ".join(failed_on),
                     "cells": cells, "error": e.error or "", "stored": e.stored})
    rows.sort(key=lambda r: not r["failing"])        # failing first, then dataset order
    plots = []
    by_key = {it.key: it for it in items}
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "scopecheck", "svg.fonttype": "path"}):
        for it in items:
            if it.kind != "call":
                continue
            xs = _finite(e.values.get(it.key) for e in run.examples)
            if not xs:
                continue
            rk = f"random:{it.key}"
            rnd = _finite(e.values.get(rk) for e in run.examples) if rk in by_key else None
            plots.append(_hist(it.key, xs, rnd or None))
    name = contract.name
    example = None
    if rec["tokens"] and rec["name"].startswith(f"{name} [") and rec["name"].endswith("]"):
        example = rec["name"][len(name) + 2:-1]
    facts = [("source", ds.get("source")), ("examples", ds.get("examples")),
             ("computed now", sum(not e.stored for e in run.examples)),
             ("resumed from the store", ds.get("resumed", 0)),
             ("rows that are not examples", len(ds.get("row_errors") or [])),
             ("examples with an error", sum(bool(e.error) for e in run.examples)),
             ("failing examples", sum(r["failing"] for r in rows))]
    if ds.get("store"):
        facts.append(("store", ds["store"]))
    if ds.get("executor"):
        facts.append(("executor", ds["executor"]))
    return {
        "name": name, "contract": format_document(contract),
        "source": {"path": contract.span.path, "line": contract.span.line},
        "ds": {"facts": [{"key": k, "value": fmt_number(v)} for k, v in facts],
               "row_errors": [{"row": r["row"], "id": r.get("id") or "—", "message": r["message"]}
                              for r in ds.get("row_errors") or []],
               "notices": [str(x) for x in ds.get("notices") or []],
               "aggregates": _aggregate_rows(run, rec), "columns": columns, "rows": rows,
               "n_failing": sum(r["failing"] for r in rows), "plots": plots, "example": example},
    }


def render_report(runs: Iterable[Any], title: str = "scopecheck report", problems: Iterable[str] = ()) -> str:
    """The report as one HTML string (nothing is written). Contracts that did not run (invalid, or
    failed while running) are runs with an error and appear with it; ``problems``: rendered errors
    that belong to no contract (a file that cannot be read or parsed), listed under the overview."""
    runs = [as_run(r) for r in runs]
    doc = results_json(runs)
    problems = [str(p) for p in problems]
    views = []
    for run, rec in zip(runs, doc["runs"]):
        v = _view(rec)
        v["ds"] = None
        if rec.get("dataset") is not None and getattr(run, "contract", None) is not None:
            v.update(_dataset_view(run, rec))
        views.append(v)
    seen: dict[str, int] = {}
    for v in views:
        base = "".join(ch if ch.isalnum() else "-" for ch in v["name"]).strip("-").lower() or "contract"
        seen[base] = seen.get(base, 0) + 1
        v["anchor"] = f"c-{base}" + (f"-{seen[base]}" if seen[base] > 1 else "")
    template = html_templates("scopecheck.report").get_template("report.html.j2")
    return template.render(doc=doc, runs=views, title=title, pos_rgb=POS_RGB, neg_rgb=NEG_RGB,
                           totals_line=summary_line(doc["runs"], len(problems)), problems=problems)


def write_report(runs: Iterable[Any], directory: str | os.PathLike[str], *, title: str = "scopecheck report",
                 filename: str = "index.html") -> Path:
    """Render the report and write ``directory/index.html`` atomically; returns its path.

    The page is rendered completely before anything touches the disk, so a failure leaves
    neither a partial ``index.html`` nor a temporary file (an existing report stays as it was).
    Missing folders are created; an ``index.html`` that is not a regular file (a symbolic link, a
    FIFO, a device) is refused with :class:`~scopecheck.runtime.files.DestinationError`."""
    html = render_report(list(runs), title=title)
    return atomic_write_text(Path(directory) / filename, html, make_parents=True)
