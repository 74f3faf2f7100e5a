"""Display fixes (issue 10, item 7): the HTML output row keeps its spaces, the summary table is
readable at 80 and 120 columns with long names, a bare expectation and its check are one row,
contracts that did not run are in the HTML with why, and one totals line."""

from __future__ import annotations

import io
import re

from markupsafe import escape
from rich.console import Console

from scopecheck.report.html import render_report
from scopecheck.report.summary import COLUMNS, print_summary, rows

LONG = "a very long contract name about prompt conditioned integrated gradients on the stories260k model"


def _rec(name=LONG, error=None, expectations=(), checks=()):
    return {"name": name, "method": {"name": "integrated_gradients", "params": {"steps": 8, "baseline": "unk"},
                                     "operator": "unk"},
            "error": error, "expectations": list(expectations), "checks": list(checks)}


def _exp(text, op, measured, threshold, passed=True):
    return {"text": text, "op": op, "measured": measured, "threshold": threshold, "passed": passed, "line": 3}


COMPLETENESS = {"call": "completeness()", "name": "completeness", "random": False,
                "fields": {"delta": -0.00149948, "abs_delta": 0.00149948},
                "ranges": {"delta": ["-inf", "inf"], "abs_delta": [0.0, "inf"]},
                "in_range": {"delta": True, "abs_delta": True}, "better": {"delta": "none", "abs_delta": "lower"},
                "config": {"tolerance": 0.001}, "curve": [], "passed": False, "note": "", "extra": {}}


def test_html_output_row_keeps_spaces():
    from scopecheck.engine.run import attribute

    r = attribute(model="reference:translate-ar", prompt="Translate to French: The dog is black.",
                  output="Le chien est noir.", contract="prompt_conditioned", method="occlusion", target="noir")
    assert [t.text for t in r.tokens if t.role == "output"] == ["Le", "chien", "est", "noir", "."]  # no spaces
    page = render_report([r])
    row = re.search(r"<th>output</th><td><span class=\"mono\">([^<]*)</span>", page)
    assert row is not None and row.group(1) == "Le chien est noir."


def test_summary_table_is_readable_at_80_and_120_columns():
    runs = [_rec(expectations=[_exp('expect mass(x["Lily"]) < 0.9', "<", 0.0406444, 0.9),
                               _exp("expect deletion(operator = pad).aopc > random.aopc", ">", -1.23456789e-05,
                                    0.25, passed=False)]),
            _rec(name="x" * 70, error="model not found: /nonexistent/path/to/some/model/dir")]
    for width in (80, 120):
        buf = io.StringIO()
        print_summary(runs, Console(file=buf, width=width, color_system=None))
        out = buf.getvalue()
        lines = out.splitlines()
        assert max(len(ln) for ln in lines) <= width, width           # nothing cut at the edge
        top = next(ln for ln in lines if ln.startswith("┏"))
        inner = [len(seg) - 2 for seg in top[1:-1].split("┳")]        # content width of each column
        for (header, lo, _), w in zip(COLUMNS, inner):
            assert w >= lo and w >= max(len(word) for word in header.split()), (width, header, w)
        for number in ("0.0406444", "-1.23457e-05", "< 0.9", "> 0.25"):  # numbers never broken
            assert any(number in ln for ln in lines), (width, number)
        for status in ("PASS", "FAIL", "ERROR"):
            assert any(f" {status} " in ln for ln in lines)
        cells = " ".join(ln.split("│")[1].strip() for ln in lines if ln.startswith("│"))
        for word in LONG.split():                                     # the long name wrapped, not lost
            assert word in cells, (width, word)


def test_bare_expectation_and_its_check_are_one_row():
    rec = _rec(expectations=[_exp("expect completeness", None, "completeness: delta = -0.00149948", None,
                                  passed=False),
                             _exp("expect completeness.abs_delta < 1", "<", 0.00149948, 1)],
               checks=[COMPLETENESS])
    out = rows([rec])
    items = [r["item"] for r in out]
    assert items == ["expect completeness", "expect completeness.abs_delta < 1"]   # no "check completeness()"
    assert "tolerance 0.001" in out[0]["threshold"] and out[0]["status"] == "FAIL"
    # a check that no bare expectation states keeps its own row
    assert [r["item"] for r in rows([_rec(checks=[COMPLETENESS])])] == ["check completeness()"]


def _two_not_run(tmp_path):
    from stories_run import stories_contract

    bad_model = stories_contract(model_dir="/nonexistent/model-dir").replace('"stories"', '"missing model"')
    invalid = ('contract "invalid target" {\n    model reference:translate-ar\n'
               '    prompt "Translate to French: The dog is black."\n    output "Le chien est noir."\n'
               '    use prompt_conditioned(target = "zzz")\n    method occlusion\n}\n')
    f = tmp_path / "not_run.scope"
    f.write_text(invalid + "\n" + bad_model, encoding="utf-8")
    return f


def test_contracts_that_did_not_run_are_in_the_html(tmp_path, capsys):
    from scopecheck.cli import main

    f = _two_not_run(tmp_path)
    assert main(["run", str(f), "--report", str(tmp_path / "rep"), "--json", str(tmp_path / "r.json"),
                 "--store", "-"]) == 1
    page = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    for name in ("invalid target", "missing model"):
        assert f"contract “{escape(name)}”" in page
    assert page.count('<span class="badge error">error</span>') >= 2
    assert "zzz" in page and "/nonexistent/model-dir" in page           # why each did not run
    import json

    from scopecheck.report.jsonout import validate_results

    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    validate_results(doc)
    assert [r["status"] for r in doc["runs"]] == ["error", "error"]


def test_one_consistent_summary_line(tmp_path, capsys):
    from scopecheck.cli import main

    f = _two_not_run(tmp_path)
    assert main(["run", str(f), "--report", "-", "--store", "-"]) == 1
    cap = capsys.readouterr()
    both = cap.out + cap.err
    totals = [ln for ln in both.splitlines() if "contract(s)" in ln]
    assert totals == ["2 contract(s): 0 expectation(s) passed, 0 failed, 2 did not run"]
