"""Stage perturbation (denoising-stage contracts; seed 000, sections 4.2 and 5).

``A(stage s) = S(chain) - S(chain with pert(s))``: the chain estimator of the original
output ``y`` along the recorded chain minus the same estimator along the chain in which
stage ``s`` is perturbed (``noop``: the stage commits nothing; ``schedule``: it commits
``shift`` more or fewer slots; ``substitute``: it commits the best other token, or a
resample with another seed) and the rest of the chain is then run to completion with the
recorded sampler settings and seed. One batched chain run covers every stage.
"""

from __future__ import annotations

from typing import Mapping

import torch

from scopecheck.engine.methods._common import finalize
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import Unavailable


def stage_perturbation(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    op = str(params["perturbation"])
    if op not in problem.operators:
        known = ", ".join(sorted(problem.operators))
        raise Unavailable(f"stage_perturbation needs a denoising-stage problem with perturbation {op!r}; "
                          f"available: {known or 'none (this is not a stage contract)'}")
    K = problem.length
    pos = problem.eligible_positions
    drop = torch.zeros(1 + len(pos), K, dtype=torch.bool)
    for r, j in enumerate(pos, 1):
        drop[r, j] = True
    embeds, keep = problem.replace(op, drop)
    with torch.no_grad():
        s = problem.objective(embeds, keep).to(torch.float64).cpu()                    # (1 + |E|,)
    scores = torch.zeros(K, dtype=torch.float64)
    scores[pos] = s[0] - s[1:]
    changed = getattr(problem.objective, "changed", [])[-len(pos):]
    info = {"score_input": float(s[0]), "perturbation": op, "chain_runs": 1,
            "outputs_changed": int(sum(bool(c) for c in changed))}
    return finalize(problem, scores.to(problem.embeds.dtype), info)
