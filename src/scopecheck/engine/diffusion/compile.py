"""Diffusion contract -> computation: record the chain, align, build E/O and the score.

The sequence is ``[special..., x[1..n], r[1..R]]``: the prompt, then ``R`` response slots.
The output ``y`` is frozen from a recorded chain exactly as an autoregressive generation is
frozen from its decoding: ``output generate(greedy | sample, ...)`` runs the sampler freely;
a given ``output "..."`` is padded with ``<eos>`` to ``R`` slots and the chain is
*teacher-forced* to it (the sampler picks which slots to commit by its rule, committing the
given tokens), so the recorded unmasking order is the one the sampler would follow for
that ``y``. Slots after the output's text (``<eos>`` padding) have role ``pad``: they are
part of the response the chain commits and of ``log p(y | x)``, but not of ``y`` selectors.

Per contract kind:

* ``prompt_to_output``: features the prompt tokens in E; the objective is the stated
  estimator (chain / pll / elbo) of the whole response; checks *regenerate*.
* ``state_level(step = t)``: the input is ``[x, z[t + 1]]`` (the state before the stage that
  commits ``z[t]``); features the prompt tokens and the visible slots of ``z[t + 1]``
  (``z[>t]``); the objective is ``log p(z[t] | x, z[>t])``, the slots stage ``t + 1``
  committed, read in that state; checks *continue the chain* to ``z[t + 1]``.
* ``denoising_stage``: features the stages; the method perturbs stages and runs the chain to
  completion (:func:`~scopecheck.engine.diffusion.problem.stage_problem`); checks too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from scopecheck.engine.align import Alignment, Token, encode_text, align, positions as token_positions
from scopecheck.engine.align import prompt_ids as read_prompt
from scopecheck.engine.diffusion.chain import SAMPLER_ALIASES, Chain, SamplerSettings, check_settings, sample_chain
from scopecheck.engine.diffusion.denoiser import Denoiser, default_adapter
from scopecheck.engine.diffusion.estimators import Reads, elbo_estimate, score_reads, state_reads
from scopecheck.engine.embeddings import embedding_operators
from scopecheck.engine.diffusion.problem import ChainObjective, OutputScore, estimator_reads, stage_problem
from scopecheck.engine.models import LoadedModel, check_context
from scopecheck.engine.problem import AttributionProblem
from scopecheck.errors import ContractValidationError, InvalidSettings, Span
from scopecheck.spec import model as m
from scopecheck.spec.validate import Resolved

DEFAULT_LENGTH = 32       # response slots when neither the contract nor the model names a length


@dataclass(frozen=True)
class DiffusionCompiled:
    """What :class:`~scopecheck.engine.compile.Compiled` holds, plus the chain and its protocol
    (a :class:`~scopecheck.engine.compiled.CompiledContract`)."""

    contract: m.Contract
    resolved: Resolved
    alignment: Alignment
    problem: AttributionProblem
    eligible: tuple[int, ...]
    fixed: tuple[int, ...]
    special: tuple[int, ...]
    targets: tuple[int, ...]
    generated: bool
    score_kind: str
    kind: str
    chain: Chain
    denoiser: Denoiser
    n_prompt: int
    estimator: str                         # chain | pll | elbo | state | stage
    samples: int | None
    check_objective: Any                   # ChainObjective | StageObjective: the check protocol's score
    info: dict[str, Any] = field(default_factory=dict)
    stage_features: bool = False           # the features are stages (denoising_stage)
    operator_ids: tuple[int | None, int | None, int | None] = (None, None, None)   # pad, mask, unk tokens
    warnings: tuple[str, ...] = ()         # what the user should know about this computation (reported)

    def positions(self, sel: m.Selector) -> list[int]:
        """Sequence positions (or stage features) a selector names."""
        return selector_positions(self, sel)

    def with_model(self, model: Any) -> AttributionProblem:
        """The same problem (ids, E, reads, recorded chain) on another model, e.g. a
        re-initialised copy for the randomization check; embeddings and operators are the new
        model's. The chain is not re-sampled: the question stays the one the contract asked."""
        import dataclasses

        den = dataclasses.replace(self.denoiser, model=model)
        pb = self.problem
        obj = dataclasses.replace(pb.objective, den=den)
        if self.stage_features:
            obj = dataclasses.replace(obj, prompt_embeds=den.embed(torch.tensor(self.chain.prompt_ids)).detach())
            return dataclasses.replace(pb, objective=obj)
        with torch.no_grad():
            embeds = den.embed(pb.ids).detach()
        vocab, ops = embedding_operators(model, pb.length, *self.operator_ids)
        return dataclasses.replace(pb, embeds=embeds, objective=obj, operators=ops, vocab_embeds=vocab)


# --------------------------------------------------------------------------- helpers


def _err(msg: str, span: Span, expected: str | None = None, rule: str = "diffusion") -> ContractValidationError:
    return ContractValidationError(msg, span, expected=expected, rule=rule)


def make_denoiser(lm: LoadedModel, process: m.Process) -> Denoiser:
    tok, model = lm.tokenizer, lm.model
    params = {p.key: p for p in process.params}
    mask_id = getattr(tok, "mask_token_id", None)
    if mask_id is None:
        mask_id = getattr(getattr(model, "generation_config", None), "mask_token_id", None)
    if mask_id is None:
        mask_id = getattr(model.config, "mask_token_id", None)
    if mask_id is None:
        raise _err(f"{lm.identity} has no mask token, so it cannot denoise", process.span,
                   expected="a masked language model whose tokenizer defines mask_token", rule="model")
    adapter = default_adapter(model.config)
    if "adapter" in params:
        adapter = str(m.py_value(params["adapter"].value))
    token_types = int(getattr(model.config, "type_vocab_size", 0) or 0) >= 2
    block = int(m.py_value(params["block"].value)) if "block" in params else None  # type: ignore[arg-type]
    try:
        return Denoiser(model, int(mask_id), adapter, tok.eos_token_id, tok.pad_token_id, token_types, block)
    except InvalidSettings as exc:
        where = params["block"] if block is not None and "adapter" not in exc.message else params.get("adapter")
        raise _err(exc.message, where.span if where is not None else process.span,
                   expected="block = S with adapter = plain" if block is not None else "adapter = plain | shift",
                   rule="params") from None


def sampler_settings(contract: m.Contract, process: m.Process, lm: LoadedModel, n_output: int | None) -> SamplerSettings:
    params = {p.key: m.py_value(p.value) for p in process.params}
    spans = {p.key: p.span for p in process.params}
    gen_len = getattr(lm.model.config, "diffusion_length", None) or getattr(
        getattr(lm.model, "generation_config", None), "max_new_tokens", None)
    length = params.get("length")
    out_params = {p.key: m.py_value(p.value) for p in (contract.output.params if contract.output else ())}
    if length is None and "max_new_tokens" in out_params:
        length = out_params["max_new_tokens"]
    if length is None:
        length = gen_len or (n_output + 1 if n_output is not None else DEFAULT_LENGTH)
        if n_output is not None and length < n_output:
            length = n_output
    length = int(length)
    if n_output is not None and n_output > length:
        raise _err(f"the output has {n_output} tokens but the response region has {length} slots",
                   spans.get("length", process.span), expected=f"length >= {n_output}", rule="params")
    sampler = str(params.get("sampler", "confidence"))
    sampler = SAMPLER_ALIASES.get(sampler, sampler)
    steps = int(params.get("steps", length))
    blocks = int(params.get("blocks", 1))
    block = int(params["block"]) if "block" in params else None  # type: ignore[arg-type]
    out = contract.output
    temperature, seed, forced = 0.0, contract.seed or 0, True
    if out is not None and out.rule is not None:
        forced = False
        op = {p.key: m.py_value(p.value) for p in out.params}
        if out.rule == "sample":
            temperature = float(op.get("temperature", 1.0))  # type: ignore[arg-type]
            seed = int(op["seed"])  # type: ignore[arg-type]
    settings = SamplerSettings(steps=steps, length=length, sampler=sampler, blocks=blocks, temperature=temperature,
                               seed=seed, forced=forced, block=block)
    try:
        check_settings(settings)
    except InvalidSettings as exc:
        if block is not None:
            n = -(-length // block)
            raise _err(exc.message, spans.get("block", process.span),
                       expected=f"steps = {length} (one slot per stage) or a multiple of the {n} blocks",
                       rule="params") from None
        raise _err(exc.message, process.span, expected="masked_diffusion(steps = K, blocks = B) with K a multiple of B",
                   rule="params") from None
    return settings


def _alignment(tok: Any, prompt: m.Prompt, chain: Chain, given_text: str | None) -> tuple[Alignment, str, int]:
    """Alignment with the response slots: ``y`` tokens up to the first ``<eos>``, then ``pad`` slots."""
    out = list(chain.output)
    eos = tok.eos_token_id
    T = out.index(eos) if (eos is not None and eos in out) else len(out)
    if given_text is not None:
        text = given_text
        al = align(tok, prompt, text)
    else:
        text = tok.decode(out[:T], skip_special_tokens=True)
        al = align(tok, prompt, text, out[:T])
    toks = list(al.tokens)
    for i in range(T, len(out)):
        toks.append(Token(len(toks), out[i], tok.convert_ids_to_tokens(out[i]), "pad", i + 1, len(text), len(text)))
    return Alignment(tuple(toks), al.prompt_text, text, al.segments), text, T


def _state_index(sel: m.Selector, ref: Any, K: int) -> int:
    if isinstance(ref, bool) or not isinstance(ref, (int, m.Symbol)):
        raise _err("a diffusion state is named by its index", sel.span, expected=f"z[0..{K}] or z[K]",
                   rule="selector")
    t = K if isinstance(ref, m.Symbol) else int(ref)
    if isinstance(ref, m.Symbol) and ref.name != "K":
        raise _err(f"symbolic state index `{ref.name}`", sel.span, expected=f"an index 0..{K} or K", rule="symbolic")
    if not 0 <= t <= K:
        raise _err(f"state z[{t}] does not exist: the chain has states z[{K}] (all masked) .. z[0] = y",
                   sel.span, expected=f"0..{K}", rule="selector")
    return t


def selector_positions(c: DiffusionCompiled, sel: m.Selector) -> list[int]:
    chain, P = c.chain, c.n_prompt
    K = chain.K
    if c.stage_features:
        if sel.space != "stage":
            raise _err(f"the features of a denoising-stage contract are stages, not {sel.space} tokens", sel.span,
                       expected="stage, stage[2], stage[1:3]", rule="selector")
        stages = list(range(K, 0, -1))
        if sel.op == "all":
            chosen = stages
        else:
            a = _state_index(sel, sel.a, K)
            b = _state_index(sel, sel.b, K) if sel.b is not None else a
            if sel.op != "range" and not 1 <= a <= K:
                raise _err(f"stage {a} does not exist", sel.span, expected=f"1..{K}", rule="selector")
            ops = {"at": lambda s: s == a, "range": lambda s: min(a, b) <= s <= max(a, b),
                   "lt": lambda s: s < a, "le": lambda s: s <= a, "gt": lambda s: s > a, "ge": lambda s: s >= a}
            chosen = [s for s in stages if ops[sel.op](s)]
        return [K - s for s in chosen]
    if sel.space == "stage":
        raise _err("stages are features only of a denoising-stage contract", sel.span, rule="process-features")
    if sel.space in ("x", "y"):
        return token_positions(c.alignment, sel)
    # z: slots of states
    if sel.op == "all":
        slots = list(range(chain.R))
    else:
        a = _state_index(sel, sel.a, K)
        if sel.op == "at":
            slots = chain.committed(a) if a < K else []
        elif sel.op == "gt":                       # z[a+1..K]: visible in z[a+1]
            slots = chain.visible(a + 1) if a < K else []
        elif sel.op == "ge":
            slots = chain.visible(a)
        elif sel.op == "lt":                       # states after z[a]: committed by stages <= a
            slots = sorted(set(range(chain.R)) - set(chain.visible(a)))
        elif sel.op == "le":
            slots = sorted(set(range(chain.R)) - set(chain.visible(a + 1))) if a < K else list(range(chain.R))
        else:
            b = _state_index(sel, sel.b, K)
            slots = sorted({p for t in range(min(a, b), max(a, b) + 1) for p in (chain.committed(t) if t < K else [])})
    return [P + s for s in slots]


# --------------------------------------------------------------------------- compile


def compile_diffusion(contract: m.Contract, resolved: Resolved, lm: LoadedModel) -> DiffusionCompiled:
    sc = resolved.scope
    assert sc.process is not None and sc.score is not None and sc.explain is not None and contract.prompt is not None
    if lm.family != "masked_diffusion":
        raise _err(f"{lm.identity} is not a masked language model; a masked_diffusion process needs a denoiser",
                   contract.model.span if contract.model else contract.span,
                   expected="a masked LM (reference:translate-mdlm, or a local AutoModelForMaskedLM directory)",
                   rule="model")
    kind = resolved.kind or "custom"
    den = make_denoiser(lm, sc.process)
    tok = lm.tokenizer
    prompt_ids = read_prompt(tok, contract.prompt)
    P = len(prompt_ids)
    given = contract.output.text if contract.output is not None else None
    force = None
    if given is not None:
        y_ids = encode_text(tok, given)[0]
        if not y_ids:
            raise _err("the output is empty", contract.output.span, expected="a non-empty output", rule="output")
        settings = sampler_settings(contract, sc.process, lm, len(y_ids))
        pad = tok.eos_token_id if tok.eos_token_id is not None else den.mask_id
        force = y_ids + [pad] * (settings.length - len(y_ids))
    else:
        settings = sampler_settings(contract, sc.process, lm, None)
    check_context(lm, P + settings.length, f"the prompt and {settings.length} response slots", contract.prompt.span)
    if den.block is not None:
        try:
            den.check_block_causal(P, P + settings.length, seed=contract.seed or 0)
        except InvalidSettings as exc:
            bspan = next(p.span for p in sc.process.params if p.key == "block")
            raise _err(exc.message, bspan, expected="a model whose attention takes a 4D attention_mask "
                       "(transformers' eager or SDPA attention)", rule="model") from None
    chain = sample_chain(den, prompt_ids, settings, force)
    al, text, T = _alignment(tok, contract.prompt, chain, given)
    if T == 0:
        raise _err("the chain generated no token before <eos>", contract.output.span if contract.output else
                   contract.span, expected="a prompt the model continues", rule="generation")
    L = len(al.tokens)
    special = tuple(t.position for t in al.tokens if t.role == "special")
    ids = torch.tensor(al.ids, dtype=torch.long, device=den.device)
    y = torch.tensor(chain.output, device=den.device)
    est = sc.score.estimator
    estimator = est.name if est is not None else ("state" if sc.explain.space == "z" else "chain")
    samples = None
    if est is not None and est.name == "elbo":
        samples = int(m.py_value(next(p.value for p in est.params if p.key == "samples")))  # type: ignore[arg-type]
    seed = contract.seed or 0

    operator_ids = (tok.pad_token_id, den.mask_id, tok.unk_token_id)
    vocab_embeds, operators = embedding_operators(den.model, L, *operator_ids)
    info: dict[str, Any] = {"sampler": settings.sampler, "steps": settings.steps, "length": settings.length,
                            "blocks": settings.blocks, "block": settings.block,
                            "attention": "block-causal" if settings.block is not None else "bidirectional",
                            "temperature": settings.temperature,
                            "sampler_seed": settings.seed, "chain_mode": "teacher-forced" if settings.forced else "free",
                            "estimator": estimator, "samples": samples, "adapter": den.adapter}
    base = DiffusionCompiled(contract, resolved, al, None, (), (), special, (), given is None,  # type: ignore[arg-type]
                             sc.score.kind, kind, chain, den, P, estimator, samples, None, info,
                             operator_ids=operator_ids)
    fixed_sels = sc.fixed or ()
    C = sorted({p for s in fixed_sels for p in selector_positions(base, s)})

    if sc.score.kind == "stage_delta" or kind == "denoising_stage":
        if estimator != "chain":
            raise _err(f"estimator `{estimator}` scores y without reading the chain, so perturbing a stage cannot "
                       "change it", est.span if est is not None else sc.score.span, expected="via chain",
                       rule="score-output")
        stage_base = DiffusionCompiled(**{**base.__dict__, "stage_features": True})
        E = sorted({p for s in sc.eligible or () for p in selector_positions(stage_base, s)})
        method_params = {p.key: m.py_value(p.value) for p in (contract.method.params if contract.method else ())}
        problem = stage_problem(den, chain, den.embed(ids[:P]).detach(), shift=int(method_params.get("shift", 1)),
                                substitute=str(method_params.get("substitute", "second_best")))
        if len(E) != chain.K:
            elig = torch.zeros(chain.K, dtype=torch.bool)
            elig[E] = True
            problem = AttributionProblem(problem.ids, problem.embeds, elig, problem.objective, problem.operators)
        stage_toks = _stage_tokens(chain, tok)
        al = Alignment(stage_toks, al.prompt_text, al.output_text, al.segments)
        info["score"] = "log p(y | x) - log p(y | x; pert(stage)) via chain"
        return DiffusionCompiled(**{**stage_base.__dict__, "alignment": al, "problem": problem,
                                    "eligible": tuple(E), "fixed": (), "special": (), "targets": (),
                                    "estimator": "chain", "check_objective": problem.objective,
                                    "kind": "denoising_stage"})

    E = sorted({p for s in sc.eligible or () for p in selector_positions(base, s)})
    if not E and sc.eligible:
        raise _err("no feature is eligible after tokenization and sampling", sc.eligible[0].span,
                   expected="an eligible set that names at least one token or committed slot", rule="selector")
    both = sorted(set(E) & set(C))
    if both:
        raise _err("tokens are both eligible and held fixed", (sc.fixed or (sc.explain,))[0].span,
                   expected="E and C disjoint", rule="disjoint")
    if sc.explain.space == "z":
        t = _state_index(sc.explain, sc.explain.a, chain.K)
        if t >= chain.K:
            raise _err(f"z[{t}] is the fully masked start of the chain; nothing is committed in it",
                       sc.explain.span, expected=f"z[0..{chain.K - 1}]", rule="selector")
        O = [P + s for s in chain.committed(t)]
        if not O:
            raise _err(f"stage {t + 1} commits no slot under this schedule, so z[{t}] adds nothing to explain",
                       sc.explain.span, expected="a state whose stage commits tokens (see the chain in the report)",
                       rule="selector")
        late = [p for p in E if p >= P and (p - P) not in set(chain.visible(t + 1))]
        if late:
            raise _err(f"slot {late[0] - P + 1} is not yet committed in z[{t + 1}]: a state is explained only by "
                       "the prompt and earlier states", sc.eligible[0].span if sc.eligible else sc.explain.span,
                       expected=f"x, z[>{t}]", rule="causality")
        state_ids = torch.tensor(prompt_ids + chain.state(t + 1), dtype=torch.long, device=den.device)
        embeds = den.embed(state_ids).detach()
        reads = state_reads(chain, t)
        objective = OutputScore(den, P, y, reads)
        check_obj = ChainObjective(den, chain, P, embeds, "continue_chain", "state", None, t)
        info["state"] = t
        info["score"] = f"log p(z[{t}] | x, z[>{t}]): slots {[s + 1 for s in chain.committed(t)]} read in z[{t + 1}]"
        ids_for_problem = state_ids
    else:
        # the whole response (its <eos> padding included, as the chain commits it), or the
        # output tokens a narrower `explain` names: the estimator's reads score only those slots
        O = list(range(P, L)) if sc.explain.op == "all" and sc.explain.segment is None else \
            selector_positions(base, sc.explain)
        embeds = den.embed(ids).detach()
        reads = estimator_reads(chain, estimator, samples or 0, seed)
        keep_slots = None
        if len(O) != L - P:
            keep_slots = torch.zeros(chain.R, dtype=torch.bool)
            keep_slots[[p - P for p in O]] = True
            reads = Reads(reads.visible, reads.scored & keep_slots, reads.weight, reads.groups)
        objective = OutputScore(den, P, y, reads)
        check_obj = ChainObjective(den, chain, P, embeds, "regenerate", estimator,
                                   None if estimator == "chain" else reads, slots=keep_slots)
        what = "y" if len(O) == L - P else "y[" + ", ".join(al.tokens[p].text for p in O) + "]"
        info["score"] = f"log p({what} | x) via {estimator}" + (f"(samples = {samples}, seed = {seed})" if samples else "")
        ids_for_problem = ids
    bad = [p for p in E if p in O]
    if bad:
        raise _err("an output slot cannot explain itself", sc.explain.span, rule="causality")
    eligible = torch.zeros(L, dtype=torch.bool, device=den.device)
    eligible[E] = True
    problem = AttributionProblem(ids=ids_for_problem, embeds=embeds, eligible=eligible, objective=objective,
                                 operators=operators, target_rows=tuple(O), vocab_embeds=vocab_embeds)
    with torch.no_grad():
        value = float(objective(embeds.unsqueeze(0))[0])
        if estimator == "elbo" and samples:
            # the standard error of the score itself: the same reads (restricted to O), the same mean
            _, se = elbo_estimate(den, embeds.unsqueeze(0), P, objective.reads, y)
            info["elbo_standard_error"] = float(se[0])
    info["score_value"] = value
    return DiffusionCompiled(**{**base.__dict__, "problem": problem, "eligible": tuple(E), "fixed": tuple(C),
                                "targets": tuple(O), "check_objective": check_obj})


def _stage_tokens(chain: Chain, tok: Any) -> tuple[Token, ...]:
    """One pseudo-token per stage (feature ``j`` = stage ``K - j``), its text naming what it committed."""
    out = []
    for j, s in enumerate(range(chain.K, 0, -1)):
        step = next((st for st in chain.steps if st.stage == s), None)
        words = [tok.convert_ids_to_tokens(t) for t in (step.tokens if step else ())]
        where = f" (block {step.block + 1})" if chain.settings.block is not None and step and step.block is not None else ""
        text = f"stage {s}{where}: " + (" ".join(words) if words else "(nothing)")
        out.append(Token(j, s, text, "stage", s, 0, 0))
    return tuple(out)


def state_score(c: DiffusionCompiled, t: int) -> float:
    """``log p(z[t] | x, z[>t])`` read in the recorded chain (for tests and reports)."""
    P = c.n_prompt
    ids = torch.tensor(list(c.chain.prompt_ids) + list(c.chain.output), device=c.denoiser.device)
    with torch.no_grad():
        emb = c.denoiser.embed(ids).unsqueeze(0)
        return float(score_reads(c.denoiser, emb, P, state_reads(c.chain, t), torch.tensor(c.chain.output))[0])


__all__ = ["DiffusionCompiled", "compile_diffusion", "selector_positions", "state_score"]
