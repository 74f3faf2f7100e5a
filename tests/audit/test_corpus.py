"""The corpus of published attribution claims, ``contracts/audits/corpus/``: every file parses and
validates, every claim names its source in the block form (authors, title, year, locator), says
what the source states (``states quote|paraphrase``) and pins its verdict (``expect verdict ==``,
collected by the pytest plugin); the audit table over it agrees with counts made here.

These hold for whatever valid files the folder holds; with none, the tests skip and say why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from scopecheck.audit import audit_paths
from scopecheck.audit.table import build_table, expected_verdict, table_json, table_schema
from scopecheck.audit.verdict import STATUSES
from scopecheck.loader import check_file
from scopecheck.spec import model as m

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "contracts" / "audits" / "corpus"
FILES = sorted(CORPUS.rglob("*.scope")) if CORPUS.is_dir() else []
EMPTY = pytest.mark.skipif(not FILES, reason=f"no claim files under {CORPUS.relative_to(ROOT)} yet")


def _claims() -> list[tuple[Path, m.Claim]]:
    out = []
    for f in FILES:
        sf = check_file(f)
        out += [(f, d) for d in sf.documents if isinstance(d, m.Claim)]
    return out


@EMPTY
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_corpus_file_parses_and_validates(path: Path) -> None:
    sf = check_file(path)
    assert sf.errors == (), "\n".join(e.render() for e in sf.errors)
    assert sf.documents and all(isinstance(d, m.Claim) for d in sf.documents)


@EMPTY
def test_every_claim_names_its_source_states_it_and_pins_a_verdict() -> None:
    claims = _claims()
    assert claims
    for path, c in claims:
        where = f"{path.relative_to(ROOT)}:{c.span.line} {c.name!r}"
        assert isinstance(c.source, m.Source), f"{where}: the source is not a source {{ ... }} block"
        for f in m.SOURCE_REQUIRED:
            value = getattr(c.source, f)
            assert value is not None and str(value).strip(), f"{where}: source {f} is empty"
        assert 1000 <= c.source.year <= 9999
        assert c.states is not None and c.states.kind in m.STATEMENT_KINDS and c.states.text.strip(), where
        assert expected_verdict(c) in STATUSES, f"{where}: no `expect verdict == \"...\"`"
        # a source whose question fits none of the vocabulary's leaves it out (the audit then says the
        # question is not stated): such a claim can only be underspecified
        assert c.question is not None or expected_verdict(c) == "underspecified", f"{where}: no question"


@EMPTY
def test_corpus_table_summary_equals_counts_made_from_the_rows_and_the_files() -> None:
    reports = audit_paths(FILES)
    doc = table_json(build_table(reports, base=ROOT))
    jsonschema.Draft202012Validator(table_schema()).validate(doc)
    rows = [r for r in doc["rows"] if r["verdict"] is not None]
    s = doc["summary"]
    claims = _claims()
    assert s["claims"] == len(rows) == len(claims)
    assert s["not_loading"] == 0
    key = {(" ".join(c.source.authors.lower().split()), " ".join(c.source.title.lower().split()), c.source.year)
           for _, c in claims if isinstance(c.source, m.Source)}
    assert s["sources"] == len(key)
    assert s["self_attribution"] == sum("self-attribution" in r["fallacies"] for r in rows)
    assert s["impossible_numbers"] == sum(bool(r["impossible"]) for r in rows)
    for st in STATUSES:
        assert s["verdicts"][st] == sum(r["verdict"] == st for r in rows)
    # states every element: the claim's computed block names all five, or a `use` gives them
    by_file = sum(c.computed.use is not None or all(getattr(c.computed.scope, e) is not None
                                                     for e in m.Scope.ELEMENTS) for _, c in claims)
    assert s["state_every_element"] == sum(r["every_element_stated"] for r in rows) == by_file
    assert s["expected"] == len(claims)


@EMPTY
def test_every_corpus_verdict_is_the_expected_one() -> None:
    for r in audit_paths(FILES):
        assert r.verdict is not None, r.errors
        assert r.passed, f"{r.path}:{r.line} {r.name!r}: {r.outcome}"


def test_pytest_collects_the_corpus_folder() -> None:
    """`pytest` with no arguments collects `contracts/` (testpaths), the corpus with it."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["pytest"]["ini_options"]
    assert any(CORPUS.is_relative_to(ROOT / p) for p in conf["testpaths"])


@EMPTY
def test_the_plugin_collects_each_corpus_claims_verdict() -> None:
    """Each claim is two items: it validates, and its audit expectations (`::audit`) hold."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly",
                          str(CORPUS.relative_to(ROOT))], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    audit_items = {ln.rsplit("::", 1)[0] for ln in res.stdout.splitlines() if ln.endswith("::audit")}
    expected = {f"{p.relative_to(ROOT).as_posix()}::{c.name}" for p, c in _claims() if expected_verdict(c)}
    assert expected <= audit_items, res.stdout + res.stderr
