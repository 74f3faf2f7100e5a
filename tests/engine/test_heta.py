"""HETA's curvature estimators (seed 004, Algorithm 1): the adaptive Hutchinson count, the
low-rank range finder and the windows, each against an independent computation from the exact
block Hessians (d unit-vector Hessian-vector products per token, float64 tiny Llama, with the
float64 patch so that the Hessian is float64 throughout)."""

from __future__ import annotations

import math

import pytest
import torch

from scopecheck.engine.methods import run_method
from scopecheck.engine.precision import float64_forward
from scopecheck.engine.methods.heta import (CHECK_PROBES, _HVP, _hvp_double_backward, block_sensitivity,
                                            lowrank_blocks, target_gate, windows)
from scopecheck.engine.run import heta_note
from scopecheck.engine.scoring import causal_lm_problem, eager_attention
from tiny_llama import make_tiny_gpt2


@pytest.fixture(scope="module")
def pc(problems):
    with float64_forward(problems["prompt_conditioned"].objective.model):
        yield problems["prompt_conditioned"]                       # x = positions 1..5, d = 32


@pytest.fixture(scope="module")
def exact_blocks(pc):
    """``H_ii`` ``(M, d, d)`` of every eligible token, column by column from unit vectors."""
    x, pos = pc.embeds, torch.nonzero(pc.eligible).flatten()
    L, d = x.shape
    out = []
    with eager_attention(pc.objective.model):
        for i in pos.tolist():
            vecs = torch.zeros(d, L, d, dtype=x.dtype)
            vecs[torch.arange(d), i, torch.arange(d)] = 1.0
            hv = _hvp_double_backward(pc.objective, x, vecs)                 # (d, L, d): row j = H e_(i, j)
            out.append(hv[:, i, :].T)                               # (d, d): H_ii
    return torch.stack(out)


def _sens(out, pc):
    """S_i back from a beta-only run: attr = gate * beta * S."""
    pos = torch.nonzero(pc.eligible).flatten()
    atts, vn = pc.attentions.with_value_norms(pc.embeds)
    gate = target_gate(atts, vn, pc.target_rows[0])[pos].double()
    return out.scores[pos].double() / (out.info["beta"] * gate)


def test_lowrank_at_full_rank_reconstructs_the_exact_blocks(pc, exact_blocks):
    pos = torch.nonzero(pc.eligible).flatten()
    d = pc.embeds.shape[1]
    hvp = _HVP(pc.objective, pc.embeds)
    with eager_attention(pc.objective.model):
        blocks, resid = lowrank_blocks(hvp, pos[1:3], rank=2 * d, g=torch.Generator().manual_seed(0))
    assert hvp.count == 2 * 2 * d                                    # two passes of k = m d products
    torch.testing.assert_close(blocks, exact_blocks[1:3], rtol=1e-7, atol=1e-9)
    assert resid < 1e-8
    # below full rank the residual is reported and the blocks are only approximate
    with eager_attention(pc.objective.model):
        low, resid_low = lowrank_blocks(_HVP(pc.objective, pc.embeds), pos[1:3], rank=4, g=torch.Generator().manual_seed(0))
    assert resid_low > 1e-3
    assert not torch.allclose(low, exact_blocks[1:3], rtol=1e-3, atol=1e-6)


def test_lowrank_heta_equals_the_exact_block_sensitivity(pc, exact_blocks):
    d, M = pc.embeds.shape[1], int(pc.eligible.sum())
    out = run_method("heta", pc, {"curvature": "lowrank", "rank": M * d, "gamma": 0.0})
    # two range-finder passes of M d products, then CHECK_PROBES exact block probes per token
    assert out.info["curvature"] == "lowrank" and out.info["hvps"] == 2 * M * d + CHECK_PROBES * M
    assert out.info["lowrank_error_max"] < 1e-9                      # exact blocks: nothing to bound
    assert out.info["lowrank_residual"] < 1e-8
    want, se = block_sensitivity(exact_blocks, torch.Generator().manual_seed(5), probes=1 << 14)
    got = _sens(out, pc)                       # from 1,024 probes of each reconstructed block: 16x the variance
    assert bool(((got - want).abs() <= 4 * math.sqrt(1 + 16) * se).all())


def test_adaptive_probes_reach_the_target_error_and_agree_with_exact(pc, exact_blocks):
    out = run_method("heta", pc, {"gamma": 0.0, "rse": 0.05})
    info = out.info
    assert info["probes"] == "auto" and info["rse_target"] == 0.05
    assert info["S_rse_max"] <= 0.05 or info["probes_max"] == 256
    assert info["probes_max"] > 8                                    # 8 probes do not reach 5% here
    assert info["hvps"] >= 8 * int(pc.eligible.sum())
    want, _ = block_sensitivity(exact_blocks, torch.Generator().manual_seed(5), probes=1 << 14)
    got = _sens(out, pc)
    pos = torch.nonzero(pc.eligible).flatten().tolist()
    se = torch.tensor([info[f"S_se@{i}"] for i in pos], dtype=torch.float64)
    assert bool(((got - want).abs() <= 4 * se).all())
    # a looser target needs fewer products; a fixed count is used as given
    loose = run_method("heta", pc, {"gamma": 0.0, "rse": 0.3})
    assert loose.info["hvps"] < info["hvps"]
    fixed = run_method("heta", pc, {"gamma": 0.0, "probes": 3})
    assert fixed.info["probes"] == 3 and fixed.info["hvps"] == 3 * len(pos)
    assert "rse_target" not in fixed.info


def test_windows_cover_every_position_with_the_given_overlap():
    assert windows(10, 0, 0) == [(0, 10)] and windows(10, 12, 6) == [(0, 10)]
    assert windows(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert windows(11, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10), (7, 11)]
    for m, size, stride in ((7, 3, 1), (50, 16, 8), (9, 4, 4)):
        cover = [0] * m
        for a, b in windows(m, size, stride):
            assert b - a == size
            for i in range(a, b):
                cover[i] += 1
        assert min(cover) >= 1


def test_windowed_gate_is_renormalised_per_window_and_averaged(pc):
    """beta = 0: Attr = gate_bar * gamma * KL, gate_bar the mean over windows of the gate
    renormalised on each window (Algorithm 1, steps 1 and 4), computed here independently."""
    pos = torch.nonzero(pc.eligible).flatten()
    full = run_method("heta", pc, {"beta": 0.0, "gamma": 1.0})
    win = run_method("heta", pc, {"beta": 0.0, "gamma": 1.0, "window": 2, "stride": 1})
    assert win.info["windows"] == 4 and win.info["window"] == 2
    atts, vn = pc.attentions.with_value_norms(pc.embeds)
    gate = target_gate(atts, vn, pc.target_rows[0])[pos].double()
    kl = full.scores[pos].double() / gate                            # gamma = 1: attr = gate * KL
    bar = torch.zeros(len(pos), dtype=torch.float64)
    n = torch.zeros(len(pos), dtype=torch.float64)
    for a in range(4):
        bar[a:a + 2] += gate[a:a + 2] / gate[a:a + 2].sum()
        n[a:a + 2] += 1
    torch.testing.assert_close(win.scores[pos].double(), bar / n * kl, rtol=1e-10, atol=1e-12)
    # one window covering E is no window at all
    same = run_method("heta", pc, {"beta": 0.0, "gamma": 1.0, "window": 5})
    torch.testing.assert_close(same.scores, full.scores, rtol=0, atol=1e-14)   # (KL forwards may reuse the prefix)


def test_windowed_lowrank_runs_the_range_finder_per_window(pc):
    d = pc.embeds.shape[1]
    out = run_method("heta", pc, {"curvature": "lowrank", "rank": 2 * d, "window": 2, "stride": 1})
    # per window of 2 tokens: two passes of 2 d products and CHECK_PROBES exact probes per token
    assert out.info["windows"] == 4 and out.info["hvps"] == 4 * (2 * 2 * d + 2 * CHECK_PROBES)
    assert out.info["lowrank_error_max"] < 1e-9
    assert out.info["lowrank_residual"] < 1e-8                       # each window's block at full rank
    assert bool((out.scores[pc.eligible] > 0).all()) and bool((out.scores[~pc.eligible] == 0).all())


# --------------------------------------------------------------------------- HETA-LS (layers = k)


def _top_block_score(model, h, T, target):
    """Independent reference for S from the stream entering the tiny Llama's top block (layer 1):
    that block called directly with its own rotary table and causal mask, then the final norm,
    the head and the target's log-prob at row ``T``. ``h`` ``(L, d)`` -> scalar."""
    inner = model.model
    L = h.shape[0]
    pos_ids = torch.arange(L).unsqueeze(0)
    cos_sin = inner.rotary_emb(h.unsqueeze(0), position_ids=pos_ids)
    mask = torch.full((L, L), torch.finfo(h.dtype).min, dtype=h.dtype).triu(1)[None, None]
    out = inner.layers[1](h.unsqueeze(0), attention_mask=mask, position_embeddings=cos_sin, position_ids=pos_ids)
    out = out[0] if isinstance(out, tuple) else out
    return torch.log_softmax(model.lm_head(inner.norm(out))[0, T], dim=-1)[target]


@pytest.fixture(scope="module")
def top_block(pc):
    """The stream entering layer 1 (from ``output_hidden_states``) and its exact Hessian ``(L d, L d)``."""
    model, T = pc.objective.model, pc.target_rows[0]
    target = int(pc.ids[T + 1])
    with torch.no_grad():
        h = model(inputs_embeds=pc.embeds[: T + 1].unsqueeze(0), output_hidden_states=True).hidden_states[1][0]
    L, d = h.shape
    with eager_attention(model):
        H = torch.autograd.functional.hessian(lambda v: _top_block_score(model, v.view(L, d), T, target),
                                              h.flatten())
    return h, H


def test_from_layer_reads_the_stream_and_its_hessian(pc, top_block):
    h_ref, H = top_block
    L, d = h_ref.shape
    with eager_attention(pc.objective.model):
        h, fn = pc.objective.from_layer(1, pc.embeds)
        torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)
        with torch.no_grad():                                      # S itself, read from the inner stream
            torch.testing.assert_close(fn(h.unsqueeze(0))[0], pc.objective(pc.embeds.unsqueeze(0))[0],
                                       rtol=0, atol=1e-12)
        vecs = torch.randn(3, L, d, generator=torch.Generator().manual_seed(1), dtype=h.dtype)
        hv = _HVP(fn, h)(vecs)                                     # (3, L, d)
    torch.testing.assert_close(hv.reshape(3, -1), vecs.reshape(3, -1) @ H, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="outside the model's 2 decoder blocks"):
        pc.objective.from_layer(2, pc.embeds)


def test_heta_ls_equals_the_exact_top_layer_block_sensitivity(pc, top_block):
    """layers = 1: the gate is the top layer's flow alone and S_i is read from the exact Hessian
    blocks of the stream entering it (full-rank range finder, so the blocks are exact)."""
    h, H = top_block
    d, M, T = h.shape[1], int(pc.eligible.sum()), pc.target_rows[0]
    pos = torch.nonzero(pc.eligible).flatten()
    out = run_method("heta", pc, {"curvature": "lowrank", "rank": M * d, "gamma": 0.0, "layers": 1})
    assert out.info["layers"] == "top 1 of 2" and out.info["curvature_wrt"] == "residual stream entering layer 1"
    assert out.info["lowrank_residual"] < 1e-8
    atts, vn = pc.attentions.with_value_norms(pc.embeds)
    gate = target_gate(atts[1:], vn[1:], T)[pos].double()
    got = out.scores[pos].double() / (0.5 * gate)
    blocks = torch.stack([H[i * d:(i + 1) * d, i * d:(i + 1) * d] for i in pos.tolist()])
    want, se = block_sensitivity(blocks, torch.Generator().manual_seed(5), probes=1 << 14)
    assert bool(((got - want).abs() <= 4 * math.sqrt(1 + 16) * se).all())
    # a different quantity from full HETA's (embedding-space curvature, every layer's gate)
    full = run_method("heta", pc, {"curvature": "lowrank", "rank": M * d, "gamma": 0.0})
    assert not torch.allclose(full.scores, out.scores, rtol=1e-2)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_heta_ls_over_every_layer_is_full_heta(arch, problems):
    """layers = n reads S from the stream entering block 0: the embeddings (Llama) or the embeddings
    plus position embeddings (GPT-2), a translation, so the Hessian and the map are full HETA's."""
    if arch == "llama":
        pb = problems["prompt_conditioned"]
    else:
        seq = problems["prompt_conditioned"].ids
        pb = causal_lm_problem(make_tiny_gpt2(), seq, problems["prompt_conditioned"].eligible.clone(), [8], pad_id=0)
    with float64_forward(pb.objective.model):
        full = run_method("heta", pb, {"probes": 4})
        ls = run_method("heta", pb, {"probes": 4, "layers": 2})
    assert ls.info["curvature_wrt"] == "residual stream entering layer 0" and full.info["curvature_wrt"] == "input embeddings"
    torch.testing.assert_close(ls.scores, full.scores, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("layers, graph_below", [(1, False), (2, True), (0, True)])
def test_heta_ls_builds_no_graph_below_its_layers(pc, layers, graph_below):
    """The point of HETA-LS: Hessian-vector products differentiate through the top layers only."""
    seen: list[bool] = []
    block0 = pc.objective.model.model.layers[0]
    handle = block0.register_forward_hook(lambda _m, _i, out: seen.append(
        (out[0] if isinstance(out, tuple) else out).requires_grad))
    try:
        run_method("heta", pc, {"probes": 2, "gamma": 0.0, "layers": layers})
    finally:
        handle.remove()
    assert any(seen) is graph_below
    assert all(q.requires_grad for q in pc.objective.model.parameters())  # parameters restored


@pytest.mark.parametrize("params, match", [({"curvature": "spectral"}, "curvature"), ({"rse": 1.5}, "rse"),
                                           ({"rank": 0}, "rank"), ({"window": -1}, "window"),
                                           ({"layers": 3}, "layers = 3 exceeds the model's 2 layers"),
                                           ({"layers": -1}, "layers")])
def test_bad_heta_parameters_are_refused(pc, params, match):
    with pytest.raises(ValueError, match=match):
        run_method("heta", pc, params)


def test_heta_notes_name_the_parameter_to_raise():
    note = heta_note({"lowrank_residual": 0.01, "lowrank_error_max": 0.4, "lowrank_error@3": 0.4,
                      "lowrank_error@4": 0.1, "rank": 8, "S_rse_max": 0.0, "lowrank_check_probes": 4})
    assert "raise rank" in note and "40%" in note and "position 3" in note
    # the subspace residual does not bound S_i's error: it drives no warning either way
    assert heta_note({"lowrank_residual": 0.4, "lowrank_error_max": 0.05, "rank": 8, "S_rse_max": 0.0}) is None
    assert "max_probes" in heta_note({"S_rse_max": 0.2, "probes": "auto", "probes_max": 256})
    assert "raise probes" in heta_note({"S_rse_max": 0.2, "probes": 8})


@pytest.mark.parametrize("rank", [8, 64])
def test_lowrank_error_bounds_the_error_of_the_reported_s_i(pc, exact_blocks, rank):
    """Below full rank the estimated bound E||(H_ii - Ĥ_ii) r||_1 / E||H_ii r||_1 covers the
    true relative error of each reported S_i (exact blocks, 16,384 probes), and it warns; the
    subspace residual is no such bound (issue 23, item 4)."""
    out = run_method("heta", pc, {"curvature": "lowrank", "rank": rank, "gamma": 0.0, "beta": 1.0})
    pos = torch.nonzero(pc.eligible).flatten()
    want, _ = block_sensitivity(exact_blocks, torch.Generator().manual_seed(5), probes=1 << 14)
    true = (_sens(out, pc) - want).abs() / want                       # (M,)
    est = torch.tensor([out.info[f"lowrank_error@{i}"] for i in pos.tolist()], dtype=torch.float64)
    assert float(true.max()) > 0.1                                    # low rank is poor here
    assert bool((est >= 0.9 * true).all()), (est, true)
    assert out.info["lowrank_error_max"] == pytest.approx(float(est.max()))
    note = heta_note(out.info)
    assert note is not None and "may be off by up to" in note and "raise rank" in note


def test_a_good_lowrank_approximation_does_not_warn(pc, exact_blocks):
    """Rank 128 of 160: S_i within 2% of the exact block sensitivity, the bound under 10%, no note."""
    out = run_method("heta", pc, {"curvature": "lowrank", "rank": 128, "gamma": 0.0, "beta": 1.0})
    want, _ = block_sensitivity(exact_blocks, torch.Generator().manual_seed(5), probes=1 << 14)
    true = (_sens(out, pc) - want).abs() / want
    assert float(true.max()) < 0.03
    assert out.info["lowrank_error_max"] < 0.10
    assert heta_note(out.info) is None


def test_lowrank_warns_on_the_issue_case_whose_residual_is_small():
    """The case of issue 23: heta(beta = 1, gamma = 0, lowrank, rank = 64) on
    local_next_token(target = 4), Figure 1, float64. S_i is up to 86.5% off the exact block
    Hessian's while ||HQ - QB|| / ||HQ|| is 0.0085; the error bound warns."""
    from scopecheck.engine.models import LoadOptions
    from scopecheck.engine.run import execute
    from scopecheck.loader import load_text

    text = """contract "heta low rank" {
    model reference:translate-ar
    prompt "Translate to French: The dog is black."
    output "Le chien est noir."
    use local_next_token(target = 4)
    method heta(beta = 1.0, gamma = 0.0, curvature = lowrank, rank = 64)
    seed 0
}
"""
    (contract,) = load_text(text, "<heta>.scope")
    r = execute(contract, LoadOptions("cpu", "float64"))
    assert r.info["lowrank_residual"] < 0.10                         # the old signal: silent
    assert r.info["lowrank_error_max"] > 0.5
    assert any("may be off by up to" in w for w in r.warnings), r.warnings
