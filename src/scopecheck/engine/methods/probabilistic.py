"""The probabilistic attribution score AS of seed 003 (eqs. 3-15), computed exactly.

For an eligible position ``i`` with actual token ``x_i``:

    AS_i = log p(y | x) - log p(y | x_{-i})                                         (3)

where ``x_{-i}`` leaves the *value* of ``x_i`` unobserved (the sequence is not shortened).
With ``q(v) = p(x_i = v | x_<i)``, ``c(v) = p(x_>i | x_<i, x_i = v)`` (the non-target tokens
after ``i``) and ``r(v) = p(y | x with x_i = v)``, all read off next-token log-probs,
Bayes' rule gives (eqs. 4-9)

    p(x_i = v | x_{-i})    = q(v) c(v) / sum_u q(u) c(u)
    p(y | x_{-i})          = sum_v q(v) c(v) r(v) / sum_v q(v) c(v).

Exact AS sums over the whole vocabulary: one chain ``c(v) r(v)`` (rows ``i..last-1``) per
token ``v``. Two truncations cut that work (the paper proposes truncation as future work):

* ``top_p``: only the nucleus of ``q`` (smallest set of most likely tokens with mass
  ``>= top_p``, plus the actual token) is summed, renormalised; ``top_p = 1`` keeps every token.
* ``prune``: the chains are read in stages (row ``i``, rows up to ``i+1``, then doubling: up to
  ``i+3``, ``i+7``, ...; the clean prefix comes from the KV cache, and the survivors of a stage
  carry their key/value state into the next, within ``STATE_BYTES``, so no position is read
  twice). After each stage the candidates outside the ``1 - prune`` nucleus of both partial
  posteriors (``q c`` and ``q c r`` over the rows read so far) are dropped; the rest read on.
  After the first row the cut is 100x looser (``FIRST_ROW_PRUNE``): a tail token of ``q`` whose
  second row makes the next tokens likely is still found, while the bulk of the nucleus that no
  row can bring back stops after one position. When a later stage drops fewer than half, the
  survivors read the whole chain. A dropped candidate is not counted as zero: its unread rows
  are taken to scale its partial mass as they scale the kept candidates' (in both sums, so
  ``log p(y | x_{-i})`` gains ``sum over stages of log(1 + dropped/kept)`` of the ``q c r``
  masses minus that of the ``q c`` masses). The estimate stays between dropping them and
  counting their partial mass in full, which bound the exact sums (log-probs are <= 0).

The defaults, ``top_p = 0.999999`` and ``prune = 5e-5``, stayed within 3.2e-4 of exact AS on
every prompt measured (``benchmarks/as_measure.py``: five stories260k prompts, the reference
models) with 52.6x fewer token positions run on stories260k (20-66x per prompt, more for longer
prompts); ``prune = 1e-5`` stayed within 2.3e-5 at 35x, ``prune = 1e-4`` within 7.1e-4 at 60x.
Nucleus truncation costs accuracy first: ``top_p = 0.9999`` alone is 1.1e-3 off,
``top_p = 0.99999`` with ``prune = 1e-4`` 1.1e-3. ``top_p = 1, prune = 0`` is the exact
full-vocabulary AS. On the reference models the default is within 1.8e-4 of exact AS (1.75e-4,
translate-ar, cat-white) and 1e-3 nats of the exact entropies (H_full 9.7e-4, H_prompt 6.9e-4),
all of it from ``prune`` (``tests/engine/test_as_reference.py``). The result states both settings, the candidates summed, the largest
posterior mass dropped and the largest extrapolated correction (``pruned_extrapolation_max``).

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

import math
from typing import Mapping

import torch

from scopecheck.engine.methods._common import finalize, positions, resolve_params
from scopecheck.runtime.batching import INTERNAL_BATCH, batches
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused

Tensor = torch.Tensor


def _top_mass(probs: Tensor, mass: float) -> Tensor:
    """Indices of the smallest set of largest entries of ``probs`` ``(K,)`` (a distribution)
    holding ``>= mass`` of it, largest first."""
    order = torch.argsort(probs, descending=True)
    cum = torch.cumsum(probs[order], 0)
    n = int(torch.searchsorted(cum, torch.tensor(mass, dtype=cum.dtype, device=cum.device)).item()) + 1
    return order[: min(n, probs.numel())]


def nucleus(logq: Tensor, top_p: float, actual: int) -> Tensor:
    """Token ids of the smallest most-likely set with mass >= top_p, plus ``actual``."""
    if top_p >= 1.0:
        return torch.arange(logq.numel(), device=logq.device)
    keep = _top_mass(logq.exp(), top_p)
    if not bool((keep == actual).any()):
        keep = torch.cat([keep, torch.tensor([actual], device=keep.device)])
    return keep


#: rows read before the first pruning at ``prune`` (one row let a rare token whose second row
#: multiplies its posterior by 100 be dropped; two rows cut the worst error 6x at equal work)
FIRST_PRUNED_ROWS = 2
#: after the first row, only candidates outside the ``1 - prune * FIRST_ROW_PRUNE`` nucleus are
#: dropped (a 100x looser cut: on stories260k no error moved at prune 1e-5 to 1e-4, and the
#: positions run fell by 9-18%, as_measure.py)
FIRST_ROW_PRUNE = 0.01

#: most key/value state kept for the candidates that read on (else they re-read from position i)
STATE_BYTES = 256 * 2 ** 20


def _entropy(logp: Tensor) -> float:
    return float(-(logp.exp() * logp).sum())


def _survivors(weights: list[Tensor], prune: float, always: int | None) -> tuple[Tensor, float, list[float]]:
    """Candidates kept after a stage: for each log-weight vector ``(K,)``, the smallest set of
    largest weights holding ``>= 1 - prune`` of its normalised mass (union over the vectors), plus
    ``always``. Returns the keep mask ``(K,)``, the largest normalised mass dropped, and per vector
    ``log(1 + dropped / kept)`` of its (partial) mass: the factor by which the dropped candidates,
    extrapolated like the kept ones, would scale the kept candidates' final sum."""
    posts = [(w - torch.logsumexp(w, 0)).exp() for w in weights]             # (K,) each, normalised
    keep = torch.zeros(weights[0].numel(), dtype=torch.bool)
    for post in posts:
        keep[_top_mass(post, 1.0 - prune)] = True
    if always is not None:
        keep[always] = True
    if bool(keep.all()):
        return keep, 0.0, [0.0] * len(weights)
    grow = [math.log1p(math.exp(float(torch.logsumexp(w[~keep], 0) - torch.logsumexp(w[keep], 0))))
            for w in weights]
    return keep, max(float(post[~keep].sum()) for post in posts), grow


def probabilistic_as(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    p = resolve_params("probabilistic_as", params)
    top_p = float(p["top_p"])  # type: ignore[arg-type]
    if not 0.0 < top_p <= 1.0:
        raise MethodRefused(f"probabilistic_as: top_p must lie in (0, 1], got {top_p}")
    prune = float(p["prune"])  # type: ignore[arg-type]
    if not 0.0 <= prune <= 0.5:
        raise MethodRefused(f"probabilistic_as: prune must lie in [0, 0.5], got {prune}")
    at_rows = getattr(problem.logprobs, "at_rows", None)
    state_bytes = getattr(problem.logprobs, "state_bytes", None)              # optional: read_on usable
    if at_rows is None or problem.vocab_embeds is None:
        raise MethodRefused("probabilistic_as needs next-token log-probs at every row (logprobs.at_rows) and the "
                            "vocabulary embeddings; build the problem with "
                            "scopecheck.engine.scoring.causal_lm_problem")
    if not problem.target_rows:
        raise MethodRefused("probabilistic_as needs target rows")
    L = problem.length
    targets = sorted(r + 1 for r in problem.target_rows)
    last = max(targets)
    pos = positions(problem)
    if bool((pos == 0).any()):
        raise MethodRefused("probabilistic_as cannot marginalise position 0: there is no p(x_0 | x_<0)")
    if bool((pos >= last).any()):
        raise MethodRefused("probabilistic_as: eligible positions must precede the last target")
    ids = problem.ids
    x = problem.embeds                                                        # (L, d)
    vocab = problem.vocab_embeds.to(x)                                        # (V, d)
    is_target = torch.zeros(L + 1, dtype=torch.bool)
    is_target[targets] = True

    with torch.no_grad():
        base = at_rows(x[:last].unsqueeze(0), None, list(range(last)))[0]     # (last, V): row j -> token j+1
        chain = base.gather(-1, ids[1:last + 1].unsqueeze(-1)).squeeze(-1).double().cpu()  # log p(ids[j+1]|<=j)
    logp_y = float(chain[[t - 1 for t in targets]].sum())                     # log p(y | x)

    scores = torch.zeros(L, dtype=x.dtype, device=x.device)
    info: dict[str, object] = {"score": "log p(y|x) (teacher-forced target log-prob)", "score_input": logp_y,
                               "top_p": top_p, "prune": prune}
    n_cand = n_kept = n_eval = 0
    counts = getattr(problem.logprobs, "forward_counts", None)
    pos0 = counts["positions"] if counts is not None else 0
    dropped_max = extra_max = 0.0
    for i in pos.tolist():
        logq_full = base[i - 1].double().cpu()                                 # (V,) log p(x_i = v | x_<i)
        cand = nucleus(logq_full, top_p, int(ids[i]))                         # (K,)
        logq = logq_full[cand]
        n = last - i                                                          # chain rows i..last-1
        nxt = ids[i + 1: last + 1]                                            # (n,) tokens they predict
        tmask = is_target[i + 1: last + 1]                                    # (n,) target factor?
        tok = torch.zeros(cand.numel(), n, dtype=torch.float64)               # (K, n) chain log-probs
        alive = torch.arange(cand.numel())                                    # candidates still summed
        actual = int((cand == ids[i]).nonzero()[0, 0])
        extra = 0.0                                                           # log-odds the dropped add back
        h = n if prune == 0.0 else 1                                          # rows read this stage
        done = 0                                                              # rows already read by alive
        state: list[tuple[Tensor, Tensor]] | None = None                      # per layer, (|alive|, H, i+done, hd)
        while True:
            # the alive candidates' chain over rows done..h-1 (after i): carried on from their
            # key/value state when the previous stage kept it, else read from i (cut after i+h-1)
            per_pos = state_bytes() if state_bytes is not None and state is None and h < n else None
            keep_state = per_pos is not None and alive.numel() * (i + n) * per_pos <= STATE_BYTES
            new_state: list[list[tuple[Tensor, Tensor]]] = []                 # per batch slice, per layer
            with torch.no_grad():
                for sl in batches(alive.numel(), INTERNAL_BATCH, bool(p["_progress"]), f"AS position {i}"):
                    idx = alive[sl]
                    b = idx.numel()
                    first = vocab[cand[idx].to(vocab.device)].unsqueeze(1)    # (b, 1, d): x_i = v
                    if state is not None:
                        lp, st = problem.logprobs.read_on(  # type: ignore[union-attr]
                            x[i + done: i + h].unsqueeze(0).expand(b, -1, -1), i + done,
                            [(kk[sl], vv[sl]) for kk, vv in state])
                    elif keep_state:
                        lp, st = problem.logprobs.read_on(  # type: ignore[union-attr]
                            torch.cat([first, x[i + 1: i + h].unsqueeze(0).expand(b, -1, -1)], 1), i)
                    else:
                        e = x[: i + h].unsqueeze(0).repeat(b, 1, 1)           # (b, i+h, d)
                        e[:, i] = first[:, 0]                                 # nothing else changes
                        lp, st = at_rows(e, None, list(range(i + done, i + h))), None  # (b, h-done, V)
                    tok[idx, done:h] = lp.gather(-1, nxt[done:h].view(1, -1, 1).expand(b, -1, 1)
                                                 ).squeeze(-1).double().cpu()
                    if st is not None:
                        new_state.append(st)
                    n_eval += b
            if h == n:
                break
            # prune on the partial posteriors p(x_i | x_{-i}) ∝ q c and p(x_i | x_{-i}, y) ∝ q c r
            part = tok[alive, :h]
            wc = logq[alive] + part[:, ~tmask[:h]].sum(-1)
            cut = prune * FIRST_ROW_PRUNE if h < FIRST_PRUNED_ROWS else prune
            keep, dropped, (grow_c, grow_cr) = _survivors([wc, wc + part[:, tmask[:h]].sum(-1)], cut,
                                                          int((alive == actual).nonzero()[0, 0]))
            dropped_max = max(dropped_max, dropped)
            extra += grow_cr - grow_c
            if h < FIRST_PRUNED_ROWS:                                         # on to the first real cut
                nxt_h = min(n, FIRST_PRUNED_ROWS)
            elif 2 * int(keep.sum()) > alive.numel():                         # most candidates still in play:
                nxt_h = n                                                     # stages would cost more than they save
            else:
                nxt_h = min(n, 2 * h)
            state, done = None, 0
            if new_state:                                                     # survivors carry on from h
                state = [(torch.cat([k for k, _ in layer])[keep], torch.cat([v for _, v in layer])[keep])
                         for layer in zip(*new_state)]                        # (|survivors|, H, i+h, hd) per layer
                done = h
            h = nxt_h
            alive = alive[keep]
        logq, tok = logq[alive], tok[alive]
        logc, logr = tok[:, ~tmask].sum(-1), tok[:, tmask].sum(-1)            # (K',)
        prior = logq - torch.logsumexp(logq, 0)                               # renormalised over the candidates
        post_prompt = prior + logc
        post_prompt = post_prompt - torch.logsumexp(post_prompt, 0)           # log p(x_i = v | x_{-i})
        joint = post_prompt + logr
        log_kept = float(torch.logsumexp(joint, 0))
        post_full = joint - log_kept                                          # log p(x_i = v | x_{-i}, y), kept v
        # log p(y | x_{-i}); a dropped candidate counts as extrapolated: the rows it did not read
        # scale its partial mass as they scale the kept candidates' (in both sums)
        log_marg = log_kept + extra
        extra_max = max(extra_max, abs(extra))
        scores[i] = logp_y - log_marg
        info[f"H_prompt@{i}"] = _entropy(post_prompt)
        info[f"H_full@{i}"] = _entropy(post_full)
        info[f"KL@{i}"] = float((post_full.exp() * (post_full - post_prompt)).sum())
        n_cand += int(cand.numel())
        n_kept += int(alive.numel())
    E = max(1, int(pos.numel()))
    info["candidates_per_position"] = n_cand / E
    info["summed_per_position"] = n_kept / E
    info["evaluations"] = n_eval
    if counts is not None:                                                    # token positions the model ran
        info["positions_run"] = problem.logprobs.forward_counts["positions"] - pos0  # type: ignore[union-attr]
    info["pruned_mass_max"] = dropped_max
    info["pruned_extrapolation_max"] = extra_max                              # nats added to log p(y | x_{-i})
    return finalize(problem, scores, info)


__all__ = ["probabilistic_as", "nucleus"]
