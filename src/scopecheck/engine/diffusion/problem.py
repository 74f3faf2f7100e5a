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

Shapes: ``P`` prompt positions (special tokens included), ``R`` response slots, ``L = P + R``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from scopecheck.engine.diffusion.chain import Chain, SamplerSettings, StagePerturbation, run_chains
from scopecheck.engine.diffusion.denoiser import Denoiser
from scopecheck.engine.problem import AttributionProblem
from scopecheck.engine.diffusion.estimators import (
    Reads, chain_reads, elbo_reads, pll_reads, score_reads,
)

Tensor = torch.Tensor


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
        return elbo_reads(chain.R, samples, seed)
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
        P = self.n_prompt
        B = embeds.shape[0]
        dev = embeds.device
        y = torch.tensor(self.chain.output, device=dev)
        settings = self.chain.settings
        pkeep = None if keep is None else keep[:, :P]
        self.runs += 1
        if self.mode == "regenerate":
            free = SamplerSettings(**{**settings.__dict__, "forced": False})
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
        # one read per row: its own state; score the original z[t] tokens
        out = []
        for b in range(B):
            reads = Reads(visible[b:b + 1].cpu(), targets.view(1, -1).cpu(), torch.ones(1, dtype=torch.float64),
                          torch.zeros(1, dtype=torch.long))
            full = torch.cat([embeds[b:b + 1, :P], resp[b:b + 1]], 1)
            out.append(score_reads(self.den, full, P, reads, y, None if keep is None else keep[b:b + 1]))
        return torch.cat(out)


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


__all__ = ["ChainObjective", "OutputScore", "STAGE_CODES", "StageObjective", "estimator_reads", "stage_problem"]
