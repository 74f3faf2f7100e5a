"""Faithfulness checks against direct, independent computations of their definitions.

Each reference computation below perturbs the embeddings by hand (the operator's rows at the
dropped positions) and calls the objective one input at a time; none goes through the
check module's batching, masks-from-rankings or bound search.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from scopecheck.checks import curves
from scopecheck.checks.catalog import CHECKS
from scopecheck.checks.registry import CHECK_IMPLS, random_baseline, run_check
from scopecheck.errors import ContractError

# --------------------------------------------------------------------------- reference helpers


def S(result, drop=(), op="pad") -> float:
    """The contract's score with the positions ``drop`` replaced by operator ``op``, one input at a time."""
    from scopecheck.engine.precision import float64_forward

    pb = result.compiled.problem
    e = pb.embeds.clone()
    drop = list(drop)
    with float64_forward(pb.objective.model):          # the precision the run computed in
        return _S(pb, e, drop, op)


def _S(pb, e, drop, op) -> float:
    with torch.no_grad():
        if op == "delete":
            keep = torch.ones(1, pb.length, dtype=torch.bool)
            keep[0, drop] = False
            return float(pb.objective(e.unsqueeze(0), keep)[0])
        if drop:
            e[drop] = pb.operators[op][drop]
        return float(pb.objective(e.unsqueeze(0))[0])


def eligible(result) -> list[int]:
    return [t.position for t in result.tokens if t.eligible]


def own_ranking(result) -> list[int]:
    return [t.position for t in sorted((t for t in result.tokens if t.eligible), key=lambda t: (-t.score, t.position))]


def score_of(result) -> dict[int, float]:
    return {t.position: t.score for t in result.tokens}


# --------------------------------------------------------------------------- registry


def test_registry_covers_catalog():
    assert set(CHECK_IMPLS) == set(CHECKS)


def test_unknown_check_and_param(ig_pc):
    with pytest.raises(KeyError, match="known checks: .*deletion"):
        run_check("delition", ig_pc)
    with pytest.raises(ValueError, match="declared parameters: .*operator"):
        run_check("deletion", ig_pc, {"stepz": 3})
    with pytest.raises(ValueError, match="random-ranking baseline is undefined"):
        random_baseline("completeness", ig_pc)


def test_protocol_comes_from_the_contract(occ_span, run_tiny):
    # span_prompt: rescore only; regenerating would test prompt_to_output
    with pytest.raises(ContractError, match="prompt_to_output"):
        run_check("deletion", occ_span, {"protocol": "regenerate"})
    # perturbing the prefix belongs to local_next_token
    with pytest.raises(ContractError, match="local_next_token"):
        run_check("comprehensiveness", occ_span, {"perturb": "prefix"})
    c = run_check("comprehensiveness", occ_span)
    assert c.config["protocol"] == "rescore" and c.config["contract"] == "span_prompt"
    assert c.config["operator"] == "pad" and c.config["model"] == occ_span.model
    # local_next_token: prompt and prefix eligible; perturb = prompt restricts the features
    lnt = run_tiny('local_next_token(target = "noir")', "occlusion")
    full = run_check("deletion", lnt)
    prompt_only = run_check("deletion", lnt, {"perturb": "prompt"})
    assert full.config["features"] == 12 and prompt_only.config["features"] == 9
    assert set(prompt_only.extra["ranking"]) == {t.position for t in lnt.tokens if t.role == "prompt"}


# --------------------------------------------------------------------------- curves


@pytest.mark.parametrize("op", ["pad", "delete"])
def test_deletion_matches_direct_computation(ig_pc, op):
    c = run_check("deletion", ig_pc, {"operator": op})
    r = own_ranking(ig_pc)
    E = len(r)
    curve = [S(ig_pc, r[:k], op) for k in range(E + 1)]
    gains = [curve[0] - v for v in curve]
    assert c.curve == pytest.approx(curve, abs=1e-10)
    assert c.fields["aopc"] == pytest.approx(sum(gains) / (E + 1), abs=1e-10)        # Samek: 1/(L+1) sum_{k=0}^{L}
    assert c.fields["auc"] == pytest.approx(np.trapezoid(curve, np.arange(E + 1) / E), abs=1e-10)
    assert curve[0] == pytest.approx(ig_pc.score_input, abs=1e-9)
    assert c.config["operator"] == op and c.config["naopc_bounds"].startswith("beam")   # E = 9 > 8
    assert 0.0 <= c.fields["naopc"] <= 1.0
    assert c.extra["aopc_lower"] <= c.fields["aopc"] <= c.extra["aopc_upper"]


def test_deletion_steps_grid(ig_pc):
    c = run_check("deletion", ig_pc, {"steps": 3})
    r = own_ranking(ig_pc)
    assert c.extra["k"] == [0, 3, 6, 9]
    curve = [S(ig_pc, r[:k]) for k in (0, 3, 6, 9)]
    assert c.curve == pytest.approx(curve, abs=1e-10)
    assert c.fields["aopc"] == pytest.approx(np.mean([curve[0] - v for v in curve]), abs=1e-10)


def test_insertion_matches_direct_computation(occ_span):
    c = run_check("insertion", occ_span)
    r = own_ranking(occ_span)
    E = len(r)
    curve = [S(occ_span, r[k:]) for k in range(E + 1)]          # top-k kept, the rest perturbed
    assert c.curve == pytest.approx(curve, abs=1e-10)
    assert c.fields["aopc"] == pytest.approx(np.mean([v - curve[0] for v in curve]), abs=1e-10)
    assert c.fields["auc"] == pytest.approx(np.trapezoid(curve, np.arange(E + 1) / E), abs=1e-10)


def _brute_bounds(result, mode):
    feats = eligible(result)
    cache: dict[frozenset, float] = {}

    def s(dropped):
        key = frozenset(dropped)
        if key not in cache:
            cache[key] = S(result, sorted(key))
        return cache[key]

    s_x, s_empty = s(()), s(feats)
    aopcs = []
    for perm in itertools.permutations(feats):
        if mode == "deletion":
            gains = [s_x - s(perm[:k]) for k in range(len(feats) + 1)]
        else:
            gains = [s(perm[k:]) - s_empty for k in range(len(feats) + 1)]
        aopcs.append(sum(gains) / (len(feats) + 1))
    return min(aopcs), max(aopcs)


@pytest.mark.parametrize("name,mode", [("aopc", "deletion"), ("insertion", "insertion")])
def test_naopc_exact_bounds_match_exhaustive_search(occ_short, name, mode, monkeypatch):
    assert len(eligible(occ_short)) == 5
    lower, upper = _brute_bounds(occ_short, mode)                 # all 120 orderings
    c = run_check(name, occ_short)
    assert c.config["naopc_bounds"] == "exact"
    assert c.extra["aopc_lower"] == pytest.approx(lower, abs=1e-10)
    assert c.extra["aopc_upper"] == pytest.approx(upper, abs=1e-10)
    assert c.fields["naopc"] == pytest.approx((c.fields["aopc"] - lower) / (upper - lower), abs=1e-10)
    # the beam approximation (forced here) can only find bounds inside the exact ones
    monkeypatch.setattr(curves, "EXHAUSTIVE_MAX", 0)
    b = run_check(name, occ_short)
    assert b.config["naopc_bounds"].startswith("beam")
    assert lower - 1e-10 <= b.extra["aopc_lower"] <= b.fields["aopc"] <= b.extra["aopc_upper"] <= upper + 1e-10
    assert b.fields["aopc"] == pytest.approx(c.fields["aopc"], abs=1e-12)


# --------------------------------------------------------------------------- comprehensiveness / sufficiency


@pytest.mark.parametrize("k,count", [(0.2, 2), (3, 3), (1.0, 9)])
def test_comprehensiveness_and_sufficiency(ig_pc, k, count):
    r = own_ranking(ig_pc)
    comp = run_check("comprehensiveness", ig_pc, {"k": k})
    suff = run_check("sufficiency", ig_pc, {"k": k})
    assert comp.config["k_count"] == count == suff.config["k_count"]
    s_x = S(ig_pc)
    assert comp.fields["value"] == pytest.approx(s_x - S(ig_pc, r[:count]), abs=1e-10)
    assert suff.fields["value"] == pytest.approx(s_x - S(ig_pc, r[count:]), abs=1e-10)
    assert comp.better == {"value": "higher", "changed_rate": "none"}
    assert suff.better == {"value": "lower", "changed_rate": "none"}
    # rescore protocol: the frozen output is never regenerated, so it never changes
    assert comp.fields["changed_rate"] == 0.0 == suff.fields["changed_rate"]


# --------------------------------------------------------------------------- Soft-NC / Soft-NS


def _alpha(result):
    feats = eligible(result)
    v = np.array([score_of(result)[p] for p in feats])
    return feats, (v - v.min()) / (v.max() - v.min())


@pytest.mark.parametrize("name", ["soft_nc", "soft_ns"])
def test_soft_metrics_from_their_masks(occ_span, name):
    c = run_check(name, occ_span, {"samples": 12}, seed=3)
    feats, alpha = _alpha(occ_span)
    keep_p = 1 - alpha if name == "soft_nc" else alpha
    assert c.extra["keep_probability"] == pytest.approx(list(keep_p), abs=1e-12)
    s_x, s_empty = S(occ_span), S(occ_span, feats)
    d0 = max(0.0, s_x - s_empty)
    d = [max(0.0, s_x - S(occ_span, [p for p, kept in zip(feats, row) if not kept])) for row in c.extra["masks_kept"]]
    expected = np.mean(d) / d0 if name == "soft_nc" else max(0.0, d0 - np.mean(d)) / d0
    assert c.fields["value"] == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("name", ["soft_nc", "soft_ns"])
def test_soft_metrics_estimate_their_expectation(occ_short, name):
    """The sampled metric converges to the exact expectation over all 2^E Bernoulli masks."""
    feats, alpha = _alpha(occ_short)
    keep_p = 1 - alpha if name == "soft_nc" else alpha
    s_x, s_empty = S(occ_short), S(occ_short, feats)
    d0 = s_x - s_empty
    assert d0 > 0
    exact_d = 0.0
    for kept in itertools.product([False, True], repeat=len(feats)):
        prob = np.prod([p if k else 1 - p for p, k in zip(keep_p, kept)])
        if prob == 0:
            continue
        exact_d += prob * max(0.0, s_x - S(occ_short, [q for q, k in zip(feats, kept) if not k]))
    exact = exact_d / d0 if name == "soft_nc" else max(0.0, d0 - exact_d) / d0
    c = run_check(name, occ_short, {"samples": 1500})
    se = np.std(c.extra["drops"]) / math.sqrt(1500) / d0
    assert abs(c.fields["value"] - exact) <= 4 * se + 1e-9


# --------------------------------------------------------------------------- infidelity


def test_infidelity_direct_and_captum(ig_pc):
    from captum.metrics import infidelity as captum_infidelity

    c = run_check("infidelity", ig_pc, {"samples": 40}, seed=5)
    feats = eligible(ig_pc)
    a = torch.tensor([score_of(ig_pc)[p] for p in feats], dtype=torch.float64)
    masks = torch.tensor(c.extra["masks"], dtype=torch.bool)                 # (40, E), True = perturbed
    assert masks.shape == (40, len(feats)) and 0.3 < masks.double().mean() < 0.7
    s_x = S(ig_pc)
    direct = np.mean([(float(a[m].sum()) - (s_x - S(ig_pc, [p for p, x in zip(feats, m) if x]))) ** 2
                      for m in masks])
    assert c.fields["value"] == pytest.approx(direct, rel=1e-9, abs=1e-12)

    # captum.metrics.infidelity on the feature-presence vector, with the very same masks
    pb = ig_pc.compiled.problem
    queue = list(masks.double())

    def forward(presence):                       # (N, E) 1 = present -> S
        drop = torch.zeros(presence.shape[0], pb.length, dtype=torch.bool)
        drop[:, feats] = presence < 0.5
        embeds, _ = pb.replace("pad", drop)
        with torch.no_grad():
            return pb.objective(embeds)

    def perturb(inputs):
        I = torch.stack([queue.pop(0) for _ in range(inputs.shape[0])])
        return I, inputs - I

    ones = torch.ones(1, len(feats), dtype=torch.float64)
    from scopecheck.engine.precision import float64_forward

    with float64_forward(pb.objective.model):        # the precision the run (and the check) computed in
        got = captum_infidelity(forward, perturb, ones, a.unsqueeze(0), n_perturb_samples=40,
                                max_examples_per_batch=40)
    assert float(got) == pytest.approx(c.fields["value"], rel=1e-9)
    assert c.config["samples"] == 40 and c.config["seed"] == 5


# --------------------------------------------------------------------------- never regenerate


def test_span_prompt_checks_never_call_generate(run_tiny, monkeypatch):
    res = run_tiny("span_prompt", "occlusion", output=None)          # output generated once, then frozen
    assert res.generated and res.kind == "span_prompt"
    model = res.compiled.problem.objective.model
    calls = []
    real = model.generate

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counting)
    params = {"ground_truth": {"causal": ["black"]}, "dsa": {"evidence": 'x["black"]', "distractor": 'x["dog"]'},
              "agreement": {"contract": "span_prompt"}, "max_sensitivity": {"samples": 1},
              "soft_nc": {"samples": 4}, "soft_ns": {"samples": 4}, "infidelity": {"samples": 4}}
    small = {"steps": 3}
    for name in CHECK_IMPLS:
        if name in ("snapshot", "conservation"):   # a stored file (test_snapshots); AttnLRP only (test_attnlrp)
            continue
        p = params.get(name, small if "steps" in CHECKS[name].params else None)
        out = run_check(name, res, p)
        if "protocol" in out.config and CHECKS[name].family == "faithfulness":
            assert out.config["protocol"] == "rescore"
    run_check("agreement", res, {"method": "occlusion"})
    assert calls == []


# --------------------------------------------------------------------------- wrong maps and random baselines


def _wrong_worse_and_random(result):
    r = own_ranking(result)
    true_del, wrong_del = run_check("deletion", result), run_check("deletion", result, ranking=r[::-1])
    true_comp = run_check("comprehensiveness", result)
    wrong_comp = run_check("comprehensiveness", result, ranking=r[::-1])
    assert wrong_del.config["ranking"] == "given" and wrong_del.extra["ranking"] == r[::-1]
    assert wrong_del.fields["aopc"] < true_del.fields["aopc"]
    assert wrong_comp.fields["value"] < true_comp.fields["value"]
    rnd = random_baseline("deletion", result)
    assert rnd.config["baseline"] == "random" and len(rnd.extra["per_seed"]["aopc"]) == 5
    assert rnd.fields["aopc"] == pytest.approx(np.mean(rnd.extra["per_seed"]["aopc"]))
    assert true_del.fields["aopc"] > rnd.fields["aopc"]
    assert true_comp.fields["value"] > random_baseline("comprehensiveness", result).fields["value"]


def test_reversed_map_is_worse_and_true_map_beats_random(occ_span):
    _wrong_worse_and_random(occ_span)


def test_reversed_map_is_worse_on_reference_examples(reference_results):
    for _, res in reference_results:
        _wrong_worse_and_random(res)


def test_random_baseline_is_the_mean_of_seeded_shuffles(ig_pc):
    rnd = random_baseline("comprehensiveness", ig_pc, seeds=(0, 1, 2))
    again = [run_check("comprehensiveness", ig_pc, ranking=rk, seed=s).fields["value"]
             for rk, s in zip(rnd.extra["rankings"], (0, 1, 2))]
    assert rnd.extra["per_seed"]["value"] == pytest.approx(again)
    for rk in rnd.extra["rankings"]:
        assert sorted(rk) == eligible(ig_pc)
    assert rnd.fields["value"] == pytest.approx(np.mean(again))


# --------------------------------------------------------------------------- ground truth and DSA


def test_ground_truth_and_dsa_direct(ig_pc):
    sc = score_of(ig_pc)
    feats = eligible(ig_pc)
    r = own_ranking(ig_pc)
    pos = {t.text: t.position for t in ig_pc.tokens if t.role == "prompt"}
    causal = [pos["black"], pos["dog"]]
    for spec in (["black", 'x["dog"]'], [8, 6]):                  # selector texts, or 1-based prompt indices x[i]
        g = run_check("ground_truth", ig_pc, {"causal": spec, "k": 2})
        z = sum(abs(sc[p]) for p in feats)
        ev = sum(abs(sc[p]) for p in causal)
        assert g.extra["causal"] == causal
        assert g.fields["precision"] == pytest.approx(len(set(r[:2]) & set(causal)) / 2)
        assert g.fields["top1"] == float(r[0] in causal)
        assert g.fields["dsa"] == pytest.approx((ev - (z - ev)) / z)
        assert -1 <= g.fields["dsa"] <= 1
    d = run_check("dsa", ig_pc, {"evidence": 'x["black"]', "distractor": 'x[1:4]'})
    z = sum(abs(sc[p]) for p in feats)
    expected = (abs(sc[pos["black"]]) - sum(abs(sc[p]) for p in (1, 2, 3, 4))) / z
    assert d.fields["value"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="overlap"):
        run_check("dsa", ig_pc, {"evidence": 'x["black"]', "distractor": "x"})


def test_ground_truth_on_reference_examples(reference_results):
    """On the trained model a causal token of the adjective (by construction: the English
    adjective and noun) is among the top-2 of the occlusion map; the reversed map scores lower."""
    for ex, res in reference_results:
        causal = [i + 1 for i in ex.causal[3]]                    # Example indices are 0-based
        g = run_check("ground_truth", res, {"causal": causal, "k": 2})
        wrong = run_check("ground_truth", res, {"causal": causal, "k": 2}, ranking=own_ranking(res)[::-1])
        assert g.fields["precision"] >= 0.5
        assert wrong.fields["precision"] < g.fields["precision"]
        assert wrong.fields["dsa"] < g.fields["dsa"]
