"""Running checks: every entry of the check registry (``scopecheck.spec.check_registry``,
which declares each check's implementation as a lazy ``"module:attr"``) -> its result.

``run_check(name, result, params)`` runs one check; ``random_baseline(name, result, params)``
runs it with uniformly random rankings of the eligible features (one per seed) and averages
the fields, the reference a map's ranking must beat (``expect deletion.aopc > random.aopc``).

Both plan before they compute: a ranking check lists every perturbation row it will score (the
random baseline: those of every ranking and of the map's own, which the compared check needs),
reports that count as its progress total (fixed: the beam search's most rows included), then
scores the rows in one batched call; every row is scored once per compiled problem
(``rowcache.SCORE_CACHE``), and the NAOPC bounds are searched only when ``fields`` asks for
``naopc`` (``None``: every field), once per contract. Each result records its cost in
``extra['work']``: planned and distinct rows, rows the model scored, model calls and seconds.
Each runs as one progress phase (``progress``: a bar on a terminal, a line at least every ten
seconds otherwise; off inside pytest unless asked for, see ``runtime.progress.progress_enabled``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from scopecheck.checks.context import setup
from scopecheck.checks.params import check_params
from scopecheck.checks.plan import plan, score_plan
from scopecheck.checks.rowcache import Work, counting
from scopecheck.checks.result import CheckResult
from scopecheck.engine.methods.external import refuse_check
from scopecheck.engine.precision import float64_forward
from scopecheck.runtime.progress import phase
from scopecheck.spec.check_registry import CHECKS, get_check

if TYPE_CHECKING:
    from scopecheck.engine.result import AttributionResult

CheckImpl = Callable[..., CheckResult]


class _Impls(Mapping[str, CheckImpl]):
    """Check name -> implementation, read from the registry (each imported on first use), so a
    check registered from outside the package runs like the shipped ones."""

    def __getitem__(self, name: str) -> CheckImpl:
        return get_check(name).load()

    def __contains__(self, name: object) -> bool:   # without importing the implementation
        return name in CHECKS

    def __iter__(self) -> Iterator[str]:
        return iter(list(CHECKS))

    def __len__(self) -> int:
        return len(CHECKS)


CHECK_IMPLS: Mapping[str, CheckImpl] = _Impls()


def _impl(name: str) -> CheckImpl:
    """The implementation of ``name``; :class:`~scopecheck.spec.check_registry.UnknownCheckError`
    (a ``KeyError``) listing the checks otherwise."""
    return get_check(name).load()


def _precision(result: AttributionResult) -> Any:
    """Checks compute in the precision the method did: a float64 causal-LM run patches
    transformers' float32 internals for the check's forwards too (``engine.precision``)."""
    import contextlib

    objective = result.compiled.problem.objective if result.compiled is not None else None
    model = getattr(objective, "model", None)     # a causal-LM objective's model (objectives are duck-typed)
    if model is None:                             # a diffusion objective: its denoiser runs as loaded
        return contextlib.nullcontext()

    return float64_forward(model)


#: Checks whose implementation takes the asked ``fields`` (the curves: NAOPC only when asked).
FIELD_AWARE = ("deletion", "insertion", "aopc")


def _asked(name: str, fields: Sequence[str] | None) -> tuple[str, ...] | None:
    if fields is None:
        return None
    known = CHECKS[name].fields
    bad = [f for f in fields if f not in known]
    if bad:
        raise KeyError(f"check {name!r} has no field {', '.join(map(repr, bad))}; its fields: {', '.join(known)}")
    return tuple(fields)


def _with_work(res: CheckResult, work: Work) -> CheckResult:
    return dataclasses.replace(res, extra={**res.extra, "work": work.as_dict()})


def run_check(name: str, result: AttributionResult, params: Mapping[str, object] | None = None, *, seed: int = 0,
              ranking: Sequence[int] | None = None, progress: bool | None = None,
              fields: Sequence[str] | None = None) -> CheckResult:
    """Run check ``name`` on ``result``. Unknown names raise ``UnknownCheckError`` (a ``KeyError``)
    listing the checks; unknown parameters ``CheckParamError`` (a ``ValueError``) listing the
    declared ones. ``progress``: report the model
    evaluations as they run (``None``: ``$SCOPECHECK_PROGRESS``, else on outside pytest).
    ``fields``: the fields something will read (``None``: all); a field nothing asks for and that
    costs extra work (a curve's ``naopc``) is then left out of the result."""
    fn = _impl(name)

    refuse_check(name, result)
    check_params(name, params)
    asked = _asked(name, fields)
    kw = {"fields": asked} if name in FIELD_AWARE else {}
    work = Work()
    with counting(work), _precision(result):
        p = plan(name, result, params, [(ranking, seed)], asked)
        with phase(f"check {name}", progress, total=None if p is None else p.total, unit="row"):
            if p is not None:
                score_plan(p)
            res = fn(result, params, ranking=ranking, seed=seed, **kw)
    return _with_work(res, work)


def random_baseline(name: str, result: AttributionResult, params: Mapping[str, object] | None = None, *,
                    seeds: Sequence[int] = (0, 1, 2, 3, 4), progress: bool | None = None,
                    fields: Sequence[str] | None = None) -> CheckResult:
    """The check with uniformly random rankings of its features (``numpy.random.default_rng(s)
    .permutation`` for each seed ``s``, the check's own sampling seeded with ``s`` too); fields
    averaged over seeds (NaN seeds ignored), per-seed values in ``extra['per_seed']``.

    The inputs every ranking perturbs (and those of the map's own ranking, which the compared
    check needs) are stacked and scored in one batched call before the per-seed checks run on
    the shared scores; the numbers are those of running each seed on its own. ``fields`` as for
    :func:`run_check` (the NAOPC bounds, when asked, are searched once for every ranking)."""
    fn = _impl(name)
    if not CHECKS[name].ranking:
        raise ValueError(f"check {name!r} does not use the map's ranking, so a random-ranking baseline is undefined; "
                         f"checks with one: {', '.join(n for n, c in CHECKS.items() if c.ranking)}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("random_baseline needs at least one seed")
    asked = _asked(name, fields)
    kw = {"fields": asked} if name in FIELD_AWARE else {}
    ctx = setup(name, result, params)
    runs: list[CheckResult] = []
    rankings = [[ctx.features[i] for i in np.random.default_rng(s).permutation(len(ctx.features)).tolist()]
                for s in seeds]
    work = Work()
    with counting(work), _precision(result):
        own = (None, int(getattr(result, "seed", 0) or 0))
        p = plan(name, result, params, [own, *zip(rankings, seeds)], asked)
        with phase(f"check {name} (random baseline, {len(seeds)} rankings)", progress,
                   total=None if p is None else p.total, unit="row"):
            if p is not None:
                score_plan(p)
            for perm, s in zip(rankings, seeds):
                runs.append(fn(result, params, ranking=perm, seed=s, **kw))
    first = runs[0]
    per_seed = {f: [r.fields[f] for r in runs] for f in first.fields}
    means: dict[str, float] = {}      # (not `fields`: that is the fields asked for)
    for f, vals in per_seed.items():
        arr = np.asarray(vals, dtype=float)
        means[f] = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
    curves = [r.curve for r in runs]
    curve: tuple[float, ...] = ()
    if curves and all(len(c) == len(curves[0]) for c in curves):
        curve = tuple(float(x) for x in np.mean(np.asarray(curves, dtype=float), axis=0)) if curves[0] else ()
    config = dict(first.config)
    config.update(baseline="random", seeds=seeds, seed=None, ranking="random")
    notes = sorted({r.note for r in runs if r.note})
    return CheckResult(name=name, fields=means, ranges=dict(first.ranges), better=dict(first.better), config=config,
                       curve=curve, passed=None, note="; ".join(notes),
                       extra={"per_seed": per_seed, "rankings": rankings, "seeds": seeds, "work": work.as_dict()})


__all__ = ["CHECK_IMPLS", "random_baseline", "run_check"]
