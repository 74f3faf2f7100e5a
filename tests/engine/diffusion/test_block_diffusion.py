"""Block-causal masked diffusion (``process masked_diffusion(block = S)``; BD3-LM, Steerling).

A tiny random BERT masked LM built here (a real transformer that takes a 4D attention mask) is
the denoiser. Every property is checked against an independent computation: the mask by brute
force (perturb one token, look at every earlier block's predictions), the chain against the
model called directly with a mask built by loops, the block ELBO against exact enumeration,
and ``block >= R`` against today's bidirectional sampler."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scopecheck.checks.registry import run_check
from scopecheck.engine.diffusion import chain as chain_mod
from scopecheck.engine.diffusion.chain import SamplerSettings, sample_chain
from scopecheck.engine.diffusion.compile import state_score
from scopecheck.engine.diffusion.denoiser import Denoiser
from scopecheck.engine.diffusion.estimators import elbo_reads, elbo_with_error, order_reads, score_reads
from scopecheck.engine.run import run

PROMPT = "Translate to French: The dog is black."
R, S = 7, 3                                   # blocks [0, 3) [3, 6) [6, 7): the last one shorter


def _tiny(attn: str = "sdpa", layers: int = 2, seed: int = 0):
    from transformers import BertConfig, BertForMaskedLM

    from scopecheck.training.train import build_tokenizer

    tok = build_tokenizer("translate")
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok.get_vocab()), hidden_size=16, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64, type_vocab_size=1,
                     attn_implementation=attn)
    return BertForMaskedLM(cfg).eval().double(), tok


@pytest.fixture(scope="module")
def tiny():
    return _tiny()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny model saved as a local safetensors directory (loaded by the real loader)."""
    from scopecheck.training.train import save_tokenizer

    model, tok = _tiny()
    d = tmp_path_factory.mktemp("models") / "tiny-block"
    model.float().save_pretrained(str(d), safe_serialization=True)
    save_tokenizer(tok, d)
    return d


def _den(model, tok, block):
    return Denoiser(model, mask_id=tok.mask_token_id, adapter="plain", eos_id=tok.eos_token_id,
                    pad_id=tok.pad_token_id, block=block)


def _prompt(tok) -> list[int]:
    return tok(PROMPT)["input_ids"]


def _mask_by_loops(P: int, R_: int, block: int) -> torch.Tensor:
    """``[q, k]``: may position ``q`` attend to ``k``? Written out from the definition."""
    def blk(i: int) -> int:
        return 0 if i < P else (i - P) // block
    L = P + R_
    return torch.tensor([[blk(k) <= blk(q) for k in range(L)] for q in range(L)])


def _direct_logp(model, ids: list[int], P: int, block: int | None) -> torch.Tensor:
    """log p at the response slots, the model called directly (additive mask from the loops)."""
    L = len(ids)
    kw = {}
    if block is not None:
        allowed = _mask_by_loops(P, L - P, block)
        neg = torch.full((L, L), torch.finfo(torch.float64).min, dtype=torch.float64)
        kw["attention_mask"] = torch.where(allowed, torch.zeros_like(neg), neg).view(1, 1, L, L)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), **kw).logits[0, P:].double().log_softmax(-1)


# ------------------------------------------------------------------------------ the mask


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@torch.no_grad()
def test_attention_is_exactly_block_causal_by_brute_force(attn):
    """Perturbing any response token never changes a prediction of an earlier block (brute force over
    every slot and two replacement tokens, on random states); it does change its own block's, and a
    prompt token changes every block's; the bidirectional denoiser fails the same test."""
    model, tok = _tiny(attn)
    den = _den(model, tok, S)
    prompt = _prompt(tok)
    P = len(prompt)
    assert torch.equal(den.attention(P, P + R), _mask_by_loops(P, R, S))
    g = torch.Generator().manual_seed(1)
    V = len(tok.get_vocab())
    same_block_moved = 0
    for trial in range(3):
        state = torch.randint(5, V, (R,), generator=g)
        state[torch.rand(R, generator=g) < 0.4] = den.mask_id
        base_ids = torch.tensor(prompt + state.tolist())
        base = den.logits(den.embed(base_ids.unsqueeze(0)), P)[0]
        for j in range(R):
            for new in (den.mask_id, int(torch.randint(5, V, (1,), generator=g))):
                ids = base_ids.clone()
                if int(ids[P + j]) == new:
                    continue
                ids[P + j] = new
                out = den.logits(den.embed(ids.unsqueeze(0)), P)[0]
                earlier = j // S * S                                  # slots of blocks before j's block
                if earlier:
                    assert float((out[:earlier] - base[:earlier]).abs().max()) <= 1e-12, (trial, j)
                mine = [i for i in range(earlier, min(R, earlier + S)) if i != j]
                same_block_moved += bool(mine) and float((out[mine] - base[mine]).abs().max()) > 1e-6
    assert same_block_moved > 10                                      # bidirectional within a block
    ids = torch.tensor(prompt + [den.mask_id] * R)
    a = den.logits(den.embed(ids.unsqueeze(0)), P)[0]
    ids[2] = 7
    b = den.logits(den.embed(ids.unsqueeze(0)), P)[0]
    for blk in range(0, R, S):
        assert float((a[blk:blk + S] - b[blk:blk + S]).abs().max()) > 1e-6    # the prompt reaches every block
    # control: without the mask, a later block does reach an earlier one (the test can fail)
    bi = _den(model, tok, None)
    ids = torch.tensor(prompt + [den.mask_id] * R)
    a = bi.logits(bi.embed(ids.unsqueeze(0)), P)[0]
    ids[P + R - 1] = 9
    b = bi.logits(bi.embed(ids.unsqueeze(0)), P)[0]
    assert float((a[:S] - b[:S]).abs().max()) > 1e-6
    assert den.check_block_causal(P, P + R) <= 1e-12


def test_a_model_that_ignores_the_mask_is_refused(tiny):
    model, tok = tiny

    class Ignores(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def forward(self, inputs_embeds=None, attention_mask=None, position_ids=None):
            return self.inner(inputs_embeds=inputs_embeds, position_ids=position_ids)

    from scopecheck.errors import InvalidSettings

    den = _den(Ignores(model), tok, S)
    with pytest.raises(InvalidSettings, match="does not honour a 4D attention mask"):
        den.check_block_causal(10, 10 + R)
    with pytest.raises(InvalidSettings, match="plain adapter"):
        Denoiser(model, tok.mask_token_id, "shift", block=S)


# ------------------------------------------------------------------------------ the chain


def test_block_equal_to_the_length_is_todays_sampler(tiny):
    """One block (``block = R``, or larger) is the bidirectional sampler: the same commits, tokens and
    log-probs, for free greedy, seeded sampling, random order and a teacher-forced chain."""
    model, tok = tiny
    prompt = _prompt(tok)
    force = tok("Le chien est noir.", add_special_tokens=False)["input_ids"]
    force = force + [tok.eos_token_id] * (R - len(force))
    cases = [dict(steps=R), dict(steps=4, temperature=1.0, seed=3), dict(steps=R, sampler="random", seed=5),
             dict(steps=R, forced=True)]
    for kw in cases:
        for block in (R, R + 5):
            f = force if kw.get("forced") else None
            old = sample_chain(_den(model, tok, None), prompt, SamplerSettings(length=R, **kw), f)
            new = sample_chain(_den(model, tok, block), prompt, SamplerSettings(length=R, block=block, **kw), f)
            assert new.output == old.output, kw
            assert [(s.stage, s.positions, s.tokens) for s in new.steps] == \
                   [(s.stage, s.positions, s.tokens) for s in old.steps], kw
            for a, b in zip(new.steps, old.steps):
                assert a.logprobs == pytest.approx(b.logprobs, abs=1e-12)
            assert {s.block for s in new.steps} == {0}


@pytest.mark.parametrize("steps,sampler", [(R, "confidence"), (6, "confidence"), (R, "random"), (6, "left_to_right")])
def test_blocks_commit_in_order_and_each_step_is_the_masked_model(tiny, steps, sampler):
    """Blocks are committed one after the other (every slot of block b before any of block b + 1),
    each stage inside its block; the chain records the block of every step; every recorded log-prob
    is the model on the state before its stage with the block-causal mask (built here by loops)."""
    model, tok = tiny
    den = _den(model, tok, S)
    prompt = _prompt(tok)
    P = len(prompt)
    c = sample_chain(den, prompt, SamplerSettings(steps=steps, length=R, sampler=sampler, block=S, seed=2))
    layout = [(0, 3), (3, 6), (6, 7)]
    per_block = [3, 3, 1] if steps == R else [2, 2, 2]
    assert [s.stage for s in c.steps] == list(range(steps, 0, -1))
    assert c.block_order() == [b for b, k in enumerate(per_block) for _ in range(k)]
    assert sorted(p for s in c.steps for p in s.positions) == list(range(R))
    for s in c.steps:
        a, z = layout[s.block]
        assert all(a <= p < z for p in s.positions), (s.stage, s.block, s.positions)
        assert c.block_of(s.stage) == s.block
    if steps == R:
        assert all(len(s.positions) == 1 for s in c.steps)         # one slot per stage, the last block shorter
    if sampler == "left_to_right":
        assert [p for s in c.steps for p in s.positions] == list(range(R))
    for s in c.steps:
        lp = _direct_logp(model, prompt + c.state(s.stage), P, S)
        for p, t, v in zip(s.positions, s.tokens, s.logprobs):
            assert v == pytest.approx(float(lp[p, t]), abs=1e-9)
            if sampler != "random" and steps == R:
                # greedy: the committed token is the argmax; confidence: the most confident open slot
                assert int(lp[p].argmax()) == t
    js = c.to_json()
    assert [st["block"] for st in js["steps"]] == [b + 1 for b in c.block_order()]
    assert js["settings"]["block"] == S and js["settings"]["attention"] == "block-causal"
    # replaying the recorded settings reproduces it exactly
    assert sample_chain(den, prompt, c.settings) == c


def test_layout_errors_are_settings_errors(tiny):
    from scopecheck.errors import InvalidSettings

    model, tok = tiny
    with pytest.raises(InvalidSettings, match="multiple of the 3 blocks"):
        sample_chain(_den(model, tok, S), _prompt(tok), SamplerSettings(steps=4, length=R, block=S))
    with pytest.raises(InvalidSettings, match="not the denoiser's"):
        sample_chain(_den(model, tok, None), _prompt(tok), SamplerSettings(steps=R, length=R, block=S))


# ------------------------------------------------------------------------------ estimators


def test_block_elbo_and_chain_over_orders_by_enumeration(tiny):
    """For a block-causal denoiser the ELBO is the sum of each block's ELBO given the clean earlier
    blocks; the mean of the one-slot-per-stage chain over all within-block orders equals it exactly
    (enumerated both ways), and the Monte Carlo estimate agrees within its standard error."""
    model, tok = tiny
    Rs, Ss = 5, 2                                            # blocks [0, 2) [2, 4) [4, 5)
    den = _den(model, tok, Ss)
    prompt = _prompt(tok)
    P = len(prompt)
    y = torch.tensor(tok("chien est noir", add_special_tokens=False)["input_ids"][:3] + [tok.eos_token_id] * 2)
    assert y.shape[0] == Rs
    emb = den.embed(torch.tensor([prompt + y.tolist()]))
    blocks = [(0, 2), (2, 4), (4, 5)]
    exact = 0.0
    for a, z in blocks:
        n = z - a
        for mask in itertools.product([0, 1], repeat=n):
            m = sum(mask)
            if not m:
                continue
            ids = prompt + [y[i].item() if i < a or (i < z and not mask[i - a]) else den.mask_id for i in range(Rs)]
            lp = _direct_logp(model, ids, P, Ss)
            w = math.gamma(m) * math.gamma(n - m + 1) / math.gamma(n + 1)     # B(m, n - m + 1)
            exact += w * sum(float(lp[a + k, y[a + k]]) for k in range(n) if mask[k])
    orders = [sum(map(list, parts), []) for parts in itertools.product(
        *[itertools.permutations(range(a, z)) for a, z in blocks])]
    with torch.no_grad():
        chains = [float(score_reads(den, emb, P, order_reads(o), y)[0]) for o in orders]
        mc, se = elbo_with_error(den, emb, P, y, samples=512, seed=0)
    assert len(orders) == 2 * 2 * 1
    assert sum(chains) / len(chains) == pytest.approx(exact, abs=1e-9)
    assert abs(float(mc[0]) - exact) <= 3 * float(se[0]), (float(mc[0]), exact, float(se[0]))
    # every read is one block of one draw: that block masked as drawn, the earlier blocks clean
    # (visible), the later ones masked; weight (R_b + 1) / (k |M_jb|)
    reads, old = elbo_reads(Rs, 64, 0, block=Ss), elbo_reads(Rs, 64, 0)
    assert reads.visible.shape[0] == 64 * len(blocks)
    for i in range(reads.visible.shape[0]):
        j, (a, z) = divmod(i, len(blocks))[0], blocks[i % len(blocks)]
        drawn = old.scored[j]                                          # the draw's mask pattern, all slots
        assert int(reads.groups[i]) == j
        assert reads.scored[i].tolist() == [bool(drawn[p]) and a <= p < z for p in range(Rs)]
        assert reads.visible[i].tolist() == [p < a or (a <= p < z and not bool(drawn[p])) for p in range(Rs)]
        m = int(reads.scored[i].sum())
        assert float(reads.weight[i]) == pytest.approx((z - a + 1) / (64 * m) if m else 0.0, abs=1e-15)
    # one block: the reads are today's ELBO reads, read for read
    one, old = elbo_reads(Rs, 16, 0, block=Rs), elbo_reads(Rs, 16, 0)
    assert all(torch.equal(getattr(one, f), getattr(old, f)) for f in ("visible", "scored", "weight", "groups"))


# ------------------------------------------------------------------------------ contracts on the tiny model


def contract(body: str, model_dir: Path, *, steps: int = R, method: str = "occlusion(operator = mask)",
             extra: str = "", output: str = '"Le chien est noir."', dtype_note: str = "") -> str:
    return (f'contract "block" {{\n model "{model_dir}"\n prompt "{PROMPT}"\n output {output}\n{body}\n'
            f' process masked_diffusion(steps = {steps}, length = {R}, block = {S}{extra})\n method {method}\n'
            f' seed 0\n}}\n')


P2O = " score log p(y | x) via chain\n fixed nothing\n explain y\n eligible x"


def test_prompt_to_output_regenerates_through_the_block_causal_chain(tiny_dir, tiny):
    r = run(contract(P2O, tiny_dir), dtype="float64")
    assert r.diffusion["block"] == S and r.diffusion["attention"] == "block-causal"
    assert [st["block"] for st in r.diffusion["chain"]["steps"]] == [1, 1, 1, 2, 2, 2, 3]
    obj = r.compiled.check_objective
    assert obj.den.block == S and obj.chain.settings.block == S
    # the regenerate protocol on a perturbed prompt is the block-causal chain run from scratch on it
    drop = torch.zeros(1, r.compiled.problem.length, dtype=torch.bool)
    drop[0, 7] = True                                             # "black"
    emb, keep = r.compiled.problem.replace("mask", drop)
    before = chain_mod.SAMPLER_CALLS["count"]
    got = float(obj(emb, keep)[0])
    assert chain_mod.SAMPLER_CALLS["count"] > before
    model, tok = tiny
    ids = list(r.compiled.chain.prompt_ids)
    ids[7] = tok.mask_token_id
    y = list(r.compiled.chain.output)
    forced = sample_chain(_den(model, tok, S), ids, r.compiled.chain.settings, y)
    assert got == pytest.approx(sum(lp for s in forced.steps for lp in s.logprobs), abs=1e-9)
    free = sample_chain(_den(model, tok, S), ids, SamplerSettings(**{**r.compiled.chain.settings.__dict__,
                                                                    "forced": False}))
    assert obj.changed[-1] == (free.output != tuple(y))
    d = run_check("deletion", r, {"operator": "mask"})
    assert d.config["protocol"] == "regenerate" and d.config["chain"]["block"] == S
    assert run_check("eligibility", r).fields["outside_mass"] == 0.0


def test_shapley_efficiency_and_ig_completeness_under_block_causal(tiny_dir):
    """Axioms on the block-causal score: exact Shapley sums to S(x) - S(all eligible masked); IG
    completeness passes in float64; nothing outside E."""
    r = run(contract(P2O, tiny_dir, method="exact_shapley(operator = mask)"), dtype="float64")
    E = list(r.compiled.eligible)
    assert all(t.score == 0.0 for t in r.tokens if not t.eligible)
    drop = torch.zeros(1, r.compiled.problem.length, dtype=torch.bool)
    drop[0, E] = True
    emb, keep = r.compiled.problem.replace("mask", drop)
    with torch.no_grad():
        base = float(r.compiled.problem.objective(emb, keep)[0])
    assert sum(t.score for t in r.tokens) == pytest.approx(r.score_input - base, abs=1e-9)
    ig = run(contract(P2O, tiny_dir, method="integrated_gradients(steps = 64, baseline = mask)"), dtype="float64")
    c = run_check("completeness", ig)
    assert c.passed is True, c.fields


def test_state_level_and_stage_map_per_block(tiny_dir, tiny):
    model, tok = tiny
    t = 3                                                         # z[3]: stage 4, the second block's last
    r = run(contract(f" use state_level(step = {t})", tiny_dir), dtype="float64")
    c = r.compiled
    chain = c.chain
    assert chain.block_of(t + 1) == 1
    P = c.n_prompt
    lp = _direct_logp(model, list(chain.prompt_ids) + chain.state(t + 1), P, S)
    want = sum(float(lp[p, chain.output[p]]) for p in chain.committed(t))
    assert r.score_input == pytest.approx(want, abs=1e-9) and state_score(c, t) == pytest.approx(want, abs=1e-9)
    d = run_check("deletion", r, {"operator": "mask"})
    assert d.config["protocol"] == "continue_chain" and d.curve[0] == pytest.approx(r.score_input, abs=1e-9)
    assert all(tok_.score == 0.0 for tok_ in r.tokens if not tok_.eligible)
    # denoising stages: one feature per stage, named with its block; the map and the run-chain protocol
    st = run(contract(" use denoising_stage(estimator = chain)", tiny_dir,
                      method="stage_perturbation(perturbation = noop)"), dtype="float64")
    texts = [tk.text for tk in st.tokens]
    assert [tx.split(":")[0] for tx in texts] == [f"stage {s} (block {chain.block_of(s) + 1})"
                                                  for s in range(R, 0, -1)]
    # the noop map is S(chain) - S(chain; stage s skipped), recomputed here with the block-causal sampler
    y = list(st.compiled.chain.output)
    full = st.compiled.problem.objective
    for tk, s in zip(st.tokens, range(R, 0, -1)):
        run_ = chain_mod.run_chains(_den(model, tok, S), _den(model, tok, S).embed(
            torch.tensor([list(chain.prompt_ids)])), st.compiled.chain.settings, force=torch.tensor(y),
            target=torch.tensor(y), perturb=[[chain_mod.StagePerturbation(s, "noop")]])
        ref = sum(lp for s_ in st.compiled.chain.steps for lp in s_.logprobs)
        assert tk.score == pytest.approx(ref - float(run_.chain_score()[0]), abs=1e-9)
    assert full.chain.settings.block == S
    assert run_check("deletion", st, {}).config["protocol"] == "run_chain"


def test_a_model_that_drops_the_mask_is_a_positioned_error(tiny_dir, tmp_path, monkeypatch):
    from scopecheck.errors import ContractError

    monkeypatch.setattr(Denoiser, "attention", lambda self, n, L, device=None: None)
    f = tmp_path / "drops.scope"
    f.write_text(contract(P2O, tiny_dir), encoding="utf-8")
    with pytest.raises(ContractError) as e:
        run(f)
    text = e.value.with_source(f.read_text()).render()         # as the CLI renders it
    assert f"{f}:9:" in text
    assert "does not honour a 4D attention mask" in text and "block = 3" in text and "^" in text


def test_scope_file_end_to_end_through_the_cli(tiny_dir, tmp_path):
    """A ``.scope`` file on the tiny block-causal model, run by the CLI: passes its expectations and
    writes JSON that validates against the published schema (the block of every step recorded)."""
    from scopecheck.report.jsonout import validate_results

    f = tmp_path / "block.scope"
    f.write_text(contract(P2O, tiny_dir).replace(" seed 0\n", " seed 0\n expect eligibility\n"
                                                 " expect mass(x) > 0\n"), encoding="utf-8")
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "scopecheck.cli", "run", str(f), "--device", "cpu", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    validate_results(doc)
    (run_,) = doc["runs"]
    diff = run_["diffusion"]
    assert diff["block"] == S and diff["attention"] == "block-causal"
    assert [s["block"] for s in diff["chain"]["steps"]] == [1, 1, 1, 2, 2, 2, 3]
