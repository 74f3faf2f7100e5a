"""Surrogate methods: LIME, KernelSHAP and a ContextCite-style sparse linear surrogate.

All three sample coalitions over the eligible positions (True = kept at its actual value,
False = perturbed by the operator), score them in batches and fit a linear model whose
coefficients are the attributions. Sampling uses a seeded ``torch.Generator``. Every sample is
scored by one ``score_drops`` call: each distinct coalition once, in as few forwards as the
``batch_size`` parameter allows (left out: as many rows per forward as the free memory allows).
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
    generator,
    positions,
    resolve_params,
    score_drops,
)
from scopecheck.engine.methods.perturbation import all_coalitions
from scopecheck.engine.problem import AttributionProblem, MethodOutput

Tensor = torch.Tensor

#: LIME's ridge penalty (the ``lime`` package's default ``Ridge(alpha=1)``).
LIME_RIDGE_ALPHA = 1.0
#: ContextCite's LASSO penalty (its default ``lasso_alpha=0.01``, sklearn's objective scale).
CONTEXT_CITE_LASSO_ALPHA = 0.01
#: ContextCite ablation keep probability (each source kept independently with p = 1/2).
CONTEXT_CITE_KEEP_P = 0.5


def _empty(problem: AttributionProblem, info: dict) -> MethodOutput:
    return finalize(problem, torch.zeros_like(problem.eligible, dtype=problem.embeds.dtype), info)


def _scatter(problem: AttributionProblem, coef: np.ndarray) -> Tensor:
    scores = torch.zeros(problem.length, dtype=problem.embeds.dtype, device=problem.embeds.device)
    scores[positions(problem)] = torch.as_tensor(coef, dtype=scores.dtype, device=scores.device)
    return scores


# ------------------------------------------------------------------------------ LIME


def weighted_ridge(X: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """``argmin sum_n w_n (y_n - b - X_n c)^2 + alpha ||c||^2`` (intercept not penalised)."""
    sw = w / w.sum()
    xm, ym = sw @ X, sw @ y
    Xc, yc = X - xm, y - ym
    A = Xc.T @ (w[:, None] * Xc) + alpha * np.eye(X.shape[1])
    c = np.linalg.solve(A, Xc.T @ (w * yc))
    return c, float(ym - xm @ c)


def lime(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    """LIME: random masks over E, exponential kernel on cosine distance, weighted ridge.

    Masks: the first sample is the unperturbed input; each other draws a number of tokens
    to perturb uniformly in 1..M, then which ones uniformly (as LIME's text explainer).
    Kernel: ``exp(-d^2 / kernel_width^2)`` with ``d`` the cosine distance between the mask
    and the all-ones mask. Surrogate: weighted ridge (alpha = 1, intercept unpenalised).
    """
    p = resolve_params("lime", params)
    op = check_operator(problem, p["operator"])
    n, width = int(p["samples"]), float(p["kernel_width"])  # type: ignore[arg-type]
    M = int(positions(problem).numel())
    if M == 0:
        return _empty(problem, {"samples": 0})
    g = generator(p["_seed"])
    present = torch.ones(n, M, dtype=torch.bool)                              # (n, M)
    if n > 1:
        n_off = torch.randint(1, M + 1, (n - 1,), generator=g)                # tokens perturbed per sample
        ranks = torch.rand(n - 1, M, generator=g).argsort(dim=1).argsort(dim=1)
        present[1:] = ranks >= n_off.unsqueeze(1)
    y = score_drops(problem, op, coalitions_to_drop(problem, present.to(problem.embeds.device)),
                    batch_param(p), bool(p["_progress"]), "lime").double().cpu().numpy()
    Z = present.double().numpy()
    cos = Z.sum(1) / (np.sqrt(np.maximum(Z.sum(1), 1e-300)) * math.sqrt(M))
    dist = np.where(Z.sum(1) > 0, 1.0 - cos, 1.0)
    w = np.exp(-(dist ** 2) / width ** 2)
    coef, intercept = weighted_ridge(Z, y, w, LIME_RIDGE_ALPHA)
    pred = intercept + Z @ coef
    r2 = 1.0 - float(w @ (y - pred) ** 2) / max(float(w @ (y - (w @ y) / w.sum()) ** 2), 1e-300)
    return finalize(problem, _scatter(problem, coef), {
        "score_input": float(y[0]), "samples": n, "operator": op, "kernel": "exp(-d^2/w^2), cosine distance",
        "kernel_width": width, "ridge_alpha": LIME_RIDGE_ALPHA, "intercept": intercept, "weighted_r2": r2,
    })


# ------------------------------------------------------------------------------ KernelSHAP


def _shap_kernel_weight(M: int, k: int) -> float:
    """Shapley kernel ``(M-1) / (C(M,k) k (M-k))`` for a coalition of size ``k``."""
    return (M - 1) / (math.comb(M, k) * k * (M - k))


def constrained_wls(Z: np.ndarray, y: np.ndarray, w: np.ndarray, total: float) -> np.ndarray:
    """``argmin sum_n w_n (y_n - Z_n phi)^2`` subject to ``sum(phi) = total``.

    ``y`` is already ``v(S) - v(empty)``; the constraint is eliminated through the last
    feature (``phi_M = total - sum_{j<M} phi_j``), as in the KernelSHAP reference code.
    """
    M = Z.shape[1]
    if M == 1:
        return np.array([total])
    A = Z[:, :-1] - Z[:, -1:]                                                # (n, M-1)
    b = y - Z[:, -1] * total                                                 # (n,)
    sw = np.sqrt(w)
    head, *_ = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)
    return np.append(head, total - head.sum())


def kernel_shap(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    """KernelSHAP (Lundberg & Lee 2017) with the efficiency constraint.

    The empty and full coalitions are always evaluated and enter as the constraint
    ``sum(phi) = v(full) - v(empty)`` (their kernel weight is infinite). If ``samples`` is at
    least the number of other coalitions (``2**M - 2``) every coalition is enumerated with its
    exact kernel weight (the result is then the exact Shapley value); otherwise coalitions are
    sampled from the kernel distribution (size ``k`` with probability proportional to
    ``(M-1) / (k (M-k))``, members uniform) in complementary pairs, each with unit weight.
    """
    p = resolve_params("kernel_shap", params)
    op = check_operator(problem, p["operator"])
    n = int(p["samples"])  # type: ignore[arg-type]
    M = int(positions(problem).numel())
    if M == 0:
        return _empty(problem, {"samples": 0})
    dev = problem.embeds.device
    ends = torch.tensor([[False] * M, [True] * M])                           # empty, full
    enumerate_all = M <= 20 and n >= 2 ** M - 2
    if M == 1:
        present = torch.zeros(0, 1, dtype=torch.bool)
        w = np.zeros(0)
    elif enumerate_all:
        allz = all_coalitions(M)[1:-1]                                        # drop empty and full
        present = torch.as_tensor(allz)
        sizes = allz.sum(1)
        w = np.array([_shap_kernel_weight(M, int(k)) for k in sizes])
    else:
        g = generator(p["_seed"])
        ks = np.arange(1, M)
        probs = torch.as_tensor((M - 1) / (ks * (M - ks)), dtype=torch.float64)
        half = (n + 1) // 2
        size = torch.as_tensor(ks)[torch.multinomial(probs, half, replacement=True, generator=g)]
        ranks = torch.rand(half, M, generator=g).argsort(dim=1).argsort(dim=1)
        first = ranks < size.unsqueeze(1)                                     # (half, M)
        present = torch.cat([first, ~first])[:n]                              # complementary pairs
        w = np.ones(present.shape[0])
    allp = torch.cat([ends, present]).to(dev)
    vals = score_drops(problem, op, coalitions_to_drop(problem, allp), batch_param(p),
                       bool(p["_progress"]), "kernel_shap").double().cpu().numpy()
    v_empty, v_full = float(vals[0]), float(vals[1])
    Z = present.double().numpy()
    phi = constrained_wls(Z, vals[2:] - v_empty, w, v_full - v_empty)
    return finalize(problem, _scatter(problem, phi), {
        "score_input": v_full, "score_baseline": v_empty, "operator": op,
        "samples": int(present.shape[0]), "evaluations": int(present.shape[0]) + 2,
        "enumerated": int(enumerate_all or M == 1),
    })


# ------------------------------------------------------------------------------ ContextCite


def lasso(X: np.ndarray, y: np.ndarray, alpha: float, iters: int = 2000, tol: float = 1e-10) -> tuple[np.ndarray, float]:
    """``argmin 1/(2n) ||y - b - X c||^2 + alpha ||c||_1`` by cyclic coordinate descent."""
    n, M = X.shape
    xm, ym = X.mean(0), y.mean()
    Xc, yc = X - xm, y - ym
    sq = (Xc ** 2).sum(0) / n
    c = np.zeros(M)
    r = yc.copy()
    for _ in range(iters):
        biggest = 0.0
        for j in range(M):
            if sq[j] == 0.0:
                continue
            old = c[j]
            rho = Xc[:, j] @ r / n + sq[j] * old
            new = np.sign(rho) * max(abs(rho) - alpha, 0.0) / sq[j]
            if new != old:
                r -= Xc[:, j] * (new - old)
                c[j] = new
                biggest = max(biggest, abs(new - old))
        if biggest < tol:
            break
    return c, float(ym - xm @ c)


def context_cite(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    """ContextCite-style surrogate (Cohen-Wang et al. 2024), with eligible tokens as sources.

    Each sample keeps every eligible token independently with probability 1/2 (ablated ones
    removed by the operator, ``delete`` by default); S is rescored on the frozen output and a
    LASSO (alpha = 0.01, sklearn's objective scale, intercept unpenalised) is fitted on the
    keep indicators. The coefficient of a token estimates the score it contributes when present.
    ContextCite regresses the logit of the response probability; here the regression target
    is the contract's S itself (e.g. the span log-prob), so the attributions are in S units.
    """
    p = resolve_params("context_cite", params)
    op = check_operator(problem, p["operator"])
    n = int(p["samples"])  # type: ignore[arg-type]
    M = int(positions(problem).numel())
    if M == 0:
        return _empty(problem, {"samples": 0})
    g = generator(p["_seed"])
    present = torch.rand(n, M, generator=g) < CONTEXT_CITE_KEEP_P            # (n, M)
    y = score_drops(problem, op, coalitions_to_drop(problem, present.to(problem.embeds.device)),
                    None, bool(p["_progress"]), "context_cite").double().cpu().numpy()
    Z = present.double().numpy()
    coef, intercept = lasso(Z, y, CONTEXT_CITE_LASSO_ALPHA)
    pred = intercept + Z @ coef
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    with torch.no_grad():
        s_in = float(problem.objective(problem.embeds.unsqueeze(0))[0])
    return finalize(problem, _scatter(problem, coef), {
        "score_input": s_in, "samples": n, "operator": op, "lasso_alpha": CONTEXT_CITE_LASSO_ALPHA,
        "keep_probability": CONTEXT_CITE_KEEP_P, "intercept": intercept, "r2": r2,
        "nonzero": int((coef != 0).sum()),
    })
