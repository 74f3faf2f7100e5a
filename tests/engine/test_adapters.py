"""Peer toolkits as methods (issue 25 item 2): ``captum.*`` and ``inseq.*`` adapters.

Each adapter's map is compared with scopecheck's own method on the same quantity (same contract,
same baseline, same quadrature), in float64 on the reference model: the toolkit computes, the
contract decides what it is given. A toolkit that is not installed skips its tests, naming why."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
import torch

import scopecheck
from scopecheck.errors import ContractErrors, ContractValidationError

PROMPT = "Translate to French: The dog is black."
OUTPUT = "Le chien est noir."
TOL = 1e-6

captum = pytest.importorskip("captum", reason="captum is not installed (pip install 'scopecheck[captum]')")


def _text(method: str, use: str = 'prompt_conditioned(target = "noir")', score: str = "") -> str:
    return (f'contract "noir" {{\n    model reference:translate-ar\n    prompt {json.dumps(PROMPT)}\n'
            f"    output {json.dumps(OUTPUT)}\n    use {use}\n{score}    method {method}\n}}\n")


def _run(method: str, **kw: str):
    return scopecheck.run(_text(method, **kw), device="cpu", dtype="float64")


def _max_diff(a, b) -> float:
    assert [t.position for t in a.tokens] == [t.position for t in b.tokens]
    return max(abs(x.score - y.score) for x, y in zip(a.tokens, b.tokens))


def _zero_outside(r) -> None:
    assert all(t.score == 0.0 for t in r.tokens if not t.eligible)
    assert any(t.score != 0.0 for t in r.tokens if t.eligible)


SPAN = "span_prompt"


@pytest.mark.parametrize("use, own, adapter", [
    ('prompt_conditioned(target = "noir")', "integrated_gradients(steps = 50, baseline = pad, rule = gauss_legendre)",
     "captum.integrated_gradients(steps = 50, baseline = pad)"),
    ('prompt_conditioned(target = "noir")', "integrated_gradients(steps = 32, baseline = unk, rule = riemann)",
     "captum.integrated_gradients(steps = 32, baseline = unk, rule = riemann)"),
    (SPAN, "integrated_gradients(steps = 50, baseline = pad)", "captum.integrated_gradients(steps = 50)"),
    (SPAN, "occlusion(operator = pad)", "captum.occlusion(operator = pad)"),
    ('prompt_conditioned(target = "noir")', "occlusion(operator = unk)", "captum.occlusion(operator = unk)"),
    (SPAN, "gradient_x_input", "captum.gradient_x_input"),
])
def test_captum_agrees_with_own_method(use, own, adapter):
    """Captum's map equals scopecheck's own method's on the same contract within 1e-6 (float64),
    is exactly zero outside E, and (IG) its completeness gap is the own method's."""
    a, b = _run(own, use=use), _run(adapter, use=use)
    assert _max_diff(a, b) <= TOL
    _zero_outside(b)
    assert b.info["toolkit"] == f"captum {metadata.version('captum')}"
    if "integrated_gradients" in adapter:
        assert abs(b.info["delta"] - a.info["delta"]) <= TOL
        assert abs(b.info["score_baseline"] - a.info["score_baseline"]) <= 1e-9


def test_captum_prob_score_occlusion_agrees():
    """``LLMAttribution(attr_target = "prob")``: the contract's probability score."""
    score = '    score p(y["noir"] | x, y[<"noir"])\n'
    a, b = _run("occlusion(operator = pad)", score=score), _run("captum.occlusion", score=score)
    assert _max_diff(a, b) <= TOL


def test_captum_call_is_stated_in_the_result_and_json():
    from scopecheck.report.jsonout import run_record

    r = _run("captum.integrated_gradients(steps = 20, baseline = unk, rule = riemann)")
    call = r.info["call"]
    assert call.startswith("captum.attr.LLMGradientAttribution(LayerIntegratedGradients(model, "
                           "model.get_input_embeddings()), tokenizer).attribute(")
    assert 'n_steps=20, method="riemann_middle"' in call and "-> token_attr[0]" in call
    first = min(t.position for t in r.tokens if t.target)
    assert f"target=ids[{first}:{first + 1}]" in call
    assert "baselines=1 (unk" in call          # the reference tokenizer's unk id
    rec = run_record(r)
    assert rec["info"]["call"] == call and rec["info"]["toolkit"].startswith("captum ")
    assert rec["method"]["name"] == "captum.integrated_gradients"


def test_captum_refuses_a_contract_it_cannot_express():
    """local next-token (the prefix attributed) is no Captum LLM contract: refused, naming the ones it is."""
    with pytest.raises(ContractErrors) as ei:
        _run("captum.integrated_gradients", use='local_next_token(target = "noir")')
    msg = str(ei.value)
    assert "does not support local_next_token" in msg and "supports prompt_conditioned, span_prompt" in msg


def test_captum_refuses_a_score_it_cannot_express():
    """Captum's gradient attributions target the log-probability: a logit score is refused, naming it."""
    with pytest.raises(ContractValidationError) as ei:
        _run("captum.integrated_gradients", score='    score logit(y["noir"])\n')
    msg = str(ei.value)
    assert "cannot attribute a logit score" in msg and "logprob" in msg


def test_captum_refuses_an_embedding_baseline():
    with pytest.raises(ContractErrors) as ei:
        _run("captum.integrated_gradients(baseline = zero)")
    assert "pad | mask | unk" in str(ei.value)


# ------------------------------------------------------------------------------------------ inseq

def _inseq():
    return pytest.importorskip("inseq", reason="inseq is not installed (pip install 'scopecheck[inseq]')")


PROB = '    score p(y["noir"] | x, y[<"noir"])\n'


@pytest.mark.parametrize("use", ['local_next_token(target = "noir")', 'prompt_conditioned(target = "noir")'])
@pytest.mark.parametrize("score", [PROB, ""])
@pytest.mark.parametrize("own, adapter", [
    ("integrated_gradients(steps = 50, baseline = unk, rule = gauss_legendre)", "inseq.integrated_gradients"),
    ("occlusion(operator = unk)", "inseq.occlusion"),
])
def test_inseq_agrees_with_own_method(use, score, own, adapter):
    """Inseq's map (its default probability score, or log p) equals scopecheck's own on the same
    local next-token / prompt-conditioned contract within 1e-6 in float64, zero outside E (the
    BOS, which Inseq's own baseline would interpolate, held fixed through the baseline ids)."""
    _inseq()
    a, b = _run(own, use=use, score=score), _run(adapter, use=use, score=score)
    assert _max_diff(a, b) <= TOL
    _zero_outside(b)
    assert b.info["toolkit"] == f"inseq {metadata.version('inseq')}"
    assert b.info["call"].startswith(f'inseq.load_model(model, "{adapter.split(".")[1]}", tokenizer=tokenizer)')
    assert ('attributed_fn="probability"' in b.info["call"]) and (("'logprob': True" in b.info["call"]) == (not score))


def test_inseq_refuses_a_span_contract():
    _inseq()
    with pytest.raises(ContractErrors) as ei:
        _run("inseq.integrated_gradients", use="span_prompt")
    msg = str(ei.value)
    assert "does not support span_prompt" in msg and "supports local_next_token, prompt_conditioned" in msg


def test_inseq_refuses_a_contrastive_score():
    _inseq()
    with pytest.raises(ContractValidationError) as ei:
        _run("inseq.occlusion", score='    score log p(y["noir"] | x, y[<"noir"]) - log p("blanc" | x, y[<"noir"])\n')
    assert "cannot attribute a contrastive score" in str(ei.value) and "prob, logprob, logit" in str(ei.value)


# ------------------------------------------------------------------------------ outside registration

PLUGIN = '''
"""A method package outside scopecheck: leave-one-out with the pad token, written from scratch."""
import torch
from scopecheck import MethodEntry, ParamSpec

def loo(problem, params):
    from scopecheck.engine.problem import MethodOutput
    pad = problem.operators["pad"]
    scores = torch.zeros(problem.length, dtype=problem.embeds.dtype)
    with torch.no_grad():
        base = problem.objective(problem.embeds.unsqueeze(0))[0]
        for i in problem.eligible_positions:
            e = problem.embeds.clone()
            e[i] = pad[i]
            scores[i] = base - problem.objective(e.unsqueeze(0))[0]
    return MethodOutput(scores=scores, info={"plugin": "loo"})

ENTRY = MethodEntry("plugin.loo", "perturbation", "leave one out (pad), from a plugin",
                    ("prompt_conditioned", "span_prompt"), {}, "scopecheck_dummy_plugin:loo")
'''


def test_methods_register_from_an_installed_distributions_entry_point(tmp_path, monkeypatch):
    """A distribution on sys.path declaring ``[scopecheck.methods]`` is registered by
    ``load_entry_points`` and runs like a shipped method (its map is scopecheck's occlusion's)."""
    from scopecheck.spec import registry

    (tmp_path / "scopecheck_dummy_plugin.py").write_text(PLUGIN, encoding="utf-8")
    dist = tmp_path / "scopecheck_dummy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: scopecheck-dummy-plugin\nVersion: 0.1\n",
                                   encoding="utf-8")
    (dist / "entry_points.txt").write_text("[scopecheck.methods]\nloo = scopecheck_dummy_plugin:ENTRY\n"
                                           "broken = scopecheck_dummy_plugin:MISSING\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plugin.loo" not in registry.METHODS
    try:
        loaded = registry.load_entry_points()
        assert "loo" in loaded and "plugin.loo" in registry.METHODS
        assert "MISSING" in registry.PLUGIN_ERRORS["broken"]
        own, plug = _run("occlusion(operator = pad)"), _run("plugin.loo")
        assert _max_diff(own, plug) <= 1e-12 and plug.info["plugin"] == "loo"
        with pytest.raises(ContractErrors, match="supports prompt_conditioned, span_prompt"):
            _run("plugin.loo", use='local_next_token(target = "noir")')
    finally:
        registry.PLUGIN_ERRORS.pop("broken", None)
        if "plugin.loo" in registry.METHODS:
            registry.unregister_method("plugin.loo")


def test_list_shows_the_adapters_and_their_contracts(capsys):
    from scopecheck.cli import main
    from scopecheck.spec.adapters import ADAPTERS

    main(["list", "--width", "300"])
    out = capsys.readouterr().out
    for a in ADAPTERS:
        row = next(ln for ln in out.splitlines() if f" {a.name} " in ln)
        assert "toolkit" in row and row.count("yes") == len(a.supports)


def test_terminal_report_states_the_toolkit_and_call():
    from rich.console import Console

    from scopecheck.report.terminal import header

    r = _run("captum.occlusion")
    con = Console(width=400, record=True)
    con.print(header(r, color=False))
    text = con.export_text()
    assert f"captum {metadata.version('captum')}: captum.attr.LLMAttribution(FeatureAblation(model)" in text


# ------------------------------------------------------------------------------------------ audit

def _toolkit_claim(toolkit: str) -> str:
    return (f'claim "{toolkit} IG" {{\n    question prompt_level\n    model reference:translate-ar\n'
            f"    prompt {json.dumps(PROMPT)}\n    output {json.dumps(OUTPUT)}\n"
            f"    computed {{\n        toolkit {toolkit}\n        method integrated_gradients(steps = 16)\n"
            '        explain y["noir"]\n    }\n}\n')


def test_audit_dynamic_runs_a_toolkit_claim_with_the_toolkit(monkeypatch):
    """``toolkit captum``: the own contract (span_prompt, Captum's sequence score) is computed by
    ``captum.integrated_gradients`` with the claim's steps; without captum it falls back, saying so."""
    from scopecheck.audit import audit_dynamic
    from scopecheck.loader import load_text
    from scopecheck.spec import adapters

    (claim,) = load_text(_toolkit_claim("captum"))
    d = audit_dynamic(claim, device="cpu", checks=())
    assert d.errors == (), d.errors
    assert d.own.method == "captum.integrated_gradients" and d.own.method_params["steps"] == 16
    assert any(f"computed by captum {metadata.version('captum')} itself" in n for n in d.notes)
    monkeypatch.setattr(adapters, "toolkit_version", lambda name: None)
    d = audit_dynamic(claim, device="cpu", checks=())
    assert d.own.method == "integrated_gradients"
    assert any("captum is not installed, so scopecheck's own `integrated_gradients`" in n for n in d.notes)
