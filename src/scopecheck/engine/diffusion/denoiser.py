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

A *block-causal* denoiser (``block = S``; BD3-LM, Steerling) is the same network called with
a block-causal attention mask (:meth:`Denoiser.attention`): response slot ``i`` is in block
``i // S``, and position ``q`` attends to position ``k`` iff ``block(k) <= block(q)`` --
bidirectional within a block, causal across blocks, so nothing of a later block reaches an
earlier block's hidden states. The prompt belongs to block 0: it and the first block attend
to each other (as a prompt's tail and the first generated tokens share a block in Steerling's
and BD3-LM's position-aligned blocks), every later block attends to both, and with one block
(``S >= R``) the mask allows everything: the bidirectional denoiser, exactly.
It is passed as a 4D additive mask ``(B, 1, L, L)`` (``0`` allowed, the dtype's minimum
refused; deleted positions refused as columns too), which transformers' attention takes as
given (eager and SDPA). :meth:`Denoiser.check_block_causal` verifies on the model itself that
the mask is honoured (a model that drops it is refused, never silently run bidirectionally).
The ``shift`` adapter is refused with blocks: its row ``i - 1`` predicts slot ``i``, which for a
block's first slot is a row of the previous block that cannot see the block.

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
    block: int | None = None        # block-causal: slots per block (None: bidirectional attention)

    def __post_init__(self) -> None:
        if self.adapter not in ADAPTERS:
            raise InvalidSettings(f"unknown denoiser adapter {self.adapter!r}; known: {', '.join(ADAPTERS)}")
        if self.block is not None:
            if self.block < 1:
                raise InvalidSettings(f"block must be at least 1 slot, got {self.block}")
            if self.adapter == "shift":
                raise InvalidSettings("a block-causal denoiser needs the plain adapter: with `shift` the first slot "
                                      "of a block is predicted by the last row of the previous block, which "
                                      "cannot see the block")
        try:
            names = inspect.signature(self.model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover
            names = {}
        self._positions = "position_ids" in names
        if self.block is not None and names and "attention_mask" not in names:
            raise InvalidSettings(f"{type(self.model).__name__} takes no attention_mask, so it cannot run as a "
                                  "block-causal denoiser")
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

    def attention(self, n_prompt: int, length: int, device: Any = None) -> Tensor | None:
        """``(L, L)`` bool, ``[q, k]`` true where position ``q`` may attend to ``k``: block-causal
        (slot ``i`` in block ``i // block``, the prompt in block 0); ``None`` when bidirectional."""
        if self.block is None:
            return None
        R = length - n_prompt
        blk = torch.cat([torch.zeros(n_prompt, dtype=torch.long),
                         torch.arange(R, dtype=torch.long) // self.block]).to(device)
        return blk.unsqueeze(0) <= blk.unsqueeze(1)

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
        allowed = self.attention(n_prompt, L, embeds.device)
        if allowed is not None:
            a = allowed.unsqueeze(0).expand(B, L, L)
            if keep is not None:
                a = a & keep.to(device=embeds.device, dtype=torch.bool).unsqueeze(1)      # deleted columns
            neg = torch.finfo(embeds.dtype).min
            kw["attention_mask"] = torch.zeros(B, 1, L, L, dtype=embeds.dtype, device=embeds.device).masked_fill(
                ~a.unsqueeze(1), neg)
        if self.token_types:
            tt = torch.zeros(B, L, dtype=torch.long, device=embeds.device)
            tt[:, n_prompt:] = 1
            kw["token_type_ids"] = tt
        self.calls += 1
        out = self.model(**kw).logits                                   # (B, L, V)
        if self.adapter == "shift":
            out = torch.cat([out[:, :1], out[:, :-1]], dim=1)
        return out[:, n_prompt:]

    @torch.no_grad()
    def check_block_causal(self, n_prompt: int, length: int, seed: int = 0) -> float:
        """The largest change of an earlier block's (and the prompt-conditioned) logits when every
        later block's slots are changed, over each block boundary: ``0`` for a model that honours
        the mask. Two forwards per boundary on random token inputs; ``InvalidSettings`` when the
        change exceeds float noise (the model ignores a 4D attention mask)."""
        if self.block is None:
            return 0.0
        g = torch.Generator(device="cpu").manual_seed(seed)
        V = int(self.embedding.weight.shape[0])
        ids = torch.randint(0, V, (2, length), generator=g)
        worst = 0.0
        for start in range(self.block, length - n_prompt, self.block):
            a = ids[0].clone()
            b = a.clone()
            b[n_prompt + start:] = ids[1, n_prompt + start:]
            out = self.logits(self.embed(torch.stack([a, b])).to(self.dtype), n_prompt)
            worst = max(worst, float((out[0, :start] - out[1, :start]).abs().max()))
        tol = 1e-4 if self.dtype in (torch.float32, torch.float64) else 1e-2
        if worst > tol:
            raise InvalidSettings(f"{type(self.model).__name__} does not honour a 4D attention mask: its predictions "
                                  f"for a block changed by {worst:.3g} when a later block changed, so it cannot run "
                                  "as a block-causal denoiser")
        return worst
