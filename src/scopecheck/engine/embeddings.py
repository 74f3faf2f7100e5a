"""Model-agnostic embedding helpers: the vocabulary rows and perturbation-operator rows of any
Hugging Face model with input embeddings (causal or masked LM alike).

:func:`embedding_operators` is what the autoregressive problem
(:func:`~scopecheck.engine.scoring.causal_lm_problem`) and the masked-diffusion compiler
(:mod:`scopecheck.engine.diffusion.compile`) both substitute perturbed positions with.
"""

from __future__ import annotations

import weakref

import torch

Tensor = torch.Tensor

__all__ = ["embedding_operators", "operator_token_id"]


def operator_token_id(explicit: int | None, config: object, attr: str, vocab: int, name: str) -> int | None:
    """The token an operator ``name`` substitutes: the explicit id, else the config's ``attr``, when inside
    the vocabulary (an explicit id outside it is an error; a config's is ignored)."""
    tid = explicit if explicit is not None else getattr(config, attr, None)
    if isinstance(tid, (list, tuple)):                                          # some configs list several
        tid = tid[0] if tid else None
    if tid is None:
        return None
    tid = int(tid)
    if not 0 <= tid < vocab:
        if explicit is not None:
            raise ValueError(f"{name}_id={tid} is outside the vocabulary (size {vocab})")
        return None
    return tid


#: Mean vocabulary embedding per embedding module, with the identity and version counter of its
#: weight: a family of K problems (or a dataset of many) over one model computes the mean once.
_VOCAB_MEAN: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, int, Tensor]]" = weakref.WeakKeyDictionary()


def _vocab_mean(vocab_embeds: Tensor, module: torch.nn.Module | None) -> Tensor:
    """``vocab_embeds.mean(0, keepdim=True)`` ``(1, d)``, cached per plain ``nn.Embedding``
    ``module`` (whose weight ``vocab_embeds`` is) while that weight is unchanged."""
    if module is None:
        return vocab_embeds.mean(0, keepdim=True)
    weight = module.weight
    hit = _VOCAB_MEAN.get(module)
    if hit is not None and hit[0] == id(weight) and hit[1] == weight._version:
        return hit[2]
    mean = vocab_embeds.mean(0, keepdim=True)                                     # (1, d)
    _VOCAB_MEAN[module] = (id(weight), weight._version, mean)
    return mean


def embedding_operators(model: torch.nn.Module, L: int, pad_id: int | None = None, mask_id: int | None = None,
                        unk_id: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The vocabulary embedding rows ``(V, d)`` and the replacement rows ``(L, d)`` of every
    perturbation operator the model has: ``zero`` and ``mean`` always; ``pad``, ``mask``,
    ``unk`` where the explicit id or ``model.config.{pad,mask,unk}_token_id`` names a token
    (none is invented)."""
    emb_module = model.get_input_embeddings()
    weight = emb_module.weight                                                   # (V, d)
    device = weight.device
    V = int(weight.shape[0])
    with torch.no_grad():
        if type(emb_module) is torch.nn.Embedding:
            vocab_embeds = weight.detach()                                       # (V, d), shares storage
        else:  # scaled / custom embedding modules: rows exactly as inputs_embeds expects them
            vocab_embeds = emb_module(torch.arange(V, device=device)).detach()
    d = int(vocab_embeds.shape[1])
    config = getattr(model, "config", None)
    operators: dict[str, Tensor] = {
        "zero": torch.zeros(L, d, dtype=vocab_embeds.dtype, device=device),     # (L, d)
        "mean": _vocab_mean(vocab_embeds, emb_module if type(emb_module) is torch.nn.Embedding else None)
                .expand(L, d).clone(),                                           # (L, d)
    }
    for name, explicit in (("pad", pad_id), ("mask", mask_id), ("unk", unk_id)):
        tid = operator_token_id(explicit, config, f"{name}_token_id", V, name)
        if tid is not None:
            operators[name] = vocab_embeds[tid].unsqueeze(0).expand(L, d).clone()  # (L, d)
    return vocab_embeds, operators
