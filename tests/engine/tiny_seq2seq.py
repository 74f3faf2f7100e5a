"""Tiny randomly initialised encoder–decoder models (T5-, Marian- and BART-style), built from configs in
the test and saved with a word-level tokenizer so they load through the real loading path
(``scopecheck.engine.models.load``). No downloads.

The tokenizer is the translate reference task's word-level vocabulary with T5/Marian's special
tokens: ``</s>``-style EOS appended to every encoded text, no BOS; pad doubles as the decoder
start token (as in T5 and Marian).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

PAD, UNK, EOS, MASK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "</s>", "<mask>")


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from scopecheck.reference.tasks import vocabulary

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in vocabulary("translate"):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation("isolated")])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A $B </s>",
                                                       special_tokens=[("</s>", EOS)])
    tok.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                   mask_token="<mask>", model_max_length=64)


def make_t5(vocab_size: int, seed: int = 0):
    """T5 v1.1-style (gated GELU: smooth, so IG converges fast; ReLU kinks make it converge as 1/steps)."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=1,
                   num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0, feed_forward_proj="gated-gelu", pad_token_id=PAD,
                   eos_token_id=EOS, decoder_start_token_id=PAD, initializer_factor=1.0,
                   attn_implementation="eager")
    return T5ForConditionalGeneration(cfg).eval()


def make_marian(vocab_size: int, seed: int = 0, share: bool = True):
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(seed)
    cfg = MarianConfig(vocab_size=vocab_size, decoder_vocab_size=vocab_size, d_model=32, encoder_layers=1,
                       decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                       encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, dropout=0.0,
                       attention_dropout=0.0, activation_dropout=0.0, pad_token_id=PAD, eos_token_id=EOS,
                       decoder_start_token_id=PAD, forced_eos_token_id=None, scale_embedding=True,
                       share_encoder_decoder_embeddings=share, init_std=0.2, attn_implementation="eager")
    return MarianMTModel(cfg).eval()


def make_bart(vocab_size: int, seed: int = 0):
    """BART-style: learned positions, scaled embeddings inside the embedding module, EOS as the decoder start."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    cfg = BartConfig(vocab_size=vocab_size, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                     dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=PAD, bos_token_id=None,
                     eos_token_id=EOS, decoder_start_token_id=EOS, forced_bos_token_id=None, forced_eos_token_id=None,
                     scale_embedding=True, init_std=0.2, activation_function="gelu", attn_implementation="eager")
    return BartForConditionalGeneration(cfg).eval()


def save(model, tokenizer, out: Path) -> Path:
    """``save_pretrained`` of both into ``out`` (safetensors), as a user's model folder."""
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.max_length = 64
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


def build(kind: str, out: Path, seed: int = 0) -> Path:
    """A saved tiny ``t5``, ``marian`` (``marian_split``: separate decoder embeddings) or ``bart`` folder."""
    tok = make_tokenizer()
    V = len(tok)
    model = {"t5": lambda: make_t5(V, seed), "marian": lambda: make_marian(V, seed),
             "marian_split": lambda: make_marian(V, seed, share=False), "bart": lambda: make_bart(V, seed)}[kind]()
    return save(model, tok, out)
