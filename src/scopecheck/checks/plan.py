"""Planned evaluations: the perturbation rows a check (or a random baseline, over all its
rankings) will score, known before it runs, stacked and scored in one batched call into the
contract's row cache; the check then reads them back. The plan's row count is the progress total."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from scopecheck.checks import rowcache
from scopecheck.checks.context import Ctx, setup
from scopecheck.checks.curves import bound_rows, bounds_known, curve_sets, curve_steps, exact_bounds, grid, wants_naopc
from scopecheck.checks.faithfulness import infidelity_masks, soft_masks
from scopecheck.checks.params import as_int, k_count
from scopecheck.checks.rowcache import current_work

Tensor = torch.Tensor


#: Checks whose perturbation rows are known before they run (``plan``).
PLANNED = ("deletion", "aopc", "insertion", "comprehensiveness", "sufficiency", "soft_nc", "soft_ns", "infidelity")


def planned_drops(name: str, ctx: Ctx, fields: Sequence[str] | None = None, *, bounds: bool = True,
                  ) -> Tensor | None:
    """The drop masks check ``name`` will score for ``ctx``'s ranking and seed, known before it
    runs (``None`` for checks not planned here): the curve (and, when NAOPC is asked for and
    ``E <= EXHAUSTIVE_MAX``, the 2^E subsets of the exact bounds, unless this contract has them
    already), the top-k sets, the Soft-NC/NS masks and ``x_∅``, the infidelity masks. The beam
    search's rows (``E > EXHAUSTIVE_MAX``) are adaptive: ``plan`` counts its most instead.

    Rows per ranking: deletion/insertion/aopc ``|grid|`` (``E + 1``, or ``steps + 1`` distinct
    counts) plus ``2^E`` for exact bounds (``bounds=False``: left out, another ranking of the same
    plan brings them); comprehensiveness/sufficiency 2; soft_nc/soft_ns ``samples + 1``;
    infidelity ``samples``."""
    if name in ("deletion", "aopc", "insertion"):
        mode = "insertion" if name == "insertion" else "deletion"
        ks = grid(ctx.E, curve_steps(ctx))
        drop = ctx.drop_rows(curve_sets(ctx, mode, ks))
        if bounds and wants_naopc(fields) and exact_bounds(ctx.E) and not bounds_known(ctx, ks, mode):
            subsets = torch.arange(1 << ctx.E).unsqueeze(1)
            masks = ((subsets >> torch.arange(ctx.E).unsqueeze(0)) & 1).bool()
            drop = torch.cat([drop, ctx.drop_from_masks(masks)])   # both modes: every subset is dropped once
        return drop
    if name in ("comprehensiveness", "sufficiency"):
        n = k_count(name, ctx.params["k"], ctx.E)
        other = ctx.ranking[:n] if name == "comprehensiveness" else ctx.ranking[n:]
        return ctx.drop_rows([[], other])
    if name in ("soft_nc", "soft_ns"):
        _, _, kept = soft_masks(ctx)
        return torch.cat([ctx.drop_from_masks(~kept), ctx.drop_rows([ctx.features])])
    if name == "infidelity":
        n = as_int(name, "samples", ctx.params["samples"])
        return ctx.drop_from_masks(infidelity_masks(ctx.E, n, ctx.seed))
    return None


@dataclass(frozen=True)
class Plan:
    """The rows one check (or a random baseline: every ranking and the map's own) will score,
    stacked in run order, and the most rows its adaptive beam search can add (``adaptive``);
    ``total`` is the progress denominator, fixed before any row is scored."""

    ctx: Ctx
    drop: Tensor                   # (N, L) bool
    adaptive: int

    @property
    def rows(self) -> int:
        return int(self.drop.shape[0])

    @property
    def total(self) -> int:
        return self.rows + self.adaptive


def plan(name: str, result: Any, params: Mapping[str, object] | None,
         runs: Sequence[tuple[Sequence[int] | None, int]], fields: Sequence[str] | None = None) -> Plan | None:
    """The plan of check ``name`` over ``(ranking, seed)`` runs (``None``: not a planned check, or
    nothing shared because the row cache is off)."""
    if name not in PLANNED or not rowcache.SCORE_CACHE or not runs:
        return None
    ctxs = [setup(name, result, params, ranking=r, seed=s) for r, s in runs]
    if ctxs[0].row_cache() is None:
        return None
    drops = [d for d in (planned_drops(name, c, fields, bounds=i == 0) for i, c in enumerate(ctxs)) if d is not None]
    if not drops:
        return None
    adaptive = 0
    c0 = ctxs[0]
    if name in ("deletion", "aopc", "insertion") and wants_naopc(fields) and not exact_bounds(c0.E):
        mode = "insertion" if name == "insertion" else "deletion"
        if not bounds_known(c0, grid(c0.E, curve_steps(c0)), mode):
            adaptive = bound_rows(c0.E)                           # one search serves every ranking
    return Plan(c0, torch.cat(drops), adaptive)


def score_plan(p: Plan) -> None:
    """Score a plan's rows in one batched call (deduplicated, into the contract's row cache,
    counted on the running check's ``Work``); the checks then read them back."""
    work = current_work()
    if work is not None:
        work.plan(p.ctx.row_keys(p.drop))
    p.ctx.score_drops(p.drop, tick_hits=True)


def prefetch(name: str, result: Any, params: Mapping[str, object] | None,
             runs: Sequence[tuple[Sequence[int] | None, int]], fields: Sequence[str] | None = None) -> int:
    """Score the planned masks of check ``name`` for every ``(ranking, seed)`` in ``runs`` in one
    batched call (stacked, deduplicated), into the score cache; the checks then run on cached
    scores. Returns how many masks were planned (0 when nothing is shared: the cache switched off)."""
    p = plan(name, result, params, runs, fields)
    if p is None:
        return 0
    score_plan(p)
    return p.rows


__all__ = ["PLANNED", "Plan", "plan", "planned_drops", "prefetch", "score_plan"]
