"""Faithfulness checks, run by the protocol the contract requires (DESIGN section 4; seed 000, section 5).

Every check is ``fn(result, params, *, ranking=None, seed=0) -> CheckResult``. All current
contracts (classifier and the autoregressive ones) use the ``rescore`` protocol: eligible
positions only are perturbed, through :meth:`AttributionProblem.replace` (which refuses
anything outside E), and the *frozen* output is rescored with ``problem.objective``. Nothing
here ever calls ``model.generate``: under ``span_prompt`` the original ``y[1:T]`` is rescored,
never regenerated (a regenerating evaluation would test ``prompt_to_output``).

Notation. ``F`` = the perturbable features (eligible positions, restricted to the requested
``perturb`` group), ``E = |F|``; ``S`` = the contract's score (the objective: a log-prob, a
span log-prob, a logit...) in its own units, never re-normalised; ``S(x \\ A)`` = S with the
features in ``A`` replaced by the operator (``pad``/``mask``/``unk``/``zero``/``mean``) or
removed (``delete``). The map's ranking orders ``F`` by signed attribution, highest first,
ties by position (as :meth:`AttributionResult.ranking`). A ``ranking`` argument overrides it
(a list of eligible positions, most important first; features it omits follow in the map's
order); the map's *values* are then re-assigned by rank (the i-th largest value goes to the
i-th ranked position), so value-based checks (Soft-NC/NS, infidelity, DSA) see the same
value distribution in the new order. This is how ``random`` baselines and "deliberately
wrong map" tests are run.

Definitions (each function's docstring repeats its own):

* deletion: curve ``S(x \\ top-k)`` for ``k`` on the grid (every ``k = 0..E``, or ``steps``
  evenly spaced counts ``round(j E / steps)``, ``j = 0..steps``); ``aopc = mean_k [S(x) −
  S(x \\ top-k)]`` with ``k = 0`` included (Samek et al. 2017: ``1/(L+1) sum_{k=0}^{L}``);
  ``auc`` = trapezoid of the raw ``S`` curve over the fraction removed ``k/E``;
  ``naopc = (aopc − lower) / (upper − lower)`` (Edin et al. 2025) where upper/lower are the
  max/min AOPC over *all* orderings of ``F`` on the same grid: exact (dynamic programming over
  all ``2^E`` subsets, equivalent to exhaustive search over the ``E!`` orderings) when
  ``E <= EXHAUSTIVE_MAX`` (8), else approximated by beam search of width ``BEAM_WIDTH`` (5), as
  Edin et al. do for long inputs; approximate bounds are widened to include the map's own
  AOPC, so ``naopc`` stays in ``[0, 1]``; ``config['naopc_bounds']`` says which was used.
* insertion: from ``x_∅`` (all of ``F`` perturbed) insert the top-k: curve ``S(x_∅ + top-k)``;
  ``aopc = mean_k [S(x_∅ + top-k) − S(x_∅)]``; ``auc`` trapezoid over fraction inserted;
  ``naopc`` as above on the insertion gains.
* comprehensiveness ``= S(x) − S(x \\ top-k)``; sufficiency ``= S(x) − S(top-k only)``
  (DeYoung et al. 2020, ERASER), ``k`` a fraction of ``E`` (``ceil(k E)``, at least 1) or a count.
* soft_nc / soft_ns (Zhao & Aletras 2023, as ReAGent adapts them to generation): importance
  normalised to ``α ∈ [0, 1]`` by min–max over ``F``; ``samples`` Bernoulli token masks;
  Soft-NC drops feature ``i`` with probability ``α_i`` (keeps with ``1 − α_i``), Soft-NS keeps it
  with probability ``α_i``. With ``d(x') = max(0, S(x) − S(x'))`` and the full-removal change
  ``D0 = d(x_∅)``: ``Soft-NC = mean_m d(x_m) / D0`` and ``Soft-NS = max(0, D0 − mean_m d(x_m)) / D0``
  (ReAGent's ``clamp(soft_suff − suff_0, 0) / (1 − suff_0)`` with ``suff = 1 − d``). Measured on
  the contract's ``S`` (ReAGent uses a distance between next-token distributions; the
  contract fixes the measure here). Undefined (NaN, with a note) when ``D0 = 0``.
* infidelity (Yeh et al. 2019): ``E_I[(Iᵀa − (S(x) − S(x \\ I)))²]`` with ``I`` uniform random
  binary masks over ``F`` (each feature in with probability 1/2), not normalised (captum's
  ``normalize=False``); the masks are returned in ``extra['masks']``.

Around the checks: their parameters are coerced by :mod:`~scopecheck.checks.params`, their context
(:class:`~scopecheck.checks.context.Ctx`) built by :mod:`~scopecheck.checks.context`, the curves'
grid and NAOPC bounds are :mod:`~scopecheck.checks.curves`', the per-contract row cache and the
accounting of a check's work :mod:`~scopecheck.checks.rowcache`'s, and the rows a check will score
are planned by :mod:`~scopecheck.checks.plan`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from scopecheck.checks.context import Ctx, setup
from scopecheck.checks.curves import curve_sets, curve_steps, grid, naopc_of, shared_bounds, trapezoid, wants_naopc
from scopecheck.checks.params import as_int, k_count
from scopecheck.checks.result import CheckResult

Tensor = torch.Tensor


def _curve_check(name: str, mode: str, result: Any, params: Mapping[str, object] | None, ranking, seed: int,
                 fields: Sequence[str] | None = None) -> CheckResult:
    ctx = setup(name, result, params, ranking=ranking, seed=seed)
    steps = curve_steps(ctx)
    E = ctx.E
    ks = grid(E, steps)
    r = ctx.ranking
    curve = ctx.score_sets(curve_sets(ctx, mode, ks)).tolist()
    if mode == "deletion":
        ref = curve[0]                                    # S(x): nothing removed
        gains = [ref - c for c in curve]
    else:
        ref = curve[0]                                    # S(x_∅): nothing inserted
        gains = [c - ref for c in curve]
    aopc = float(np.mean(gains))
    fractions = [k / E for k in ks]
    auc = trapezoid(curve, fractions)
    out = {"aopc": aopc, "auc": auc}
    if "auc" not in ctx.info.fields:
        out.pop("auc")
    note = ""
    bounds: dict[str, Any] = {}
    if wants_naopc(fields):
        lower, upper, how, evals, bound_changed = shared_bounds(ctx, ks, mode)
        out["naopc"], lower, upper, note = naopc_of(aopc, lower, upper, how)
        bounds = {"aopc_lower": lower, "aopc_upper": upper, "bound_evaluations": evals,
                  **({"bound_changed_rate": sum(bound_changed) / len(bound_changed) if bound_changed else 0.0}
                     if ctx.protocol.then != "rescore" else {})}
    else:
        how = "not computed (no expectation asks for naopc)"
    return ctx.make(out, curve=curve, note=note, skip=() if wants_naopc(fields) else ("naopc",),
                    extra={"k": ks, "fractions": fractions, "ranking": list(r), "gains": gains, **bounds,
                           **({"changed": f"{sum(ctx.changed_flags)} of {len(ctx.changed_flags)} perturbed curve "
                                          "points"} if ctx.protocol.then != "rescore" else {}),
                           "score_input" if mode == "deletion" else "score_empty": ref},
                    steps=steps if steps is not None else E, naopc_bounds=how, mode=mode,
                    normalization="raw S (the contract's score); aopc includes k = 0")


def deletion(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
             seed: int = 0, fields: Sequence[str] | None = None) -> CheckResult:
    """Deletion curve (Samek et al. 2017; Edin et al. 2025).

    Remove features most-important-first; curve ``S(x \\ top-k)`` for ``k`` on the grid (every
    feature, or ``steps`` evenly spaced counts). ``aopc = mean_k [S(x) − S(x \\ top-k)]`` (k = 0
    included); ``auc`` = trapezoid of the raw S curve over the fraction removed (lower is
    better); ``naopc = (aopc − min) / (max − min)`` over all orderings (exact for E <= 8, beam
    search beyond).
    """
    return _curve_check("deletion", "deletion", result, params, ranking, seed, fields)


def insertion(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
              seed: int = 0, fields: Sequence[str] | None = None) -> CheckResult:
    """Insertion curve: from ``x_∅`` (every feature perturbed) insert features most-important
    first; ``aopc = mean_k [S(x_∅ + top-k) − S(x_∅)]`` (k = 0 included); ``auc`` trapezoid of
    the raw S curve over the fraction inserted (higher is better); ``naopc`` as for deletion.
    """
    return _curve_check("insertion", "insertion", result, params, ranking, seed, fields)


def aopc(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
         seed: int = 0, fields: Sequence[str] | None = None) -> CheckResult:
    """AOPC of the deletion curve over every feature, ``1/(E+1) sum_{k=0}^{E} [S(x) − S(x \\ top-k)]``
    (Samek et al. 2017), and NAOPC (Edin et al. 2025; exact bounds for E <= 8, beam beyond)."""
    return _curve_check("aopc", "deletion", result, params, ranking, seed, fields)


def comprehensiveness(result: Any, params: Mapping[str, object] | None = None, *,
                      ranking: Sequence[int] | None = None, seed: int = 0) -> CheckResult:
    """Comprehensiveness (DeYoung et al. 2020): ``S(x) − S(x \\ top-k)``; ``k`` a fraction of E
    (``ceil(k E)``, at least 1) or a count. Higher is better."""
    ctx = setup("comprehensiveness", result, params, ranking=ranking, seed=seed)
    n = k_count("comprehensiveness", ctx.params["k"], ctx.E)
    top = ctx.ranking[:n]
    s = ctx.score_sets([[], top]).tolist()
    return ctx.make({"value": s[0] - s[1]}, curve=s, extra={"top": top, "score_input": s[0], "score_removed": s[1]},
                    k=ctx.params["k"], k_count=n)


def sufficiency(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
                seed: int = 0) -> CheckResult:
    """Sufficiency (DeYoung et al. 2020): ``S(x) − S(top-k only)``, every other feature of F
    perturbed; ``k`` as for comprehensiveness. Lower is better."""
    ctx = setup("sufficiency", result, params, ranking=ranking, seed=seed)
    n = k_count("sufficiency", ctx.params["k"], ctx.E)
    top = ctx.ranking[:n]
    rest = ctx.ranking[n:]
    s = ctx.score_sets([[], rest]).tolist()
    return ctx.make({"value": s[0] - s[1]}, curve=s, extra={"top": top, "score_input": s[0], "score_kept": s[1]},
                    k=ctx.params["k"], k_count=n)


def normalized_importance(ctx: Ctx) -> Tensor:
    """``α`` over F: min–max normalised signed attribution in [0, 1] (0.5 everywhere for a flat map)."""
    v = ctx.values[ctx.features]
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        return torch.full_like(v, 0.5)
    return (v - lo) / (hi - lo)


def soft_masks(ctx: Ctx) -> tuple[int, Tensor, Tensor]:
    """``(samples, keep probability (E,), kept masks (samples, E))`` of Soft-NC / Soft-NS: Soft-NC
    keeps feature i with probability ``1 − α_i``, Soft-NS with ``α_i``; seeded with the check's seed."""
    n = as_int(ctx.name, "samples", ctx.params["samples"])
    alpha = normalized_importance(ctx)                                   # (E,)
    keep_p = 1.0 - alpha if ctx.name == "soft_nc" else alpha
    g = torch.Generator().manual_seed(int(ctx.seed))
    u = torch.rand(n, ctx.E, generator=g, dtype=torch.float64)
    return n, keep_p, u < keep_p.unsqueeze(0)                            # (n, E)


def _soft(name: str, result: Any, params, ranking, seed: int) -> CheckResult:
    ctx = setup(name, result, params, ranking=ranking, seed=seed)
    n, keep_p, kept = soft_masks(ctx)
    s = ctx.score_drops(ctx.drop_from_masks(~kept))
    s_x, s_empty = ctx.s_x, ctx.s_empty()
    d = torch.clamp(s_x - s, min=0.0)
    d0 = max(0.0, s_x - s_empty)
    note = ""
    if d0 <= 0:
        value = float("nan")
        note = (f"{name} undefined: perturbing every feature does not lower S (S(x) = {s_x:.6g}, "
                f"S(x_∅) = {s_empty:.6g})")
    elif name == "soft_nc":
        value = float(d.mean()) / d0
    else:
        value = max(0.0, d0 - float(d.mean())) / d0
    return ctx.make({"value": value}, curve=s.tolist(), note=note,
                    extra={"keep_probability": keep_p.tolist(), "masks_kept": kept.tolist(), "drops": d.tolist(),
                           "score_input": s_x, "score_empty": s_empty, "full_removal_change": d0},
                    samples=n, normalization="alpha = min-max of signed attribution over F; d = max(0, S(x) - S(x')); "
                                             "divided by d(x_∅)")


def soft_nc(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
            seed: int = 0) -> CheckResult:
    """Soft normalised comprehensiveness (Zhao & Aletras 2023; ReAGent's generative form):
    feature i dropped with probability ``α_i`` (min–max normalised attribution), ``samples``
    masks; ``mean_m max(0, S(x) − S(x_m)) / max(0, S(x) − S(x_∅))``. Higher is better."""
    return _soft("soft_nc", result, params, ranking, seed)


def soft_ns(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
            seed: int = 0) -> CheckResult:
    """Soft normalised sufficiency (Zhao & Aletras 2023; ReAGent's generative form): feature i
    kept with probability ``α_i``; ``max(0, D0 − mean_m max(0, S(x) − S(x_m))) / D0`` with
    ``D0 = max(0, S(x) − S(x_∅))``. Higher is better."""
    return _soft("soft_ns", result, params, ranking, seed)


def infidelity_masks(E: int, samples: int, seed: int) -> Tensor:
    """Uniform random binary masks ``(samples, E)`` (True = perturbed), each feature with p = 1/2."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.rand(samples, E, generator=g, dtype=torch.float64) < 0.5


def infidelity(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
               seed: int = 0) -> CheckResult:
    """Infidelity (Yeh et al. 2019): ``E_I[(Iᵀa − (S(x) − S(x \\ I)))²]`` over ``samples`` uniform
    random binary masks ``I`` of the eligible features (a feature in ``I`` is replaced by the
    operator). Not normalised (captum ``normalize=False``). Lower is better."""
    ctx = setup("infidelity", result, params, ranking=ranking, seed=seed)
    n = as_int("infidelity", "samples", ctx.params["samples"])
    masks = infidelity_masks(ctx.E, n, seed)                              # (n, E)
    a = ctx.values[ctx.features]                                          # (E,)
    s = ctx.score_drops(ctx.drop_from_masks(masks))
    predicted = (masks.to(torch.float64) * a.unsqueeze(0)).sum(-1)
    actual = ctx.s_x - s
    err = (predicted - actual) ** 2
    return ctx.make({"value": float(err.mean())}, curve=err.tolist(),
                    extra={"masks": masks.tolist(), "predicted": predicted.tolist(), "actual": actual.tolist(),
                           "features": list(ctx.features), "score_input": ctx.s_x},
                    samples=n, perturbation="uniform random binary masks over the eligible features (p = 1/2)",
                    normalize=False)


__all__ = ["aopc", "comprehensiveness", "deletion", "infidelity", "infidelity_masks", "insertion",
           "normalized_importance", "soft_masks", "soft_nc", "soft_ns", "sufficiency"]
