"""Terminal heatmap and summary table: every token with its number, the whole contract, no
escape codes without color."""

from __future__ import annotations

import io
import json
import math
import sys

import pytest
from rich.console import Console

from scopecheck.engine.result import AttributionResult, TokenScore
from scopecheck.report.terminal import bar, fmt_score, heatmap_text
from scopecheck.report.summary import print_summary, summary_table
from stories_run import run_stories, stories_contract



@pytest.fixture(scope="module")
def real_run():
    cr = run_stories()
    return cr


def synthetic(scores=(0.5, -0.25, 0.0, 1.0), name="syn") -> AttributionResult:
    toks = [TokenScore(0, "<s>", "special", 0, False, True, False, 0.0)]
    for i, s in enumerate(scores, 1):
        toks.append(TokenScore(i, f" w{i}", "prompt", i, True, False, False, s))
    n = len(toks)
    toks.append(TokenScore(n, "A", "output", 1, False, True, False, 0.0))
    toks.append(TokenScore(n + 1, "B", "output", 2, False, False, True, 0.0))
    return AttributionResult(
        name=name, path="syn.scope", line=3, contract_text=f'contract "{name}" {{\n}}\n', kind="prompt_conditioned",
        scope={"score": "log p(y[T] | x, y[<T])", "fixed": "y[<T]", "explain": "y[T]", "process": "autoregressive",
               "eligible": "x"},
        origin={k: "stated" for k in ("score", "fixed", "explain", "process", "eligible")},
        method="occlusion", method_params={"operator": "pad", "window": 1}, operator="pad", tokens=tuple(toks),
        output_ids=(11, 12), generated=False, score_input=-1.5, score_baseline=-2.0, info={}, model="reference:toy",
        device="cpu", dtype="float64", seed=7, special=("<s>",))


def test_plain_heatmap_shows_every_token_number_and_contract(real_run):
    r = real_run.result
    out = heatmap_text(r, color=False)
    assert "\x1b" not in out
    # header: the whole contract
    assert 'contract "stories"' in out and r.kind in out
    for letter, el in (("S", "score"), ("C", "fixed"), ("O", "explain"), ("P", "process"), ("E", "eligible")):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"{letter}  {el}"))
        assert r.scope[el] in line and f"({r.origin[el]})" in line
    assert r.method in out and "steps = 8" in out
    assert f"operator     {r.operator}" in out
    assert r.model in out and r.device in out and r.dtype in out and f"seed {r.seed}" in out
    # every token, in order, with its number
    table = out[out.index("pos "):]
    at = 0
    for t in r.tokens:
        row = next(ln for ln in table.splitlines() if ln.split()[:1] == [str(t.position)])
        assert json.dumps(t.text, ensure_ascii=False) in row
        assert fmt_score(t.score) in row
        if t.fixed:
            assert "[fixed]" in row
        if t.target:
            assert "[target]" in row
        if t.role == "special":
            assert "[special]" in row
        idx = table.index(row, at)
        assert idx >= at
        at = idx
    assert any(t.fixed for t in r.tokens) and any(t.target for t in r.tokens)


def test_color_heatmap_uses_styles_and_plain_has_none(real_run):
    colored = heatmap_text(real_run, color=True)  # a ContractRun works too
    assert "\x1b[" in colored
    assert "48;2;" in colored  # truecolor backgrounds shade eligible tokens


def test_auto_color_is_off_when_not_a_tty(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert "\x1b" not in heatmap_text(synthetic())
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b" not in heatmap_text(synthetic())


def test_bars_follow_sign_and_magnitude():
    out = heatmap_text(synthetic((0.5, -0.25, 0.0, 1.0)), color=False)
    rows = {json.loads(ln[ln.index('"'):ln.index('"', ln.index('"') + 1) + 1]).strip(): ln
            for ln in out.splitlines() if '" w' in ln and not ln.startswith("map:")}
    assert "+" * 20 in rows["w4"]
    assert "+" * 10 in rows["w1"] and "+" * 11 not in rows["w1"]
    assert "-" * 5 in rows["w2"] and "-" * 6 not in rows["w2"] and "+" not in rows["w2"].split("e-")[-1]
    assert "+" not in rows["w3"].split('"')[-1] and "-" not in rows["w3"].split('"')[-1]
    assert bar(0.0, 1.0) == "" and bar(1.0, 0.0) == ""
    assert "[special]" in out and "[target]" in out and "[fixed]" in out
    assert "seed 7" in out and "operator     pad" in out and "reference:toy" in out


def test_all_zero_and_nonfinite_scores_do_not_break():
    out = heatmap_text(synthetic((0.0, 0.0)), color=False)
    assert '" w1"' in out
    out = heatmap_text(synthetic((math.nan, 1.0)), color=True)
    assert "nan" in out


def test_run_without_result_is_an_error():
    from scopecheck.loader import load_text
    from scopecheck.orchestration.records import ContractRun

    cr = ContractRun(load_text(stories_contract())[0], error="boom")
    with pytest.raises(ValueError, match="boom"):
        heatmap_text(cr, color=False)


def _checked(cr):
    from scopecheck.checks.result import CheckResult
    from scopecheck.orchestration.records import ContractRun

    checks = {"completeness": CheckResult("completeness", {"delta": 2e-4, "abs_delta": 2e-4},
                                          {"delta": (-math.inf, math.inf), "abs_delta": (0.0, math.inf)},
                                          {"delta": "none", "abs_delta": "lower"}, {"tolerance": 1e-3}, passed=True)}
    return ContractRun(cr.contract, cr.result, checks, list(cr.outcomes), None, cr.seconds)


def test_summary_table_rows(real_run):
    from scopecheck.loader import load_text
    from scopecheck.orchestration.records import ContractRun

    broken = ContractRun(load_text(stories_contract().replace('"stories"', '"broken"'))[0], error="model not found")
    buf = io.StringIO()
    print_summary([_checked(real_run), broken], Console(file=buf, width=220, color_system=None))
    out = buf.getvalue()
    assert "\x1b" not in out
    assert "stories" in out and "broken" in out and "integrated_gradients" in out
    for o in real_run.outcomes:
        assert o.text in out
    assert ("PASS" in out) and ("ERROR" in out) and "model not found" in out
    assert "< 0.9" in out  # threshold of the mass expectation
    assert "check completeness" in out and "tolerance 0.001" in out
    table = summary_table([real_run])
    assert table.row_count == len(real_run.outcomes)
