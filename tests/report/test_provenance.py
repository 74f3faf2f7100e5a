"""Results with provenance: every fact the JSON records is checked against an independent
reading (hashlib on the weights file, the formatted contract's sha256, importlib.metadata, git,
the tokenizer loaded here), the weights are hashed once per process however many examples a
dataset contract runs, and documents without provenance (older ones) still validate."""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest

from scopecheck.report.jsonout import results_json, validate_results
from scopecheck.runtime import provenance
from stories_run import STORIES, run_contract, run_stories, stories_contract

ROOT = Path(__file__).resolve().parents[2]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def doc():
    return results_json([run_stories(3)])


def test_software_versions_are_the_installed_ones(doc):
    validate_results(doc)
    env = doc["provenance"]
    import scopecheck

    assert env["scopecheck"] == scopecheck.__version__
    assert env["python"] == platform.python_version()
    for dist in ("torch", "transformers", "tokenizers"):
        assert env[dist] == metadata.version(dist)
    assert env["devices"] == ["cpu"] and env["dtypes"] == ["float32"]


def test_git_revision_is_the_checkouts_head(doc):
    head = subprocess.run(["git", "-C", str(ROOT / "src" / "scopecheck"), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the tests do not run from a git checkout")
    assert doc["provenance"]["git_revision"] == head.stdout.strip()


def test_git_revision_is_none_outside_a_checkout(tmp_path, monkeypatch):
    """An installed copy (its version.py not tracked by any git work tree) has no revision."""
    fake = tmp_path / "scopecheck" / "runtime" / "provenance.py"
    fake.parent.mkdir(parents=True)
    (tmp_path / "scopecheck" / "version.py").write_text("__version__ = '0'\n")
    monkeypatch.setattr(provenance, "__file__", str(fake))
    provenance.git_revision.cache_clear()
    try:
        assert provenance.git_revision() is None
    finally:
        monkeypatch.undo()
        provenance.git_revision.cache_clear()


def test_model_identity_weights_and_tokenizer(doc):
    from transformers import AutoTokenizer

    model = doc["runs"][0]["provenance"]["model"]
    assert model["identity"] == doc["runs"][0]["model"]
    assert Path(model["location"]) == STORIES.resolve()
    files = sorted(p for p in STORIES.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt", ".pth"))
    assert [w["file"] for w in model["weights"]] == [p.name for p in files] == ["model.safetensors"]
    (w,) = model["weights"]
    assert w["sha256"] == sha256_file(STORIES / "model.safetensors")
    assert w["bytes"] == (STORIES / "model.safetensors").stat().st_size
    assert model["revision"] is None and model["quantization"] is None      # a local, unquantized checkpoint
    tok = AutoTokenizer.from_pretrained(str(STORIES))
    want = {k: str(getattr(tok, k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
            if getattr(tok, k) is not None}
    assert model["tokenizer"]["special_tokens"] == want and want["bos_token"] == "<s>"
    assert model["tokenizer"]["class"] == type(tok).__name__
    assert model["tokenizer"]["chat_template_sha256"] is None              # stories260k has no chat template


def test_chat_template_hash():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(STORIES))
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    tok.chat_template = template
    lm = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace()), tokenizer=tok,
                         identity=str(STORIES), quantization=None)
    facts = provenance.model_facts(lm)
    assert facts["tokenizer"]["chat_template_sha256"] == hashlib.sha256(template.encode()).hexdigest()
    tok.chat_template = {"tool_use": "B", "default": "A"}                  # named templates, in name order
    assert provenance.chat_template_sha256(tok) == hashlib.sha256(b"default\nA\ntool_use\nB").hexdigest()


def test_hub_model_has_no_local_files():
    lm = SimpleNamespace(model=SimpleNamespace(name_or_path="org/name", config=SimpleNamespace(
        _commit_hash="0123abcd")), tokenizer=SimpleNamespace(), identity="hub:org/name", quantization=None)
    facts = provenance.model_facts(lm)
    assert (facts["location"], facts["revision"], facts["weights"]) == (None, "0123abcd", [])


def test_contract_hash_is_the_canonical_texts(doc):
    from scopecheck.dsl.format import format_document
    from scopecheck.loader import load_text

    text = format_document(load_text(stories_contract(3))[0])
    run = doc["runs"][0]
    assert run["provenance"]["contract_sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert run["provenance"]["seed"] == 3 and run["provenance"]["dataset"] is None


def test_phases_are_measured_and_fit_in_the_run(doc):
    run = doc["runs"][0]
    ph = run["provenance"]["phases"]
    parts = [ph["load_seconds"], ph["compile_seconds"], ph["attribution_seconds"]]
    assert all(isinstance(p, float) and p >= 0 for p in parts) and ph["attribution_seconds"] > 0
    assert sum(parts) <= ph["total_seconds"] + 1e-6
    assert ph["total_seconds"] == run["seconds"] and ph["examples_seconds"] is None


def test_an_error_run_names_its_model_and_validates():
    cr = run_contract(stories_contract(3, "/nonexistent/model-dir"), require_success=False)
    d = results_json([cr])
    validate_results(d)
    model = d["runs"][0]["provenance"]["model"]
    assert model["identity"] == d["runs"][0]["model"] and model["weights"] == [] and model["tokenizer"] is None


def test_documents_without_provenance_still_validate(doc):
    """The schema is additive: a document written before provenance existed is still valid."""
    old = copy.deepcopy(doc)
    del old["provenance"]
    for r in old["runs"]:
        del r["provenance"]
    validate_results(old)


DATASET_CONTRACT = '''contract "stories over data" {{
    model    {model}
    dataset  "data.jsonl"(limit = {limit}, id = "id")
    use prompt_conditioned(target = T)
    method gradient_x_input
    seed 5
    expect mean(mass(x[0])) > -1000
}}
'''


def test_dataset_provenance_and_weights_hashed_once(tmp_path):
    """A dataset run builds one result per example; the weights are read once for all of them."""
    if not (STORIES / "config.json").is_file():
        pytest.skip(f"the shared checkpoint {STORIES} is not beside this checkout")
    from scopecheck.loader import check_text
    from scopecheck.orchestration.runner import Runner

    rows = [{"id": f"r{i}", "prompt": p, "output": o} for i, (p, o) in enumerate(
        [("Once upon a time", " there was"), ("The cat sat", " on the mat"), ("Lily had a", " red ball")])]
    lines = [json.dumps(r) for r in rows] + ['{"id": "bad", "output": "no prompt"}']
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    f = tmp_path / "ds.scope"
    f.write_text(DATASET_CONTRACT.format(model=json.dumps(str(STORIES)), limit=10), encoding="utf-8")
    sf = check_text(f.read_text(encoding="utf-8"), str(f))
    assert not sf.errors, [e.render() for e in sf.errors]
    provenance._file_sha256.cache_clear()
    cr = Runner(device="cpu").run(sf.documents[0])
    assert cr.error is None, cr.error
    assert len(cr.examples) == 3 and all(e.error is None for e in cr.examples)
    assert provenance.hash_calls() == 1                      # one weights file, three examples
    d = results_json([cr])
    validate_results(d)
    from scopecheck.dsl.format import format_document

    prov = d["runs"][0]["provenance"]
    assert prov["dataset"] == {"fingerprint": sha256_file(data), "n_requested": 10, "n_effective": 3}
    assert prov["contract_sha256"] == hashlib.sha256(format_document(sf.documents[0]).encode()).hexdigest()
    assert prov["model"]["weights"][0]["sha256"] == sha256_file(STORIES / "model.safetensors")
    assert prov["seed"] == 5
    ph = prov["phases"]
    assert ph["examples_seconds"] == pytest.approx(sum(e.seconds for e in cr.examples))
    assert ph["load_seconds"] is None and ph["attribution_seconds"] is None
    assert ph["examples_seconds"] <= ph["total_seconds"]
