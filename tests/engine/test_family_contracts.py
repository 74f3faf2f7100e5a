"""Map families in contracts (``target = each``) and result warnings, end to end."""

from __future__ import annotations


import pytest

from scopecheck.errors import ContractError, ContractValidationError
from scopecheck.loader import load_text
from scopecheck.orchestration.runner import Runner

from tests._models import STORIES, needs_stories

#: a map family's contract up to its expectations (tests/engine/test_family_operators.py uses it too)
FAMILY_HEAD = '''
contract "per-token maps" {{
    model    reference:translate-ar
    prompt   "Translate to French: The dogs are black."
    output   "Les chiens sont noirs."
    use {use}(target = {target})
    method {method}
    seed 0
'''
FAMILY = FAMILY_HEAD + '''    expect mass(y) == 0
    expect rank(x["Translate"]) > 1
}}
'''


def run(text: str, **kw):
    runner = Runner(device="cpu", **kw)
    (contract,) = [d for d in load_text(text, "<test>.scope")]
    cr = runner.run(contract)
    return runner, cr, contract


@pytest.mark.parametrize("use", ["prompt_conditioned", "local_next_token"])
@pytest.mark.parametrize("method", ["occlusion(operator = pad)", "integrated_gradients(steps = 8, baseline = pad)",
                                    "gradient_x_input"])
def test_family_equals_the_single_target_contracts(use, method):
    """Member k of `target = each` is exactly the contract with `target = k`."""
    _, cr, _ = run(FAMILY.format(use=use, target="each", method=method))
    assert cr.error is None, cr.error
    assert len(cr.members) == 5                       # Les chiens sont noirs .
    for k, member in enumerate(cr.members, 1):
        _, single, _ = run(FAMILY.format(use=use, target=k, method=method))
        assert single.error is None, single.error
        a, b = member.result, single.result
        assert member.contract.name == f"per-token maps [y[{k}]]"
        assert a.scope == b.scope and a.method_params == b.method_params
        assert [t.position for t in a.tokens] == [t.position for t in b.tokens]
        for ta, tb in zip(a.tokens, b.tokens):
            assert ta.eligible == tb.eligible and ta.fixed == tb.fixed and ta.target == tb.target
            assert ta.score == pytest.approx(tb.score, abs=2e-5), (k, ta.text)
        assert "family" in a.info


def test_family_expectations_hold_for_every_member():
    runner, cr, contract = run(FAMILY.format(use="prompt_conditioned", target="each", method="occlusion"))
    mass, rank = contract.expects
    ok = runner.evaluate(cr, mass)
    assert ok.passed and "holds for every member (5 maps" in ok.explanation
    assert all(len(m.outcomes) == 1 and m.outcomes[0].passed for m in cr.members)
    bad = runner.evaluate(cr, rank)                    # "Translate" ranks first for some member or not: per member
    per_member = [m.outcomes[-1].passed for m in cr.members]
    assert bad.passed == all(per_member)
    if not bad.passed:
        assert f"{per_member.count(False)} of 5 members fail" in bad.explanation


@pytest.mark.parametrize("text, message", [
    (FAMILY.format(use="span_prompt", target="each", method="occlusion"), "has no parameter `target`"),
    (FAMILY.format(use="classifier", target="each", method="occlusion"), "has no per-token family"),
    (FAMILY.format(use="prompt_conditioned", target="each", method="occlusion").replace(
        "    method", '    explain y["noirs"]\n    method'), "fixes `explain` for each member"),
])
def test_family_refusals_are_positioned(text, message):
    from scopecheck.loader import check_text

    errs = check_text(text, "<test>.scope").errors
    assert errs and any(message in e.message for e in errs), [e.message for e in errs]
    assert all(e.span.line > 0 for e in errs)


JOINED = '''
contract "split word" {{
    model    "{model}"
    prompt   "Once upon a time a girl nam"
    output   "ed Lily"
    use prompt_conditioned(target = "Lily")
    method occlusion
}}
'''


@needs_stories
def test_output_whose_tokens_change_when_joined_is_a_warning_or_a_strict_error():
    text = JOINED.format(model=STORIES)
    _, cr, _ = run(text)
    assert cr.error is None, cr.error
    (w,) = [w for w in cr.result.warnings if "change when joined" in w]
    assert "'▁nam', '▁', 'ed'" in w and "'▁named'" in w        # both tokenizations are named
    _, strict, _ = run(text, strict=True)
    assert strict.result is None and "<test>.scope:5:" in strict.error and "change when joined" in strict.error


@needs_stories
def test_a_clean_split_has_no_warning():
    text = JOINED.format(model=STORIES).replace('"Once upon a time a girl nam"', '"Once upon a time a girl"').replace(
        '"ed Lily"', '"named Lily"')
    _, cr, _ = run(text)
    assert cr.error is None and not [w for w in cr.result.warnings if "joined" in w]


@needs_stories
def test_unconverged_ig_says_raise_steps_and_default_operator_fallback_is_named():
    text = JOINED.format(model=STORIES).replace('"ed Lily"', '"named Lily"').replace(
        '"Once upon a time a girl nam"', '"Once upon a time a girl"').replace(
        "method occlusion", "method integrated_gradients(steps = 2)")
    _, cr, _ = run(text)
    assert cr.error is None, cr.error
    r = cr.result
    assert r.method_params["baseline"] != "pad"           # stories260k has no pad token
    assert any("the default baseline `pad` does not exist for this model" in w and f"`{r.operator}` was used" in w
               for w in r.warnings), r.warnings
    delta = r.info["delta"]
    if abs(delta) > max(1e-3, 0.01 * abs(r.score_input - r.score_baseline)):
        assert any("raise steps" in w and f"{delta:.3g}" in w for w in r.warnings), r.warnings
    else:  # converged even at two steps: nothing to say
        assert not any("raise steps" in w for w in r.warnings)


@needs_stories
def test_family_with_a_bad_method_is_this_contracts_error():
    text = JOINED.format(model=STORIES).replace('target = "Lily"', "target = each").replace(
        "method occlusion", "method occlusion(operator = pad)")
    _, cr, _ = run(text)
    # stories260k has no pad token: known only once the model is loaded
    assert cr.members == [] and cr.error is not None and "<test>.scope:7:" in cr.error and "`pad`" in cr.error
    assert cr.units() == [cr]


def test_execute_refuses_the_wrong_entry_point():
    from scopecheck.engine.run import execute, execute_family

    (family,) = load_text(FAMILY.format(use="prompt_conditioned", target="each", method="occlusion"), "<t>.scope")
    (single,) = load_text(FAMILY.format(use="prompt_conditioned", target=2, method="occlusion"), "<t>.scope")
    with pytest.raises(ContractValidationError, match="execute_family"):
        execute(family)
    with pytest.raises(ContractError, match="target = each"):
        execute_family(single)
