"""Shared plumbing for the attribution methods: parameters, batching, masking, RNG."""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import torch

from scopecheck.engine import catalog
from scopecheck.engine.problem import AttributionProblem, MethodOutput

Tensor = torch.Tensor

#: Batch size for methods whose catalog entry declares no ``batch_size`` parameter.
INTERNAL_BATCH = 32

#: Keys ``run_method`` adds to the parameter mapping (never user parameters).
RESERVED = ("_seed", "_progress")

#: Defaults of every declared parameter, by method (must match ``catalog.METHODS``).
DEFAULTS: dict[str, dict[str, object]] = {
    "saliency": {"norm": "l2"},
    "gradient_x_input": {},
    "integrated_gradients": {"steps": 64, "rule": "gauss_legendre", "baseline": "pad", "batch_size": 32},
    "occlusion": {"operator": "pad", "batch_size": 32},
    "lime": {"samples": 500, "operator": "pad", "kernel_width": 0.75, "batch_size": 32},
    "kernel_shap": {"samples": 2048, "operator": "pad", "batch_size": 64},
    "exact_shapley": {"operator": "pad", "batch_size": 64},
    "attention_rollout": {"residual": True},
    "reagent": {"steps": 50, "ratio": 0.3},
    "context_cite": {"samples": 256, "operator": "delete"},
    "probabilistic_as": {"top_p": 1.0},
    "heta": {"beta": 0.5, "gamma": 0.5, "probes": 8},
    "stage_perturbation": {"perturbation": "noop", "shift": 1, "substitute": "second_best"},
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(method: str, key: str, value: object, default: object) -> object:
    bad = ValueError(f"{method}: parameter {key}={value!r} must be {type(default).__name__} "
                     f"({catalog.METHODS[method].params.get(key, '')})")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise bad
    if isinstance(default, int):
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if isinstance(default, float):
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad
        return value
    return value  # pragma: no cover


def resolve_params(method: str, params: Mapping[str, object] | None) -> dict[str, object]:
    """Declared defaults overridden by ``params``; unknown names raise ``ValueError``."""
    params = dict(params or {})
    declared = catalog.METHODS[method].params
    unknown = sorted(k for k in params if k not in declared and k not in RESERVED)
    if unknown:
        listed = ", ".join(f"{k} ({v})" for k, v in declared.items()) or "none"
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for method {method!r}; "
                         f"declared parameters: {listed}")
    out: dict[str, object] = dict(DEFAULTS[method])
    for key, value in params.items():
        if key in RESERVED:
            out[key] = value
        else:
            out[key] = _coerce(method, key, value, DEFAULTS[method][key])
    out.setdefault("_seed", 0)
    out.setdefault("_progress", False)
    for key in ("steps", "samples", "batch_size", "probes"):
        if key in out and int(out[key]) < 1:  # type: ignore[arg-type]
            raise ValueError(f"{method}: parameter {key} must be >= 1, got {out[key]}")
    return out


def generator(seed: object) -> torch.Generator:
    """A CPU generator (results do not depend on the device the model runs on)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))  # type: ignore[arg-type]
    return g


def batches(n: int, size: int, progress: bool = False, desc: str = "") -> Iterator[slice]:
    starts: Iterable[int] = range(0, n, size)
    if progress:
        try:
            from tqdm.auto import tqdm
            starts = tqdm(list(starts), desc=desc, unit="batch", leave=False)
        except ImportError:  # pragma: no cover
            pass
    for s in starts:
        yield slice(s, min(n, s + size))


def finalize(problem: AttributionProblem, scores: Tensor, info: Mapping[str, object]) -> MethodOutput:
    """Exact zeros outside E; info values as plain floats / ints / strings."""
    scores = scores.detach().to(problem.embeds.dtype)
    zero = torch.zeros_like(scores)
    scores = torch.where(problem.eligible.to(scores.device), scores, zero)
    clean: dict[str, float | int | str] = {}
    for k, v in info.items():
        if isinstance(v, Tensor):
            v = v.item()
        if isinstance(v, bool):
            v = int(v)
        clean[k] = v  # type: ignore[assignment]
    return MethodOutput(scores=scores, info=clean)


def positions(problem: AttributionProblem) -> Tensor:
    """Eligible positions ``(M,)`` int64."""
    return torch.nonzero(problem.eligible).flatten()


def coalitions_to_drop(problem: AttributionProblem, present: Tensor) -> Tensor:
    """Coalitions over eligible features ``(N, M)`` bool (True = kept at its actual value)
    -> drop masks ``(N, L)`` bool (True = perturbed)."""
    pos = positions(problem).to(present.device)
    drop = torch.zeros(present.shape[0], problem.length, dtype=torch.bool, device=present.device)
    drop[:, pos] = ~present
    return drop


def check_operator(problem: AttributionProblem, operator: object) -> str:
    op = str(operator)
    if op != "delete" and op not in problem.operators:
        known = ", ".join(sorted([*problem.operators, "delete"]))
        raise KeyError(f"unknown or unavailable perturbation operator {op!r}; available for this model: {known}")
    return op


@torch.no_grad()
def score_drops(problem: AttributionProblem, operator: str, drop: Tensor, batch_size: int,
                progress: bool = False, desc: str = "") -> Tensor:
    """S for each drop mask ``(N, L)`` -> ``(N,)``; batched, never perturbs outside E."""
    drop = drop.to(problem.embeds.device)
    out = []
    for sl in batches(drop.shape[0], batch_size, progress, desc):
        embeds, keep = problem.replace(operator, drop[sl])
        out.append(problem.objective(embeds, keep).detach())
    if not out:
        return torch.zeros(0, dtype=problem.embeds.dtype, device=problem.embeds.device)
    return torch.cat(out)


@torch.no_grad()
def score_input(problem: AttributionProblem) -> float:
    return float(problem.objective(problem.embeds.unsqueeze(0)).item())


def score_all_dropped(problem: AttributionProblem, operator: str) -> float:
    drop = problem.eligible.unsqueeze(0).clone()
    return float(score_drops(problem, operator, drop, 1).item())
