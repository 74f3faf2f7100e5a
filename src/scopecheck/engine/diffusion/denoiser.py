"""A masked language model used as a masked-diffusion denoiser.

The denoiser sees the whole sequence ``[special..., x[1..n], r[1..R]]`` (prompt, then a
response region of ``R`` slots, each a committed token or the mask) with full
(bidirectional) attention, and returns for every response slot a distribution over the
vocabulary. Real diffusion LMs expose this through two interfaces, each an *adapter*:

* ``plain``  -- ``model(x).logits[:, i]`` predicts token ``i`` (LLaDA, MDLM, BERT-style MLMs);
* ``shift``  -- ``model(x).logits[:, i - 1]`` predicts token ``i`` (Dream, which keeps the
  causal LM head of its autoregressive initialisation; row 0 reads itself).

The adapter that ran is named in every result. BERT-family models with two token types
get type 1 on the response region (the reference denoiser is trained that way), type 0
on the prompt.

Shapes: ``embeds`` ``(B, L, d)``; ``keep`` ``(B, L)`` bool or ``None`` (``False`` removes a
position: no attention to it, later positions shift left); returns logits ``(B, R, V)``
for the response slots ``[P, P + R)``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from scopecheck.errors import InvalidSettings, MethodRefused
from scopecheck.spec.vocabulary import ADAPTERS  # the closed vocabulary, defined once

Tensor = torch.Tensor

def default_adapter(config: Any) -> str:
    """``shift`` for Dream-style models, ``plain`` otherwise."""
    kind = (getattr(config, "model_type", "") or "").lower()
    archs = " ".join(getattr(config, "architectures", None) or []).lower()
    return "shift" if ("dream" in kind or "dream" in archs) else "plain"


@dataclass
class Denoiser:
    model: Any                      # transformers PreTrainedModel returning ``.logits``
    mask_id: int
    adapter: str = "plain"          # a key of ADAPTERS
    eos_id: int | None = None
    pad_id: int | None = None
    token_types: bool = False       # pass token_type_ids (prompt 0, response 1)

    def __post_init__(self) -> None:
        if self.adapter not in ADAPTERS:
            raise InvalidSettings(f"unknown denoiser adapter {self.adapter!r}; known: {', '.join(ADAPTERS)}")
        try:
            names = inspect.signature(self.model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover
            names = {}
        self._positions = "position_ids" in names
        self.calls = 0                  # forward passes, for tests and benchmarks

    @property
    def embedding(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    def embed(self, ids: Tensor) -> Tensor:
        """Token ids ``(..., L)`` -> input embeddings ``(..., L, d)``."""
        return self.embedding(ids.to(self.device))

    def mask_embedding(self) -> Tensor:
        """``(d,)`` embedding of the mask token."""
        return self.embed(torch.tensor([self.mask_id]))[0]

    def logits(self, embeds: Tensor, n_prompt: int, keep: Tensor | None = None) -> Tensor:
        """Logits ``(B, R, V)`` of the response slots ``[n_prompt, L)`` for embeddings ``(B, L, d)``."""
        B, L, _ = embeds.shape
        kw: dict[str, Any] = {"inputs_embeds": embeds}
        if keep is not None:
            if not self._positions:
                raise MethodRefused(f"{type(self.model).__name__} takes no position_ids, so positions cannot be "
                                    "deleted; use a replacement operator (mask, pad, zero, ...)")
            k = keep.to(device=embeds.device, dtype=torch.long)
            kw["attention_mask"] = k
            kw["position_ids"] = (k.cumsum(-1) - 1).clamp(min=0)
        if self.token_types:
            tt = torch.zeros(B, L, dtype=torch.long, device=embeds.device)
            tt[:, n_prompt:] = 1
            kw["token_type_ids"] = tt
        self.calls += 1
        out = self.model(**kw).logits                                   # (B, L, V)
        if self.adapter == "shift":
            out = torch.cat([out[:, :1], out[:, :-1]], dim=1)
        return out[:, n_prompt:]
