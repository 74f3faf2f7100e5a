"""Static audit of claims: unstated elements, toolkit filling, question vs contract, numbers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from scopecheck.audit import QUESTION_CONTRACT, audit_static, evaluate_expectations, judge
from scopecheck.dsl.parser import parse_text
from scopecheck.loader import load_text
from scopecheck.spec import model as m
from scopecheck.spec.standard import STANDARD

ELEMENTS = ("score", "fixed", "explain", "process", "eligible")

HALLUCINATION = '''
claim "the summary's hallucinated entity came from the model's own prefix" {
    question  prompt_level
    computed {
        method   integrated_gradients
        explain  y[t]
        eligible x, y[<t]
    }
    reported { metric dsa = 4.8 }
}
'''

MIDDLE = '''
claim "black explains noir given the prefix" {
    question prompt_level
    prompt   "Translate to French: The dog is black."
    output   "Le chien est noir."
    computed {
        method   integrated_gradients
        score    log p(y["noir"] | x, y[<"noir"])
        fixed    y[<"noir"]
        explain  y["noir"]
        process  autoregressive
        eligible x
    }
}
'''


def claim(text: str) -> m.Claim:
    docs = load_text(text)
    assert len(docs) == 1 and isinstance(docs[0], m.Claim)
    return docs[0]


def computed(question: str, body: str, extra: str = "") -> m.Claim:
    return claim(f'claim "c" {{\n question {question}\n{extra}\n computed {{\n{body}\n }}\n}}\n')


# ------------------------------------------------------------------------ the DESIGN example


def test_hallucination_claim_matches_the_design_verdict():
    a = audit_static(claim(HALLUCINATION))
    v = judge(a)
    assert a.unstated == ("score", "fixed")
    assert dict(a.implied)["process"].startswith("autoregressive")
    assert a.kind == "local_next_token"
    assert a.fallacy and a.answers is False
    assert "self-attribution fallacy" in a.mismatch
    assert a.answering_kind == "span_prompt"
    assert v.status == "unsupported"
    assert v.fallacy
    assert any("self-attribution fallacy" in r for r in v.reasons)
    assert any("dsa = 4.8 is impossible" in r and "[-1, 1]" in r for r in v.reasons)
    assert any("score, fixed" in r for r in v.reasons)
    # the contract that answers the question, written out in full as contract text; what the claim
    # does not state (its model, prompt, output) is a marked placeholder, never borrowed
    from scopecheck.audit.static import PLACEHOLDER_NOTE

    assert "model    <model>   " + PLACEHOLDER_NOTE in v.answering_contract
    assert "reference:" not in v.answering_contract
    doc = parse_text("\n".join(ln for ln in v.answering_contract.splitlines() if PLACEHOLDER_NOTE not in ln))[0]
    assert isinstance(doc, m.Contract) and doc.use is None
    t = m.Symbol("t")
    assert doc.scope.eligible == (m.Selector("x"),)
    assert doc.scope.fixed == (m.Selector("y", "range", 1, t),)
    assert doc.scope.explain == m.Selector("y", "range", t, t)
    assert doc.scope.process.kind == "autoregressive"
    assert doc.scope.score == m.Score("logprob", m.Selector("y", "range", t, t),
                                      (m.Selector("x"), m.Selector("y", "lt", t)))
    assert "eligible x\n" in v.answering_contract


def test_fully_stated_claim_with_matching_question_is_supported():
    a = audit_static(claim(MIDDLE))
    v = judge(a)
    assert v.status == "supported", v.reasons
    assert v.reasons == ()
    assert a.unstated == () and a.implied == ()
    assert a.kind == "prompt_conditioned" and a.answers is True and not a.fallacy


@pytest.mark.parametrize("element", ELEMENTS)
def test_removing_one_element_makes_the_claim_underspecified_naming_it(element):
    full = claim(MIDDLE)
    scope = dataclasses.replace(full.computed.scope, **{element: None})
    c = dataclasses.replace(full, computed=dataclasses.replace(full.computed, scope=scope))
    v = judge(audit_static(c))
    assert v.status == "underspecified", v.reasons
    assert any(element in r for r in v.reasons), v.reasons
    others = [e for e in ELEMENTS if e != element]
    assert not any(f"not stated: {e}" in r for r in v.reasons for e in others)


def test_an_implied_process_still_counts_as_not_stated():
    full = claim(MIDDLE)
    c = dataclasses.replace(full, computed=dataclasses.replace(
        full.computed, scope=dataclasses.replace(full.computed.scope, process=None)))
    a = audit_static(c)
    assert a.kind == "prompt_conditioned"          # still classified
    assert a.unstated == () and dict(a.implied)["process"].startswith("autoregressive")
    assert judge(a).implied == ("process",)


def test_question_not_stated_is_underspecified():
    c = claim(MIDDLE.replace("question prompt_level", ""))
    v = judge(audit_static(c))
    assert v.status == "underspecified"
    assert any("question" in r for r in v.reasons)


# ------------------------------------------------------------------------ toolkits


def test_toolkit_fills_its_usual_contract_and_says_so():
    a = audit_static(computed("next_token", "toolkit inseq\n method integrated_gradients"))
    assert a.filled_by_toolkit == ELEMENTS
    assert a.toolkit == "inseq" and a.toolkit_contract == "local_next_token"
    assert a.kind == "local_next_token" and a.unstated == ()
    assert any("filled from inseq's usual contract (local_next_token)" in n for n in a.notes)
    assert judge(a).status == "supported"


def test_toolkit_read_as_prompt_level_is_the_fallacy():
    a = audit_static(computed("prompt_level", "toolkit inseq"))
    v = judge(a)
    assert a.toolkit_contract == "local_next_token" and a.kind == "local_next_token"
    assert v.status == "unsupported" and v.fallacy


def test_toolkit_table_states_both_scores_and_its_source():
    from scopecheck.spec.toolkits import TOOLKITS

    cap, ins = TOOLKITS["captum"], TOOLKITS["inseq"]
    assert (cap.per_token, cap.sequence) == ("prompt_conditioned", "span_prompt")
    assert cap.source.startswith("captum 0.9.0, captum/attr/_core/llm_attr.py")
    assert (ins.per_token, ins.sequence) == ("local_next_token", None)
    assert ins.source.startswith("inseq 0.7.1") and "attribute_target" in ins.note
    assert ins.contract_for(False) == "local_next_token" and cap.contract_for(False) == "span_prompt"


@pytest.mark.parametrize("question", ["prompt_level", "span", "output"])
def test_bare_captum_claim_about_the_generation_is_span_level_not_the_fallacy(question):
    a = audit_static(computed(question, "toolkit captum"))
    v = judge(a)
    assert a.toolkit_contract == "span_prompt" and a.kind == "span_prompt"
    assert a.filled_by_toolkit == ELEMENTS
    assert not a.fallacy and not v.fallacy and a.answers is True
    assert not any(s.space == "y" for s in a.scope.eligible)
    assert any("sequence (summed) score is used (span_prompt" in n and "llm_attr.py" in n for n in a.notes)


def test_bare_captum_claim_about_one_token_is_prompt_conditioned():
    a = audit_static(computed("prompt_level", 'toolkit captum\n explain y["noir"]',
                              'prompt "Translate to French: The dog is black."\n output "Le chien est noir."'))
    assert a.toolkit_contract == "prompt_conditioned" and a.kind == "prompt_conditioned"
    assert a.scope.fixed == (m.Selector("y", "lt", m.TextRef("noir")),)
    assert not a.fallacy and a.answers is True and judge(a).status == "supported"
    n = audit_static(computed("next_token", "toolkit captum"))
    assert n.toolkit_contract == "prompt_conditioned" and n.answers is False and not n.fallacy
    assert "answered by local_next_token" in n.mismatch


def test_bare_captum_claim_over_a_span_is_span_level():
    a = audit_static(computed("span", "toolkit captum\n explain y[2:4]"))
    assert a.toolkit_contract == "span_prompt" and a.kind == "span_prompt" and not a.fallacy


def test_bare_inseq_claim_is_local_next_token_for_any_question():
    for q in ("next_token", "prompt_level", "span"):
        a = audit_static(computed(q, "toolkit inseq"))
        assert a.toolkit_contract == "local_next_token" and a.kind == "local_next_token"
        assert a.fallacy == (q != "next_token")


def test_answering_contract_keeps_the_claims_method_parameters():
    a = audit_static(computed("prompt_level", "toolkit inseq\n method integrated_gradients(steps = 32)"))
    v = judge(a)
    assert v.fallacy and v.answering_contract is not None
    assert "integrated_gradients(steps = 32)" in v.answering_contract
    assert "eligible x" in v.answering_contract
    # a method that does not compute the answering contract is replaced, without its parameters
    b = audit_static(computed("prompt_level", "use local_next_token\n method heta(beta = 0.5)"))
    assert "method integrated_gradients\n" in b.answering_text and "beta" not in b.answering_text


def test_toolkit_fills_only_what_is_missing_and_keeps_the_stated_target():
    a = audit_static(computed("next_token", 'toolkit inseq\n explain y["noir"]',
                              'prompt "Translate to French: The dog is black."\n output "Le chien est noir."'))
    assert a.origins["explain"] == "stated"
    assert a.filled_by_toolkit == ("score", "fixed", "process", "eligible")
    assert a.scope.score.target == m.Selector("y", "at", m.TextRef("noir"))
    assert judge(a).status == "supported"


def test_prompt_to_output_toolkit_on_an_autoregressive_process_is_span_level():
    a = audit_static(computed("output", "toolkit context_cite\n process autoregressive"))
    assert a.toolkit_contract == "span_prompt" and a.kind == "span_prompt"
    assert judge(a).status == "supported"
    d = audit_static(computed("output", "toolkit context_cite"))
    assert d.kind == "prompt_to_output" and judge(d).status == "supported"


def test_use_fills_elements_as_stated_by_name():
    a = audit_static(computed("span", "use span_prompt\n method integrated_gradients"))
    assert set(a.elements_from("use")) == set(ELEMENTS) and a.unstated == ()
    assert judge(a).status == "supported"


# ------------------------------------------------------------------------ question vs computation


def test_question_to_contract_mapping_is_documented():
    assert QUESTION_CONTRACT == {"prompt_level": "span_prompt", "next_token": "local_next_token",
                                 "span": "span_prompt", "state": "state_level", "stage": "denoising_stage",
                                 "output": "prompt_to_output"}
    assert set(QUESTION_CONTRACT) == set(m.QUESTIONS)


@pytest.mark.parametrize("question", m.QUESTIONS)
def test_the_answering_contract_answers_each_question(question):
    kind = QUESTION_CONTRACT[question]
    use = f"use {kind}" + ("(step = 3)" if kind == "state_level" else "")
    a = audit_static(computed(question, use))
    assert a.kind == kind and a.answers is True
    assert judge(a).status == "supported", judge(a).reasons


@pytest.mark.parametrize("question, kind", [
    ("span", "prompt_conditioned"),
    ("next_token", "prompt_conditioned"),
    ("next_token", "span_prompt"),
    ("stage", "prompt_to_output"),
    ("state", "denoising_stage"),
])
def test_a_contract_mismatch_is_unsupported_without_the_fallacy(question, kind):
    a = audit_static(computed(question, f"use {kind}"))
    v = judge(a)
    assert v.status == "unsupported" and not v.fallacy
    assert a.answers is False and a.answering_kind in a.mismatch
    assert v.answering_contract is not None and "contract " in v.answering_contract


@pytest.mark.parametrize("question", ["prompt_level", "span", "output"])
def test_prefix_eligible_under_a_prompt_question_is_the_fallacy(question):
    a = audit_static(computed(question, "use local_next_token"))
    assert a.fallacy and "self-attribution fallacy" in a.mismatch


def test_the_fallacy_is_found_even_when_the_process_is_not_stated():
    a = audit_static(computed("output", "eligible x, y[<t]"))
    assert a.fallacy and a.kind == "local_next_token"


def test_diffusion_questions_follow_the_process():
    a = audit_static(computed("prompt_level", "use prompt_to_output"))
    assert a.answering_kind == "prompt_to_output" and a.answers is True


# ------------------------------------------------------------------------ reported numbers


@pytest.mark.parametrize("name, value, possible", [
    ("dsa", 4.8, False), ("dsa", -0.34, True), ("dsa", 1.0, True), ("dsa", -1.2, False),
    ("naopc", 1.2, False), ("naopc", 0.7, True), ("spearman", -1.5, False), ("infidelity", -0.1, False),
    ("aopc", 12.0, True), ("soft_nc", 9.78, True), ("precision", 1.01, False),
])
def test_reported_numbers_are_checked_against_their_range(name, value, possible):
    c = claim(f'claim "c" {{ question next_token computed {{ use local_next_token }} '
              f'reported {{ metric {name} = {value} }} }}')
    a = audit_static(c)
    assert (not a.impossible) == possible
    v = judge(a)
    assert v.status == ("supported" if possible else "unsupported")
    if not possible:
        assert a.impossible[0].name == name and "impossible" in v.impossible[0]


def test_dsa_message_explains_the_range():
    a = audit_static(claim(HALLUCINATION))
    (n,) = a.impossible
    assert (n.low, n.high) == (-1.0, 1.0)
    assert "DSA" in n.why and "normalised to one" in n.why


def test_unknown_metric_is_noted_not_judged():
    c = claim('claim "c" { question next_token computed { use local_next_token } reported { metric bleu = 97.0 } }')
    a = audit_static(c)
    assert a.impossible == () and a.unknown_metrics == ("bleu",)
    assert judge(a).status == "supported"


# ------------------------------------------------------------------------ method and coherence


@pytest.mark.parametrize("method, use, alternative", [
    ("heta", "span_prompt", "context_cite"),
    ("stage_perturbation", "local_next_token", "integrated_gradients"),
    ("probabilistic_as", "prompt_conditioned", "occlusion"),
])
def test_method_that_cannot_compute_the_contract_is_unsupported(method, use, alternative):
    question = {"span_prompt": "span", "local_next_token": "next_token", "prompt_conditioned": "prompt_level"}[use]
    a = audit_static(computed(question, f"use {use}\n method {method}"))
    v = judge(a)
    assert v.status == "unsupported"
    assert a.method_message and method in a.method_message and alternative in a.method_message


def test_incoherent_computed_scope_is_unsupported():
    a = audit_static(computed("next_token", "score log p(y[t] | x, y[<t])\n fixed nothing\n explain y[t]\n"
                                            " process autoregressive\n eligible x, y[<=t]"))
    v = judge(a)
    assert v.status == "unsupported"
    assert any("caused only by the prompt and earlier tokens" in r for r in v.reasons)


def test_symbolic_indices_are_fine_in_claims():
    a = audit_static(computed("next_token", "score log p(y[t] | x, y[<t])\n fixed nothing\n explain y[t]\n"
                                            " process autoregressive\n eligible x, y[<t]"))
    assert a.inconsistencies == ()
    assert judge(a).status == "supported"


def test_as_notes_name_the_choices_behind_parameter_free():
    a = audit_static(computed("prompt_level", "use span_prompt\n method probabilistic_as",
                              "output generate(greedy)"))
    text = " ".join(a.notes)
    assert "parameter-free" in text and "generate(greedy)" in text and "top_p" in text
    assert judge(a).status == "supported"


# ------------------------------------------------------------------------ claim expectations


def test_claim_expectations_about_the_audit():
    c = claim(HALLUCINATION.replace("reported", 'expect verdict == "unsupported"\n expect fallacy\n'
                                                 ' expect unstated == 2\n expect "score" in unstated\n'
                                                 ' expect "eligible" in unstated\n expect verdict == "supported"\n'
                                                 ' expect fallacy == 0\n reported'))
    a = audit_static(c)
    got = [o.passed for o in evaluate_expectations(c, a, judge(a))]
    assert got == [True, True, True, True, False, False, False]


def test_static_audit_imports_no_torch():
    code = ("import sys; from scopecheck.audit import audit_static, judge; from scopecheck.loader import load_text;"
            f"judge(audit_static(load_text({HALLUCINATION!r})[0])); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_standard_contract_has_a_title_for_reports():
    for kind in QUESTION_CONTRACT.values():
        assert STANDARD[kind].title


# ------------------------------------------------------------------ the first generated token

FIRST = '''
 method   integrated_gradients
 score    log p(y[{t}] | x, y[<{t}])
 fixed    {fixed}
 explain  y[{t}]
 process  autoregressive
 eligible x
'''


@pytest.mark.parametrize("fixed", ["nothing", "y[<1]"])
def test_on_y1_prompt_conditioned_and_local_next_token_are_one_computation(fixed):
    """y[<1] is empty: E = x with nothing (or the empty prefix) fixed is both the prompt-conditioned
    and the local next-token contract, so it answers a next-token question."""
    a = audit_static(computed("next_token", FIRST.format(t=1, fixed=fixed)))
    assert a.kind == "prompt_conditioned" and a.answers is True, a
    assert judge(a).status == "supported", judge(a).reasons
    assert any("y[1], which has no generated prefix" in n for n in a.notes)


def test_on_a_later_token_the_prompt_conditioned_map_does_not_answer_a_next_token_question():
    a = audit_static(computed("next_token", FIRST.format(t=3, fixed="y[<3]")))
    assert a.kind == "prompt_conditioned" and a.answers is False
    assert judge(a).status == "unsupported"


def test_a_computation_of_the_questions_own_answering_kind_answers_it():
    """Under a diffusion process a span question is answered by prompt_to_output (answering_kind);
    a claim computing exactly that contract answers it (it was called a mismatch while the audit
    named that very contract as the answer)."""
    a = audit_static(computed("span", " toolkit context_cite"))
    assert a.kind == "prompt_to_output" and a.answers is True, a
    assert judge(a).status != "unsupported"
