"""The command line: check, fmt, list (run and audit have their own tests)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from scopecheck.cli import main
from scopecheck.spec.jsonio import schema

ROOT = Path(__file__).parents[1]
INVALID = ROOT / "tests" / "dsl" / "golden" / "invalid"


def test_check_contracts_folder_passes(capsys) -> None:
    assert main(["check", str(ROOT / "contracts")]) == 0
    out = capsys.readouterr()
    assert "contract \"figure 1, middle: prompt-conditioned\"" in out.out
    assert "ok:" in out.err


def test_check_json_validates_against_schema(capsys) -> None:
    assert main(["check", "--json", str(ROOT / "contracts")]) == 0
    from scopecheck.spec.jsonio import check_output_validator

    out = json.loads(capsys.readouterr().out)
    check_output_validator().validate(out)              # one document, against the published schema
    docs = out["documents"]
    assert len(docs) >= 10
    validator = jsonschema.Draft202012Validator(schema())
    for d in docs:
        validator.validate(d)
    bad = {**out, "documents": [{**docs[0], "kind": "nonsense"}]}
    assert list(check_output_validator().iter_errors(bad))   # the reference is followed, not ignored
    kinds = {d.get("contract_kind") for d in docs if d["kind"] == "contract"}
    assert {"local_next_token", "prompt_conditioned", "span_prompt", "classifier", "state_level",
            "denoising_stage", "prompt_to_output"} <= kinds


def test_check_reports_all_errors_and_exits_1(capsys) -> None:
    files = [str(INVALID / "e_overlaps_c.scope"), str(INVALID / "causality_future.scope"),
             str(INVALID / "misspelled_keyword.scope")]
    assert main(["check", *files]) == 1
    err = capsys.readouterr().err
    assert "e_overlaps_c.scope:6:14" in err and "causality_future.scope:9:17" in err
    assert "misspelled_keyword.scope:6:5" in err
    assert "3 errors in 3 file(s)" in err
    assert "Traceback" not in err


def test_check_missing_path(capsys) -> None:
    assert main(["check", "no/such/dir"]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_fmt_check_and_write(tmp_path: Path, capsys) -> None:
    src = tmp_path / "a.scope"
    src.write_text('contract "a" {use span_prompt\nmethod occlusion(operator=pad)}\n', encoding="utf-8")
    assert main(["fmt", "--check", str(src)]) == 1
    assert main(["fmt", "--write", str(src)]) == 0
    text = src.read_text(encoding="utf-8")
    assert "    use span_prompt\n" in text and "method occlusion(operator = pad)" in text
    assert main(["fmt", "--check", str(src)]) == 0
    capsys.readouterr()


def test_fmt_writes_nothing_when_a_file_fails(tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.scope"
    good.write_text('contract "a" {use span_prompt}\n', encoding="utf-8")
    bad = tmp_path / "bad.scope"
    bad.write_text('contract "a" { use }\n', encoding="utf-8")
    assert main(["fmt", "--write", str(tmp_path)]) == 1
    assert good.read_text(encoding="utf-8") == 'contract "a" {use span_prompt}\n'
    assert not list(tmp_path.glob(".*.tmp"))
    capsys.readouterr()


def test_list_prints_standard_contracts_methods_and_checks(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("prompt_conditioned", "denoising_stage", "integrated_gradients", "stage_perturbation",
                 "deletion", "regenerate", "log p(y[t] | x, y[<t])"):
        assert name in out


@pytest.mark.parametrize("argv, env, width", [(["list"], {}, 100), (["list", "--width", "72"], {}, 72),
                                              (["list"], {"COLUMNS": "90"}, 90)])
def test_list_fits_the_stated_or_default_width_when_piped(argv, env, width, capsys, monkeypatch):
    """Issue 26: `scopecheck list` was about 200 columns wide when piped."""
    from rich.cells import cell_len

    from scopecheck.cli import main

    monkeypatch.delenv("COLUMNS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Standard contracts" in out and "Method parameters" in out
    assert max(cell_len(line) for line in out.splitlines()) <= width


def test_check_prints_the_resolved_scope_with_each_elements_origin(tmp_path, capsys):
    """Issue 26: `check` printed the contract as written; the filled-in SCOPE appeared only in
    `run`. Now each element is printed with where it comes from, as comments (the output parses)."""
    from scopecheck.dsl.parser import parse_text

    f = tmp_path / "c.scope"
    f.write_text('contract "c" {\n    model reference:translate-ar\n    prompt "Translate to French: The dog is black."\n'
                 '    output "Le chien est noir."\n    use prompt_conditioned(target = "noir")\n'
                 '    eligible x\n    method occlusion(operator = zero)\n}\n')
    assert main(["check", str(f)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("#   ")]
    by = {ln.split()[1]: ln for ln in lines}
    assert set(by) == {"score", "fixed", "explain", "process", "eligible"}
    assert by["eligible"].endswith("<- stated, line 6") and by["eligible"].split()[2] == "x"
    for el in ("score", "fixed", "explain", "process"):
        assert by[el].endswith('<- from use prompt_conditioned(target = "noir")'), by[el]
    assert 'y[<"noir"]' in by["fixed"] and by["process"].split()[2] == "autoregressive"
    (doc,) = parse_text(out, "printed.scope")                 # the comments keep it a contract file
    assert doc.name == "c"
