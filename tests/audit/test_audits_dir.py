"""The published claims under contracts/audits: valid files, expected verdicts, reports, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from scopecheck.audit import audit_paths, exit_code, render_html, render_markdown, render_text, to_json
from scopecheck.audit.verdict import has_verdict_expectation
from scopecheck.loader import check_file
from scopecheck.spec import model as m

ROOT = Path(__file__).resolve().parents[2]
AUDITS = ROOT / "contracts" / "audits"
FILES = sorted(AUDITS.glob("*.scope"))

EXPECTED = {
    "the summary's hallucinated entity came from the model's own prefix": "unsupported",
    "figure 1, top: the prefix predicts noir": "supported",
    "figure 1, middle: black explains noir given the prefix": "supported",
    "figure 1, bottom: the prompt explains the whole translation": "supported",
    "HETA's DSA on GPT-J is 4.80": "unsupported",
    "HETA's DSA on Llama-3.1-70B is 5.10": "unsupported",
    "ReAgent's DSA on GPT-J is 3.60": "unsupported",
    "IG's DSA on GPT-J is -0.34": "underspecified",
    "AS attributes a response to its prompt tokens, parameter-free": "supported",
    "Inseq IG shows which source sentence the answer came from": "unsupported",
    "ContextCite attributes the response to its context": "supported",
    "Captum's seq_attr shows which prompt tokens the response came from": "supported",
}


@pytest.fixture(scope="module")
def reports():
    return {r.name: r for r in audit_paths(FILES)}     # the seeds' claims (the corpus is tests/audit/test_corpus.py)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_audit_file_is_valid_and_states_its_expected_verdict(path):
    sf = check_file(path)
    assert sf.errors == (), [e.render() for e in sf.errors]
    claims = [d for d in sf.documents if isinstance(d, m.Claim)]
    assert claims and len(claims) == len(sf.documents)
    for c in claims:
        assert has_verdict_expectation(c), c.name
        assert c.question is not None and c.source is not None


def test_expected_verdicts(reports):
    assert {n: r.verdict.status for n, r in reports.items()} == EXPECTED
    for r in reports.values():
        assert r.passed, (r.name, r.outcome)
        assert all(e.passed for e in r.expectations)
    assert exit_code(list(reports.values())) == 0


def test_hallucination_scenario(reports):
    r = reports["the summary's hallucinated entity came from the model's own prefix"]
    s, v = r.static, r.verdict
    assert v.unstated == ("score", "fixed") and v.implied == ("process",)
    assert v.fallacy and s.kind == "local_next_token" and s.answering_kind == "span_prompt"
    assert any(n.name == "dsa" and n.value == 4.8 for n in s.impossible)
    assert "eligible x" in v.answering_contract and "fixed    y[1:t]" in v.answering_contract
    assert 'model    reference:translate-ar' in v.answering_contract
    assert r.claim.model == m.ModelRef("reference", "translate-ar") and r.claim.prompt is not None


def test_figure1_rows_are_three_contracts(reports):
    kinds = [reports[n].static.kind for n in EXPECTED if n.startswith("figure 1")]
    assert kinds == ["local_next_token", "prompt_conditioned", "span_prompt"]
    for n in EXPECTED:
        if n.startswith("figure 1"):
            assert reports[n].verdict.reasons == ()


def test_heta_dsa_is_impossible_and_filled_from_the_toolkit(reports):
    r = reports["HETA's DSA on GPT-J is 4.80"]
    (n,) = r.static.impossible
    assert (n.name, n.value, n.low, n.high) == ("dsa", 4.8, -1.0, 1.0)
    assert r.static.toolkit == "heta" and r.static.filled_by_toolkit == m.Scope.ELEMENTS
    assert r.static.answers is True and not r.verdict.fallacy
    assert reports["IG's DSA on GPT-J is -0.34"].static.impossible == ()


def test_bare_toolkit_claims_follow_each_toolkits_usual_contract(reports):
    cap = reports["Captum's seq_attr shows which prompt tokens the response came from"]
    assert cap.static.toolkit_contract == "span_prompt" and cap.static.kind == "span_prompt"
    assert not cap.verdict.fallacy and cap.static.answers is True
    ins = reports["Inseq IG shows which source sentence the answer came from"]
    assert ins.static.toolkit_contract == "local_next_token" and ins.verdict.fallacy


def test_as_contract_and_parameter_free_notes(reports):
    r = reports["AS attributes a response to its prompt tokens, parameter-free"]
    assert r.static.kind == "span_prompt" and r.static.method == "probabilistic_as"
    notes = " ".join(r.verdict.notes)
    assert "parameter-free" in notes and "marginalised" in notes
    assert "generate(greedy" in notes and "top_p" in notes and "truncation" in notes


# ------------------------------------------------------------------------ rendering


def test_text_report_is_plain_unless_colour_is_asked_for(reports):
    rs = list(reports.values())
    plain = render_text(rs)  # stdout is not a TTY under pytest's capture
    assert "\x1b[" not in plain
    assert "verdict: UNSUPPORTED" in plain and "self-attribution fallacy" in plain
    assert "the contract that would answer the question:" in plain
    assert "dsa = 4.8 is impossible" in plain
    assert "unstated: score, fixed; only implied: process" in plain
    assert f"{len(rs)} claim report(s): {len(rs)} passed, 0 failed" in plain
    assert "\x1b[" in render_text(rs, color=True)


def test_markdown_and_html_reports(reports):
    rs = list(reports.values())
    md = render_markdown(rs)
    assert md.startswith("# Attribution claim audit")
    assert "**verdict: unsupported**" in md and "```" in md and "| element | computed | origin |" in md
    html = render_html(rs)
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "HETA&#x27;s DSA on GPT-J is 4.80" in html and "self-attribution fallacy" in html
    assert "<pre>contract &quot;answers the question of:" in html
    js = to_json(reports["HETA's DSA on GPT-J is 4.80"])
    assert js["verdict"] == "unsupported" and js["impossible"][0]["value"] == 4.8


# ------------------------------------------------------------------------ exit codes


def test_exit_code_semantics(tmp_path):
    f = tmp_path / "c.scope"
    f.write_text('claim "fallacy" { question prompt_level computed { use local_next_token } }\n')
    assert exit_code(audit_paths([f])) == 1                      # unsupported, nothing expected
    f.write_text('claim "fallacy" { question prompt_level computed { use local_next_token } '
                 'expect verdict == "unsupported" }\n')
    assert exit_code(audit_paths([f])) == 0                      # the finding is the expected one
    f.write_text('claim "fallacy" { question prompt_level computed { use local_next_token } '
                 'expect verdict == "underspecified" }\n')
    (r,) = audit_paths([f])
    assert exit_code([r]) == 1 and "expect verdict" in r.outcome
    f.write_text('claim "ok" { question span computed { use span_prompt } }\n')
    assert exit_code(audit_paths([f])) == 0                      # supported
    f.write_text('claim "vague" { question span computed { explain y } }\n')
    assert exit_code(audit_paths([f])) == 1                      # underspecified
    f.write_text('claim "broken" { question nonsense }\n')
    (r,) = audit_paths([f])
    assert r.errors and "nonsense" in r.errors[0] and not r.passed and exit_code([r]) == 1
    f.write_text('claim "broken" { question span\n')
    (r,) = audit_paths([f])
    assert r.errors and r.name == "" and exit_code([r]) == 1       # syntax error: the file
    assert exit_code(audit_paths([tmp_path / "missing.scope"])) == 1
    assert exit_code([]) == 1
    g = tmp_path / "contract_only.scope"
    f.unlink()
    g.write_text('contract "c" { use span_prompt }\n')             # invalid as a runnable contract
    assert audit_paths([tmp_path]) == []                         # contracts are not audited
