"""Model loading: ``reference:<name>``, a local directory, a local ``.gguf`` file, or a hub id.

An encoder–decoder (``config.is_encoder_decoder``: Marian, T5, BART) loads as
``AutoModelForSeq2SeqLM`` and runs autoregressive contracts (:mod:`scopecheck.engine.seq2seq`).
Safetensors only by default; a GGUF checkpoint (a ``.gguf`` file, or a directory holding exactly
one and no safetensors) is not pickle and loads without opt-in, dequantized to the dtype asked for
(``pip install 'scopecheck[gguf]'``; see :mod:`scopecheck.engine.gguf`). Pickle checkpoints
(``allow_pickle``) and ``trust_remote_code`` are command-line opt-ins (``scopecheck run --allow-pickle
--trust-remote-code``); a contract file alone can never enable them. float32 by default;
float64 for verification. No silent precision change: the dtype asked for is the dtype used.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scopecheck.engine import gguf, threads
from scopecheck.errors import ContractError, ContractValidationError, Span, reraise_interrupt, unknown_name
from scopecheck.reference import REFERENCE_MODELS
from scopecheck.spec import model as m

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    dtype: str = "float32"
    allow_pickle: bool = False    # command line only
    trust_remote_code: bool = False  # command line only


@dataclass(frozen=True)
class LoadedModel:
    model: Any                    # transformers PreTrainedModel
    tokenizer: Any
    identity: str                 # reference:<name> | path | hub id, for reports
    family: str                   # autoregressive | masked_diffusion
    device: str
    dtype: str
    quantization: str | None = None  # a GGUF checkpoint's quantization (Q8_0, Q4_1, F32...); None otherwise


def context_window(lm: "LoadedModel") -> int | None:
    """The longest sequence the model accepts (positions), from its config or tokenizer."""
    cfg = getattr(lm.model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(lm.tokenizer, "model_max_length", None)
    return v if isinstance(v, int) and 0 < v < 10 ** 7 else None


def check_context(lm: "LoadedModel", n: int, what: str, span: Span) -> None:
    """A positioned error when ``n`` positions exceed the model's context window."""
    limit = context_window(lm)
    if limit is not None and n > limit:
        raise ContractValidationError(f"{what} needs {n} positions but {lm.identity} has a context window of {limit}",
                                      span, expected=f"at most {limit} positions (special tokens included)",
                                      rule="context")


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ContractError(f"device {device!r} requested but CUDA is not available", rule="device",
                            expected="--device cpu or auto")
    return device


def model_location(ref: m.ModelRef, base_dir: Path | None) -> tuple[str, str]:
    """(what to pass to from_pretrained, identity for reports)."""
    if ref.kind == "reference":
        info = REFERENCE_MODELS.get(ref.name)
        if info is None:
            raise unknown_name("reference model", ref.name, list(REFERENCE_MODELS), ref.span)
        return str(info.directory), f"reference:{ref.name}"
    if ref.kind == "path":
        p = Path(ref.name).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = (base_dir / p).resolve()
        gguf_file = p.suffix.lower() == ".gguf"
        if p.exists() and not p.is_dir() and not (gguf_file and p.is_file()):
            raise ContractValidationError(f"{str(p)!r} is a file, not a model directory or a .gguf file", ref.span,
                                          expected="a directory with config.json and model.safetensors, "
                                                   "or a .gguf file", rule="model")
        if not p.exists():
            what = "model file" if gguf_file else "model directory"
            relative = not Path(ref.name).expanduser().is_absolute() and base_dir is not None
            hint = (f"a relative path is read from the contract file's folder ({base_dir})" if relative else
                    'a model on the Hugging Face hub is named by its id: model hub:"org/name"')
            raise ContractValidationError(f"{what} {str(p)!r} does not exist", ref.span,
                                          expected="a .gguf file" if gguf_file else
                                          "a directory with config.json and model.safetensors", hint=hint,
                                          rule="model")
        return str(p), str(p)
    return ref.name, f"hub:{ref.name}"


def model_family(config: Any) -> str:
    archs = " ".join(getattr(config, "architectures", None) or [])
    return "masked_diffusion" if ("MaskedLM" in archs or "Diffusion" in archs) else "autoregressive"


def load(ref: m.ModelRef, options: LoadOptions = LoadOptions(), base_dir: Path | None = None,
         family: str | None = None) -> LoadedModel:
    """Load a model; ``family="masked_diffusion"`` loads a masked LM (``AutoModelForMaskedLM``) as
    a denoiser, otherwise the config's architecture decides (masked LMs are denoisers)."""
    where, identity = model_location(ref, base_dir)
    device = resolve_device(options.device)
    try:
        lm = _load_cached(where, identity, device, options.dtype, options.allow_pickle, options.trust_remote_code,
                          family)
    except ContractError as exc:          # cached by model identity and options; errors get this contract's span
        exc.span = ref.span
        raise
    if device == "cpu":
        threads.on_model(lm.model)        # the thread policy (engine/threads.py): tiny models single-threaded
    return lm


def check_model_files(where: str, identity: str, allow_pickle: bool) -> Any:
    """Positioned errors for a local model directory or ``.gguf`` file whose files cannot be what
    they claim. Returns the GGUF header (:class:`scopecheck.engine.gguf.GgufHeader`) for a GGUF
    checkpoint, None for a Hugging Face directory."""
    d = Path(where)
    span = Span()
    target = gguf.gguf_target(d)
    if target is not None and d.is_file():   # a .gguf named directly: the one file is the model
        return gguf.check_gguf_file(d, identity)
    root = d.resolve()
    for f in sorted(d.iterdir()):
        if f.is_symlink() and root not in f.resolve().parents:
            raise ContractValidationError(f"{identity}: {f.name} is a symbolic link out of the model directory "
                                          f"(to {f.resolve()})", span,
                                          expected="the model's files inside its directory",
                                          hint='a model from the Hugging Face cache loads by its id: model hub:"org/name"',
                                          rule="model")
    if target is not None:                   # a directory of one .gguf: config, tokenizer and weights in it
        return gguf.check_gguf_file(d / target[1], identity)
    if not (d / "config.json").is_file():
        raise ContractValidationError(f"{identity}: no config.json in the model directory", span,
                                      expected="a Hugging Face model directory (config.json, weights, tokenizer)",
                                      rule="model")
    weights = sorted(d.glob("*.safetensors"))
    if not weights and not allow_pickle:
        raise ContractValidationError(
            f"{identity}: no .safetensors weights; pickle checkpoints are refused by default", span,
            expected="model.safetensors", hint="pass --allow-pickle on the command line if you trust the file",
            rule="model")
    from safetensors import safe_open

    for w in weights:
        if w.stat().st_size == 0:
            raise ContractValidationError(f"{identity}: {w.name} is empty (0 bytes)", span,
                                          expected="a complete safetensors file", rule="model")
        try:
            with safe_open(str(w), framework="pt") as fh:
                list(fh.keys())
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ContractValidationError(f"{identity}: {w.name} is not a readable safetensors file ({exc})", span,
                                          expected="a complete safetensors file", rule="model") from None
    return None


@functools.lru_cache(maxsize=8)
def _load_cached(where: str, identity: str, device: str, dtype: str, allow_pickle: bool, trust_remote_code: bool,
                 family: str | None = None) -> LoadedModel:
    span = Span()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if dtype not in DTYPES:
        raise ContractError(f"unknown dtype {dtype!r}", rule="dtype", expected=", ".join(DTYPES))
    local = Path(where).is_dir() or Path(where).is_file()
    header = check_model_files(where, identity, allow_pickle) if local else None
    kw: dict[str, Any] = {}
    weights_kw: dict[str, Any] = {"use_safetensors": not allow_pickle or None}
    quiet: Any = contextlib.nullcontext()
    if not local:  # a hub id: honour HF_HUB_OFFLINE as set now (huggingface_hub reads it at import)
        kw["local_files_only"] = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if header is not None:  # GGUF: config, tokenizer and weights all come out of the one file
        gguf.require_packages(identity)
        where = str(header.path.parent)
        kw["gguf_file"] = header.path.name
        weights_kw = gguf.load_kwargs()
        quiet = gguf.quiet_conversion()
    try:
        # trust_remote_code always explicit: left None, transformers asks on a terminal and runs the
        # folder's code on a "y"
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code, **kw)
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code, **kw)
        fam = family or model_family(config)
        auto = AutoModelForMaskedLM if fam == "masked_diffusion" else AutoModelForCausalLM
        if fam == "autoregressive" and getattr(config, "is_encoder_decoder", False):
            from transformers import AutoModelForSeq2SeqLM   # Marian, T5, BART: see engine/seq2seq.py

            auto = AutoModelForSeq2SeqLM
        with quiet:
            model = auto.from_pretrained(where, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                                         **weights_kw, **kw)
    except Exception as exc:  # noqa: BLE001 - any loader failure is this model statement's error
        reraise_interrupt(exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "trust_remote_code" in str(exc):
            raise ContractValidationError(f"cannot load model {identity}: it asks to run its own code", span,
                                          expected="a model transformers implements",
                                          hint="pass --trust-remote-code on the command line if you trust the code",
                                          rule="model") from None
        raise ContractValidationError(f"cannot load model {identity}: {first}", span,
                                      expected="a local directory, a reference model, or a reachable hub id",
                                      rule="model") from None
    model.to(device)
    model.eval()
    quantization = header.quantization if header is not None else None
    return LoadedModel(model, tokenizer, identity, fam, device, dtype, quantization)
