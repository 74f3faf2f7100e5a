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
