"""The per-contract row cache (every perturbation row's S, scored once per compiled problem)
and the accounting of what a check cost (:class:`Work`: rows planned, distinct, scored, model calls)."""

from __future__ import annotations

import contextlib
import contextvars
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from scopecheck.runtime.progress import current_phase

Tensor = torch.Tensor

#: Share the S of drop masks already evaluated between the checks of one compiled problem, so a
#: check, its random baseline and the other checks of the contract never score the same input
#: twice. Every protocol: under ``rescore`` S is a deterministic function of the perturbed input;
#: the diffusion protocols re-run the chain with randomness drawn per (seed, stage), the same for
#: every row of a batch, so a row's regenerated output and S do not depend on which rows share
#: its call either (the cache keeps each row's changed-output flag beside its S).
SCORE_CACHE = True

#: The attribute of a compiled :class:`AttributionProblem` holding its row cache.
ROWS_ATTR = "_scopecheck_rows"
_LIVE: list[weakref.ref] = []          # problems holding a row cache (``clear_score_cache``)


def score_cache(problem: Any) -> dict[tuple, Any]:
    """The per-contract row cache of ``problem`` (kept on the problem, so it lives and dies with
    the contract's compiled problem): ``(protocol, operator, mask bits) -> (S, changed)`` for every
    perturbation row scored so far, ``changed`` the regenerated output's flag (``None`` under
    ``rescore``); plus ``("s_x", protocol)`` and the NAOPC bounds (``("bounds", ...)``)."""
    cache = getattr(problem, "__dict__", {}).get(ROWS_ATTR)
    if cache is None:
        cache = {}
        try:
            object.__setattr__(problem, ROWS_ATTR, cache)
            _LIVE.append(weakref.ref(problem))
        except (AttributeError, TypeError):    # no instance dict / not weak-referenceable: nothing is shared
            pass
    _seed(cache, problem)
    return cache


_SEEDED = ("seeded",)                  # how many of the problem's method-scored batches are in the cache


def _seed(cache: dict[tuple, Any], problem: Any) -> None:
    """Add the rows the method scored (``AttributionProblem.scored_rows``: the rescored S of its
    perturbed inputs) to the row cache: a check's row equal to one of them is not scored again
    (occlusion's all-dropped row and single-token rows are every deletion curve's last and first),
    and an unperturbed row among them is the rescored ``S(x)`` every check reads."""
    rows = getattr(problem, "scored_rows", None) or ()
    done = cache.get(_SEEDED, 0)
    if len(rows) <= done:
        return
    for operator, drop, s in rows[done:]:
        for k, v, perturbed in zip(mask_keys(drop), s.tolist(), drop.any(-1).tolist()):
            cache.setdefault(("rescore", str(operator), k), (v, None))
            if not perturbed:                                  # the input itself: S(x), whatever the operator
                cache.setdefault(("s_x", "rescore"), v)
    cache[_SEEDED] = len(rows)


def clear_score_cache() -> None:
    """Forget every shared score (tests comparing against fresh evaluations), the method's rows too."""
    for ref in _LIVE:
        pb = ref()
        if pb is not None:
            pb.__dict__.get(ROWS_ATTR, {}).clear()
            pb.__dict__.get("scored_rows", []).clear()
    _LIVE[:] = [r for r in _LIVE if r() is not None]


def mask_keys(drop: Tensor) -> list[bytes]:
    """One hashable key per row of a bool matrix ``(N, L)`` (its bits, packed)."""
    packed = np.packbits(drop.to("cpu", torch.bool).numpy(), axis=1)
    return [row.tobytes() for row in packed]


@dataclass
class Work:
    """What one check (or random baseline) cost: ``planned`` perturbation rows it asked for (the
    plan, plus the rows the adaptive NAOPC beam search asked for), ``distinct`` masks among them,
    ``scored`` rows the model evaluated (the others came from the contract's row cache), model
    ``calls`` (batched forwards or chain runs, ``S(x)`` included) and wall ``seconds``."""

    planned: int = 0
    scored: int = 0
    calls: int = 0
    seconds: float = 0.0
    keys: set = field(default_factory=set, repr=False)

    def plan(self, keys: Sequence[Any]) -> None:
        self.planned += len(keys)
        self.keys.update(keys)

    @property
    def distinct(self) -> int:
        return len(self.keys)

    def as_dict(self) -> dict[str, Any]:
        return {"planned_rows": self.planned, "distinct_rows": self.distinct, "scored_rows": self.scored,
                "model_calls": self.calls, "seconds": round(self.seconds, 6)}


_WORK: contextvars.ContextVar[Work | None] = contextvars.ContextVar("scopecheck_check_work", default=None)


@contextlib.contextmanager
def counting(work: Work) -> Any:
    """Count the rows and model calls of the checks run inside on ``work`` (and its seconds)."""
    token = _WORK.set(work)
    t0 = time.perf_counter()
    try:
        yield work
    finally:
        work.seconds += time.perf_counter() - t0
        _WORK.reset(token)


def tick(n: int) -> None:
    """Advance the running check's planned progress bar (a fixed total) by ``n`` rows."""
    bar = current_phase()
    if bar is not None and bar.fixed and n > 0:
        bar.update(n)


def current_work() -> Work | None:
    """The :class:`Work` the checks running now count on (``counting``), if any."""
    return _WORK.get()


__all__ = ["ROWS_ATTR", "SCORE_CACHE", "Work", "clear_score_cache", "counting", "current_work", "mask_keys",
           "score_cache", "tick"]
