"""`scopecheck.loader.load_contracts` / `is_contract_path`: the one reader of "a spec, contract
text or a `.scope` path" that the Python API and the engine's `run` / `check_map` share."""

from __future__ import annotations

from pathlib import Path

import pytest

from scopecheck.errors import ContractErrors
from scopecheck.loader import is_contract_path, load_contracts, load_file
from scopecheck.spec import model as m

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ROOT / "contracts" / "families.scope"
CLAIMS = ROOT / "contracts" / "audits" / "figure1_claims.scope"


@pytest.mark.parametrize("source, is_path", [
    (Path("anything"), True),                        # a Path is always a file to read
    ("a/b.scope", True),
    ("b.scope\n", False),                            # a line break: contract text
    ('contract "x" { }', False),
    ("b.scop", False),
    (b"b.scope", False),                             # only str and Path name files
    (None, False),
])
def test_is_contract_path(source, is_path):
    assert is_contract_path(source) is is_path


def test_load_contracts_reads_paths_text_and_specs_alike():
    by_file = [d for d in load_file(FAMILIES) if isinstance(d, m.Contract)]
    assert by_file and load_contracts(FAMILIES) == by_file
    assert load_contracts(str(FAMILIES)) == by_file
    text = load_contracts(FAMILIES.read_text(encoding="utf-8"))
    assert [c.name for c in text] == [c.name for c in by_file]
    assert load_contracts(by_file[0]) == [by_file[0]]


def test_load_contracts_leaves_out_the_other_documents():
    docs = load_file(CLAIMS)
    assert docs and not any(isinstance(d, m.Contract) for d in docs)
    assert load_contracts(CLAIMS) == []


def test_load_contracts_raises_the_files_errors(tmp_path):
    bad = tmp_path / "bad.scope"
    bad.write_text('contract "x" {\n    model reference:translate-ar\n    nonsense here\n}\n')
    with pytest.raises(ContractErrors):
        load_contracts(bad)
    with pytest.raises(ContractErrors):
        load_contracts(str(tmp_path / "missing.scope"))
