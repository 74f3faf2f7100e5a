"""The masked-diffusion sampler and its recorded chain (DESIGN sections 2 and 10).

Indexing (seed 000, section 4.2): the response region has ``R`` slots; the chain runs
``K`` stages. ``z[K]`` is the fully masked start, ``z[0] = y``. **Stage ``s`` turns
``z[s]`` into ``z[s - 1]``**, so stage ``K`` runs first and state ``z[t]`` is the result of
stage ``t + 1``. A state's tokens are the slots committed by it and by every earlier
stage; slots are never remasked.

One step of the sampler (LLaDA's ``generate`` with low-confidence remasking; MDLM's
confidence-ordered unmasking):

1. run the denoiser on ``[x, z[s]]`` and take ``log p(. | x, z[s])`` at every response slot;
2. propose a token per masked slot: the argmax (greedy), a Gumbel-max sample at
   ``temperature`` (seeded per stage, so a replay is exact), or the given output's token
   when the chain is *teacher-forced* to a given ``y``;
3. commit ``n_s`` of the masked slots of the current block: the most confident proposals
   (``confidence``), uniformly random ones (``random``), or the leftmost (``left_to_right``).
   ``n_s = ceil(m / r)`` with ``m`` masked slots left in the block and ``r`` stages left in
   it, which is exactly LLaDA's ``get_num_transfer_tokens`` schedule (``m // r`` each,
   the remainder to the first stages) and re-balances by itself when a stage is perturbed.

Semi-autoregressive ``blocks`` split the slots into contiguous blocks run one after the
other with ``K / blocks`` stages each (attention stays bidirectional). A *block-causal*
denoiser (``block = S``: BD3-LM, Steerling) generates blocks of ``S`` slots one after the other
and its attention is bidirectional within a block, causal across blocks
(:meth:`Denoiser.attention`); the layout of both is :mod:`scopecheck.spec.blocks`. Stage
indices stay global (``K..1``, a block's stages a contiguous run of them) and every recorded
step names its block. Slots a perturbed stage left masked stay eligible in later stages (and
later blocks); anything still masked after stage 1 is committed by a completion step
(recorded as stage 0, in no block).

The recorded :class:`Chain` holds, per stage, the committed slots, their tokens and their
log-probabilities; the output is frozen from it.

Batches: :func:`run_chains` steps ``B`` chains together, one denoiser forward per stage for
the batch, each row with its own prompt (and deletions), schedule, perturbations and commits;
the random streams are keyed by ``(seed, stage)``, so every row is the chain it would be alone
(:func:`run_chains_alone`, tested exactly). A stage's forward runs only on the distinct rows
that commit in it: chains perturbed at a later stage share the unperturbed trunk before it.
The reference denoisers attend bidirectionally (the prompt's hidden states depend on every
response slot), so no prefix key/value state can be reused across stages or rows. A
block-causal denoiser's committed blocks could be cached; they are not (every stage runs the
full forward, which gives the same numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from scopecheck.engine.diffusion.denoiser import Denoiser
from scopecheck.errors import InvalidSettings
from scopecheck.spec.blocks import Layout, block_layout, layout_error
from scopecheck.spec.vocabulary import PERTURBATIONS, SAMPLER_ALIASES, SAMPLERS  # the closed vocabularies, defined once

Tensor = torch.Tensor

#: Counts every call of :func:`run_chains`; tests use it to prove which checks regenerate.
SAMPLER_CALLS = {"count": 0}


@dataclass(frozen=True)
class SamplerSettings:
    steps: int                      # K
    length: int                     # R
    sampler: str = "confidence"
    blocks: int = 1                 # semi-autoregressive blocks (bidirectional attention)
    temperature: float = 0.0        # 0: greedy
    seed: int = 0
    forced: bool = False            # commits teacher-forced to a given output
    block: int | None = None        # block-causal denoiser: slots per block (None: bidirectional)

    def layout(self) -> Layout:
        """``(start, stop, stages)`` per block, in generation order (:func:`block_layout`)."""
        return block_layout(self.length, self.steps, blocks=self.blocks, block=self.block)

    def describe(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "steps": self.steps, "length": self.length, "blocks": self.blocks,
                "block": self.block, "attention": "block-causal" if self.block is not None else "bidirectional",
                "temperature": self.temperature, "seed": self.seed,
                "mode": "teacher-forced to the given output" if self.forced else "free (the output is generated)"}


@dataclass(frozen=True)
class Step:
    stage: int                      # K..1; 0 for a completion step
    positions: tuple[int, ...]      # response slots (0-based) committed
    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]     # log p(token | x, z[stage]) at commit time
    block: int | None = 0           # the block (0-based) the stage belongs to; None: the completion step


@dataclass(frozen=True)
class Chain:
    settings: SamplerSettings
    prompt_ids: tuple[int, ...]
    mask_id: int
    steps: tuple[Step, ...]         # execution order: stage K first
    output: tuple[int, ...]         # z[0] = y, R ids
    adapter: str = "plain"

    @property
    def K(self) -> int:
        return self.settings.steps

    @property
    def R(self) -> int:
        return self.settings.length

    def step(self, stage: int) -> Step:
        for s in self.steps:
            if s.stage == stage:
                return s
        raise KeyError(f"the chain has no stage {stage}; stages: {self.K}..1")

    def visible(self, t: int) -> list[int]:
        """Slots visible (committed) in state ``z[t]``: those of every stage ``> t``."""
        return sorted(p for s in self.steps if s.stage > t for p in s.positions)

    def committed(self, t: int) -> list[int]:
        """Slots newly committed in ``z[t]`` (by stage ``t + 1``); ``z[0]`` includes a completion step."""
        out = [p for s in self.steps if s.stage == t + 1 for p in s.positions]
        if t == 0:
            out += [p for s in self.steps if s.stage == 0 for p in s.positions]
        return sorted(out)

    def state(self, t: int) -> list[int]:
        """Token ids of ``z[t]``, the mask id where a slot is not yet committed."""
        vis = set(self.visible(t))
        return [tok if i in vis else self.mask_id for i, tok in enumerate(self.output)]

    def stage_of(self) -> dict[int, int]:
        """Slot -> the stage that committed it."""
        return {p: s.stage for s in self.steps for p in s.positions}

    def block_of(self, stage: int) -> int | None:
        """The block (0-based) whose turn stage ``stage`` is; ``None`` for the completion step."""
        return self.step(stage).block

    def block_order(self) -> list[int | None]:
        """The block of every step in execution order (blocks are committed one after the other)."""
        return [s.block for s in self.steps]

    def to_json(self, decode: Any = None) -> dict[str, Any]:
        def text(ids: Sequence[int]) -> list[str]:
            return [decode(i) for i in ids] if decode else [str(i) for i in ids]

        return {
            "settings": self.settings.describe(), "adapter": self.adapter,
            "prompt_ids": list(self.prompt_ids), "output_ids": list(self.output), "mask_id": self.mask_id,
            "steps": [{"stage": s.stage, "block": None if s.block is None else s.block + 1,
                       "positions": [p + 1 for p in s.positions], "tokens": list(s.tokens),
                       "texts": text(s.tokens), "logprobs": list(s.logprobs)} for s in self.steps],
        }


@dataclass(frozen=True)
class StagePerturbation:
    """``pert(stage)``: what one stage does instead of its recorded update."""

    stage: int
    kind: str                       # noop | schedule | substitute
    shift: int = 1                  # schedule: slots committed beyond (or below) the schedule
    substitute: str = "second_best"  # second_best | resample


@dataclass
class RunBatch:
    """Final response and per-slot commit record of a batch of chains (``B`` rows, ``R`` slots)."""

    tokens: Tensor                  # (B, R) long; the mask id where never committed
    commit_stage: Tensor            # (B, R) long; -1 where never committed
    token_logp: Tensor              # (B, R) log p(committed token) at commit time
    target_logp: Tensor | None      # (B, R) log p(target token) at the slot's commit time
    steps: list[Step] = field(default_factory=list)   # the trace of row 0 (when recorded)

    def chain_score(self, slots: Tensor | None = None) -> Tensor:
        """``(B,)``: the chain estimator of the target along each row's own unmasking order
        (over the slots ``slots`` ``(R,)`` bool only, when given)."""
        assert self.target_logp is not None
        done = self.commit_stage >= 0
        if slots is not None:
            done = done & slots.to(done.device).unsqueeze(0)
        return torch.where(done, self.target_logp, torch.zeros_like(self.target_logp)).sum(-1)


def _gen(seed: int, stage: int, salt: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed((int(seed) * 1_000_003 + int(stage) * 7_919 + salt) % (2 ** 63 - 1))
    return g


def check_settings(s: SamplerSettings) -> None:
    if s.sampler not in SAMPLERS:
        raise InvalidSettings(f"unknown sampler {s.sampler!r}; known: {', '.join(SAMPLERS)}")
    err = layout_error(s.length, s.steps, blocks=s.blocks, block=s.block)
    if err is not None:
        raise InvalidSettings(err)
    if not math.isfinite(s.temperature) or s.temperature < 0:
        raise InvalidSettings(f"temperature must be finite and >= 0, got {s.temperature}")


def _row_groups(*parts: Tensor | None) -> Tensor:
    """``(B,)`` long: rows equal in every part (each ``(B, ...)``) share a group id."""
    cols = [p.reshape(p.shape[0], -1).to(torch.float64) for p in parts if p is not None]
    key = torch.cat(cols, 1)
    if key.shape[1] == 0:
        return torch.zeros(key.shape[0], dtype=torch.long, device=key.device)
    return torch.unique(key, dim=0, return_inverse=True)[1]


@torch.no_grad()
def run_chains(den: Denoiser, prompt_embeds: Tensor, settings: SamplerSettings, *,
               prompt_keep: Tensor | None = None, force: Tensor | None = None, target: Tensor | None = None,
               perturb: Sequence[Sequence[StagePerturbation]] | None = None, stop_before: int | None = None,
               override: tuple[Tensor, Tensor] | None = None, record: bool = False,
               share: bool = True) -> RunBatch:
    """Run ``B`` chains at once from ``z[K]``: one denoiser forward per stage for the batch.

    ``prompt_embeds`` ``(B, P, d)`` (perturbed prompts share the batch); ``prompt_keep``
    ``(B, P)`` bool deletes prompt positions; ``force`` ``(R,)`` (every row) or ``(B, R)``
    (per row; a row of ``-1`` runs free) teacher-forces commits to those ids; ``target``
    ``(R,)`` records ``log p(target)`` at each slot's commit (the chain estimator);
    ``perturb[b]`` lists row ``b``'s stage perturbations; ``stop_before`` stops in state
    ``z[stop_before]`` (before that stage runs, no completion); ``override = (embeds (B, R, d),
    which (B, R) bool)`` replaces the input embedding of a slot whenever it is visible (an
    earlier state's token swapped by an operator).

    Each row is the chain it would be alone: its own schedule (``n_s`` from its own masked
    count), perturbations and commits; the random streams are keyed by ``(seed, stage)``, not
    by the row, so a row's Gumbel noise and random order are those of a one-row run. With
    ``share`` (the default) the forward of a stage runs only on the *distinct* rows that
    commit anything in it: rows with the same input (the same prompt, its deletions and
    overrides, and the same state so far) share one row of the forward, so chains that
    perturb a later stage share the unperturbed trunk of stages before it, and a row whose
    stage commits nothing (``noop``) costs nothing. The results are those of ``share=False``
    and of running every row alone (tested), only the rows a forward computes change.
    """
    check_settings(settings)
    den_block = getattr(den, "block", None)
    if den_block != settings.block:
        raise InvalidSettings(f"the sampler's block ({settings.block}) is not the denoiser's ({den_block}): a "
                              "block-causal chain needs a block-causal denoiser of the same block size")
    SAMPLER_CALLS["count"] += 1
    B, P, _ = prompt_embeds.shape
    R, K = settings.length, settings.steps
    dev = prompt_embeds.device
    mask_e = den.mask_embedding().to(prompt_embeds.dtype)
    tokens = torch.full((B, R), den.mask_id, dtype=torch.long, device=dev)
    stage_of = torch.full((B, R), -1, dtype=torch.long, device=dev)
    token_logp = torch.zeros(B, R, dtype=torch.float64, device=dev)
    target_logp = torch.zeros(B, R, dtype=torch.float64, device=dev) if target is not None else None
    keep = None
    if prompt_keep is not None:
        keep = torch.cat([prompt_keep.to(dev), torch.ones(B, R, dtype=torch.bool, device=dev)], 1)
    forced_rows = None                       # (B,) bool: rows teacher-forced (None: all or none)
    if force is not None:
        force = force.to(dev)
        if force.dim() == 1:
            force = force.unsqueeze(0).expand(B, R)
        else:
            forced_rows = (force >= 0).all(-1)
            if bool(forced_rows.all()):
                forced_rows = None
            elif not bool(forced_rows.any()):
                force = None
    if override is not None:
        override = (override[0].to(dev), override[1].to(dev))
    pert: dict[tuple[int, int], StagePerturbation] = {}
    for b, ps in enumerate(perturb or ()):
        for p in ps:
            pert[(b, p.stage)] = p
    # rows with the same input at every stage so far: the same prompt (and deletions, overrides)
    group = None
    if share and B > 1:
        group = _row_groups(prompt_embeds, keep, None if override is None else
                            torch.where(override[1].unsqueeze(-1), override[0], torch.zeros_like(override[0])),
                            None if override is None else override[1])
    layout = settings.layout()
    slot_block = torch.empty(R, dtype=torch.long, device=dev)
    for bi, (a, z, _) in enumerate(layout):
        slot_block[a:z] = bi
    steps: list[Step] = []
    # (stage, block, stages left in the block): stage K first, a block's stages one contiguous run
    schedule: list[tuple[int, int, int]] = []
    for bi, (_, _, k_b) in enumerate(layout):
        for r in range(k_b, 0, -1):
            schedule.append((K - len(schedule), bi, r))
    assert len(schedule) == K
    if stop_before is None:
        schedule.append((0, len(layout) - 1, 1))               # completion, if anything is left
    block_of_stage = {stage: block for stage, block, _ in schedule if stage > 0}
    for stage, block, remaining in schedule:
        if stop_before is not None and stage <= stop_before:
            break
        masked = stage_of < 0                                                   # (B, R)
        open_ = masked & (slot_block <= block).unsqueeze(0)
        m = open_.sum(-1)                                                       # (B,)
        if stage == 0 and int(m.sum()) == 0:
            break
        n = torch.div(m + remaining - 1, remaining, rounding_mode="floor")      # ceil(m / r)
        rows_sub: list[tuple[int, str]] = []
        for b in range(B):
            p = pert.get((b, stage))
            if p is None:
                continue
            if p.kind == "noop":
                n[b] = 0
            elif p.kind == "schedule":
                n[b] = max(0, min(int(m[b]), int(n[b]) + int(p.shift)))
            elif p.kind == "substitute":
                rows_sub.append((b, p.substitute))
            else:
                raise ValueError(f"unknown stage perturbation {p.kind!r}; known: {', '.join(PERTURBATIONS)}")
        if int(n.sum()) == 0:
            continue
        visible = ~masked
        tok_e = den.embed(tokens.clamp(min=0)).to(prompt_embeds.dtype)                      # (B, R, d)
        if override is not None:
            o_emb, o_which = override
            tok_e = torch.where(o_which.unsqueeze(-1), o_emb.to(tok_e.dtype), tok_e)
        resp = torch.where(visible.unsqueeze(-1), tok_e, mask_e)
        x = torch.cat([prompt_embeds, resp], 1)                                             # (B, L, d)
        if group is None:
            logits = den.logits(x, P, keep).to(torch.float64)                               # (B, R, V)
        else:
            # the distinct inputs among the rows that commit something; the others read row 0
            active = n > 0
            key = torch.cat([group.unsqueeze(-1), tokens, stage_of >= 0], 1)[active]
            uniq, inv = torch.unique(key, dim=0, return_inverse=True)
            rows = torch.nonzero(active).flatten()
            first = torch.full((uniq.shape[0],), B, dtype=torch.long, device=dev)
            first = first.scatter_reduce(0, inv, rows, reduce="amin")                      # a row per input
            lu = den.logits(x[first], P, None if keep is None else keep[first]).to(torch.float64)
            where = torch.zeros(B, dtype=torch.long, device=dev)
            where[rows] = inv
            logits = lu[where]                                                              # (B, R, V)
        logp = logits.log_softmax(-1)
        if force is not None and forced_rows is None:
            cand = force
        else:
            if settings.temperature == 0:
                cand = logits.argmax(-1)
            else:
                g = torch.rand(R, logits.shape[-1], generator=_gen(settings.seed, stage, 1), dtype=torch.float64)
                gumbel = -torch.log(-torch.log(g.clamp_min(1e-300))).to(dev)
                cand = (logits / settings.temperature + gumbel).argmax(-1)
            if force is not None and forced_rows is not None:
                cand = torch.where(forced_rows.unsqueeze(-1), force, cand)
        # which slots commit is decided on the stage's own proposals (a substituted step commits
        # other tokens at the same slots)
        if settings.sampler == "confidence":
            conf = logp.gather(-1, cand.unsqueeze(-1)).squeeze(-1)
        elif settings.sampler == "random":
            conf = torch.rand(R, generator=_gen(settings.seed, stage, 3), dtype=torch.float64).to(dev).expand(B, R)
        else:
            conf = -torch.arange(R, dtype=torch.float64, device=dev).expand(B, R)
        cand = cand.clone()
        for b, how in rows_sub:
            if how == "resample":
                g = torch.rand(R, logits.shape[-1], generator=_gen(settings.seed + 1, stage, 2), dtype=torch.float64)
                gumbel = -torch.log(-torch.log(g.clamp_min(1e-300))).to(dev)
                cand[b] = (logits[b] + gumbel).argmax(-1)
            else:  # the best token other than the proposal
                other = logits[b].scatter(-1, cand[b].unsqueeze(-1), float("-inf"))
                cand[b] = other.argmax(-1)
        conf = torch.where(open_, conf, torch.full_like(conf, float("-inf")))
        order = torch.sort(conf, dim=-1, descending=True, stable=True).indices
        rank = torch.empty_like(order)
        rank.scatter_(-1, order, torch.arange(R, device=dev).expand(B, R))
        chosen = (rank < n.unsqueeze(-1)) & open_                                               # (B, R)
        tokens = torch.where(chosen, cand, tokens)
        stage_of = torch.where(chosen, torch.full_like(stage_of, stage), stage_of)
        lp = logp.gather(-1, cand.unsqueeze(-1)).squeeze(-1)
        token_logp = torch.where(chosen, lp, token_logp)
        if target_logp is not None:
            tl = logp.gather(-1, target.to(dev).view(1, R, 1).expand(B, R, 1)).squeeze(-1)
            target_logp = torch.where(chosen, tl, target_logp)
        if record:
            pos = [int(i) for i in torch.nonzero(chosen[0]).flatten()]
            steps.append(Step(stage, tuple(pos), tuple(int(cand[0, i]) for i in pos),
                              tuple(float(lp[0, i]) for i in pos), block_of_stage.get(stage)))
    if record:
        done = {s.stage for s in steps}
        steps += [Step(s, (), (), (), block_of_stage[s]) for s in range(K, 0, -1) if s not in done and
                  (stop_before is None or s > stop_before)]
        steps.sort(key=lambda s: -s.stage)
    return RunBatch(tokens, stage_of, token_logp, target_logp, steps)


def run_chains_alone(den: Denoiser, prompt_embeds: Tensor, settings: SamplerSettings, *,
                     prompt_keep: Tensor | None = None, force: Tensor | None = None, target: Tensor | None = None,
                     perturb: Sequence[Sequence[StagePerturbation]] | None = None, stop_before: int | None = None,
                     override: tuple[Tensor, Tensor] | None = None) -> RunBatch:
    """:func:`run_chains` one chain at a time (``B`` runs of one row, ``B x stages`` forwards):
    the reference the batched run equals, and the baseline of ``benchmarks/diffusion_measure.py``."""
    B = prompt_embeds.shape[0]
    runs = []
    for b in range(B):
        f = None if force is None else (force if force.dim() == 1 else force[b])
        if f is not None and f.dim() == 1 and bool((f < 0).any()):
            f = None
        runs.append(run_chains(
            den, prompt_embeds[b:b + 1], settings, prompt_keep=None if prompt_keep is None else prompt_keep[b:b + 1],
            force=f, target=target, perturb=None if perturb is None else [perturb[b]], stop_before=stop_before,
            override=None if override is None else (override[0][b:b + 1], override[1][b:b + 1])))
    return RunBatch(torch.cat([r.tokens for r in runs]), torch.cat([r.commit_stage for r in runs]),
                    torch.cat([r.token_logp for r in runs]),
                    None if target is None else torch.cat([r.target_logp for r in runs]))  # type: ignore[misc]


def sample_chain(den: Denoiser, prompt_ids: Sequence[int], settings: SamplerSettings,
                 force: Sequence[int] | None = None) -> Chain:
    """Run the sampler once on ``prompt_ids`` and record its chain (the frozen output)."""
    ids = torch.tensor([list(prompt_ids)], device=den.device)
    emb = den.embed(ids)
    f = torch.tensor(list(force), device=den.device) if force is not None else None
    run = run_chains(den, emb, settings, force=f, record=True)
    return Chain(settings, tuple(int(i) for i in prompt_ids), den.mask_id, tuple(run.steps),
                 tuple(int(t) for t in run.tokens[0].tolist()), den.adapter)
