"""Static audit of a published attribution claim: no model is loaded.

A claim (``claim "..." { question ...; computed { ... }; reported { ... } }``) records
what a paper says it computed, which question its text answers, and the numbers it
reports. :func:`audit_static` reads it as follows.

1. **Filling the SCOPE** (seed 000, section 3). Each element of the computed SCOPE is
   taken, in this order, from

   * the claim's own statements (origin ``stated``);
   * ``computed { use <standard contract> }`` (origin ``use``);
   * the usual contract of the toolkit the claim names (``toolkit inseq``; origin
     ``toolkit``, see :mod:`scopecheck.spec.toolkits`). The audit says so explicitly:
     "we used Inseq's IG" fills the ``local_next_token`` contract, and the report lists
     the elements that came from the toolkit rather than from the paper. A toolkit with a
     per-token and a sequence score fills the one the claim uses (:func:`claim_is_per_token`):
     a bare ``toolkit captum`` claim is ``prompt_conditioned`` when it explains one token
     ``y[t]`` (or asks a next-token question) and ``span_prompt`` when it explains a span or
     the sequence (or asks a prompt-level, span or output question);
   * for the process only, what the notation implies (origin ``implied``): generated-prefix
     features ``y[<t]`` exist only in an autoregressive process, states ``z`` and stages only
     in a diffusion one, and a ``reference:`` model is autoregressive. An implied process is
     used to classify the computation, but it is still reported as not stated.

   Whatever remains is *unstated*.

2. **Question vs computation.** A claim's ``question`` is answered by one standard
   contract (:data:`QUESTION_CONTRACT`)::

       prompt_level -> span_prompt        (which prompt tokens explain the generation?)
       next_token   -> local_next_token   (which context tokens predicted y[t]?)
       span         -> span_prompt        (which prompt tokens explain a generated span?)
       state        -> state_level        (what explains the diffusion state z[t]?)
       stage        -> denoising_stage    (which denoising stage produced y?)
       output       -> prompt_to_output   (which prompt tokens explain the chain's output?)

   The answering contract follows the claim's process: under an autoregressive process
   ``output`` is answered by its autoregressive analog ``span_prompt``, and under a
   diffusion process ``prompt_level``/``span`` by ``prompt_to_output`` (seed 000, 4.2:
   "the diffusion analog of span-level prompt attribution"). A computation answers a
   question when its contract kind is in :data:`QUESTION_ACCEPTS`; besides the canonical
   contract, a ``prompt_level`` question is also answered by ``prompt_conditioned`` (prompt
   tokens for one token, the prefix held fixed). When the claim explains one token
   ``y[t]``, the answering span is that token, ``y[t:t]``, with the prefix before it held
   fixed (seed 000, 4.1: "the hallucinated span itself").

   The **self-attribution fallacy** is named when the generated prefix (``y`` features) is
   eligible while the question is prompt-level (``prompt_level``, ``span`` or ``output``):
   prefix tokens are credited for predicting ``y[t]``, and that credit is read as if it said
   how the prompt shaped the output. The contract that would answer the question is written
   out in full, in canonical contract text. When the claim's own method computes the
   answering contract, it keeps the claim's method parameters (``integrated_gradients(steps
   = 32)``): only the contract changes.

3. **Reported numbers** are checked against their mathematical range
   (:data:`scopecheck.checks.catalog.METRIC_RANGES`, then the fields of
   :data:`~scopecheck.checks.catalog.CHECKS`): DSA = 4.8 is impossible, since DSA (evidence
   mass minus distractor mass, mass normalised to one) lies in [-1, 1].

4. **Method and contract**: the method must support the computed contract kind
   (:data:`scopecheck.spec.registry.METHODS`); and the computed SCOPE must be a coherent
   contract (the validator's disjointness, causality, score/output and process rules;
   symbolic indices such as ``y[t]`` are fine in claims).

Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from scopecheck.checks.catalog import CHECKS, METRIC_RANGES
from scopecheck.dsl.format import fmt_features, fmt_selector, fmt_value, format_document, scope_lines
from scopecheck.reference import REFERENCE_MODELS
from scopecheck.spec.registry import METHOD_ALIASES, METHODS, supported_methods
from scopecheck.errors import ContractError
from scopecheck.spec import model as m
from scopecheck.spec.standard import STANDARD, merge, standard_scope
from scopecheck.spec.toolkits import TOOLKITS
from scopecheck.spec.validate import contract_kind

ELEMENTS = m.Scope.ELEMENTS

#: The standard contract that answers each question a claim may ask (seed 000, Table 1).
QUESTION_CONTRACT: dict[str, str] = {
    "prompt_level": "span_prompt",
    "next_token": "local_next_token",
    "span": "span_prompt",
    "state": "state_level",
    "stage": "denoising_stage",
    "output": "prompt_to_output",
}

#: Contract kinds whose computation answers each question.
QUESTION_ACCEPTS: dict[str, frozenset[str]] = {
    "prompt_level": frozenset({"span_prompt", "prompt_conditioned", "prompt_to_output"}),
    "next_token": frozenset({"local_next_token"}),
    "span": frozenset({"span_prompt"}),
    "state": frozenset({"state_level"}),
    "stage": frozenset({"denoising_stage"}),
    "output": frozenset({"prompt_to_output", "span_prompt"}),
}

#: The question in words.
QUESTION_TEXT: dict[str, str] = {
    "prompt_level": "which prompt features explain the generated content?",
    "next_token": "which context tokens, prompt or generated prefix, helped predict the next token y[t]?",
    "span": "which prompt features explain a generated span, rescored as generated?",
    "state": "which prompt features or earlier states explain the diffusion state z[t]?",
    "stage": "which denoising stage was responsible for the output?",
    "output": "which prompt features explain the final output?",
}

#: Questions about the prompt: attributing them to the generated prefix is the fallacy.
PROMPT_QUESTIONS = ("prompt_level", "span", "output")

#: What a method's published description leaves implicit, said once per method.
METHOD_NOTES: dict[str, str] = {
    "probabilistic_as": (
        "AS (seed 003) implements span-level prompt attribution (span_prompt): S = log p(y | x), the response "
        "teacher-forced as generated and never regenerated, E = prompt tokens, each token marginalised over the "
        "vocabulary (Bayes' rule) rather than replaced by a baseline. Seed 003 calls AS parameter-free, yet the "
        "map still carries choices: the decoding rule that froze the response (the paper reports greedy and "
        "top-p decoding, top-p responses chosen as the most frequent of 500 samples), and any truncation of the "
        "marginalisation sums (full vocabulary as published; top-p truncation proposed as future work; here "
        "`top_p` and `prune`, default 0.999999 and 5e-5; `prune = 0` with `top_p = 1` reproduces the published "
        "full-vocabulary sums)."),
    "heta": (
        "HETA (seed 004) attributes one target token over the preceding context; its map depends on beta, "
        "gamma, the curvature estimator (Hutchinson probes, or the low-rank, windowed and layer-sampled "
        "variants of its Algorithm 1) and the masking scheme of the KL term."),
    "integrated_gradients": "Integrated Gradients depends on its baseline and path (steps, rule).",
    "context_cite": "ContextCite's surrogate depends on the number of ablations and the ablation operator.",
    "reagent": "ReAGent depends on the replacement ratio, the number of steps and the replacement model.",
}


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ImpossibleNumber:
    """A reported number outside its mathematical range."""

    name: str
    value: float
    low: float
    high: float
    why: str

    @property
    def message(self) -> str:
        return f"{self.name} = {_num(self.value)} is impossible: {self.why}"


@dataclass(frozen=True)
class StaticAudit:
    """What a claim states, what it computes and whether that answers its question."""

    name: str
    question: str | None
    scope: m.Scope                              # the computed SCOPE after filling
    origin: tuple[tuple[str, str], ...]         # element -> stated | use | toolkit | implied
    unstated: tuple[str, ...]                   # elements nothing filled, in SCOPE order
    implied: tuple[tuple[str, str], ...]        # element -> why (the process, from the notation)
    toolkit: str | None
    toolkit_contract: str | None                # the contract the toolkit filled from
    kind: str | None                            # contract kind the computation instantiates
    answering_kind: str | None                  # contract kind that answers the question
    answers: bool | None                        # does the computation answer the question?
    fallacy: bool                               # self-attribution fallacy
    mismatch: str | None                        # why the computation does not answer the question
    answering_scope: m.Scope | None
    answering_text: str | None                  # the answering contract, canonical contract text
    impossible: tuple[ImpossibleNumber, ...]
    unknown_metrics: tuple[str, ...]            # reported metrics with no known range
    method: str | None                          # canonical method name
    method_message: str | None                  # set when the method does not support the contract
    inconsistencies: tuple[str, ...]            # the computed SCOPE breaks a contract rule
    notes: tuple[str, ...]

    @property
    def origins(self) -> dict[str, str]:
        return dict(self.origin)

    def elements_from(self, source: str) -> tuple[str, ...]:
        return tuple(e for e, o in self.origin if o == source)

    @property
    def filled_by_toolkit(self) -> tuple[str, ...]:
        return self.elements_from("toolkit")

    @property
    def kind_title(self) -> str | None:
        return STANDARD[self.kind].title if self.kind in STANDARD else None

    @property
    def computed_text(self) -> str:
        """The computed SCOPE as contract statements (only the elements known)."""
        return scope_text(self.scope)

    @property
    def underspecified(self) -> tuple[str, ...]:
        """Elements the claim does not state and no standard contract or toolkit fills."""
        implied = {e for e, _ in self.implied}
        return tuple(e for e in ELEMENTS if e in self.unstated or e in implied)


# --------------------------------------------------------------------------- helpers


def _num(v: float) -> str:
    if v == math.inf:
        return "inf"
    if v == -math.inf:
        return "-inf"
    return f"{v:g}"


def scope_text(sc: m.Scope, indent: str = "") -> str:
    """The stated elements of a SCOPE as canonical statements, one a line, S C O P E order."""
    return "\n".join(scope_lines(sc, indent))


def method_name(method: m.Method | None) -> str | None:
    return None if method is None else METHOD_ALIASES.get(method.name, method.name)


def claim_model(claim: m.Claim) -> m.ModelRef | None:
    return claim.model or claim.computed.model


def standard_for(kind: str, explain: m.Selector | None) -> m.Scope:
    """Standard contract ``kind``, with its target taken from the explained output when it fits."""
    params: list[m.Param] = []
    if explain is not None and explain.segment is None:
        at = explain.op == "at"
        if kind in ("local_next_token", "prompt_conditioned", "classifier") and explain.space == "y" and at:
            params.append(m.Param("target", m.Selector("y", "at", explain.a)))
        elif kind == "span_prompt" and explain.space == "y":
            if at:
                params += [m.Param("start", m.Selector("y", "at", explain.a)),
                           m.Param("end", m.Selector("y", "at", explain.a))]
            elif explain.op == "range":
                params += [m.Param("start", m.Selector("y", "at", explain.a)),
                           m.Param("end", m.Selector("y", "at", explain.b))]
        elif kind == "state_level" and explain.space == "z" and at:
            params.append(m.Param("step", m.Selector("z", "at", explain.a)))
    if kind == "state_level" and not params:
        params.append(m.Param("step", m.Ident("t")))
    scope = standard_scope(m.Use(kind, tuple(params)))
    return _strip_spans(scope)


def _strip_spans(obj):
    """The same nodes without source positions (spans never compare, but reports stay clean)."""
    import dataclasses

    if isinstance(obj, tuple):
        return tuple(_strip_spans(o) for o in obj)
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.name == "span":
            changes["span"] = m.NOSPAN
        elif dataclasses.is_dataclass(v) or isinstance(v, tuple):
            changes[f.name] = _strip_spans(v)
    return dataclasses.replace(obj, **changes)


def _selectors(sc: m.Scope) -> list[m.Selector]:
    out: list[m.Selector] = [*(sc.fixed or ()), *(sc.eligible or ())]
    if sc.explain is not None:
        out.append(sc.explain)
    if sc.score is not None:
        out += [sc.score.target, *sc.score.given] + ([sc.score.perturbed] if sc.score.perturbed else [])
    return out


def process_hint(sc: m.Scope, claim: m.Claim) -> tuple[str | None, str]:
    """The process the notation implies, and why; (None, "") when nothing implies one."""
    if sc.process is not None:
        return sc.process.kind, "stated"
    features = [*(sc.fixed or ()), *(sc.eligible or ())]
    prefix = [s for s in features if s.space == "y"]
    if prefix:
        return "autoregressive", (f"the generated-prefix feature {fmt_selector(prefix[0])} exists only in an "
                                  "autoregressive process")
    diff = [s for s in _selectors(sc) if s.space in ("z", "stage")]
    if diff:
        what = "diffusion state" if diff[0].space == "z" else "denoising stage"
        return "masked_diffusion", f"the {what} {fmt_selector(diff[0])} exists only in a diffusion process"
    if sc.score is not None and (sc.score.estimator is not None or sc.score.kind == "stage_delta"):
        return "masked_diffusion", "the score's diffusion estimator implies a diffusion process"
    model = claim_model(claim)
    if model is not None and model.kind == "reference":
        info = REFERENCE_MODELS.get(model.name)
        if info is not None:
            return info.family, f"the model reference:{model.name} is {info.family}"
    return None, ""


def classify(sc: m.Scope) -> str | None:
    """The Table-1 contract kind of a (possibly partial) computed SCOPE."""
    kind = contract_kind(sc)
    if kind is not None:
        return kind
    p = sc.process.kind if sc.process is not None else None
    E = sc.eligible
    if p == "autoregressive" and E is not None and any(s.space == "y" for s in E):
        return "local_next_token"
    if p == "masked_diffusion" and E is not None and any(s.space == "stage" for s in E):
        return "denoising_stage"
    return None


def answering_kind(question: str, process: str | None) -> str:
    """The standard contract that answers ``question`` under the claim's process (module doc)."""
    kind = QUESTION_CONTRACT[question]
    if process == "autoregressive" and kind == "prompt_to_output":
        return "span_prompt"
    if process == "masked_diffusion" and kind == "span_prompt":
        return "prompt_to_output"
    return kind


def pick_method(preferred: str | None, kind: str) -> tuple[str | None, str | None]:
    """The claim's method when it supports ``kind``, else the first that does (and a note)."""
    if preferred is not None and preferred in METHODS and kind in METHODS[preferred].supports:
        return preferred, None
    alts = supported_methods(kind)
    if not alts:
        return None, f"no declared method computes {kind} contracts"
    choice = "integrated_gradients" if "integrated_gradients" in alts else alts[0]
    if preferred is None:
        return choice, f"the claim names no method; {choice} is used for {kind}"
    return choice, f"`{preferred}` does not support {kind} contracts; {choice} is used instead"


def metric_range(name: str) -> tuple[float, float, str] | None:
    """(low, high, where the range comes from) for a reported metric name."""
    key = name.lower()
    if key in METRIC_RANGES:
        lo, hi = METRIC_RANGES[key]
        info = CHECKS.get(key)
        return lo, hi, (info.summary if info else key)
    if key in CHECKS:
        info = CHECKS[key]
        f = info.fields[info.default_field]
        return f.low, f.high, info.summary
    ranges = {(f.low, f.high) for c in CHECKS.values() for n, f in c.fields.items() if n == key}
    if len(ranges) == 1:
        lo, hi = ranges.pop()
        return lo, hi, f"the `{key}` field of the catalog's checks"
    return None


def _range_text(lo: float, hi: float) -> str:
    if hi == math.inf:
        return f"[{_num(lo)}, inf)"
    if lo == -math.inf:
        return f"(-inf, {_num(hi)}]"
    return f"[{_num(lo)}, {_num(hi)}]"


def check_numbers(reported: m.Reported) -> tuple[tuple[ImpossibleNumber, ...], tuple[str, ...]]:
    impossible, unknown = [], []
    for p in reported.metrics:
        v = p.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        r = metric_range(p.key)
        if r is None:
            unknown.append(p.key)
            continue
        lo, hi, where = r
        if math.isnan(v) or v < lo or v > hi:
            why = f"{p.key} lies in {_range_text(lo, hi)}"
            if p.key.lower() == "dsa":
                why += (" (DSA = evidence mass − distractor mass, attribution mass normalised to one over the "
                        "input; seed 004 defines it so, yet reports values above 1)")
            else:
                why += f" ({where})"
            impossible.append(ImpossibleNumber(p.key, float(v), lo, hi, why))
    return tuple(impossible), tuple(unknown)


def _inconsistencies(claim: m.Claim, sc: m.Scope) -> list[str]:
    """Contract rules the computed SCOPE breaks (symbolic indices and missing parts are fine)."""
    import importlib

    v = importlib.import_module("scopecheck.spec.validate")

    doc = m.Contract(claim.name, claim_model(claim), claim.prompt, claim.output, None, sc, None, span=claim.span)
    errors: list[ContractError] = []
    anchors = v.Anchors(doc, errors)
    kind = classify(sc)
    try:
        v._check_process(sc, doc, errors)
        v._check_score(sc, anchors, errors, claim.span)
        v._check_features(sc, kind, anchors, errors)
    except ContractError as exc:  # a rule that could not even be evaluated
        errors.append(exc)
    keep = ("disjoint", "causality", "score-output", "process-features", "coverage", "text-anchor", "missing")
    out = []
    for e in errors:
        if e.rule in keep and e.message not in out:
            out.append(e.message)
    return out


# --------------------------------------------------------------------------- the audit


def fill(claim: m.Claim) -> tuple[m.Scope, dict[str, str], dict[str, str], str | None, list[str], list[str]]:
    """(scope, origin, implied-why, toolkit contract, notes, errors) after filling (module doc)."""
    c = claim.computed
    scope = c.scope
    origin = {e: "stated" for e in ELEMENTS if getattr(scope, e) is not None}
    notes: list[str] = []
    errors: list[str] = []
    if c.use is not None:
        try:
            filled = _strip_spans(standard_scope(c.use))
        except ContractError as exc:
            errors.append(f"`use {c.use.name}` cannot fill the SCOPE: {exc.message}")
        else:
            scope, o = merge(scope, filled)
            origin.update({e: "use" for e, src in o.items() if src == "use"})
    toolkit_contract = None
    if c.toolkit is not None and c.toolkit in TOOLKITS:
        tk = TOOLKITS[c.toolkit]
        family, _ = process_hint(scope, claim)
        per_token = claim_is_per_token(claim, scope)
        kind = tk.contract_for(per_token)
        if tk.sequence is not None and tk.sequence != tk.contract:
            variant = "per-token score" if per_token else "sequence (summed) score"
            why = ("the claim explains one generated token" if per_token and scope.explain is not None else
                   "the claim explains a generated span or sequence" if scope.explain is not None else
                   f"the claim's question is {claim.question}" if claim.question is not None else
                   "the claim says neither; the per-token score is the toolkit's usual one")
            notes.append(f"{tk.name} has a per-token ({tk.contract}) and a sequence ({tk.sequence}) score; "
                         f"{why}, so its {variant} is used ({kind}; read from {tk.source})")
        if kind == "prompt_to_output" and family == "autoregressive":
            kind = "span_prompt"
            notes.append(f"{tk.name}'s usual prompt-to-output contract on an autoregressive process is its "
                         "autoregressive analog, span-level prompt attribution (span_prompt)")
        toolkit_contract = kind
        missing = scope.missing()
        if missing:
            scope, o = merge(scope, standard_for(kind, scope.explain))
            got = [e for e, src in o.items() if src == "use"]
            origin.update({e: "toolkit" for e in got})
            if got:
                notes.append(f"filled from {tk.name}'s usual contract ({kind}): {', '.join(got)}; the claim does not "
                             f"state them ({tk.note})")
    implied: dict[str, str] = {}
    if scope.process is None:
        family, why = process_hint(scope, claim)
        if family is not None:
            proc = m.Process(family)
            scope = replace(scope, process=proc)
            origin["process"] = "implied"
            implied["process"] = f"{family}: {why}"
    ordered = {e: origin[e] for e in ELEMENTS if e in origin}
    return scope, ordered, implied, toolkit_contract, notes, errors


#: Questions whose bare toolkit claim is read under the toolkit's sequence score.
SEQUENCE_QUESTIONS = ("prompt_level", "span", "output")


def claim_is_per_token(claim: m.Claim, scope: m.Scope) -> bool:
    """Does the claim explain one generated token (per-token score) rather than a span or the sequence?

    The explained output decides when it is stated (``y[t]`` is one token; ``y``, ``y[a:b]`` a
    sequence); otherwise the question (prompt-level, span and output questions are about the
    generation, a next-token question about one token); with neither, per token."""
    o = scope.explain
    if o is not None and o.space == "y" and o.segment is None:
        return o.op == "at"
    return claim.question not in SEQUENCE_QUESTIONS


def _answer_explain(sc: m.Scope, kind: str) -> m.Selector | None:
    o = sc.explain
    if o is None:
        return None
    if kind == "prompt_to_output" or kind == "denoising_stage":
        return None
    return o


def answering_contract(claim: m.Claim, sc: m.Scope, kind: str, method: str | None) -> m.Contract:
    """The contract that answers the claim's question, every element stated (symbols kept)."""
    scope = standard_for(kind, _answer_explain(sc, kind))
    meth = None
    if method is not None:
        stated = claim.computed.method
        # the claim's own method keeps its parameters (steps, baseline, ...): only the contract changes
        params = _strip_spans(stated.params) if stated is not None and method_name(stated) == method else ()
        meth = m.Method(method, params)
    return m.Contract(f"answers the question of: {claim.name}", claim_model(claim), claim.prompt, claim.output,
                      None, scope, meth, span=claim.span)


PLACEHOLDER_NOTE = "# not stated by the claim: fill in to run"


def with_placeholders(text: str, contract: m.Contract) -> str:
    """The answering contract with ``<model>`` / ``<prompt>`` / ``<output>`` placeholder lines (marked
    by a comment) for what the claim does not state, instead of borrowing another example's."""
    missing = [(k, f"{k:<8} <{k}>") for k in ("model", "prompt", "output") if getattr(contract, k) is None]
    if not missing:
        return text
    head, _, rest = text.partition("\n")
    lines = [f"    {line}   {PLACEHOLDER_NOTE}" for _, line in missing]
    return "\n".join([head, *lines, rest])


#: Contract kinds that coincide on the first generated token (``y[<1]`` is empty).
_FIRST_TOKEN_SAME = frozenset({"prompt_conditioned", "local_next_token"})


def _explains_first_token(sc: m.Scope) -> bool:
    """The scope explains exactly ``y[1]`` (``y[1]`` or ``y[1:1]``)."""
    o = sc.explain
    if o is None or o.space != "y" or o.segment is not None:
        return False
    return (o.op == "at" and o.a == 1) or (o.op == "range" and o.a == 1 and o.b == 1)


def audit_static(claim: m.Claim) -> StaticAudit:
    """Audit ``claim`` without a model (module doc)."""
    sc, origin, implied, tk_contract, notes, errors = fill(claim)
    unstated = tuple(e for e in ELEMENTS if e not in origin)
    for e, why in implied.items():
        notes.append(f"{e} not stated; implied {why} (used to classify the computation)")
    kind = classify(sc)
    process = sc.process.kind if sc.process is not None else None
    question = claim.question

    # question vs computation
    ans_kind = answering_kind(question, process) if question in QUESTION_CONTRACT else None
    fallacy = False
    answers: bool | None = None
    mismatch = None
    prefix = [s for s in (sc.eligible or ()) if s.space == "y"]
    if question in PROMPT_QUESTIONS and prefix:
        fallacy = True
        answers = False
        computed = f"a {STANDARD[kind].title.lower()} computation" if kind in STANDARD else "the computation"
        mismatch = (f"self-attribution fallacy: the generated prefix {fmt_features(tuple(prefix))} is eligible, so "
                    f"{computed} credits the model's own earlier tokens for predicting "
                    f"{fmt_selector(sc.explain) if sc.explain else 'the output'}; the question is {question} "
                    f"({QUESTION_TEXT[question]}), and prefix attribution does not answer it (seed 000, 4.1)")
    elif ans_kind is not None and kind is not None:
        # the contract the question's own answering kind names answers it, whatever the process
        # (a span question under a diffusion process is answered by prompt_to_output)
        answers = kind in QUESTION_ACCEPTS[question] or kind == ans_kind
        if not answers and {kind, ans_kind} <= _FIRST_TOKEN_SAME and _explains_first_token(sc):
            # y[1] has no generated prefix: holding y[<1] fixed and making it eligible are the same
            # (empty) choice, so the two contracts are one computation (DESIGN, the AR contracts)
            answers = True
            notes.append(f"the output explained is y[1], which has no generated prefix: the {kind} and "
                         f"{ans_kind} contracts are the same computation there")
        if not answers:
            mismatch = (f"the computation is a {STANDARD[kind].title.lower()} contract ({kind}: "
                        f"{STANDARD[kind].question}); the question is {question} ({QUESTION_TEXT[question]}), "
                        f"answered by {ans_kind}")
    if question is None:
        notes.append("the claim does not say which question it answers" +
                     (f"; its computation answers: {STANDARD[kind].question}" if kind in STANDARD else ""))

    # method
    meth = method_name(claim.computed.method)
    method_message = None
    if meth is not None and meth in METHODS and kind is not None and kind not in METHODS[meth].supports:
        alts = supported_methods(kind)
        method_message = (f"`{meth}` does not compute {kind} contracts (it supports "
                          f"{', '.join(METHODS[meth].supports)}); methods for {kind}: {', '.join(alts) or 'none'}")

    # answering contract
    ans_scope = ans_text = None
    if ans_kind is not None:
        amethod, why = pick_method(meth, ans_kind)
        contract = answering_contract(claim, sc, ans_kind, amethod)
        ans_scope, ans_text = contract.scope, with_placeholders(format_document(contract), contract)
        if why and answers is False:
            notes.append(f"answering contract: {why}")

    impossible, unknown = check_numbers(claim.reported)
    if unknown:
        notes.append(f"no known range for reported metric(s): {', '.join(unknown)}")

    inconsistencies = errors + _inconsistencies(claim, sc)

    # choices a reader cannot see
    o = claim.output
    if o is None:
        notes.append("the generation explained is not given, nor the decoding rule that produced it")
    elif o.rule is not None:
        rest = ", ".join(f"{p.key} = {fmt_value(p.value)}" for p in o.params)
        notes.append(f"the response was produced by generate({o.rule}{', ' + rest if rest else ''}) and then frozen: "
                     "the map is conditional on that decoding choice")
    if meth is not None and meth in METHODS:
        stated = {p.key for p in claim.computed.method.params} if claim.computed.method else set()
        left = [f"{k} ({d.summary()})" for k, d in METHODS[meth].params.items()
                if k not in stated and k != "batch_size"]
        if left:
            notes.append(f"method parameters not stated (engine defaults would apply): {'; '.join(left)}")
        if meth in METHOD_NOTES:
            notes.append(METHOD_NOTES[meth])

    return StaticAudit(
        name=claim.name, question=question, scope=sc, origin=tuple(origin.items()), unstated=unstated,
        implied=tuple(implied.items()), toolkit=claim.computed.toolkit, toolkit_contract=tk_contract, kind=kind,
        answering_kind=ans_kind, answers=answers, fallacy=fallacy, mismatch=mismatch, answering_scope=ans_scope,
        answering_text=ans_text, impossible=impossible, unknown_metrics=unknown, method=meth,
        method_message=method_message, inconsistencies=tuple(inconsistencies), notes=tuple(notes))
