"""`scopecheck run --verbose`: the per-phase work table says what each check cost, the same
numbers the planner recorded (and the JSON carries), and for a deletion check the rows its
protocol needs: steps + 1 curve points of one ranking."""

from __future__ import annotations

from scopecheck.cli import main

CONTRACT = '''contract "work" {
    model    reference:translate-ar
    prompt   "Translate to French: The dog is black."
    output   "Le chien est noir."
    use prompt_conditioned(target = "noir")
    method occlusion(operator = zero)
    seed 0
    expect deletion(operator = zero, steps = 4).aopc > 0
}
'''


def test_verbose_prints_each_checks_planned_rows(tmp_path, capsys):
    from scopecheck.report.summary import work_rows
    from scopecheck.orchestration.runner import Runner
    from scopecheck.loader import load_text

    f = tmp_path / "w.scope"
    f.write_text(CONTRACT)
    assert main(["run", str(f), "--verbose", "--report", "-", "--store", "-"]) == 0
    out = capsys.readouterr().out
    assert "work per phase" in out
    (doc,) = load_text(CONTRACT, str(f))
    runner = Runner(device="cpu", progress=False)
    cr = runner.run(doc)
    cr.outcomes = [runner.evaluate(cr, e) for e in doc.expects]
    rows = work_rows([cr])
    assert rows[0]["phase"] == "contract (total)"
    (deletion,) = [r for r in rows if r["phase"].startswith("deletion")]
    assert deletion["planned_rows"] == 4 + 1                   # the curve's steps + 1 points, one ranking
    assert deletion["distinct_rows"] <= deletion["planned_rows"]
    table = out[out.index("work per phase"):]
    line = next(ln for ln in table.splitlines() if "deletion" in ln and "│" in ln)
    cells = [c.strip() for c in line.split("│") if c.strip()]
    assert cells[-5:-1] == [str(deletion[k]) for k in ("planned_rows", "distinct_rows", "scored_rows",
                                                          "model_calls")]
