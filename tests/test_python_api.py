"""The public Python API (``scopecheck.run`` / ``run_file`` / ``load_results``): a typed, frozen
result for every contract kind, its records and data frames, and the results JSON read back."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import scopecheck
from scopecheck.api import (AGGREGATE_COLUMNS, EXAMPLE_COLUMNS, FAMILY_COLUMNS, TOKEN_COLUMNS, ContractResult,
                            DatasetResult, FailedRun, FamilyResult, Results)
from scopecheck.errors import ContractError, MissingExtra, ResultsError

ROOT = Path(__file__).resolve().parents[1]

FAMILY = '''contract "fam" {{
    model    reference:translate-ar
    prompt   "Translate to French: The dogs are black."
    output   "Les chiens sont noirs."
    use prompt_conditioned(target = {target})
    method integrated_gradients(steps = 8, baseline = pad)
    seed 0
    expect mass(y) == 0
    expect rank(x["Translate"]) > 1
}}
'''

DATASET = '''contract "ds" {
    model    reference:translate-ar
    dataset  reference:translate/heldout(limit = 6, seed = 7)
    use prompt_conditioned(target = 2)
    method occlusion(operator = zero)
    seed 0
    expect rate(top(1) in truth) >= 0.5
    expect mean(comprehensiveness(operator = zero, k = 0.2).value) > mean(random.value)
    expect paired(comprehensiveness(operator = zero, k = 0.2).value, random.value).p < 0.5
}
'''


@pytest.fixture(scope="module")
def family() -> FamilyResult:
    r = scopecheck.run(FAMILY.format(target="each"), device="cpu", dtype="float64", expect=True)
    assert isinstance(r, FamilyResult)
    return r


@pytest.fixture(scope="module")
def dataset() -> DatasetResult:
    r = scopecheck.run(DATASET, device="cpu")
    assert isinstance(r, DatasetResult)
    return r


@pytest.fixture(scope="module")
def single() -> ContractResult:
    r = scopecheck.run(FAMILY.format(target=2), device="cpu", dtype="float64", expect=True)
    assert isinstance(r, ContractResult)
    return r


def test_result_types_are_frozen_and_public():
    for name in ("ContractResult", "FamilyResult", "DatasetResult", "ExampleRecord", "AggregateRecord",
                 "FailedRun", "Results"):
        assert name in scopecheck.__all__ and name in scopecheck.api.__all__
        cls = getattr(scopecheck, name)
        assert cls is getattr(scopecheck.api, name)
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    for name in ("run", "run_file", "load_results", "write_results"):
        assert name in scopecheck.__all__ and callable(getattr(scopecheck, name))


def test_importing_scopecheck_imports_neither_torch_nor_pandas():
    code = "import sys, scopecheck; scopecheck.ContractResult; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------ single contracts


def test_single_result_is_the_engines_result_with_its_expectations(single):
    from scopecheck.engine.result import AttributionResult

    assert isinstance(single, AttributionResult)           # every existing use of scopecheck.run still holds
    assert [o.text for o in single.expectations] == ["expect mass(y) == 0", 'expect rank(x["Translate"]) > 1']
    assert single.expectations[0].left == single.mass("y") == 0.0
    # rank: recomputed from the map here (1 + the eligible tokens scoring above "Translate", ties by position)
    elig = [t for t in single.tokens if t.eligible]
    tr = next(t for t in elig if t.text.strip() == "Translate")
    rank = 1 + sum(1 for t in elig if (t.score, -t.position) > (tr.score, -tr.position))
    assert single.expectations[1].left == rank
    assert single.expectations[1].passed == (rank > 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        single.name = "x"  # type: ignore[misc]


def test_single_records_are_the_token_fields(single):
    rows = single.to_records()
    assert len(rows) == len(single.tokens) and all(tuple(r) == TOKEN_COLUMNS for r in rows)
    for row, t in zip(rows, single.tokens):
        assert row == {"contract": "fam", **dataclasses.asdict(t)}
    frame = single.to_pandas()
    assert list(frame.columns) == list(TOKEN_COLUMNS) and frame.shape == (len(single.tokens), len(TOKEN_COLUMNS))
    assert frame["score"].tolist() == [t.score for t in single.tokens]


def test_a_single_contract_error_is_raised():
    with pytest.raises(ContractError, match="does not occur"):
        scopecheck.run(FAMILY.format(target='"chat"'), device="cpu")


def test_several_contracts_need_a_name_or_run_file():
    text = FAMILY.format(target=1) + FAMILY.format(target=2).replace('"fam"', '"fam2"')
    with pytest.raises(ContractError, match="run_file"):
        scopecheck.run(text, device="cpu")
    with pytest.raises(ContractError, match="fam3"):
        scopecheck.run(text, name="fam3", device="cpu")


# ------------------------------------------------------------------ map families


def test_family_members_equal_single_target_runs(family):
    """Member k of the family is the contract with ``target = k`` (float64, 1e-12)."""
    assert len(family.members) == 5                       # Les chiens sont noirs .
    for k, member in enumerate(family.members, 1):
        alone = scopecheck.run(FAMILY.format(target=k), device="cpu", dtype="float64")
        assert isinstance(alone, ContractResult)
        assert member.name == f"fam [y[{k}]]"
        assert [(t.position, t.text, t.eligible, t.fixed, t.target) for t in member.tokens] == \
            [(t.position, t.text, t.eligible, t.fixed, t.target) for t in alone.tokens]
        np.testing.assert_allclose([t.score for t in member.tokens], [t.score for t in alone.tokens],
                                   rtol=0, atol=1e-12)


def test_family_shared_facts_and_records(family):
    first = family.members[0]
    assert (family.name, family.model, family.method, family.seed) == ("fam", first.model, "integrated_gradients", 0)
    assert all(r.output_ids == family.output_ids and r.method_params == family.method_params for r in family.members)
    assert family.passed == all(o.passed for r in family.members for o in r.expectations)
    assert all(len(r.expectations) == 2 for r in family.members)
    rows = family.to_records()
    assert len(rows) == sum(len(r.tokens) for r in family.members)
    assert all(tuple(r) == FAMILY_COLUMNS for r in rows)
    i = 0
    for k, r in enumerate(family.members, 1):
        for t in r.tokens:
            assert rows[i] == {"family": "fam", "member": k, "contract": r.name, **dataclasses.asdict(t)}
            i += 1
    frame = family.to_pandas()
    assert frame.shape == (len(rows), len(FAMILY_COLUMNS))
    assert frame.groupby("member").size().tolist() == [len(r.tokens) for r in family.members]


# ------------------------------------------------------------------ dataset contracts


def test_dataset_examples_and_aggregates(dataset):
    from scipy import stats

    assert len(dataset.examples) == 6 and dataset.error is None
    key = "comprehensiveness(operator = zero, k = 0.2).value"
    comp = np.array([e.values[key] for e in dataset.examples])
    rnd = np.array([e.values[f"random:{key}"] for e in dataset.examples])
    hit = np.array([e.values["top(1) in truth"] for e in dataset.examples], dtype=float)
    by_text = {a.text: a for a in dataset.aggregates}
    assert [a.side for a in dataset.aggregates] == ["left", "left", "right", "left"]
    rate, mean = by_text["rate(top(1) in truth)"].stats, by_text[f"mean({key})"].stats
    assert rate.n == mean.n == 6
    assert rate.value == pytest.approx(hit.mean(), abs=1e-15) and mean.value == pytest.approx(comp.mean(), abs=1e-15)
    # the interval: a 95% percentile bootstrap with the contract's seed, recomputed here
    def boot(x):
        if np.all(x == x[0]):
            return (x[0], x[0])
        res = stats.bootstrap((x,), np.mean, n_resamples=2000, confidence_level=0.95, method="percentile",
                              random_state=np.random.default_rng(0))
        return (res.confidence_interval.low, res.confidence_interval.high)
    assert mean.ci == pytest.approx(boot(comp), abs=1e-12) and rate.ci == pytest.approx(boot(hit), abs=1e-12)
    assert mean.ci[0] <= comp.mean() <= mean.ci[1]
    assert by_text["mean(random.value)"].stats.value == pytest.approx(rnd.mean(), abs=1e-15)
    paired = by_text[f"paired({key}, random.value).p"].stats
    assert paired.n == 6 and paired.value == pytest.approx(stats.wilcoxon(comp - rnd).pvalue, abs=1e-12)
    # the outcomes compare the same numbers
    assert [o.left for o in dataset.expectations] == pytest.approx([rate.value, mean.value, paired.value])


def test_dataset_records_and_frames(dataset):
    rows = dataset.to_records()
    assert len(rows) == 6 and all(tuple(r)[:len(EXAMPLE_COLUMNS)] == EXAMPLE_COLUMNS for r in rows)
    for row, e in zip(rows, dataset.examples):
        assert row["id"] == e.id and {k: row[k] for k in e.values} == dict(e.values)
    aggs = dataset.to_records("aggregates")
    assert len(aggs) == len(dataset.aggregates) and all(tuple(r) == AGGREGATE_COLUMNS for r in aggs)
    for row, a in zip(aggs, dataset.aggregates):
        assert (row["value"], row["n"], row["low"], row["high"]) == (a.stats.value, a.stats.n, *a.stats.ci)
        assert (row["p"] is None) == (a.stats.func != "paired")
    assert dataset.to_pandas().shape == (6, len(rows[0]))
    assert list(dataset.to_pandas("aggregates").columns) == list(AGGREGATE_COLUMNS)
    assert dataset.first is not None and dataset.first.tokens
    with pytest.raises(ContractError, match="examples and aggregates"):
        dataset.to_records("tokens")  # type: ignore[arg-type]


# ------------------------------------------------------------------ results JSON


def _same_records(a, b):
    if isinstance(a, DatasetResult):
        assert a.to_records("examples") == b.to_records("examples")
        assert a.to_records("aggregates") == b.to_records("aggregates")
        assert a.expectations == b.expectations and a.first.to_records() == b.first.to_records()
    else:
        assert a.to_records() == b.to_records()


def test_load_results_round_trip_each_kind(tmp_path, single, family, dataset):
    for r in (single, family, dataset):
        path = scopecheck.write_results(r, tmp_path / f"{type(r).__name__}.json")
        (back,) = scopecheck.load_results(path).values()
        assert type(back) is type(r)
        _same_records(r, back)
        if isinstance(r, ContractResult):
            # every field JSON holds comes back exactly (info: its scalar entries)
            assert back.checks == r.checks and back.expectations == r.expectations
            assert dataclasses.replace(back, info={}, origin={}) == dataclasses.replace(r, info={}, origin={})
        if isinstance(r, FamilyResult):
            assert [m.expectations for m in back.members] == [m.expectations for m in r.members]
            assert (back.name, back.output_ids, back.method_params) == (r.name, r.output_ids, r.method_params)


def test_load_results_reads_what_scopecheck_run_json_writes(tmp_path):
    """A file of several contracts through the command line, read back: one result per contract,
    each equal to run_file's in-memory result."""
    f = tmp_path / "c.scope"
    f.write_text(FAMILY.format(target="each") + FAMILY.format(target=2).replace('"fam"', '"broken"')
                 .replace("reference:translate-ar", '"no-such-model"')
                 + FAMILY.format(target=3).replace('"fam"', '"three"'), encoding="utf-8")
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "scopecheck.cli", "run", str(f), "--device", "cpu", "--dtype", "float64",
                           "--json", str(out), "--report", "-"], capture_output=True, text=True, cwd=tmp_path)
    assert out.exists(), proc.stderr
    back = scopecheck.load_results(out)
    mine = scopecheck.run_file(f, device="cpu", dtype="float64")
    assert isinstance(back, Results) and list(back) == list(mine) == ["fam", "broken", "three"]
    assert isinstance(back["fam"], FamilyResult) and isinstance(back["three"], ContractResult)
    assert isinstance(back["broken"], FailedRun) and isinstance(mine["broken"], FailedRun)
    err, mine_err = back["broken"].error, mine["broken"].error
    assert "no-such-model" in err and err.splitlines()[0] == mine_err.splitlines()[0]
    for name in ("fam", "three"):
        _same_records(mine[name], back[name])
    assert [o.passed for o in back["three"].expectations] == [o.passed for o in mine["three"].expectations]


def test_load_results_ignores_unknown_keys_and_names_a_missing_one(tmp_path, single):
    path = scopecheck.write_results(single, tmp_path / "r.json")
    doc = json.loads(path.read_text())
    doc["provenance"] = {"git": "abc"}
    doc["runs"][0]["provenance"] = {"host": "x"}
    doc["runs"][0]["tokens"][0]["new"] = 1
    path.write_text(json.dumps(doc))
    (back,) = scopecheck.load_results(path).values()
    assert back.to_records() == single.to_records()
    del doc["runs"][0]["tokens"][1]["score"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ResultsError, match=r"\$\.runs\[0\]\.tokens\[1\]\.score: is missing"):
        scopecheck.load_results(path)
    path.write_text('{"runs": [\n  {"name": }\n]}')
    with pytest.raises(ResultsError) as info:
        scopecheck.load_results(path)
    assert "r.json:2:" in info.value.render() and "^" in info.value.render()
    with pytest.raises(ResultsError, match="cannot read"):
        scopecheck.load_results(tmp_path / "missing.json")


def test_non_finite_values_come_back_as_floats(tmp_path, single):
    path = scopecheck.write_results(single, tmp_path / "r.json")
    doc = json.loads(path.read_text())
    doc["runs"][0]["tokens"][1]["score"] = "nan"
    doc["runs"][0]["score_baseline"] = "-inf"
    path.write_text(json.dumps(doc))
    (back,) = scopecheck.load_results(path).values()
    assert math.isnan(back.tokens[1].score) and back.score_baseline == -math.inf


def test_to_pandas_without_pandas_names_the_extra(single, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)     # import pandas -> ImportError
    with pytest.raises(MissingExtra) as info:
        single.to_pandas()
    assert isinstance(info.value, ImportError)
    assert "scopecheck[pandas]" in info.value.render() and "to_pandas() needs pandas" in info.value.render()


def test_the_api_module_is_mypy_strict_clean():
    pytest.importorskip("mypy", reason="mypy is not installed")
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "src/scopecheck/api.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
