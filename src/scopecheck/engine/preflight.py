"""Checks that need the model's tokenizer and config, made before any weights load or attribution runs.

``scopecheck check`` and ``scopecheck run`` call :func:`preflight` on every valid contract:
with the tokenizer and config alone (no weights) it refuses, each at the contract's position,

* a model that cannot be read: a path that does not exist, a file that is not a model, a
  directory without ``config.json``, a config or tokenizer transformers cannot read;
* a model folder that asks to run its own code (``auto_map`` in ``config.json`` or
  ``tokenizer_config.json`` naming a ``.py`` beside it): the folder's code is never imported
  here, and never without ``trust_remote_code=True`` from the command line (``scopecheck run
  --trust-remote-code``); transformers is always told ``trust_remote_code`` explicitly, so it
  never asks on a terminal;
* a process the model cannot serve, from ``config.json``'s ``architectures`` and
  ``model_type``: an autoregressive contract on a masked LM, a diffusion contract on a model
  transformers has no masked-LM head for (an encoder–decoder with a seq2seq head serves
  autoregressive contracts);
* a perturbation operator a method states (``baseline = pad``) that names a token the model
  lacks (``zero``, ``mean`` and ``delete`` always exist; autoregressive contracts: a diffusion
  stage perturbation is checked by the run);
* every text anchor in the contract and its expectations (``x["a"]``, ``y["Lily"]``,
  ``"Lily"@2``) that does not name exactly the tokens it should (absent, ambiguous), and the
  token-level SCOPE rules on E, C, O and S (:func:`scopecheck.engine.compile.token_sets`:
  coverage, disjointness, causality), the same positioned errors the run would raise. A text
  target the tokenizer splits into several tokens is accepted as that span (the run says so).

Outputs produced by a decoding rule are not known before the model runs: their ``y[...]``
anchors are checked by the run itself. A hub id and a GGUF checkpoint are left to the loader,
which reports them with a position.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Iterator

from scopecheck.engine import gguf
from scopecheck.engine.align import align, align_seq2seq, positions
from scopecheck.errors import ContractError, ContractValidationError, Span, reraise_interrupt
from scopecheck.spec import model as m
from scopecheck.spec import vocabulary as vocab
from scopecheck.spec.standard import family_param
from scopecheck.spec.validate import resolve

#: operators every model has (``engine.embeddings.embedding_operators``), and the token-backed ones
ALWAYS = ("zero", "mean", "delete", "noop")
TOKEN_OPERATORS = vocab.TOKEN_OPERATORS


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a model directory cannot be read, for a positioned error at a contract's model statement."""

    message: str
    expected: str
    hint: str | None = None


def custom_code(where: str | Path) -> list[str]:
    """What a model directory's ``auto_map`` entries name (``config.json: evil.EvilConfig``),
    read as JSON: nothing is imported."""
    found = []
    for name in ("config.json", "tokenizer_config.json"):
        try:
            data = json.loads((Path(where) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        auto = data.get("auto_map") if isinstance(data, dict) else None
        if isinstance(auto, dict):
            for ref in auto.values():
                for r in (ref if isinstance(ref, (list, tuple)) else [ref]):
                    if isinstance(r, str) and f"{name}: {r}" not in found:
                        found.append(f"{name}: {r}")
    return found


REMOTE_HINT = ("a model folder's code runs only with `scopecheck run --trust-remote-code` on the command line "
               "(never from a contract file, never in `check`); use a model transformers implements, or pass the "
               "flag if you trust that code")


@functools.lru_cache(maxsize=8)
def _read(where: str, identity: str, trust_remote_code: bool = False) -> tuple[Any, Any] | Refusal | None:
    """``(tokenizer, config)`` of a local Hugging Face model directory; a :class:`Refusal` when it
    cannot be read; None when it is not such a directory (a hub id, a GGUF checkpoint: the loader's)."""
    d = Path(where)
    if not d.is_dir():
        return None

    try:
        if gguf.gguf_target(d) is not None:
            return None
    except ContractError as exc:
        return Refusal(exc.message, exc.expected or "one model file", exc.hint)
    if not (d / "config.json").is_file():
        return Refusal(f"{identity}: no config.json in the model directory",
                       "a Hugging Face model directory (config.json, weights, tokenizer)")
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    what = "config"
    try:
        # trust_remote_code is always explicit: with None transformers asks on a terminal
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
        what = "tokenizer"
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the model statement's error
        reraise_interrupt(exc)
        if "trust_remote_code" in str(exc):
            code = custom_code(d)
            return Refusal(f"model {identity} asks to run its own code" + (f" ({', '.join(code)})" if code else ""),
                           "a model transformers implements", REMOTE_HINT)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Refusal(f"cannot read the {what} of model {identity}: {first}",
                       "a Hugging Face model directory transformers can read")
    return tokenizer, config


def _process_refusal(identity: str, config: Any, diffusion: bool) -> tuple[str, str, str] | None:
    """(message, expected, hint) when the config cannot serve the contract's process."""
    from scopecheck.engine.models import model_family  # lazy: imports torch

    archs = ", ".join(getattr(config, "architectures", None) or []) or f"model_type {config.model_type}"
    auto_map = getattr(config, "auto_map", None) or {}
    if diffusion:
        from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

        if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES or "AutoModelForMaskedLM" in auto_map:
            return None
        return (f"{identity} ({archs}) is not a masked language model; a masked_diffusion process needs a denoiser",
                "a masked LM (reference:translate-mdlm, or a local AutoModelForMaskedLM directory)",
                "on a causal LM use an autoregressive contract (prompt_conditioned, span_prompt, local_next_token)")
    if model_family(config) == "masked_diffusion":
        return (f"{identity} ({archs}) is not a causal LM; autoregressive contracts need one",
                "a causal LM (reference:translate-ar, or a local AutoModelForCausalLM directory)",
                "a masked LM runs diffusion contracts: `use prompt_to_output`, `state_level` or `denoising_stage`")
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or "AutoModelForCausalLM" in auto_map:
        return None
    if getattr(config, "is_encoder_decoder", False) and (
            config.model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES or "AutoModelForSeq2SeqLM" in auto_map):
        return None                                  # an encoder–decoder: engine/seq2seq.py
    return (f"{identity} ({archs}) has no causal-LM head transformers can load; autoregressive contracts need one",
            "a causal LM (reference:translate-ar, or a local AutoModelForCausalLM directory)", None)


def operators(tokenizer: Any, config: Any) -> set[str]:
    """The perturbation operators the model has, as ``compile_contract`` builds them."""
    vocab = getattr(config, "vocab_size", None)
    out = set(ALWAYS)
    for name in TOKEN_OPERATORS:
        tid = getattr(tokenizer, f"{name}_token_id", None)
        if tid is None:
            tid = getattr(config, f"{name}_token_id", None)
        if isinstance(tid, (list, tuple)):
            tid = tid[0] if tid else None
        if tid is not None and (vocab is None or 0 <= int(tid) < vocab):
            out.add(name)
    return out


def _selectors(obj: Any) -> Iterator[m.Selector]:
    if isinstance(obj, m.Selector):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _selectors(o)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _selectors(getattr(obj, f.name))


def preflight(contract: m.Contract, *, trust_remote_code: bool = False) -> list[ContractError]:
    """Positioned errors the model's tokenizer and config reveal in a (statically valid) contract.

    ``trust_remote_code`` is the command line's ``--trust-remote-code`` (never a contract's):
    without it a model folder's own code is refused, and never imported."""
    from scopecheck.engine.compile import contract_dir, token_sets  # lazy: imports torch
    from scopecheck.engine.models import model_location  # lazy: imports torch

    if contract.model is None:
        return []
    span = contract.model.span
    try:
        where, identity = model_location(contract.model, contract_dir(contract))
    except ContractError as exc:
        return [exc]
    loaded = _read(where, identity, trust_remote_code)
    if isinstance(loaded, Refusal):
        return [ContractValidationError(loaded.message, span, expected=loaded.expected, hint=loaded.hint,
                                        rule="model")]
    if loaded is None:
        return []
    tok, config = loaded
    errors: list[ContractError] = []
    scope = resolve(contract).scope
    diffusion = scope.process is not None and scope.process.kind == "masked_diffusion"
    if scope.process is not None:
        refusal = _process_refusal(identity, config, diffusion)
        if refusal is not None:
            msg, expected, hint = refusal
            return [ContractValidationError(msg, span, expected=expected, hint=hint, rule="model")]
    if contract.prompt is None or contract.dataset is not None:
        return []                                   # a dataset's rows are read and checked by the run
    if contract.method is not None and not diffusion:   # a stage perturbation is not a token operator
        have = operators(tok, config)
        for p in contract.method.params:
            value = p.value.name if isinstance(p.value, m.Ident) else None
            if p.key in vocab.OPERATOR_PARAMS and value is not None and value not in have:
                errors.append(ContractValidationError(
                    f"{contract.model.name} has no `{value}` token", p.span,
                    expected=f"{p.key} = " + " | ".join(sorted(have - {"noop"})), rule="operator"))
    out = contract.output
    if out is None or out.text is None:
        return errors                               # a generated output is known only once the model runs
    try:
        if getattr(config, "is_encoder_decoder", False):
            from scopecheck.engine.seq2seq import decoder_start_id  # lazy: imports torch and numpy

            al = align_seq2seq(tok, contract.prompt, out.text, None, decoder_start_id(config))
        else:
            al = align(tok, contract.prompt, out.text)
    except ContractError as exc:
        return errors + [exc]
    reported: set[str] = set()
    anchors: list[ContractError] = []
    for sel in [*_selectors(scope), *_selectors(contract.expects)]:
        if sel.space not in ("x", "y"):
            continue
        try:
            positions(al, sel)
        except ContractError as exc:
            if exc.render() not in reported:
                reported.add(exc.render())
                anchors.append(exc)
    errors += anchors
    complete = scope.score is not None and scope.explain is not None and scope.process is not None
    if not anchors and complete and not diffusion and family_param(contract.use) is None:
        try:                                        # E, C, O and S at token level, as the run compiles them
            token_sets(al, scope)
        except ContractError as exc:
            errors.append(exc)
    return errors


__all__ = ["Refusal", "custom_code", "operators", "preflight"]
