"""Encoder–decoder models (``AutoModelForSeq2SeqLM``: Marian, T5, BART) as the autoregressive process.

The prompt ``x`` is read by the encoder, the output ``y`` by the decoder: ``y[t]`` is predicted
from ``x`` and the decoder input ``[start, y[1..t-1]]``. Every method sees the same
:class:`~scopecheck.engine.problem.AttributionProblem` as for a decoder-only model, over one
concatenated frame of positions::

    [enc_special..., x[1..n], enc_special...][start, y[1..T]]
     0 ............................... split-1  split ... L-1

so E, C and O mean what they mean for a causal LM: ``prompt_conditioned`` makes ``x`` eligible
and holds ``y[<t]`` fixed on the decoder side; ``local_next_token`` makes ``y[<t]`` eligible as
decoder-input features; ``span_prompt`` scores ``y[1:T]`` teacher-forced. A target ``y[t]`` at
position ``p`` is read at row ``p - 1`` (``start`` for ``y[1]``), exactly as in a causal LM.

:class:`Seq2SeqForward` is the seam: it has the interface of
:class:`~scopecheck.engine.forward.Forward` (``(B, L, d) embeds, (B, L) keep | None, (B, n) rows
-> (B, n, V)`` logits) and is chosen by the model's config (``is_encoder_decoder``) in
:func:`seq2seq_problem`; the objectives of :mod:`scopecheck.engine.scoring` run on it unchanged.
Deletion (a ``False`` keep entry) removes the position from its side's sequence: the kept
positions are packed to the left, so relative (T5) and sinusoidal (Marian) positions see the
shortened text, and the scoring rows move with them.

Embedding rows: Marian's encoder scales ``input_ids`` embeddings by ``sqrt(d)`` but not
``inputs_embeds``, its decoder scales both; BART's scaled embedding modules scale inside. Which
rows each side expects is not guessed: :func:`_side_scales` tries the candidate scales and keeps
the pair whose logits equal the model's own ``input_ids`` forward, refusing the model otherwise.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import torch

from scopecheck.engine.embeddings import operator_token_id
from scopecheck.engine.forward import CallCounter
from scopecheck.engine.problem import AttributionProblem
from scopecheck.engine.scoring import CausalLMLogProbs, CausalLMObjective, problem_arguments
from scopecheck.errors import MethodRefused, Unavailable

Tensor = torch.Tensor

__all__ = ["ENCODER_DECODER", "Seq2SeqForward", "generate_seq2seq", "is_encoder_decoder", "seq2seq_problem"]

#: ``AttributionProblem.architecture`` of an encoder–decoder problem
ENCODER_DECODER = "encoder_decoder"


def is_encoder_decoder(model_or_config: Any) -> bool:
    """Whether a model (or its config) is an encoder–decoder (``config.is_encoder_decoder``)."""
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, "is_encoder_decoder", False))


def decoder_start_id(model_or_config: Any) -> int:
    """The token the decoder input starts with (``decoder_start_token_id``, else BOS, else pad)."""
    config = getattr(model_or_config, "config", model_or_config)
    gen = getattr(model_or_config, "generation_config", None)
    for source in (config, gen):
        tid = getattr(source, "decoder_start_token_id", None)
        if isinstance(tid, int):
            return tid
    for attr in ("bos_token_id", "pad_token_id"):
        tid = getattr(config, attr, None)
        if isinstance(tid, int):
            return tid
    raise Unavailable("the encoder–decoder model's config names no decoder_start_token_id (nor BOS or pad): "
                      "the decoder input cannot be formed")


def _pack(x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Kept positions of each row moved to the front (order kept), the rest after them.

    ``x`` ``(B, L, d)``, ``keep`` ``(B, L)`` bool -> ``(B, L, d)`` packed, ``(B, L)`` long mask (1 on
    the kept positions, now ``0..k_b-1``)."""
    L = keep.shape[1]
    pos = torch.arange(L, device=keep.device).expand_as(keep)
    order = torch.argsort(torch.where(keep, pos, pos + L), dim=1)                 # (B, L) kept first, stable
    packed = torch.take_along_dim(x, order.unsqueeze(-1), dim=1)                  # (B, L, d)
    mask = torch.take_along_dim(keep, order, dim=1).to(torch.long)                # (B, L)
    return packed, mask


class Seq2SeqForward(CallCounter):
    """Runs an encoder–decoder on the concatenated frame, returning logits at decoder rows.

    ``split``: the first decoder position (the encoder reads ``[0, split)``, the decoder
    ``[split, L)``). ``embeds`` ``(B, L, d)``; ``keep`` ``(B, L)`` bool or ``None``; ``rows``
    ``(B, n)`` int64 in the frame, every one ``>= split`` -> logits ``(B, n, V)``. Decoder
    positions after the last scoring row are never run (the decoder is causal). No key/value
    reuse: every batch runs the encoder and the decoder in full (exact; the counts say so).
    """

    #: there is no shared-prefix fast path to lose, so nothing is ever reported about one
    fast_path_note: str | None = None
    cache_verified = False
    reuse_prefix = False

    def __init__(self, model: torch.nn.Module, split: int) -> None:
        super().__init__()
        self.model = model
        self.split = int(split)

    def __call__(self, embeds: Tensor, keep: Tensor | None, rows: Tensor) -> Tensor:
        return self.full(embeds, keep, rows)

    def full(self, embeds: Tensor, keep: Tensor | None, rows: Tensor) -> Tensor:
        s = self.split
        if bool((rows < s).any()):
            raise MethodRefused("an encoder–decoder predicts only output tokens: an encoder position has no "
                                "next-token distribution (the encoder reads the prompt bidirectionally)")
        cut = int(rows.max()) + 1                                               # causal decoder: later unread
        enc, dec = embeds[:, :s], embeds[:, s:cut]                              # (B, s, d), (B, cut-s, d)
        drow = rows - s                                                         # (B, n) decoder rows
        kwargs: dict[str, object] = {"use_cache": False}
        if keep is not None:
            keep = keep.to(device=embeds.device, dtype=torch.bool)
            k_enc, k_dec = keep[:, :s], keep[:, s:cut]
            if not bool(k_enc.all()):
                enc, enc_mask = _pack(enc, k_enc)
                kwargs["attention_mask"] = enc_mask                             # (B, s)
            if not bool(k_dec.all()):
                # a deleted decoder position is never a scoring row (scoring reads the last kept one):
                # its kept successors move left, so does each row
                new = k_dec.to(torch.long).cumsum(-1) - 1                       # (B, cut-s)
                drow = torch.take_along_dim(new, drow, dim=1)                   # (B, n)
                dec, _ = _pack(dec, k_dec)
        B = int(embeds.shape[0])
        logits = self.model(inputs_embeds=enc, decoder_inputs_embeds=dec, **kwargs).logits  # (B, cut-s, V)
        self.count_call(B, B * cut)
        return logits[torch.arange(B, device=logits.device).unsqueeze(-1), drow]  # (B, n, V)


class Seq2SeqObjective(CausalLMObjective):
    """The score S of an encoder–decoder (:class:`CausalLMObjective` on a :class:`Seq2SeqForward`)."""

    def __init__(self, model: torch.nn.Module, ids: Tensor, split: int, targets: Sequence[int], score: str,
                 alternative: int | None) -> None:
        super().__init__(model, ids, targets, score, alternative, forward=Seq2SeqForward(model, split))
        self.split = int(split)

    def from_layer(self, layer: int, embeds: Tensor) -> Any:
        raise MethodRefused("reading S from an inner layer is defined for a decoder-only stack; an encoder–decoder "
                            "has two stacks joined by cross-attention")


class Seq2SeqLogProbs(CausalLMLogProbs):
    """Full-vocabulary log-probs at decoder rows (:class:`CausalLMLogProbs` on a :class:`Seq2SeqForward`);
    no key/value continuation (:meth:`read_on` is never usable)."""

    def __init__(self, model: torch.nn.Module, split: int, target_rows: Sequence[int]) -> None:
        super().__init__(model, target_rows, forward=Seq2SeqForward(model, split))

    def state_bytes(self) -> int | None:
        return None

    def read_on(self, embeds: Tensor, start: int, state: Any = None) -> None:
        return None


def _embedding_module(stack: Any, model: torch.nn.Module) -> torch.nn.Module:
    emb = getattr(stack, "embed_tokens", None)
    if isinstance(emb, torch.nn.Module):
        return emb
    return model.get_input_embeddings()


def _vocab_rows(module: torch.nn.Module) -> Tensor:
    """The rows ``module`` gives every vocabulary id ``(V, d)`` (scaled modules included)."""
    weight = module.weight                                                      # type: ignore[union-attr]
    with torch.no_grad():
        if type(module) is torch.nn.Embedding:
            return weight.detach()
        return module(torch.arange(int(weight.shape[0]), device=weight.device)).detach()


@torch.no_grad()
def _side_scales(model: torch.nn.Module, enc_ids: Tensor, dec_ids: Tensor, enc_vocab: Tensor,
                 dec_vocab: Tensor) -> tuple[float, float]:
    """The factors by which each side's vocabulary rows must be multiplied so that the embedding
    forward equals the model's ``input_ids`` forward (candidates: 1 and each stack's ``embed_scale``)."""
    ref = model(input_ids=enc_ids.unsqueeze(0), decoder_input_ids=dec_ids.unsqueeze(0), use_cache=False).logits
    cands = []
    for stack in (model.get_encoder(), model.get_decoder()):
        scale = getattr(stack, "embed_scale", 1.0)
        scale = float(scale) if isinstance(scale, (int, float)) else 1.0
        cands.append(sorted({1.0, scale}))
    tol = 1e-9 if ref.dtype == torch.float64 else 1e-4
    gap = float("inf")
    for se, sd in itertools.product(*cands):
        out = model(inputs_embeds=(enc_vocab[enc_ids] * se).unsqueeze(0),
                    decoder_inputs_embeds=(dec_vocab[dec_ids] * sd).unsqueeze(0), use_cache=False).logits
        g = float((out - ref).abs().max())
        if g <= tol * max(1.0, float(ref.abs().max())):
            return se, sd
        gap = min(gap, g)
    raise Unavailable(f"{type(model).__name__}: no embedding rows reproduce the model's own token forward (closest "
                      f"differs by {gap:.3g}); its inputs cannot be attributed through their embeddings")


def seq2seq_problem(
    model: torch.nn.Module,
    ids: Tensor,
    split: int,
    eligible: Tensor,
    targets: Sequence[int],
    score: str = "logprob",
    alternative: int | None = None,
    pad_id: int | None = None,
    mask_id: int | None = None,
    unk_id: int | None = None,
) -> AttributionProblem:
    """The :class:`AttributionProblem` of an encoder–decoder (teacher-forced rescoring).

    ``ids`` ``(L,)``: the encoder's ids ``[0, split)`` followed by the decoder input ``[start,
    y...]``; ``eligible`` ``(L,)`` bool (E); ``targets`` decoder positions ``> split`` (O). Each
    side's positions carry that side's embedding rows (Marian may not share them), the
    operators' replacement rows too (``zero``, ``mean``; ``pad``/``mask``/``unk`` where a token
    exists, none invented). ``vocab_embeds`` is the encoder's vocabulary.
    """
    L = int(torch.as_tensor(ids).shape[0])
    if not 1 <= split < L:
        raise ValueError(f"split {split} must lie in 1..{L - 1}")
    ids, eligible, targets = problem_arguments(ids, eligible, targets, score, alternative, first=split + 1,
                                               outputs="be an output token, in", why="")
    if model.training:
        model.eval()
    enc_mod = _embedding_module(model.get_encoder(), model)
    dec_mod = _embedding_module(model.get_decoder(), model)
    enc_vocab, dec_vocab = _vocab_rows(enc_mod), _vocab_rows(dec_mod)          # (V, d), (V', d)
    device = enc_vocab.device
    ids = ids.to(device=device, dtype=torch.long)
    eligible = eligible.to(device)
    V = int(enc_vocab.shape[0])
    if int(ids.max()) >= min(V, int(dec_vocab.shape[0])) or int(ids.min()) < 0:
        raise ValueError(f"token ids must lie in 0..{min(V, int(dec_vocab.shape[0])) - 1}")
    se, sd = _side_scales(model, ids[:split], ids[split:], enc_vocab, dec_vocab)
    enc_vocab, dec_vocab = enc_vocab * se, dec_vocab * sd
    embeds = torch.cat([enc_vocab[ids[:split]], dec_vocab[ids[split:]]])       # (L, d)
    d = int(embeds.shape[1])
    side = torch.arange(L, device=device) >= split                              # (L,) decoder positions

    def rows(enc_row: Tensor, dec_row: Tensor) -> Tensor:                       # (d,), (d,) -> (L, d)
        return torch.where(side.unsqueeze(-1), dec_row.unsqueeze(0), enc_row.unsqueeze(0)).clone()

    operators: dict[str, Tensor] = {
        "zero": torch.zeros(L, d, dtype=embeds.dtype, device=device),
        "mean": rows(enc_vocab.mean(0), dec_vocab.mean(0)),
    }
    config = model.config
    for name, explicit in (("pad", pad_id), ("mask", mask_id), ("unk", unk_id)):
        tid = operator_token_id(explicit, config, f"{name}_token_id", min(V, int(dec_vocab.shape[0])), name)
        if tid is not None:
            operators[name] = rows(enc_vocab[tid], dec_vocab[tid])
    target_rows = tuple(t - 1 for t in targets)
    return AttributionProblem(
        ids=ids, embeds=embeds, eligible=eligible,
        objective=Seq2SeqObjective(model, ids, split, targets, score, alternative),
        operators=operators, target_rows=target_rows, attentions=None,
        logprobs=Seq2SeqLogProbs(model, split, target_rows), vocab_embeds=enc_vocab,
        architecture=ENCODER_DECODER,
    )


@torch.no_grad()
def generate_seq2seq(model: torch.nn.Module, enc_ids: list[int], eos_id: int | None, **kw: Any) -> list[int]:
    """The output ids the model's ``generate`` produces for the encoder input ``enc_ids``: the
    decoder sequence without its start token, cut before the first EOS."""
    device = next(model.parameters()).device
    ids = torch.tensor([enc_ids], device=device)
    gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)[0].tolist()
    new = gen[1:] if gen and gen[0] == decoder_start_id(model) else gen
    if eos_id is not None and eos_id in new:
        new = new[: new.index(eos_id)]
    return new

