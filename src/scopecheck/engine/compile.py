"""Contract -> computation: freeze the generation, align tokens, build E/C/O masks and S.

Token-level re-checks of the SCOPE rules that the text alone could not decide (E and C
disjoint, causality, every autoregressive input token in E or C) raise the same
positioned errors as the validator. Held-fixed positions stay in the forward pass at
their actual values and are never on the attribution path: the compiled problem marks
only E as eligible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

import torch

from scopecheck.dsl.format import fmt_selector
from scopecheck.engine.align import Alignment, align, align_seq2seq, encoder_ids, join_warning, positions
from scopecheck.engine.align import prompt_ids as read_prompt
from scopecheck.engine.models import LoadedModel, check_context, context_window
from scopecheck.engine.problem import AttributionProblem
from scopecheck.engine.scoring import causal_lm_problem
from scopecheck.engine.seq2seq import decoder_start_id, generate_seq2seq, is_encoder_decoder, seq2seq_problem
from scopecheck.errors import ContractValidationError
from scopecheck.spec import model as m
from scopecheck.spec.validate import Resolved

if TYPE_CHECKING:
    from scopecheck.engine.diffusion.chain import Chain

SCORE_KINDS = {"logprob": "logprob", "prob": "prob", "logit": "logit", "contrast": "contrastive"}
DEFAULT_MAX_NEW_TOKENS = 16


@dataclass(frozen=True)
class Compiled:
    contract: m.Contract
    resolved: Resolved
    alignment: Alignment
    problem: AttributionProblem
    eligible: tuple[int, ...]     # positions in E
    fixed: tuple[int, ...]        # positions in C (stated)
    special: tuple[int, ...]      # special/template positions, held fixed implicitly
    targets: tuple[int, ...]      # positions of O
    generated: bool               # the output was produced by a decoding rule, then frozen
    score_kind: str
    warnings: tuple[str, ...] = ()  # what the user should know about this computation (reported)

    # ---- :class:`~scopecheck.engine.compiled.CompiledContract`: no diffusion chain here

    @property
    def chain(self) -> Chain | None:
        return None

    @property
    def check_objective(self) -> Any | None:
        return None

    @property
    def stage_features(self) -> bool:
        return False

    @property
    def info(self) -> Mapping[str, Any]:
        return MappingProxyType({})

    def positions(self, sel: m.Selector) -> list[int]:
        """Sequence positions a selector names."""
        return positions(self.alignment, sel)

    def with_model(self, model: torch.nn.Module) -> AttributionProblem:
        """The same problem (ids, E, targets, score, operator tokens) on another model, e.g. a
        re-initialised copy for the randomization check."""
        pb = self.problem
        obj = pb.objective
        score = getattr(obj, "score", None) or SCORE_KINDS.get(self.score_kind, "logprob")
        alt = getattr(obj, "alternative", None)
        tokens = {"pad_id": _operator_token(pb, "pad"), "mask_id": _operator_token(pb, "mask"),
                  "unk_id": _operator_token(pb, "unk")}
        if self.alignment.split is not None:                                  # an encoder–decoder
            return seq2seq_problem(model, pb.ids, self.alignment.split, pb.eligible, list(self.targets), score, alt,
                                   **tokens)
        return causal_lm_problem(model, pb.ids, pb.eligible, list(self.targets), score, alt, **tokens)


def _operator_token(problem: AttributionProblem, op: str) -> int | None:
    """The vocabulary id whose embedding row the operator ``op`` substitutes (pad/mask/unk)."""
    rows, vocab = problem.operators.get(op), problem.vocab_embeds
    if rows is None or vocab is None:
        return None
    hit = torch.nonzero((vocab == rows[0].unsqueeze(0)).all(dim=-1)).flatten()
    return int(hit[0]) if len(hit) else None


def freeze_output(contract: m.Contract, lm: LoadedModel, prompt_ids: list[int]) -> tuple[str, list[int] | None]:
    """The output text, generating it once by the stated decoding rule when not given."""
    out = contract.output
    assert out is not None  # validated: runnable contracts state an output
    if out.text is not None:
        return out.text, None
    params = {p.key: m.py_value(p.value) for p in out.params}
    max_new = int(params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))

    limit = context_window(lm)
    if limit is not None:   # an encoder–decoder's output has its own positions (the start token first)
        used = 1 if getattr(lm.model.config, "is_encoder_decoder", False) else len(prompt_ids)
        max_new = max(1, min(max_new, limit - used))
    kw: dict = {"max_new_tokens": max_new, "do_sample": out.rule == "sample"}
    if out.rule == "sample":
        for k in ("temperature", "top_p", "top_k"):
            if k in params:
                kw[k] = params[k]
        torch.manual_seed(int(params["seed"]))
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    if is_encoder_decoder(lm.model):        # the prompt is the encoder's input, y the decoder's output
        new = generate_seq2seq(lm.model, prompt_ids, tok.eos_token_id, pad_token_id=pad, **kw)
    else:
        ids = torch.tensor([prompt_ids], device=lm.device)
        with torch.no_grad():
            gen = lm.model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=pad, **kw)
        new = gen[0, ids.shape[1]:].tolist()
        if tok.eos_token_id is not None and tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
    if not new:
        hint = ("an instruct model ends its turn at once on a plain prompt: write the prompt as "
                'prompt chat { user: "..." } so its chat template is applied' if getattr(tok, "chat_template", None)
                and not contract.prompt.chat else None)
        raise ContractValidationError("the decoding rule generated no token", out.span, rule="generation",
                                      expected="a prompt the model continues", hint=hint)
    return tok.decode(new, skip_special_tokens=True), new


def _union(al: Alignment, sels: tuple[m.Selector, ...]) -> dict[int, m.Selector]:
    out: dict[int, m.Selector] = {}
    for s in sels:
        for p in positions(al, s):
            out.setdefault(p, s)
    return out


@dataclass(frozen=True)
class TokenSets:
    """E, C, O and S as positions, checked against the SCOPE rules at token level."""

    eligible: dict[int, m.Selector]   # position -> the selector that made it eligible
    fixed: dict[int, m.Selector]      # stated C, plus a text target's own earlier tokens
    targets: list[int]                # O
    scored: list[int]                 # S's positions (== O)
    span_fixed: tuple[int, ...] = ()  # a multi-token text target's tokens before its last, held fixed
    notes: tuple[str, ...] = ()


def _text_target(sel: m.Selector) -> bool:
    """``y["park"]``: an output named by its text (not by indices), one text, one occurrence."""
    return sel.op == "at" and isinstance(sel.a, m.TextRef)


def token_sets(al: Alignment, sc: m.Scope) -> TokenSets:
    """E, C, O and S resolved on the alignment, with the positioned errors of the token-level
    SCOPE rules (an empty E, S differing from O, O inside E, E and C overlapping, an eligible
    token at or after O, an autoregressive input in neither E nor C). Needs the tokenizer only:
    ``scopecheck check`` runs it before any weights load (:mod:`scopecheck.engine.preflight`).

    A text target the tokenizer splits (``target = "park"`` read as ``'p', 'ar', 'k'``) is that
    span: all its tokens are explained, the score is summed over them (``log p`` of the span,
    each token given the ones before it), and its tokens before the last are held fixed, as the
    inputs to the later ones they are. A span named by indices (``y[2:4]``) states its fixed set."""
    assert sc.score is not None and sc.explain is not None
    E = _union(al, sc.eligible or ())
    if not E and sc.eligible:
        raise ContractValidationError("no token is eligible after tokenization", sc.eligible[0].span,
                                      expected="an eligible set that names at least one token", rule="selector")
    C = _union(al, sc.fixed or ())
    O = positions(al, sc.explain)
    S = positions(al, sc.score.target)
    if not O:
        raise ContractValidationError(f"{_fmt(sc.explain)} names no token", sc.explain.span, rule="selector")
    if sorted(S) != sorted(O):
        raise ContractValidationError("S must score O: the score's target and the output explained differ in tokens",
                                      sc.score.span, rule="score-output")
    inside = sorted(set(E) & set(O))
    if inside:
        raise ContractValidationError(f"token {al.tokens[inside[0]].text!r} is both explained and eligible: an output "
                                      "cannot explain itself", E[inside[0]].span, expected="O outside E",
                                      rule="causality")
    both = sorted(set(E) & set(C))
    if both:
        tokens = ", ".join(repr(al.tokens[p].text) for p in both)
        raise ContractValidationError(f"tokens {tokens} are both eligible and held fixed", C[both[0]].span,
                                      expected="E and C disjoint", rule="disjoint")
    first_target = min(O)
    late = [p for p in E if al.tokens[p].role == "output" and p >= first_target]
    if late:
        raise ContractValidationError(
            f"token {al.tokens[late[0]].text!r} is at or after the output explained: an autoregressive output is "
            "caused only by the prompt and earlier tokens", E[late[0]].span, rule="causality")
    notes: list[str] = []
    span_fixed: tuple[int, ...] = ()
    if len(O) > 1 and _text_target(sc.explain):
        span_fixed = tuple(p for p in sorted(O)[:-1] if p not in C)
        for p in span_fixed:
            C[p] = sc.explain
        words = ", ".join(repr(al.tokens[p].text) for p in sorted(O))
        notes.append(f"the target {sc.explain.a.text!r} is {len(O)} tokens ({words}): the score is summed over them "
                     "(the span's log-probability, each token given the ones before it), and its tokens before the "
                     "last are held fixed as inputs to the later ones")
    inputs = [t.position for t in al.tokens if t.role != "special" and t.position < max(O)]
    uncovered = [p for p in inputs if p not in E and p not in C and p not in O]
    # for a span output, its own tokens are inputs to the later ones: they must be held fixed
    uncovered += [p for p in O if p < max(O) and p not in C and len(O) > 1]
    if uncovered:
        tokens = ", ".join(repr(al.tokens[p].text) for p in sorted(set(uncovered)))
        raise ContractValidationError(
            f"input tokens {tokens} are neither eligible nor held fixed", sc.explain.span,
            expected="every autoregressive input token in `eligible` or `fixed`", rule="coverage")
    return TokenSets(E, C, O, S, span_fixed, tuple(notes))


def compile_contract(contract: m.Contract, resolved: Resolved, lm: LoadedModel, *, strict: bool = False,
                     frozen: tuple[str, list[int] | None] | None = None) -> Compiled:
    """``strict``: warnings about the input (an output whose tokens change when joined to the
    prompt) are positioned errors instead. ``frozen``: an output already frozen (text, ids),
    so the members of a map family share one generation."""
    sc = resolved.scope
    if sc.process is not None and sc.process.kind == "masked_diffusion":
        raise ContractValidationError("a diffusion contract compiles with scopecheck.engine.diffusion.compile",
                                      sc.process.span, rule="engine")
    if lm.family != "autoregressive":
        raise ContractValidationError(f"{lm.identity} is not a causal LM; autoregressive contracts need one",
                                      contract.model.span if contract.model else contract.span, rule="model")
    assert contract.prompt is not None and sc.score is not None and sc.explain is not None

    tok = lm.tokenizer
    # the one place the architecture is chosen: an encoder–decoder (config.is_encoder_decoder) reads the
    # prompt on the encoder side and y on the decoder side (scopecheck.engine.seq2seq); the SCOPE sets,
    # scores and every method are the same
    seq2seq = is_encoder_decoder(lm.model)
    if seq2seq and contract.prompt.chat:
        align_seq2seq(tok, contract.prompt, "", None, 0)                     # the positioned refusal
    prompt_ids = encoder_ids(tok, contract.prompt) if seq2seq else read_prompt(tok, contract.prompt)
    check_context(lm, len(prompt_ids) + (0 if seq2seq else 1), "the prompt", contract.prompt.span)
    out_text, out_ids = frozen if frozen is not None else freeze_output(contract, lm, prompt_ids)
    warnings: list[str] = []
    if getattr(tok, "chat_template", None) and not contract.prompt.chat:
        warnings.append(f"the tokenizer of {lm.identity} has a chat template but the prompt is plain text: an instruct "
                        'model reads its prompts inside that template; write `prompt chat { user: "..." }` to have it '
                        "rendered (its tokens are then held fixed and listed)")
    if out_ids is None and not contract.prompt.chat and not seq2seq:   # seq2seq: y is its own sequence
        joined = join_warning(tok, contract.prompt.text, out_text)
        if joined and strict:
            raise ContractValidationError(joined, contract.output.span if contract.output else contract.span,
                                          expected="an output whose tokens are the joined text's", rule="tokenization")
        if joined:
            warnings.append(joined)
    if seq2seq:
        al = align_seq2seq(tok, contract.prompt, out_text, out_ids, decoder_start_id(lm.model))
        assert al.split is not None
        L = len(al.tokens)
        check_context(lm, L - al.split, "the decoder input (start token and output)",
                      contract.output.span if contract.output else contract.span)
    else:
        al = align(tok, contract.prompt, out_text, out_ids)
        L = len(al.tokens)
        check_context(lm, L, "the prompt and the output", contract.output.span if contract.output else contract.span)
    sets = token_sets(al, sc)
    E, C, O, S = sets.eligible, sets.fixed, sets.targets, sets.scored
    warnings += sets.notes
    special = tuple(t.position for t in al.tokens if t.role == "special")
    alt_id = None
    if sc.score.kind == "contrast":
        alt = tok(sc.score.alternative or "", add_special_tokens=False)["input_ids"]
        if alt and tok.unk_token_id is not None and alt[0] == tok.unk_token_id:
            raise ContractValidationError(f"the alternative {sc.score.alternative!r} is not in the model's vocabulary "
                                          "(it would be scored as the unknown token)", sc.score.span,
                                          expected="a single in-vocabulary token", rule="score-output")
        if len(alt) != 1:
            raise ContractValidationError(f"the alternative {sc.score.alternative!r} is {len(alt)} tokens, not one",
                                          sc.score.span, expected="a single-token alternative", rule="score-output")
        alt_id = alt[0]
        if len(O) != 1:
            raise ContractValidationError("a contrastive score needs a single-token output", sc.score.span,
                                          rule="score-output")
    if sc.score.kind not in SCORE_KINDS:
        raise ContractValidationError(f"score kind {sc.score.kind!r} needs a diffusion process", sc.score.span,
                                      rule="score-output")

    ids = torch.tensor(al.ids, dtype=torch.long)
    eligible = torch.zeros(L, dtype=torch.bool)
    eligible[list(E)] = True
    tokens = {"pad_id": tok.pad_token_id, "mask_id": getattr(tok, "mask_token_id", None), "unk_id": tok.unk_token_id}
    if al.split is not None:
        problem = seq2seq_problem(lm.model, ids, al.split, eligible, sorted(O), SCORE_KINDS[sc.score.kind], alt_id,
                                  **tokens)
    else:
        problem = causal_lm_problem(lm.model, ids, eligible, sorted(O), SCORE_KINDS[sc.score.kind], alt_id, **tokens)
    return Compiled(contract, resolved, al, problem, tuple(sorted(E)), tuple(sorted(C)), special, tuple(sorted(O)),
                    out_ids is not None, sc.score.kind, tuple(warnings))


def _fmt(sel: m.Selector) -> str:
    return fmt_selector(sel)


def contract_dir(contract: m.Contract) -> Path | None:
    p = Path(contract.span.path)
    return p.parent if p.suffix == ".scope" else None
