"""Batched diffusion chains equal the same chains run one at a time (issue 29, item 3).

Every perturbed chain of a batch is stepped together, one denoiser forward per stage
(:func:`~scopecheck.engine.diffusion.chain.run_chains`); the reference is each row run
alone (:func:`~scopecheck.engine.diffusion.chain.run_chains_alone`, and the chain objectives
with ``CHAIN_BATCH["on"] = False``). On the reference denoisers in float64 the discrete
results (committed tokens, commit stages, changed flags) are compared with ``torch.equal``
and the scores within 1e-12: a forward over ``B`` rows and one over a single row run
different matrix-product kernels in float64, whose reductions differ in order (measured
differences up to 1e-14; in float32 the reference denoisers give bitwise equal rows).
Denoiser calls are counted with a forward pre-hook on the model.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest
import torch

from scopecheck.engine.diffusion import problem as pm
from scopecheck.engine.diffusion.chain import SamplerSettings, StagePerturbation, run_chains, run_chains_alone
from scopecheck.engine.diffusion.problem import STAGE_CODES, score_chains
from scopecheck.engine.run import run

FIG1 = ("Translate to French: The dog is black.", "Le chien est noir.")
CAPITALS = "Question: name a capital and its country. Answer:"


def contract(body: str, *, model: str = "reference:translate-mdlm", prompt: str = FIG1[0],
             output: str = f'"{FIG1[1]}"', steps: int = 8, method: str = "occlusion(operator = mask)",
             sampler: str = "confidence", extra: str = "") -> str:
    return (f'contract "t" {{\n model {model}\n prompt "{prompt}"\n output {output}\n{body}\n'
            f' process masked_diffusion(sampler = {sampler}, steps = {steps}{extra})\n method {method}\n seed 0\n}}\n')


P2O = " score log p(y | x) via {est}\n fixed nothing\n explain y\n eligible x"
STATE = " use state_level(step = {t})"
STAGE = " use denoising_stage(estimator = chain)"


@contextlib.contextmanager
def counted(model: torch.nn.Module) -> Iterator[dict[str, int]]:
    """Denoiser forwards while the block runs (a forward pre-hook on the model)."""
    n = {"calls": 0}
    h = model.register_forward_pre_hook(lambda *_: n.__setitem__("calls", n["calls"] + 1))
    try:
        yield n
    finally:
        h.remove()


@contextlib.contextmanager
def one_at_a_time() -> Iterator[None]:
    pm.CHAIN_BATCH["on"] = False
    try:
        yield
    finally:
        pm.CHAIN_BATCH["on"] = True


@pytest.fixture(scope="module")
def translate():
    return run(contract(P2O.format(est="chain")), dtype="float64").compiled


@pytest.fixture(scope="module")
def capitals():
    return run(contract(STAGE, model="reference:capitals-mdlm", prompt=CAPITALS, output="generate(greedy)", steps=5,
                        method="stage_perturbation(perturbation = noop)"), dtype="float64").compiled


def prompt_batch(c, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` perturbed prompts ``(n, P, d)`` and keep masks ``(n, P)``: random positions replaced
    by the mask embedding, others deleted, row 0 the original and row 3 a duplicate of row 1."""
    den, P = c.denoiser, c.n_prompt
    base = den.embed(torch.tensor(c.chain.prompt_ids)).detach()
    g = torch.Generator().manual_seed(seed)
    emb = base.unsqueeze(0).repeat(n, 1, 1)
    keep = torch.ones(n, P, dtype=torch.bool)
    mask_e = den.mask_embedding().detach()
    for b in range(1, n):
        k = int(torch.randint(1, 4, (1,), generator=g))
        pos = (1 + torch.randperm(P - 1, generator=g)[:k]).tolist()
        if b % 2:
            emb[b, pos] = mask_e
        else:
            keep[b, pos] = False
    emb[3], keep[3] = emb[1], keep[1]
    return emb, keep


def stage_perturbations(K: int, n: int, seed: int) -> list[list[StagePerturbation]]:
    """Per row: nothing, or one or two stages perturbed by every operator (noop, schedule +-1,
    substitute second_best / resample)."""
    kinds = [("noop", 1, "second_best"), ("schedule", 1, "second_best"), ("schedule", -1, "second_best"),
             ("substitute", 1, "second_best"), ("substitute", 1, "resample")]
    g = torch.Generator().manual_seed(seed)
    out: list[list[StagePerturbation]] = []
    for b in range(n):
        if b % 3 == 0:
            out.append([])
            continue
        stages = (1 + torch.randperm(K, generator=g)[: 1 + b % 2]).tolist()
        out.append([StagePerturbation(s, *kinds[int(torch.randint(0, len(kinds), (1,), generator=g))])
                    for s in stages])
    return out


def assert_same(a, b) -> None:
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.commit_stage, b.commit_stage)
    assert (a.token_logp - b.token_logp).abs().max() <= 1e-12
    if a.target_logp is not None or b.target_logp is not None:
        assert (a.target_logp - b.target_logp).abs().max() <= 1e-12


# ------------------------------------------------------------------------------ run_chains


@pytest.mark.parametrize("sampler", ["confidence", "random", "left_to_right"])
@pytest.mark.parametrize("blocks", [1, 2])
@pytest.mark.parametrize("mode", ["greedy", "forced", "sample"])
def test_batched_chains_equal_alone(translate, sampler, blocks, mode):
    """Perturbed prompts (replaced, deleted, duplicated) and per-row stage perturbations of every
    kind in one batch: each row equals its chain run alone; the batch makes at most one forward
    per stage (K stages and a completion step), the rows alone one per stage each."""
    c = translate
    den = c.denoiser
    R, K, n = c.chain.R, 8, 10
    temperature = 1.0 if mode == "sample" else 0.0
    s = SamplerSettings(steps=K, length=R, sampler=sampler, blocks=blocks, temperature=temperature, seed=3,
                        forced=mode == "forced")
    emb, keep = prompt_batch(c, n, seed=blocks)
    y = torch.tensor(c.chain.output)
    force = y if mode == "forced" else None
    pert = stage_perturbations(K, n, seed=7)
    kw = dict(prompt_keep=keep, force=force, target=y, perturb=pert)
    with counted(den.model) as batched:
        a = run_chains(den, emb, s, **kw)
    with counted(den.model) as plain:
        unshared = run_chains(den, emb, s, share=False, **kw)
    with counted(den.model) as alone:
        b = run_chains_alone(den, emb, s, **kw)
    assert_same(a, b)
    assert_same(unshared, b)
    assert batched["calls"] <= K + 1 and plain["calls"] == batched["calls"]
    assert alone["calls"] >= n * (K - 2)              # each row alone: every stage but its noops
    if mode != "forced":
        assert bool((a.tokens != a.tokens[0]).any()), "the perturbations should change some outputs"


def test_sampled_chains_reproduce_generate_sample(translate):
    """``generate(sample, seed)``: the first row of a batch reproduces the recorded chain of
    the sampled contract exactly, whatever the other rows are."""
    c = run(contract(P2O.format(est="chain"), output="generate(sample, seed = 5, temperature = 1.5)"),
            dtype="float64").compiled
    den = c.denoiser
    emb, keep = prompt_batch(c, 6, seed=2)
    free = SamplerSettings(**{**c.chain.settings.__dict__, "forced": False})
    a = run_chains(den, emb, free, prompt_keep=keep, perturb=stage_perturbations(c.chain.K, 6, seed=1))
    assert a.tokens[0].tolist() == list(c.chain.output)
    b = run_chains_alone(den, emb, free, prompt_keep=keep, perturb=stage_perturbations(c.chain.K, 6, seed=1))
    assert_same(a, b)


def test_continue_chain_rows_equal_alone(translate):
    """``stop_before`` and per-row overrides of visible slots (continue the chain)."""
    c = translate
    den = c.denoiser
    R = c.chain.R
    emb, keep = prompt_batch(c, 8, seed=4)
    y = torch.tensor(c.chain.output)
    o_emb = den.embed(torch.randint(5, 100, (8, R), generator=torch.Generator().manual_seed(0))).detach()
    which = torch.rand(8, R, generator=torch.Generator().manual_seed(1)) < 0.3
    which[0] = False
    for stop in (1, 4, 7):
        kw = dict(prompt_keep=keep, force=y, stop_before=stop, override=(o_emb, which))
        with counted(den.model) as batched:
            a = run_chains(den, emb, c.chain.settings, **kw)
        b = run_chains_alone(den, emb, c.chain.settings, **kw)
        assert_same(a, b)
        assert batched["calls"] == c.chain.K - stop


def test_mixed_forced_and_free_rows(translate):
    """A ``(B, R)`` force with free rows (``-1``): each row equals its forced or free chain alone."""
    c = translate
    den = c.denoiser
    emb, keep = prompt_batch(c, 6, seed=5)
    y = torch.tensor(c.chain.output)
    force = y.unsqueeze(0).repeat(6, 1)
    force[::2] = -1
    free = SamplerSettings(**{**c.chain.settings.__dict__, "forced": False})
    a = run_chains(den, emb, free, prompt_keep=keep, force=force, target=y)
    for b in range(6):
        f = None if b % 2 == 0 else y
        one = run_chains(den, emb[b:b + 1], free, prompt_keep=keep[b:b + 1], force=f, target=y)
        assert torch.equal(a.tokens[b:b + 1], one.tokens) and torch.equal(a.commit_stage[b:b + 1], one.commit_stage)
        assert (a.target_logp[b:b + 1] - one.target_logp).abs().max() <= 1e-12


def test_shared_trunk_runs_fewer_rows(capitals):
    """Stage perturbations: chains that perturb a later stage share the unperturbed trunk, so a
    stage's forward computes only the distinct states; a noop row costs nothing."""
    c = capitals
    den = c.denoiser
    K = c.chain.K
    y = torch.tensor(c.chain.output)
    pert = [[]] + [[StagePerturbation(s, "noop")] for s in range(K, 0, -1)]
    emb = den.embed(torch.tensor(c.chain.prompt_ids)).detach().unsqueeze(0).expand(K + 1, -1, -1)
    rows: list[int] = []
    h = den.model.register_forward_pre_hook(lambda _m, args, kw: rows.append(int(kw["inputs_embeds"].shape[0])),
                                            with_kwargs=True)
    try:
        a = run_chains(den, emb, c.chain.settings, force=y, target=y, perturb=pert)
    finally:
        h.remove()
    assert_same(a, run_chains_alone(den, emb, c.chain.settings, force=y, target=y, perturb=pert))
    # stage K: one distinct (all-masked) state among the K rows that commit; row 1 (noop at K) skips
    assert rows[0] == 1
    assert len(rows) <= K + 1 and sum(rows) < (K + 1) * K


# ------------------------------------------------------------------------------ objectives


def drops(pb, n: int, seed: int) -> torch.Tensor:
    E = torch.nonzero(pb.eligible).flatten().tolist()
    g = torch.Generator().manual_seed(seed)
    d = torch.zeros(n, pb.length, dtype=torch.bool)
    for i in range(1, n):
        sel = torch.randperm(len(E), generator=g)[: int(torch.randint(1, len(E) + 1, (1,), generator=g))]
        d[i, [E[j] for j in sel.tolist()]] = True
    d[4] = d[2]
    return d


OBJECTIVES = {
    "regenerate free": (P2O.format(est="chain"), "generate(greedy)", "occlusion(operator = mask)", "mask", 8),
    "regenerate sample": (P2O.format(est="chain"), "generate(sample, seed = 2, temperature = 1.0)",
                          "occlusion(operator = mask)", "mask", 8),
    "regenerate forced": (P2O.format(est="chain"), f'"{FIG1[1]}"', "occlusion(operator = mask)", "mask", 8),
    "regenerate delete": (P2O.format(est="chain"), f'"{FIG1[1]}"', "occlusion(operator = delete)", "delete", 8),
    "regenerate pll": (P2O.format(est="pll"), f'"{FIG1[1]}"', "occlusion(operator = mask)", "mask", None),
    "continue_chain": (STATE.format(t=1), f'"{FIG1[1]}"', "occlusion(operator = mask)", "mask", 7),
    "continue_chain delete": (STATE.format(t=3), f'"{FIG1[1]}"', "occlusion(operator = delete)", "delete", 5),
    "run_chain noop": (STAGE, f'"{FIG1[1]}"', "stage_perturbation(perturbation = noop)", "noop", 9),
    "run_chain schedule": (STAGE, f'"{FIG1[1]}"', "stage_perturbation(perturbation = schedule, shift = -1)",
                           "schedule", 9),
    "run_chain substitute": (STAGE, f'"{FIG1[1]}"', "stage_perturbation(perturbation = substitute)",
                             "substitute", 9),
    "run_chain resample": (STAGE, f'"{FIG1[1]}"',
                           "stage_perturbation(perturbation = substitute, substitute = resample)", "substitute", 9),
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_check_objectives_batched_equal_one_at_a_time(name):
    """The check protocols (regenerate, continue the chain, run the chain) on a batch of
    perturbed inputs: the scores and changed flags of the rows run alone, in (stages) denoiser
    calls (plus one read for the state score) instead of (rows x stages)."""
    body, output, method, op, max_calls = OBJECTIVES[name]
    c = run(contract(body, output=output, method=method), dtype="float64").compiled
    pb, obj = c.problem, c.check_objective
    d = drops(pb, 12, seed=len(name))
    emb, keep = pb.replace(op, d)
    obj.changed.clear()
    with counted(c.denoiser.model) as batched:
        a = obj(emb, keep)
    fa = list(obj.changed)
    obj.changed.clear()
    with one_at_a_time(), counted(c.denoiser.model) as alone:
        b = obj(emb, keep)
    assert fa == list(obj.changed) and len(fa) == 12
    assert (a - b).abs().max() <= 1e-12
    if name.startswith("run_chain"):
        # a row alone runs the stages it commits in; the batch runs each such stage once
        per_row = []
        for b in range(12):
            with counted(c.denoiser.model) as one:
                obj(emb[b:b + 1], None if keep is None else keep[b:b + 1])
            per_row.append(one["calls"])
        assert alone["calls"] == sum(per_row)
        assert max(per_row) <= batched["calls"] <= max_calls
        assert alone["calls"] >= 4 * batched["calls"]
    elif max_calls is not None:
        assert batched["calls"] <= max_calls
        assert alone["calls"] >= 12 * (max_calls - 2)
    else:                       # pll: the regeneration's stages, then the estimator's reads (batched either way)
        assert batched["calls"] < alone["calls"]
    if "forced" in name:        # the free and the forced chain of each row stepped together
        assert batched["calls"] <= 8 < alone["calls"] / 12


def test_score_chains_runs_each_distinct_input_once():
    """The checks' entry point: duplicates cost nothing, chunking changes nothing, and the changed
    flags come back one per input row, in order."""
    c = run(contract(P2O.format(est="chain"), output="generate(greedy)"), dtype="float64").compiled
    pb, obj = c.problem, c.check_objective
    d = drops(pb, 9, seed=3)
    d = torch.cat([d, d[[1, 2, 2, 7]]])
    emb, keep = pb.replace("mask", d)
    obj.changed.clear()
    direct = obj(emb, keep)
    flags = list(obj.changed)
    obj.changed.clear()
    runs = obj.runs
    with counted(c.denoiser.model) as n:
        s = score_chains(obj, emb, keep)
    assert obj.runs == runs + 1 and n["calls"] <= 8
    assert list(obj.changed) == flags
    assert (s - direct.double()).abs().max() <= 1e-12
    obj.changed.clear()
    chunked = score_chains(obj, emb, keep, rows_per_call=2)
    assert obj.runs == runs + 1 + 4                         # 8 distinct inputs, 2 per call
    assert (chunked - s).abs().max() <= 1e-12 and list(obj.changed) == flags


def test_stage_objective_codes_batched(capitals):
    """The stage map's own batch (every stage perturbed alone, plus the recorded chain)."""
    pb, obj = capitals.problem, capitals.check_objective
    K = pb.length
    d = torch.zeros(K + 1, K, dtype=torch.bool)
    d[torch.arange(1, K + 1), torch.arange(K)] = True
    emb, keep = pb.replace("noop", d)
    assert int(emb[1, 0, 0]) == STAGE_CODES["noop"]
    with counted(capitals.denoiser.model) as batched:
        a = obj(emb, keep)
    with one_at_a_time(), counted(capitals.denoiser.model) as alone:
        b = obj(emb, keep)
    assert (a - b).abs().max() <= 1e-12
    assert batched["calls"] <= K + 1 and alone["calls"] >= (K + 1) * (K - 1)
    # the recorded chain itself: the chain score of y along it is the score of the contract
    assert abs(float(a[0]) - sum(sum(s.logprobs) for s in capitals.chain.steps)) <= 1e-12
