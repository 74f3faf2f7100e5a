"""Deletion and insertion curves: the grid of feature counts, the area under a curve, and the
NAOPC bounds (min/max AOPC over every ordering of the features: exact by dynamic programming over
the ``2^E`` subsets up to ``EXHAUSTIVE_MAX`` features, beam search beyond), searched once per
contract."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from scopecheck.checks.context import Ctx
from scopecheck.checks.params import as_int
from scopecheck.checks.rowcache import current_work, tick

#: Largest feature count for which NAOPC bounds are exact (all 2^E subsets evaluated).
EXHAUSTIVE_MAX = 8
#: Beam width of the approximate NAOPC bounds beyond ``EXHAUSTIVE_MAX`` features.
BEAM_WIDTH = 5


def exact_bounds(E: int) -> bool:
    """Whether the NAOPC bounds over ``E`` features are exact (every subset scored) rather than
    searched by the beam."""
    return E <= EXHAUSTIVE_MAX


def grid(E: int, steps: int | None) -> list[int]:
    """Feature counts at which a curve is measured: ``0..E`` or ``round(j E / steps)``."""
    if steps is None or steps >= E:
        return list(range(E + 1))
    return sorted({int(math.floor(j * E / steps + 0.5)) for j in range(steps + 1)})


def trapezoid(y: Sequence[float], x: Sequence[float]) -> float:
    if len(y) < 2:
        return 0.0
    return float(sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(y) - 1)))


class _Gains:
    """``g(A)`` for feature subsets ``A`` (bitmasks over F), cached and batch-evaluated.

    deletion: ``g(A) = S(x) − S(x \\ A)``; insertion: ``g(A) = S(x \\ (F − A)) − S(x \\ F)``.
    """

    def __init__(self, ctx: Ctx, mode: str, adaptive: bool = False) -> None:
        self.ctx, self.mode = ctx, mode
        self.full = (1 << ctx.E) - 1
        self.vals: dict[int, float] = {}        # drop bitmask -> S
        self.evaluations = 0
        self.adaptive = adaptive                # beam search: its rows join the check's planned rows here

    def _drop_mask(self, a: int) -> int:
        return a if self.mode == "deletion" else self.full ^ a

    def need(self, subsets: Sequence[int]) -> int:
        """Score the drop masks of ``subsets`` not seen yet; returns how many rows were asked for."""
        drops = {self._drop_mask(a) for a in subsets} | {0, self.full}
        todo = sorted(d for d in drops if d not in self.vals)
        if not todo:
            return 0
        E = self.ctx.E
        masks = torch.tensor([[(d >> i) & 1 for i in range(E)] for d in todo], dtype=torch.bool)
        drop = self.ctx.drop_from_masks(masks)
        work = current_work()
        if self.adaptive and work is not None:
            work.plan(self.ctx.row_keys(drop))
        s = self.ctx.score_drops(drop, tick_hits=self.adaptive)
        self.evaluations += len(todo)
        for d, v in zip(todo, s.tolist()):
            self.vals[d] = v
        return len(todo)

    def g(self, a: int) -> float:
        if self.mode == "deletion":
            return self.vals[0] - self.vals[a]
        return self.vals[self.full ^ a] - self.vals[self.full]


def aopc_bounds(ctx: Ctx, ks: Sequence[int], mode: str) -> tuple[float, float, str, int]:
    """(lower, upper, how, evaluations): min/max AOPC over all orderings of F on grid ``ks``.

    Exact for ``E <= EXHAUSTIVE_MAX``: AOPC of an ordering is ``mean_{k in ks} g(first k)``,
    a sum along a maximal chain of the subset lattice, so its max/min over all ``E!``
    orderings is found by dynamic programming over all ``2^E`` subsets
    (``best(A) = w(A) + max_{i in A} best(A − i)``, ``w(A) = g(A)`` if ``|A|`` in ``ks``).
    Beyond, beam search of width ``BEAM_WIDTH`` (Edin et al. 2025 approximate long inputs
    the same way): a lower bound on the max and an upper bound on the min.
    """
    E = ctx.E
    gains = _Gains(ctx, mode, adaptive=E > EXHAUSTIVE_MAX)
    kset = set(ks)
    n = len(ks)
    if E <= EXHAUSTIVE_MAX:
        subsets = list(range(1 << E))
        gains.need(subsets)
        by_size = sorted(subsets, key=lambda a: bin(a).count("1"))
        hi = {0: gains.g(0) if 0 in kset else 0.0}
        lo = dict(hi)
        for a in by_size[1:]:
            w = gains.g(a) if bin(a).count("1") in kset else 0.0
            prev = [a & ~(1 << i) for i in range(E) if (a >> i) & 1]
            hi[a] = w + max(hi[b] for b in prev)
            lo[a] = w + min(lo[b] for b in prev)
        full = (1 << E) - 1
        return lo[full] / n, hi[full] / n, "exact", gains.evaluations

    # the two beams (max and min) advance together, so each size's candidates of both are
    # scored in one batch; the result is that of running them one after the other
    tick(beam_slots(E, 0) - gains.need([0]))            # the planned bar: a stage's unused slots
    start = gains.g(0) if 0 in kset else 0.0
    beams = {1.0: [(start, 0)], -1.0: [(start, 0)]}
    for size in range(1, E + 1):
        cands: dict[float, dict[int, float]] = {}
        for sign, bs in beams.items():
            c: dict[int, float] = {}
            for cum, a in bs:
                for i in range(E):
                    if not (a >> i) & 1:
                        b = a | (1 << i)
                        if b not in c or sign * cum > sign * c[b]:
                            c[b] = cum
            cands[sign] = c
        tick(beam_slots(E, size) - gains.need(sorted(set(cands[1.0]) | set(cands[-1.0]))))
        for sign, c in cands.items():
            scored = []
            for b, cum in c.items():
                gb = gains.g(b)
                new = cum + (gb if size in kset else 0.0)
                key = sign * (new + (0.0 if size in kset else gb))
                scored.append((key, new, b))
            scored.sort(key=lambda t: (-t[0], t[2]))
            beams[sign] = [(new, b) for _, new, b in scored[:BEAM_WIDTH]]
    upper = max(c for c, _ in beams[1.0]) / n
    lower = min(c for c, _ in beams[-1.0]) / n
    return lower, upper, f"beam(width={BEAM_WIDTH})", gains.evaluations


def beam_slots(E: int, size: int) -> int:
    """Most rows the beam search asks for at stage ``size`` (``0``: its start, ``x`` and ``x_∅``):
    the union of both beams' expansions, at most ``2 BEAM_WIDTH (E - size + 1)`` and ``C(E, size)``.
    Their sum over the stages is the search's share of a check's planned progress total."""
    if size == 0:
        return 2
    return min(2 * BEAM_WIDTH * (E - size + 1), math.comb(E, size))


def bound_rows(E: int) -> int:
    """Planned rows of the NAOPC bound search over ``E`` features: ``2^E`` (exact), or the beam
    search's most (:func:`beam_slots` summed over its stages)."""
    if E <= EXHAUSTIVE_MAX:
        return 1 << E
    return sum(beam_slots(E, k) for k in range(E + 1))


def _bounds_key(ctx: Ctx, ks: Sequence[int], mode: str) -> tuple:
    """The NAOPC bounds depend on the features, grid, operator and protocol, not on the ranking:
    one search per contract serves the map's check and every random ranking."""
    how = "exact" if ctx.E <= EXHAUSTIVE_MAX else f"beam({BEAM_WIDTH})"
    return ("bounds", how, ctx.protocol.then, str(ctx.operator), mode, tuple(ctx.features), tuple(ks))


def bounds_known(ctx: Ctx, ks: Sequence[int], mode: str) -> bool:
    cache = ctx.row_cache()
    return cache is not None and _bounds_key(ctx, ks, mode) in cache


def shared_bounds(ctx: Ctx, ks: Sequence[int], mode: str) -> tuple[float, float, str, int, list[bool]]:
    """``aopc_bounds`` once per contract (and its changed-output flags, apart from the check's)."""
    cache = ctx.row_cache()
    key = _bounds_key(ctx, ks, mode)
    if cache is not None and key in cache:
        return cache[key]
    bound_changed: list[bool] = []
    ctx.flags_into = bound_changed                  # the bound search's regenerations: apart
    try:
        lower, upper, how, evals = aopc_bounds(ctx, ks, mode)
    finally:
        ctx.flags_into = ctx.changed_flags
    hit = (lower, upper, how, evals, bound_changed)
    if cache is not None:
        cache[key] = hit
    return hit


def wants_naopc(fields: Sequence[str] | None) -> bool:
    """Whether the asked fields (``None``: all) need the NAOPC bounds."""
    return fields is None or "naopc" in fields


def naopc_of(aopc: float, lower: float, upper: float, how: str) -> tuple[float, float, float, str]:
    note = ""
    if how != "exact":
        lower, upper = min(lower, aopc), max(upper, aopc)
    if not upper > lower:
        return float("nan"), lower, upper, "naopc undefined: every ordering of the features gives the same AOPC"
    return min(1.0, max(0.0, (aopc - lower) / (upper - lower))), lower, upper, note


def curve_steps(ctx: Ctx) -> int | None:
    steps = ctx.params.get("steps")
    return None if steps is None else as_int(ctx.name, "steps", steps)


def curve_sets(ctx: Ctx, mode: str, ks: Sequence[int]) -> list[list[int]]:
    """The feature sets a curve perturbs: ``top-k`` (deletion) or all but ``top-k`` (insertion)."""
    r = ctx.ranking
    return [r[:k] for k in ks] if mode == "deletion" else [r[k:] for k in ks]


__all__ = ["BEAM_WIDTH", "EXHAUSTIVE_MAX", "aopc_bounds", "beam_slots", "bound_rows", "bounds_known", "curve_sets",
           "curve_steps", "exact_bounds", "grid", "naopc_of", "shared_bounds", "trapezoid", "wants_naopc"]
