"""The probabilistic attribution score AS of seed 003 (eqs. 3-15), computed exactly.

For an eligible position ``i`` with actual token ``x_i``:

    AS_i = log p(y | x) - log p(y | x_{-i})                                         (3)

where ``x_{-i}`` leaves the *value* of ``x_i`` unobserved (the sequence is not shortened).
With ``q(v) = p(x_i = v | x_<i)``, ``c(v) = p(x_>i | x_<i, x_i = v)`` (the non-target tokens
after ``i``) and ``r(v) = p(y | x with x_i = v)``, all read off next-token log-probs,
Bayes' rule gives (eqs. 4-9)

    p(x_i = v | x_{-i})    = q(v) c(v) / sum_u q(u) c(u)
    p(y | x_{-i})          = sum_v q(v) c(v) r(v) / sum_v q(v) c(v).

The sums run over the nucleus of ``q`` (smallest set of most likely tokens with mass
``>= top_p``) plus the actual token, renormalised: the truncation the paper proposes as
future work; ``top_p = 1`` sums over the whole vocabulary (one forward per token ``v``,
batched), the exact AS. The default, ``top_p = 0.9999``, is the truncation that stayed within
1e-3 of exact AS on every model measured (``benchmarks/as_measure.py``: 9.3e-5 with 11x fewer
forward rows on stories260k, exact to 1e-15 on the reference models); the result states it.
The contextual entropies are those of ``p(x_i | x_{-i})`` (prompt only, eq. 13) and
``p(x_i | x_{-i}, y)`` ∝ ``q c r`` (prompt + response, eq. 14), and the KL of eq. 15 is
``KL(p(x_i | x_{-i}, y) || p(x_i | x_{-i}))``; they are reported per position in ``info`` as
``H_prompt@i``, ``H_full@i`` and ``KL@i`` (nats).

AS is defined on ``log p(y | x)``: this method scores the teacher-forced log-probability of
the target tokens whatever the problem's S is (``info['score']`` says so). Non-target
positions after the last target are not part of the chain; non-target positions between
targets count as context ``c`` (exact when the targets form the contiguous end of the
sequence, as in every prompt-level contract).
"""

from __future__ import annotations

from typing import Mapping

import torch

from scopecheck.engine.methods._common import INTERNAL_BATCH, batches, finalize, positions, resolve_params
from scopecheck.engine.problem import AttributionProblem, MethodOutput

Tensor = torch.Tensor


def nucleus(logq: Tensor, top_p: float, actual: int) -> Tensor:
    """Token ids of the smallest most-likely set with mass >= top_p, plus ``actual``."""
    if top_p >= 1.0:
        return torch.arange(logq.numel(), device=logq.device)
    order = torch.argsort(logq, descending=True)
    mass = torch.cumsum(logq[order].exp(), 0)
    n = int(torch.searchsorted(mass, torch.tensor(top_p, dtype=mass.dtype, device=mass.device)).item()) + 1
    keep = order[: min(n, logq.numel())]
    if not bool((keep == actual).any()):
        keep = torch.cat([keep, torch.tensor([actual], device=keep.device)])
    return keep


def _entropy(logp: Tensor) -> float:
    return float(-(logp.exp() * logp).sum())


def probabilistic_as(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    p = resolve_params("probabilistic_as", params)
    top_p = float(p["top_p"])  # type: ignore[arg-type]
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"probabilistic_as: top_p must lie in (0, 1], got {top_p}")
    at_rows = getattr(problem.logprobs, "at_rows", None)
    if at_rows is None or problem.vocab_embeds is None:
        raise ValueError("probabilistic_as needs next-token log-probs at every row (logprobs.at_rows) and the "
                         "vocabulary embeddings; build the problem with scopecheck.engine.scoring.causal_lm_problem")
    if not problem.target_rows:
        raise ValueError("probabilistic_as needs target rows")
    L = problem.length
    targets = sorted(r + 1 for r in problem.target_rows)
    last = max(targets)
    pos = positions(problem)
    if bool((pos == 0).any()):
        raise ValueError("probabilistic_as cannot marginalise position 0: there is no p(x_0 | x_<0)")
    if bool((pos >= last).any()):
        raise ValueError("probabilistic_as: eligible positions must precede the last target")
    ids = problem.ids
    x = problem.embeds                                                        # (L, d)
    vocab = problem.vocab_embeds.to(x)                                        # (V, d)
    is_target = torch.zeros(L + 1, dtype=torch.bool)
    is_target[targets] = True

    with torch.no_grad():
        base = at_rows(x.unsqueeze(0), None, list(range(L - 1)))[0]           # (L-1, V): row j -> token j+1
        chain = base.gather(-1, ids[1:].unsqueeze(-1)).squeeze(-1).double().cpu()  # (L-1,) log p(ids[j+1]|<=j)
    logp_y = float(chain[[t - 1 for t in targets]].sum())                     # log p(y | x)

    scores = torch.zeros(L, dtype=x.dtype, device=x.device)
    info: dict[str, object] = {"score": "log p(y|x) (teacher-forced target log-prob)", "score_input": logp_y,
                               "top_p": top_p}
    n_cand_total = 0
    for i in pos.tolist():
        logq_full = base[i - 1].double().cpu()                                 # (V,) log p(x_i = v | x_<i)
        cand = nucleus(logq_full, top_p, int(ids[i]))                         # (K,)
        logq = logq_full[cand]
        rows = list(range(i, last))                                           # rows i..last-1 predict i+1..last
        nxt = ids[i + 1: last + 1]                                            # (n_rows,)
        tmask = is_target[i + 1: last + 1]                                    # (n_rows,) target factor?
        logc = torch.empty(cand.numel(), dtype=torch.float64)
        logr = torch.empty(cand.numel(), dtype=torch.float64)
        with torch.no_grad():
            for sl in batches(cand.numel(), INTERNAL_BATCH, bool(p["_progress"]), f"AS position {i}"):
                b = sl.stop - sl.start
                e = x.unsqueeze(0).repeat(b, 1, 1)                            # (b, L, d)
                e[:, i] = vocab[cand[sl].to(vocab.device)]                    # x_i = v, nothing else changes
                lp = at_rows(e, None, rows)                                   # (b, n_rows, V)
                tok = lp.gather(-1, nxt.view(1, -1, 1).expand(b, -1, 1)).squeeze(-1).double().cpu()  # (b, n_rows)
                logc[sl] = tok[:, ~tmask].sum(-1)
                logr[sl] = tok[:, tmask].sum(-1)
        prior = logq - torch.logsumexp(logq, 0)                               # renormalised over the candidates
        post_prompt = prior + logc
        post_prompt = post_prompt - torch.logsumexp(post_prompt, 0)           # log p(x_i = v | x_{-i})
        joint = post_prompt + logr
        log_marg = float(torch.logsumexp(joint, 0))                           # log p(y | x_{-i})
        post_full = joint - log_marg                                          # log p(x_i = v | x_{-i}, y)
        scores[i] = logp_y - log_marg
        info[f"H_prompt@{i}"] = _entropy(post_prompt)
        info[f"H_full@{i}"] = _entropy(post_full)
        info[f"KL@{i}"] = float((post_full.exp() * (post_full - post_prompt)).sum())
        n_cand_total += int(cand.numel())
    info["candidates_per_position"] = n_cand_total / max(1, int(pos.numel()))
    info["evaluations"] = n_cand_total
    return finalize(problem, scores, info)


__all__ = ["probabilistic_as", "nucleus"]
