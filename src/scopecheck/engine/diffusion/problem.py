"""The diffusion seams beside :class:`~scopecheck.engine.problem.AttributionProblem`.

Token contracts under a diffusion process (``state_level``, ``prompt_to_output``) compile to
an ordinary ``AttributionProblem`` whose objective is the stated estimator read along the
recorded chain, so every token method runs on them unchanged and cannot get the contract
wrong. What the diffusion protocols add lives here:

* :class:`ChainObjective` -- the *check-time* score ``(B, L, d), keep -> (B,)`` that first
  re-runs the sampler under the perturbation (``regenerate`` for prompt-to-output:
  the full chain with the recorded settings and seed; ``continue_chain`` for state-level:
  the chain up to ``z[t + 1]``) and then measures the contract's score of the original
  output; it records, per evaluation, whether the output changed.
* :func:`stage_problem` -- the features are the ``K`` stages (feature ``j`` is stage
  ``K - j``); a perturbation is a set of stages replaced by ``pert(stage)``, after which the
  chain runs to completion and the chain estimator of the original ``y`` is read along the
  perturbed chain (:class:`StageObjective`). It is an ``AttributionProblem`` whose
  "embeddings" are stage codes, so the faithfulness checks run unchanged (``run_chain``).

Every objective steps the chains of all its rows together (one denoiser forward per stage for
the batch; the state-level score one more forward for all rows); :func:`score_chains` is the
checks' entry point for any number of perturbed inputs (identical inputs run once, the rest in
as few batched calls as memory allows). ``CHAIN_BATCH["on"] = False`` runs every row alone,
the reference (tested equal) and the benchmark's baseline.

Shapes: ``P`` prompt positions (special tokens included), ``R`` response slots, ``L = P + R``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from scopecheck.engine.diffusion.chain import Chain, RunBatch, SamplerSettings, StagePerturbation, run_chains
from scopecheck.engine.diffusion.denoiser import Denoiser
from scopecheck.engine.problem import AttributionProblem
from scopecheck.engine.diffusion.estimators import (
    Reads, chain_reads, elbo_reads, pll_reads, score_reads, score_row_reads,
)
from scopecheck.runtime.batching import map_batches

Tensor = torch.Tensor

#: ``False``: the chain objectives run every row of a batch alone (``B x stages`` denoiser
#: forwards instead of ``stages``); the reference of the tests and the baseline of
#: ``benchmarks/diffusion_measure.py --only batching``. Results are the same either way.
CHAIN_BATCH = {"on": True}


@dataclass
class OutputScore:
    """The estimator of ``log p(y | x)`` for fixed reads: ``(B, L, d), keep -> (B,)``."""

    den: Denoiser
    n_prompt: int
    target: Tensor                  # (R,) the output's ids
    reads: Reads

    @property
    def model(self) -> Any:
        return self.den.model

    def __call__(self, embeds: Tensor, keep: Tensor | None = None) -> Tensor:
        # read in float64, returned in the model's dtype as every objective is
        return score_reads(self.den, embeds, self.n_prompt, self.reads, self.target, keep).to(embeds.dtype)


def estimator_reads(chain: Chain, estimator: str, samples: int, seed: int) -> Reads:
    if estimator == "chain":
        return chain_reads(chain)
    if estimator == "pll":
        return pll_reads(chain.R)
    if estimator == "elbo":
        return elbo_reads(chain.R, samples, seed, chain.settings.block)
    raise ValueError(f"unknown estimator {estimator!r}; known: chain, pll, elbo")


@dataclass
class ChainObjective:
    """Check-time score that re-runs the chain under the perturbation, then measures.

    ``mode``: ``regenerate`` (prompt-to-output) or ``continue_chain`` (state-level, ``t``).
    ``changed`` collects, per evaluated row, whether the regenerated output differs from
    the original (regenerate) or whether the regenerated ``z[t + 1]`` differs (continue).
    """

    den: Denoiser
    chain: Chain
    n_prompt: int
    base_embeds: Tensor             # (L, d) the unperturbed input
    mode: str                       # regenerate | continue_chain
    estimator: str = "chain"
    reads: Reads | None = None      # fixed reads of pll / elbo
    t: int | None = None            # state-level: the explained state z[t]
    slots: Tensor | None = None     # (R,) bool: the output slots scored (None: all)
    changed: list[bool] = field(default_factory=list)
    runs: int = 0

    @torch.no_grad()
    def __call__(self, embeds: Tensor, keep: Tensor | None = None) -> Tensor:
        if not CHAIN_BATCH["on"] and embeds.shape[0] > 1:
            return _one_at_a_time(self, embeds, keep)
        P = self.n_prompt
        B = embeds.shape[0]
        dev = embeds.device
        y = torch.tensor(self.chain.output, device=dev)
        settings = self.chain.settings
        pkeep = None if keep is None else keep[:, :P]
        self.runs += 1
        if self.mode == "regenerate":
            free = SamplerSettings(**{**settings.__dict__, "forced": False})
            if settings.forced and self.estimator == "chain" and CHAIN_BATCH["on"]:
                # the free regeneration (did y change?) and the teacher-forced chain (the score) of
                # every row, stepped together: 2B rows, one forward per stage (their first stage,
                # all masked, is one row per prompt)
                force = torch.cat([torch.full((B, self.chain.R), -1, dtype=torch.long, device=dev),
                                   y.unsqueeze(0).expand(B, -1)])
                both = run_chains(self.den, embeds[:, :P].repeat(2, 1, 1), free,
                                  prompt_keep=None if pkeep is None else pkeep.repeat(2, 1), force=force, target=y)
                self.changed += [bool(r) for r in (both.tokens[:B] != y).any(-1).tolist()]
                forced = RunBatch(both.tokens[B:], both.commit_stage[B:], both.token_logp[B:],
                                  None if both.target_logp is None else both.target_logp[B:])
                return forced.chain_score(self.slots)
            regen = run_chains(self.den, embeds[:, :P], free, prompt_keep=pkeep, target=y)
            self.changed += [bool(r) for r in (regen.tokens != y).any(-1).tolist()]
            if self.estimator != "chain":
                full = torch.cat([embeds[:, :P], self.base_embeds[P:].unsqueeze(0).expand(B, -1, -1)], 1)
                assert self.reads is not None
                return score_reads(self.den, full, P, self.reads, y, keep)
            if not settings.forced:
                return regen.chain_score(self.slots)
            forced = run_chains(self.den, embeds[:, :P], settings, prompt_keep=pkeep, force=y, target=y)
            return forced.chain_score(self.slots)
        # continue_chain: run to z[t + 1] with the perturbed prompt, swap perturbed state tokens
        assert self.t is not None
        t = self.t
        resp_in = embeds[:, P:]
        swapped = (resp_in != self.base_embeds[P:].unsqueeze(0)).any(-1)          # (B, R)
        if keep is not None:
            swapped |= ~keep[:, P:]
        run = run_chains(self.den, embeds[:, :P], settings, prompt_keep=pkeep,
                         force=y if settings.forced else None, stop_before=t + 1, override=(resp_in, swapped))
        orig = torch.zeros(self.chain.R, dtype=torch.bool, device=dev)
        orig[self.chain.visible(t + 1)] = True
        self.changed += [bool(r) for r in ((run.commit_stage >= 0) != orig.unsqueeze(0)).any(-1).tolist()]
        visible = (run.commit_stage >= 0)
        targets = torch.zeros(self.chain.R, dtype=torch.bool, device=dev)
        targets[self.chain.committed(t)] = True
        visible &= ~targets.unsqueeze(0)
        tok_e = self.den.embed(run.tokens.clamp(min=0)).to(embeds.dtype)
        resp = torch.where(swapped.unsqueeze(-1), resp_in, tok_e)
        # one read per row, its own state z[t + 1] (one forward for the batch); score the original z[t] tokens
        full = torch.cat([embeds[:, :P], resp], 1)
        return score_row_reads(self.den, full, P, visible, targets, y, keep)


def _one_at_a_time(obj: Any, embeds: Tensor, keep: Tensor | None) -> Tensor:
    """The objective row by row (``CHAIN_BATCH["on"] = False``): every chain run alone."""
    return torch.cat([obj(embeds[b:b + 1], None if keep is None else keep[b:b + 1]) for b in range(embeds.shape[0])])


@dataclass
class StageObjective:
    """``codes (B, K, 1), keep -> (B,)``: the chain estimator of the original ``y`` along the
    chain run with each stage doing what its code says (``STAGE_CODES``; 0 = as recorded),
    then run to completion."""

    den: Denoiser
    chain: Chain
    prompt_embeds: Tensor           # (P, d)
    shift: int = 1
    substitute: str = "second_best"
    changed: list[bool] = field(default_factory=list)
    runs: int = 0

    @property
    def model(self) -> Any:
        return self.den.model

    @torch.no_grad()
    def __call__(self, embeds: Tensor, keep: Tensor | None = None) -> Tensor:
        if not CHAIN_BATCH["on"] and embeds.shape[0] > 1:
            return _one_at_a_time(self, embeds, keep)
        K = self.chain.K
        codes = embeds[..., 0].round().long()                                   # (B, K)
        if keep is not None:
            codes = torch.where(keep.to(codes.device), codes, torch.full_like(codes, STAGE_CODES["noop"]))
        names = {c: n for n, c in STAGE_CODES.items()}
        B = codes.shape[0]
        dev = self.prompt_embeds.device
        y = torch.tensor(self.chain.output, device=dev)
        per_row = [[StagePerturbation(K - j, names[int(codes[b, j])], self.shift, self.substitute)
                    for j in range(K) if int(codes[b, j]) in names] for b in range(B)]
        self.runs += 1
        s = self.chain.settings
        run = run_chains(self.den, self.prompt_embeds.unsqueeze(0).expand(B, -1, -1), s,
                         force=y if s.forced else None, target=y, perturb=per_row)
        self.changed += [bool(r) for r in (run.tokens != y).any(-1).tolist()]
        return run.chain_score().to(torch.float64)


#: Working-set budget of one batched chain run (the float64 logits of its rows and their copies).
CHAIN_BATCH_BYTES = 256 * 2 ** 20


def chain_rows_per_call(objective: Any, length: int) -> int:
    """Rows one batched chain run takes: :data:`CHAIN_BATCH_BYTES` over a row's logits working set
    (``R`` slots x vocabulary, float64, about four copies; twice that for a teacher-forced
    regeneration, which steps the free and the forced chain of a row together)."""
    den = objective.den
    V = int(getattr(getattr(den.model, "config", None), "vocab_size", 0) or den.embedding.weight.shape[0])
    per = objective.chain.R * V * 8 * 4 * (2 if getattr(objective, "mode", "") == "regenerate" else 1)
    return max(1, min(4096, CHAIN_BATCH_BYTES // max(1, per)))


@torch.no_grad()
def score_chains(objective: Any, embeds: Tensor, keep: Tensor | None = None, *, rows_per_call: int | None = None,
                 desc: str = "") -> Tensor:
    """The batched entry point for checks: scores ``(N,)`` float64 of ``N`` perturbed inputs
    ``embeds`` ``(N, L, d)`` (``keep`` ``(N, L)`` optional) under a chain objective
    (:class:`ChainObjective` or :class:`StageObjective`, i.e. a compiled diffusion contract's
    ``check_objective``).

    Identical inputs are run once; the distinct ones go through the objective in as few calls as
    the memory budget allows (``rows_per_call``, default :func:`chain_rows_per_call`; halved on
    out-of-memory), each call stepping all its chains together, one denoiser forward per stage.
    ``objective.changed`` gets one flag per input row, in order, as if each row had been
    evaluated. Equal to ``objective(embeds, keep)`` and to the rows run one at a time.
    """
    N = int(embeds.shape[0])
    if N == 0:
        return torch.zeros(0, dtype=torch.float64)
    key = [embeds.reshape(N, -1).to(torch.float64)]
    if keep is not None:
        key.append(keep.reshape(N, -1).to(torch.float64))
    uniq, inv = torch.unique(torch.cat(key, 1), dim=0, return_inverse=True)
    U = int(uniq.shape[0])
    first = torch.full((U,), N, dtype=torch.long, device=inv.device)
    first = first.scatter_reduce(0, inv, torch.arange(N, device=inv.device), reduce="amin")   # (U,) first row
    order = first.argsort()                       # the distinct inputs in the order they first appear
    rank = torch.empty(U, dtype=torch.long, device=inv.device)
    rank[order] = torch.arange(U, device=inv.device)
    where = rank[inv]                                                           # (N,) row -> its distinct input
    first = first[order]
    e_u = embeds[first.to(embeds.device)]
    k_u = None if keep is None else keep[first.to(keep.device)]
    flags = getattr(objective, "changed", None)
    n0 = len(flags) if flags is not None else 0

    def chunk(sl: slice) -> Tensor:
        return objective(e_u[sl], None if k_u is None else k_u[sl]).detach().to("cpu", torch.float64)

    size = rows_per_call or chain_rows_per_call(objective, int(embeds.shape[1]))
    out = torch.cat(map_batches(chunk, U, None, start=size, desc=desc or "chains", kind="chain"))
    if flags is not None:
        new = flags[n0:]
        if len(new) == U:
            del flags[n0:]
            flags.extend(new[int(i)] for i in where.tolist())
    return out[where.cpu()]


#: Stage perturbations as operator codes in the stage "embedding" (0 = the recorded stage).
STAGE_CODES: dict[str, int] = {"noop": 1, "schedule": 2, "substitute": 3}


def stage_problem(den: Denoiser, chain: Chain, prompt_embeds: Tensor, shift: int = 1,
                  substitute: str = "second_best") -> AttributionProblem:
    """Stages as features. Feature ``j`` is stage ``K - j``; its "embedding" is the code of
    what the stage does (0: its recorded update; ``STAGE_CODES`` otherwise), so
    ``replace(operator, drop)`` perturbs exactly the dropped stages and every check runs
    unchanged. ``delete`` (a keep mask) means ``noop``."""
    K = chain.K
    ops = {name: torch.full((K, 1), float(code), dtype=torch.float64) for name, code in STAGE_CODES.items()}
    return AttributionProblem(ids=torch.arange(K, 0, -1), embeds=torch.zeros(K, 1, dtype=torch.float64),
                              eligible=torch.ones(K, dtype=torch.bool),
                              objective=StageObjective(den, chain, prompt_embeds, shift, substitute), operators=ops)


__all__ = ["CHAIN_BATCH", "ChainObjective", "OutputScore", "STAGE_CODES", "StageObjective", "chain_rows_per_call",
           "estimator_reads", "score_chains", "stage_problem"]
