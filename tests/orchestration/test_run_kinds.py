"""`ContractRun.kind`: every producer says what its run is (a single run, a map family, a dataset
run, a run that failed), the fields it carries are the ones that kind has, and the consumers
(expectations, JSON, the typed results) branch on it. The JSON of each kind is checked against
the run it was written from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import scopecheck
from scopecheck.api import DatasetResult, FailedRun, FamilyResult, from_run
from scopecheck.loader import load_text
from scopecheck.orchestration.records import RUN_KINDS, ContractRun, ExampleRun
from scopecheck.orchestration.runner import Runner
from scopecheck.reference import WEIGHTS_DIR
from scopecheck.report.jsonout import run_record
from scopecheck.spec import model as m

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "contracts" / "datasets" / "translate_heldout.jsonl"

HEAD = '''    prompt   "Translate to French: The dog is black."
    output   "Le chien est noir."
'''


def _contract(name: str, model: str = "reference:translate-ar", body: str = HEAD,
              use: str = "prompt_conditioned(target = 2)", expect: str = 'expect top(1) == "dog"') -> str:
    return (f'contract "{name}" {{\n    model    {model}\n{body}\n    use {use}\n\n'
            f"    method occlusion(operator = zero)\n    seed 0\n\n    {expect}\n}}\n")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("kinds")
    (d / "data.jsonl").write_text("\n".join(DATA.read_text().splitlines()[:2]) + "\n")
    broken = d / "broken"
    shutil.copytree(WEIGHTS_DIR / "translate-ar", broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")      # the config and tokenizer read fine
    return d


@pytest.fixture(scope="module")
def runs(folder) -> dict[str, ContractRun]:
    text = "\n".join([
        _contract("single"),
        _contract("family", use="prompt_conditioned(target = each)", expect="expect mass(y) == 0"),
        _contract("dataset", body='    dataset  "data.jsonl"(limit = 2, id = "id")',
                  expect="expect rate(top(1) in truth) >= 0"),
        _contract("broken model", model=json.dumps(str(folder / "broken"))),
        _contract("missing dataset", body='    dataset  "missing.jsonl"(limit = 2, id = "id")',
                  expect="expect rate(top(1) in truth) >= 0"),
    ])
    path = folder / "kinds.scope"
    path.write_text(text)
    runner = Runner(device="cpu")
    out = {}
    for c in load_text(text, str(path)):
        assert isinstance(c, m.Contract)
        cr = runner.run(c)
        for e in c.expects:
            o = runner.evaluate(cr, e)
            if cr.kind != "family":
                cr.outcomes.append(o)
        out[c.name] = cr
    return out


def test_each_producer_says_what_its_run_is(runs):
    assert {n: r.kind for n, r in runs.items()} == {
        "single": "single", "family": "family", "dataset": "dataset", "broken model": "failed",
        "missing dataset": "failed"}
    single, family, dataset = runs["single"], runs["family"], runs["dataset"]
    assert single.result is not None and single.error is None and single.units() == [single]
    assert len(family.members) == len("Le chien est noir .".split()) and family.result is None
    assert all(mr.kind == "single" and mr.result is not None for mr in family.members)
    assert family.units() == family.members
    assert dataset.dataset is not None and [e.id for e in dataset.examples] == \
        [json.loads(r)["id"] for r in DATA.read_text().splitlines()[:2]]
    for name in ("broken model", "missing dataset"):
        failed = runs[name]
        assert failed.result is None and failed.error and not failed.members and failed.dataset is None
        assert failed.units() == [failed]


def test_a_failed_runs_expectations_carry_its_error(runs):
    for name in ("broken model", "missing dataset"):
        (o,) = runs[name].outcomes
        assert not o.passed and o.explanation == runs[name].error


def test_the_json_record_follows_the_kind(runs):
    """Reports write a record per unit (a family's members, else the run itself)."""
    units = {f"{n} {i}": u for n, cr in runs.items() for i, u in enumerate(cr.units())}
    assert sum(n.startswith("family ") for n in units) == len(runs["family"].members)
    for name, cr in units.items():
        rec = run_record(cr)
        assert ("dataset" in rec) is (cr.kind == "dataset"), name
        assert (rec["status"] == "error") is (cr.kind == "failed"), name
        assert (rec["provenance"]["dataset"] is not None) is (cr.kind == "dataset"), name
        if cr.kind == "dataset":
            assert [e["id"] for e in rec["dataset"]["per_example"]] == [e.id for e in cr.examples]
        if cr.kind in ("single", "dataset"):
            assert [t["score"] for t in rec["tokens"]] == pytest.approx([t.score for t in cr.result.tokens],
                                                                          nan_ok=True)


def test_the_typed_result_follows_the_kind(runs):
    assert isinstance(from_run(runs["family"]), FamilyResult)
    assert isinstance(from_run(runs["dataset"]), DatasetResult)
    assert isinstance(from_run(runs["broken model"]), FailedRun)
    assert isinstance(from_run(runs["missing dataset"]), DatasetResult)     # a dataset contract's, failed
    assert isinstance(from_run(runs["single"]), scopecheck.api.ContractResult)


def test_left_out_the_kind_is_read_from_the_fields_given(runs):
    c, r = runs["single"].contract, runs["single"].result
    assert ContractRun(c, result=r).kind == "single"
    assert ContractRun(c, error="boom").kind == "failed"
    assert ContractRun(c).kind == "failed"                                   # never run
    assert ContractRun(c, members=list(runs["family"].members)).kind == "family"
    assert ContractRun(c, examples=[ExampleRun("a", {}, None, 0.0)], dataset={}).kind == "dataset"
    assert ContractRun(c, dataset={}).kind == "dataset"
    with pytest.raises(TypeError, match="a failed ContractRun .* has examples"):
        ContractRun(c, examples=[ExampleRun("a", {}, None, 0.0)])            # examples without a dataset run's facts
    assert set(RUN_KINDS) == {"single", "family", "dataset", "failed"}


@pytest.mark.parametrize("kind, fields, why", [
    ("single", {}, "lacks result"),
    ("single", {"error": "x", "result": "R"}, "has error"),
    ("family", {}, "lacks members"),
    ("family", {"members": "M", "result": "R"}, "has result"),
    ("dataset", {}, "lacks dataset"),
    ("dataset", {"dataset": {}, "members": "M"}, "has members"),
    ("failed", {"result": "R"}, "has result"),
    ("failed", {"examples": "E"}, "has examples"),
    ("other", {}, "is not one of"),
])
def test_fields_that_do_not_fit_the_kind_are_refused(runs, kind, fields, why):
    single = runs["single"]
    given = {"result": single.result, "members": [single], "examples": [ExampleRun("a", {}, None, 0.0)]}
    kw = {k: given.get(k, v) if v in ("R", "M", "E") else v for k, v in fields.items()}
    with pytest.raises(TypeError, match=why):
        ContractRun(single.contract, kind=kind, **kw)
