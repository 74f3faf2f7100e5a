"""Attention rollout (Abnar & Zuidema 2020), read at the target rows."""

from __future__ import annotations

from typing import Mapping

import torch

from scopecheck.engine.methods._common import finalize, resolve_params
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused

Tensor = torch.Tensor


def layer_transition(att: Tensor, residual: bool) -> Tensor:
    """One layer's token-to-token transition ``(L, L)`` from its attention ``(H, L, L)``.

    Heads are averaged; the residual stream adds the identity (``0.5 A + 0.5 I``); the
    causal mask is enforced (no mass on later tokens, whatever the numerics) and every row
    is renormalised to sum to one.
    """
    a = att.mean(0)                                                          # (L, L)
    if residual:
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    a = torch.tril(a)
    return a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)


def rollout_matrix(atts: list[Tensor], residual: bool) -> Tensor:
    """``R = A_L ... A_2 A_1`` ``(L, L)``: row t is the flow from every input token to t."""
    r = None
    for att in atts:                                                          # layers bottom-up
        a = layer_transition(att, residual)
        r = a if r is None else a @ r
    assert r is not None
    return r


def attention_rollout(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    p = resolve_params("attention_rollout", params)
    if problem.attentions is None:
        raise MethodRefused("attention_rollout needs attention probabilities; this problem has none")
    if not problem.target_rows:
        raise MethodRefused("attention_rollout needs target rows to read the rollout at")
    atts = problem.attentions(problem.embeds)
    R = rollout_matrix(atts, bool(p["residual"]))                            # (L, L)
    scores = R[list(problem.target_rows)].mean(0)                            # (L,) averaged over targets
    return finalize(problem, scores, {"layers": len(atts), "residual": bool(p["residual"]),
                                      "target_rows": ",".join(str(r) for r in problem.target_rows),
                                      "mass_outside_eligible": float(scores[~problem.eligible].sum())})
