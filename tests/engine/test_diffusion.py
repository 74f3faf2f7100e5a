"""The masked-diffusion engine: sampler and chain, estimators, the three diffusion contracts,
their check protocols (regenerate, continue the chain, run the chain) and the denoiser adapters.

Every expected value is recomputed independently (the model called directly, inputs built by
hand), or is a property that holds by construction (zero mass outside E, causality)."""

from __future__ import annotations

import math

import pytest
import torch

from scopecheck.checks.registry import run_check
from scopecheck.engine import catalog
from scopecheck.engine.diffusion import chain as chain_mod
from scopecheck.engine.diffusion.chain import SamplerSettings, sample_chain
from scopecheck.engine.diffusion.compile import state_score
from scopecheck.engine.diffusion.denoiser import Denoiser, default_adapter
from scopecheck.engine.diffusion.estimators import elbo_with_error, order_reads, score_reads
from scopecheck.reference import REFERENCE_MODELS, generate, reference_dir
from scopecheck.reference.tasks import ADJECTIVES, NOUNS, TASKS
from scopecheck.engine.run import run

FIG1 = ("Translate to French: The dog is black.", "Le chien est noir.")


def contract(body: str, *, model: str = "reference:translate-mdlm", prompt: str = FIG1[0],
             output: str = f'"{FIG1[1]}"', steps: int = 8, method: str = "occlusion(operator = mask)",
             sampler: str = "confidence", extra: str = "") -> str:
    return (f'contract "t" {{\n model {model}\n prompt "{prompt}"\n output {output}\n{body}\n'
            f' process masked_diffusion(sampler = {sampler}, steps = {steps}{extra})\n method {method}\n seed 0\n}}\n')


P2O = " score log p(y | x) via chain\n fixed nothing\n explain y\n eligible x"
STATE = " use state_level(step = {t})"
STAGE = " use denoising_stage(estimator = chain)"


@pytest.fixture(scope="module")
def den():
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(str(reference_dir("translate-mdlm")), dtype=torch.float64).eval()
    return Denoiser(model, mask_id=4, adapter="plain", eos_id=3, pad_id=0, token_types=True)


@pytest.fixture(scope="module")
def fig1():
    return run(contract(P2O))


# ------------------------------------------------------------------------------ reference model


def test_reference_denoiser_files_and_accuracy():
    """Shipped as safetensors with a model card; >= 99% held-out exact match with the default sampler."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from scopecheck.training.train_diffusion import exact_match

    for name in ("translate-mdlm", "capitals-mdlm"):
        d = reference_dir(name)
        assert REFERENCE_MODELS[name].family == "masked_diffusion"
        for f in ("config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md"):
            assert (d / f).is_file(), (name, f)
        card = (d / "MODEL_CARD.md").read_text()
        assert f"python -m scopecheck.training.train --model {name}" in card
        model = AutoModelForMaskedLM.from_pretrained(str(d)).eval()
        assert type(model).__name__ == "BertForMaskedLM"
        tok = AutoTokenizer.from_pretrained(str(d))
        task = REFERENCE_MODELS[name].task
        em, failures = exact_match(model, tok, generate(task, 300, split="heldout", seed=2024),
                                   length=model.config.diffusion_length)
        assert em >= 0.99, (name, em, failures[:3])


# ------------------------------------------------------------------------------ sampler and chain


def _prompt_ids() -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(reference_dir("translate-mdlm")))
    return tok(FIG1[0])["input_ids"]                          # <bos> + 9 prompt tokens


def test_chain_records_every_commit_and_replays_exactly(den):
    tok_ids = torch.tensor([_prompt_ids()])
    settings = SamplerSettings(steps=4, length=8, sampler="confidence")
    chain = sample_chain(den, tok_ids[0].tolist(), settings)
    assert [s.stage for s in chain.steps] == [4, 3, 2, 1]
    committed = sorted(p for s in chain.steps for p in s.positions)
    assert committed == list(range(8))                        # every slot exactly once, never remasked
    assert [len(s.positions) for s in chain.steps] == [2, 2, 2, 2]   # LLaDA's schedule
    assert chain.state(4) == [4] * 8 and chain.state(0) == list(chain.output)
    # replaying the recorded settings reproduces the chain bit for bit
    again = sample_chain(den, tok_ids[0].tolist(), settings)
    assert again == chain
    # the recorded log-probs are those of the model on the state before each stage
    for step in chain.steps:
        state = torch.tensor([tok_ids[0].tolist() + chain.state(step.stage)])
        logits = den.model(input_ids=state, token_type_ids=torch.tensor([[0] * 10 + [1] * 8])).logits[0, 10:]
        lp = logits.double().log_softmax(-1)
        for p, t, v in zip(step.positions, step.tokens, step.logprobs):
            assert lp[p].argmax().item() == t
            assert v == pytest.approx(lp[p, t].item(), abs=1e-9)


def test_schedule_blocks_and_samplers(den):
    prompt = _prompt_ids()
    c = sample_chain(den, prompt, SamplerSettings(steps=4, length=8, blocks=2))
    first_half = {p for s in c.steps[:2] for p in s.positions}
    assert first_half == {0, 1, 2, 3}                         # semi-autoregressive: block 1 first
    c = sample_chain(den, prompt, SamplerSettings(steps=8, length=8, sampler="left_to_right"))
    assert [s.positions for s in c.steps] == [(i,) for i in range(8)]
    c = sample_chain(den, prompt, SamplerSettings(steps=10, length=8))
    assert [len(s.positions) for s in c.steps] == [1] * 8 + [0, 0]
    a = sample_chain(den, prompt, SamplerSettings(steps=8, length=8, temperature=1.0, seed=3))
    b = sample_chain(den, prompt, SamplerSettings(steps=8, length=8, temperature=1.0, seed=3))
    assert a == b                                             # seeded sampling replays exactly
    with pytest.raises(ValueError, match="multiple of blocks"):
        sample_chain(den, prompt, SamplerSettings(steps=3, length=8, blocks=2))


# ------------------------------------------------------------------------------ estimators


def test_chain_over_random_orders_agrees_with_elbo(den):
    """Any-order identity: the mean chain log-prob over uniformly random one-slot orders equals
    the masked-diffusion ELBO in expectation; agreement within the combined standard error."""
    from transformers import AutoTokenizer

    from scopecheck.training.train import EOS

    tok = AutoTokenizer.from_pretrained(str(reference_dir("translate-mdlm")))
    prompt = _prompt_ids()
    y = tok(FIG1[1], add_special_tokens=False)["input_ids"]
    y = torch.tensor(y + [EOS] * (8 - len(y)))
    emb = den.embed(torch.tensor([prompt + y.tolist()]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        vals = torch.stack([score_reads(den, emb, len(prompt), order_reads(torch.randperm(8, generator=g).tolist()), y)[0]
                            for _ in range(300)])
        elbo, se = elbo_with_error(den, emb, len(prompt), y, samples=512, seed=0)
        again, _ = elbo_with_error(den, emb, len(prompt), y, samples=512, seed=0)
    assert torch.equal(elbo, again)                           # bitwise reproducible with a fixed seed
    se_orders = float(vals.std()) / math.sqrt(len(vals))
    gap = abs(float(vals.mean()) - float(elbo[0]))
    assert gap <= 3 * math.hypot(float(se[0]), se_orders), (float(vals.mean()), float(elbo[0]), float(se[0]))


def test_state_score_equals_recorded_trace(fig1):
    c = fig1.compiled
    chain = c.chain
    for t in range(chain.K):
        step = chain.step(t + 1)
        assert state_score(c, t) == pytest.approx(sum(step.logprobs), abs=1e-5)
    # and independently: the model on z[t + 1], read at the slots stage t + 1 committed
    t = 3
    state = list(chain.prompt_ids) + chain.state(t + 1)
    P = len(chain.prompt_ids)
    with torch.no_grad():
        logits = c.denoiser.model(input_ids=torch.tensor([state]),
                                  token_type_ids=torch.tensor([[0] * P + [1] * chain.R])).logits[0, P:]
    lp = logits.double().log_softmax(-1)
    want = sum(float(lp[p, chain.output[p]]) for p in chain.committed(t))
    assert state_score(c, t) == pytest.approx(want, abs=1e-5)


def test_state_level_objective_is_the_state_score():
    r = run(contract(STATE.format(t=3)))
    assert r.score_input == pytest.approx(state_score(r.compiled, 3), abs=1e-5)
    assert r.diffusion["estimator"] == "state" and r.diffusion["chain"]["steps"][0]["stage"] == 8


# ------------------------------------------------------------------------------ every method x contract

FAST = {"integrated_gradients": {"steps": 8}, "lime": {"samples": 64}, "kernel_shap": {"samples": 64},
        "context_cite": {"samples": 32}}


def _method_text(name: str) -> str:
    params = dict(FAST.get(name, {}))
    info = catalog.METHODS[name]
    for key in ("operator", "baseline"):
        if key in info.params:
            params[key] = "mask"
    return name + ("(" + ", ".join(f"{k} = {v}" for k, v in params.items()) + ")" if params else "")


@pytest.mark.parametrize("kind", ["prompt_to_output", "state_level", "denoising_stage"])
def test_zero_outside_eligible_for_every_method(kind):
    # z[6]: the prompt's 9 tokens and the one slot committed in z[7] are eligible (exact Shapley takes <= 10)
    body = {"prompt_to_output": P2O, "state_level": STATE.format(t=6), "denoising_stage": STAGE}[kind]
    methods = catalog.supported_methods(kind)
    assert methods, kind
    for name in methods:
        r = run(contract(body, method=_method_text(name)))
        assert r.kind == kind
        outside = [t for t in r.tokens if not t.eligible]
        assert all(t.score == 0.0 for t in outside), (kind, name)
        assert any(t.score != 0.0 for t in r.tokens if t.eligible), (kind, name)
        assert run_check("eligibility", r).fields["outside_mass"] == 0.0
        if kind == "state_level":
            # causality: no slot of z[6] or a later state is ever eligible or attributed
            later = set(r.positions("z[<=6]"))
            assert len(later) == 7
            assert later and all(not r.tokens[p].eligible and r.tokens[p].score == 0.0 for p in later)


def test_unsupported_pairs_stay_errors_naming_alternatives():
    from scopecheck.errors import ContractErrors

    with pytest.raises(ContractErrors, match="stage_perturbation"):
        run(contract(STAGE, method="integrated_gradients"))
    with pytest.raises(ContractErrors, match="does not support prompt_to_output"):
        run(contract(P2O, method="attention_rollout"))


# ------------------------------------------------------------------------------ ground truth


def _noun_adj_targets(n: int):
    fr = {w for x in NOUNS for w in (x[2], x[3])} | {w for a in ADJECTIVES for w in a[1:]}
    for e in generate("translate", n, split="heldout", seed=7):
        for j, (w, causal) in enumerate(zip(e.output_tokens, e.causal)):
            if w in fr:
                yield e, j + 1, causal


def test_ground_truth_prompt_to_output_occlusion():
    """The causal prompt token of each French noun/adjective ranks first (>= 90%) under a
    prompt-to-output contract explaining that token, occlusion with the mask operator."""
    body = ' score log p(y[{k}] | x) via chain\n fixed nothing\n explain y[{k}]\n eligible x'
    hits = total = 0
    for e, k, causal in _noun_adj_targets(30):
        r = run(contract(body.format(k=k), prompt=e.prompt, output=f'"{e.output}"'))
        top = r.ranking()[0]
        hits += (top.index - 1) in causal
        total += 1
    assert total >= 60
    assert hits / total >= 0.9, f"{hits}/{total}"


# ------------------------------------------------------------------------------ protocols


def test_prompt_to_output_checks_regenerate_and_span_checks_never_do(fig1, monkeypatch):
    before = chain_mod.SAMPLER_CALLS["count"]
    d = run_check("deletion", fig1, {"operator": "mask"})
    assert chain_mod.SAMPLER_CALLS["count"] > before           # the chain was run again
    assert d.config["protocol"] == "regenerate" and d.config["chain"]["estimator"] == "chain"
    assert 0.0 < d.fields["changed_rate"] <= 1.0               # regeneration really produced other outputs
    # span_prompt: the frozen output is rescored, the sampler and generate are never called
    import transformers

    def refuse(*a, **k):
        raise AssertionError("span_prompt checks must never regenerate")

    monkeypatch.setattr(transformers.GenerationMixin, "generate", refuse)
    span = run('contract "s" { model reference:translate-ar\n prompt "Translate to French: The dog is black."\n'
               ' output "Le chien est noir."\n use span_prompt\n method occlusion(operator = zero)\n seed 0 }')
    n = chain_mod.SAMPLER_CALLS["count"]
    s = run_check("deletion", span, {"operator": "zero"})
    assert chain_mod.SAMPLER_CALLS["count"] == n and s.config["protocol"] == "rescore"
    assert s.fields["changed_rate"] == 0.0


def test_regenerate_after_masking_black_changes_y_in_a_measured_share():
    """Mask the adjective and regenerate through the full chain: how often does y change?"""
    changed = total = 0
    for e in generate("translate", 20, split="heldout", seed=11):
        i = e.segments["adjective"][0]
        r = run(contract(P2O, prompt=e.prompt, output="generate(greedy)"))
        obj = r.compiled.check_objective
        drop = torch.zeros(1, r.compiled.problem.length, dtype=torch.bool)
        drop[0, 1 + i] = True                                   # x[i + 1] (after <bos>)
        emb, keep = r.compiled.problem.replace("mask", drop)
        obj(emb, keep)
        changed += obj.changed[-1]
        total += 1
    # the share is measured and reported by the closing note; the adjective is causal, so most outputs change
    assert changed / total >= 0.5, f"{changed}/{total}"


def test_state_level_checks_continue_the_chain():
    r = run(contract(STATE.format(t=0), steps=8))
    n = chain_mod.SAMPLER_CALLS["count"]
    d = run_check("deletion", r, {"operator": "mask"})
    assert d.config["protocol"] == "continue_chain" and chain_mod.SAMPLER_CALLS["count"] > n
    # with nothing perturbed, continuing the chain reproduces z[t + 1] and the recorded state score
    assert d.curve[0] == pytest.approx(r.score_input, abs=1e-5)


def test_rescore_protocol_under_prompt_to_output_is_an_error():
    from scopecheck.errors import ContractErrors

    text = contract(P2O) .replace(" seed 0", " seed 0\n expect deletion(protocol = rescore).aopc > 0")
    with pytest.raises(ContractErrors, match="span_prompt"):
        run(text)


# ------------------------------------------------------------------------------ stages


def test_which_stages_commit_noun_and_adjective_and_stage_effects():
    """Measured, not assumed. On the translate denoiser, left to right with 8 stages, stage 7
    commits "chien" and stage 5 "noir". Skipping (noop) the stage that committed "noir" makes
    the next stage commit "noir" and "." in parallel, which lowers the chain score of y by more
    than skipping a stage that committed only <eos> padding (both effects are small: every
    token is fixed by the prompt). Substituting the article's stage (stage 8 commits the best
    other article) lowers it by nats: later stages read the agreement from the committed article."""
    noop = run(contract(STAGE, sampler="left_to_right", method="stage_perturbation(perturbation = noop)"))
    by_stage = {t.index: t for t in noop.tokens}
    word = {s: t.text.split(": ", 1)[1] for s, t in by_stage.items()}
    assert (word[7], word[5]) == ("chien", "noir")
    pads = [s for s, w in word.items() if w == "<eos>"]
    assert len(pads) == 3
    assert by_stage[5].score > 0 and by_stage[5].score > max(by_stage[s].score for s in pads)
    sub = run(contract(STAGE, sampler="left_to_right", method="stage_perturbation(perturbation = substitute)"))
    s8 = next(t for t in sub.tokens if t.index == 8)
    assert s8.text == "stage 8: Le" and s8.score > 1.0
    assert s8.score > 100 * by_stage[5].score


def test_capitals_the_deciding_stage_matters():
    """The open question has eight equally likely answers: whichever stage first commits the city
    (or the country) decides the pair. Skipping that stage forces the next one to commit city and
    country in parallel, and the chain score of y drops by about log 8; skipping a stage that
    committed punctuation changes it by far less."""
    prompt = "Question: name a capital and its country. Answer:"
    r = run(contract(STAGE, model="reference:capitals-mdlm", prompt=prompt, output="generate(greedy)", steps=5,
                     method="stage_perturbation(perturbation = noop)"))
    texts = {t.index: t.text.split(": ", 1)[1] for t in r.tokens}
    scores = {t.index: t.score for t in r.tokens}
    city_or_country = [s for s, w in texts.items() if w not in (",", ".", "<eos>", "(nothing)")]
    deciding = max(city_or_country)                            # the earlier of the two (stages count down)
    punct = [s for s, w in texts.items() if w in (",", ".")]
    assert scores[deciding] > 1.0
    assert scores[deciding] > 5 * max(abs(scores[s]) for s in punct)
    d = run_check("deletion", r, {})
    assert d.config["protocol"] == "run_chain"


# ------------------------------------------------------------------------------ adapters and loading


def _tiny_masked_lm(tmp_path, name: str):
    from transformers import BertConfig, BertForMaskedLM

    from scopecheck.training.train import build_tokenizer, save_tokenizer

    tok = build_tokenizer("translate")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok.get_vocab()), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, type_vocab_size=1)
    model = BertForMaskedLM(cfg).eval()
    d = tmp_path / name
    model.save_pretrained(str(d), safe_serialization=True)
    save_tokenizer(tok, d)
    return d, model


@pytest.mark.parametrize("adapter", ["plain", "shift"])
def test_adapters_on_a_tiny_random_masked_lm(tmp_path, adapter):
    d, model = _tiny_masked_lm(tmp_path, f"tiny-{adapter}")
    text = contract(P2O, model=f'"{d}"', steps=4, extra=f", adapter = {adapter}, length = 6")
    r = run(text)
    assert r.diffusion["adapter"] == adapter and r.diffusion["chain"]["adapter"] == adapter
    chain = r.compiled.chain
    step = chain.steps[0]
    P = len(chain.prompt_ids)
    with torch.no_grad():
        raw = model(input_ids=torch.tensor([list(chain.prompt_ids) + [4] * 6])).logits[0].double()
    rows = raw[P:] if adapter == "plain" else raw[P - 1:-1]       # Dream reads slot i at row i - 1
    lp = rows.log_softmax(-1)
    for p, t, v in zip(step.positions, step.tokens, step.logprobs):
        assert v == pytest.approx(float(lp[p, t]), abs=1e-6)


def test_default_adapter_and_pickle_refusal(tmp_path):
    from transformers import BertConfig

    from scopecheck.errors import ContractError

    assert default_adapter(BertConfig()) == "plain"
    cfg = BertConfig()
    cfg.model_type = "Dream"
    assert default_adapter(cfg) == "shift"
    d, _ = _tiny_masked_lm(tmp_path, "pickled")
    (d / "model.safetensors").unlink()
    torch.save({}, d / "pytorch_model.bin")
    with pytest.raises(ContractError, match="pickle checkpoints are refused"):
        run(contract(P2O, model=f'"{d}"', steps=4, extra=", length = 6"))


def test_elbo_result_reports_standard_error():
    body = " score log p(y | x) via elbo(samples = 16)\n fixed nothing\n explain y\n eligible x"
    r = run(contract(body))
    assert r.diffusion["estimator"] == "elbo" and r.diffusion["samples"] == 16
    assert r.diffusion["elbo_standard_error"] > 0
    assert TASKS["translate"].max_output_tokens < r.diffusion["length"]
