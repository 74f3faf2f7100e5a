"""Semantic validation of contracts and claims (DESIGN section 2).

``validate(doc)`` returns every problem found, each a positioned :class:`ContractError`,
instead of stopping at the first. Rules that need token positions which the text alone
cannot give (an index against a text anchor, say) are checked again by the engine after
tokenization, with the same messages.

Rule ids (shown as ``error[rule]``) are the entries of :data:`scopecheck.errors.RULES`, the
one registry of them; the list below is generated from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from scopecheck.errors import (
    ContractError, ContractValidationError, Span, cap_errors, did_you_mean, rule_list, unknown_name,
)
from scopecheck.spec import model as m
from scopecheck.spec import vocabulary as vocab
from scopecheck.spec.blocks import layout_error, n_causal_blocks
from scopecheck.spec.anchors import occurrences
from scopecheck.spec.check_registry import CHECKS, MAP_FUNCTIONS, PERTURB_OWNER, PROTOCOL_OWNER, PROTOCOLS, CheckEntry
from scopecheck.spec.params import DECODING_PARAMS, ESTIMATOR_PARAMS, SEED, check_params, check_value
from scopecheck.spec.registry import COMMON_METHOD_PARAMS, METHOD_ALIASES, METHODS, supported_methods
from scopecheck.spec.references import MODELS as REFERENCE_MODELS
from scopecheck.spec.references import dataset_errors
from scopecheck.spec.standard import STANDARD, family_errors, merge, standard_scope
from scopecheck.spec.text import fmt_selector
from scopecheck.spec.toolkits import TOOLKITS

__doc__ = f"{__doc__ or ''}\n{rule_list()}"   # the rule ids, from the registry (never a second list)

PROCESSES: dict[str, dict[str, str]] = {
    "autoregressive": {},
    "classifier": {},
    "masked_diffusion": {"sampler": f"{vocab.choices(vocab.SAMPLERS)} (default {vocab.DEFAULT_SAMPLER})",
                         "steps": "number of denoising stages K (default: one slot per stage)",
                         "blocks": "semi-autoregressive blocks (default 1; steps a multiple of blocks)",
                         "block": "block-causal denoiser: slots per block, attention bidirectional within a block "
                                  "and causal across blocks (BD3-LM); steps the length or a multiple of the blocks",
                         "length": "response slots R (default: the model's generation length)",
                         "adapter": f"{vocab.choices(vocab.ADAPTERS)} (default: shift for Dream, plain otherwise)"},
}
SAMPLERS = (*vocab.SAMPLERS, *vocab.SAMPLER_ALIASES)
ESTIMATORS = vocab.ESTIMATOR_PARAMS
DECODING = {"greedy": ("max_new_tokens",), "sample": ("max_new_tokens", "seed", "temperature", "top_p", "top_k")}
INF = math.inf


@dataclass(frozen=True)
class Resolved:
    """A contract's complete SCOPE: stated elements merged over its standard contract."""

    scope: m.Scope
    origin: dict[str, str]   # element -> "stated" | "use"
    kind: str | None         # one of CONTRACT_KINDS, None when it cannot be derived


def _err(msg: str, span: Span, expected: str | None = None, hint: str | None = None,
         rule: str | None = None) -> ContractValidationError:
    return ContractValidationError(msg, span, expected=expected, hint=hint, rule=rule)


def fmt(sel: m.Selector) -> str:
    return fmt_selector(sel)


# --------------------------------------------------------------------------- resolution


def resolve(contract: m.Contract | m.Computed) -> Resolved:
    if contract.use is not None:
        filled = standard_scope(contract.use)
        scope, origin = merge(contract.scope, filled)
    else:
        scope, origin = contract.scope, {e: "stated" for e in m.Scope.ELEMENTS if getattr(contract.scope, e) is not None}
    return Resolved(scope, origin, contract_kind(scope))


def _spaces(sels: tuple[m.Selector, ...] | None) -> set[str]:
    return {s.space for s in sels or ()}


def contract_kind(sc: m.Scope) -> str | None:
    """The Table-1 setting a complete SCOPE instantiates (element-by-element contracts too)."""
    if sc.process is None or sc.explain is None or sc.eligible is None:
        return None
    p, o, e = sc.process.kind, sc.explain, _spaces(sc.eligible)
    if p == "classifier":
        return "classifier"
    if p == "autoregressive":
        if "y" in e:
            return "local_next_token"
        return "prompt_conditioned" if o.is_single else "span_prompt"
    if p == "masked_diffusion":
        if "stage" in e:
            return "denoising_stage"
        if o.space == "z":
            return "state_level"
        return "prompt_to_output"
    return None


# --------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Interval:
    """Half-open ``[lo, hi)`` in a domain: ``tok`` (1-based token index), ``char`` (text
    offsets), ``sym:<name>`` (relative to a symbol), or ``None`` (the whole space)."""

    domain: str | None
    lo: float
    hi: float

    def comparable(self, other: "Interval") -> bool:
        return self.domain is None or other.domain is None or self.domain == other.domain

    def empty(self) -> bool:
        return self.hi <= self.lo


BIG = 10**9  # stands for T, the last generated token


class Anchors:
    """Resolves text anchors against the prompt and output text where they are known."""

    def __init__(self, doc: m.Contract | m.Claim, errors: list[ContractError]) -> None:
        # a segment filled from a dataset field has no text before an example fills it: the prompt
        # text, and the positions of that segment and the ones after it, are then the engine's to find
        filled = doc.prompt is not None and any(s.field is not None for s in doc.prompt.segments)
        self.texts = {"x": doc.prompt.text if doc.prompt and not filled else None,
                      "y": doc.output.text if doc.output and doc.output.text is not None else None}
        self.segments: dict[str, tuple[int, int] | None] = {}
        if doc.prompt is not None:
            pos: int | None = 0
            for seg in doc.prompt.segments:
                if seg.field is not None:
                    pos = None
                if seg.name:
                    self.segments[seg.name] = None if pos is None else (pos, pos + len(seg.text))
                pos = None if pos is None else pos + len(seg.text) + 1
        self.errors = errors
        self.reported: set[tuple[int, int, str]] = set()
        self._hits: dict[tuple[str, str], list[int]] = {}

    def _report(self, e: ContractValidationError) -> None:
        key = (e.span.line, e.span.column, e.message)
        if key not in self.reported:
            self.reported.add(key)
            self.errors.append(e)

    def char(self, space: str, ref: m.TextRef, span: Span) -> tuple[int, int] | None:
        text = self.texts.get(space)
        if text is None:
            return None
        where = "prompt" if space == "x" else "output"
        hits = self._hits.get((space, ref.text))
        if hits is None:   # each anchor text searched once, however many selectors name it
            hits = occurrences(text, ref.text)
            self._hits[(space, ref.text)] = hits
        if not hits:
            self._report(_err(f"{ref.text!r} does not occur in the {where} text", span,
                              expected=f"a substring of the {where}: {text!r}", rule="text-anchor"))
            return None
        if ref.occurrence is not None:
            if not 1 <= ref.occurrence <= len(hits):
                self._report(_err(f"{ref.text!r} occurs {len(hits)} time(s) in the {where}, not {ref.occurrence}",
                                  span, expected=f"@1..@{len(hits)}", rule="text-anchor"))
                return None
            s = hits[ref.occurrence - 1]
        elif len(hits) > 1:
            self._report(_err(f"{ref.text!r} is ambiguous: it occurs {len(hits)} times in the {where}", span,
                              expected="one occurrence", hint=f'name one: "{ref.text}"@1 ... "{ref.text}"@{len(hits)}',
                              rule="text-anchor"))
            return None
        else:
            s = hits[0]
        return s, s + len(ref.text)

    def point(self, sel: m.Selector, ref: m.Ref | None) -> tuple[str, float, float] | None:
        """(domain, lo, hi) for a single reference."""
        if isinstance(ref, bool) or ref is None:
            return None
        if isinstance(ref, int):
            return ("tok", ref, ref + 1)
        if isinstance(ref, m.Symbol):
            if ref.name in ("T", "K", "n"):
                return ("tok", BIG, BIG + 1)
            return (f"sym:{ref.name}", 0, 1)
        c = self.char(sel.space, ref, sel.span)
        return None if c is None else ("char", c[0], c[1])

    def interval(self, sel: m.Selector) -> Interval | None:
        if sel.segment is not None:
            seg = self.segments.get(sel.segment)
            if seg is None and sel.segment in self.segments:
                return None  # filled from a dataset field: its tokens are known per example
            if seg is None:
                known = list(self.segments)
                self._report(ContractValidationError(
                    f"the prompt has no segment `{sel.segment}`", sel.span,
                    expected=f"one of: {', '.join(known)}" if known else "a prompt written as `prompt { name: \"...\" }`",
                    hint=did_you_mean(sel.segment, known), rule="unknown-name"))
                return None
            if sel.op != "all":
                return None  # positions within a segment: resolved by the engine
            return Interval("char", seg[0], seg[1])
        if sel.op == "all":
            return Interval(None, -INF, INF)
        pa = self.point(sel, sel.a)
        if pa is None:
            return None
        dom, lo, hi = pa
        if sel.op == "at":
            return Interval(dom, lo, hi)
        if sel.op == "range":
            pb = self.point(sel, sel.b)
            if pb is None or pb[0] != dom:
                return None
            return Interval(dom, lo, pb[2])
        return {"lt": Interval(dom, -INF, lo), "le": Interval(dom, -INF, hi),
                "gt": Interval(dom, hi, INF), "ge": Interval(dom, lo, INF)}[sel.op]


def _clip(iv: Interval, space: str, anchors: Anchors) -> Interval:
    if iv.domain == "char":
        n = len(anchors.texts.get(space) or "")
        return Interval("char", max(iv.lo, 0), min(iv.hi, n))
    if iv.domain == "tok":
        lo = 0 if space == "z" else 1
        return Interval("tok", max(iv.lo, lo), iv.hi)
    return iv


def overlap(a: Interval, b: Interval, space: str, anchors: Anchors) -> bool | None:
    """True/False when decidable from the text, None when only tokens can tell."""
    if not a.comparable(b):
        return None
    a, b = _clip(a, space, anchors), _clip(b, space, anchors)
    if a.empty() or b.empty():
        return False
    return a.lo < b.hi and b.lo < a.hi


class _Sweep:
    """Intervals of one side sorted by ``lo`` with the running maximum of ``hi``: which of them
    overlaps a query ``[lo, hi)`` (the one reaching furthest right) in O(log n)."""

    def __init__(self, items: list[tuple[Interval, int]]) -> None:
        items = sorted(items, key=lambda it: it[0].lo)
        self.los = [iv.lo for iv, _ in items]
        self.best: list[tuple[float, int]] = []   # (max hi so far, index of the selector reaching it)
        for iv, k in items:
            if not self.best or iv.hi > self.best[-1][0]:
                self.best.append((iv.hi, k))
            else:
                self.best.append(self.best[-1])

    def hit(self, q: Interval) -> int | None:
        import bisect

        n = bisect.bisect_left(self.los, q.hi)     # those with lo < q.hi
        if n == 0:
            return None
        hi, k = self.best[n - 1]
        return k if hi > q.lo else None


def _overlaps(E: tuple[m.Selector, ...], C: tuple[m.Selector, ...], ivs: dict[int, Interval | None],
              anchors: Anchors) -> list[tuple[m.Selector, m.Selector, m.Selector]]:
    """``(e, c, at)`` for overlapping eligible and fixed selectors of one space: for each fixed
    selector its overlap (reported at it), then for each eligible selector not yet named one
    (reported at it). Intervals are clipped to their space; a whole-space interval (domain None)
    meets every non-empty one, intervals of different domains are undecidable here (None from
    :func:`overlap`). O(n log n) in the number of selectors."""
    sides = []
    for sels in (E, C):
        groups: dict[tuple[str, str | None], list[tuple[Interval, int]]] = {}
        for k, s in enumerate(sels):
            iv = ivs.get(id(s))
            if iv is None:
                continue
            iv = _clip(iv, s.space, anchors)
            if not iv.empty():
                groups.setdefault((s.space, iv.domain), []).append((iv, k))
        sides.append(groups)
    sweeps = [{key: _Sweep(items) for key, items in g.items() if key[1] is not None} for g in sides]
    # per space: the first selector of each side (in source order) whose interval is non-empty, and
    # the first whole-space one
    first: list[dict[str, int]] = [{}, {}]
    whole: list[dict[str, int]] = [{}, {}]
    for side in (0, 1):
        for (space, dom), items in sides[side].items():
            k = min(k for _, k in items)
            first[side][space] = min(first[side].get(space, k), k)
            if dom is None:
                whole[side][space] = k

    def partner(side: int, space: str, iv: Interval) -> int | None:
        other = 1 - side
        if iv.domain is None:
            return first[other].get(space)
        hits = [k for k in (whole[other].get(space),
                            sweeps[other][(space, iv.domain)].hit(iv) if (space, iv.domain) in sweeps[other] else None)
                if k is not None]
        return min(hits) if hits else None

    named_e: set[int] = set()
    found = []
    for (space, _), items in sides[1].items():
        for iv, kc in items:
            ke = partner(1, space, iv)
            if ke is not None:
                named_e.add(ke)
                found.append((kc, E[ke], C[kc], C[kc]))
    for (space, _), items in sides[0].items():
        for iv, ke in items:
            if ke in named_e:
                continue
            hit = partner(0, space, iv)
            if hit is not None:
                found.append((len(C) + ke, E[ke], C[hit], E[ke]))
    return [(e, c, at) for _, e, c, at in sorted(found, key=lambda f: f[0])]


# --------------------------------------------------------------------------- contract rules


def _check_symbols(doc: m.Contract, sc: m.Scope, errors: list[ContractError]) -> None:
    sels: list[m.Selector] = []
    if sc.score:
        sels += [sc.score.target, *sc.score.given]
    sels += list(sc.fixed or ()) + list(sc.eligible or ()) + ([sc.explain] if sc.explain else [])
    seen = set()
    for s in sels:
        for r in (s.a, s.b):
            if isinstance(r, m.Symbol) and r.name not in ("T", "K") and (r.name, s.span) not in seen:
                seen.add((r.name, s.span))
                errors.append(_err(
                    f"symbolic index `{r.name}` in a runnable contract", s.span,
                    expected="a token text (\"noir\"), an index (4) or T (the last token)",
                    hint="symbolic indices such as y[t] belong in claims, which describe a computation",
                    rule="symbolic"))


def _check_process(sc: m.Scope, doc: m.Contract, errors: list[ContractError]) -> None:
    p = sc.process
    if p is None:
        return
    if p.kind not in PROCESSES:
        errors.append(unknown_name("process", p.kind, list(PROCESSES), p.span))
        return
    allowed = PROCESSES[p.kind]
    for prm in p.params:
        if prm.key not in allowed:
            errors.append(_err(f"process `{p.kind}` has no parameter `{prm.key}`", prm.span,
                               expected=", ".join(allowed) or "no parameters",
                               hint=did_you_mean(prm.key, list(allowed)), rule="params"))
        elif prm.key == "sampler" and not (isinstance(prm.value, m.Ident) and prm.value.name in SAMPLERS):
            errors.append(_err("unknown sampler", prm.span, expected=" | ".join(SAMPLERS), rule="params"))
        elif prm.key in ("steps", "blocks", "block", "length") and not (
                isinstance(prm.value, int) and not isinstance(prm.value, bool) and 1 <= prm.value <= 4096):
            errors.append(_err(f"`{prm.key}` must be a positive integer (at most 4096)", prm.span,
                               expected=f"{prm.key} = 8", rule="params"))
        elif prm.key == "adapter" and not (isinstance(prm.value, m.Ident) and prm.value.name in vocab.ADAPTERS):
            errors.append(_err("unknown denoiser adapter", prm.span, expected=vocab.choices(vocab.ADAPTERS),
                               rule="params"))
    diffusion = p.kind == "masked_diffusion"
    # process / feature compatibility
    groups = [("held fixed", sc.fixed or ()), ("eligible", sc.eligible or ())]
    everywhere: list[m.Selector] = [*(sc.fixed or ()), *(sc.eligible or ())]
    if sc.explain:
        everywhere.append(sc.explain)
    if sc.score:
        everywhere += [sc.score.target, *sc.score.given] + ([sc.score.perturbed] if sc.score.perturbed else [])
    seen: set[tuple[int, int]] = set()
    for s in everywhere:
        key = (s.span.line, s.span.column)
        if s.space in ("z", "stage") and not diffusion and key not in seen:
            seen.add(key)
            what = "diffusion states" if s.space == "z" else "denoising stages"
            errors.append(_err(f"{what} ({fmt(s)}) exist only in a diffusion process, but the process is "
                               f"`{p.kind}`", s.span, expected="process masked_diffusion(sampler = ...)",
                               rule="process-features"))
    if diffusion:
        for label, sels in groups:
            for s in sels:
                if s.space == "y":
                    errors.append(_err(
                        f"generated-prefix feature {fmt(s)} is {label} under a diffusion process, which has no "
                        "left-to-right prefix", s.span,
                        expected="prompt tokens (x), earlier states (z[>t]) or stages",
                        hint="prefix features need `process autoregressive`", rule="process-features"))
        if doc.model is not None and doc.model.kind == "reference":
            ref = REFERENCE_MODELS.get(doc.model.name)
            if ref is not None and ref.family != "masked_diffusion":
                denoisers = [n for n, r in REFERENCE_MODELS.items() if r.family == "masked_diffusion"]
                errors.append(_err(f"reference:{doc.model.name} is an autoregressive model; a masked_diffusion "
                                   "process needs a masked LM", doc.model.span,
                                   expected="a masked language model: " + ", ".join(f"reference:{n}" for n in denoisers)
                                   + ", or a local directory", rule="process-features"))


def _count(prm: m.Param | None) -> int | None:
    v = None if prm is None else prm.value
    return v if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 else None


def chain_size(p: m.Process, doc: m.Contract) -> tuple[int | None, int | None]:
    """``(K, R)``: the denoising stages and response slots the engine will use, where the contract
    alone fixes them (``steps``, ``length``, else ``generate(..., max_new_tokens = N)``; steps
    default to the length), None where the model or the output's tokenization decides."""
    params = {q.key: q for q in p.params}
    if "length" in params:
        length = _count(params["length"])
    else:
        out = {q.key: q for q in (doc.output.params if doc.output else ())}
        length = _count(out["max_new_tokens"]) if "max_new_tokens" in out else None
    steps = _count(params["steps"]) if "steps" in params else length
    return steps, length


def _selectors(node: object, out: list[m.Selector]) -> None:
    """Every selector in ``node`` (a scope element, an expectation, nested calls), in order."""
    if isinstance(node, m.Selector):
        out.append(node)
    elif isinstance(node, tuple):
        for n in node:
            _selectors(n, out)
    elif isinstance(node, (m.Score, m.Call, m.Comparison, m.Aggregate, m.Expectation)):
        for f in dataclasses.fields(node):
            if f.name != "span":
                _selectors(getattr(node, f.name), out)


def _check_block(S: int, K: int | None, R: int | None, params: dict[str, m.Param],
                 errors: list[ContractError]) -> None:
    """``block = S`` (a block-causal denoiser): never with ``blocks``, never with the shift
    adapter, and a schedule the blocks can share (:mod:`scopecheck.spec.blocks`)."""
    at = params["block"].span
    if "blocks" in params:
        errors.append(_err("`block` and `blocks` cannot both be given", at,
                           expected=f"block = {S} (a block-causal denoiser, {S} slots per block) or blocks = "
                                    "B (semi-autoregressive blocks over bidirectional attention)",
                           hint="drop `blocks`: with block = S the blocks are ceil(length / S)", rule="params"))
        return
    adapter = params.get("adapter")
    if adapter is not None and isinstance(adapter.value, m.Ident) and adapter.value.name == "shift":
        errors.append(_err("a block-causal denoiser needs the plain adapter", adapter.span, expected="adapter = plain",
                           hint="with `shift` a block's first slot is predicted from the previous block, which "
                                "cannot see it", rule="params"))
    if K is None or R is None:
        return
    err = layout_error(R, K, block=S)
    if err is not None:
        n = n_causal_blocks(R, S)
        ok = sorted((d for d in range(1, R) if K % n_causal_blocks(R, d) == 0), key=lambda d: (abs(d - S), d))
        errors.append(_err(f"{K} denoising stages cannot be shared by the {n} blocks of {S} slots of a "
                           f"{R}-slot response", at,
                           expected=f"steps = {R} (one slot per stage) or a multiple of {n}",
                           hint=f"or block = {ok[0]}: {n_causal_blocks(R, ok[0])} blocks, {K // n_causal_blocks(R, ok[0])} "
                                f"stage{'s' if K // n_causal_blocks(R, ok[0]) != 1 else ''} each" if ok else None, rule="params"))


def _check_chain(sc: m.Scope, doc: m.Contract, res: Resolved, errors: list[ContractError]) -> None:
    """What the diffusion engine refuses at run time that the contract already decides: a
    schedule that cannot be split into blocks, and states or stages beyond the chain."""
    p = sc.process
    if p is None or p.kind != "masked_diffusion":
        return
    K, R = chain_size(p, doc)
    params = {q.key: q for q in p.params}
    B = _count(params.get("blocks"))
    S = _count(params.get("block"))
    if S is not None:
        _check_block(S, K, R, params, errors)
    elif B is not None and K is not None:
        steps_is = f"steps = {K}" if "steps" in params else f"steps (by default the length, {K})"
        divisors = [d for d in range(1, K + 1) if K % d == 0]
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        if B > K:
            errors.append(_err(f"{B} blocks cannot share {K} denoising stage{'s' if K != 1 else ''}: each block "
                               "needs at least one stage", params["blocks"].span,
                               expected=f"blocks at most {steps_is}, dividing it: {shown}", rule="params"))
        elif K % B:
            up = (K // B + 1) * B
            errors.append(_err(f"{steps_is} cannot be split into {B} blocks of equal stages", params["blocks"].span,
                               expected=f"blocks dividing {K}: {shown}",
                               hint=f"or steps = {up}" if up <= 4096 else None, rule="params"))
        elif R is not None and B > R:
            errors.append(_err(f"{B} blocks cannot share {R} response slot{'s' if R != 1 else ''}",
                               params["blocks"].span, expected=f"blocks at most length = {R}", rule="params"))
    use = doc.use
    est = sc.score.estimator if sc.score is not None else None
    if est is not None and est.name in ESTIMATORS and est.name != "chain" and (
            (sc.score is not None and sc.score.kind == "stage_delta") or res.kind == "denoising_stage"):
        at = next((q.span for q in use.params if q.key == "estimator"), est.span) \
            if use is not None and est.span == use.span else est.span
        errors.append(_err(f"estimator `{est.name}` scores y without reading the chain, so perturbing a stage "
                           "cannot change it", at, expected="via chain (estimator = chain)", rule="score-output"))
    # selectors the engine resolves against the chain (the score's context, E, C, O, expectations)
    step_param = next((q for q in use.params if q.key == "step"), None) if use is not None else None
    named: list[m.Selector] = []
    stated = []
    if sc.score is not None:
        stated += [sc.score.target, *sc.score.given]
    _selectors((*((sc.explain,) if sc.explain else ()), *stated, *(sc.fixed or ()), *(sc.eligible or ()),
                *doc.expects), named)
    stages = res.kind == "denoising_stage"
    fixed = {id(s) for s in sc.fixed or ()}
    scored = {id(s) for s in (*stated, *((sc.explain,) if sc.explain else ()))}   # y and x: not features
    seen: set[tuple[Span, str]] = set()
    for sel in named:
        # a selector a standard contract filled carries the `use` span: point at the parameter instead
        span = step_param.span if step_param is not None and use is not None and sel.span == use.span else sel.span
        if sel.space == "stage" and (not stages or id(sel) in fixed):
            key = (span, "stage-feature")
            if key not in seen:
                seen.add(key)
                errors.append(_err(f"{fmt(sel)}: stages are features only of a denoising-stage contract, and never "
                                   "held fixed", span, expected="stage selectors in `eligible` (and expectations) "
                                   "with use denoising_stage", rule="process-features"))
            continue
        if stages and sel.space != "stage" and id(sel) not in fixed and id(sel) not in scored:
            key = (span, "not-stage")
            if key not in seen:
                seen.add(key)
                errors.append(_err(f"the features of a denoising-stage contract are stages, not {sel.space} tokens",
                                   span, expected="stage, stage[2], stage[1:3]", rule="process-features"))
            continue
        if sel.space not in ("z", "stage") or sel.op == "all":
            continue
        lo = 1 if sel.space == "stage" and sel.op != "range" else 0
        for ref in (sel.a, sel.b):
            if ref is None or isinstance(ref, m.Symbol):
                continue   # K is the last state; other symbols are reported as symbolic
            if isinstance(ref, bool) or not isinstance(ref, int) or sel.segment is not None:
                key = (span, "index")
                if key not in seen:
                    seen.add(key)
                    errors.append(_err(f"a {'diffusion state' if sel.space == 'z' else 'stage'} is named by its "
                                       "index", span, expected=f"{sel.space}[2], {sel.space}[<2]", rule="selector"))
                break
            if K is None:
                continue
            if sel is sc.explain and sel.op == "at" and ref == K:
                what = f"z[{K}] is the fully masked start of the chain; nothing is committed in it"
                expected = f"a state z[0..{K - 1}] (steps = {K})"
            elif not lo <= ref <= K:
                what = (f"state z[{ref}] does not exist: the chain has states z[{K}] (all masked) .. z[0] = y"
                        if sel.space == "z" else f"stage {ref} does not exist: the chain has stages {K}..1")
                expected = (f"a state z[0..{K - 1}] (steps = {K})" if sel is sc.explain and sel.op == "at"
                            else f"{lo}..{K} (steps = {K})")
            else:
                continue
            key = (span, "range")
            if key not in seen:
                seen.add(key)
                errors.append(_err(what, span, expected=expected, hint="or raise `steps` in the process",
                                   rule="selector"))
            break


_FIELDS: dict[type, tuple[str, ...]] = {}   # a dataclass type's fields, but its spans


def _check_strings(doc: m.Document) -> list[ContractError]:
    """A lone surrogate (``"\\ud800"``: half of a UTF-16 pair) is not a character: no tokenizer,
    file or terminal can take it. One error per string literal, at the nearest position known."""
    errors: list[ContractError] = []
    seen: set[str] = set()

    def walk(node: object, span: Span) -> None:
        if isinstance(node, str):
            if node.isascii() or node in seen:
                return
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                seen.add(node)
                code = ord(node[exc.start])
                errors.append(_err(f"the text {node!r} contains a lone surrogate \\u{code:04x} (character "
                                   f"{exc.start + 1}), which is not a character", span,
                                   expected="Unicode text; a \\uD8xx escape followed by its \\uDCxx pair",
                                   hint="write the character itself, or both halves of the pair "
                                        "(\\ud83d\\ude00 is one emoji)", rule="string"))
        elif isinstance(node, tuple):
            for n in node:
                walk(n, span)
        elif type(node) in _FIELDS or (dataclasses.is_dataclass(node) and not isinstance(node, (type, Span))):
            names = _FIELDS.get(type(node))
            if names is None:
                assert dataclasses.is_dataclass(node)  # not in _FIELDS: the condition's dataclass
                names = _FIELDS[type(node)] = tuple(f.name for f in dataclasses.fields(node)
                                                    if f.name not in ("span", "spans"))
            here = getattr(node, "span", None)
            if not isinstance(here, Span) or here == m.NOSPAN:
                here = span
            spans = getattr(node, "spans", None)
            for name in names:
                value = getattr(node, name)
                if value is None or isinstance(value, (int, float)):
                    continue
                walk(value, spans.get(name, here) if isinstance(spans, dict) else here)

    walk(doc, doc.span)
    return errors


def _check_score(sc: m.Scope, anchors: Anchors, errors: list[ContractError], where: Span) -> None:
    s, o, p = sc.score, sc.explain, sc.process
    if s is None or o is None:
        return
    diffusion = p is not None and p.kind == "masked_diffusion"
    t = s.target
    same = (t.space, t.op, t.a, t.b, t.segment) == (o.space, o.op, o.a, o.b, o.segment)
    if not same:
        if not t.is_single and o.is_single:
            errors.append(_err(f"a span score ({fmt(t)}) cannot score the single-token output {fmt(o)}", s.span,
                               expected=f"a token score: log p({fmt(o)} | ...), or explain the span {fmt(t)}",
                               rule="score-output"))
        elif t.is_single and not o.is_single:
            errors.append(_err(f"a single-token score ({fmt(t)}) cannot score the span output {fmt(o)}", s.span,
                               expected=f"a span score: log p({fmt(o)} | ...)", rule="score-output"))
        else:
            errors.append(_err(f"the score attributes {fmt(t)} but the output explained is {fmt(o)}", s.span,
                               expected=f"S must score O: log p({fmt(o)} | ...)", rule="score-output"))
        return
    if s.kind == "contrast" and not t.is_single:
        errors.append(_err("a contrastive score compares one token with an alternative", s.span,
                           expected="a single-token target", rule="score-output"))
    if s.kind == "stage_delta" and not (diffusion and t.space == "y" and t.op == "all"):
        errors.append(_err("a stage-perturbation score is defined on the final output y of a diffusion chain",
                           s.span, expected="log p(y | x) - log p(y | x; pert(stage)) via chain", rule="score-output"))
    if diffusion and t.space == "y":
        if s.estimator is None:
            errors.append(_err("log p(y | x) is intractable for masked diffusion: the score needs an estimator",
                               s.span, expected="... via chain | via pll | via elbo(samples = 8)",
                               rule="score-output"))
    if s.estimator is not None:
        e = s.estimator
        if not diffusion or t.space != "y":
            errors.append(_err("an estimator applies only to a diffusion output score log p(y | x)", e.span,
                               expected="no `via ...` here", rule="score-output"))
        elif e.name not in ESTIMATORS:
            errors.append(unknown_name("estimator", e.name, list(ESTIMATORS), e.span))
        else:
            allowed = ESTIMATORS[e.name]
            keys = {q.key: q for q in e.params}
            for k, q in keys.items():
                if k not in allowed:
                    errors.append(_err(f"estimator `{e.name}` has no parameter `{k}`", q.span,
                                       expected=", ".join(allowed) or "no parameters", rule="params"))
            if e.name == "elbo":
                samples = keys.get("samples")
                if samples is None or isinstance(samples.value, bool) or not isinstance(samples.value, int) \
                        or samples.value < 1:
                    errors.append(_err("the ELBO estimator needs a Monte Carlo sample count", (samples or e).span,
                                       expected="via elbo(samples = 8)", rule="params"))
                else:
                    errors += check_params(ESTIMATOR_PARAMS, e.params, "estimator `elbo`")
    # conditioning matches the process
    if s.kind == "logit" or p is None:
        return
    given = {(g.space, g.op, g.a, g.b, g.segment) for g in s.given}
    expected: set[tuple[str, str, m.Ref | None, m.Ref | None, str | None]] = set()
    text = ""
    if p.kind == "autoregressive" and t.space == "y":
        start = t.a if t.op in ("at", "range") else None
        expected = {("x", "all", None, None, None)}
        text = "x"
        first = start in (None, 1)
        if isinstance(start, m.TextRef) and anchors.texts.get("y") is not None:
            ytext = anchors.texts["y"] or ""
            c = anchors.char("y", start, t.span)
            first = c is not None and c[0] == len(ytext) - len(ytext.lstrip())
        if start is not None and not first:
            expected.add(("y", "lt", start, None, None))
            text += ", " + fmt(m.Selector("y", "lt", start))
        elif start is not None and ("y", "lt", start, None, None) in given:
            expected.add(("y", "lt", start, None, None))
    elif p.kind == "masked_diffusion" and t.space == "z":
        expected = {("x", "all", None, None, None), ("z", "gt", t.a, None, None)}
        text = "x, " + fmt(m.Selector("z", "gt", t.a))
    elif p.kind in ("masked_diffusion", "classifier"):
        expected = {("x", "all", None, None, None)}
        text = "x"
    if expected and given != expected:
        errors.append(_err(f"the score conditions on the wrong context for the `{p.kind}` process", s.span,
                           expected=f"log p({fmt(t)} | {text})", rule="score-output"))


def _check_features(sc: m.Scope, kind: str | None, anchors: Anchors, errors: list[ContractError],
                    where: Span | None = None) -> None:
    E, C, O, p = sc.eligible, sc.fixed, sc.explain, sc.process
    if E is None or C is None:
        return
    if len(E) == 0:
        errors.append(_err("no feature is eligible for attribution", where or Span(), expected="at least one selector",
                           rule="missing"))
    ivs = {id(s): anchors.interval(s) for s in (*E, *C)}
    # E and C disjoint: each selector's first overlap, found by a sweep (never pair by pair)
    for e, c, at in _overlaps(E, C, ivs, anchors):
        errors.append(_err(f"{fmt(e)} is both eligible and held fixed (overlaps {fmt(c)})", at.span,
                           expected="E and C disjoint: a feature is either attributed or held fixed",
                           hint="remove the overlap from `fixed` or from `eligible`", rule="disjoint"))
    if O is None or p is None:
        return
    o_iv = anchors.interval(O)
    # causality
    if p.kind == "autoregressive" and O.space == "y" and o_iv is not None:
        start = Interval(o_iv.domain, o_iv.lo, INF) if o_iv.domain is not None else Interval(None, -INF, INF)
        for e in E:
            if e.space != "y":
                continue
            iv = ivs[id(e)]
            if iv is None:
                continue
            if iv.domain is None or overlap(iv, start, "y", anchors):
                errors.append(_err(f"{fmt(O)} cannot be explained by {fmt(e)}: an autoregressive output is "
                                   "caused only by the prompt and earlier tokens", e.span,
                                   expected=f"features before the output, e.g. {fmt(m.Selector('y', 'lt', O.a))}"
                                   if O.a is not None else "prompt tokens x",
                                   rule="causality"))
    if p.kind == "masked_diffusion" and O.space == "z" and o_iv is not None and O.op == "at":
        later_or_same = Interval(o_iv.domain, -INF, o_iv.hi)
        for e in E:
            if e.space == "y":
                continue  # reported as a process-feature error
            if e.space == "z":
                iv = ivs[id(e)]
                if iv is not None and (iv.domain is None or overlap(iv, later_or_same, "z", anchors)):
                    errors.append(_err(f"the state {fmt(O)} can be explained only by the prompt and earlier states "
                                       f"{fmt(m.Selector('z', 'gt', O.a))}, not {fmt(e)}", e.span,
                                       expected=f"x, {fmt(m.Selector('z', 'gt', O.a))}", rule="causality"))
    if p.kind == "masked_diffusion" and O.space == "y":
        for e in E:
            if e.space == "z":
                errors.append(_err(f"the final output y is explained by the prompt or by stages; states like "
                                   f"{fmt(e)} are features of a state-level contract", e.span,
                                   expected="x or stage", rule="causality"))
    # coverage: every autoregressive input token is in E or C
    if p.kind == "autoregressive":
        _coverage(E, C, O, ivs, o_iv, anchors, errors)


def _coverage(E: tuple[m.Selector, ...], C: tuple[m.Selector, ...], O: m.Selector, ivs: dict[int, Interval | None],
              o_iv: Interval | None, anchors: Anchors, errors: list[ContractError]) -> None:
    sels = [*E, *C]
    for space in ("x", "y"):
        mine = [s for s in sels if s.space == space]
        if space == "x":
            need = Interval(None, -INF, INF)
        else:
            if o_iv is None or O.space != "y" or o_iv.domain is None:
                continue
            need = Interval(o_iv.domain, -INF, o_iv.lo)
        if any(s.op == "all" and s.segment is None for s in mine):
            continue
        text = anchors.texts.get(space)
        ivals = [ivs[id(s)] for s in mine]
        if text is None or any(iv is None or iv.domain not in ("char",) for iv in ivals) or \
                need.domain not in (None, "char"):
            continue  # only the engine, with tokens, can decide
        # interval ends may be infinite either way (an explained range such as y[<"noir"] has no start)
        lo = 0 if need.lo == -INF else len(text) if need.lo == INF else int(need.lo)
        hi = len(text) if need.hi == INF else 0 if need.hi == -INF else int(need.hi)
        depth = [0] * (len(text) + 1)   # a difference array: O(len(text) + selectors), not their product
        for iv in ivals:
            assert iv is not None  # checked above
            a, b = int(max(iv.lo, 0)), int(min(iv.hi, len(text)))
            if a < b:
                depth[a] += 1
                depth[b] -= 1
        covered, run = [False] * len(text), 0
        for i in range(len(text)):
            run += depth[i]
            covered[i] = run > 0
        missing = "".join(ch if not covered[i] and not ch.isspace() else " " for i, ch in enumerate(text))[lo:hi]
        words = missing.split()
        if words:
            where = "prompt" if space == "x" else "generated prefix"
            errors.append(_err(
                f"{where} tokens {', '.join(repr(w) for w in words)} are neither eligible nor held fixed", O.span
                if space == "y" else (mine[0].span if mine else O.span),
                expected=f"every {where} token in `eligible` or `fixed` (special tokens are held fixed implicitly)",
                hint=f"add {'x' if space == 'x' else fmt(m.Selector('y', 'lt', O.a))} to `fixed`", rule="coverage"))


def _check_method(method: m.Method | None, kind: str | None, errors: list[ContractError]) -> None:
    if method is None:
        return
    name = METHOD_ALIASES.get(method.name, method.name)
    info = METHODS.get(name)
    if info is None:
        errors.append(unknown_name("method", method.name, list(METHODS), method.span))
        return
    known = [*info.params, *COMMON_METHOD_PARAMS]
    for prm in method.params:
        if prm.key not in known:
            errors.append(_err(f"method `{name}` has no parameter `{prm.key}`", prm.span,
                               expected=", ".join(known), hint=did_you_mean(prm.key, known), rule="params"))
    errors += check_params({**COMMON_METHOD_PARAMS, **info.params}, method.params, f"method `{name}`")
    if kind is not None and kind not in info.supports:
        why = ""
        if info.differentiable and kind == "denoising_stage":
            why = ": denoising stages are not differentiable features"
        alts = supported_methods(kind)
        errors.append(_err(f"`{name}` does not support {kind} contracts{why}", method.span,
                           expected=f"a method for {kind}: {', '.join(alts)}",
                           hint=f"`{name}` supports {', '.join(info.supports)}", rule="method-contract"))


def _check_output(doc: m.Contract | m.Claim, errors: list[ContractError]) -> None:
    o = doc.output
    if o is None or o.rule is None:
        return
    if o.rule not in DECODING:
        errors.append(unknown_name("decoding rule", o.rule, list(DECODING), o.span))
        return
    for prm in o.params:
        if prm.key not in DECODING[o.rule]:
            errors.append(_err(f"`generate({o.rule}, ...)` has no parameter `{prm.key}`", prm.span,
                               expected=", ".join(DECODING[o.rule]), hint=did_you_mean(prm.key, list(DECODING[o.rule])),
                               rule="params"))
    errors += check_params(DECODING_PARAMS, o.params, f"generate({o.rule})")
    if o.rule == "sample" and not any(p.key == "seed" for p in o.params):
        errors.append(_err("sampling without a seed cannot be frozen reproducibly", o.span,
                           expected="generate(sample, seed = 0, ...)", rule="params"))


def _is_list_or_text(o: m.Operand | None) -> bool:
    return isinstance(o, (m.Text, m.Selector)) or (isinstance(o, m.Call) and o.name == "top")


def _check_aggregate(agg: m.Aggregate, ex: m.Expectation, kind: str | None, doc: m.Contract | m.Claim,
                     errors: list[ContractError]) -> None:
    if not isinstance(doc, m.Contract) or doc.dataset is None:
        errors.append(_err(f"`{agg.func}(...)` aggregates over examples, and this contract has one prompt",
                           agg.span, expected="a `dataset` statement", rule="expect"))
    want = 2 if agg.func == "paired" else 1
    if len(agg.args) != want:
        errors.append(_err(f"`{agg.func}` takes {want} argument{'s' if want > 1 else ''}, got {len(agg.args)}",
                           agg.span, expected="paired(a, b)" if want == 2 else f"{agg.func}(deletion.aopc)",
                           rule="expect"))
    fields = vocab.PAIRED_FIELDS if agg.func == "paired" else vocab.AGG_FIELDS
    if len(agg.fields) > 1 or (agg.fields and agg.fields[0] not in fields):
        errors.append(_err(f"`{agg.func}` has no field `{'.'.join(agg.fields)}`", agg.span,
                           expected=", ".join(fields), rule="expect"))
    allowed = {"quantile": ("q",), "paired": ("test", "alternative")}.get(agg.func, ())
    for p in agg.params:
        v = m.py_value(p.value)
        if p.key not in allowed:
            errors.append(_err(f"`{agg.func}` has no parameter `{p.key}`", p.span,
                               expected=", ".join(allowed) or "no parameters", rule="params"))
        elif p.key == "q" and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1):
            errors.append(_err(f"`q = {v}` is out of range", p.span, expected="q = a number in [0, 1]", rule="params"))
        elif p.key == "test" and v not in ("wilcoxon", "bootstrap"):
            errors.append(_err(f"unknown test `{v}`", p.span, expected="test = wilcoxon | bootstrap", rule="params"))
        elif p.key == "alternative" and v not in ("two_sided", "greater", "less"):
            errors.append(_err(f"unknown alternative `{v}`", p.span, expected="two_sided | greater | less",
                               rule="params"))
    if "q" in allowed and not any(p.key == "q" for p in agg.params):
        errors.append(_err("quantile needs its level", agg.span, expected="quantile(soft_nc.value, q = 0.1)",
                           rule="params"))
    for a in agg.args:
        if isinstance(a, m.Comparison):
            for o in (a.left, a.right):
                if isinstance(o, m.Call) and not (o.name == "truth" and not o.called):
                    _check_call(o, kind, doc, errors)
            if agg.func != "rate":
                errors.append(_err(f"a comparison is a 0/1 outcome: aggregate it with rate(...), not {agg.func}",
                                   a.span, expected="rate(top(1) in truth)", rule="expect"))
        elif isinstance(a, m.Call):
            _check_call(a, kind, doc, errors)


def _check_expectations(doc: m.Contract | m.Claim, kind: str | None, errors: list[ContractError]) -> None:
    for ex in doc.expects:
        for side in (ex.left, ex.right):
            if isinstance(side, m.Aggregate):
                _check_aggregate(side, ex, kind, doc, errors)
        if any(isinstance(side, m.Aggregate) for side in (ex.left, ex.right)):
            if ex.op is None or any(isinstance(side, (m.Text, m.Selector, m.Call)) for side in (ex.left, ex.right)):
                errors.append(_err("an aggregate compares with a number or another aggregate", ex.span,
                                   expected="expect mean(deletion.aopc) > mean(random.aopc)", rule="expect"))
            continue
        sides = [ex.left, ex.right]
        rnd = [o for o in sides if isinstance(o, m.Call) and o.name == "random"]
        other = [o for o in sides if isinstance(o, m.Call) and o.name in CHECKS]
        if rnd and other and not CHECKS[other[0].name].ranking:
            errors.append(_err(f"`{other[0].name}` does not use the map's ranking, so `random.{rnd[0].fields[0] if rnd[0].fields else ''}` "
                               "(the same check on random rankings) is undefined for it", rnd[0].span,
                               expected="random.<field> beside a ranking check: " +
                                        ", ".join(n for n, c in CHECKS.items() if c.ranking), rule="expect"))
        elif rnd and not other:
            errors.append(_err("`random` compares with a ranking check on the other side", rnd[0].span,
                               expected="deletion(...).aopc > random.aopc", rule="expect"))
        elif rnd and other and rnd[0].fields and rnd[0].fields[0] not in CHECKS[other[0].name].fields:
            fields = list(CHECKS[other[0].name].fields)
            errors.append(_err(f"`{other[0].name}` has no field `{rnd[0].fields[0]}` for its random baseline",
                               rnd[0].span, expected=", ".join(f"random.{f}" for f in fields),
                               hint=did_you_mean(rnd[0].fields[0], fields), rule="expect"))
        if ex.op in ("<", "<=", ">", ">=") and (_is_list_or_text(ex.left) or _is_list_or_text(ex.right)):
            errors.append(_err(f"`{ex.op}` orders numbers; token lists and texts compare with == != in", ex.span,
                               expected='expect top(1) == "black", or a number on both sides', rule="expect"))
        for side in (ex.left, ex.right):
            if isinstance(side, m.Call):
                _check_call(side, kind, doc, errors)
        if ex.op is not None and any(isinstance(o, m.Call) and o.name == "snapshot" for o in sides):
            errors.append(_err("snapshot(...) is judged by its own criteria, not compared", ex.span,
                               expected='expect snapshot("snapshots/noir.json", top_k = 3, spearman = 0.99, '
                                        'max_abs = 1e-4)', rule="snapshot"))
        if ex.op is None and isinstance(ex.left, m.Call):
            info = CHECKS.get(ex.left.name)
            if info is None and ex.left.name in MAP_FUNCTIONS:
                errors.append(_err(f"`{ex.left.name}(...)` is a value, not a check: compare it", ex.span,
                                   expected=f"expect {ex.left.name}(...) >= 0.5", rule="expect"))
        elif ex.op is None:
            errors.append(_err("an expectation on a literal or selector needs a comparison", ex.span,
                               expected="expect <value> <op> <value>", rule="expect"))


def _check_call(call: m.Call, kind: str | None, doc: m.Contract | m.Claim, errors: list[ContractError]) -> None:
    name = call.name
    if isinstance(doc, m.Claim) and name in ("verdict", "unstated", "fallacy"):
        return
    if name == "random":
        if call.called or len(call.fields) != 1:
            errors.append(_err("`random` names a field of the same check run on random rankings", call.span,
                               expected="random.aopc", rule="expect"))
        return
    if name in MAP_FUNCTIONS:
        if call.fields:
            errors.append(_err(f"`{name}(...)` has no fields", call.span, rule="expect"))
        if name == "top" and call.args and not (   # on either side, and in a rate(...) comparison
                isinstance(call.args[0], int) and not isinstance(call.args[0], bool) and call.args[0] >= 1):
            errors.append(_err("top(k) takes a count k >= 1", call.span, expected='top(1) == "black"',
                               rule="expect"))
        return
    info = CHECKS.get(name)
    if info is None:
        errors.append(unknown_name("check or map function", name, [*CHECKS, *MAP_FUNCTIONS, "random"], call.span))
        return
    if len(call.fields) > 1 or (call.fields and call.fields[0] not in info.fields):
        errors.append(_err(f"check `{name}` has no field `{'.'.join(call.fields)}`", call.span,
                           expected=", ".join(info.fields), hint=did_you_mean(call.fields[0], list(info.fields)),
                           rule="expect"))
    if kind is not None and kind in PROTOCOLS and kind not in info.supports:
        errors.append(_err(f"check `{name}` does not support {kind} contracts", call.span,
                           expected=", ".join(n for n, c in CHECKS.items() if kind in c.supports),
                           hint=f"`{name}` supports: {', '.join(info.supports)}", rule="protocol"))
    declared = info.declared()
    errors += _check_positional(call, info, doc)
    errors += check_params(declared, call.params, f"check `{name}`")
    for prm in call.params:
        v = prm.value.name if isinstance(prm.value, m.Ident) else prm.value.value if isinstance(prm.value, m.Text) \
            else None
        if name == "agreement" and prm.key == "method" and METHOD_ALIASES.get(str(v), v) not in METHODS:
            errors.append(unknown_name("method", str(v), list(METHODS), prm.span))
        if name == "agreement" and prm.key == "contract" and v not in STANDARD:
            errors.append(unknown_name("standard contract", str(v), list(STANDARD), prm.span))
    for prm in call.params:
        if prm.key not in declared:
            errors.append(_err(f"check `{name}` has no parameter `{prm.key}`", prm.span,
                               expected=", ".join(declared), hint=did_you_mean(prm.key, list(declared)),
                               rule="params"))
            continue
        value = prm.value
        if kind is None or kind not in PROTOCOLS:
            continue
        proto = PROTOCOLS[kind]
        if prm.key == "protocol":
            choice = value.name if isinstance(value, m.Ident) else None
            if choice not in PROTOCOL_OWNER:
                errors.append(_err("unknown protocol", prm.span, expected=" | ".join(PROTOCOL_OWNER), rule="params"))
            elif choice != proto.then:
                owner = PROTOCOL_OWNER[choice]
                errors.append(_err(
                    f"`{choice}` after perturbation tests a {owner} contract, not this {kind} contract", prm.span,
                    expected=f"protocol = {proto.then} ({proto.measure})",
                    hint=f"to test {owner}, state that contract", rule="protocol"))
        if prm.key == "perturb":
            choice = value.name if isinstance(value, m.Ident) else None
            if choice not in PERTURB_OWNER:
                errors.append(_err("unknown perturbation group", prm.span,
                                   expected=" | ".join(PERTURB_OWNER), rule="params"))
            elif choice not in proto.perturb:
                owner = PERTURB_OWNER[choice]
                errors.append(_err(
                    f"perturbing {choice} tests a {owner} contract; under {kind} only "
                    f"{' and '.join(proto.perturb)} may be perturbed", prm.span,
                    expected=f"perturb = {proto.perturb[0]}", rule="protocol"))


def _field_segment_errors(doc: m.Contract | m.Claim) -> list[ContractError]:
    """``name: field("...")`` outside a dataset contract: there is no row to fill it from."""
    if doc.prompt is None:
        return []
    what = "contract" if isinstance(doc, m.Contract) else "claim"
    return [_err(f"segment `{s.name}` is filled from a dataset field, and this {what} has no dataset", s.span,
                 expected=f'{s.name}: "<text>", or a `dataset` statement', rule="dataset")
            for s in doc.prompt.segments if s.field is not None]


def _dataset_prompt_errors(doc: m.Contract, head: Span) -> list[ContractError]:
    """A dataset contract's prompt is the dataset's: either a field (``prompt = "..."``, default
    ``prompt``) or ``prompt { name: field("...") ... }``, segments filled from the row's fields
    (text segments may stand between them)."""
    if doc.prompt is None or doc.dataset is None:
        return []
    where = doc.spans.get("prompt", doc.prompt.span)
    if not any(s.field is not None for s in doc.prompt.segments):
        return [_err("a dataset contract takes its prompts from the dataset", where,
                     expected='either `prompt` or `dataset`, or segments filled from fields: '
                              'prompt { question: field("q") }', rule="dataset")]
    named = next((p for p in doc.dataset.params if p.key == "prompt"), None)
    if named is not None:
        return [_err("the prompt is both a field (`prompt = ...`) and segments filled from fields", named.span,
                     expected="one of them", hint="drop `prompt = ...`: the segments name their fields",
                     rule="dataset")]
    return []


def _check_positional(call: m.Call, info: CheckEntry, doc: m.Contract | m.Claim) -> list[ContractError]:
    """A check's positional arguments (``snapshot("snapshots/noir.json")``): at most those its entry
    names (``CheckEntry.positional``), none also given by name; a snapshot names its file once."""
    out: list[ContractError] = []
    pos = info.positional
    if len(call.args) > len(pos):
        taken = f"takes at most {len(pos)} ({', '.join(pos)})" if pos else "takes no positional arguments"
        out.append(_err(f"check `{call.name}` {taken}, got {len(call.args)}", call.span,
                        expected=f"{call.name}(name = value, ...)" if not pos else f'{call.name}("...", name = value)',
                        rule="params"))
    named = {p.key for p in call.params}
    for key in pos[:len(call.args)]:
        if key in named:
            out.append(_err(f"check `{call.name}`: `{key}` given twice (by position and by name)", call.span,
                            expected=f"one `{key}`", rule="params"))
    if call.name == "snapshot":
        given = call.args[0] if call.args else next((p.value for p in call.params if p.key == "path"), None)
        if not isinstance(given, m.Text) or not given.value:
            out.append(_err("snapshot(...) names its snapshot file, a text", call.span,
                            expected='snapshot("snapshots/noir.json", top_k = 3, spearman = 0.99, max_abs = 1e-4)',
                            rule="snapshot"))
        if call.fields:
            out.append(_err("snapshot(...) is judged by its own criteria; state them as its parameters", call.span,
                            expected='expect snapshot("snapshots/noir.json", spearman = 0.9)', rule="snapshot"))
        if isinstance(doc, m.Contract) and doc.dataset is not None:
            out.append(_err("a snapshot pins one map, and a dataset contract has one per example", call.span,
                            expected="snapshot(...) in a single-prompt contract", rule="snapshot"))
    return out


def validate_contract(doc: m.Contract) -> tuple[list[ContractError], Resolved | None]:
    errors: list[ContractError] = []
    try:
        res = resolve(doc)
    except ContractError as exc:
        return [exc], None
    sc = res.scope
    head = doc.spans.get("name", doc.span)
    missing = sc.missing()
    if missing:
        hint = "state them, or fill them with a standard contract: use " + " | ".join(STANDARD)
        errors.append(_err(f"SCOPE element{'s' if len(missing) > 1 else ''} not stated: {', '.join(missing)}",
                           head, expected="score, fixed, explain, process and eligible all stated", hint=hint,
                           rule="missing"))
    if doc.use is not None:
        errors += family_errors(doc.use, doc)
    if doc.dataset is not None:
        errors += dataset_errors(doc.dataset)
        errors += _dataset_prompt_errors(doc, head)
    else:
        errors += _field_segment_errors(doc)
    for part in ("model", "prompt", "output", "method"):
        if part in ("prompt", "output") and doc.dataset is not None:
            continue
        if getattr(doc, part) is None:
            errors.append(_err(f"a runnable contract needs `{part}`", head, expected=f"a `{part}` statement",
                               rule="missing"))
    if doc.model is not None and doc.model.kind == "reference":
        if doc.model.name not in REFERENCE_MODELS:
            errors.append(unknown_name("reference model", doc.model.name, list(REFERENCE_MODELS), doc.model.span))
    if doc.seed is not None:
        err = check_value(SEED, "seed", doc.seed, doc.spans.get("seed", head), "seed")
        if err is not None:
            errors.append(err)
    anchors = Anchors(doc, errors)
    _check_symbols(doc, sc, errors)
    _check_output(doc, errors)
    _check_process(sc, doc, errors)
    _check_chain(sc, doc, res, errors)
    _check_score(sc, anchors, errors, head)
    _check_features(sc, res.kind, anchors, errors, doc.spans.get("eligible", head))
    _check_method(doc.method, res.kind, errors)
    _check_expectations(doc, res.kind, errors)
    return errors, res


def validate_claim(doc: m.Claim) -> list[ContractError]:
    errors: list[ContractError] = _field_segment_errors(doc)
    if doc.question is not None and doc.question not in m.QUESTIONS:
        errors.append(unknown_name("question", doc.question, list(m.QUESTIONS), doc.spans.get("question")))
    c = doc.computed
    if c.use is not None and c.use.name not in STANDARD:
        errors.append(unknown_name("standard contract", c.use.name, list(STANDARD), c.use.span))
    if c.method is not None:
        name = METHOD_ALIASES.get(c.method.name, c.method.name)
        if name not in METHODS:
            errors.append(unknown_name("method", c.method.name, list(METHODS), c.method.span))
    if c.scope.process is not None and c.scope.process.kind not in PROCESSES:
        errors.append(unknown_name("process", c.scope.process.kind, list(PROCESSES), c.scope.process.span))

    if c.toolkit is not None and c.toolkit not in TOOLKITS:
        errors.append(unknown_name("toolkit", c.toolkit, list(TOOLKITS), c.spans.get("toolkit")))
    src = doc.source
    if isinstance(src, m.Source) and src.url is not None and not src.url.startswith(("https://", "http://")):
        errors.append(_err(f"the source url {src.url!r} is not a web address", src.span,
                           expected='url "https://..."', hint="a DOI is written https://doi.org/<doi>",
                           rule="source"))
    _check_output(doc, errors)
    _check_expectations(doc, None, errors)
    return errors


def validate(doc: m.Document) -> list[ContractError]:
    """Every rule violation in ``doc``, each positioned; empty when valid."""
    errors = validate_contract(doc)[0] if isinstance(doc, m.Contract) else validate_claim(doc)
    errors += _check_strings(doc)
    return cap_errors(sorted(errors, key=lambda e: (e.span.line, e.span.column)))
