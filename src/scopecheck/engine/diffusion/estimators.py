"""Scores of a masked-diffusion output, each with a stated estimator (DESIGN section 3).

``log p(y | x)`` is intractable for masked diffusion, so every output score names how it
is estimated. All of them are sums of ``log p(y_i | x, z)`` over *reads*: a read is a
conditioning state ``z`` (which response slots are visible, the others masked) and a set
of slots whose tokens are scored in it, with a weight. One batched forward per read,
differentiable with respect to the input embeddings (so gradient methods can run through
the estimator), in :func:`score_reads`.

* ``chain``  -- the recorded chain, teacher-forced: one read per stage, the state before
  the stage and the slots it committed. ``sum_s sum_{i in C_s} log p(y_i | x, z[s])``.
* ``pll``    -- pseudo-log-likelihood: one read per slot, every other slot visible. Not a
  likelihood (it over-counts shared information); reported as such.
* ``elbo``   -- Monte Carlo masked-diffusion ELBO (MDLM/LLaDA): ``E_t [ (1/t) sum_{i masked}
  log p(y_i | x, z_t) ]``, ``t ~ U(0, 1)``, each slot masked with probability ``t``; a lower
  bound on ``log p(y | x)``. Sampled as ``t_j = (j + u_j) / k`` (stratified over ``samples
  = k``) and a mask pattern ``M_j`` drawn at ``t_j``; the weight ``1/t`` is replaced by its
  expectation given the pattern, ``E[1/t | M] = (R + 1) / |M|`` (the posterior of ``t`` given
  ``|M| = m`` masked of ``R`` is ``Beta(m + 1, R - m + 1)``). The expectation is unchanged
  (a pattern with ``m`` masked has probability ``B(m + 1, R - m + 1)``, and ``B(m + 1, R - m +
  1) (R + 1) / m = B(m, R - m + 1)``, the ELBO's weight of that pattern) while the weight is
  bounded by ``R + 1``: with ``1/t`` itself the per-sample variance diverges (``|M| = 1`` has
  probability ``~R t`` and weight ``1/t``, so ``E[X^2] ~ int dt / t``) and the sample standard
  error did not shrink as ``1/sqrt(k)``. The estimate is the *mean* of the ``k`` terms ``X_j
  = (R + 1) / |M_j| sum_{i in M_j} log p(y_i | x, z_{M_j})``, so each read carries the weight
  ``(R + 1) / (k |M_j|)`` and the sum over reads that every consumer takes (the score, maps,
  gradients, checks) is that mean. Its standard error is ``std_j(X_j) / sqrt(k)``
  (:func:`elbo_estimate`; conservative under the stratification). Seeded: with a fixed seed
  the reads, and so the value on CPU, are reproducible bitwise.
  For a *block-causal* denoiser (``block = S``) the ELBO is BD3-LM's: the sum over blocks of
  each block's masked-diffusion ELBO given the prompt and the *clean* earlier blocks,
  ``sum_b E_t [ (1/t) sum_{i in b masked} log p(y_i | x, y[<b], z_t^b) ]`` (the model never
  sees a noisy earlier block). Sample ``j`` draws one ``t_j`` and one pattern; block ``b`` is
  one read of it (earlier blocks visible, the block masked as drawn, weight ``(R_b + 1) / (k
  |M_jb|)``), the reads of sample ``j`` share its group, so the standard error is unchanged
  in form. With one block it is the ELBO above, read for read.
* ``state``  -- ``log p(z[t] | x, z[>t])``: one read, the state ``z[t + 1]`` and the slots
  stage ``t + 1`` committed.

Every estimator is ``sum_reads weight * sum_{scored} log p``: the weights make that sum the
estimate itself (``1`` for chain, pll and state; ``(R + 1) / (k |M_j|)`` for the ELBO), so no consumer
normalises by the number of reads.

Any-order identity: the chain of a one-slot-per-stage sampler in a uniformly random order
has expectation equal to the ELBO, exactly: a state with ``m`` of ``R`` slots masked and one
of them scored is read by ``(R - m)! (m - 1)!`` of the ``R!`` orders, which is the ELBO's
weight ``B(m, R - m + 1) = int t^(m-1) (1-t)^(R-m) dt`` of that mask pattern (tested by
enumerating both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from scopecheck.engine.diffusion.chain import Chain
from scopecheck.engine.diffusion.denoiser import Denoiser
from scopecheck.spec.vocabulary import ESTIMATORS  # the closed vocabulary, defined once

Tensor = torch.Tensor

#: Rows per forward when reads x batch exceed it.
MAX_ROWS = 1024


@dataclass(frozen=True)
class Reads:
    visible: Tensor        # (S, R) bool: slots visible in the read's state
    scored: Tensor         # (S, R) bool: slots whose target token is scored
    weight: Tensor         # (S,) float64: the read's share of the estimate (the reads sum to it)
    groups: Tensor         # (S,) long: which Monte Carlo sample / stage a read belongs to


def chain_reads(chain: Chain) -> Reads:
    R = chain.R
    vis, sc = [], []
    for step in chain.steps:
        if not step.positions:
            continue
        v = torch.zeros(R, dtype=torch.bool)
        v[chain.visible(step.stage)] = True
        s = torch.zeros(R, dtype=torch.bool)
        s[list(step.positions)] = True
        vis.append(v)
        sc.append(s)
    n = len(vis)
    return Reads(torch.stack(vis), torch.stack(sc), torch.ones(n, dtype=torch.float64), torch.arange(n))


def state_reads(chain: Chain, t: int) -> Reads:
    R = chain.R
    v = torch.zeros(1, R, dtype=torch.bool)
    v[0, chain.visible(t + 1)] = True
    s = torch.zeros(1, R, dtype=torch.bool)
    s[0, chain.committed(t)] = True
    return Reads(v, s, torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.long))


def pll_reads(R: int) -> Reads:
    eye = torch.eye(R, dtype=torch.bool)
    return Reads(~eye, eye, torch.ones(R, dtype=torch.float64), torch.arange(R))


def elbo_reads(R: int, samples: int, seed: int, block: int | None = None) -> Reads:
    """The ``samples`` reads of the ELBO (``block``: per block, given the clean earlier blocks)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    u = torch.rand(samples, generator=g, dtype=torch.float64)
    t = (torch.arange(samples, dtype=torch.float64) + u) / samples
    draws = torch.rand(samples, R, generator=g, dtype=torch.float64)
    masked = draws < t.unsqueeze(-1)                                            # (k, R)
    if block is None or block >= R:
        # the mean of the k terms E[1/t | M_j] sum_{M_j} log p, E[1/t | M] = (R + 1) / |M|: weight
        # (R + 1) / (k |M_j|); a pattern with nothing masked scores nothing
        m = masked.sum(-1).to(torch.float64)
        weight = torch.where(m > 0, (R + 1) / (samples * m.clamp(min=1)), torch.zeros_like(m))
        return Reads(~masked, masked, weight, torch.arange(samples))
    vis, sc, w, grp = [], [], [], []
    slot = torch.arange(R)
    for j in range(samples):
        for a in range(0, R, block):
            z = min(R, a + block)
            inside = (slot >= a) & (slot < z)
            mb = masked[j] & inside                                              # (R,) block b masked as drawn
            n = int(mb.sum())
            vis.append((slot < a) | (inside & ~mb))                              # clean earlier blocks
            sc.append(mb)
            w.append((z - a + 1) / (samples * n) if n else 0.0)
            grp.append(j)
    return Reads(torch.stack(vis), torch.stack(sc), torch.tensor(w, dtype=torch.float64), torch.tensor(grp))


def order_reads(order: list[int]) -> Reads:
    """One slot per stage in ``order`` (the any-order autoregressive chain)."""
    R = len(order)
    vis = torch.zeros(R, R, dtype=torch.bool)
    sc = torch.zeros(R, R, dtype=torch.bool)
    for k, p in enumerate(order):
        vis[k, order[:k]] = True
        sc[k, p] = True
    return Reads(vis, sc, torch.ones(R, dtype=torch.float64), torch.arange(R))


def score_reads(den: Denoiser, embeds: Tensor, n_prompt: int, reads: Reads, target: Tensor,
                keep: Tensor | None = None, per_group: bool = False) -> Tensor:
    """``sum_reads weight * sum_{scored} log p(target_i | x, state)`` for each batch row.

    ``embeds`` ``(B, L, d)`` with the response slots at ``[n_prompt, L)`` holding the
    *visible* tokens' embeddings (slots a read masks are replaced by the mask embedding);
    ``target`` ``(R,)`` ids; ``keep`` ``(B, L)`` optional. Returns ``(B,)`` (or ``(B, G)``
    per group with ``per_group``). Differentiable with respect to ``embeds``.
    """
    B, L, d = embeds.shape
    S, R = reads.visible.shape
    dev = embeds.device
    mask_e = den.mask_embedding().to(embeds.dtype)
    vis = reads.visible.to(dev)
    sc = reads.scored.to(dev)
    w = reads.weight.to(dev)
    tgt = target.to(dev).view(1, 1, R, 1)
    G = int(reads.groups.max()) + 1 if S else 0
    out = torch.zeros(B, G, dtype=torch.float64, device=dev)
    rows_per = max(1, MAX_ROWS // max(1, B))
    for s0 in range(0, S, rows_per):
        s1 = min(S, s0 + rows_per)
        v = vis[s0:s1]                                                          # (s, R)
        resp = torch.where(v.view(1, -1, R, 1), embeds[:, None, n_prompt:], mask_e)   # (B, s, R, d)
        full = torch.cat([embeds[:, None, :n_prompt].expand(-1, s1 - s0, -1, -1), resp], 2)
        k = None if keep is None else keep[:, None].expand(-1, s1 - s0, -1).reshape(-1, L)
        logits = den.logits(full.reshape(-1, L, d), n_prompt, k).view(B, s1 - s0, R, -1)
        logp = logits.to(torch.float64).log_softmax(-1).gather(-1, tgt.expand(B, s1 - s0, R, 1)).squeeze(-1)
        term = (logp * sc[s0:s1].unsqueeze(0)).sum(-1) * w[s0:s1]              # (B, s)
        out = out.index_add(1, reads.groups[s0:s1].to(dev), term)
    return out if per_group else out.sum(-1)


def score_row_reads(den: Denoiser, embeds: Tensor, n_prompt: int, visible: Tensor, scored: Tensor, target: Tensor,
                    keep: Tensor | None = None) -> Tensor:
    """One read per batch row, each in its own state: ``sum_{scored} log p(target_i | x_b, z_b)``.

    ``visible`` ``(B, R)`` bool (row ``b``'s visible slots; the others read the mask
    embedding); ``scored`` ``(R,)`` or ``(B, R)`` bool; the rest as :func:`score_reads`.
    One forward for the batch; each row equals :func:`score_reads` of that row alone with
    the one read ``(visible[b], scored[b], weight 1)``. Returns ``(B,)`` float64.
    """
    B, L, d = embeds.shape
    R = visible.shape[-1]
    dev = embeds.device
    mask_e = den.mask_embedding().to(embeds.dtype)
    resp = torch.where(visible.to(dev).unsqueeze(-1), embeds[:, n_prompt:], mask_e)
    full = torch.cat([embeds[:, :n_prompt], resp], 1)
    logits = den.logits(full, n_prompt, keep)                                       # (B, R, V)
    tgt = target.to(dev).view(1, R, 1).expand(B, R, 1)
    logp = logits.to(torch.float64).log_softmax(-1).gather(-1, tgt).squeeze(-1)     # (B, R)
    sc = scored.to(dev)
    return (logp * (sc.unsqueeze(0) if sc.dim() == 1 else sc)).sum(-1)


def elbo_estimate(den: Denoiser, embeds: Tensor, n_prompt: int, reads: Reads, target: Tensor,
                  keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(elbo (B,), standard error (B,))`` of the Monte Carlo ELBO read by ``reads`` (those of
    :func:`elbo_reads`, possibly restricted to the explained slots), from one pass.

    The estimate is the mean of the ``k`` per-sample terms ``X_j`` (group ``j`` sums to
    ``X_j / k``); the standard error is ``std_j(X_j) / sqrt(k)`` (NaN for ``k = 1``).
    """
    per = score_reads(den, embeds, n_prompt, reads, target, keep, per_group=True)    # (B, k): X_j / k
    k = per.shape[-1]
    terms = per * k                                                              # (B, k): X_j
    mean = per.sum(-1)
    se = terms.std(-1, unbiased=True) / math.sqrt(k) if k > 1 else torch.full_like(mean, float("nan"))
    return mean, se


def elbo_with_error(den: Denoiser, embeds: Tensor, n_prompt: int, target: Tensor, samples: int, seed: int,
                    keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(elbo (B,), standard error (B,))`` of the Monte Carlo ELBO of every response slot (per block
    for a block-causal denoiser)."""
    reads = elbo_reads(int(target.shape[0]), samples, seed, getattr(den, "block", None))
    return elbo_estimate(den, embeds, n_prompt, reads, target, keep)
