"""Reproducible training of the embedded masked-diffusion reference denoiser.

    python -m scopecheck.training.train --model translate-mdlm
    python -m scopecheck.training.train --check --model translate-mdlm

A small bidirectional ``BertForMaskedLM`` trained from scratch on the same synthetic
English->French task as ``translate-ar`` (same causal-token ground truth per example), with
the masked-diffusion objective of LLaDA's SFT and MDLM's log-linear schedule:

* the sequence is ``<bos> prompt | r[1..R]`` with the response ``output <eos> ... <eos>``
  padded with ``<eos>`` to ``R`` slots (``R`` drawn per batch from ``[T_max + 1, R_max]``, so
  the model serves any response length in that range), token type 0 on the prompt and 1 on
  the response;
* the prompt is never masked; each response slot is masked with probability ``t``,
  ``t ~ U(0, 1)`` per example;
* the loss is the cross-entropy on the masked slots weighted by ``1 / t``, divided by ``R``;
* separately, each prompt token is replaced by ``<mask>`` with probability ``prompt_dropout``
  (0.1; no loss on the prompt), so that ``<mask>`` is an in-distribution occlusion operator.

Single-threaded, seeded and deterministic. Writes ``config.json``, ``model.safetensors``,
the word-level tokenizer and ``MODEL_CARD.md`` into ``weights/translate-mdlm/``; ``config.json``
carries ``diffusion_length`` (the default response length) and ``mask_token_id``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from scopecheck.reference.tasks import CAPITALS, Example, TASKS, generate
from scopecheck.training.loop import (
    BOS, EOS, MASK, PAD, RECIPES_MAXPOS, check_saved, finish, fit, print_failures, prompt_length_batches, save, start)


@dataclass(frozen=True)
class DiffusionRecipe:
    name: str
    task: str
    hidden_size: int = 96
    intermediate_size: int = 384
    num_layers: int = 3
    num_heads: int = 4
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    label_smoothing: float = 0.05
    #: each prompt token (never <bos>) is replaced by <mask> with this probability, independently of
    #: the diffusion noise (which never touches the prompt): <mask> in the prompt is then an
    #: in-distribution occlusion operator, so occlusion measures what a token contributes rather
    #: than how the model reacts to an input it never saw
    prompt_dropout: float = 0.1
    response_min_extra: int = 1        # R >= T_max + this
    response_max: int = 10             # R <= this
    default_length: int = 8            # R used when a contract names none
    seed: int = 0
    eval_examples: int = 1000
    eval_seed: int = 12345


DIFFUSION_RECIPES: dict[str, DiffusionRecipe] = {
    "translate-mdlm": DiffusionRecipe("translate-mdlm", "translate"),
    "capitals-mdlm": DiffusionRecipe("capitals-mdlm", "capitals", hidden_size=64, intermediate_size=256,
                                     num_layers=2, steps=800, response_max=6, default_length=5),
}


def correct(e: Example, toks: tuple[str, ...]) -> bool:
    """Exact match; for the open capitals question any consistent ``City, Country.`` pair."""
    if e.task == "capitals" and "name" in e.prompt_tokens:
        return len(toks) == 4 and toks[1] == "," and toks[3] == "." and (toks[2], toks[0]) in CAPITALS
    return toks == e.output_tokens


def make_model(recipe: DiffusionRecipe, vocab_size: int):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=vocab_size, hidden_size=recipe.hidden_size, num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads, intermediate_size=recipe.intermediate_size,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=RECIPES_MAXPOS, type_vocab_size=2, pad_token_id=PAD,
        bos_token_id=BOS, eos_token_id=EOS, tie_word_embeddings=True,
    )
    torch.manual_seed(recipe.seed)
    return BertForMaskedLM(config).float()


def encode_batch(examples: list[Example], vocab: dict[str, int], R: int):
    """``input_ids``, ``attention_mask``, ``token_type_ids``, response mask ``(B, L)``, clean ids."""
    import torch

    seqs, resp = [], []
    for ex in examples:
        p = [BOS] + [vocab[t] for t in ex.prompt_tokens]
        o = [vocab[t] for t in ex.output_tokens]
        o = o + [EOS] * (R - len(o))
        seqs.append(p + o)
        resp.append([False] * len(p) + [True] * R)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    types = torch.zeros((len(seqs), width), dtype=torch.long)
    is_resp = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (s, r) in enumerate(zip(seqs, resp)):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
        is_resp[i, : len(s)] = torch.tensor(r)
    types[is_resp] = 1
    return ids, att, types, is_resp


def exact_match(model_dir_or_model, tokenizer, examples: list[Example], *, length: int, steps: int | None = None,
                sampler: str = "confidence") -> tuple[float, list[tuple[Example, str]]]:
    """Sample each prompt with the scopecheck sampler (greedy); exact match of the tokens before the first <eos>."""
    import torch

    from scopecheck.engine.diffusion.chain import SamplerSettings, run_chains  # lazy: imports torch
    from scopecheck.engine.diffusion.denoiser import Denoiser  # lazy: imports torch

    model = model_dir_or_model
    den = Denoiser(model, MASK, "plain", EOS, PAD, token_types=True)
    vocab = tokenizer.get_vocab()
    inv = {i: t for t, i in vocab.items()}
    settings = SamplerSettings(steps=steps or length, length=length, sampler=sampler)
    n_ok, failures = 0, []
    model.eval()
    with torch.no_grad():
        for chunk in prompt_length_batches(examples, 256):
            ids = torch.tensor([[BOS] + [vocab[t] for t in e.prompt_tokens] for e in chunk])
            run = run_chains(den, den.embed(ids), settings)
            for e, row in zip(chunk, run.tokens.tolist()):
                gen = row[: row.index(EOS)] if EOS in row else row
                toks = tuple(inv[i] for i in gen)
                if correct(e, toks):
                    n_ok += 1
                else:
                    failures.append((e, " ".join(toks)))
    return n_ok / max(1, len(examples)), failures


def train(recipe: DiffusionRecipe, out: Path | None = None, *, log_every: int = 250, quiet: bool = False) -> dict:
    import torch

    out, t0, tokenizer, vocab, model, n_params, data, opt, sched = start(recipe, out, make_model)
    r_lo = TASKS[recipe.task].max_output_tokens + recipe.response_min_extra
    g = torch.Generator().manual_seed(recipe.seed)

    def loss_of(batch):
        # the response length, then the noise level, the diffusion mask and the prompt dropout of the
        # batch, drawn from ``g`` in this order every step
        R = int(torch.randint(r_lo, recipe.response_max + 1, (1,), generator=g))
        ids, att, types, is_resp = encode_batch(batch, vocab, R)
        t = torch.rand(len(batch), 1, generator=g).clamp(min=1e-3)
        masked = (torch.rand(ids.shape, generator=g) < t) & is_resp
        in_prompt = (~is_resp) & (att > 0) & (ids != BOS)
        dropped = (torch.rand(ids.shape, generator=g) < recipe.prompt_dropout) & in_prompt
        noisy = torch.where(masked | dropped, torch.full_like(ids, MASK), ids)
        logits = model(input_ids=noisy, attention_mask=att, token_type_ids=types).logits
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1),
                                               reduction="none", label_smoothing=recipe.label_smoothing)
        ce = ce.view(ids.shape) * masked / t
        return ce.sum() / (len(batch) * R)

    train_s = fit(recipe, model, data, opt, sched, t0, loss_of, log_every=log_every, quiet=quiet)
    model.eval()
    heldout = generate(recipe.task, recipe.eval_examples, split="heldout", seed=recipe.eval_seed)
    em, failures = exact_match(model, tokenizer, heldout, length=recipe.default_length)
    em_half, _ = exact_match(model, tokenizer, heldout, length=recipe.default_length,
                             steps=recipe.default_length // 2)
    em_random, _ = exact_match(model, tokenizer, heldout, length=recipe.default_length, sampler="random")
    if not quiet:
        print(f"[{recipe.name}] held-out exact match {em:.4f} (confidence, {recipe.default_length} stages), "
              f"{em_half:.4f} ({recipe.default_length // 2} stages), {em_random:.4f} (random remasking); "
              f"trained in {train_s:.1f}s", flush=True)
        print_failures(failures)
    # masked LMs carry no generation config: the default response length and the mask id go in config.json
    model.config.diffusion_length = recipe.default_length
    model.config.mask_token_id = MASK
    result = {"name": recipe.name, "task": recipe.task, "params": n_params, "heldout_exact_match": em,
              "heldout_exact_match_half_steps": em_half, "heldout_exact_match_random": em_random,
              "heldout_examples": len(heldout), "train_seconds": train_s, **save(model, tokenizer, out),
              "vocab_size": len(vocab)}
    return finish(recipe, out, result, model_card)


def check(name: str, directory: Path | None = None, n: int | None = None) -> float:
    """Evaluate a saved denoiser directory on the held-out split (the sampler, greedy, default length)."""
    recipe = DIFFUSION_RECIPES[name]
    return check_saved(name, recipe, directory, n, "AutoModelForMaskedLM",
                       lambda model, tok, ex: exact_match(model, tok, ex, length=recipe.default_length))


def model_card(recipe: DiffusionRecipe, r: dict) -> str:
    import tokenizers
    import torch
    import transformers

    info = TASKS[recipe.task]
    r_lo = info.max_output_tokens + recipe.response_min_extra
    return f"""# {recipe.name}

Embedded masked-diffusion reference denoiser of `scopecheck`: a small bidirectional
`BertForMaskedLM` trained from scratch with the masked-diffusion objective on the synthetic
task `{recipe.task}` (the same task and causal ground truth as `translate-ar`). It exists to give
diffusion attribution contracts (state-level, denoising-stage, prompt-to-output) a ground
truth; it is not a language model.

## Task and data

{info.summary}.

- Example: `{info.example_prompt}` -> `{info.example_output}`
- Causal truth: {info.causal_rule}
- Held-out split: {info.heldout_rule}
- Training data: {recipe.steps * recipe.batch_size} examples drawn by
  `generate("{recipe.task}", {recipe.steps * recipe.batch_size}, split="train", seed={recipe.seed})`.

## Diffusion format

`<bos> prompt` (token type 0) followed by a response region of `R` slots (token type 1):
the output tokens, then `<eos>` up to `R` (LLaDA's padding). The prompt is never masked.
Each training batch draws `R` uniformly from [{r_lo}, {recipe.response_max}], so any response length in that
range works; contracts default to `R = {recipe.default_length}` (`diffusion_length` in `config.json`).
`<mask>` = id {MASK}. Adapter: `plain` (logits at slot i predict slot i).

## Architecture

`BertForMaskedLM`: {recipe.num_layers} layers, hidden size {recipe.hidden_size}, {recipe.num_heads} heads,
MLP {recipe.intermediate_size} (GELU), learned absolute positions (max {RECIPES_MAXPOS}), 2 token types, tied
input/output embeddings, no dropout, vocabulary {r["vocab_size"]} (word-level, the `translate-ar` tokenizer).
**{r["params"]:,} parameters**, float32 safetensors ({r["weights_bytes"]:,} bytes, sha256 `{r["weights_sha256"]}`).

## Training

Masked-diffusion loss: per example `t ~ U(0, 1)` (clamped at 1e-3), each response slot masked
with probability `t`, cross-entropy (label smoothing {recipe.label_smoothing}) on the masked slots weighted by
`1/t`, divided by `R` (LLaDA's SFT loss; MDLM's log-linear schedule). The diffusion noise never
touches the prompt; separately, each prompt token (not `<bos>`) is replaced by `<mask>` with
probability {recipe.prompt_dropout} (no loss on it), so that `<mask>` is an in-distribution occlusion
operator: occluding a token then measures what it contributes, not the reaction to an unseen input. AdamW (lr {recipe.lr}, betas
0.9/0.98, weight decay {recipe.weight_decay}), {recipe.warmup} warm-up steps then cosine decay, clipping 1.0,
batch {recipe.batch_size}, **{recipe.steps} steps, seed {recipe.seed}**, 1 CPU thread,
`torch.use_deterministic_algorithms(True)`. Measured training time: **{r["train_seconds"]:.0f} s**
({platform.machine()}, torch {torch.__version__}, transformers {transformers.__version__}, tokenizers
{tokenizers.__version__}). Training is deterministic: retraining with the same library versions on the
same kind of CPU is meant to reproduce `model.safetensors` bit for bit (checked for `capitals-mdlm`: two
independent runs gave the same sha256).

Retrain (writes this directory):

    python -m scopecheck.training.train --model {recipe.name}

## Evaluation

scopecheck's sampler (`scopecheck.engine.diffusion.chain`), greedy, `R = {recipe.default_length}`, exact match of
the tokens before the first `<eos>`, on `generate("{recipe.task}", {r["heldout_examples"]}, split="heldout",
seed={recipe.eval_seed})`:

| sampler | stages | exact match |
|---|---|---|
| confidence (default) | {recipe.default_length} | **{r["heldout_exact_match"]:.4f}** |
| confidence | {recipe.default_length // 2} | {r["heldout_exact_match_half_steps"]:.4f} |
| random remasking | {recipe.default_length} | {r["heldout_exact_match_random"]:.4f} |
"""
