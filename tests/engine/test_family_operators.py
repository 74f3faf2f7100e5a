"""Every member of a map family equals its single-target contract under every operator a
single target accepts, ``delete`` included (issue 23, item 2: a ``local_next_token`` family
refused ``delete`` because the shared forward rescored every member's target at its frozen id,
while member k's single-target contract deletes the earlier outputs ``y[<k]`` in its E)."""

from __future__ import annotations

import pytest
import torch

from scopecheck.engine.family import run_family
from scopecheck.engine.methods import run_method
from scopecheck.engine.precision import float64_forward
from scopecheck.engine.scoring import causal_lm_problem
from scopecheck.loader import load_text
from scopecheck.orchestration.runner import Runner
from tiny_llama import PAD, UNK, make_tiny_llama
from tests.engine.test_family_contracts import FAMILY_HEAD

IDS = torch.tensor([1, 7, 12, 25, 9, 31, 18, 4, 22, 5, 11])     # BOS, prompt 1..5, generation 6..10
TARGETS = (6, 7, 8, 9, 10)
OPERATORS = ("pad", "unk", "zero", "mean", "delete")

#: every method a token family runs, with each operator (or baseline) it accepts; small budgets
CASES = [
    *[("occlusion", {"operator": op, "batch_size": 4}) for op in OPERATORS],
    *[("kernel_shap", {"operator": op, "samples": 40}) for op in OPERATORS],
    *[("lime", {"operator": op, "samples": 40}) for op in OPERATORS],
    *[("exact_shapley", {"operator": op}) for op in OPERATORS],
    *[("integrated_gradients", {"baseline": op, "steps": 6}) for op in ("pad", "unk", "zero")],
    *[("saliency", {"norm": n}) for n in ("l2", "l1", "sum")],
    ("gradient_x_input", {}),
    ("attention_rollout", {}),
]


@pytest.fixture(scope="module")
def model():
    return make_tiny_llama(attn="eager")


def problems(model, contract: str):
    out = []
    for t in TARGETS:
        e = torch.zeros(len(IDS), dtype=torch.bool)
        e[1:6 if contract == "prompt_conditioned" else t] = True              # local_next_token: prompt + prefix
        out.append(causal_lm_problem(model, IDS, e, [t], pad_id=PAD, unk_id=UNK))
    return out


@pytest.mark.parametrize("contract", ["local_next_token", "prompt_conditioned"])
@pytest.mark.parametrize("method, params", CASES, ids=[f"{m}-{'-'.join(map(str, p.values()))}" for m, p in CASES])
def test_every_member_equals_its_single_target_problem(model, contract, method, params):
    """run_family (shared forwards where the method has a family path) against run_method on
    each member's own problem: the single-target computation, to 1e-10 in float64."""
    fam_probs, single_probs = problems(model, contract), problems(model, contract)
    with float64_forward(model):
        outs, _ = run_family(method, fam_probs, params, seed=1)
        for pb, out in zip(single_probs, outs):
            ref = run_method(method, pb, params, seed=1)
            torch.testing.assert_close(out.scores, ref.scores, rtol=0, atol=1e-10)
            for key in ("score_input", "score_baseline", "evaluations"):
                if key in ref.info:
                    assert out.info[key] == pytest.approx(ref.info[key], abs=1e-10), key


def test_delete_in_a_local_next_token_family_deletes_earlier_targets(model):
    """The case of issue 23: under delete, member y[5] deletes y[1..4] (its prefix) and scores
    itself at its frozen id; the maps are non-zero on the deleted earlier outputs."""
    probs = problems(model, "local_next_token")
    with float64_forward(model):
        outs, shared = run_family("occlusion", probs, {"operator": "delete"})
    assert shared
    last = outs[-1].scores
    assert bool((last[list(TARGETS[:-1])] != 0).all())
    # by hand: S(input) - S(input without y[1]) for the last member, one plain forward each
    obj = probs[-1].objective
    keep = torch.ones(1, len(IDS), dtype=torch.bool)
    keep[0, TARGETS[0]] = False
    with torch.no_grad(), float64_forward(model):
        e = probs[-1].embeds.unsqueeze(0)
        hand = float(obj(e)[0] - obj(e, keep)[0])
    assert float(last[TARGETS[0]]) == pytest.approx(hand, abs=1e-12)


FAMILY = FAMILY_HEAD + "}}\n"


def _run(text: str):
    runner = Runner(device="cpu", dtype="float64")
    (contract,) = load_text(text, "<test>.scope")
    return runner.run(contract)


@pytest.mark.parametrize("use", ["local_next_token", "prompt_conditioned"])
@pytest.mark.parametrize("method", ["occlusion(operator = delete)", "occlusion(operator = mean)",
                                    "occlusion(operator = zero)", "kernel_shap(operator = delete, samples = 32)"])
def test_family_contract_members_equal_single_target_contracts(use, method):
    """End to end on the reference model, float64: member k of `target = each` is exactly the
    contract with `target = k` (the issue's contract: local_next_token with delete)."""
    cr = _run(FAMILY.format(use=use, target="each", method=method))
    assert cr.error is None, cr.error
    assert len(cr.members) == 5
    for k, member in enumerate(cr.members, 1):
        single = _run(FAMILY.format(use=use, target=k, method=method))
        assert single.error is None, single.error
        a, b = member.result, single.result
        assert a.method_params == b.method_params and a.operator == b.operator
        assert [(t.position, t.eligible, t.target) for t in a.tokens] == [(t.position, t.eligible, t.target)
                                                                          for t in b.tokens]
        for ta, tb in zip(a.tokens, b.tokens):
            assert ta.score == pytest.approx(tb.score, abs=1e-10), (k, ta.text)
