"""The check registry: every name in ``catalog.CHECKS`` -> its implementation.

``run_check(name, result, params)`` runs one check; ``random_baseline(name, result, params)``
runs it with uniformly random rankings of the eligible features (one per seed) and averages
the fields, the reference a map's ranking must beat (``expect deletion.aopc > random.aopc``).

Both run as one progress phase each (``progress``: a bar on a terminal, a line per ten seconds
otherwise; off inside pytest unless asked for, see ``_common.progress_enabled``). Under the
rescore protocol the random rankings' perturbed inputs and the map's own are scored together in
one batched call, and every input is scored once per compiled problem (``faithfulness.SCORE_CACHE``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from scopecheck.checks import agreement as _agreement
from scopecheck.checks import faithfulness as _faith
from scopecheck.checks import sanity as _sanity
from scopecheck.checks.catalog import CHECKS
from scopecheck.checks.result import CheckResult
from scopecheck.engine.methods._common import phase

CheckImpl = Callable[..., CheckResult]

CHECK_IMPLS: dict[str, CheckImpl] = {
    "deletion": _faith.deletion,
    "insertion": _faith.insertion,
    "comprehensiveness": _faith.comprehensiveness,
    "sufficiency": _faith.sufficiency,
    "aopc": _faith.aopc,
    "soft_nc": _faith.soft_nc,
    "soft_ns": _faith.soft_ns,
    "infidelity": _faith.infidelity,
    "max_sensitivity": _sanity.max_sensitivity,
    "randomization": _sanity.randomization,
    "completeness": _sanity.completeness,
    "eligibility": _sanity.eligibility,
    "ground_truth": _agreement.ground_truth,
    "dsa": _agreement.dsa,
    "agreement": _agreement.agreement,
}

_missing = set(CHECKS) ^ set(CHECK_IMPLS)
assert not _missing, f"check registry and catalog disagree on {sorted(_missing)}"


def _impl(name: str) -> CheckImpl:
    try:
        return CHECK_IMPLS[name]
    except KeyError:
        raise KeyError(f"unknown check {name!r}; known checks: {', '.join(sorted(CHECK_IMPLS))}") from None


def _precision(result: Any) -> Any:
    """Checks compute in the precision the method did: a float64 causal-LM run patches
    transformers' float32 internals for the check's forwards too (``engine.precision``)."""
    import contextlib

    model = getattr(getattr(getattr(getattr(result, "compiled", None), "problem", None), "objective", None),
                    "model", None)
    if model is None:
        return contextlib.nullcontext()
    from scopecheck.engine.precision import float64_forward

    return float64_forward(model)


def run_check(name: str, result: Any, params: Mapping[str, object] | None = None, *, seed: int = 0,
              ranking: Sequence[int] | None = None, progress: bool | None = None) -> CheckResult:
    """Run check ``name`` on ``result``. Unknown names raise ``KeyError`` listing the checks;
    unknown parameters ``ValueError`` listing the declared ones. ``progress``: report the model
    evaluations as they run (``None``: ``$SCOPECHECK_PROGRESS``, else on outside pytest)."""
    fn = _impl(name)
    _faith.check_params(name, params)
    with phase(f"check {name}", progress), _precision(result):
        return fn(result, params, ranking=ranking, seed=seed)


def random_baseline(name: str, result: Any, params: Mapping[str, object] | None = None, *,
                    seeds: Sequence[int] = (0, 1, 2, 3, 4), progress: bool | None = None) -> CheckResult:
    """The check with uniformly random rankings of its features (``numpy.random.default_rng(s)
    .permutation`` for each seed ``s``, the check's own sampling seeded with ``s`` too); fields
    averaged over seeds (NaN seeds ignored), per-seed values in ``extra['per_seed']``.

    The inputs every ranking perturbs (and those of the map's own ranking, which the compared
    check needs) are stacked and scored in one batched call before the per-seed checks run on
    the shared scores; the numbers are those of running each seed on its own."""
    fn = _impl(name)
    if not CHECKS[name].ranking:
        raise ValueError(f"check {name!r} does not use the map's ranking, so a random-ranking baseline is undefined; "
                         f"checks with one: {', '.join(n for n, c in CHECKS.items() if c.ranking)}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("random_baseline needs at least one seed")
    ctx = _faith.setup(name, result, params)
    runs: list[CheckResult] = []
    rankings = [[ctx.features[i] for i in np.random.default_rng(s).permutation(len(ctx.features))] for s in seeds]
    with phase(f"check {name} (random baseline, {len(seeds)} rankings)", progress), _precision(result):
        own = (None, int(getattr(result, "seed", 0) or 0))
        _faith.prefetch(name, result, params, [own, *zip(rankings, seeds)])
        for perm, s in zip(rankings, seeds):
            runs.append(fn(result, params, ranking=perm, seed=s))
    first = runs[0]
    per_seed = {f: [r.fields[f] for r in runs] for f in first.fields}
    fields = {}
    for f, vals in per_seed.items():
        arr = np.asarray(vals, dtype=float)
        fields[f] = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
    curves = [r.curve for r in runs]
    curve: tuple[float, ...] = ()
    if curves and all(len(c) == len(curves[0]) for c in curves):
        curve = tuple(float(x) for x in np.mean(np.asarray(curves, dtype=float), axis=0)) if curves[0] else ()
    config = dict(first.config)
    config.update(baseline="random", seeds=seeds, seed=None, ranking="random")
    notes = sorted({r.note for r in runs if r.note})
    return CheckResult(name=name, fields=fields, ranges=dict(first.ranges), better=dict(first.better), config=config,
                       curve=curve, passed=None, note="; ".join(notes),
                       extra={"per_seed": per_seed, "rankings": rankings, "seeds": seeds})


__all__ = ["CHECK_IMPLS", "random_baseline", "run_check"]
