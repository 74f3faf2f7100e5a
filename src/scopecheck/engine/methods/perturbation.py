"""Perturbation methods: occlusion (feature ablation) and exact Shapley values.

Features are the eligible positions; a perturbed feature is replaced by the operator's
rows (``pad``, ``zero``, ...) or deleted (``delete``). Positions outside E are never
perturbed (``AttributionProblem.replace`` enforces it) and score exactly zero.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from scopecheck.engine.methods._common import (
    batch_param,
    check_operator,
    coalitions_to_drop,
    finalize,
    positions,
    resolve_params,
    score_drops,
    score_input,
)
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused

MAX_EXACT_FEATURES = 10


def occlusion(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    """``S(input) - S(input with eligible token i perturbed)`` for each eligible i."""
    p = resolve_params("occlusion", params)
    op = check_operator(problem, p["operator"])
    pos = positions(problem)                                                  # (M,)
    M = int(pos.numel())
    # row 0 drops every eligible token (the reported baseline score), row 1 + k drops position k,
    # the last row is the input itself (S(x)): the baseline rides in the first batch, whose early
    # perturbations run in full anyway, the input in the last, whose rows share the longest prefix
    # (so it costs a few positions, no call of its own)
    drop = torch.zeros(M + 2, problem.length, dtype=torch.bool, device=problem.embeds.device)
    drop[0] = problem.eligible.to(drop.device)
    drop[torch.arange(1, M + 1, device=pos.device), pos] = True                                  # one feature per row
    s_all = score_drops(problem, op, drop, batch_param(p), bool(p["_progress"]), "occlusion")   # (M + 2,)
    s_in = float(s_all[M + 1])
    scores = torch.zeros(problem.length, dtype=problem.embeds.dtype, device=problem.embeds.device)
    scores[pos] = s_in - s_all[1:M + 1]
    s_base = float(s_all[0])
    return finalize(problem, scores, {"score_input": s_in, "score_baseline": s_base,
                                      "operator": op, "evaluations": M + 2})


def all_coalitions(M: int) -> np.ndarray:
    """All ``2**M`` coalitions as a bool matrix ``(2**M, M)``; row ``k`` is the bitmask ``k``."""
    k = np.arange(2 ** M, dtype=np.int64)[:, None]
    return ((k >> np.arange(M, dtype=np.int64)[None, :]) & 1).astype(bool)


def shapley_from_values(values: np.ndarray, M: int) -> np.ndarray:
    """Exact Shapley values from the value of every coalition (indexed by bitmask).

    ``phi_i = sum_{S not containing i} |S|! (M-|S|-1)! / M! * (v(S + i) - v(S))``.
    """
    masks = np.arange(2 ** M, dtype=np.int64)
    sizes = np.array([bin(int(m)).count("1") for m in masks])
    weight = np.array([math.factorial(s) * math.factorial(M - s - 1) / math.factorial(M) if s < M else 0.0
                       for s in range(M + 1)])
    phi = np.zeros(M)
    for i in range(M):
        bit = 1 << i
        without = masks[(masks & bit) == 0]
        phi[i] = np.sum(weight[sizes[without]] * (values[without | bit] - values[without]))
    return phi


def exact_shapley(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    """Shapley values of the game ``v(S) = S(input with eligible features outside S perturbed)``."""
    p = resolve_params("exact_shapley", params)
    op = check_operator(problem, p["operator"])
    pos = positions(problem)
    M = int(pos.numel())
    if M > MAX_EXACT_FEATURES:
        raise MethodRefused(f"exact_shapley enumerates 2**M coalitions and accepts at most {MAX_EXACT_FEATURES} "
                            f"eligible features, got {M}; use kernel_shap instead")
    scores = torch.zeros(problem.length, dtype=problem.embeds.dtype, device=problem.embeds.device)
    if M == 0:
        return finalize(problem, scores, {"score_input": score_input(problem), "evaluations": 0})
    present = torch.as_tensor(all_coalitions(M), device=problem.embeds.device)    # (2^M, M)
    values_t = score_drops(problem, op, coalitions_to_drop(problem, present), batch_param(p),
                           bool(p["_progress"]), "exact_shapley")                # (2^M,)
    values = values_t.double().cpu().numpy()
    phi = shapley_from_values(values, M)
    scores[pos] = torch.as_tensor(phi, dtype=scores.dtype, device=scores.device)
    s_in, s_base = float(values[-1]), float(values[0])
    return finalize(problem, scores, {
        "score_input": s_in, "score_baseline": s_base, "operator": op, "evaluations": 2 ** M,
        "efficiency_gap": float(phi.sum() - (s_in - s_base)),
    })
