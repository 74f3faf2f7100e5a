"""Golden files: contract text -> normalized JSON; invalid contract -> exact error text.

Regenerate with ``SCOPECHECK_UPDATE_GOLDEN=1 pytest tests/dsl/test_golden.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from scopecheck.errors import RULES
from scopecheck.loader import check_text
from scopecheck.spec.jsonio import schema, to_json

HERE = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SCOPECHECK_UPDATE_GOLDEN") == "1"
VALID = sorted((HERE / "valid").glob("*.scope"))
INVALID = sorted((HERE / "invalid").glob("*.scope"))


def _golden(path: Path, actual: str) -> None:
    if UPDATE or not path.exists():
        path.write_text(actual, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"golden file {path.name} was missing and has been written; review it")
    assert actual == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("src", VALID, ids=lambda p: p.stem)
def test_valid_contract_normalizes_to_golden_json(src: Path) -> None:
    rel = f"valid/{src.name}"
    sf = check_text(src.read_text(encoding="utf-8"), rel)
    assert not sf.errors, "\n".join(e.render() for e in sf.errors)
    docs = [to_json(d)[0] for d in sf.documents]
    for d in docs:
        jsonschema.Draft202012Validator(schema()).validate(d)
    _golden(src.with_suffix(".json"), json.dumps(docs, indent=2, ensure_ascii=False) + "\n")


@pytest.mark.parametrize("src", INVALID, ids=lambda p: p.stem)
def test_invalid_contract_gives_golden_error(src: Path) -> None:
    rel = f"invalid/{src.name}"
    sf = check_text(src.read_text(encoding="utf-8"), rel)
    assert sf.errors, f"{src.name} was accepted"
    text = "\n\n".join(e.render() for e in sf.errors) + "\n"
    for e in sf.errors:  # every error names path:line:col and shows the source line
        assert e.render().startswith(f"{rel}:{e.span.line}:{e.span.column}: ")
        assert f" {e.span.line} | " in e.render()
        assert e.rule in RULES, f"rule id {e.rule!r} is not in scopecheck.errors.RULES"
    _golden(src.with_suffix(".err"), text)


def test_schema_is_draft_2020_12() -> None:
    s = schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(s)
