"""Maps from elsewhere, checked under a contract (issue 25 item 1): ``method external(map = ...)``
and ``scopecheck.check_map``. The reference map is scopecheck's own, serialized to the published
format and read back; every number compared is recomputed through the file route."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

import scopecheck
from scopecheck.checks.registry import run_check
from scopecheck.engine.methods.external import map_schema
from scopecheck.loader import load_file
from scopecheck.orchestration.runner import Runner
from scopecheck.orchestration.settings import RunSettings

PROMPT = "Translate to French: The dog is black."
OUTPUT = "Le chien est noir."
EXPECTS = ("    expect deletion(operator = pad).aopc > random.aopc\n"
           "    expect deletion(operator = pad).aopc > 0.25\n"
           '    expect top(1) == x["black"]\n'
           "    expect eligibility\n")


def _text(method: str, kind: str = "prompt_conditioned", expects: str = EXPECTS) -> str:
    return (f'contract "noir" {{\n    model reference:translate-ar\n    prompt {json.dumps(PROMPT)}\n'
            f'    output {json.dumps(OUTPUT)}\n    use {kind}(target = "noir")\n    method {method}\n'
            f"    seed 0\n{expects}}}\n")


def _write(folder: Path, method: str, **kw: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "noir.scope"
    p.write_text(_text(method, **kw), encoding="utf-8")
    return p


def _entries(result) -> list[dict]:
    return [{"position": t.position, "text": t.text, "score": t.score} for t in result.tokens]


def _run(path: Path, **settings):
    (doc,) = load_file(path)
    runner = Runner(RunSettings(device="cpu", **settings))
    cr = runner.run(doc)
    return cr, [runner.evaluate(cr, ex) for ex in doc.expects]


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """scopecheck's own occlusion map of the contract, with its expectation outcomes."""
    folder = tmp_path_factory.mktemp("own")
    cr, outcomes = _run(_write(folder, "occlusion(operator = pad)"))
    assert cr.result is not None, cr.error
    return cr, outcomes


def _map_contract(tmp_path: Path, entries, name: str = "maps/noir.json", **kw) -> Path:
    f = tmp_path / name
    f.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".csv"):
        with f.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["position", "text", "score"])
            for e in entries:
                w.writerow([e["position"], e["text"], repr(e["score"])])
    else:
        f.write_text(json.dumps({"tokens": entries, "source": "scopecheck occlusion"}), encoding="utf-8")
    return _write(tmp_path, f'external(map = "{name}")', **kw)


def _same_checks(a, b) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key].fields == b[key].fields, key


@pytest.mark.parametrize("name", ["maps/noir.json", "maps/noir.csv"])
def test_own_map_read_back_gives_identical_checks_and_outcomes(tmp_path, own, name):
    cr0, out0 = own
    jsonschema.validate({"tokens": _entries(cr0.result)}, map_schema())
    cr, out = _run(_map_contract(tmp_path, _entries(cr0.result), name))
    assert cr.result is not None, cr.error
    assert cr.result.method == "external"
    assert cr.result.scores == cr0.result.scores
    _same_checks(cr0.checks, cr.checks)                    # deletion aopc and its random baseline
    assert "random:deletion(operator = pad)" in cr.checks
    assert [(o.text, o.passed, o.left, o.right) for o in out] == [(o.text, o.passed, o.left, o.right) for o in out0]
    assert [o.explanation for o in out] == [o.explanation for o in out0]


def test_check_map_with_numpy_equals_the_file_route(tmp_path, own):
    cr0, _ = own
    cr, _ = _run(_map_contract(tmp_path, _entries(cr0.result)))
    text = _text("occlusion", expects="")
    full = np.asarray(cr0.result.scores)
    eligible = full[[t.position for t in cr0.result.tokens if t.eligible]]
    for scores in (full, eligible, torch.tensor(full), list(full)):
        r = scopecheck.check_map(text, scores, device="cpu")
        assert r.method == "external" and r.scores == cr.result.scores
        for name, params in (("deletion", {"operator": "pad"}), ("eligibility", {})):
            assert run_check(name, r, params).fields == run_check(name, cr.result, params).fields
    assert "check_map" in scopecheck.__all__


def test_one_token_too_many_is_a_positioned_error_naming_both_counts(tmp_path, own):
    entries = _entries(own[0].result)
    L = len(entries)
    extra = [*entries, {"position": L, "text": "!", "score": 0.0}]
    path = _map_contract(tmp_path, extra)
    cr, _ = _run(path)
    assert cr.result is None
    method_line = path.read_text().splitlines().index('    method external(map = "maps/noir.json")') + 1
    assert f"noir.scope:{method_line}:" in cr.error and "[map]" in cr.error
    assert f"has {L + 1} entries" in cr.error and f"has {L} tokens" in cr.error
    assert "the contract's tokenization" in cr.error and "the map's" in cr.error


def test_a_token_text_mismatch_names_both_tokenizations(tmp_path, own):
    entries = _entries(own[0].result)
    k = next(i for i, e in enumerate(entries) if e["text"].strip() == "black")
    entries[k] = {**entries[k], "text": "white"}
    cr, _ = _run(_map_contract(tmp_path, entries))
    assert cr.result is None and "'white' in the map" in cr.error and "black" in cr.error


def test_a_map_on_the_held_fixed_prefix_is_refused_as_a_local_next_token_map(tmp_path, own):
    r0 = own[0].result
    entries = _entries(r0)
    prefix = [t.position for t in r0.tokens if t.role == "output" and t.fixed]
    assert prefix
    entries[prefix[0]] = {**entries[prefix[0]], "score": 0.5}
    cr, _ = _run(_map_contract(tmp_path, entries))
    assert cr.result is None
    assert "held-fixed prefix y[<" in cr.error and "local next-token question, not this contract's" in cr.error
    # the same map with the prefix zeroed is this contract's map
    entries[prefix[0]] = {**entries[prefix[0]], "score": 0.0}
    cr, _ = _run(_map_contract(tmp_path, entries))
    assert cr.result is not None, cr.error


def test_a_map_file_outside_the_contract_folder_is_refused(tmp_path, own):
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(_entries(own[0].result)), encoding="utf-8")
    path = _write(tmp_path / "c", 'external(map = "../elsewhere.json")')
    cr, _ = _run(path)
    assert cr.result is None and "outside the contract's folder" in cr.error and "--allow-outside-data" in cr.error
    cr, _ = _run(path, allow_outside_data=True)
    assert cr.result is not None, cr.error


def test_a_malformed_map_is_a_schema_error_naming_the_file(tmp_path, own):
    entries = _entries(own[0].result)
    entries[2] = {**entries[2], "score": "high"}
    cr, _ = _run(_map_contract(tmp_path, entries))
    assert cr.result is None and "noir.json" in cr.error and "tokens[2].score" in cr.error
    cr, _ = _run(_map_contract(tmp_path, entries, "maps/noir.csv"))
    assert cr.result is None and "noir.csv:4:" in cr.error        # header is line 1, entries[2] line 4


@pytest.mark.parametrize("check", ["completeness(tolerance = 0.001)", "max_sensitivity(samples = 1)",
                                   "randomization"])
def test_checks_that_need_the_method_are_refused_with_the_reason(tmp_path, own, check):
    path = _map_contract(tmp_path, _entries(own[0].result), expects=f"    expect {check}\n")
    cr, (outcome,) = _run(path)
    assert cr.result is not None, cr.error
    name = check.split("(")[0]
    assert not outcome.passed
    assert f"check `{name}` cannot run on a map read from a file" in outcome.explanation
    assert "noir.scope:8:" in outcome.explanation
    assert ("baseline" if name == "completeness" else "cannot be recomputed") in outcome.explanation
