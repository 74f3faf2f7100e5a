"""What every reference training run shares, autoregressive (:mod:`.train`) or masked-diffusion
(:mod:`.train_diffusion`): the special tokens, the word-level tokenizer of a task, the optimizer
and schedule, the start of a run (threads, seeds, output directory, training examples), the
optimisation loop around a model-specific loss (:func:`fit`), the held-out batches, and the end of
a run (weights, tokenizer, model card; :func:`save`, :func:`finish`) and its ``--check``
(:func:`check_saved`). Only the loss, the model and the evaluation differ between the two.

Torch and transformers are imported inside the functions that use them (the training package is
torch-free at import, as the reference package it trains for).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from scopecheck.reference import WEIGHTS_DIR
from scopecheck.reference.tasks import Example, generate, vocabulary

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>", "<mask>")
PAD, UNK, BOS, EOS, MASK = range(5)
RECIPES_MAXPOS = 64  # max_position_embeddings of every recipe and the tokenizers' model_max_length


# ----------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------

def build_tokenizer(task: str):
    """A word-level ``PreTrainedTokenizerFast`` over the task's vocabulary.

    Whitespace split, every punctuation character isolated, ``<bos>`` prepended when
    ``add_special_tokens=True``; decodes to natural text (no space before ``. ! ? , :``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in vocabulary(task):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])
    tok.decoder = decoders.Sequence(
        [decoders.WordPiece(prefix="##", cleanup=True), decoders.Replace(" :", ":")])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", BOS)])
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", mask_token="<mask>", model_max_length=RECIPES_MAXPOS)


def save_tokenizer(tokenizer, out: Path) -> None:
    tokenizer.save_pretrained(str(out))
    # Pin the class (transformers 4.x and 5.x both resolve it) and write the classic
    # special_tokens_map.json that older loaders read.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("backend", None)
    cfg["model_max_length"] = RECIPES_MAXPOS
    cfg["clean_up_tokenization_spaces"] = False
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    special = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
               "unk_token": "<unk>", "mask_token": "<mask>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def optimizer(model, recipe):
    """AdamW (weight decay on matrices only, betas 0.9/0.98), linear warm-up then cosine decay to
    2% of ``recipe.lr`` over ``recipe.steps`` (every reference recipe, autoregressive or diffusion)."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=recipe.lr, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        frac = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


def start(recipe, out: Path | None, make) -> tuple:
    """What every reference training run starts with: one deterministic CPU thread, the output
    directory, the task's tokenizer, ``make(recipe, vocab_size)`` (which seeds the weights), the
    training examples, and :func:`optimizer`. Returns ``(out, t0, tokenizer, vocab, model,
    n_params, data, opt, sched)``."""
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = Path(out) if out is not None else WEIGHTS_DIR / recipe.name
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tokenizer = build_tokenizer(recipe.task)
    vocab = tokenizer.get_vocab()
    model = make(recipe, len(vocab))
    n_params = sum(p.numel() for p in model.parameters())
    data = generate(recipe.task, recipe.steps * recipe.batch_size, split="train", seed=recipe.seed)
    opt, sched = optimizer(model, recipe)
    return out, t0, tokenizer, vocab, model, n_params, data, opt, sched



def fit(recipe, model, data: Sequence[Example], opt, sched, t0: float, loss_of: Callable[[Sequence[Example]], Any],
        *, log_every: int, quiet: bool) -> float:
    """The optimisation loop of every reference recipe: ``recipe.steps`` steps over consecutive
    batches of ``recipe.batch_size`` examples of ``data``, each ``loss_of(batch)`` (a scalar tensor;
    the recipe's objective, drawing from its own generator in step order) back-propagated with
    gradient clipping at 1.0, then the optimizer and the schedule stepped; the mean loss printed
    every ``log_every`` steps unless ``quiet``. Returns the seconds since ``t0``."""
    import torch

    model.train()
    running = 0.0
    for step in range(recipe.steps):
        batch = data[step * recipe.batch_size: (step + 1) * recipe.batch_size]
        loss = loss_of(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += loss.detach().item()
        if not quiet and (step + 1) % log_every == 0:
            print(f"[{recipe.name}] step {step + 1}/{recipe.steps} loss {running / log_every:.4f}"
                  f" ({time.perf_counter() - t0:.0f}s)", flush=True)
            running = 0.0
    return time.perf_counter() - t0


def prompt_length_batches(examples: Sequence[Example], batch_size: int) -> Iterator[list[Example]]:
    """``examples`` grouped by prompt length (shortest first, the given order within a length),
    in chunks of at most ``batch_size``: prompts of one chunk need no padding."""
    groups: dict[int, list[Example]] = {}
    for ex in examples:
        groups.setdefault(len(ex.prompt_tokens), []).append(ex)
    for _, group in sorted(groups.items()):
        for b in range(0, len(group), batch_size):
            yield group[b: b + batch_size]


def print_failures(failures: Sequence[tuple[Example, str]], most: int = 10) -> None:
    """The first ``most`` held-out failures, one line each (what was expected, what came out)."""
    for e, got in failures[:most]:
        print(f"   FAIL {e.prompt!r}: expected {e.output!r}, got {got!r}")


def save(model, tokenizer, out: Path) -> dict[str, Any]:
    """Write the model (float32 safetensors, world-readable) and the tokenizer into ``out``;
    returns the ``weights_bytes`` and ``weights_sha256`` of ``model.safetensors``."""
    model.save_pretrained(str(out), safe_serialization=True)
    save_tokenizer(tokenizer, out)
    weights = out / "model.safetensors"
    weights.chmod(0o644)
    return {"weights_bytes": weights.stat().st_size,
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}


def finish(recipe, out: Path, result: dict[str, Any], card: Callable[[Any, dict[str, Any]], str]) -> dict[str, Any]:
    """Write ``MODEL_CARD.md`` (``card(recipe, result)``) into ``out``, warn on stderr when the
    held-out exact match is below 0.99, and return ``result``."""
    (out / "MODEL_CARD.md").write_text(card(recipe, result))
    em = result["heldout_exact_match"]
    if em < 0.99:
        print(f"[{recipe.name}] WARNING: held-out exact match {em:.4f} < 0.99", file=sys.stderr)
    return result


def check_saved(name: str, recipe, directory: Path | None, n: int | None, auto_class: str,
                evaluate: Callable[[Any, Any, list[Example]], tuple[float, list[tuple[Example, str]]]]) -> float:
    """``--check``: load the saved model directory (``directory``, default the package's
    ``weights/<name>``) with ``transformers.<auto_class>`` (never remote code), score it with
    ``evaluate(model, tokenizer, examples)`` on ``n`` (default ``recipe.eval_examples``) held-out
    examples, print the exact match and the first failures; returns the exact match."""
    import torch
    import transformers

    torch.set_num_threads(1)
    d = Path(directory) if directory else WEIGHTS_DIR / name
    model = getattr(transformers, auto_class).from_pretrained(str(d), trust_remote_code=False)
    tok = transformers.AutoTokenizer.from_pretrained(str(d), trust_remote_code=False)
    ex = generate(recipe.task, n or recipe.eval_examples, split="heldout", seed=recipe.eval_seed)
    em, failures = evaluate(model, tok, ex)
    print(f"[{name}] held-out exact match {em:.4f} on {len(ex)} examples ({d})")
    print_failures(failures)
    return em


__all__ = ["BOS", "EOS", "MASK", "PAD", "RECIPES_MAXPOS", "SPECIAL_TOKENS", "UNK", "WEIGHTS_DIR", "build_tokenizer",
           "check_saved", "finish", "fit", "optimizer", "print_failures", "prompt_length_batches", "save",
           "save_tokenizer", "start"]
