"""The attribution problem every method solves: a contract, compiled to tensors.

A contract (``scopecheck.spec``) is compiled by ``scopecheck.engine.compile`` into an
:class:`AttributionProblem`. Methods see only this object, so they cannot get the
contract wrong: positions outside ``eligible`` are never perturbed, never on an
integration path and always receive exactly zero attribution.

Shapes (``L`` sequence length incl. BOS, ``d`` embedding width, ``B`` batch):

* ``ids``          ``(L,)``   int64 token ids of ``[special..., x..., y...]``
* ``embeds``       ``(L, d)`` input embeddings at their actual values
* ``eligible``     ``(L,)``   bool, True where a position may receive attribution (E)
* ``objective``    ``(B, L, d), keep (B, L) bool | None -> (B,)`` the score S
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from scopecheck.errors import Unavailable

Tensor = torch.Tensor


class Objective(Protocol):
    """The attributed score S as a differentiable function of the input embeddings.

    ``embeds``: ``(B, L, d)``. ``keep``: ``(B, L)`` bool or ``None``; a ``False`` entry
    deletes that position (it is removed from attention and the positions after it
    shift left, exactly as if the token had been cut from the text). Returns ``(B,)``.
    Target positions are read at the original frozen ids, so the output is always
    rescored, never regenerated.
    """

    def __call__(self, embeds: Tensor, keep: Tensor | None = None) -> Tensor: ...


@dataclass(frozen=True)
class AttributionProblem:
    ids: Tensor                      # (L,) int64
    embeds: Tensor                   # (L, d)
    eligible: Tensor                 # (L,) bool: E
    objective: Objective             # (B, L, d), (B, L)? -> (B,)
    #: replacement embedding rows per perturbation operator name, each ``(L, d)``:
    #: ``pad``, ``mask``, ``unk`` (token embeddings where the tokenizer has one), ``zero``, ``mean``.
    operators: dict[str, Tensor] = field(default_factory=dict)
    #: positions whose next-token distribution produces the target (for attention read-outs).
    target_rows: tuple[int, ...] = ()
    #: returns per-layer attention probabilities, each ``(heads, L, L)``, for ``embeds`` ``(L, d)``.
    attentions: Callable[[Tensor], list[Tensor]] | None = None
    #: log-probabilities of the whole vocabulary at ``target_rows``: ``(B, L, d) -> (B, len(target_rows), V)``,
    #: used by methods that need distributions (AS, HETA's KL term, contextual entropies).
    logprobs: Callable[[Tensor, Tensor | None], Tensor] | None = None
    #: embedding matrix ``(V, d)`` (for methods that marginalise a token over the vocabulary).
    vocab_embeds: Tensor | None = None
    #: ``decoder_only`` (a causal LM or a denoiser: one stack reads the whole sequence) or
    #: ``encoder_decoder`` (:mod:`scopecheck.engine.seq2seq`: the encoder reads the prompt, the decoder
    #: ``[start, y]``); methods and checks the registry marks as refusing an architecture are refused on it
    architecture: str = "decoder_only"
    #: the perturbation rows a method scored, ``(operator, drop (N, L) bool within E, S (N,) float64)``
    #: in the order scored: the checks' row cache starts from them (``scopecheck.checks.rowcache``),
    #: so no check scores an input again that the method already did (not copied by
    #: ``dataclasses.replace``: a problem with another objective starts empty)
    scored_rows: list[tuple[str, Tensor, Tensor]] = field(default_factory=list, init=False, compare=False,
                                                           repr=False)

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])

    @property
    def eligible_positions(self) -> list[int]:
        return [int(i) for i in torch.nonzero(self.eligible).flatten()]

    def replace(self, operator: str, drop: Tensor) -> tuple[Tensor, Tensor | None]:
        """Embeddings and keep-mask with the positions in ``drop`` ``(B, L)`` bool perturbed.

        Returns ``(embeds (B, L, d), keep (B, L) | None)``. ``delete`` removes positions
        through ``keep``; every other operator substitutes its replacement rows. Positions
        outside E are never perturbed, whatever ``drop`` says.
        """
        drop = drop & self.eligible.unsqueeze(0)
        base = self.embeds.unsqueeze(0).expand(drop.shape[0], -1, -1)
        if operator == "delete":
            return base, ~drop
        try:
            rows = self.operators[operator]
        except KeyError:
            known = ", ".join(sorted([*self.operators, "delete"]))
            raise Unavailable(f"unknown perturbation operator {operator!r}; known: {known}") from None
        out = torch.where(drop.unsqueeze(-1), rows.unsqueeze(0), base)
        return out, None


@dataclass(frozen=True)
class MethodOutput:
    """What a method computed: one score per sequence position, zero outside E."""

    scores: Tensor                    # (L,) float, exactly 0 where not eligible
    #: extra numbers the method reports, e.g. IG's ``delta`` (completeness gap),
    #: ``score_input`` / ``score_baseline``, KernelSHAP's sample count.
    info: dict[str, float | int | str] = field(default_factory=dict)
