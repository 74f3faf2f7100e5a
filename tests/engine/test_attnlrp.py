"""AttnLRP (scopecheck's own rules, engine/methods/attnlrp.py) and the conservation check.

The reference for the rules is an explicit layer-by-layer relevance propagation in float64
(relevance messages ``x_j w_jk / z_k * R_k``, the uniform rule on every product, AttnLRP's
softmax rule), written below from the weights of a 1-layer random Llama without autograd or the
method's hooks. Conservation, zeros outside E and the ground-truth rate run on the reference
models through contracts.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

import scopecheck
from tiny_llama import BOS, PAD, UNK, eligible_mask, make_tiny_gpt2
from scopecheck.checks.registry import run_check
from scopecheck.engine.methods import run_method
from scopecheck.engine.methods.attnlrp import attnlrp_rules, relevance
from scopecheck.engine.precision import float64_forward
from scopecheck.reference import generate
from scopecheck.engine.scoring import causal_lm_problem
from scopecheck.errors import ContractValidationError, MethodRefused

STORIES = "/work/shared/models/stories260k"
PAGE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "attnlrp.md"


def _page_counts(pattern: str) -> list[int]:
    """The counts the docs page states (``{n}`` marks each), found exactly once."""
    text = " ".join(PAGE.read_text(encoding="utf-8").split())
    found = re.findall(pattern.replace("{n}", r"(\d+)"), text)
    assert len(found) == 1, f"{pattern!r} found {len(found)} times in {PAGE}"
    return [int(g) for g in found[0]]


def _one_layer(attn: str, seed: int = 1, layers: int = 1, **extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=30, hidden_size=16, intermediate_size=24, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, bos_token_id=BOS,
                      eos_token_id=2, pad_token_id=None, attn_implementation=attn, initializer_range=0.3, **extra)
    model = LlamaForCausalLM(cfg).to(torch.float64).eval()
    with torch.no_grad():
        for mod in model.modules():                      # non-zero biases, where the config has them
            if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                mod.bias.normal_(0.0, 0.3)
    return model


def _rope(q: torch.Tensor, theta: float) -> torch.Tensor:
    """The rotation matrices ``(L, hd, hd)`` of RoPE (rotate-half convention), from the formula."""
    L, hd = q.shape[0], q.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)          # (hd/2,)
    R = torch.zeros(L, hd, hd, dtype=torch.float64)
    h = hd // 2
    for i in range(L):
        for c in range(h):
            a = i * float(inv[c])
            R[i, c, c], R[i, c, c + h] = math.cos(a), -math.sin(a)
            R[i, c + h, c + h], R[i, c + h, c] = math.cos(a), math.sin(a)
    return R


def _lin(x: torch.Tensor, W: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Relevance through ``z = x W^T`` (no bias), the z-rule: ``R_j = sum_k x_j W_kj / z_k R_k``."""
    z = x @ W.T
    return x * ((R / z) @ W)


def explicit_lrp(model, ids: list[int], row: int, target: int) -> dict[str, object]:
    """AttnLRP by hand on a 1-layer Llama, float64: logits, R at every input position, the
    relevance the softmax rule absorbs."""
    W = {k: v.detach().to(torch.float64) for k, v in model.state_dict().items()}
    cfg = model.config
    H, Hk, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size
    hd, G, eps = d // H, H // Hk, cfg.rms_norm_eps
    theta = cfg.rope_parameters["rope_theta"]
    p = "model.layers.0."

    def rms(x, w):
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return x * r * w

    e = W["model.embed_tokens.weight"][ids]                                         # (L, d)
    L = e.shape[0]
    n1 = rms(e, W[p + "input_layernorm.weight"])
    q = (n1 @ W[p + "self_attn.q_proj.weight"].T).view(L, H, hd)
    k = (n1 @ W[p + "self_attn.k_proj.weight"].T).view(L, Hk, hd)
    v = (n1 @ W[p + "self_attn.v_proj.weight"].T).view(L, Hk, hd)
    Rot = _rope(q, theta)                                                           # (L, hd, hd)
    qr = torch.einsum("icd,ihd->ihc", Rot, q)
    kr = torch.einsum("icd,ihd->ihc", Rot, k)
    scale = hd ** -0.5
    allowed = torch.tril(torch.ones(L, L, dtype=torch.bool))
    S = torch.zeros(H, L, L, dtype=torch.float64)
    A = torch.zeros(H, L, L, dtype=torch.float64)
    o = torch.zeros(L, H, hd, dtype=torch.float64)
    for h in range(H):
        g = h // G
        S[h] = (qr[:, h] @ kr[:, g].T) * scale
        A[h] = torch.softmax(S[h].masked_fill(~allowed, -math.inf), -1)
        o[:, h] = A[h] @ v[:, g]
    ao = o.reshape(L, H * hd)
    a = ao @ W[p + "self_attn.o_proj.weight"].T
    h1 = e + a
    n2 = rms(h1, W[p + "post_attention_layernorm.weight"])
    gt = n2 @ W[p + "mlp.gate_proj.weight"].T
    up = n2 @ W[p + "mlp.up_proj.weight"].T
    act = gt * torch.sigmoid(gt)
    pr = act * up
    m = pr @ W[p + "mlp.down_proj.weight"].T
    h2 = h1 + m
    nf = rms(h2, W["model.norm.weight"])
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    logits = nf @ head.T                                                           # (L, V)

    # ---- relevance, top down
    R_logits = torch.zeros_like(logits)
    R_logits[row, target] = logits[row, target]
    R_h2 = _lin(nf, head, R_logits)                       # RMSNorm: identity rule (R passes unchanged)
    R_m = m / h2 * R_h2                                   # residual sum: shares of the sum
    R_h1 = h1 / h2 * R_h2
    R_pr = _lin(pr, W[p + "mlp.down_proj.weight"], R_m)
    R_gt = R_pr / 2                                       # uniform rule; SiLU: identity rule
    R_up = R_pr / 2
    R_h1 = R_h1 + _lin(n2, W[p + "mlp.gate_proj.weight"], R_gt) + _lin(n2, W[p + "mlp.up_proj.weight"], R_up)
    R_e = e / h1 * R_h1
    R_a = a / h1 * R_h1
    R_o = _lin(ao, W[p + "self_attn.o_proj.weight"], R_a).view(L, H, hd)
    R_A = torch.zeros(H, L, L, dtype=torch.float64)
    R_v = torch.zeros(L, Hk, hd, dtype=torch.float64)
    R_qr = torch.zeros(L, H, hd, dtype=torch.float64)
    R_kr = torch.zeros(L, Hk, hd, dtype=torch.float64)
    absorbed = 0.0
    for h in range(H):
        g = h // G
        share = A[h].unsqueeze(-1) * v[:, g].unsqueeze(0) / o[:, h].unsqueeze(1) * R_o[:, h].unsqueeze(1)  # (i, j, c)
        R_A[h] = 0.5 * share.sum(-1)
        R_v[:, g] += 0.5 * share.sum(0)
        # AttnLRP's softmax rule, over the allowed (unmasked) keys of each query
        R_S = torch.where(allowed, S[h] * (R_A[h] - A[h] * R_A[h].sum(-1, keepdim=True)), torch.zeros_like(S[h]))
        absorbed += float(R_A[h].sum() - R_S.sum())
        pair = (qr[:, h].unsqueeze(1) * kr[:, g].unsqueeze(0) * scale / S[h].unsqueeze(-1)
                * R_S.unsqueeze(-1))                                                  # (i, j, c)
        pair = torch.where(allowed.unsqueeze(-1), pair, torch.zeros_like(pair))
        R_qr[:, h] += 0.5 * pair.sum(1)
        R_kr[:, g] += 0.5 * pair.sum(0)
    # RoPE is a linear map per position: z-rule through it
    R_q = torch.stack([_lin(q[i], Rot[i], R_qr[i]) for i in range(L)])
    R_k = torch.stack([_lin(k[i], Rot[i], R_kr[i]) for i in range(L)])
    R_n1 = (_lin(n1, W[p + "self_attn.q_proj.weight"], R_q.reshape(L, -1))
            + _lin(n1, W[p + "self_attn.k_proj.weight"], R_k.reshape(L, -1))
            + _lin(n1, W[p + "self_attn.v_proj.weight"], R_v.reshape(L, -1)))
    R_e = R_e + R_n1
    return {"logits": logits, "R": R_e.sum(-1), "absorbed_softmax": absorbed, "logit": float(logits[row, target])}


# ------------------------------------------------------------------------------ the rules, by hand


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_matches_an_explicit_float64_relevance_propagation(attn):
    model = _one_layer(attn)
    ids = [BOS, 7, 12, 25, 9, 18, 4]
    seq = torch.tensor(ids)
    pb = causal_lm_problem(model, seq, eligible_mask(len(ids), range(1, 5)), [6], score="logit", pad_id=PAD,
                           unk_id=UNK)
    ref = explicit_lrp(model, ids, 5, ids[6])
    with float64_forward(model), torch.no_grad():
        logits = model(input_ids=seq[None]).logits[0]
        rel, info = relevance(pb)
        out = run_method("attnlrp", pb)
    assert torch.allclose(ref["logits"], logits, rtol=0, atol=1e-12)             # the hand forward is the model's
    assert torch.allclose(rel, ref["R"], rtol=0, atol=1e-10), (rel, ref["R"])
    assert info["absorbed_softmax"] == pytest.approx(ref["absorbed_softmax"], abs=1e-10)
    assert abs(ref["absorbed_softmax"]) > 1e-3                                   # the softmax rule does absorb
    assert info["conserved"] == pytest.approx(ref["logit"], abs=1e-12)
    assert float(ref["R"].sum()) + ref["absorbed_softmax"] == pytest.approx(ref["logit"], abs=1e-10)
    assert torch.equal(out.scores[pb.eligible], rel[pb.eligible]) and torch.all(out.scores[~pb.eligible] == 0)
    assert bool((rel[~pb.eligible] != 0).any())                                  # masking removed real relevance


def test_the_rules_change_the_backward_only_and_are_removed_exactly():
    model = _one_layer("sdpa")
    x = model.get_input_embeddings()(torch.tensor([[BOS, 5, 6, 7, 8]])).detach()

    def hooks():
        return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]

    def run():
        e = x.clone().requires_grad_(True)
        with torch.enable_grad():
            z = model(inputs_embeds=e).logits
            (g,) = torch.autograd.grad(z[0, -1, 3], e)
        return z.detach(), g

    before, state = hooks(), {k: v.clone() for k, v in model.state_dict().items()}
    z0, g0 = run()
    with attnlrp_rules(model):
        assert hooks() != before
        z1, g1 = run()
    z2, g2 = run()
    assert torch.equal(z0, z1) and torch.equal(z0, z2)                          # forward bit for bit
    assert torch.equal(g0, g2) and not torch.allclose(g0, g1)                    # backward: only under the rules
    assert hooks() == before and all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_forward_unchanged_on_a_reference_model():
    r = scopecheck.run(_contract("reference:translate-ar", "prompt_conditioned(target = T)"), device="cpu")
    model = r.compiled.problem.objective.model
    ids = r.compiled.problem.ids[None]
    with torch.no_grad():
        before = model(input_ids=ids).logits
        with attnlrp_rules(model):
            under = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert torch.equal(before, under) and torch.equal(before, after)


def test_biases_absorb_what_the_ledger_states():
    """Llama with ``attention_bias`` and ``mlp_bias``: the linear biases absorb ``b * grad``; with it
    and the softmax's share, the relevance over every position is the target logit (float64)."""
    model = _one_layer("eager", seed=3, layers=2, attention_bias=True, mlp_bias=True)
    seq = torch.tensor([BOS, 7, 12, 25, 9, 18, 4])
    pb = causal_lm_problem(model, seq, eligible_mask(7, range(1, 5)), [5, 6], score="logit", pad_id=PAD)
    with float64_forward(model), torch.no_grad():
        rel, info = relevance(pb)
        logits = model(input_ids=seq[None]).logits[0]
    logit = float(logits[4, 18] + logits[5, 4])                                  # the span's two target logits
    assert info["conserved"] == pytest.approx(logit, abs=1e-12)
    assert abs(info["absorbed_bias"]) > 1e-3
    assert float(rel.sum()) + info["absorbed_softmax"] + info["absorbed_bias"] == pytest.approx(logit, abs=1e-10)
    assert float(rel.sum()) + info["absorbed_softmax"] != pytest.approx(logit, abs=1e-3)


def test_refuses_a_gate_activation_it_does_not_implement():
    model = _one_layer("eager", hidden_act="gelu")
    pb = causal_lm_problem(model, torch.tensor([BOS, 5, 6, 7]), eligible_mask(4, [1, 2]), [3], pad_id=PAD)
    with pytest.raises(MethodRefused, match="for silu, not hidden_act = 'gelu'"):
        run_method("attnlrp", pb)


def test_refuses_an_architecture_it_does_not_implement():
    gpt2 = make_tiny_gpt2()
    pb = causal_lm_problem(gpt2, torch.tensor([BOS, 5, 6, 7]), eligible_mask(4, [1, 2]), [3], pad_id=PAD)
    with pytest.raises(MethodRefused, match="LlamaForCausalLM only, not GPT2LMHeadModel"):
        run_method("attnlrp", pb)


@pytest.mark.parametrize("body", [" score log p(y | x) via chain\n fixed nothing\n explain y\n eligible x",
                                  " use state_level(step = 6)"])
def test_diffusion_contracts_are_refused_by_the_registry(body):
    src = ('contract "d" {\n model reference:translate-mdlm\n prompt "Translate to French: The dog is black."\n'
           f' output "Le chien est noir."\n{body}\n process masked_diffusion(sampler = confidence, steps = 8)\n'
           ' method attnlrp\n seed 0\n}\n')
    with pytest.raises(scopecheck.ContractErrors) as err:
        scopecheck.run(src, device="cpu")
    msg = str(err.value)
    assert "method-contract" in msg and "attnlrp" in msg and "does not support" in msg, msg


# ------------------------------------------------------------------------------ reference models


PROMPTS = {
    "reference:translate-ar": ("Translate to French: The dog is black.", "Le chien est noir."),
    "reference:retrieval-ar": ("Story: the cat sat near a red box . Fact: the key is blue . Question: what color "
                               "is the key ? Answer:", "blue"),
    json.dumps(STORIES): ("Once upon a time there was a little girl", " who loved to play"),
}
KINDS = ("local_next_token(target = T)", "prompt_conditioned(target = T)", "span_prompt")


def _contract(model: str, use: str, prompt: str | None = None, output: str | None = None, method: str = "attnlrp"):
    p, o = PROMPTS[model] if prompt is None else (prompt, output)
    return (f'contract "attnlrp" {{\n model {model}\n prompt {json.dumps(p)}\n output {json.dumps(o)}\n'
            f' use {use}\n method {method}\n seed 0\n}}\n')


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("use", KINDS)
@pytest.mark.parametrize("model", list(PROMPTS))
def test_conservation_within_its_tolerance_and_zero_outside_E(model, use, dtype):
    r = scopecheck.run(_contract(model, use), device="cpu", dtype=dtype)
    c = run_check("conservation", r)
    tol = c.config["tolerance"]
    assert c.passed and c.fields["relative_gap"] <= tol, c.fields
    if dtype == "float64":
        assert c.fields["relative_gap"] < 1e-12, c.fields
    # the map alone does not sum to the logit: the softmax rule absorbs a real share
    assert c.fields["raw_gap"] > 100 * tol
    raw = run_check("conservation", r, {"absorbed": False})
    assert not raw.passed and raw.fields["relative_gap"] == pytest.approx(c.fields["raw_gap"], rel=1e-12)
    assert "exceeds the tolerance" in raw.note
    print(f"{model} {use} {dtype}: relative gap {c.fields['relative_gap']:.2e}, raw gap {c.fields['raw_gap']:.4f} "
          f"(softmax absorbed {r.info['absorbed_softmax']:.4f} of {r.info['conserved']:.4f})")
    outside = [t for t in r.tokens if not t.eligible]
    assert outside and all(t.score == 0.0 for t in outside)
    assert any(t.score != 0.0 for t in r.tokens if t.eligible)
    with float64_forward(r.compiled.problem.objective.model):                   # as the engine ran it
        again = relevance(r.compiled.problem)[0]
    assert r.info["relevance_total"] == pytest.approx(float(again.double().sum()), rel=1e-12)
    assert torch.equal(torch.tensor(r.scores, dtype=torch.float64)[r.compiled.problem.eligible.cpu()],
                       again.cpu()[r.compiled.problem.eligible.cpu()].to(torch.float64))


def test_conservation_is_refused_for_a_method_that_claims_none():
    r = scopecheck.run(_contract("reference:translate-ar", "prompt_conditioned(target = T)",
                                 method="gradient_x_input"), device="cpu")
    with pytest.raises(ContractValidationError, match="claims no conservation") as err:
        run_check("conservation", r)
    assert "attnlrp" in str(err.value.expected)


def _content_targets(ex) -> list[int]:
    """The French noun and the adjectives (as tests/engine/test_contracts.py counts them)."""
    return [1] + [j for j, t in enumerate(ex.output_tokens) if j >= 3 and t not in (".", "!", "très", "et")]


def test_ground_truth_rate_on_the_translate_task():
    """Prompt-conditioned maps of the 72 content targets of 30 held-out translate examples (seed
    11, as tests/engine/test_contracts.py counts IG's and occlusion's 72/72): how often a causal
    token (known by construction) ranks first, for attnlrp and gradient x input, against the rate
    of a uniformly random ranking (exact: the mean share of causal tokens among the prompt's)."""
    hits = {"attnlrp": 0, "gradient_x_input": 0}
    chance = 0.0
    total = 0
    for ex in generate("translate", 30, split="heldout", seed=11):
        for j in _content_targets(ex):
            total += 1
            for method in hits:
                r = scopecheck.run(_contract("reference:translate-ar", f"prompt_conditioned(target = {j + 1})",
                                             ex.prompt, ex.output, method), device="cpu")
                hits[method] += (r.ranking()[0].index - 1) in ex.causal[j]
            n_prompt = sum(1 for t in r.tokens if t.role == "prompt")
            chance += len(set(ex.causal[j])) / n_prompt
    chance /= total
    rates = {k: v / total for k, v in hits.items()}
    print(f"causal token ranked first in {hits} of {total} (rates {rates}); random ranking {chance:.3f}")
    assert total == 72
    assert rates["attnlrp"] > 2 * chance
    # the page's figures are these
    assert [hits["attnlrp"], total] == _page_counts(r"attnlrp ranks a causal token first in {n}/{n}")
    assert [hits["gradient_x_input"], total] == _page_counts(r"gradient x input does in {n}/{n}")
    assert f"about the {chance:.3f} a random ranking gets" in " ".join(PAGE.read_text(encoding="utf-8").split())


def test_docs_page_blocks_run_and_pass():
    """Every contract block of docs/guide/attnlrp.md validates, runs and passes its expectations
    (as tests/test_readme.py runs the README's)."""
    from scopecheck.loader import check_text
    from scopecheck.orchestration.runner import Runner
    from scopecheck.spec import model as m

    bodies = re.findall(r"```scope\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    assert bodies
    runner = Runner(device="cpu")
    for i, text in enumerate(bodies):
        sf = check_text(text, str(PAGE.parent / f"attnlrp-block{i + 1}.scope"))
        assert not sf.errors, "\n".join(e.render() for e in sf.errors)
        for doc in sf.documents:
            assert isinstance(doc, m.Contract)
            cr = runner.run(doc)
            assert cr.error is None, cr.error
            assert doc.expects
            for e in doc.expects:
                o = runner.evaluate(cr, e)
                assert o.passed, o.explanation
