"""Sanity and agreement checks: completeness, eligibility, randomization, max-sensitivity, agreement."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

from scopecheck.checks.registry import run_check
from scopecheck.engine.methods import run_method


def S(result, drop=(), op="pad") -> float:
    from scopecheck.engine.precision import float64_forward

    pb = result.compiled.problem
    e = pb.embeds.clone()
    drop = list(drop)
    with float64_forward(pb.objective.model):          # the precision the run computed in
        return _S(pb, e, drop, op)


def _S(pb, e, drop, op) -> float:
    if drop:
        e[drop] = pb.operators[op][drop]
    with torch.no_grad():
        return float(pb.objective(e.unsqueeze(0))[0])


def eligible(result) -> list[int]:
    return [t.position for t in result.tokens if t.eligible]


def tamper(result, position: int, add: float):
    toks = tuple(dataclasses.replace(t, score=t.score + add) if t.position == position else t for t in result.tokens)
    return dataclasses.replace(result, tokens=toks)


# --------------------------------------------------------------------------- completeness / eligibility


def test_completeness_ig_float64_and_tampered(ig_pc):
    assert ig_pc.dtype == "float64" and ig_pc.method_params["steps"] == 64
    c = run_check("completeness", ig_pc)
    # independent: S(x) and S(all eligible -> pad), recomputed here
    s_x, s_base = S(ig_pc), S(ig_pc, eligible(ig_pc))
    assert s_x == pytest.approx(ig_pc.score_input, abs=1e-10)
    assert s_base == pytest.approx(ig_pc.score_baseline, abs=1e-10)
    delta = sum(ig_pc.scores) - (s_x - s_base)
    assert c.fields["delta"] == pytest.approx(delta, abs=1e-9)
    assert c.passed is True and abs(delta) <= 1e-3
    assert c.config["tolerance"] == 1e-3 and c.config["operator"] == "pad"
    bad = run_check("completeness", tamper(ig_pc, eligible(ig_pc)[0], 0.05))
    assert bad.passed is False and bad.fields["abs_delta"] == pytest.approx(abs(delta + 0.05), abs=1e-9)
    assert "exceeds" in bad.note
    assert run_check("completeness", ig_pc, {"tolerance": 1e-12}).passed is (abs(delta) <= 1e-12)


def test_completeness_without_baseline_score_fails_clearly(run_tiny):
    res = run_tiny('prompt_conditioned(target = "noir")', "saliency")
    c = run_check("completeness", res)
    assert c.passed is False and np.isnan(c.fields["delta"]) and "no score_baseline" in c.note


def test_eligibility(ig_pc):
    ok = run_check("eligibility", ig_pc)
    assert ok.passed is True and ok.fields["outside_mass"] == 0.0
    target = ig_pc.compiled.targets[0]
    bad = run_check("eligibility", tamper(tamper(ig_pc, 0, -0.25), target, 0.5))
    assert bad.passed is False
    assert bad.fields["outside_mass"] == pytest.approx(0.75)
    assert bad.extra["offending"] == [0, target]


# --------------------------------------------------------------------------- randomization


def test_randomization_changes_ig_maps(ig_pc):
    model = ig_pc.compiled.problem.objective.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    s_before = S(ig_pc)
    c = run_check("randomization", ig_pc, seed=0)
    mine, theirs = c.extra["map"], c.extra["randomized_map"]
    assert mine == pytest.approx([t.score for t in ig_pc.tokens if t.eligible])
    assert c.fields["spearman"] == pytest.approx(stats.spearmanr(mine, theirs).statistic)
    assert c.fields["kendall"] == pytest.approx(stats.kendalltau(mine, theirs).statistic)
    assert c.fields["spearman"] < 0.6                 # the map depends on the learned weights
    assert c.better["spearman"] == "lower" and c.config["layers"] == "all" and c.extra["tensors_reinitialized"] > 0
    # the trained model itself is untouched
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert S(ig_pc) == s_before
    # deterministic under its seed
    again = run_check("randomization", ig_pc, seed=0)
    assert again.extra["randomized_map"] == pytest.approx(theirs, abs=1e-12)
    top = run_check("randomization", ig_pc, {"layers": "top"})
    assert top.config["layers"] == "top" and top.extra["tensors_reinitialized"] < c.extra["tensors_reinitialized"]


# --------------------------------------------------------------------------- max-sensitivity


def test_max_sensitivity_matches_reruns(ig_pc):
    zero = run_check("max_sensitivity", ig_pc, {"radius": 0.0, "samples": 2})
    assert zero.fields["value"] == pytest.approx(0.0, abs=1e-12)          # IG is deterministic
    c = run_check("max_sensitivity", ig_pc, {"radius": 0.05, "samples": 2}, seed=1)
    pb = ig_pc.compiled.problem
    E = eligible(ig_pc)
    base = torch.tensor(ig_pc.scores, dtype=torch.float64)[E]
    rel = []
    for delta in c.extra["noise"]:
        norms = pb.embeds[E].norm(dim=-1)
        assert bool((delta.norm(dim=-1) <= 0.05 * norms + 1e-12).all())
        e = pb.embeds.clone()
        e[E] += delta
        from scopecheck.engine.precision import float64_forward

        with float64_forward(pb.objective.model):   # the precision the run (and the check) computed in
            a = run_method("integrated_gradients", dataclasses.replace(pb, embeds=e), ig_pc.method_params).scores[E]
        rel.append(float((a - base).norm() / base.norm()))
    assert c.curve == pytest.approx(rel, rel=1e-9)
    assert c.fields["value"] == pytest.approx(max(rel)) and c.fields["value"] > 0


# --------------------------------------------------------------------------- agreement


def test_agreement_with_another_method(ig_pc, run_tiny):
    occ = run_tiny('prompt_conditioned(target = "noir")', "occlusion")
    c = run_check("agreement", ig_pc, {"method": "occlusion"})
    E = eligible(ig_pc)
    a = [ig_pc.scores[p] for p in E]
    b = [occ.scores[p] for p in E]
    assert c.fields["spearman"] == pytest.approx(stats.spearmanr(a, b).statistic)
    assert c.fields["kendall"] == pytest.approx(stats.kendalltau(a, b).statistic)
    assert c.config["other_method"] == "occlusion" and c.config["other_operator"] == "pad"
    same = run_check("agreement", ig_pc, {"method": "integrated_gradients"})
    assert same.fields["spearman"] == pytest.approx(1.0) and same.fields["kendall"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="exactly one"):
        run_check("agreement", ig_pc, {})


def test_agreement_with_another_contract(ig_pc, run_tiny):
    lnt = run_tiny('local_next_token(target = "noir")')
    c = run_check("agreement", ig_pc, {"contract": "local_next_token"})
    common = eligible(ig_pc)                              # prompt tokens: eligible under both
    assert c.extra["positions"] == common
    a = [ig_pc.scores[p] for p in common]
    b = [lnt.scores[p] for p in common]
    assert c.extra["other_map"] == pytest.approx(b, abs=1e-9)
    assert c.fields["spearman"] == pytest.approx(stats.spearmanr(a, b).statistic)
    assert c.config["other_contract"] == "local_next_token"


def test_randomization_on_the_reference_model(reference_ig):
    """Adebayo et al.: IG on the trained model vs IG on its re-initialised copy."""
    c = run_check("randomization", reference_ig)
    assert c.fields["spearman"] < 0.6 and c.fields["kendall"] < 0.5
    assert c.fields["spearman"] == pytest.approx(stats.spearmanr(c.extra["map"], c.extra["randomized_map"]).statistic)
    assert run_check("completeness", reference_ig).passed is True


def test_ranking_override_is_validated(ig_pc):
    non_eligible = ig_pc.compiled.targets[0]
    with pytest.raises(ValueError, match="non-eligible"):
        run_check("deletion", ig_pc, ranking=[non_eligible])
    # a partial ranking is completed in the map's own order
    E = eligible(ig_pc)
    last = min(E, key=lambda p: ig_pc.scores[p])
    c = run_check("deletion", ig_pc, ranking=[last])
    assert c.extra["ranking"][0] == last and sorted(c.extra["ranking"]) == E
