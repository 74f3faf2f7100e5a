"""float64 means float64: a patch for transformers modules that compute in float32 regardless.

transformers' Llama-family ``*RMSNorm`` casts its input to float32 before normalising and
``*RotaryEmbedding`` builds its cos/sin tables from float32 frequencies, so a model loaded
in float64 still rounds to float32 twice per layer: S(x) differs from a true float64
forward by ~1e-8 and IG completeness cannot be verified below ~1e-7.

:func:`float64_forward` patches those modules *on one model instance* while a run lasts
(their ``forward`` is replaced by an instance attribute computing in the input's dtype,
and the rotary inverse frequencies are recomputed in float64) and restores them afterwards.
The eager attention's softmax, which transformers also forces to float32, is computed in
float64 by swapping the ``eager_attention_forward`` function of the model's modeling
module for the block's duration (a module-level patch: other models of the same
architecture running in the same process during the block see it too, always only for
float64 inputs). SDPA attention already computes in the input's dtype.
Only modules with the exact structure it knows are patched (an RMSNorm with ``weight`` and
``variance_epsilon``/``eps``; a default-type rotary embedding with ``inv_freq``); it
returns what it patched and what it left alone, and the result states both.
"""

from __future__ import annotations

import contextlib
import sys
import types
from dataclasses import dataclass
from typing import Iterator

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class PrecisionNote:
    """What ran in which precision: for reports."""

    dtype: str
    patched: tuple[str, ...] = ()        # module class names patched to compute in float64
    unpatched: tuple[str, ...] = ()      # float32-internal modules left as they are

    def text(self) -> str:
        if self.dtype != "float64":
            return f"{self.dtype} throughout (as asked; no silent precision change)"
        if self.unpatched:
            return ("float64, except modules that compute in float32 internally and could not be patched: "
                    + ", ".join(sorted(set(self.unpatched))))
        if self.patched:
            return ("float64 throughout (patched to compute in float64: "
                    + ", ".join(f"{n} x{self.patched.count(n)}" for n in sorted(set(self.patched))) + ")")
        return "float64 throughout"


def _rmsnorm_forward(self: torch.nn.Module, hidden_states: Tensor) -> Tensor:
    eps = getattr(self, "variance_epsilon", getattr(self, "eps", None))
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + eps))


def _rotary_forward(self: torch.nn.Module, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        inv = self._scopecheck_inv_freq64.to(x.device)                           # (dim/2,) float64
        freqs = position_ids[..., None].to(torch.float64) * inv                 # (B, L, dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)                                  # (B, L, dim)
        scale = float(getattr(self, "attention_scaling", 1.0))
        return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)


def _eager64(original):
    """transformers' ``eager_attention_forward`` with the softmax in the input's dtype (the
    original forces float32). Same arguments and results otherwise."""

    def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        if query.dtype != torch.float64:
            return original(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        groups = int(getattr(module, "num_key_value_groups", 1))
        k = key.repeat_interleave(groups, dim=1) if groups > 1 else key          # (B, H, L, hd)
        v = value.repeat_interleave(groups, dim=1) if groups > 1 else value
        w = torch.matmul(query, k.transpose(2, 3)) * scaling                   # (B, H, q, L)
        if attention_mask is not None:
            w = w + attention_mask
        w = torch.nn.functional.softmax(w, dim=-1)
        w = torch.nn.functional.dropout(w, p=dropout, training=module.training)
        out = torch.matmul(w, v).transpose(1, 2).contiguous()                  # (B, q, H, hd)
        return out, w

    return eager_attention_forward


def _inv_freq64(module: torch.nn.Module) -> Tensor | None:
    """float64 inverse frequencies of a default-type rotary embedding, else ``None``."""
    if getattr(module, "rope_type", "default") != "default":
        return None
    config = getattr(module, "config", None)
    inv = getattr(module, "inv_freq", None)
    if config is None or not isinstance(inv, Tensor):
        return None
    params = getattr(config, "rope_parameters", None) or {}
    base = params.get("rope_theta", getattr(config, "rope_theta", None))
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    partial = params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)) or 1.0
    dim = int(dim * partial)
    if base is None or 2 * inv.numel() != dim:
        return None
    inv64 = 1.0 / (float(base) ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    # only if this is the table the module uses, up to its float32 rounding
    if not torch.allclose(inv64.to(inv.dtype).cpu(), inv.cpu(), rtol=1e-6, atol=0):
        return None
    return inv64


@contextlib.contextmanager
def float64_forward(model: torch.nn.Module) -> Iterator[PrecisionNote]:
    """Within the block a float64 ``model`` computes every RMSNorm and rotary table in float64.

    A no-op (note only) for other dtypes. Restores every patched module on exit, even on error.
    """
    param = next(iter(model.parameters()), None)
    dtype = str(param.dtype).replace("torch.", "") if param is not None else "float32"
    if dtype != "float64":
        yield PrecisionNote(dtype)
        return
    active = getattr(model, "_scopecheck_float64", None)
    if active is not None:                      # nested: the outer block's patch is in place
        yield active
        return
    patched: list[tuple[torch.nn.Module, str]] = []
    unpatched: list[str] = []
    owners: dict[int, tuple[object, object]] = {}      # modeling module -> its original eager attention
    try:
        for mod in model.modules():
            name = type(mod).__name__
            if name.endswith("Attention") and hasattr(mod, "num_key_value_groups"):
                owner = sys.modules.get(type(mod).__module__)
                original = getattr(owner, "eager_attention_forward", None)
                if owner is None or not callable(original):
                    continue
                if id(owner) not in owners:
                    owners[id(owner)] = (owner, original)
                    owner.eager_attention_forward = _eager64(original)  # type: ignore[attr-defined]
                patched.append((mod, "eager_attention_forward"))
            elif name.endswith("RMSNorm") or name == "T5LayerNorm":   # T5's is an RMSNorm by another name
                if isinstance(getattr(mod, "weight", None), Tensor) and (
                        hasattr(mod, "variance_epsilon") or hasattr(mod, "eps")):
                    mod.forward = types.MethodType(_rmsnorm_forward, mod)         # type: ignore[method-assign]
                    patched.append((mod, name))
                else:
                    unpatched.append(name)
            elif name.endswith("RotaryEmbedding"):
                inv64 = _inv_freq64(mod)
                if inv64 is None:
                    unpatched.append(name)
                    continue
                mod._scopecheck_inv_freq64 = inv64                              # type: ignore[attr-defined]
                mod.forward = types.MethodType(_rotary_forward, mod)             # type: ignore[method-assign]
                patched.append((mod, name))
        note = PrecisionNote(dtype, tuple(n for _, n in patched), tuple(unpatched))
        model.__dict__["_scopecheck_float64"] = note
        yield note
    finally:
        model.__dict__.pop("_scopecheck_float64", None)
        for owner, original in owners.values():
            owner.eager_attention_forward = original  # type: ignore[attr-defined]
        for mod, _ in patched:
            mod.__dict__.pop("forward", None)
            mod.__dict__.pop("_scopecheck_inv_freq64", None)


__all__ = ["PrecisionNote", "float64_forward"]
