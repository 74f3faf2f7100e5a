"""Sanity checks: max-sensitivity, model randomization, completeness, eligibility.

* max_sensitivity (Yeh et al. 2019, relative form as captum's ``sensitivity_max``): each
  sample adds ``δ_i = radius · ||e_i||₂ · u_i / sqrt(d)``, ``u_i ~ U[−1, 1]^d``, to every eligible
  embedding ``e_i`` (so ``||δ_i||₂ <= radius · ||e_i||₂``; nothing outside E moves), reruns the
  same method with the same parameters and seed, and takes
  ``max_samples ||a(x + δ) − a(x)||₂ / ||a(x)||₂`` over the eligible positions.
* randomization (Adebayo et al. 2018, model-parameter randomization): a deep copy of the model
  is re-initialised under a fixed seed (``init_weights()``; where that leaves the weights
  unchanged, as for loaded transformers-5 models, ``_init_weights`` per module, else
  ``reset_parameters``); ``layers = top`` re-initialises only the last block and the output
  head (the first step of Adebayo's cascade). The problem is rebuilt with
  ``causal_lm_problem`` on the same ids, eligible set, targets, score and operator tokens;
  the same method reruns with the same parameters and seed; Spearman and Kendall (scipy)
  between the two maps over the eligible positions (signed scores; absolute-value
  correlations in ``extra``). Lower means the map depends on what the model learned.
* completeness: ``delta = sum_i a_i − (S(input) − S(baseline))`` from the method's reported
  ``score_input`` / ``score_baseline``; ``passed = |delta| <= tolerance``. A method that reports
  no baseline score fails with a note.
* eligibility: ``outside_mass = sum_{i not in E} |a_i|``; ``passed`` iff exactly 0.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from scopecheck.checks.context import setup
from scopecheck.checks.params import as_float, as_int
from scopecheck.checks.result import CheckResult
from scopecheck.engine.methods import run_method
from scopecheck.errors import ContractError

if TYPE_CHECKING:
    from scopecheck.engine.compiled import CompiledContract
    from scopecheck.engine.result import AttributionResult
    from scopecheck.engine.problem import AttributionProblem


def _rerun(result: AttributionResult, problem: Any) -> torch.Tensor:
    out = run_method(result.method, problem, dict(result.method_params), seed=result.seed)
    return out.scores.detach().to("cpu", torch.float64)


def max_sensitivity(result: AttributionResult, params: Mapping[str, object] | None = None, *,
                    ranking: Sequence[int] | None = None, seed: int = 0) -> CheckResult:
    """Max-sensitivity: ``max_s ||a(x + δ_s) − a(x)||₂ / ||a(x)||₂`` over eligible positions, with
    ``δ_s`` uniform noise of ``radius`` times each eligible embedding's norm (``samples`` draws);
    the method is rerun with its own parameters and seed. Lower is better."""
    ctx = setup("max_sensitivity", result, params, ranking=ranking, seed=seed)
    if ctx.compiled.stage_features:
        raise ContractError("max_sensitivity perturbs feature embeddings, and denoising stages have none",
                            rule="protocol", expected="deletion, insertion or comprehensiveness with a stage perturbation")
    radius = as_float("max_sensitivity", "radius", ctx.params["radius"])
    n = as_int("max_sensitivity", "samples", ctx.params["samples"])
    problem = ctx.problem
    E = list(ctx.compiled.eligible)
    base = torch.tensor(result.scores, dtype=torch.float64)[E]
    denom = float(base.norm())
    emb = problem.embeds
    d = emb.shape[-1]
    g = torch.Generator().manual_seed(int(seed))
    rel, noises = [], []
    for _ in range(n):
        u = torch.rand(len(E), d, generator=g, dtype=torch.float64) * 2 - 1
        scale = emb[E].detach().to("cpu", torch.float64).norm(dim=-1, keepdim=True) * radius / math.sqrt(d)
        delta = (u * scale).to(emb.dtype)
        noises.append(delta)
        new = emb.detach().clone()
        new[E] = new[E] + delta.to(emb.device)
        a = _rerun(result, dataclasses.replace(problem, embeds=new))[E]
        rel.append(float((a - base).norm()) / denom if denom > 0 else float("nan"))
    note = "" if denom > 0 else "max_sensitivity undefined: the map is zero on every eligible position"
    value = max(rel) if rel and denom > 0 else float("nan")
    return ctx.make({"value": value}, curve=rel, note=note, extra={"noise": noises, "positions": E},
                    operator=None, samples=n, radius=radius,
                    perturbation="uniform noise, ||delta_i|| <= radius * ||e_i|| on eligible embeddings")


# --------------------------------------------------------------------------- randomization


def _blocks(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return max(lists, key=len) if lists else None


def _top_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The last block and everything after it: the output head and final norm."""
    mods: list[torch.nn.Module] = []
    blocks = _blocks(model)
    if blocks is not None and len(blocks):
        mods.extend(blocks[-1].modules())
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        mods.append(head)
    inner = getattr(model, "model", None)
    norm = getattr(inner, "norm", None) if inner is not None else None
    if isinstance(norm, torch.nn.Module):
        mods.append(norm)
    return mods


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> int:
    return sum(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


def randomize_model(model: torch.nn.Module, seed: int, layers: str = "all") -> tuple[torch.nn.Module, str, int]:
    """A re-initialised deep copy of ``model`` (the original is untouched): (copy, how, tensors changed)."""
    rnd = copy.deepcopy(model)
    before = _snapshot(rnd)
    how = ""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if layers == "all" and hasattr(rnd, "init_weights"):
            try:
                rnd.init_weights()
                how = "init_weights()"
            except Exception:  # pragma: no cover - model specific
                pass
        mods = list(rnd.modules()) if layers == "all" else _top_modules(rnd)
        if _changed(rnd, before) == 0 and hasattr(rnd, "_init_weights"):
            torch.manual_seed(int(seed))
            with torch.no_grad():
                for m in mods:
                    rnd._init_weights(m)
            how = "_init_weights per module"
        if _changed(rnd, before) == 0:
            torch.manual_seed(int(seed))
            with torch.no_grad():
                for m in mods:
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
            how = "reset_parameters per module"
        if _changed(rnd, before) == 0:
            torch.manual_seed(int(seed))
            with torch.no_grad():
                for m in mods:
                    for p in m.parameters(recurse=False):
                        if p.dim() >= 2:
                            p.normal_(0.0, 0.02)
            how = "normal(0, 0.02) on weight matrices"
    changed = _changed(rnd, before)
    if changed == 0:
        raise RuntimeError("randomization: re-initialising the model changed no weight")
    rnd.eval()
    return rnd, how, changed


def randomized_problem(compiled: CompiledContract, model: torch.nn.Module) -> AttributionProblem:
    """The compiled problem on the re-initialised ``model`` (a diffusion contract keeps its reads
    and recorded chain; the weights are the other model's)."""
    return compiled.with_model(model)


def rank_correlations(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, str]:
    """Spearman and Kendall (scipy.stats); NaN with a note when a map is constant."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2:
        return float("nan"), float("nan"), "fewer than two common features: rank correlation undefined"
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan"), float("nan"), "a map is constant over the common features: rank correlation undefined"
    return float(stats.spearmanr(a, b).statistic), float(stats.kendalltau(a, b).statistic), ""


def randomization(result: AttributionResult, params: Mapping[str, object] | None = None, *,
                  ranking: Sequence[int] | None = None, seed: int = 0) -> CheckResult:
    """Model-parameter randomization (Adebayo et al. 2018): Spearman and Kendall between the map
    and the same method's map on a re-initialised copy of the model (same ids, eligible set,
    targets, parameters and seed), over the eligible positions. Lower is better."""
    ctx = setup("randomization", result, params, ranking=ranking, seed=seed)
    layers = str(ctx.params["layers"])
    if layers not in ("all", "top"):
        raise ValueError(f"randomization: layers={layers!r} must be all or top")
    model = getattr(ctx.problem.objective, "model", None)
    if model is None:
        raise ValueError("randomization: the compiled problem exposes no model to re-initialise")
    rnd, how, changed = randomize_model(model, seed, layers)
    problem = randomized_problem(ctx.compiled, rnd)
    other = _rerun(result, problem)
    E = list(ctx.compiled.eligible)
    mine = ctx.values[E].tolist()
    theirs = other[E].tolist()
    rho, tau, note = rank_correlations(mine, theirs)
    rho_abs, tau_abs, _ = rank_correlations([abs(v) for v in mine], [abs(v) for v in theirs])
    return ctx.make({"spearman": rho, "kendall": tau}, curve=theirs, note=note,
                    extra={"positions": E, "map": mine, "randomized_map": theirs, "spearman_abs": rho_abs,
                           "kendall_abs": tau_abs, "tensors_reinitialized": changed},
                    operator=None, layers=layers, reinit=how, reinit_seed=seed)


# --------------------------------------------------------------------------- completeness / eligibility


def completeness(result: AttributionResult, params: Mapping[str, object] | None = None, *,
                 ranking: Sequence[int] | None = None, seed: int = 0) -> CheckResult:
    """Completeness: ``delta = sum_i a_i − (S(input) − S(baseline))`` with the scores the method
    reports; ``passed = |delta| <= tolerance``; fails with a note when no baseline score exists."""
    ctx = setup("completeness", result, params, ranking=ranking, seed=seed)
    tol = as_float("completeness", "tolerance", ctx.params["tolerance"])
    total = float(sum(result.scores))
    s_in, s_base = result.score_input, result.score_baseline
    if s_in is None or s_base is None:
        which = "score_baseline" if s_in is not None else "score_input"
        return ctx.make({"delta": float("nan"), "abs_delta": float("nan")}, passed=False,
                        note=f"completeness cannot be checked: method {result.method} reports no {which} "
                             "(S(baseline)); it is defined for baseline-path methods such as integrated_gradients",
                        extra={"sum": total}, operator=result.operator, tolerance=tol)
    delta = total - (float(s_in) - float(s_base))
    ok = abs(delta) <= tol
    note = "" if ok else f"|delta| = {abs(delta):.3g} exceeds the tolerance {tol:g}"
    return ctx.make({"delta": delta, "abs_delta": abs(delta)}, curve=(total, float(s_in), float(s_base)), passed=ok,
                    note=note, extra={"sum": total, "score_input": float(s_in), "score_baseline": float(s_base)},
                    operator=result.operator, tolerance=tol)


def eligibility(result: AttributionResult, params: Mapping[str, object] | None = None, *,
                ranking: Sequence[int] | None = None, seed: int = 0) -> CheckResult:
    """Eligibility: ``outside_mass = sum_{i not in E} |a_i|``; passed iff exactly 0."""
    ctx = setup("eligibility", result, params, ranking=ranking, seed=seed)
    eligible = set(ctx.compiled.eligible)
    outside = [(t.position, t.score) for t in result.tokens if t.position not in eligible]
    mass = float(sum(abs(s) for _, s in outside))
    offending = [p for p, s in outside if s != 0]
    ok = mass == 0.0
    note = "" if ok else f"attribution outside E at positions {offending}"
    return ctx.make({"outside_mass": mass}, curve=[s for _, s in outside], passed=ok, note=note,
                    extra={"offending": offending}, operator=None)


__all__ = ["completeness", "eligibility", "max_sensitivity", "randomization", "randomize_model", "rank_correlations"]
