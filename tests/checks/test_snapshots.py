"""Attribution snapshots (``expect snapshot(...)``, :mod:`scopecheck.checks.snapshot`): created,
passing, failing on a perturbed model with the criterion and its numbers named, stale on a changed
contract and on a changed model, written atomically, unused files listed, and the criteria equal to
an independent computation (``scipy.stats.spearmanr``, a sorted top-k, ``max |a - b|``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from scopecheck.checks import snapshot as snap
from scopecheck.errors import ContractError
from scopecheck.loader import check_file, check_text
from scopecheck.orchestration.runner import Runner
from scopecheck.reference import reference_dir
from scopecheck.spec.text import format_document

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = reference_dir("translate-ar")

CONTRACT = '''contract "noir" {{
    model    {model}
    prompt   "Translate to French: The dog is black."
    output   "Le chien est noir."
    use prompt_conditioned(target = "noir")
    method occlusion(operator = {operator})
    expect snapshot("snapshots/noir.json"{criteria})
{extra}}}
'''


def write(folder: Path, *, model: str = "reference:translate-ar", operator: str = "zero", criteria: str = "",
          extra: str = "", name: str = "noir.scope") -> Path:
    p = folder / name
    p.write_text(CONTRACT.format(model=model, operator=operator, criteria=criteria, extra=extra), encoding="utf-8")
    return p


def run(path: Path, *, update: bool = False, line: int = 7, **kw):
    """Run the contract of ``path`` in a fresh runner; the outcome of its snapshot clause (line 7)
    and the run."""
    sf = check_file(path)
    assert not sf.errors, [e.render() for e in sf.errors]
    c = sf.documents[0]
    runner = Runner(device="cpu", update_snapshots=update, **kw)
    cr = runner.run(c)
    assert cr.result is not None, cr.error
    ex = next(e for e in c.expects if e.span.line == line)
    return runner.evaluate(cr, ex), cr


def snapshot_of(cr) -> snap.CheckResult:
    return next(v for k, v in cr.checks.items() if k.startswith("snapshot("))


def test_missing_fails_and_says_how_to_create_it_then_update_writes_it_then_it_passes(tmp_path):
    path = write(tmp_path)
    target = tmp_path / "snapshots" / "noir.json"
    o, _ = run(path)
    assert not o.passed and o.status == "missing"
    assert str(target) in o.explanation and not target.exists()
    assert f"scopecheck run --update-snapshots {path}" in o.explanation
    assert f"pytest --scope-snapshot-update {path}" in o.explanation

    o, cr = run(path, update=True)
    assert o.passed and o.status == "written" and target.is_file()
    doc = json.loads(target.read_text(encoding="utf-8"))
    import jsonschema

    jsonschema.Draft202012Validator(snap.snapshot_schema()).validate(doc)
    # what it stores, each recomputed here on its own
    c = check_file(path).documents[0]
    no_expects = format_document(dataclasses.replace(c, expects=()))
    assert "expect" not in no_expects
    assert doc["contract"]["sha256"] == hashlib.sha256(no_expects.encode()).hexdigest()
    assert doc["model"] == {"ref": "reference:translate-ar",
                            "weights_sha256": hashlib.sha256((REFERENCE / "model.safetensors").read_bytes()).hexdigest()}
    r = cr.result
    assert doc["method"]["name"] == "occlusion" and doc["method"]["operator"] == "zero"
    assert doc["method"]["params"] == json.loads(json.dumps(r.method_params))
    assert [t["text"] for t in doc["tokens"]] == [t.text for t in r.tokens]
    assert [t["score"] for t in doc["tokens"]] == [t.score for t in r.tokens]

    o, cr = run(path)
    assert o.passed and o.status == "pass", o.explanation
    res = snapshot_of(cr)
    assert res.fields == {"top_k_match": 1.0, "spearman": 1.0, "max_abs": 0.0}
    # an expectation added or loosened does not change the map, so it does not make the snapshot stale
    write(tmp_path, criteria=", max_abs = 0.5", extra='    expect top(1) == "black"\n')
    o, _ = run(path)
    assert o.passed and o.status == "pass", o.explanation


def test_fails_on_a_perturbed_model_naming_the_criterion_with_the_engines_numbers(tmp_path):
    path = write(tmp_path, criteria=", top_k = 3, spearman = 0.999, max_abs = 1e-6")
    assert run(path, update=True)[0].status == "written"
    old = [t["score"] for t in json.loads((tmp_path / "snapshots" / "noir.json").read_text())["tokens"]]
    from scopecheck.engine.models import LoadOptions, load

    lm = load(check_file(path).documents[0].model, LoadOptions("cpu", "float32"))
    saved = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad():          # the same files (so not stale), other weights in memory: the map moves
            for p in lm.model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        o, cr = run(path)
    finally:
        lm.model.load_state_dict(saved)
    assert not o.passed and o.status == "fail"
    r = cr.result
    new = [t.score for t in r.tokens]
    E = [t.position for t in r.tokens if t.eligible]
    a, b = np.array(old)[E], np.array(new)[E]
    rho = stats.spearmanr(a, b).statistic
    top_old = sorted(E, key=lambda p: (-old[p], p))[:3]
    top_new = sorted(E, key=lambda p: (-new[p], p))[:3]
    max_abs = float(np.max(np.abs(np.array(old) - np.array(new))))
    res = snapshot_of(cr)
    assert res.fields["max_abs"] == pytest.approx(max_abs, abs=1e-12)
    assert res.fields["spearman"] == pytest.approx(rho, abs=1e-12)
    assert res.fields["top_k_match"] == len(set(top_old) & set(top_new)) / 3
    assert max_abs > 1e-6
    assert f"max_abs {max_abs:.6g} > 1e-06" in o.explanation          # the failing criterion, with its numbers
    assert (f"spearman {rho:.6g} < 0.999" in o.explanation) == (rho < 0.999)
    assert ("top-3 set differs" in o.explanation) == (set(top_old) != set(top_new))
    # the model restored, the snapshot holds again
    assert run(path)[0].status == "pass"


def test_stale_on_a_changed_contract_is_not_compared_and_names_the_change(tmp_path):
    path = write(tmp_path)
    run(path, update=True)
    target = tmp_path / "snapshots" / "noir.json"
    before = target.read_bytes()
    write(tmp_path, operator="pad")
    o, cr = run(path)
    assert not o.passed and o.status == "stale"
    assert "the contract changed" in o.explanation and "operator = pad" in o.explanation
    assert "operator = zero" in o.explanation and "--update-snapshots" in o.explanation
    assert all(np.isnan(v) for v in snapshot_of(cr).fields.values())     # not compared
    assert target.read_bytes() == before
    o, _ = run(path, update=True)
    assert o.status == "written" and target.read_bytes() != before
    assert run(path)[0].status == "pass"


def test_stale_on_changed_weights_of_a_local_model(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(REFERENCE, model)
    path = write(tmp_path, model='"model"')
    run(path, update=True)
    doc = json.loads((tmp_path / "snapshots" / "noir.json").read_text())
    assert doc["model"]["weights_sha256"] == hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    from safetensors.torch import load_file, save_file

    w = load_file(str(model / "model.safetensors"))
    key = sorted(w)[0]
    w[key] = w[key] + 1e-3
    save_file(w, str(model / "model.safetensors"), metadata={"format": "pt"})
    o, _ = run(path)
    assert not o.passed and o.status == "stale"
    assert "the model's weights changed" in o.explanation
    assert doc["model"]["weights_sha256"][:12] in o.explanation
    new_sha = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    assert new_sha[:12] in o.explanation


def test_update_is_atomic_when_interrupted(tmp_path, monkeypatch):
    path = write(tmp_path)
    run(path, update=True)
    target = tmp_path / "snapshots" / "noir.json"
    before = target.read_bytes()
    write(tmp_path, operator="pad")                       # stale: an update would rewrite it

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(path, update=True)
    monkeypatch.undo()
    assert target.read_bytes() == before                  # the old snapshot, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["noir.json"]   # no temporary file left
    o, _ = run(path, update=True)
    assert o.status == "written"
    json.loads(target.read_text())


def test_criteria_equal_an_independent_computation():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(3, 12))
        old = rng.normal(size=n)
        new = old + rng.normal(scale=float(rng.choice([1e-3, 0.3, 3.0])), size=n)
        if trial % 5 == 0:
            new = np.round(new, 1)                         # ties
        E = sorted(rng.choice(n, size=int(rng.integers(2, n + 1)), replace=False).tolist())
        k = int(rng.integers(0, n + 2))
        c = snap.compare_maps(old.tolist(), new.tolist(), E, k)
        kk = min(k, len(E))
        top_o = sorted(E, key=lambda p: (-old[p], p))[:kk]
        top_n = sorted(E, key=lambda p: (-new[p], p))[:kk]
        assert c["top_old"] == top_o and c["top_new"] == top_n
        assert c["top_k_match"] == (len(set(top_o) & set(top_n)) / kk if kk else 1.0)
        assert c["max_abs"] == float(np.max(np.abs(old - new)))
        a, b = old[E], new[E]
        if len(set(b.tolist())) > 1:
            assert c["spearman"] == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert snap.spearman([1.0, 1.0], [2.0, 2.0])[0] == 1.0            # both all-tied: the same ranking
    assert np.isnan(snap.spearman([1.0, 2.0], [2.0, 2.0])[0])


def test_unused_snapshot_files_are_listed(tmp_path):
    write(tmp_path)
    other = tmp_path / "other.scope"                      # not among the files run, same folder: still counts
    other.write_text(CONTRACT.format(model="reference:translate-ar", operator="pad", criteria="", extra="")
                     .replace("snapshots/noir.json", "snapshots/other.json").replace('"noir"', '"other"', 1))
    d = tmp_path / "snapshots"
    (d / "sub").mkdir(parents=True)
    for name in ("noir.json", "other.json", "orphan.json", "sub/deep.json"):
        (d / name).write_text("{}")
    (d / "notes.txt").write_text("not a snapshot")
    assert snap.unused_snapshots([tmp_path / "noir.scope"]) == [(d / "orphan.json").resolve(),
                                                                 (d / "sub" / "deep.json").resolve()]
    note = snap.unused_note([tmp_path / "noir.scope"])
    assert note.startswith("2 unused snapshot files") and "orphan.json" in note and "deep.json" in note
    (d / "orphan.json").unlink()
    (d / "sub" / "deep.json").unlink()
    assert snap.unused_note([tmp_path / "noir.scope"]) == ""


@pytest.mark.parametrize("clause, message", [
    ('expect snapshot("s.json") > 0', "judged by its own criteria, not compared"),
    ("expect snapshot(top_k = 3)", "names its snapshot file, a text"),
    ('expect snapshot("s.json").spearman >= 0.9', "state them as its parameters"),
    ('expect snapshot("s.json", path = "t.json")', "given twice"),
    ('expect snapshot("s.json", spearman = 2)', "spearman"),
    ('expect snapshot("s.json", top_k = 1.5)', "top_k"),
    ('expect snapshot("s.json", tolerance = 1)', "has no parameter `tolerance`"),
    ('expect deletion("x").aopc > 0', "takes no positional arguments"),
])
def test_snapshot_clauses_are_validated(clause, message):
    text = CONTRACT.format(model="reference:translate-ar", operator="zero", criteria="", extra="")
    text = text.replace('expect snapshot("snapshots/noir.json")', clause)
    errors = check_text(text, "c.scope").errors
    assert any(message in e.render() for e in errors), [e.render() for e in errors]


def test_a_snapshot_outside_the_contracts_folder_is_refused_unless_allowed(tmp_path):
    inner = tmp_path / "contracts"
    inner.mkdir()
    path = write(inner)
    path.write_text(path.read_text().replace("snapshots/noir.json", "../noir.json"))
    o, _ = run(path, update=True)
    assert not o.passed and "outside the contract's folder" in o.explanation
    assert not (tmp_path / "noir.json").exists()
    o, _ = run(path, update=True, allow_outside_data=True)
    assert o.status == "written" and (tmp_path / "noir.json").is_file()


def test_a_corrupt_snapshot_is_a_positioned_error(tmp_path):
    path = write(tmp_path)
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "noir.json").write_text('{"format": "scopecheck-snapshot"}')
    o, _ = run(path)
    assert not o.passed and f"{path}:7:12" in o.explanation and "is not a snapshot" in o.explanation
    with pytest.raises(ContractError):
        snap.read_snapshot(tmp_path / "snapshots" / "noir.json", snap.Span())


PLUGIN = CONTRACT.format(model="reference:translate-ar", operator="zero", criteria="", extra="")


def test_plugin_option_writes_snapshots_and_lists_unused_ones(pytester: pytest.Pytester) -> None:
    pytester.makefile(".scope", noir=PLUGIN)
    res = pytester.runpytest("--scope-device", "cpu", "-p", "no:randomly")
    res.assert_outcomes(passed=1, failed=1)
    assert "--scope-snapshot-update" in res.stdout.str()
    res = pytester.runpytest("--scope-device", "cpu", "-p", "no:randomly", "--scope-snapshot-update")
    res.assert_outcomes(passed=2)
    written = pytester.path / "snapshots" / "noir.json"
    assert json.loads(written.read_text())["contract"]["name"] == "noir"
    (pytester.path / "snapshots" / "orphan.json").write_text("{}")
    res = pytester.runpytest("--scope-device", "cpu", "-p", "no:randomly")
    res.assert_outcomes(passed=2)
    res.stdout.fnmatch_lines(["scopecheck: 1 unused snapshot file (no contract names it): *orphan.json"])


def test_the_shipped_snapshot_holds_and_the_guide_states_the_registry_defaults():
    """``contracts/snapshots.scope`` passes against ``contracts/snapshots/noir.json`` (neither stale
    nor failing), and the guide's scope block (read as a file in contracts/, as the README's blocks
    are) is that contract; the defaults the guide states are the registry's."""
    import re

    from scopecheck.spec.check_registry import get_check

    path = ROOT / "contracts" / "snapshots.scope"
    o, _ = run(path, line=14)
    assert o.passed and o.status == "pass", o.explanation
    page = (ROOT / "docs" / "guide" / "snapshots.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```scope\n(.*?)```", page, flags=re.S)
    assert blocks and blocks[0] == path.read_text(encoding="utf-8")
    entry = get_check("snapshot")
    for key in ("top_k", "spearman", "max_abs"):
        assert f"`{key}` (default {entry.params[key].shown_default()})" in page
    assert entry.positional == ("path",)
