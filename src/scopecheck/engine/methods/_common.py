"""Shared plumbing for the attribution methods: parameters, masking, scoring drop masks, RNG.

Progress and memory-aware batching are :mod:`scopecheck.runtime`'s."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused, Unavailable
from scopecheck.runtime.batching import map_batches
from scopecheck.runtime.progress import FALSE_WORDS, TRUE_WORDS
from scopecheck.spec.registry import ParamSpec, get_method

Tensor = torch.Tensor

#: Keys ``run_method`` adds to the parameter mapping (never user parameters).
RESERVED = ("_seed", "_progress", "_batch_auto", "_given")


def _coerce(method: str, key: str, value: object, spec: ParamSpec) -> object:
    """``value`` as the Python type of ``spec`` (a string spelling of it accepted); ``ValueError``
    naming the parameter and what it must be otherwise. Ranges are the validator's."""
    bad = MethodRefused(f"{method}: parameter {key}={value!r} must be {spec.type_name} ({spec.summary()})")
    if value is None and spec.default is None:
        return None      # "the engine chooses" (a resolved mapping resolved again keeps it)
    kind = spec.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in TRUE_WORDS | FALSE_WORDS:
            return value.lower() in TRUE_WORDS
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise bad
    if kind == "int":
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
    if kind == "float":
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
    if kind == "choice":
        if not isinstance(value, str):
            raise bad
        return value
    return value   # any | selector | count_or_fraction: passed as given


def resolve_params(method: str, params: Mapping[str, object] | None) -> dict[str, object]:
    """The registry's defaults overridden by ``params``; unknown names raise ``ValueError``.
    A default of ``None`` means the method chooses (heta's adaptive ``probes``, a memory-aware
    ``batch_size``)."""
    params = dict(params or {})
    declared = get_method(method).params
    unknown = sorted(k for k in params if k not in declared and k not in RESERVED)
    if unknown:
        listed = ", ".join(f"{k} ({v.summary()})" for k, v in declared.items()) or "none"
        raise MethodRefused(f"unknown parameter(s) {', '.join(unknown)} for method {method!r}; "
                            f"declared parameters: {listed}")
    out: dict[str, object] = {k: spec.default for k, spec in declared.items()}
    for key, value in params.items():
        if key in RESERVED:
            out[key] = value
        else:
            out[key] = _coerce(method, key, value, declared[key])
    out.setdefault("_seed", 0)
    out.setdefault("_progress", False)
    # a batch_size the caller did not give is chosen from free memory (``batch_param``)
    out.setdefault("_batch_auto", "batch_size" in declared and "batch_size" not in params)
    # the names the caller gave (a method may adapt what was left to it, e.g. heta's probe count)
    out.setdefault("_given", tuple(sorted(k for k in params if k not in RESERVED)))
    for key in ("steps", "samples", "batch_size", "probes"):
        if key in out and out[key] is not None and int(out[key]) < 1:  # type: ignore[call-overload]
            raise MethodRefused(f"{method}: parameter {key} must be >= 1, got {out[key]}")
    return out


def generator(seed: object) -> torch.Generator:
    """A CPU generator (results do not depend on the device the model runs on)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))  # type: ignore[arg-type]
    return g


def batch_param(p: Mapping[str, object]) -> int | None:
    """The method's ``batch_size``: the user's value, or ``None`` (memory-aware) when not given."""
    if p.get("_batch_auto") or "batch_size" not in p:
        return None
    return int(p["batch_size"])  # type: ignore[arg-type]


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
        raise Unavailable(f"unknown or unavailable perturbation operator {op!r}; available for this model: {known}")
    return op


def distinct_rows(drop: Tensor) -> tuple[Tensor, Tensor]:
    """``(first, inverse)`` for a bool matrix ``(N, L)``: the index of each distinct row's first
    occurrence, in order of appearance ``(U,)``, and for every row the index of its distinct row
    ``(N,)``, so ``drop[first][inverse] == drop``."""
    packed = np.packbits(drop.to("cpu", torch.bool).numpy(), axis=1)
    rows = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return torch.as_tensor(first[order], dtype=torch.long), torch.as_tensor(rank[inverse.ravel()], dtype=torch.long)


def score_drops(problem: AttributionProblem, operator: str, drop: Tensor, batch_size: int | None = None,
                progress: bool = False, desc: str = "") -> Tensor:
    """S for each drop mask ``(N, L)`` -> ``(N,)``; never perturbs outside E. Each distinct mask
    (restricted to E) is scored once; batched by :func:`map_batches`: ``batch_size`` rows per
    forward when given, else as many as memory allows."""
    if drop.shape[0] == 0:
        return torch.zeros(0, dtype=problem.embeds.dtype, device=problem.embeds.device)
    drop = drop.to(problem.embeds.device) & problem.eligible.to(problem.embeds.device).unsqueeze(0)
    first, inverse = distinct_rows(drop)
    todo = drop[first.to(drop.device)] if first.numel() < drop.shape[0] else drop

    @torch.no_grad()
    def chunk(sl: slice) -> Tensor:
        embeds, keep = problem.replace(operator, todo[sl])
        return problem.objective(embeds, keep).detach()

    out = torch.cat(map_batches(chunk, int(todo.shape[0]), batch_size, problem=problem, kind="forward",
                                progress=progress, desc=desc))
    scored = getattr(problem, "scored_rows", None)     # the checks start from these (AttributionProblem)
    if scored is not None:
        scored.append((operator, todo.to("cpu"), out.detach().to("cpu", torch.float64)))
    return out if todo is drop else out[inverse.to(out.device)]


@torch.no_grad()
def score_input(problem: AttributionProblem) -> float:
    return float(problem.objective(problem.embeds.unsqueeze(0)).item())


def score_all_dropped(problem: AttributionProblem, operator: str) -> float:
    drop = problem.eligible.unsqueeze(0).clone()
    return float(score_drops(problem, operator, drop, 1).item())
