"""scoring.causal_lm_problem: scores, deletion semantics, operators, attentions, validation."""

from __future__ import annotations

import pytest
import torch

from tiny_llama import BOS, GEN, PAD, PROMPT, UNK, VOCAB, eligible_mask, make_tiny_llama
from scopecheck.engine.scoring import causal_lm_problem

# float64 model, but transformers' LlamaRMSNorm normalises in float32: two computations that
# differ only by float64 round-off (another sequence length, a masked column) can land on
# different float32 roundings, ~1e-7 apart. A wrong deletion would be off by >= 1e-3.
TOL = 1e-9
DEL_TOL = 2e-6


def lm_logprobs(model, ids: torch.Tensor) -> torch.Tensor:
    """Reference: log p(ids[j+1] | ids[<=j]) for every j, from input_ids (no embeds path)."""
    with torch.no_grad():
        lp = model(input_ids=ids.unsqueeze(0)).logits[0].log_softmax(-1)     # (L, V)
    return lp


def ref_span(model, ids: torch.Tensor, targets) -> float:
    lp = lm_logprobs(model, ids)
    return float(sum(lp[t - 1, ids[t]] for t in targets))


# ------------------------------------------------------------------------------ scores


def test_logprob_token_and_span_match_input_ids_forward(tiny_llama, seq, problems):
    x = problems["local_next_token"].embeds.unsqueeze(0)
    assert problems["local_next_token"].objective(x).item() == pytest.approx(ref_span(tiny_llama, seq, [8]), abs=TOL)
    assert problems["span_prompt"].objective(x).item() == pytest.approx(ref_span(tiny_llama, seq, GEN), abs=TOL)


def test_prob_logit_contrastive(tiny_llama, seq):
    elig = eligible_mask(len(seq), PROMPT)
    lp = lm_logprobs(tiny_llama, seq)
    with torch.no_grad():
        logits = tiny_llama(input_ids=seq.unsqueeze(0)).logits[0]
    pb = causal_lm_problem(tiny_llama, seq, elig, GEN, score="prob")
    x = pb.embeds.unsqueeze(0)
    assert pb.objective(x).item() == pytest.approx(float(torch.exp(sum(lp[t - 1, seq[t]] for t in GEN))), rel=1e-9)
    pb = causal_lm_problem(tiny_llama, seq, elig, GEN, score="logit")
    assert pb.objective(x).item() == pytest.approx(float(sum(logits[t - 1, seq[t]] for t in GEN)), abs=TOL)
    pb = causal_lm_problem(tiny_llama, seq, elig, [8], score="contrastive", alternative=5)
    assert pb.objective(x).item() == pytest.approx(float(lp[7, seq[8]] - lp[7, 5]), abs=TOL)


def test_batch_and_dtype_preserved(problems):
    pb = problems["span_prompt"]
    x = pb.embeds.unsqueeze(0).repeat(3, 1, 1)
    s = pb.objective(x)
    assert s.shape == (3,) and s.dtype == torch.float64
    assert torch.equal(s[0].expand(3), s)


def test_float32_model_stays_float32(seq):
    model = make_tiny_llama().to(torch.float32)
    pb = causal_lm_problem(model, seq, eligible_mask(len(seq), PROMPT), [8], pad_id=PAD)
    assert pb.embeds.dtype == torch.float32
    assert pb.objective(pb.embeds.unsqueeze(0)).dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in pb.operators.values())


# ------------------------------------------------------------------------------ deletion


def test_keep_all_equals_no_keep(problems):
    pb = problems["span_prompt"]
    x = pb.embeds.unsqueeze(0)
    keep = torch.ones(1, pb.length, dtype=torch.bool)
    assert pb.objective(x, keep).item() == pytest.approx(pb.objective(x).item(), abs=1e-12)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize(
    "deleted,targets",
    [([3], [8]), ([1, 4], [8]), ([7], [8]), ([6, 7], [8]), ([2], GEN), ([1, 5], GEN), ([5], GEN)],
)
def test_keep_mask_equals_real_deletion(seq, attn, deleted, targets):
    """A False keep entry must score exactly like cutting the token out of the text,
    including when the cut token is the one right before a target (row remapping)."""
    model = make_tiny_llama(attn=attn)
    L = len(seq)
    elig = eligible_mask(L, range(1, min(targets)))
    pb = causal_lm_problem(model, seq, elig, targets, pad_id=PAD)
    keep = torch.ones(2, L, dtype=torch.bool)
    keep[1, deleted] = False
    s = pb.objective(pb.embeds.unsqueeze(0).repeat(2, 1, 1), keep)
    cut = torch.tensor([int(t) for i, t in enumerate(seq) if i not in deleted])
    shifted = [t - sum(d < t for d in deleted) for t in targets]
    assert s[1].item() == pytest.approx(ref_span(model, cut, shifted), abs=DEL_TOL)
    assert s[0].item() == pytest.approx(ref_span(model, seq, targets), abs=1e-9)
    assert model.config._attn_implementation == attn


def test_replace_delete_goes_through_keep(problems, tiny_llama, seq):
    pb = problems["span_prompt"]
    drop = torch.zeros(1, pb.length, dtype=torch.bool)
    drop[0, [2, 7]] = True                      # 7 is held fixed: must not be deleted
    e, keep = pb.replace("delete", drop)
    assert keep is not None and keep[0].tolist() == [i != 2 for i in range(pb.length)]
    cut = torch.cat([seq[:2], seq[3:]])
    assert pb.objective(e, keep).item() == pytest.approx(ref_span(tiny_llama, cut, [5, 6, 7]), abs=DEL_TOL)


def test_deleting_a_target_is_an_error(problems):
    pb = problems["span_prompt"]
    keep = torch.ones(1, pb.length, dtype=torch.bool)
    keep[0, 7] = False
    with pytest.raises(ValueError, match="target"):
        pb.objective(pb.embeds.unsqueeze(0), keep)


# ------------------------------------------------------------------------------ operators


def test_operators(problems):
    pb = problems["span_prompt"]
    assert set(pb.operators) == {"pad", "unk", "zero", "mean"}      # Llama has no mask token: omitted
    V = pb.vocab_embeds
    assert V.shape == (VOCAB, pb.embeds.shape[1])
    for name, tid in (("pad", PAD), ("unk", UNK)):
        assert pb.operators[name].shape == pb.embeds.shape
        assert torch.equal(pb.operators[name], V[tid].expand_as(pb.embeds))
    assert torch.equal(pb.operators["zero"], torch.zeros_like(pb.embeds))
    assert torch.allclose(pb.operators["mean"], V.mean(0).expand_as(pb.embeds))
    assert torch.equal(pb.embeds, V[pb.ids])


def test_operators_from_config_and_never_invented(seq):
    model = make_tiny_llama()
    elig = eligible_mask(len(seq), PROMPT)
    pb = causal_lm_problem(model, seq, elig, [8])
    assert set(pb.operators) == {"zero", "mean"}                     # no pad/mask/unk anywhere: none invented
    model.config.pad_token_id = 2
    try:
        pb = causal_lm_problem(model, seq, elig, [8])
        assert torch.equal(pb.operators["pad"][0], pb.vocab_embeds[2])
    finally:
        model.config.pad_token_id = None
    with pytest.raises(KeyError, match="known: delete, mean, zero"):
        pb0 = causal_lm_problem(model, seq, elig, [8])
        pb0.replace("pad", torch.ones(1, len(seq), dtype=torch.bool))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        causal_lm_problem(model, seq, elig, [8], mask_id=VOCAB)


def test_mean_operator_follows_the_embedding_matrix(seq):
    """The vocabulary mean is computed once per embedding matrix and recomputed when the
    matrix changes (in place, or replaced)."""
    model = make_tiny_llama()
    elig = eligible_mask(len(seq), PROMPT)
    emb = model.get_input_embeddings()
    first = causal_lm_problem(model, seq, elig, [8]).operators["mean"]
    assert torch.equal(first, emb.weight.detach().mean(0).expand_as(first))
    with torch.no_grad():
        emb.weight.mul_(2.0)
    second = causal_lm_problem(model, seq, elig, [8]).operators["mean"]
    assert torch.allclose(second, 2 * first)
    emb.weight = torch.nn.Parameter(torch.ones_like(emb.weight))
    third = causal_lm_problem(model, seq, elig, [8]).operators["mean"]
    assert torch.equal(third, torch.ones_like(third))


# ------------------------------------------------------------------------------ attentions / logprobs


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attentions_work_with_any_loaded_attention(seq, attn):
    model = make_tiny_llama(attn=attn)
    pb = causal_lm_problem(model, seq, eligible_mask(len(seq), PROMPT), [8], pad_id=PAD)
    atts = pb.attentions(pb.embeds)
    assert len(atts) == 2 and all(a.shape == (4, len(seq), len(seq)) for a in atts)
    for a in atts:
        assert torch.allclose(a.sum(-1), torch.ones(4, len(seq), dtype=a.dtype))
        assert torch.all(torch.triu(a, diagonal=1) == 0)
    atts2, norms = pb.attentions.with_value_norms(pb.embeds)
    assert norms is not None and [n.shape for n in norms] == [(4, len(seq))] * 2
    assert all(torch.equal(a, b) for a, b in zip(atts, atts2))
    assert model.config._attn_implementation == attn                # restored


def test_value_norms_match_manual(tiny_llama, problems):
    pb = problems["span_prompt"]
    _, norms = pb.attentions.with_value_norms(pb.embeds)
    layer = tiny_llama.model.layers[0]
    with torch.no_grad():
        h = layer.input_layernorm(pb.embeds.unsqueeze(0))[0]
        v = layer.self_attn.v_proj(h).view(len(pb.ids), 2, 8)            # 2 kv heads of dim 8
        wo = layer.self_attn.o_proj.weight                                  # (32, 4 * 8)
        for head in range(4):
            ref = (v[:, head // 2] @ wo[:, head * 8:(head + 1) * 8].T).abs().sum(-1)
            assert torch.allclose(norms[0][head], ref, atol=1e-9)


def test_logprobs_callables(tiny_llama, seq, problems):
    pb = problems["span_prompt"]
    x = pb.embeds.unsqueeze(0).repeat(2, 1, 1)
    out = pb.logprobs(x)
    ref = lm_logprobs(tiny_llama, seq)
    assert out.shape == (2, 3, VOCAB)
    assert torch.allclose(out[0], ref[[5, 6, 7]], atol=1e-9)
    rows = pb.logprobs.at_rows(x, None, [0, 3, 7])
    assert torch.allclose(rows[1], ref[[0, 3, 7]], atol=1e-9)


# ------------------------------------------------------------------------------ validation


def test_validation_errors(tiny_llama, seq):
    L = len(seq)
    with pytest.raises(ValueError, match="unknown score"):
        causal_lm_problem(tiny_llama, seq, eligible_mask(L, PROMPT), [8], score="entropy")
    with pytest.raises(ValueError, match="eligible"):
        causal_lm_problem(tiny_llama, seq, eligible_mask(L, [1, 8]), [8])
    with pytest.raises(ValueError, match="alternative"):
        causal_lm_problem(tiny_llama, seq, eligible_mask(L, PROMPT), [8], score="contrastive")
    with pytest.raises(ValueError, match="exactly one target"):
        causal_lm_problem(tiny_llama, seq, eligible_mask(L, PROMPT), GEN, score="contrastive", alternative=3)
    with pytest.raises(ValueError, match="1..8"):
        causal_lm_problem(tiny_llama, seq, eligible_mask(L, PROMPT), [0])
    with pytest.raises(ValueError, match="bool"):
        causal_lm_problem(tiny_llama, seq, torch.ones(L), [8])
    assert seq[0] == BOS
