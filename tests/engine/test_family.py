"""Shared computation equals the unshared one: map families, prefix reuse, batched backwards,
and the float64 patch (all in float64)."""

from __future__ import annotations

import sys

import pytest
import torch

from scopecheck.engine.family import batched_grads, family_objective, run_family
from scopecheck.engine.methods import run_method
from scopecheck.engine.precision import float64_forward
from scopecheck.engine.scoring import causal_lm_problem
from tiny_llama import PAD, make_tiny_llama, make_tiny_gpt2 as tiny_gpt2

IDS = torch.tensor([1, 7, 12, 25, 9, 31, 18, 4, 22, 5, 11])     # BOS, prompt 1..5, generation 6..10
TARGETS = (6, 7, 8, 9, 10)
#: a longer sequence for prefix reuse: BOS, prompt 1..20, generation 21..23
LONG = torch.tensor([1, *[(7 * i + 5) % 36 + 4 for i in range(20)], 18, 4, 22])
METHODS = {
    "integrated_gradients": {"steps": 12, "baseline": "pad", "batch_size": 5},
    "gradient_x_input": {},
    "saliency": {"norm": "l1"},
    "occlusion": {"operator": "pad", "batch_size": 3},
}


MODELS = {"llama-eager": lambda: make_tiny_llama(attn="eager"), "llama-sdpa": lambda: make_tiny_llama(attn="sdpa"),
          "gpt2": tiny_gpt2}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


def problems(model, contract: str, targets=TARGETS):
    out = []
    for t in targets:
        e = torch.zeros(len(IDS), dtype=torch.bool)
        e[1:6 if contract == "prompt_conditioned" else t] = True              # local_next_token: prompt + prefix
        out.append(causal_lm_problem(model, IDS, e, [t], pad_id=PAD))
    return out


@pytest.mark.parametrize("contract", ["prompt_conditioned", "local_next_token"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_family_equals_single_targets(model, contract, method):
    probs = problems(model, contract)
    with float64_forward(model):     # the family cuts each forward after its last row: true float64
        shared, was_shared = run_family(method, probs, METHODS[method])
        alone, not_shared = run_family(method, probs, METHODS[method], shared=False)
    assert not not_shared
    # IG needs one E for the whole path: local next-token members differ in E
    assert was_shared == (method != "integrated_gradients" or contract == "prompt_conditioned")
    for pb, a, b in zip(probs, shared, alone):
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-10)
        assert bool((a.scores[~pb.eligible] == 0).all())
        for key in ("score_input", "score_baseline", "delta", "evaluations"):
            if key in b.info:
                assert a.info[key] == pytest.approx(b.info[key], abs=1e-10), key


def test_family_ig_shares_the_path_forwards(model):
    """K maps, one path: the model runs once over the 12 path points (and once over the
    input/baseline pair) for all five targets, against 5 x 2 calls member by member."""
    probs = problems(model, "prompt_conditioned")
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        params = {"steps": 12, "baseline": "pad", "batch_size": 12}
        run_family("integrated_gradients", probs, params)
        shared = len(calls)
        calls.clear()
        run_family("integrated_gradients", probs, params, shared=False)
        alone = len(calls)
    finally:
        handle.remove()
    assert (shared, alone) == (2, 2 * len(TARGETS))


@pytest.mark.parametrize("vmapped", [False, True], ids=["loop", "vmapped"])
def test_batched_grads_equal_one_backward_each(model, monkeypatch, vmapped):
    """Both ways of taking a family's K gradients (K backwards over one graph, the CPU default;
    one vmapped backward, the accelerators') equal one plain backward per member."""
    from scopecheck.runtime import devices

    monkeypatch.setattr(devices, "CPU_LOOP_MIN_TOKENS", 10 ** 9 if vmapped else 0)
    probs = problems(model, "prompt_conditioned")
    fam = family_objective(probs)
    x = probs[0].embeds.unsqueeze(0).repeat(2, 1, 1).requires_grad_(True)
    s = fam(x)                                                                 # (2, K)
    g = batched_grads(s, x)                                                    # (K, 2, L, d)
    for k in range(len(TARGETS)):
        (ref,) = torch.autograd.grad(fam(x)[:, k].sum(), x)
        torch.testing.assert_close(g[k], ref, rtol=0, atol=1e-12)
    s2, g2 = fam.grads(probs[0].embeds.unsqueeze(0).repeat(2, 1, 1))           # the closed-form-head path
    torch.testing.assert_close(s2, s.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(g2, g, rtol=0, atol=1e-10)


def test_cpu_takes_a_family_s_gradients_by_graph_size(monkeypatch):
    """On a CPU, graphs under CPU_LOOP_MIN_TOKENS positions are vmapped, larger ones looped;
    accelerators always vmap."""
    from scopecheck.runtime.devices import CPU_LOOP_MIN_TOKENS, vmapped_backward

    small = torch.zeros(2, CPU_LOOP_MIN_TOKENS // 2 - 1, 3)                   # (B, L, d)
    large = torch.zeros(2, CPU_LOOP_MIN_TOKENS // 2, 3)
    assert vmapped_backward(small) and not vmapped_backward(large)
    assert vmapped_backward(torch.zeros(CPU_LOOP_MIN_TOKENS - 1, 3)) and not vmapped_backward(torch.zeros(CPU_LOOP_MIN_TOKENS, 3))


@pytest.mark.parametrize("method", ["occlusion", "kernel_shap", "lime"])
def test_prefix_reuse_is_exact_and_saves_work(model, method):
    """Perturbed forwards reuse the clean prefix's KV cache: same numbers, fewer positions run."""
    e = torch.zeros(len(LONG), dtype=torch.bool)
    # occlusion: eligible from position 4, so most batches share a prefix (from position 1 every
    # row's suffix is nearly the whole input, and the cache's own clean forward and first verified
    # batch cost about what it saves: 508 positions against 506 plain)
    e[4 if method == "occlusion" else 1:21] = True
    params = {"operator": "pad", "batch_size": 4}
    if method != "occlusion":
        params["samples"] = 24

    def run(reuse: bool):
        pb = causal_lm_problem(model, LONG, e, [21, 22, 23], pad_id=PAD)
        pb.objective.forward.reuse_prefix = reuse
        out = run_method(method, pb, params, seed=3)
        return out, pb.objective.forward_counts

    cached, n_cached = run(True)
    plain, n_plain = run(False)
    torch.testing.assert_close(cached.scores, plain.scores, rtol=0, atol=1e-10)
    if method == "occlusion":                  # late positions perturbed: only the suffix is recomputed
        assert n_cached["positions"] < n_plain["positions"]


def test_prefix_reuse_leaves_no_reference_cycle_holding_tensors(model):
    """Every cached suffix forward builds a read-only copy of the prefix cache; it must be freed
    when the forward returns, not kept in a reference cycle until the next garbage collection
    (a method bound to the cache layer and stored on it was one: on the 124M shape it held
    2.4 MB per call, tens of MiB between collections)."""
    import gc

    e = torch.zeros(len(LONG), dtype=torch.bool)
    e[1:21] = True
    pb = causal_lm_problem(model, LONG, e, [21, 22, 23], pad_id=PAD)
    run_method("occlusion", pb, {"operator": "pad", "batch_size": 2})      # builds and verifies the cache
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        out = run_method("occlusion", pb, {"operator": "pad", "batch_size": 2})
        assert pb.objective.forward.cache_verified and out.info["evaluations"] > 0
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cyclic = [o for o in gc.garbage if torch.is_tensor(o)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was:
            gc.enable()
    assert cyclic == []


def test_prefix_reuse_disagreement_falls_back_to_full_forwards(monkeypatch):
    """The first reuse is checked against the full forward; a cache that disagrees is never used."""
    model = make_tiny_llama(attn="eager")
    e = torch.zeros(len(IDS), dtype=torch.bool)
    e[1:6] = True
    pb = causal_lm_problem(model, IDS, e, [8], pad_id=PAD)
    fwd = pb.objective.forward
    real = fwd._suffix
    monkeypatch.setattr(fwd, "_suffix", lambda *a: real(*a) + 1.0)            # a broken cache
    ref = causal_lm_problem(model, IDS, e, [8], pad_id=PAD)
    ref.objective.forward.reuse_prefix = False
    out = run_method("occlusion", pb, {"operator": "pad", "batch_size": 2})
    want = run_method("occlusion", ref, {"operator": "pad", "batch_size": 2})
    torch.testing.assert_close(out.scores, want.scores, rtol=0, atol=1e-12)
    assert fwd.reuse_prefix is False


def test_unperturbed_rows_are_answered_by_the_clean_forward_and_the_cache_checked_on_first_use():
    """The forward that builds the clean prefix's cache keeps the clean logits at the scoring
    rows and answers the unperturbed input with them: S(x) costs that one forward and equals the
    uncached S(x); the first perturbed batch that reuses the cache is checked against the full
    forward (one call more), later ones are trusted."""
    model = make_tiny_llama(attn="eager")
    with float64_forward(model):
        e = torch.zeros(len(LONG), dtype=torch.bool)
        e[1:21] = True
        pb = causal_lm_problem(model, LONG, e, [21, 22, 23], pad_id=PAD)
        ref = causal_lm_problem(model, LONG, e, [21, 22, 23], pad_id=PAD)
        ref.objective.forward.reuse_prefix = False
        x = pb.embeds.unsqueeze(0)
        s = pb.objective(x)
        fwd = pb.objective.forward
        assert not fwd.cache_verified and fwd._clean_logits is not None
        assert pb.objective.forward_counts["calls"] == 1                      # the clean forward only
        torch.testing.assert_close(s, ref.objective(x), rtol=0, atol=1e-12)
        torch.testing.assert_close(pb.objective(x.expand(3, -1, -1)), ref.objective(x).expand(3), rtol=0, atol=1e-12)
        assert pb.objective.forward_counts["calls"] == 1                      # a batch of clean rows: no call
        perturbed = x.clone()
        perturbed[0, 18] = pb.vocab_embeds[PAD]
        torch.testing.assert_close(pb.objective(perturbed), ref.objective(perturbed), rtol=0, atol=1e-12)
        assert fwd.cache_verified and fwd._clean_logits is None
        assert pb.objective.forward_counts["calls"] == 3                      # the suffix and the full check
        perturbed[0, 19] = pb.vocab_embeds[PAD]
        torch.testing.assert_close(pb.objective(perturbed), ref.objective(perturbed), rtol=0, atol=1e-12)
        assert pb.objective.forward_counts["calls"] == 4                      # trusted from then on


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_float64_patch_makes_ig_complete(attn):
    """Llama's RMSNorm, rotary tables and eager softmax compute in float32 even for a float64
    model; inside float64_forward the completeness gap falls to rounding level, and every
    module is restored afterwards."""
    from transformers.models.llama import modeling_llama

    model = make_tiny_llama(attn=attn)
    e = torch.zeros(len(IDS), dtype=torch.bool)
    e[1:6] = True
    pb = causal_lm_problem(model, IDS, e, [8], pad_id=PAD)
    params = {"steps": 256, "baseline": "pad"}
    before = pb.objective(pb.embeds.unsqueeze(0)).item()
    loose = abs(run_method("integrated_gradients", pb, params).info["delta"])
    original = modeling_llama.eager_attention_forward
    with float64_forward(model) as note:
        tight = abs(run_method("integrated_gradients", pb, params).info["delta"])
        inside = pb.objective(pb.embeds.unsqueeze(0)).item()
        assert "LlamaRMSNorm" in note.text() and "LlamaRotaryEmbedding" in note.text()
    assert loose > 1e-9                       # float32 internals: the gap stays at float32 rounding
    assert tight < 1e-12
    assert abs(inside - before) > 1e-10      # the patched forward really is a different computation
    assert modeling_llama.eager_attention_forward is original
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert pb.objective(pb.embeds.unsqueeze(0)).item() == before


def test_float64_patch_is_a_note_for_other_dtypes():
    model = make_tiny_llama().to(torch.float32)
    with float64_forward(model) as note:
        assert note.dtype == "float32" and not note.patched
    assert "float32" in note.text()
    assert "tiny_llama" in sys.modules


def test_family_refuses_reserved_parameter_names_like_run_method(model):
    probs = problems(model, "prompt_conditioned")
    for shared in (True, False):
        with pytest.raises(ValueError, match="reserved"):
            run_family("occlusion", probs, {"_seed": 1}, shared=shared)


class _SoftCapped(torch.nn.Module):
    """A causal LM whose logits are ``c * tanh(head(h) / c)`` (Gemma-2's final soft-capping):
    its logits are not the head's output, so the closed-form head gradient must not be used."""

    def __init__(self, inner, cap: float = 2.0) -> None:
        super().__init__()
        self.inner, self.cap, self.config = inner, cap, inner.config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, inputs_embeds=None, use_cache=False, logits_to_keep=0, **kw):
        out = self.inner(inputs_embeds=inputs_embeds, use_cache=use_cache, logits_to_keep=logits_to_keep, **kw)
        out.logits = self.cap * torch.tanh(out.logits / self.cap)
        return out


@pytest.mark.parametrize("score", ["logprob", "logit"])
@pytest.mark.parametrize("capped", [False, True])
def test_family_gradients_closed_form_or_fallback_equal_autograd(score, capped):
    """The family's gradient (closed form at the head, or the plain batched backward when the
    logits are post-processed) equals one ordinary backward per member, for both scores."""
    model = _SoftCapped(tiny_gpt2()) if capped else tiny_gpt2()
    probs = [causal_lm_problem(model, IDS, torch.arange(len(IDS)) < 6, [t], score=score) for t in TARGETS]
    fam = family_objective(probs)
    x = probs[0].embeds.unsqueeze(0).repeat(3, 1, 1)
    x = x + 0.01 * torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(0))
    s, g = fam.grads(x)                                                           # (3, K), (K, 3, L, d)
    assert fam._head_ok is (not capped)
    for k, pb in enumerate(probs):
        xk = x.clone().requires_grad_(True)
        sk = pb.objective(xk)                                                     # (3,)
        (ref,) = torch.autograd.grad(sk.sum(), xk)
        torch.testing.assert_close(s[:, k], sk.detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(g[k], ref, rtol=0, atol=1e-12)


def test_prefix_cache_is_rebuilt_when_the_float64_patch_changes():
    """A clean-prefix KV cache made outside ``float64_forward`` is not reused inside it (nor the
    reverse): the perturbed scores equal a fresh problem's under the same precision."""
    model = make_tiny_llama(attn="eager")
    e = torch.zeros(len(LONG), dtype=torch.bool)
    e[1:21] = True
    params = {"operator": "pad", "batch_size": 4}
    pb = causal_lm_problem(model, LONG, e, [21, 22, 23], pad_id=PAD)
    outside = run_method("occlusion", pb, params)                  # the cache is made here, unpatched
    with float64_forward(model):
        inside = run_method("occlusion", pb, params)
        fresh = run_method("occlusion", causal_lm_problem(model, LONG, e, [21, 22, 23], pad_id=PAD), params)
    torch.testing.assert_close(inside.scores, fresh.scores, rtol=0, atol=1e-13)
    assert not torch.allclose(inside.scores, outside.scores, rtol=0, atol=1e-13)   # the patch matters here
    again = run_method("occlusion", pb, params)
    torch.testing.assert_close(again.scores, outside.scores, rtol=0, atol=1e-13)


def test_forward_stops_after_the_last_scoring_row(model):
    """A causal LM's later positions cannot change earlier logits: the objective runs the sequence
    only up to its last scoring row, and its score equals the full-sequence forward's."""
    e = torch.zeros(len(LONG), dtype=torch.bool)
    e[1:10] = True
    targets = [12, 15]                                     # rows 11 and 14 of a 24-token sequence
    pb = causal_lm_problem(model, LONG, e, targets, pad_id=PAD)
    pb.objective.forward.reuse_prefix = False
    x = pb.embeds.unsqueeze(0).repeat(2, 1, 1)
    x[1, 3] = 0.0                                          # a perturbed row
    with float64_forward(model), torch.no_grad():
        got = pb.objective(x)
        lp = model(inputs_embeds=x).logits.log_softmax(-1)  # (2, 24, V): the whole sequence
        want = sum(lp[:, t - 1, LONG[t]] for t in targets)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert pb.objective.forward_counts["positions"] == 2 * 15  # positions 0..14, not 24


@pytest.mark.parametrize("method", ["occlusion", "kernel_shap"])
def test_packed_suffixes_equal_the_unshared_forward(model, method):
    """Rows that share less than the batch's prefix run their own suffixes packed into one
    sequence (block mask over the clean cache): same numbers as the batch-wide suffix and as no
    reuse at all (float64), fewer positions, and the packing is verified, not silently off."""
    e = torch.zeros(len(LONG), dtype=torch.bool)
    e[1:21] = True
    params = {"operator": "pad", "batch_size": 8}
    if method != "occlusion":
        params["samples"] = 24

    def run(reuse: bool, pack: bool, trusted: bool = False):
        pb = causal_lm_problem(model, LONG, e, [21, 22, 23], pad_id=PAD)
        fwd = pb.objective.forward
        fwd.reuse_prefix, fwd.pack = reuse, pack
        fwd._verified = fwd._pack_verified = trusted          # trusted: count work without the first check
        fwd.PACK_TOKENS = 40                                   # several packs per batch
        with float64_forward(model):
            out = run_method(method, pb, params, seed=3)
        return out, pb.objective.forward_counts, fwd

    packed, _, fwd = run(True, True)
    suffix, _, _ = run(True, False)
    plain, _, _ = run(False, False)
    torch.testing.assert_close(packed.scores, plain.scores, rtol=0, atol=1e-10)
    torch.testing.assert_close(suffix.scores, plain.scores, rtol=0, atol=1e-10)
    if method == "occlusion":                                 # one token per row: every batch packs
        assert fwd._pack_verified and fwd.pack
        n_packed, n_suffix = run(True, True, True)[1], run(True, False, True)[1]
        assert n_packed["positions"] < n_suffix["positions"]


def test_packed_suffix_disagreement_turns_packing_off(monkeypatch):
    model = make_tiny_llama(attn="eager")
    e = torch.zeros(len(LONG), dtype=torch.bool)
    e[1:21] = True
    pb = causal_lm_problem(model, LONG, e, [21, 22, 23], pad_id=PAD)
    fwd = pb.objective.forward
    real = fwd._packed
    monkeypatch.setattr(fwd, "_packed", lambda *a: real(*a) + 1.0)            # a broken packing
    ref = causal_lm_problem(model, LONG, e, [21, 22, 23], pad_id=PAD)
    ref.objective.forward.reuse_prefix = False
    out = run_method("occlusion", pb, {"operator": "pad", "batch_size": 8})
    want = run_method("occlusion", ref, {"operator": "pad", "batch_size": 8})
    torch.testing.assert_close(out.scores, want.scores, rtol=0, atol=1e-12)
    assert fwd.pack is False and fwd.reuse_prefix is True


def test_a_lost_fast_path_is_reported_with_its_reason(monkeypatch):
    """A broken packed path is switched off (values stay exact) and the problem's notes say so,
    with the measured gap; an intact run has no such note."""
    from scopecheck.engine.scoring import fast_path_notes

    model = make_tiny_llama(attn="eager")
    e = torch.zeros(len(LONG), dtype=torch.bool)
    e[1:21] = True
    with float64_forward(model):
        ok = causal_lm_problem(model, LONG, e, [21, 22, 23], pad_id=PAD)
        run_method("occlusion", ok, {"operator": "pad", "batch_size": 8})
        assert fast_path_notes(ok) == []
        pb = causal_lm_problem(model, LONG, e, [21, 22, 23], pad_id=PAD)
        fwd = pb.objective.forward
        real = fwd._packed
        monkeypatch.setattr(fwd, "_packed", lambda *a: real(*a) + 1.0)
        run_method("occlusion", pb, {"operator": "pad", "batch_size": 8})
    (note,) = fast_path_notes(pb)
    assert "packed suffixes" in note and "disagreed with the full forward by 1" in note


def test_a_model_without_a_cache_argument_is_reported():
    """A causal LM whose forward takes no key/value cache argument runs every input in full and
    its problem says why (the old code silently lost the fast path on transformers' rename)."""
    from scopecheck.engine.scoring import fast_path_notes

    base = make_tiny_llama(attn="eager")

    class NoCache(torch.nn.Module):
        config = base.config

        def __init__(self):
            super().__init__()
            self.inner = base

        def get_input_embeddings(self):
            return base.get_input_embeddings()

        def forward(self, inputs_embeds=None, attention_mask=None, position_ids=None, logits_to_keep=0,
                    use_cache=False):
            return base(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                        logits_to_keep=logits_to_keep, use_cache=False)

    e = torch.zeros(len(LONG), dtype=torch.bool)
    e[1:21] = True
    pb = causal_lm_problem(NoCache(), LONG, e, [21, 22, 23], pad_id=PAD)
    ref = causal_lm_problem(base, LONG, e, [21, 22, 23], pad_id=PAD)
    ref.objective.forward.reuse_prefix = False
    out = run_method("occlusion", pb, {"operator": "pad", "batch_size": 8})
    want = run_method("occlusion", ref, {"operator": "pad", "batch_size": 8})
    torch.testing.assert_close(out.scores, want.scores, rtol=0, atol=1e-5)
    notes = fast_path_notes(pb)
    assert notes and all("NoCache.forward takes no cache / past_key_values argument" in n for n in notes)
