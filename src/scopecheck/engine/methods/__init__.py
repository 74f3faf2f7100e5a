"""Attribution method implementations, registered against the names in ``catalog.METHODS``.

``METHOD_IMPLS[name](problem, params) -> MethodOutput``. The submodules (``gradients``,
``perturbation``, ``surrogate``, ``rollout``, ``reagent``, ``probabilistic``, ``heta``) hold
the implementations; only the registry is exported here, so ``methods.heta`` is the module. Every method scores exactly zero
outside ``problem.eligible``, never perturbs or interpolates a non-eligible position, batches
its model evaluations and is deterministic given ``params['_seed']`` (set by
:func:`run_method`; 0 when called directly).

``stage_perturbation`` (denoising-stage contracts) runs on the stage problem built by
``scopecheck.engine.diffusion``.

Methods without a declared ``batch_size`` parameter (``reagent``, ``context_cite``,
``probabilistic_as``, ``heta``) batch with ``INTERNAL_BATCH`` (32) evaluations.
"""

from __future__ import annotations

from typing import Callable, Mapping

from scopecheck.engine import catalog
from scopecheck.engine.methods._common import DEFAULTS, INTERNAL_BATCH, resolve_params
from scopecheck.engine.methods import gradients, heta, perturbation, probabilistic, reagent, rollout, stages, surrogate
from scopecheck.engine.problem import AttributionProblem, MethodOutput

MethodImpl = Callable[[AttributionProblem, Mapping[str, object]], MethodOutput]

METHOD_IMPLS: dict[str, MethodImpl] = {
    "saliency": gradients.saliency,
    "gradient_x_input": gradients.gradient_x_input,
    "integrated_gradients": gradients.integrated_gradients,
    "occlusion": perturbation.occlusion,
    "lime": surrogate.lime,
    "kernel_shap": surrogate.kernel_shap,
    "exact_shapley": perturbation.exact_shapley,
    "attention_rollout": rollout.attention_rollout,
    "reagent": reagent.reagent,
    "context_cite": surrogate.context_cite,
    "probabilistic_as": probabilistic.probabilistic_as,
    "heta": heta.heta,
    "stage_perturbation": stages.stage_perturbation,
}

def resolve_method(name: str) -> str:
    """Canonical method name (aliases resolved); ``KeyError`` listing what is available."""
    canonical = catalog.METHOD_ALIASES.get(name, name)
    if canonical not in METHOD_IMPLS:
        available = ", ".join(sorted(METHOD_IMPLS))
        aliases = ", ".join(f"{a} -> {t}" for a, t in sorted(catalog.METHOD_ALIASES.items()))
        raise KeyError(f"method {name!r} is not a known attribution method; available: {available} "
                       f"(aliases: {aliases})")
    return canonical


def run_method(name: str, problem: AttributionProblem, params: Mapping[str, object] | None = None, *,
               seed: int = 0, progress: bool = False) -> MethodOutput:
    """Run method ``name`` (or an alias) on ``problem``.

    Unknown parameter names raise ``ValueError`` listing the method's declared parameters;
    declared ones are type-checked and defaulted from the catalog's defaults.
    """
    canonical, resolved = prepare(name, params, seed, progress)
    out = METHOD_IMPLS[canonical](problem, resolved)
    out.info.setdefault("method", canonical)
    out.info.setdefault("seed", int(seed))
    return out


def prepare(name: str, params: Mapping[str, object] | None, seed: int, progress: bool) -> tuple[str, dict[str, object]]:
    """The canonical method name and its resolved parameters (user names starting with ``_``
    refused; declared ones checked and defaulted; ``_seed`` and ``_progress`` added)."""
    canonical = resolve_method(name)
    params = dict(params or {})
    reserved = [k for k in params if k.startswith("_")]
    if reserved:
        raise ValueError(f"parameter names starting with '_' are reserved: {', '.join(reserved)}")
    resolved = resolve_params(canonical, params)
    resolved["_seed"] = int(seed)
    resolved["_progress"] = bool(progress)
    return canonical, resolved


__all__ = ["DEFAULTS", "INTERNAL_BATCH", "METHOD_IMPLS", "MethodImpl", "prepare", "resolve_method",
           "run_method"]
