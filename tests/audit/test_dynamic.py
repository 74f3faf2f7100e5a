"""Dynamic audit: re-run a claim under its own contract and under the answering one.

Runs on a tiny randomly initialised Llama saved as a local model directory (word-level
tokenizer of the translate task), so it needs neither the hub nor the reference weights.
The test on ``reference:translate-ar`` runs only once its weights are present.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

import torch

from scopecheck.audit import audit_claim, audit_dynamic, audit_paths, exit_code, render_text, spearman  # noqa: E402
from scopecheck.audit.dynamic import resolve_symbols  # noqa: E402
from scopecheck.reference import REFERENCE_MODELS  # noqa: E402
from scopecheck.loader import load_text  # noqa: E402
from scopecheck.spec import model as m  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
AUDITS = ROOT / "contracts" / "audits"
PROMPT = "Translate to French: The dog is black."


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A 1-layer Llama over the translate vocabulary, weights scaled so that context matters."""
    from scopecheck.training.train import Recipe, build_tokenizer, make_model, save_tokenizer

    out = tmp_path_factory.mktemp("tiny-translate")
    tok = build_tokenizer("translate")
    save_tokenizer(tok, out)
    model = make_model(Recipe("tiny", "translate", hidden_size=16, intermediate_size=32, num_layers=1,
                              num_heads=2, seed=0), len(tok))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def hallucination(model: str, extra: str = "", steps: int = 8) -> m.Claim:
    text = f'''
claim "hallucination re-run" {{
    question prompt_level
    model    {model}
    prompt   "{PROMPT}"
    output   "Le chien est noir"
    computed {{
        method   integrated_gradients(steps = {steps})
        explain  y[t]
        eligible x, y[<t]
    }}
    {extra}
}}
'''
    return load_text(text)[0]


@pytest.fixture(scope="module")
def rerun(tiny_dir):
    c = hallucination(json.dumps(str(tiny_dir)),
                      'reported { map { "black": 0.6, "dog": 0.2, "Le": 0.1, "zebra": 0.3 } }')
    return c, audit_dynamic(c, device="cpu")


# ------------------------------------------------------------------------ the re-run


def test_rerun_under_own_and_answering_contracts(rerun):
    _, d = rerun
    assert d.errors == ()
    assert d.own is not None and d.answer is not None and not d.same_contract
    assert d.own.kind == "local_next_token" and d.answer.kind == "span_prompt"
    assert d.device == "cpu"
    # y[t] resolved to the last output token, "noir", in both runnable contracts
    for v in (d.own, d.answer):
        assert "y[t]" not in v.contract_text and "y[T" in v.contract_text
        (target,) = [t for t in v.tokens if t.target]
        assert target.text == "noir"
    assert "eligible x, y[<T]" in d.own.contract_text
    assert "eligible x\n" in d.answer.contract_text and "fixed    y[1:T]" in d.answer.contract_text
    assert any("completed for the re-run from local_next_token: score, fixed" in n for n in d.notes)


def test_mass_moves_from_prefix_to_prompt(rerun):
    _, d = rerun
    own, ans = d.own, d.answer
    assert own.prefix_mass > 0 and own.prompt_mass + own.prefix_mass == pytest.approx(1.0)
    assert ans.prefix_mass == 0.0 and ans.prompt_mass == pytest.approx(1.0)
    assert d.mass_moved == pytest.approx(own.prefix_mass)
    # held-fixed prefix tokens get exactly zero under the answering contract
    assert all(t.score == 0.0 for t in ans.tokens if t.role == "output")
    assert d.spearman_prompt is not None and -1.0 <= d.spearman_prompt <= 1.0
    own_prompt = [t.score for t in own.tokens if t.role == "prompt"]
    ans_prompt = [t.score for t in ans.tokens if t.role == "prompt"]
    assert d.spearman_prompt == pytest.approx(spearman(own_prompt, ans_prompt))


def test_reported_map_agreement(rerun):
    _, d = rerun
    r = d.reported
    assert [x[0] for x in r.matched] == ["black", "dog", "Le"] and r.unmatched == ("zebra",)
    own = {t.text: t.score for t in d.own.tokens}
    assert r.matched[0][2] == own["black"]
    assert r.spearman_own is not None and -1.0 <= r.spearman_own <= 1.0
    assert r.matched[2][3] == 0.0          # "Le" is held fixed under the answering contract


def test_report_renders_both_maps_and_the_shift(rerun):
    c, d = rerun
    from scopecheck.audit.render import AuditReport, render_html, render_markdown, to_json
    from scopecheck.audit.static import audit_static
    from scopecheck.audit.verdict import judge

    s = audit_static(c)
    rep = AuditReport("x.scope", c.name, 2, c, s, judge(s), d)
    text = render_text([rep], color=False)
    assert "mass moved to the prompt" in text and "\x1b[" not in text
    assert "black" in text and "target" in text and "fixed" in text
    md = render_markdown([rep])
    assert "| `black` | prompt |" in md and "mass moved to the prompt" in md
    html = render_html([rep])
    assert "answering contract" in html and "held fixed" in html
    js = json.loads(json.dumps(to_json(rep)))
    assert js["dynamic"]["own"]["kind"] == "local_next_token"
    assert js["dynamic"]["mass_moved"] == pytest.approx(d.mass_moved)


def test_same_contract_runs_once(tiny_dir):
    c = load_text(f'''
claim "top row" {{
    question next_token
    model    {json.dumps(str(tiny_dir))}
    prompt   "{PROMPT}"
    output   "Le chien est noir."
    computed {{
        method   occlusion
        use      local_next_token(target = "noir")
    }}
}}''')[0]
    d = audit_dynamic(c, device="cpu", checks=())
    assert d.errors == () and d.same_contract and d.answer is None
    assert d.own.kind == "local_next_token" and d.faithfulness is None


# ------------------------------------------------------------------------ faithfulness hook


def test_faithfulness_is_skipped_without_the_registry(rerun, monkeypatch):
    c, _ = rerun
    monkeypatch.setitem(sys.modules, "scopecheck.checks.registry", None)  # import raises ModuleNotFoundError
    d = audit_dynamic(c, device="cpu")
    assert d.errors == () and d.faithfulness is None
    assert any("faithfulness skipped: scopecheck.checks.registry is not available" in n for n in d.notes)


def test_faithfulness_under_each_contract_with_the_real_registry(rerun):
    _, d = rerun
    assert d.faithfulness is not None, d.notes
    assert set(d.faithfulness) == {"own", "answer"}
    for label in ("own", "answer"):
        assert "aopc" in d.faithfulness[label]["deletion"]


def test_faithfulness_uses_the_registry_when_present(rerun, monkeypatch):
    c, _ = rerun
    from scopecheck.checks.result import CheckResult

    calls = []

    def run_check(name, result, params, seed=0):
        calls.append((name, result.kind))
        return CheckResult(name, {"aopc": 0.5, "naopc": 0.25}, {}, {}, {"protocol": "rescore"})

    fake = types.ModuleType("scopecheck.checks.registry")
    fake.run_check = run_check
    monkeypatch.setitem(sys.modules, "scopecheck.checks.registry", fake)
    d = audit_dynamic(c, device="cpu", checks=("deletion",))
    assert sorted(calls) == [("deletion", "local_next_token"), ("deletion", "span_prompt")]
    assert d.faithfulness == {"own": {"deletion": {"aopc": 0.5, "naopc": 0.25}},
                              "answer": {"deletion": {"aopc": 0.5, "naopc": 0.25}}}


# ------------------------------------------------------------------------ when there is nothing to run


def test_claim_without_model_or_prompt_is_not_rerun():
    c = load_text('claim "c" { question next_token computed { use local_next_token } }')[0]
    d = audit_dynamic(c)
    assert d.own is None and d.errors == () and "names no model and no prompt" in d.notes[0]
    r = audit_claim(c, dynamic=True)
    assert r.passed  # supported; nothing to re-run is not a failure


def test_unloadable_model_is_a_dynamic_error(tmp_path):
    c = hallucination(json.dumps(str(tmp_path / "missing")), 'expect verdict == "unsupported"')
    r = audit_claim(c, dynamic=True, device="cpu")
    assert r.dynamic.errors and "does not exist" in r.dynamic.errors[0]
    assert not r.passed and exit_code([r]) == 1


# ------------------------------------------------------------------------ helpers


def test_resolve_symbols_maps_claim_indices_to_T():
    t, T = m.Symbol("t"), m.Symbol("T")
    sc = m.Scope(m.Score("logprob", m.Selector("y", "at", t), (m.Selector("x"), m.Selector("y", "lt", t))), (),
                 m.Selector("y", "at", t), m.Process("autoregressive"), (m.Selector("x"), m.Selector("y", "lt", t)))
    r = resolve_symbols(sc)
    assert r.explain == m.Selector("y", "at", T) and r.eligible[1] == m.Selector("y", "lt", T)
    assert r.score.given[1] == m.Selector("y", "lt", T)
    text = m.Selector("y", "at", m.TextRef("noir"))
    assert resolve_symbols(m.Scope(explain=text)).explain == text


def test_spearman():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254)
    assert spearman([1, 1], [1, 2]) is None and spearman([1], [1]) is None


# ------------------------------------------------------------------------ the reference model


TRANSLATE = REFERENCE_MODELS["translate-ar"].directory / "model.safetensors"


def test_hallucination_file_rerun_on_the_reference_model():
    (r,) = audit_paths([AUDITS / "hallucination.scope"], dynamic=True, device="cpu")
    d = r.dynamic
    assert d.errors == (), d.errors
    assert r.passed and r.verdict.status == "unsupported"
    assert d.own.kind == "local_next_token" and d.answer.kind == "span_prompt"
    # seed 000, Figure 1 top row: under the local contract the prefix carries most of the mass;
    # the answering contract moves all of it to the prompt, where "black" gets positive credit
    assert d.own.prefix_mass > d.own.prompt_mass
    assert d.answer.prefix_mass == 0.0 and d.answer.prompt_mass == pytest.approx(1.0)
    assert d.mass_moved == pytest.approx(d.own.prefix_mass)
    black = next(t for t in d.answer.tokens if t.role == "prompt" and t.text == "black")
    assert black.score > 0


def test_figure1_middle_claim_rerun_on_the_reference_model():
    reports = audit_paths([AUDITS / "figure1_claims.scope"], dynamic=True, device="cpu")
    assert all(r.passed and r.dynamic.errors == () for r in reports)
    top, middle, bottom = reports
    assert top.dynamic.same_contract and top.dynamic.own.prefix_mass > 0
    # prompt-conditioned and its span-level analog for the single token "noir" compute the same map
    assert middle.dynamic.own.kind == "prompt_conditioned" and middle.dynamic.answer.kind == "span_prompt"
    assert middle.dynamic.spearman_prompt == pytest.approx(1.0)
    assert middle.dynamic.mass_moved == pytest.approx(0.0)
    assert bottom.dynamic.same_contract and bottom.dynamic.own.prefix_mass == 0.0


def test_underspecified_computation_runs_only_the_answering_contract(tiny_dir):
    c = load_text(f'''
claim "vague" {{
    question prompt_level
    model    {json.dumps(str(tiny_dir))}
    prompt   "{PROMPT}"
    output   "Le chien est noir"
    computed {{ method occlusion }}
    expect verdict == "underspecified"
}}''')[0]
    r = audit_claim(c, dynamic=True, device="cpu")
    d = r.dynamic
    assert d.own is None and d.answer is not None and d.answer.kind == "span_prompt"
    assert d.errors == () and any("cannot be reconstructed" in n for n in d.notes)
    assert r.verdict.status == "underspecified" and r.passed
