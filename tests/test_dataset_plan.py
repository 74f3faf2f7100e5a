"""A dataset contract's checks compute only what its aggregates read. Each example runs as its
own contract without the aggregates (they are evaluated over all examples), so the fields asked
of its checks come from the dataset contract: `mean(deletion(...).aopc) > mean(random.aopc)`
plans the curve's steps + 1 rows per example, never the NAOPC bound search (found by
benchmarks/dataset_vs_captum.py: 229 of 235 rows per example were the unused search)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scopecheck.loader import load_text
from scopecheck.orchestration.expect import asked_fields
from scopecheck.orchestration.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "contracts" / "datasets" / "translate_heldout.jsonl"

CONTRACT = '''contract "d" {{
    model    reference:translate-ar
    dataset  "data.jsonl"(limit = 3, id = "id")
    use prompt_conditioned(target = 2)
    method occlusion(operator = zero)
    seed 0
    expect {expect}
}}
'''


def run(tmp_path: Path, expect: str):
    (tmp_path / "data.jsonl").write_text("".join(DATA.read_text().splitlines(keepends=True)[:3]))
    f = tmp_path / "d.scope"
    f.write_text(CONTRACT.format(expect=expect))
    (doc,) = load_text(f.read_text(), str(f))
    runner = Runner(device="cpu", progress=False)
    seen = []
    from scopecheck.orchestration import executors

    real = executors.compute_example

    def spy(runner_, contract, ex, items):
        out = real(runner_, contract, ex, items)
        seen.append(out[0])
        return out

    executors.compute_example = spy
    try:
        cr = runner.run(doc)
    finally:
        executors.compute_example = real
    return doc, cr, seen


@pytest.mark.parametrize("expect, naopc", [
    ("mean(deletion(operator = zero, steps = 4).aopc) > mean(random.aopc)", False),
    ("mean(deletion(operator = zero, steps = 4).naopc) > 0", True),
])
def test_dataset_examples_plan_only_what_the_aggregates_read(tmp_path, expect, naopc):
    doc, cr, subs = run(tmp_path, expect)
    assert cr.error is None, cr.error
    assert len(subs) == 3
    for sub in subs:
        res = sub.checks["deletion(operator = zero, steps = 4)"]
        work = res.extra["work"]
        if naopc:
            assert "naopc" in res.fields and work["planned_rows"] > 4 + 1     # the bound search ran
        else:
            assert work["planned_rows"] == 4 + 1                             # the curve's points only
            assert "naopc" not in res.fields
            assert "random:deletion(operator = zero, steps = 4)" in sub.checks


def test_asked_fields_reads_aggregates():
    (doc,) = load_text(CONTRACT.format(expect="mean(deletion(operator = zero).aopc) > mean(random.aopc)"), "a.scope")
    key = "deletion(operator = zero)"
    assert asked_fields(doc, key) == ("aopc",)
    assert asked_fields(doc, "random:" + key) == ("aopc",)
    assert asked_fields(doc, key, expects=()) is None            # nothing names it: every field
