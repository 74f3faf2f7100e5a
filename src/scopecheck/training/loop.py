"""What every reference training run shares, autoregressive (:mod:`.train`) or masked-diffusion
(:mod:`.train_diffusion`): the special tokens, the word-level tokenizer of a task, the optimizer
and schedule, and the start of a run (threads, seeds, output directory, training examples).

Torch and transformers are imported inside the functions that use them (the training package is
torch-free at import, as the reference package it trains for).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from scopecheck.reference import WEIGHTS_DIR
from scopecheck.reference.tasks import generate, vocabulary

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


__all__ = ["BOS", "EOS", "MASK", "PAD", "RECIPES_MAXPOS", "SPECIAL_TOKENS", "UNK", "WEIGHTS_DIR", "build_tokenizer",
           "optimizer", "save_tokenizer", "start"]
