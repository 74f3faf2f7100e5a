"""Gradient methods: saliency, gradient x input, contract-aware Integrated Gradients.

Gradients are taken w.r.t. the input embeddings; rows outside E get exactly zero. IG
interpolates *only* the eligible rows from the operator baseline to the input; the rows
held fixed (C) and special tokens stay at their actual values along the whole path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from scopecheck.engine.methods._common import batch_param, finalize, resolve_params
from scopecheck.runtime.batching import map_batches
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused, Unavailable

Tensor = torch.Tensor

NORMS = ("l2", "l1", "sum")
RULES = ("riemann", "gauss_legendre")


def _grad_at(problem: AttributionProblem, embeds: Tensor) -> tuple[Tensor, Tensor]:
    """S and dS/d(embeds) for a batch ``(B, L, d)`` -> ``(B,)``, ``(B, L, d)``."""
    x = embeds.detach().requires_grad_(True)
    with torch.enable_grad():
        s = problem.objective(x)
        (g,) = torch.autograd.grad(s.sum(), x)
    return s.detach(), g


def saliency(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    p = resolve_params("saliency", params)
    norm = str(p["norm"])
    if norm not in NORMS:
        raise MethodRefused(f"saliency: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    s, g = _grad_at(problem, problem.embeds.unsqueeze(0))
    g = g[0]                                                                  # (L, d)
    if norm == "l2":
        scores = g.norm(dim=-1)
    elif norm == "l1":
        scores = g.abs().sum(-1)
    else:
        scores = g.sum(-1)
    return finalize(problem, scores, {"score_input": s.item(), "norm": norm})


def gradient_x_input(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    resolve_params("gradient_x_input", params)
    s, g = _grad_at(problem, problem.embeds.unsqueeze(0))
    scores = (g[0] * problem.embeds).sum(-1)                                  # (L,)
    return finalize(problem, scores, {"score_input": s.item()})


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``alpha`` in [0, 1] and weights (summing to 1) of the path integral.

    ``riemann`` is the midpoint rule (alpha_k = (k + 1/2) / n, weight 1/n; captum's
    ``riemann_middle``); ``gauss_legendre`` maps ``numpy.polynomial.legendre.leggauss``
    from [-1, 1] to [0, 1] (captum's ``gausslegendre``).
    """
    if rule == "riemann":
        alphas = (np.arange(steps, dtype=np.float64) + 0.5) / steps
        weights = np.full(steps, 1.0 / steps)
    elif rule == "gauss_legendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        alphas, weights = 0.5 * (x + 1.0), 0.5 * w
    else:
        raise MethodRefused(f"integrated_gradients: rule must be one of {', '.join(RULES)}, got {rule!r}")
    return alphas, weights


@dataclass(frozen=True)
class IGPath:
    """The straight-line path of contract-aware IG: only eligible rows move.

    ``x``/``x0``/``diff`` ``(L, d)``; ``alphas``/``weights`` ``(n,)``.
    """

    x: Tensor
    x0: Tensor
    diff: Tensor
    alphas: Tensor
    weights: Tensor
    steps: int
    rule: str
    baseline: str
    batch_size: int | None            # None: memory-aware (start large, halve on out-of-memory)

    def points(self, sl: slice) -> Tensor:
        """Path points ``(b, L, d)`` for the quadrature nodes in ``sl``."""
        return self.x0.unsqueeze(0) + self.alphas[sl].view(-1, 1, 1) * self.diff.unsqueeze(0)


def ig_path(problem: AttributionProblem, p: Mapping[str, object]) -> IGPath:
    steps, rule, batch_size = int(p["steps"]), str(p["rule"]), batch_param(p)  # type: ignore[arg-type]
    base_name = str(p["baseline"])
    if base_name not in problem.operators:
        known = ", ".join(sorted(problem.operators))
        raise Unavailable(f"integrated_gradients: baseline {base_name!r} is not available for this model "
                          f"(IG needs an embedding baseline; available: {known})")
    alphas, weights = quadrature(rule, steps)
    x = problem.embeds                                                        # (L, d)
    elig = problem.eligible.unsqueeze(-1)                                     # (L, 1)
    x0 = torch.where(elig, problem.operators[base_name].to(x), x)            # (L, d) baseline: eligible rows only
    a = torch.as_tensor(alphas, dtype=x.dtype, device=x.device)               # (n,)
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)              # (n,)
    return IGPath(x, x0, x - x0, a, w, steps, rule, base_name, batch_size)


def ig_finish(problem: AttributionProblem, path: IGPath, total: Tensor, s_in: float, s_base: float) -> MethodOutput:
    """The map from ``total`` ``(L, d)`` = sum_k w_k grad S(x_k), with IG's report fields."""
    scores = (path.diff * total).sum(-1)                                      # (L,)
    out = finalize(problem, scores, {})
    delta = float(out.scores.sum()) - (s_in - s_base)
    out.info.update({"score_input": s_in, "score_baseline": s_base, "delta": delta,
                     "steps": path.steps, "rule": path.rule if path.rule != "riemann" else "riemann_midpoint",
                     "baseline": path.baseline})
    if bool((problem.operators[path.baseline][problem.eligible] == 0).all()):
        # e.g. a Llama pad row kept at zero by nn.Embedding(padding_idx): RMSNorm/LayerNorm are
        # discontinuous at the zero vector, so the integrand jumps at alpha = 0 and delta grows
        out.info["warning"] = ("the baseline embedding is the zero vector; normalisation layers are singular "
                               "there, so the path integral may not converge (check delta)")
    return out


def integrated_gradients(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    p = resolve_params("integrated_gradients", params)
    path = ig_path(problem, p)
    def chunk(sl: slice) -> Tensor:                                           # (L, d) this slice's sum_k w_k grad
        _, g = _grad_at(problem, path.points(sl))                             # (b, L, d)
        return (path.weights[sl].view(-1, 1, 1) * g).sum(0)

    total = torch.zeros_like(path.x)                                          # (L, d) sum_k w_k grad(x_k)
    for part in map_batches(chunk, path.steps, path.batch_size, problem=problem, kind="backward",
                            progress=bool(p["_progress"]), desc="integrated_gradients"):
        total = total + part
    with torch.no_grad():
        s = problem.objective(torch.stack([path.x, path.x0]))                 # (2,)
    return ig_finish(problem, path, total, float(s[0]), float(s[1]))
