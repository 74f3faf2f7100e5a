"""One job for a family of maps: K single-target problems that share their forwards.

A contract with ``target = each`` asks for one map per generated token. Its members are K
ordinary :class:`AttributionProblem` s (one per target, each compiled from its own
single-target contract), so every member means exactly what its single-target contract
means. This module computes them together when the work can be shared, and member by
member when it cannot; both paths return the same maps (tests compare them in float64).

Sharing (``K`` members, ``L`` positions, ``d`` embedding width, ``n`` IG steps):

* one forward serves every member: the causal LM reads all members' target rows at once
  (:class:`~scopecheck.engine.scoring.CausalLMFamilyObjective`, ``(B, L, d) -> (B, K)``);
* gradients of the K scores are taken over that one forward's graph (:func:`~scopecheck.engine.vjp.vjps`): one
  batched backward on accelerators (``torch.autograd.grad(..., is_grads_batched=True)``, a
  vmap over the K cotangents) and for small graphs on CPUs, K backwards over the retained
  graph for larger ones on CPUs, where that is faster;
* ``integrated_gradients``: one forward per path batch serves every member when the
  members share E and the baseline (``prompt_conditioned``: E is the prompt for every
  target), so the path costs ``n`` rows for the whole family instead of ``K * n``;
* ``gradient_x_input`` / ``saliency``: one forward and one batched backward at the input,
  whatever each member's E (each map is masked to its own E);
* ``occlusion``: every eligible position of any member is perturbed once and the perturbed
  forward scores all K members; the perturbed inputs also reuse the unperturbed prefix's
  key/value cache (see ``engine.forward.Forward``). Under ``delete`` a forward that deletes some
  member's target (``local_next_token``: ``y[j]`` is in every later member's E) scores the
  other members only (:func:`_scores`), as their single-target contracts do.

Any other method, or members that cannot share (different ids, scores or models), runs
member by member through :func:`scopecheck.engine.methods.run_method`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from scopecheck.engine.methods import prepare, run_method
from scopecheck.engine.methods._common import batch_param, check_operator, finalize
from scopecheck.runtime.batching import map_batches
from scopecheck.engine.methods.gradients import NORMS, ig_finish, ig_path
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.engine.scoring import CausalLMFamilyObjective, CausalLMObjective
from scopecheck.engine.vjp import batched_grads, vjps  # noqa: F401  (re-exported)
from scopecheck.errors import MethodRefused

Tensor = torch.Tensor

FamilyImpl = Callable[[Sequence[AttributionProblem], CausalLMFamilyObjective, Mapping[str, object]],
                      list[MethodOutput]]


def family_objective(problems: Sequence[AttributionProblem]) -> CausalLMFamilyObjective | None:
    """The shared objective of ``problems``, or ``None`` when they cannot share forwards
    (not causal-LM problems, an encoder–decoder's (:mod:`scopecheck.engine.seq2seq`: its members
    run one by one), different token sequences, models or score kinds)."""
    objs = [p.objective for p in problems]
    if not problems or not all(isinstance(o, CausalLMObjective) for o in objs):
        return None
    first: CausalLMObjective = objs[0]  # type: ignore[assignment]
    for p, o in zip(problems, objs):
        assert isinstance(o, CausalLMObjective)
        if (o.model is not first.model or o.score != first.score or o.alternative != first.alternative
                or p.architecture != "decoder_only"
                or p.ids.shape != problems[0].ids.shape or not bool((p.ids == problems[0].ids).all())
                or set(p.operators) != set(problems[0].operators)):
            return None
    return CausalLMFamilyObjective(first.model, problems[0].ids, [o.targets for o in objs],  # type: ignore[union-attr]
                                   first.score, first.alternative, clean=problems[0].embeds)


def _gradient_x_input(problems: Sequence[AttributionProblem], objective: CausalLMFamilyObjective,
                      p: Mapping[str, object]) -> list[MethodOutput]:
    x = problems[0].embeds                                                       # (L, d)
    s, g = objective.grads(x.unsqueeze(0))                                  # (1, K), (K, 1, L, d)
    return [finalize(pb, (g[k, 0] * x).sum(-1), {"score_input": float(s[0, k])}) for k, pb in enumerate(problems)]


def _saliency(problems: Sequence[AttributionProblem], objective: CausalLMFamilyObjective,
              p: Mapping[str, object]) -> list[MethodOutput]:
    norm = str(p["norm"])
    if norm not in NORMS:
        raise MethodRefused(f"saliency: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    s, g = objective.grads(problems[0].embeds.unsqueeze(0))                # (1, K), (K, 1, L, d)
    g = g[:, 0]                                                                  # (K, L, d)
    maps = g.norm(dim=-1) if norm == "l2" else g.abs().sum(-1) if norm == "l1" else g.sum(-1)  # (K, L)
    return [finalize(pb, maps[k], {"score_input": float(s[0, k]), "norm": norm}) for k, pb in enumerate(problems)]


def _integrated_gradients(problems: Sequence[AttributionProblem], objective: CausalLMFamilyObjective,
                          p: Mapping[str, object]) -> list[MethodOutput] | None:
    first = problems[0]
    if any(not bool((pb.eligible == first.eligible).all()) for pb in problems):
        return None                                  # different E: different paths, nothing to share
    path = ig_path(first, p)
    K = len(problems)
    total = torch.zeros((K, *path.x.shape), dtype=path.x.dtype, device=path.x.device)   # (K, L, d)
    def chunk(sl: slice) -> Tensor:                                              # (K, L, d)
        _, g = objective.grads(path.points(sl))                            # (K, b, L, d)
        return (path.weights[sl].view(1, -1, 1, 1) * g).sum(1)

    for part in map_batches(chunk, path.steps, path.batch_size, problem=first, kind="backward", members=K,
                            progress=bool(p["_progress"]), desc="integrated_gradients (each target)"):
        total = total + part
    with torch.no_grad():
        s = objective(torch.stack([path.x, path.x0]))                            # (2, K)
    return [ig_finish(pb, path, total[k], float(s[0, k]), float(s[1, k])) for k, pb in enumerate(problems)]


@torch.no_grad()
def _occlusion(problems: Sequence[AttributionProblem], objective: CausalLMFamilyObjective,
               p: Mapping[str, object]) -> list[MethodOutput]:
    first = problems[0]
    op = check_operator(first, p["operator"])
    union = torch.zeros_like(first.eligible)
    for pb in problems:
        union |= pb.eligible
    pos = torch.nonzero(union).flatten()                                         # (M,)
    M, L = int(pos.numel()), first.length
    drop = torch.zeros(M, L, dtype=torch.bool, device=first.embeds.device)
    drop[torch.arange(M, device=pos.device), pos] = True                         # one feature per row
    # every member's "all of E_k perturbed" row, then the input itself: one more batch
    extra = torch.stack([pb.eligible for pb in problems])                        # (K, L)
    rows = torch.cat([drop, extra])                                              # (M + K, L)
    subs: dict[tuple[int, ...], CausalLMFamilyObjective] = {}
    def chunk(sl: slice) -> Tensor:                                              # (b, K)
        embeds, keep = _replace(first, union, op, rows[sl])
        return _scores(objective, embeds, keep, subs)

    s_all = torch.cat(map_batches(chunk, rows.shape[0], batch_param(p), problem=first, members=len(problems),
                                  progress=bool(p["_progress"]), desc="occlusion (each target)"))  # (M + K, K)
    s_in = objective(first.embeds.unsqueeze(0))[0]                               # (K,)
    results = []
    for k, pb in enumerate(problems):
        scores = torch.zeros(L, dtype=first.embeds.dtype, device=first.embeds.device)
        own = pb.eligible[pos]                                                   # (M,) rows member k reads
        # a row that deletes one of member k's targets is never one member k reads (its E holds none)
        assert not bool(torch.isnan(s_all[:M, k][own]).any()) and not bool(torch.isnan(s_all[M + k, k]))
        scores[pos[own]] = s_in[k] - s_all[:M, k][own]
        results.append(finalize(pb, scores, {"score_input": float(s_in[k]), "score_baseline": float(s_all[M + k, k]),
                                             "operator": op, "evaluations": int(pb.eligible.sum()) + 2}))
    return results


def _scores(objective: CausalLMFamilyObjective, embeds: Tensor, keep: Tensor | None,
            subs: dict[tuple[int, ...], CausalLMFamilyObjective]) -> Tensor:
    """``objective(embeds, keep)`` ``(b, K)``, with rows that delete some member's target scored for
    the other members only (``NaN`` for the members whose targets are gone).

    Under ``delete`` a target is rescored at its frozen id, so a forward that deletes position
    ``t`` cannot score a member whose target is ``t``; but another member's E may hold ``t``
    (``local_next_token``: ``y[j]`` is in the prefix of every later target), and the
    single-target contract of that member deletes it. Each pattern of surviving members is scored
    by a family objective over those members alone (kept in ``subs``), the same per-member
    computation as the single-target objective."""
    if keep is None:
        return objective(embeds, keep)
    members = objective.members
    alive = torch.stack([keep[:, list(mem)].all(-1) for mem in members], dim=-1)   # (b, K)
    if bool(alive.all()):
        return objective(embeds, keep)
    inner = objective.inner
    out = torch.full(alive.shape, float("nan"), dtype=embeds.dtype, device=embeds.device)  # (b, K)
    for pattern in torch.unique(alive, dim=0):                                   # (K,) bool
        ks = tuple(int(k) for k in torch.nonzero(pattern).flatten())
        if not ks:
            continue
        sub = subs.get(ks)
        if sub is None:
            sub = subs[ks] = CausalLMFamilyObjective(inner.model, inner.ids, [members[k] for k in ks],
                                                     inner.score, inner.alternative)
        rows = torch.nonzero((alive == pattern).all(-1)).flatten()               # (r,)
        cols = torch.tensor(ks, dtype=torch.long, device=embeds.device)
        out[rows.unsqueeze(1), cols.unsqueeze(0)] = sub(embeds[rows], keep[rows]).to(out.dtype)
    return out


def _replace(problem: AttributionProblem, union: Tensor, op: str, drop: Tensor) -> tuple[Tensor, Tensor | None]:
    """``problem.replace`` with the union of the members' E as the perturbable set."""
    from dataclasses import replace

    return replace(problem, eligible=union).replace(op, drop)


FAMILY_METHODS: dict[str, Callable[..., list[MethodOutput] | None]] = {
    "integrated_gradients": _integrated_gradients,
    "gradient_x_input": _gradient_x_input,
    "saliency": _saliency,
    "occlusion": _occlusion,
}


def run_family(name: str, problems: Sequence[AttributionProblem], params: Mapping[str, object] | None = None, *,
               seed: int = 0, progress: bool = False, shared: bool = True) -> tuple[list[MethodOutput], bool]:
    """Run method ``name`` on every member; ``(outputs, shared)`` where ``shared`` says whether
    the forwards were shared (``False``: member by member). ``shared=False`` forces the
    member-by-member path (the reference the shared one is tested against)."""
    canonical, resolved = prepare(name, params, seed, progress)
    impl = FAMILY_METHODS.get(canonical)
    objective = family_objective(problems) if (shared and impl is not None) else None
    if impl is not None and objective is not None:
        torch.manual_seed(seed)
        outs = impl(problems, objective, resolved)
        if outs is not None:
            for o in outs:
                o.info.setdefault("method", canonical)
                o.info.setdefault("seed", int(seed))
                o.info["family_shared"] = 1
            return outs, True
    outs = []
    for pb in problems:
        torch.manual_seed(seed)
        outs.append(run_method(canonical, pb, params, seed=seed, progress=progress))
    return outs, False


__all__ = ["FAMILY_METHODS", "batched_grads", "family_objective", "run_family", "vjps"]
