"""The engine-backed commands: run (the main job), audit, matrix."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from scopecheck.cli import main

ROOT = Path(__file__).parents[1]


def test_run_main_job_writes_report_json_and_summary(tmp_path: Path, capsys) -> None:
    out_json = tmp_path / "results.json"
    rc = main(["run", str(ROOT / "contracts" / "figure1.scope"), "--device", "cpu",
               "--report", str(tmp_path / "report"), "--json", str(out_json)])
    assert rc == 0
    cap = capsys.readouterr()
    assert "figure 1, middle: prompt-conditioned" in cap.out and "PASS" in cap.out
    html = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    for needle in ("integrated_gradients", "zero", "reference:translate-ar", "cpu", "black", "noir"):
        assert needle in html
    from scopecheck.report.jsonout import schema_path

    doc = json.loads(out_json.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(json.loads(Path(schema_path()).read_text())).validate(doc)


def test_run_exits_1_when_an_expectation_fails(tmp_path: Path, capsys) -> None:
    src = (ROOT / "contracts" / "standard" / "prompt_conditioned.scope").read_text(encoding="utf-8")
    bad = tmp_path / "bad.scope"
    bad.write_text(src.replace('expect rank(x["black"]) == 1', 'expect rank(x["The"]) == 1'), encoding="utf-8")
    assert main(["run", str(bad), "--device", "cpu", "--report", "-"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_run_runs_diffusion_contracts(tmp_path: Path, capsys) -> None:
    out_json = tmp_path / "r.json"
    assert main(["run", str(ROOT / "contracts" / "standard" / "denoising_stage.scope"), "--report", str(tmp_path / "h"),
                 "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "stage 1" in out and "PASS" in out
    from scopecheck.report.jsonout import schema_path

    doc = json.loads(out_json.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(json.loads(Path(schema_path()).read_text())).validate(doc)
    d = doc["runs"][0]["diffusion"]
    assert d["sampler"] == "confidence" and d["estimator"] == "chain" and len(d["chain"]["steps"]) == d["steps"]
    html = (tmp_path / "h" / "index.html").read_text(encoding="utf-8")
    assert "Diffusion chain" in html and "per-stage attribution" in html


def test_audit_folder_verdicts_and_exit_code(tmp_path: Path, capsys) -> None:
    assert main(["audit", str(ROOT / "contracts" / "audits")]) == 0
    out = capsys.readouterr().out
    assert "self-attribution fallacy" in out and "UNSUPPORTED" in out
    md = tmp_path / "audit.md"
    assert main(["audit", str(ROOT / "contracts" / "audits"), "--format", "markdown", "--out", str(md)]) == 0
    assert "DSA" in md.read_text(encoding="utf-8") or "dsa" in md.read_text(encoding="utf-8")
    capsys.readouterr()


def test_audit_fails_on_an_unsupported_claim_without_expectation(tmp_path: Path, capsys) -> None:
    f = tmp_path / "c.scope"
    f.write_text('claim "c" {\n question prompt_level\n computed { toolkit inseq method integrated_gradients }\n}\n',
                 encoding="utf-8")
    assert main(["audit", str(f)]) == 1
    assert "self-attribution fallacy" in capsys.readouterr().out


def test_matrix_runs_method_contract_pairs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.json"
    store, page = tmp_path / "store", tmp_path / "m.html"
    args = ["matrix", "--examples", "3", "--methods", "occlusion", "--device", "cpu", "--store", str(store)]
    assert main(args + ["--json", str(out), "--html", str(page)]) == 0
    cells = json.loads(out.read_text(encoding="utf-8"))
    assert {c["contract"] for c in cells} == {"local_next_token", "prompt_conditioned", "span_prompt"}
    assert all(c["error"] is None and c["n"] == 3 for c in cells)
    assert all(c["aopc_ci"][0] <= c["aopc"] <= c["aopc_ci"][1] for c in cells)
    assert "Method x contract" in capsys.readouterr().out
    assert "AOPC − random AOPC" in page.read_text(encoding="utf-8") or "<img" in page.read_text(encoding="utf-8")
    # the matrix uses the result store: a second run resumes every example
    assert main(args + ["--resume", "--json", str(out)]) == 0
    again = json.loads(out.read_text(encoding="utf-8"))
    assert all(c["extra"]["resumed"] == 3 for c in again)
    assert [c["aopc"] for c in again] == [c["aopc"] for c in cells]


def test_run_json_to_stdout_is_the_only_stdout(capsys) -> None:
    """`--json -`: stdout is one JSON document; heatmaps and the summary go to stderr."""
    rc = main(["run", str(ROOT / "contracts" / "standard" / "prompt_conditioned.scope"), "--device", "cpu",
               "--report", "-", "--json", "-"])
    out = capsys.readouterr()
    assert rc == 0
    doc = json.loads(out.out)
    assert [r["name"] for r in doc["runs"]] and "scopecheck results" in out.err
