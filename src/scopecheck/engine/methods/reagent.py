"""ReAGent (Zhao & Shan 2024): recursive replacement of random eligible tokens.

At each step a random subset R of ``max(1, round(ratio * M))`` eligible tokens is replaced
by plausible alternatives and the drop ``dS = S(input) - S(replaced)`` is measured; the
importance logit of every token in R rises by ``dS`` and that of every other eligible token
falls by ``dS`` (the additive update of the reference implementation's ``_imp`` evaluator,
which works for any score scale; the original maps a *probability* drop through a logit).

Choices (reported in ``info``):

* Replacement model: the same causal LM. For eligible position ``i`` the candidates are the
  top-10 tokens of ``p(. | x_<i)`` (the model's own next-token prediction at row ``i-1`` on
  the unperturbed input) excluding the actual token, sampled proportionally to their
  renormalised probabilities. Where row log-probs are not available (no
  ``logprobs.at_rows``) or ``i = 0``, a uniformly random other vocabulary token is used.
  The paper uses a RoBERTa MLM; a second model is not part of the contract.
* Steps are independent draws (no stopping condition), so all ``steps`` replacements are
  scored in batches. The map is the importance logit averaged over steps; ReAGent's
  published output is ``softmax`` of the accumulated logit, a monotone transform of it.
"""

from __future__ import annotations

from typing import Mapping

import torch

from scopecheck.engine.methods._common import (
    finalize,
    generator,
    positions,
    resolve_params,
    score_input,
)
from scopecheck.runtime.batching import INTERNAL_BATCH, batches
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused

Tensor = torch.Tensor

TOP_K = 10


def _proposals(problem: AttributionProblem, pos: Tensor) -> tuple[list[tuple[Tensor, Tensor] | None], str]:
    """Per eligible position: candidate tokens ``(K,)`` with probabilities ``(K,)``, or
    ``None`` for "uniform over every other vocabulary token"."""
    V = int(problem.vocab_embeds.shape[0])  # type: ignore[union-attr]
    at_rows = getattr(problem.logprobs, "at_rows", None)
    K = min(TOP_K, V - 1)
    lp = None
    if at_rows is not None:
        rows = [max(int(i) - 1, 0) for i in pos]
        with torch.no_grad():
            lp = at_rows(problem.embeds.unsqueeze(0), None, rows)[0].double().cpu()  # (M, V)
    out: list[tuple[Tensor, Tensor] | None] = []
    for m, i in enumerate(pos.tolist()):
        if lp is None or i == 0:
            out.append(None)
            continue
        logits = lp[m].clone()
        logits[int(problem.ids[i])] = float("-inf")                           # never the actual token
        top = torch.topk(logits, K)
        out.append((top.indices, torch.softmax(top.values, 0)))
    source = "model top-10 next-token predictions" if lp is not None else "uniform random vocabulary tokens"
    return out, source


def reagent(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    p = resolve_params("reagent", params)
    steps, ratio = int(p["steps"]), float(p["ratio"])  # type: ignore[arg-type]
    if not 0.0 < ratio <= 1.0:
        raise MethodRefused(f"reagent: ratio must lie in (0, 1], got {ratio}")
    if problem.vocab_embeds is None:
        raise MethodRefused("reagent replaces tokens and needs the vocabulary embedding matrix")
    pos = positions(problem)
    M = int(pos.numel())
    s_in = score_input(problem)
    if M == 0:
        return finalize(problem, torch.zeros_like(problem.embeds[:, 0]), {"score_input": s_in})
    V = int(problem.vocab_embeds.shape[0])
    k = max(1, round(ratio * M))
    g = generator(p["_seed"])
    proposals, source = _proposals(problem, pos)
    # replaced subsets (steps, M) and replacement tokens (steps, M)
    ranks = torch.rand(steps, M, generator=g).argsort(1).argsort(1)
    replaced = ranks < k                                                      # (steps, M)
    tokens = torch.empty(steps, M, dtype=torch.long)
    for m, prop in enumerate(proposals):
        if prop is None:                                                      # uniform over the other tokens
            t = torch.randint(0, V - 1, (steps,), generator=g)
            tokens[:, m] = t + (t >= int(problem.ids[pos[m]])).long()
        else:
            cand, prob = prop
            tokens[:, m] = cand[torch.multinomial(prob, steps, replacement=True, generator=g)]
    dev = problem.embeds.device
    vocab = problem.vocab_embeds
    drops = []
    with torch.no_grad():
        for sl in batches(steps, INTERNAL_BATCH, bool(p["_progress"]), "reagent"):
            b = sl.stop - sl.start
            e = problem.embeds.unsqueeze(0).repeat(b, 1, 1)                  # (b, L, d)
            rep = replaced[sl].to(dev)                                        # (b, M)
            new = vocab[tokens[sl].to(dev)]                                   # (b, M, d)
            cur = e[:, pos]                                                   # (b, M, d)
            e[:, pos] = torch.where(rep.unsqueeze(-1), new, cur)              # only eligible rows change
            drops.append(s_in - problem.objective(e).detach())
    dS = torch.cat(drops).double().cpu()                                      # (steps,)
    sign = replaced.double() * 2.0 - 1.0                                      # +1 replaced, -1 kept
    logit = (sign * dS.unsqueeze(1)).mean(0)                                  # (M,)
    scores = torch.zeros(problem.length, dtype=problem.embeds.dtype, device=dev)
    scores[pos] = logit.to(scores)
    return finalize(problem, scores, {
        "score_input": s_in, "steps": steps, "ratio": ratio, "replaced_per_step": k,
        "replacement": source, "mean_score_drop": float(dS.mean()),
    })
