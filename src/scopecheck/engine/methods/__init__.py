"""Attribution method implementations, each named by its registry entry's ``impl``
(:mod:`scopecheck.spec.registry`).

``METHOD_IMPLS[name](problem, params) -> MethodOutput``, a read-only view of the registry that
imports an implementation when it is first looked up (so a method registered from outside the
package runs like a shipped one). The submodules (``gradients``, ``perturbation``,
``surrogate``, ``rollout``, ``reagent``, ``probabilistic``, ``heta``) hold the implementations;
only the registry view is exported here, so ``methods.heta`` is the module. Every method scores exactly zero
outside ``problem.eligible``, never perturbs or interpolates a non-eligible position, batches
its model evaluations and is deterministic given ``params['_seed']`` (set by
:func:`run_method`; 0 when called directly).

``stage_perturbation`` (denoising-stage contracts) runs on the stage problem built by
``scopecheck.engine.diffusion``.

Methods without a declared ``batch_size`` parameter (``reagent``, ``context_cite``,
``probabilistic_as``, ``heta``) batch with ``INTERNAL_BATCH`` (32) evaluations.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

from scopecheck.engine.methods._common import resolve_params
from scopecheck.runtime.batching import INTERNAL_BATCH
from scopecheck.engine.methods import (  # noqa: F401 - the submodules, as attributes
    gradients, heta, perturbation, probabilistic, reagent, rollout, stages, surrogate,
)
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused
from scopecheck.spec import registry

MethodImpl = Callable[[AttributionProblem, Mapping[str, object]], MethodOutput]


class _Impls(Mapping[str, MethodImpl]):
    """name -> implementation of every registered method, loaded on lookup."""

    def __getitem__(self, name: str) -> MethodImpl:
        entry = registry.METHODS.get(name)
        if entry is None:
            raise KeyError(name)
        return entry.load()

    def __iter__(self) -> Iterator[str]:
        return iter(list(registry.METHODS))

    def __len__(self) -> int:
        return len(registry.METHODS)


METHOD_IMPLS: Mapping[str, MethodImpl] = _Impls()


def resolve_method(name: str) -> str:
    """Canonical method name (aliases resolved); a ``KeyError`` (:class:`~scopecheck.spec.registry.
    UnknownMethodError`) listing what is available."""
    return registry.get_method(name).name


def run_method(name: str, problem: AttributionProblem, params: Mapping[str, object] | None = None, *,
               seed: int = 0, progress: bool = False) -> MethodOutput:
    """Run method ``name`` (or an alias) on ``problem``.

    Unknown parameter names raise ``ValueError`` listing the method's declared parameters;
    declared ones are type-checked and defaulted from the registry entry.
    """
    canonical, resolved = prepare(name, params, seed, progress)
    refuse_architecture(canonical, problem)
    out = METHOD_IMPLS[canonical](problem, resolved)
    out.info.setdefault("method", canonical)
    out.info.setdefault("seed", int(seed))
    return out


def refuse_architecture(name: str, problem: AttributionProblem) -> None:
    """A :class:`MethodRefused` with the registry's reason when method ``name`` refuses the
    problem's model architecture (``MethodEntry.refuses``, e.g. ``encoder_decoder``)."""
    architecture = getattr(problem, "architecture", "decoder_only")
    why = registry.get_method(name).refusal(architecture)
    if why is not None:
        raise MethodRefused(f"it does not run on an {architecture.replace('_', '–')} model: {why}",
                            expected="a method the registry lists for this architecture: "
                                     + ", ".join(n for n, e in registry.METHODS.items()
                                                 if e.refusal(architecture) is None and e.family != "stage"))


def prepare(name: str, params: Mapping[str, object] | None, seed: int, progress: bool) -> tuple[str, dict[str, object]]:
    """The canonical method name and its resolved parameters (user names starting with ``_``
    refused; declared ones checked and defaulted; ``_seed`` and ``_progress`` added)."""
    canonical = resolve_method(name)
    params = dict(params or {})
    reserved = [k for k in params if k.startswith("_")]
    if reserved:
        raise MethodRefused(f"parameter names starting with '_' are reserved: {', '.join(reserved)}")
    resolved = resolve_params(canonical, params)
    resolved["_seed"] = int(seed)
    resolved["_progress"] = bool(progress)
    return canonical, resolved


__all__ = ["INTERNAL_BATCH", "METHOD_IMPLS", "MethodImpl", "prepare", "refuse_architecture", "resolve_method",
           "run_method"]
