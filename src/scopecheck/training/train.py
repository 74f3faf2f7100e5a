"""Reproducible training of the embedded reference models (the masked-diffusion one: ``train_diffusion``).

    python -m scopecheck.training.train --all
    python -m scopecheck.training.train --model translate-ar [--out DIR]
    python -m scopecheck.training.train --check --all      # evaluate shipped weights

Each model is a small ``LlamaForCausalLM`` trained from scratch on one synthetic task of
:mod:`scopecheck.reference.tasks`, on sequences ``<bos> prompt output <eos>`` with
the loss on the output tokens and ``<eos>`` only. Training is single-threaded, seeded and
deterministic; the script writes ``config.json``, ``model.safetensors`` (float32), the
word-level tokenizer files, ``generation_config.json`` and ``MODEL_CARD.md`` (with the
held-out exact match and training time it measured) into ``weights/<name>/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from scopecheck.reference.tasks import TASKS, Example, generate
from scopecheck.training import train_diffusion as td
from scopecheck.training.train_diffusion import DIFFUSION_RECIPES
from scopecheck.training.loop import (  # noqa: F401  (re-exported: what every training run shares)
    BOS, EOS, MASK, PAD, RECIPES_MAXPOS, SPECIAL_TOKENS, UNK, WEIGHTS_DIR, build_tokenizer, check_saved, finish, fit,
    optimizer, print_failures, prompt_length_batches, save, save_tokenizer, start)


@dataclass(frozen=True)
class Recipe:
    name: str
    task: str
    hidden_size: int = 64
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = RECIPES_MAXPOS
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    #: keeps the output softmax away from saturation (p(target) about 0.95 instead of 1 - 1e-7),
    #: so gradient- and perturbation-based attributions on the reference models stay well conditioned
    label_smoothing: float = 0.05
    seed: int = 0
    eval_examples: int = 1000
    eval_seed: int = 12345


RECIPES: dict[str, Recipe] = {
    "translate-ar": Recipe("translate-ar", "translate", steps=1000),
    "retrieval-ar": Recipe("retrieval-ar", "retrieval", steps=1500),
}


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------

def encode_examples(examples: list[Example], vocab: dict[str, int]):
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 except output + <eos>)."""
    import torch

    seqs, labs = [], []
    for ex in examples:
        p = [BOS] + [vocab[t] for t in ex.prompt_tokens]
        o = [vocab[t] for t in ex.output_tokens] + [EOS]
        seqs.append(p + o)
        labs.append([-100] * len(p) + o)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labs)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, : len(s)] = torch.tensor(lab)
    return ids, mask, labels


def greedy_exact_match(model, tokenizer, examples: list[Example], *, batch_size: int = 256,
                       max_new_tokens: int | None = None) -> tuple[float, list[tuple[Example, str]]]:
    """Greedy-decode each prompt until ``<eos>``; return (exact-match rate, failures).

    Prompts are grouped by token length so no padding is needed. An example is correct
    iff the generated tokens before the first ``<eos>`` equal its output tokens.
    """
    import torch

    vocab = tokenizer.get_vocab()
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id
    inv = {i: t for t, i in vocab.items()}
    correct, failures = 0, []
    model.eval()
    with torch.no_grad():
        for chunk in prompt_length_batches(examples, batch_size):
            limit = max_new_tokens or (max(len(e.output_tokens) for e in chunk) + 2)
            ids = torch.tensor([[bos] + [vocab.get(t, UNK) for t in e.prompt_tokens] for e in chunk])
            first = ids.shape[1]
            done = torch.zeros(len(chunk), dtype=torch.bool)
            for _ in range(limit):
                nxt = model(input_ids=ids).logits[:, -1].argmax(-1)
                ids = torch.cat([ids, nxt[:, None]], 1)
                done |= nxt == eos
                if bool(done.all()):
                    break
            for e, row in zip(chunk, ids[:, first:].tolist()):
                gen = row[: row.index(eos)] if eos in row else row
                toks = tuple(inv[i] for i in gen)
                if toks == e.output_tokens and eos in row:
                    correct += 1
                else:
                    failures.append((e, " ".join(toks) + ("" if eos in row else " …")))
    return correct / max(1, len(examples)), failures


def mean_target_probability(model, vocab: dict[str, int], examples: list[Example]) -> float:
    """Mean teacher-forced probability of the correct output tokens (and ``<eos>``)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(examples), 256):
            ids, mask, labels = encode_examples(examples[b: b + 256], vocab)
            logp = model(input_ids=ids, attention_mask=mask).logits[:, :-1].log_softmax(-1)
            lab = labels[:, 1:]
            keep = lab != -100
            p = logp.gather(-1, lab.clamp(min=0)[..., None])[..., 0].exp()
            total += float(p[keep].sum())
            count += int(keep.sum())
    return total / max(1, count)


# ----------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------

def make_model(recipe: Recipe, vocab_size: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=recipe.max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        attention_dropout=0.0,
        use_cache=True,
    )
    torch.manual_seed(recipe.seed)
    return LlamaForCausalLM(config).float()


def train(recipe: Recipe, out: Path | None = None, *, log_every: int = 250, quiet: bool = False) -> dict:
    """Train ``recipe`` and write the model directory; returns the measured numbers."""
    import torch

    out, t0, tokenizer, vocab, model, n_params, data, opt, sched = start(recipe, out, make_model)

    def loss_of(batch):
        # teacher forcing: logits at position i predict token i + 1; loss on output + <eos> only
        ids, mask, labels = encode_examples(batch, vocab)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
            ignore_index=-100, label_smoothing=recipe.label_smoothing)

    train_s = fit(recipe, model, data, opt, sched, t0, loss_of, log_every=log_every, quiet=quiet)

    heldout = generate(recipe.task, recipe.eval_examples, split="heldout", seed=recipe.eval_seed)
    em, failures = greedy_exact_match(model, tokenizer, heldout)
    distinct = len({e.prompt for e in heldout})
    p_target = mean_target_probability(model, vocab, heldout)
    if not quiet:
        print(f"[{recipe.name}] held-out exact match {em:.4f} on {len(heldout)} examples "
              f"({distinct} distinct), mean p(target) {p_target:.4f}, trained in {train_s:.1f}s", flush=True)
        print_failures(failures)

    model.generation_config.bos_token_id = BOS
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = PAD
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = TASKS[recipe.task].max_output_tokens + 1
    result = {
        "name": recipe.name, "task": recipe.task, "params": n_params,
        "heldout_exact_match": em, "heldout_examples": len(heldout), "heldout_distinct": distinct,
        "mean_target_probability": p_target, "train_seconds": train_s, **save(model, tokenizer, out),
        "vocab_size": len(vocab),
    }
    return finish(recipe, out, result, model_card)


def model_card(recipe: Recipe, r: dict) -> str:
    import tokenizers
    import torch
    import transformers

    info = TASKS[recipe.task]
    fig1 = ""
    if recipe.task == "translate":
        fig1 = ("\nThe Figure-1 example of seed 000, `Translate to French: The dog is black.` -> "
                "`Le chien est noir.`, is in the distribution and in the **training** split "
                "(the pair dog/black is forced into training); greedy decoding reproduces it exactly "
                "(checked by `tests/engine/test_reference.py`). Causal truth for it: `Le`<-{dog}, "
                "`chien`<-{dog}, `est`<-{is}, `noir`<-{black, dog}, `.`<-{.}.\n")
    return f"""# {recipe.name}

Embedded autoregressive reference model of `scopecheck`: a small decoder-only
`LlamaForCausalLM` trained from scratch on the synthetic task `{recipe.task}`, whose
causal prompt tokens are known by construction (`scopecheck.reference.tasks`).
It exists to give attribution contracts a ground truth; it is not a language model.

## Task and data

{info.summary}.

- Example: `{info.example_prompt}` -> `{info.example_output}`
- Causal truth: {info.causal_rule}
- Held-out split: {info.heldout_rule}
- Training data: {recipe.steps * recipe.batch_size} examples drawn by
  `generate("{recipe.task}", {recipe.steps * recipe.batch_size}, split="train", seed={recipe.seed})`,
  one batch of {recipe.batch_size} per step, as `<bos> prompt output <eos>` with the loss on the
  output tokens and `<eos>` only.
{fig1}
## Architecture

`LlamaForCausalLM`: {recipe.num_layers} layers, hidden size {recipe.hidden_size}, {recipe.num_heads} attention
heads (head dim {recipe.hidden_size // recipe.num_heads}), MLP {recipe.intermediate_size} (SiLU), RoPE, RMSNorm,
tied input/output embeddings, max {recipe.max_positions} positions, vocabulary {r["vocab_size"]}
(word-level: `<pad>`=0, `<unk>`=1, `<bos>`=2, `<eos>`=3, `<mask>`=4, then the task's words).
**{r["params"]:,} parameters**, float32 safetensors ({r["weights_bytes"]:,} bytes,
sha256 `{r["weights_sha256"]}`).

Tokenizer: `tokenizers` WordLevel; whitespace split with every punctuation character isolated;
`<bos>` prepended when `add_special_tokens=True`; offsets are character offsets into the text.

## Training

Cross-entropy with label smoothing {recipe.label_smoothing} (keeps the softmax unsaturated, so
gradient-based attributions are well conditioned), AdamW (lr {recipe.lr}, betas 0.9/0.98,
weight decay {recipe.weight_decay}), {recipe.warmup} warm-up steps then cosine decay, gradient clipping 1.0, batch {recipe.batch_size}, **{recipe.steps} steps, seed {recipe.seed}**,
1 CPU thread, `torch.use_deterministic_algorithms(True)`.
Measured training time: **{r["train_seconds"]:.0f} s** on 1 CPU thread
({platform.machine()}, torch {torch.__version__}, transformers {transformers.__version__},
tokenizers {tokenizers.__version__}).

Training is deterministic: retraining with the same library versions on the same kind of
CPU reproduces `model.safetensors` bit for bit (verified: two independent runs gave the
sha256 above).

Retrain (writes this directory):

    python -m scopecheck.training.train --model {recipe.name}

## Evaluation

Greedy decoding until `<eos>`, exact match of the output tokens, on
`generate("{recipe.task}", {r["heldout_examples"]}, split="heldout", seed={recipe.eval_seed})`
({r["heldout_distinct"]} distinct prompts): **held-out exact match {r["heldout_exact_match"]:.4f}**
(measured at training time). Mean teacher-forced probability of the correct output
tokens and `<eos>` on the same set: {r["mean_target_probability"]:.4f}.
"""


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------

def check(name: str, directory: Path | None = None, n: int | None = None) -> float:
    """Evaluate a saved model directory on the held-out split (greedy exact match)."""
    return check_saved(name, RECIPES[name], directory, n, "AutoModelForCausalLM", greedy_exact_match)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scopecheck.training.train",
                                 description="Train (or --check) the embedded reference models.")
    ap.add_argument("--model", action="append", choices=sorted([*RECIPES, *DIFFUSION_RECIPES]),
                    help="model name (repeatable)")
    ap.add_argument("--all", action="store_true", help="every reference model")
    ap.add_argument("--out", type=Path, default=None,
                    help="output directory (one model) or parent directory (several); default: the package")
    ap.add_argument("--check", action="store_true", help="only evaluate the saved weights")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    names = sorted([*RECIPES, *DIFFUSION_RECIPES]) if args.all else (args.model or [])
    if not names:
        ap.error("give --model NAME or --all")
    worst = 1.0
    for name in names:
        if args.out is None:
            d = None
        else:
            d = args.out if len(names) == 1 else args.out / name
        if name in DIFFUSION_RECIPES:
            if args.check:
                worst = min(worst, td.check(name, d))
            else:
                r = td.train(DIFFUSION_RECIPES[name], d, quiet=args.quiet)
                worst = min(worst, r["heldout_exact_match"])
                print(json.dumps(r, indent=2))
        elif args.check:
            worst = min(worst, check(name, d))
        else:
            r = train(RECIPES[name], d, quiet=args.quiet)
            worst = min(worst, r["heldout_exact_match"])
            print(json.dumps(r, indent=2))
    return 0 if worst >= 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
