"""JSON results: the whole contract per run, valid against the published schema; broken
documents fail; writes are atomic."""

from __future__ import annotations

import copy
import json
import math
import os

import jsonschema
import pytest

from scopecheck.checks.result import CheckResult
from scopecheck.report.jsonout import (ResultsSchemaError, results_json, schema, schema_path, validate_results,
                                       write_json)
from stories_run import run_contract, run_stories, stories_contract

INF = math.inf


def deletion(curve, aopc=0.4, name="deletion") -> CheckResult:
    return CheckResult(name, {"auc": -1.0, "aopc": aopc, "naopc": 0.7},
                       {"auc": (-INF, INF), "aopc": (-INF, INF), "naopc": (0.0, 1.0)},
                       {"auc": "lower", "aopc": "higher", "naopc": "higher"},
                       {"operator": "pad", "protocol": "rescore", "perturb": ("prompt",)}, curve=tuple(curve))


@pytest.fixture(scope="module")
def real_run():
    from scopecheck.orchestration.records import ExpectationOutcome

    cr = run_stories(3)
    cr.checks["deletion(operator = pad)"] = deletion([0.0, -0.5, -0.9, -1.2])
    cr.checks["random:deletion(operator = pad)"] = deletion([0.0, -0.2, -0.5, -1.2], aopc=0.2)
    cr.outcomes.append(ExpectationOutcome("expect deletion(operator = pad).aopc > random.aopc", 12, True, 0.4, 0.2,
                                          "holds"))
    return cr


@pytest.fixture(scope="module")
def error_run():
    return run_contract(stories_contract(3, "/nonexistent/model-dir"), require_success=False)


def test_schema_is_published_package_data():
    path = schema_path()
    assert path.name == "results.schema.json" and path.is_file()
    s = schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"].endswith("results.schema.json")
    jsonschema.Draft202012Validator.check_schema(s)


def test_real_run_document_states_everything_and_validates(real_run, error_run):
    doc = results_json([real_run, error_run])
    validate_results(doc)
    json.dumps(doc, allow_nan=False)  # strict JSON: no NaN/Infinity literals
    assert doc["version"] == "1.0" and doc["summary"]["runs"] == 2 and doc["summary"]["errors"] == 1
    rec = doc["runs"][0]
    r = real_run.result
    assert rec["contract"] == r.contract_text and "seed 3" in rec["contract"] and "expect top(1)" in rec["contract"]
    assert {k: v["text"] for k, v in rec["scope"].items()} == r.scope
    assert {k: v["origin"] for k, v in rec["scope"].items()} == r.origin
    assert rec["method"] == {"name": r.method, "params": {"steps": 8, "baseline": r.operator}, "operator": r.operator}
    assert (rec["model"], rec["device"], rec["dtype"], rec["seed"]) == (r.model, r.device, r.dtype, 3)
    assert rec["output"]["ids"] == list(r.output_ids) and rec["output"]["generated"] is True
    assert [t["text"] for t in rec["tokens"]] == [t.text for t in r.tokens]
    assert [t["score"] for t in rec["tokens"]] == pytest.approx(r.scores)
    assert [(t["fixed"], t["target"], t["eligible"]) for t in rec["tokens"]] == \
           [(t.fixed, t.target, t.eligible) for t in r.tokens]
    checks = {c["call"] + (" (random)" if c["random"] else ""): c for c in rec["checks"]}
    d = checks["deletion(operator = pad)"]
    assert d["curve"] == [0.0, -0.5, -0.9, -1.2] and d["config"]["perturb"] == ["prompt"]
    assert d["ranges"]["auc"] == ["-inf", "inf"] and d["ranges"]["naopc"] == [0.0, 1.0]
    assert d["better"]["aopc"] == "higher" and checks["deletion(operator = pad) (random)"]["fields"]["aopc"] == 0.2
    exps = rec["expectations"]
    assert [e["text"] for e in exps][:2] == [o.text for o in real_run.outcomes][:2]
    assert exps[0]["op"] == "<" and exps[0]["threshold"] == 0.9 and isinstance(exps[0]["measured"], float)
    assert exps[1]["op"] == "==" and isinstance(exps[1]["measured"], list) and exps[1]["threshold"] == "Lily"
    assert rec["status"] == ("passed" if all(o.passed for o in real_run.outcomes) else "failed")
    bad = doc["runs"][1]
    assert bad["status"] == "error" and "nonexistent" in bad["error"] and bad["device"] is None
    assert bad["scope"]["eligible"] == {"text": "x", "origin": "use"} and bad["method"]["name"] == "integrated_gradients"
    assert bad["tokens"] == [] and all(not e["passed"] for e in bad["expectations"])


def test_bare_attribution_result_is_a_run(real_run):
    doc = results_json([real_run.result])
    validate_results(doc)
    assert doc["runs"][0]["status"] == "ran" and doc["runs"][0]["name"] == "stories"


def test_nonfinite_values_are_encoded(real_run):
    from scopecheck.orchestration.records import ContractRun

    cr = ContractRun(real_run.contract, real_run.result,
                     {"deletion(operator = pad)": deletion([0.0, -INF, math.nan], aopc=math.nan)}, [], None, 1.0)
    doc = results_json([cr])
    validate_results(doc)
    c = doc["runs"][0]["checks"][0]
    assert c["curve"] == [0.0, "-inf", "nan"] and c["fields"]["aopc"] == "nan"


@pytest.mark.parametrize("breakage", [
    "drop_model", "bad_score", "bad_version", "error_status", "missing_scope_element", "bad_origin", "extra_key",
    "null_device_without_error", "range_arity",
])
def test_broken_documents_fail(real_run, breakage):
    doc = results_json([real_run])
    validate_results(doc)
    doc = copy.deepcopy(doc)
    run = doc["runs"][0]
    if breakage == "drop_model":
        del run["model"]
    elif breakage == "bad_score":
        run["tokens"][1]["score"] = "large"
    elif breakage == "bad_version":
        doc["version"] = "0.9"
    elif breakage == "error_status":
        run["status"] = "error"  # but error is null
    elif breakage == "missing_scope_element":
        del run["scope"]["eligible"]
    elif breakage == "bad_origin":
        run["scope"]["score"]["origin"] = "guessed"
    elif breakage == "extra_key":
        run["surprise"] = 1
    elif breakage == "null_device_without_error":
        run["device"] = None
    elif breakage == "range_arity":
        run["checks"][0]["ranges"]["auc"] = [0.0]
    with pytest.raises(ResultsSchemaError) as exc:
        validate_results(doc)
    assert "results.schema.json" in str(exc.value)


def test_write_json_is_atomic(tmp_path, real_run, monkeypatch):
    path = tmp_path / "out" / "results.json"
    write_json([real_run], path)
    good = path.read_text(encoding="utf-8")
    validate_results(json.loads(good))
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # a plain file's mode, not mkstemp's 0600

    class Exploding:
        name = "deletion"

        @property
        def fields(self):
            raise RuntimeError("boom while rendering")

    from scopecheck.orchestration.records import ContractRun

    broken = ContractRun(real_run.contract, real_run.result, {"deletion()": Exploding()}, [], None, 0.0)
    with pytest.raises(RuntimeError, match="boom"):
        write_json([real_run, broken], path)
    assert path.read_text(encoding="utf-8") == good
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]

    # a schema violation is refused before anything is written
    import scopecheck.report.jsonout as jo

    real = jo.results_json
    monkeypatch.setattr(jo, "results_json", lambda runs: {**real(runs), "version": "bogus"})
    fresh = tmp_path / "fresh" / "results.json"
    with pytest.raises(ResultsSchemaError):
        write_json([real_run], fresh)
    assert not fresh.exists() and not fresh.parent.exists()
    with pytest.raises(ResultsSchemaError):
        write_json([real_run], path)
    assert path.read_text(encoding="utf-8") == good
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]
