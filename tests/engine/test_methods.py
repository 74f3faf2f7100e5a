"""Attribution methods: registry, contract-awareness (E / C), axioms and reference agreement."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from tiny_llama import BOS, PAD, PROMPT, UNK, VOCAB, eligible_mask, make_tiny_llama
from scopecheck.engine import catalog
from scopecheck.engine.methods import METHOD_IMPLS, resolve_params, run_method
from scopecheck.engine.methods.heta import _hvp_double_backward, _hvp_finite_difference, target_gate
from scopecheck.engine.methods.rollout import rollout_matrix
from scopecheck.engine.scoring import causal_lm_problem
from scopecheck.spec import registry

#: cheap settings so that every method runs in well under a second on the tiny model
FAST = {
    "integrated_gradients": {"steps": 16},
    "lime": {"samples": 64},
    "kernel_shap": {"samples": 16},
    "reagent": {"steps": 8},
    "context_cite": {"samples": 32},
    "heta": {"probes": 2},
}


# ------------------------------------------------------------------------------ registry


def test_registry_covers_catalog():
    assert set(METHOD_IMPLS) == set(catalog.METHODS) == set(registry.METHODS)
    for name, entry in registry.METHODS.items():
        assert METHOD_IMPLS[name] is entry.load() and callable(entry.load()), name


def test_resolved_parameters_are_the_registry_defaults():
    for name, entry in registry.METHODS.items():
        p = resolve_params(name, {})
        assert {k: p[k] for k in entry.params} == entry.defaults(), name
        assert p["_given"] == () and p["_batch_auto"] == ("batch_size" in entry.params), name


def test_ig_runs_every_baseline_the_registry_lists(tiny_llama, seq):
    """Drift case of issue 24: the validator accepted ``baseline = mean``, the catalog listed
    ``pad | zero | mask | unk``. The implementation starts the path from any replacement row of
    the problem, and a model with pad, mask and unk ids has exactly these rows; every one of
    them is listed and runs, with S(baseline) the objective at that row (computed here)."""
    listed = catalog.METHODS["integrated_gradients"].params["baseline"]
    assert "mean" in listed.choices
    pb = causal_lm_problem(tiny_llama, seq, eligible_mask(len(seq), PROMPT), [8], pad_id=PAD, mask_id=UNK + 1,
                           unk_id=UNK)
    assert set(listed.choices) == set(pb.operators)
    for base in listed.choices:
        out = run_method("integrated_gradients", pb, {"baseline": base, "steps": 4})
        x0 = torch.where(pb.eligible.unsqueeze(-1), pb.operators[base], pb.embeds)
        with torch.no_grad():
            s_base = pb.objective(x0.unsqueeze(0)).item()
        assert out.info["baseline"] == base and out.info["score_baseline"] == pytest.approx(s_base, abs=1e-12)


def test_heta_probes_default_is_adaptive():
    """Drift case of issue 24: HETA ``probes`` defaulted to 8 in ``_common.DEFAULTS`` and to
    "adaptive" in the catalog; the implementation runs the adaptive count when none is given."""
    spec = registry.METHODS["heta"].params["probes"]
    assert spec.default is None and spec.shown_default().startswith("adaptive")
    assert resolve_params("heta", {})["probes"] is None
    assert resolve_params("heta", {"probes": 3})["probes"] == 3


def test_heta_without_probes_runs_the_adaptive_count(problems):
    out = run_method("heta", problems["prompt_conditioned"], {"max_probes": 4})
    assert out.info["probes"] == "auto" and out.info["probes_max"] > 0
    fixed = run_method("heta", problems["prompt_conditioned"], {"probes": 2})
    assert fixed.info["probes"] == 2 and fixed.info["probes_min"] == fixed.info["probes_max"] == 2


def test_a_method_registered_from_outside_runs_like_a_shipped_one(problems, tmp_path, monkeypatch):
    """``scopecheck.register_method`` with a lazy ``module:attr``: the module is imported only
    when the method first runs; parameters are defaulted and coerced from the entry."""
    import sys

    import scopecheck

    (tmp_path / "outside_method_pkg.py").write_text(
        "from scopecheck.engine.methods._common import finalize, resolve_params\n"
        "def scaled_saliency(problem, params):\n"
        "    from scopecheck.engine.methods import run_method\n"
        "    p = resolve_params('scaled_saliency', params)\n"
        "    base = run_method('saliency', problem, {'norm': p['norm']})\n"
        "    return finalize(problem, base.scores * p['scale'], {'scale': p['scale']})\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = scopecheck.register_method(
        "scaled_saliency", family="gradient", summary="saliency times a constant", supports=("span_prompt",),
        params={"scale": registry.F(0.0, 100.0, default=2.0, help="the constant"),
                "norm": registry.C("l1", "l2", default="l1")},
        impl="outside_method_pkg:scaled_saliency", differentiable=True, aliases=("ss",))
    try:
        assert "outside_method_pkg" not in sys.modules
        pb = problems["span_prompt"]
        out = run_method("ss", pb, {"scale": "3"})                     # alias; "3" coerced by the entry
        ref = run_method("saliency", pb, {"norm": "l1"})
        assert out.info["method"] == "scaled_saliency" and out.info["scale"] == 3.0
        assert torch.allclose(out.scores, 3.0 * ref.scores, rtol=0, atol=1e-12)
        assert entry.load().__module__ == "outside_method_pkg"
    finally:
        registry.unregister_method("scaled_saliency")
    assert "scaled_saliency" not in METHOD_IMPLS and "ss" not in registry.METHOD_ALIASES


def test_unknown_method_lists_available(problems):
    with pytest.raises(KeyError) as err:
        run_method("grad_cam", problems["span_prompt"], {})
    for name in METHOD_IMPLS:
        assert name in str(err.value)
    # stage perturbation needs stages as features: on a token problem it refuses, naming why
    with pytest.raises(KeyError, match="needs a denoising-stage problem"):
        run_method("stage_perturbation", problems["span_prompt"], {})


def test_unknown_parameter_lists_declared(problems):
    with pytest.raises(ValueError) as err:
        run_method("integrated_gradients", problems["span_prompt"], {"n_steps": 8})
    msg = str(err.value)
    assert "n_steps" in msg and all(k in msg for k in ("steps", "rule", "baseline", "batch_size"))
    with pytest.raises(ValueError, match="declared parameters: none"):
        run_method("gradient_x_input", problems["span_prompt"], {"norm": "l2"})
    with pytest.raises(ValueError, match="must be int"):
        run_method("occlusion", problems["span_prompt"], {"batch_size": "many"})


def test_aliases_resolve(problems):
    pb = problems["prompt_conditioned"]
    a = run_method("ig", pb, {"steps": 8})
    b = run_method("integrated_gradients", pb, {"steps": 8})
    assert torch.equal(a.scores, b.scores) and a.info["method"] == "integrated_gradients"
    assert torch.equal(run_method("feature_ablation", pb).scores, run_method("occlusion", pb).scores)


# ------------------------------------------------------------------------------ eligibility


class _Spy:
    """Wraps an objective / logprobs callable and checks every input it is ever given."""

    def __init__(self, fn, problem, seen):
        self.fn, self.pb, self.seen = fn, problem, seen
        if hasattr(fn, "at_rows"):
            self.at_rows = self._at_rows
        if hasattr(fn, "eager_attention"):
            self.eager_attention = fn.eager_attention

    def _check(self, embeds, keep):
        fixed = ~self.pb.eligible[: embeds.shape[1]]                          # a causal read may stop early
        assert torch.equal(embeds.detach()[:, fixed], self.pb.embeds[: embeds.shape[1]][fixed].expand(
            embeds.shape[0], -1, -1)), \
            "a position outside E was perturbed or interpolated"
        if keep is not None:
            assert bool(keep[:, fixed].all()), "a position outside E was deleted"
        self.seen.append(embeds.shape[0])

    def __call__(self, embeds, keep=None):
        self._check(embeds, keep)
        return self.fn(embeds, keep)

    def _at_rows(self, embeds, keep, rows):
        self._check(embeds, keep)
        return self.fn.at_rows(embeds, keep, rows)


# stages: test_diffusion; external: test_external; attnlrp reads the causal-LM objective the spy hides:
# test_attnlrp; toolkit adapters (captum.*, inseq.*) run the model through the toolkit, not through a
# spied objective: test_adapters
@pytest.mark.parametrize("method", sorted(set(METHOD_IMPLS) - {"stage_perturbation", "external", "attnlrp"}
                                          - {n for n, e in registry.METHODS.items() if e.family == "toolkit"}))
def test_zero_outside_eligible_and_fixed_positions_untouched(problems, method):
    pb = problems["prompt_conditioned"]                    # BOS and the prefix y1 y2 held fixed
    seen: list[int] = []
    spy = dataclasses.replace(pb, objective=_Spy(pb.objective, pb, seen), logprobs=_Spy(pb.logprobs, pb, seen))
    out = run_method(method, spy, FAST.get(method, {}), seed=3)
    assert out.scores.shape == (pb.length,) and out.scores.dtype == torch.float64
    assert torch.all(out.scores[~pb.eligible] == 0.0)
    assert torch.all(torch.isfinite(out.scores))
    assert bool((out.scores[pb.eligible] != 0).any())
    assert all(isinstance(v, (int, float, str)) for v in out.info.values())
    if method != "attention_rollout":
        assert seen, "the method never evaluated the score"
        assert "score_input" in out.info


@pytest.mark.parametrize("method", ["lime", "kernel_shap", "reagent", "context_cite", "heta"])
def test_deterministic_given_seed(problems, method):
    pb = problems["span_prompt"] if method != "heta" else problems["prompt_conditioned"]
    a = run_method(method, pb, FAST[method], seed=7)
    b = run_method(method, pb, FAST[method], seed=7)
    c = run_method(method, pb, FAST[method], seed=8)
    assert torch.equal(a.scores, b.scores)
    assert not torch.equal(a.scores, c.scores)


# ------------------------------------------------------------------------------ IG


@pytest.mark.parametrize("contract", ["local_next_token", "prompt_conditioned", "span_prompt"])
@pytest.mark.parametrize("rule", ["gauss_legendre", "riemann"])
def test_ig_completeness(problems, contract, rule):
    pb = problems[contract]
    out = run_method("integrated_gradients", pb, {"steps": 64, "rule": rule})
    x0 = torch.where(pb.eligible.unsqueeze(-1), pb.operators["pad"], pb.embeds)
    with torch.no_grad():
        s_in = pb.objective(pb.embeds.unsqueeze(0)).item()
        s_base = pb.objective(x0.unsqueeze(0)).item()
    gap = out.scores.sum().item() - (s_in - s_base)
    assert abs(gap) < 1e-3
    assert out.info["delta"] == pytest.approx(gap, abs=1e-12)
    assert out.info["score_baseline"] == pytest.approx(s_base, abs=1e-12)
    assert out.scores.abs().sum().item() > 0.05              # the test is not vacuous


def test_ig_baseline_operator_must_exist(problems):
    with pytest.raises(KeyError, match="mask"):
        run_method("integrated_gradients", problems["span_prompt"], {"baseline": "mask"})


# ------------------------------------------------------------------------------ captum


def _captum_problem(model, seq):
    return causal_lm_problem(model, seq, eligible_mask(len(seq), range(1, len(seq) - 1)), [len(seq) - 1], pad_id=PAD)


@pytest.mark.parametrize("rule,captum_method", [("gauss_legendre", "gausslegendre"), ("riemann", "riemann_middle")])
def test_ig_equals_captum_layer_integrated_gradients(tiny_llama, seq, rule, captum_method):
    import captum.attr as captum_attr
    pb = _captum_problem(tiny_llama, seq)
    emb = tiny_llama.get_input_embeddings()

    def forward(input_ids):
        return pb.objective(emb(input_ids))

    lig = captum_attr.LayerIntegratedGradients(forward, emb)
    base_ids = torch.where(pb.eligible, torch.full_like(seq, PAD), seq)
    ref = lig.attribute(seq.unsqueeze(0), baselines=base_ids.unsqueeze(0), n_steps=32, method=captum_method)
    ref = ref[0].sum(-1)
    ours = run_method("integrated_gradients", pb, {"steps": 32, "rule": rule}).scores
    assert ours[0] == 0.0
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0), (ours - ref).abs().max()


def test_occlusion_equals_captum_feature_ablation(tiny_llama, seq):
    import captum.attr as captum_attr
    pb = _captum_problem(tiny_llama, seq)
    L, d = pb.embeds.shape
    fa = captum_attr.FeatureAblation(lambda e: pb.objective(e))
    baselines = torch.where(pb.eligible.unsqueeze(-1), pb.operators["pad"], pb.embeds).unsqueeze(0)
    mask = torch.arange(L).view(1, L, 1).expand(1, L, d)
    ref = fa.attribute(pb.embeds.unsqueeze(0), baselines=baselines, feature_mask=mask, perturbations_per_eval=8)
    ours = run_method("occlusion", pb, {"operator": "pad"}).scores
    assert torch.allclose(ours, ref[0, :, 0], atol=1e-5, rtol=0)


def test_occlusion_delete_equals_cutting_tokens(tiny_llama, seq, problems):
    pb = problems["span_prompt"]
    out = run_method("occlusion", pb, {"operator": "delete"})
    with torch.no_grad():
        def span(ids, targets):
            lp = tiny_llama(input_ids=ids.unsqueeze(0)).logits[0].log_softmax(-1)
            return float(sum(lp[t - 1, ids[t]] for t in targets))
        full = span(seq, [6, 7, 8])
        for i in PROMPT:
            cut = torch.cat([seq[:i], seq[i + 1:]])
            assert out.scores[i].item() == pytest.approx(full - span(cut, [5, 6, 7]), abs=2e-6)


# ------------------------------------------------------------------------------ Shapley


def _value_fn(pb, operator="pad"):
    """v(S) for S a set of eligible positions, computed directly from the objective."""
    cache = {}

    def v(S):
        key = frozenset(S)
        if key not in cache:
            drop = pb.eligible.clone()
            drop[list(S)] = False
            e = torch.where(drop.unsqueeze(-1), pb.operators[operator], pb.embeds)
            with torch.no_grad():
                cache[key] = pb.objective(e.unsqueeze(0)).item()
        return cache[key]

    return v


def test_exact_shapley_equals_permutation_definition(problems):
    pb = problems["span_prompt"]
    out = run_method("exact_shapley", pb, {"operator": "pad"})
    v = _value_fn(pb)
    feats = PROMPT
    brute = {i: 0.0 for i in feats}
    perms = list(itertools.permutations(feats))
    for perm in perms:                                        # phi_i = E_pi[v(pre_i + i) - v(pre_i)]
        before: list[int] = []
        for i in perm:
            brute[i] += v(before + [i]) - v(before)
            before.append(i)
    for i in feats:
        assert out.scores[i].item() == pytest.approx(brute[i] / len(perms), abs=1e-10)
    total = out.scores.sum().item()
    assert total == pytest.approx(v(feats) - v([]), abs=1e-10)     # efficiency
    assert out.info["efficiency_gap"] == pytest.approx(0.0, abs=1e-10)


def test_exact_shapley_refuses_more_than_ten(tiny_llama):
    seq = torch.tensor([BOS] + [5 + i for i in range(11)] + [30])
    pb = causal_lm_problem(tiny_llama, seq, eligible_mask(13, range(1, 12)), [12], pad_id=PAD)
    with pytest.raises(ValueError, match="at most 10"):
        run_method("exact_shapley", pb)


@pytest.fixture(scope="module")
def ten_feature_problem(tiny_llama):
    seq = torch.tensor([BOS, 7, 12, 25, 9, 31, 18, 4, 22, 13, 27, 33, 6])
    return causal_lm_problem(tiny_llama, seq, eligible_mask(len(seq), range(1, 11)), [11, 12], pad_id=PAD)


def test_kernel_shap_approaches_exact_shapley(ten_feature_problem):
    pb = ten_feature_problem
    exact = run_method("exact_shapley", pb).scores
    scale = exact.abs().max().item()

    def err(samples):
        errs = [(run_method("kernel_shap", pb, {"samples": samples}, seed=s).scores - exact).abs().max().item()
                for s in range(3)]
        return float(np.mean(errs)) / scale

    small, large = err(40), err(1000)                        # sampled regime (2**10 - 2 = 1022 coalitions)
    assert large < small
    assert large < 0.1
    enumerated = run_method("kernel_shap", pb, {"samples": 1022})
    assert enumerated.info["enumerated"] == 1
    assert torch.allclose(enumerated.scores, exact, atol=1e-8)
    # efficiency holds exactly for any sample count
    s = run_method("kernel_shap", pb, {"samples": 40})
    assert s.scores.sum().item() == pytest.approx(s.info["score_input"] - s.info["score_baseline"], abs=1e-10)


# ------------------------------------------------------------------------------ attention rollout


@pytest.mark.parametrize("residual", [True, False])
def test_attention_rollout_matches_manual(tiny_llama, seq, problems, residual):
    pb = problems["span_prompt"]
    with torch.no_grad():
        atts = tiny_llama(input_ids=seq.unsqueeze(0), output_attentions=True).attentions
    L = len(seq)
    R = torch.eye(L, dtype=torch.float64)
    for a in atts:
        A = a[0].mean(0)
        if residual:
            A = 0.5 * A + 0.5 * torch.eye(L, dtype=torch.float64)
        A = A / A.sum(-1, keepdim=True)
        R = A @ R
    ref = R[[5, 6, 7]].mean(0)
    out = run_method("attention_rollout", pb, {"residual": residual})
    assert torch.allclose(out.scores[pb.eligible], ref[pb.eligible], atol=1e-10)
    assert torch.allclose(rollout_matrix([a[0] for a in atts], residual), R, atol=1e-12)


# ------------------------------------------------------------------------------ probabilistic AS


def test_probabilistic_as_matches_brute_force(tiny_llama, seq, problems):
    """AS_i = log p(y|x) - log [sum_v q(v) c(v) r(v) / sum_v q(v) c(v)], by an explicit vocabulary loop.

    Tolerance 1e-5: transformers' Llama RMSNorm runs in float32 even in a float64 model, and the
    loop below runs one sequence at a time from input_ids while the method batches embeddings.
    """
    pb = problems["span_prompt"]
    out = run_method("probabilistic_as", pb, {"top_p": 1.0, "prune": 0.0})
    targets = [6, 7, 8]
    with torch.no_grad():
        lp0 = tiny_llama(input_ids=seq.unsqueeze(0)).logits[0].log_softmax(-1)
    logp_y = sum(lp0[t - 1, seq[t]].item() for t in targets)
    for i in (2, 5):                                           # middle token (has context after it), last token
        num, den = [], []
        for v in range(VOCAB):
            ids = seq.clone()
            ids[i] = v
            with torch.no_grad():
                lp = tiny_llama(input_ids=ids.unsqueeze(0)).logits[0].log_softmax(-1)
            q = lp0[i - 1, v].item()
            c = sum(lp[j - 1, ids[j]].item() for j in range(i + 1, 6))   # remaining prompt tokens
            r = sum(lp[t - 1, ids[t]].item() for t in targets)
            num.append(q + c + r)
            den.append(q + c)
        num_t, den_t = torch.tensor(num), torch.tensor(den)
        marg = (torch.logsumexp(num_t, 0) - torch.logsumexp(den_t, 0)).item()
        assert out.scores[i].item() == pytest.approx(logp_y - marg, abs=1e-5)
        prompt_post = den_t - torch.logsumexp(den_t, 0)
        full_post = num_t - torch.logsumexp(num_t, 0)
        h_prompt = -(prompt_post.exp() * prompt_post).sum().item()
        h_full = -(full_post.exp() * full_post).sum().item()
        kl = (full_post.exp() * (full_post - prompt_post)).sum().item()
        assert out.info[f"H_prompt@{i}"] == pytest.approx(h_prompt, abs=1e-5)
        assert out.info[f"H_full@{i}"] == pytest.approx(h_full, abs=1e-5)
        assert out.info[f"KL@{i}"] == pytest.approx(kl, abs=1e-5)
    assert out.info["candidates_per_position"] == VOCAB


def test_probabilistic_as_top_p_truncates(problems):
    pb = problems["span_prompt"]
    full = run_method("probabilistic_as", pb, {"top_p": 1.0, "prune": 0.0})
    trunc = run_method("probabilistic_as", pb, {"top_p": 0.5, "prune": 0.0})
    assert trunc.info["candidates_per_position"] < full.info["candidates_per_position"]
    assert trunc.info["summed_per_position"] == trunc.info["candidates_per_position"]
    assert torch.all(trunc.scores[~pb.eligible] == 0)
    # the default truncation (top_p 0.999999, prune 5e-5) is stated and stays within 1e-3 of exact AS
    default = run_method("probabilistic_as", pb)
    assert (default.info["top_p"], default.info["prune"]) == (0.999999, 5e-5)
    assert float((default.scores - full.scores).abs().max()) < 1e-3


def test_probabilistic_as_pruning_reads_fewer_positions_and_reports_what_it_dropped(tiny_llama, seq):
    """Staged chains with pruning: the dropped posterior mass is reported, the positions run fall,
    and the error against exact AS shrinks with the threshold (to 0 at prune = 0)."""
    from scopecheck.engine.scoring import causal_lm_problem

    ids = torch.cat([seq, seq[1:], seq[1:]])                   # a longer prompt: chains worth pruning
    e = torch.zeros(len(ids), dtype=torch.bool)
    e[1: len(ids) - 3] = True
    runs = {}
    for prune in (0.0, 1e-6, 0.2):
        pb = causal_lm_problem(tiny_llama, ids, e, [len(ids) - 3, len(ids) - 2, len(ids) - 1])
        runs[prune] = run_method("probabilistic_as", pb, {"top_p": 1.0, "prune": prune})
    exact = runs[0.0]
    assert exact.info["pruned_mass_max"] == 0.0 and exact.info["summed_per_position"] == VOCAB
    err = {k: float((r.scores - exact.scores).abs().max()) for k, r in runs.items()}
    assert err[1e-6] <= err[0.2] and err[1e-6] < 1e-3
    coarse = runs[0.2]
    assert 0.0 < coarse.info["pruned_mass_max"] <= 0.2
    assert coarse.info["pruned_extrapolation_max"] > 0.0
    assert coarse.info["summed_per_position"] < VOCAB
    assert coarse.info["positions_run"] < exact.info["positions_run"]


def test_probabilistic_as_pruned_posteriors_stay_normalised(tiny_llama, seq, monkeypatch):
    """The extrapolated correction moves log p(y | x_{-i}) only: the posteriors whose entropies
    and KL are reported remain distributions over the kept candidates."""
    from scopecheck.engine.methods import probabilistic
    from scopecheck.engine.scoring import causal_lm_problem

    ids = torch.cat([seq, seq[1:], seq[1:]])
    e = torch.zeros(len(ids), dtype=torch.bool)
    e[1: len(ids) - 3] = True
    masses: list[float] = []
    real = probabilistic._entropy
    monkeypatch.setattr(probabilistic, "_entropy", lambda logp: masses.append(float(logp.exp().sum())) or real(logp))
    pb = causal_lm_problem(tiny_llama, ids, e, [len(ids) - 3, len(ids) - 2, len(ids) - 1])
    out = run_method("probabilistic_as", pb, {"top_p": 1.0, "prune": 0.2})
    assert out.info["pruned_extrapolation_max"] > 0.0
    assert masses and all(m == pytest.approx(1.0, abs=1e-9) for m in masses)


def test_probabilistic_as_survivors_extrapolate_what_they_drop():
    """A pruning stage keeps the 1 - prune nucleus of each partial posterior (plus the actual
    token) and returns, per weight vector, log(1 + dropped mass / kept mass): the factor by which
    the dropped candidates, extrapolated like the kept ones, scale the kept candidates' final sum."""
    from scopecheck.engine.methods.probabilistic import _survivors

    wc = torch.tensor([0.0, -1.0, -9.0, -12.0, -30.0], dtype=torch.float64)
    wcr = torch.tensor([0.0, -8.0, -2.0, -20.0, -30.0], dtype=torch.float64)
    keep, dropped, grow = _survivors([wc, wcr], 1e-3, always=4)
    # nucleus of wc: {0, 1} (mass 1 - 3.4e-4 of the normalised vector); of wcr: {0, 2}; plus 4
    assert keep.tolist() == [True, True, True, False, True]
    for w, g in zip((wc, wcr), grow):
        p = w.exp()
        assert g == pytest.approx(math.log1p(float(p[~keep].sum() / p[keep].sum())), rel=1e-12)
    post = [(w - w.logsumexp(0)).exp() for w in (wc, wcr)]
    assert dropped == pytest.approx(max(float(q[3]) for q in post), rel=1e-12)
    flat = torch.zeros(3, dtype=torch.float64)                 # every candidate needed: nothing dropped
    keep_all, none, zero = _survivors([flat, flat], 1e-3, always=None)
    assert bool(keep_all.all()) and none == 0.0 and zero == [0.0, 0.0]


def test_probabilistic_as_first_row_cut_is_looser(tiny_llama, seq, monkeypatch):
    """The stages read row 1 (cut at prune * FIRST_ROW_PRUNE), rows 1-2 (cut at prune), then
    doubling: each position's first cut is the loose one, every later cut is at ``prune``."""
    from scopecheck.engine.methods import probabilistic
    from scopecheck.engine.scoring import causal_lm_problem

    ids = torch.cat([seq, seq[1:], seq[1:]])
    e = torch.zeros(len(ids), dtype=torch.bool)
    e[1: len(ids) - 3] = True
    cuts: list[list[float]] = []                               # per position, its thresholds in order
    real_survivors, real_nucleus = probabilistic._survivors, probabilistic.nucleus
    monkeypatch.setattr(probabilistic, "nucleus", lambda *a: cuts.append([]) or real_nucleus(*a))
    monkeypatch.setattr(probabilistic, "_survivors",
                        lambda w, cut, always: cuts[-1].append(cut) or real_survivors(w, cut, always))
    pb = causal_lm_problem(tiny_llama, ids, e, [len(ids) - 3, len(ids) - 2, len(ids) - 1])
    run_method("probabilistic_as", pb, {"top_p": 1.0, "prune": 0.2})
    staged = [c for c in cuts if c]                            # positions with a chain longer than a row
    assert staged and any(len(c) > 1 for c in staged)
    for c in staged:
        assert c[0] == pytest.approx(0.2 * probabilistic.FIRST_ROW_PRUNE) and all(t == 0.2 for t in c[1:])


def test_probabilistic_as_survivors_read_on_from_their_state(tiny_llama, seq, monkeypatch):
    """Pruned candidates carry their key/value state into the next stage: the same AS (float64)
    as re-reading every stage from the eligible position, with fewer positions run."""
    from scopecheck.engine.precision import float64_forward
    from scopecheck.engine.scoring import CausalLMLogProbs, causal_lm_problem

    ids = torch.cat([seq, seq[1:], seq[1:]])
    e = torch.zeros(len(ids), dtype=torch.bool)
    e[1: len(ids) - 3] = True

    def run():
        pb = causal_lm_problem(tiny_llama, ids, e, [len(ids) - 3, len(ids) - 2, len(ids) - 1])
        with float64_forward(tiny_llama):
            return run_method("probabilistic_as", pb, {"prune": 1e-3})

    carried = run()
    monkeypatch.setattr(CausalLMLogProbs, "state_bytes", lambda self: None)    # no state: re-read
    reread = run()
    torch.testing.assert_close(carried.scores, reread.scores, rtol=0, atol=1e-10)
    assert carried.info["summed_per_position"] == reread.info["summed_per_position"] < VOCAB
    assert carried.info["positions_run"] < reread.info["positions_run"]


def test_probabilistic_as_rejects_bad_truncation(problems):
    with pytest.raises(ValueError, match="prune must lie in"):
        run_method("probabilistic_as", problems["span_prompt"], {"prune": 0.7})


# ------------------------------------------------------------------------------ HETA


def test_heta_gate_and_kl_term(tiny_llama, problems):
    pb = problems["prompt_conditioned"]
    atts, norms = pb.attentions.with_value_norms(pb.embeds)
    gate = target_gate(atts, norms, pb.target_rows[0])
    assert gate.sum().item() == pytest.approx(1.0, abs=1e-12) and bool((gate >= 0).all())
    assert torch.all(gate[pb.target_rows[0] + 1:] == 0)                      # no path from the future
    out = run_method("heta", pb, {"beta": 0.0, "gamma": 1.0})
    with torch.no_grad():
        lp0 = pb.logprobs(pb.embeds.unsqueeze(0))[0, 0]
        for i in pb.eligible_positions:
            e = pb.embeds.clone()
            e[i] = pb.operators["unk"][i]                                    # Llama: no mask token -> unk
            lpm = pb.logprobs(e.unsqueeze(0))[0, 0]
            kl = (lp0.exp() * (lp0 - lpm)).sum().item()
            assert out.scores[i].item() == pytest.approx(gate[i].item() * kl, rel=1e-9, abs=1e-12)
    assert out.info["kl_operator"] == "unk" and out.info["hvp"] == "double_backward"


def test_heta_hvp_double_backward_matches_finite_difference(problems):
    pb = problems["prompt_conditioned"]
    g = torch.Generator().manual_seed(0)
    vecs = torch.zeros(2, *pb.embeds.shape, dtype=torch.float64)
    vecs[0, 2] = torch.randint(0, 2, (pb.embeds.shape[1],), generator=g).double() * 2 - 1
    vecs[1, 4] = torch.randint(0, 2, (pb.embeds.shape[1],), generator=g).double() * 2 - 1
    with pb.objective.eager_attention():
        exact = _hvp_double_backward(pb.objective, pb.embeds, vecs)
        approx = _hvp_finite_difference(pb.objective, pb.embeds, vecs)
    assert torch.allclose(exact, approx, atol=1e-3 * exact.abs().max().item())


def test_heta_needs_a_single_target(problems):
    with pytest.raises(ValueError, match="single next token"):
        run_method("heta", problems["span_prompt"])


def test_heta_works_on_sdpa_loaded_model(seq):
    model = make_tiny_llama(attn="sdpa")
    pb = causal_lm_problem(model, seq, eligible_mask(len(seq), PROMPT), [8], pad_id=PAD)
    out = run_method("heta", pb, {"probes": 2})
    assert out.info["hvp"] == "double_backward"
    assert model.config._attn_implementation == "sdpa"
    assert math.isfinite(out.scores.sum().item())


def test_ig_warns_on_zero_baseline(problems):
    out = run_method("integrated_gradients", problems["span_prompt"], {"baseline": "zero", "steps": 8})
    assert "zero vector" in out.info["warning"]
    assert "warning" not in run_method("integrated_gradients", problems["span_prompt"], {"steps": 8}).info


def test_heta_reports_the_standard_error_of_its_curvature_term(tiny_llama, problems):
    """Hutchinson's S_i comes with its standard error (std over probes / sqrt(probes)), which
    falls as probes grow; above 10% relative error the result says to raise probes."""
    from scopecheck.engine.run import heta_note

    pb = problems["prompt_conditioned"]
    few = run_method("heta", pb, {"probes": 2})
    many = run_method("heta", pb, {"probes": 32})
    keys = [k for k in many.info if k.startswith("S_se@")]
    assert keys and all(k in few.info for k in keys)
    assert all(math.isfinite(many.info[k]) and many.info[k] >= 0 for k in keys)
    assert sum(many.info[k] for k in keys) < sum(few.info[k] for k in keys)
    assert heta_note({"S_rse_max": 0.38, "probes": 8}) is not None and "raise probes" in heta_note(
        {"S_rse_max": 0.38, "probes": 8})
    assert heta_note({"S_rse_max": 0.05, "probes": 64}) is None
