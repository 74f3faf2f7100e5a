"""The seven standard contracts of seed 000, Table 1, by name and with parameters.

``use prompt_conditioned(target = "noir")`` fills every SCOPE element; statements in
the contract override single elements. Each builder returns the filled :class:`Scope`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from scopecheck.errors import ContractValidationError, Span, did_you_mean, unknown_name
from scopecheck.spec import model as m

T = m.Symbol("T")


def _ref(p: m.Param) -> m.Ref:
    v = p.value
    if isinstance(v, bool):
        pass
    elif isinstance(v, int):
        return v
    elif isinstance(v, m.Text):
        return m.TextRef(v.value)
    elif isinstance(v, m.Ident):
        return m.Symbol(v.name)
    elif isinstance(v, m.Selector) and v.op == "at" and v.a is not None:
        return v.a
    raise ContractValidationError(
        f"`{p.key}` must name one position", p.span,
        expected=f'a token text ("noir"), an index (4), or T; e.g. {p.key} = "noir"', rule="use-params")


def _y(op: str, a: m.Ref | None = None, b: m.Ref | None = None, span: Span | None = None) -> m.Selector:
    return m.Selector("y", op, a, b, None, span or m.NOSPAN)


X = m.Selector("x")
Y = m.Selector("y")
DIFFUSION = m.Process("masked_diffusion", (m.Param("sampler", m.Ident("confidence")),))


def _estimator(params: dict[str, m.Param], span: Span) -> m.Estimator:
    p = params.get("estimator")
    name = "chain"
    if p is not None:
        if not isinstance(p.value, m.Ident):
            raise ContractValidationError("`estimator` must be chain, pll or elbo", p.span,
                                          expected="estimator = chain | pll | elbo", rule="use-params")
        name = p.value.name
    est_params: tuple[m.Param, ...] = ()
    if "samples" in params:
        est_params = (m.Param("samples", params["samples"].value, params["samples"].span),)
    return m.Estimator(name, est_params, span)


def classifier(p: dict[str, m.Param], span: Span) -> m.Scope:
    t = _ref(p["target"]) if "target" in p else 1
    o = _y("at", t)
    return m.Scope(m.Score("logprob", o, (X,)), (), o, m.Process("classifier"), (X,))


def local_next_token(p: dict[str, m.Param], span: Span) -> m.Scope:
    t = _ref(p["target"]) if "target" in p else T
    o = _y("at", t)
    return m.Scope(m.Score("logprob", o, (X, _y("lt", t))), (), o, m.Process("autoregressive"), (X, _y("lt", t)))


def prompt_conditioned(p: dict[str, m.Param], span: Span) -> m.Scope:
    t = _ref(p["target"]) if "target" in p else T
    o = _y("at", t)
    return m.Scope(m.Score("logprob", o, (X, _y("lt", t))), (_y("lt", t),), o, m.Process("autoregressive"), (X,))


def span_prompt(p: dict[str, m.Param], span: Span) -> m.Scope:
    a = _ref(p["start"]) if "start" in p else 1
    b = _ref(p["end"]) if "end" in p else T
    o = _y("range", a, b)
    given = (X,) if a == 1 else (X, _y("lt", a))
    return m.Scope(m.Score("logprob", o, given), (_y("range", 1, b),), o, m.Process("autoregressive"), (X,))


def state_level(p: dict[str, m.Param], span: Span) -> m.Scope:
    if "step" not in p:
        raise ContractValidationError("state_level needs the state to explain", span,
                                      expected="use state_level(step = 3)", rule="use-params")
    t = _ref(p["step"])
    o = m.Selector("z", "at", t)
    later = m.Selector("z", "gt", t)
    return m.Scope(m.Score("logprob", o, (X, later)), (), o, DIFFUSION, (X, later))


def denoising_stage(p: dict[str, m.Param], span: Span) -> m.Scope:
    stages = m.Selector("stage")
    score = m.Score("stage_delta", Y, (X,), None, stages, _estimator(p, span))
    return m.Scope(score, (), Y, DIFFUSION, (stages,))


def prompt_to_output(p: dict[str, m.Param], span: Span) -> m.Scope:
    return m.Scope(m.Score("logprob", Y, (X,), estimator=_estimator(p, span)), (), Y, DIFFUSION, (X,))


@dataclass(frozen=True)
class Standard:
    name: str
    title: str
    build: Callable[[dict[str, m.Param], Span], m.Scope]
    params: dict[str, str]
    question: str


STANDARD: dict[str, Standard] = {
    s.name: s
    for s in (
        Standard("classifier", "Classifier", classifier, {"target": "the label token (default y[1])"},
                 "which input features explain the predicted class?"),
        Standard("local_next_token", "Local next-token", local_next_token,
                 {"target": "the token y[t] (text, index or T; default T), or each: one map per token"},
                 "which context tokens, prompt or generated prefix, helped predict y[t]?"),
        Standard("prompt_conditioned", "Prompt-conditioned", prompt_conditioned,
                 {"target": "the token y[t] (default T), or each: one map per generated token"},
                 "which prompt tokens explain y[t], given the generated prefix?"),
        Standard("span_prompt", "Span-level prompt", span_prompt,
                 {"start": "first token of the span (default 1)", "end": "last token (default T)"},
                 "which prompt tokens explain the generated span, rescored as generated?"),
        Standard("state_level", "Diffusion state-level", state_level, {"step": "the state z[t] (required)"},
                 "which prompt tokens or earlier states explain the state z[t]?"),
        Standard("denoising_stage", "Denoising-stage", denoising_stage,
                 {"estimator": "chain | pll | elbo (default chain)", "samples": "elbo samples"},
                 "which denoising stage was responsible for the output?"),
        Standard("prompt_to_output", "Prompt-to-output", prompt_to_output,
                 {"estimator": "chain | pll | elbo (default chain)", "samples": "elbo samples"},
                 "which prompt tokens explain the final output of the chain?"),
    )
}


#: standard contracts that accept ``target = each`` (a map family: one map per generated token)
FAMILY_STANDARDS = ("local_next_token", "prompt_conditioned")
EACH = "each"


def family_param(use: m.Use | None) -> m.Param | None:
    """The ``target = each`` parameter of a ``use`` statement, if it asks for a map family."""
    if use is None:
        return None
    for p in use.params:
        if p.key == "target" and isinstance(p.value, m.Ident) and p.value.name == EACH:
            return p
    return None


def member_use(use: m.Use, k: int | str) -> m.Use:
    """The ``use`` of one family member: ``target = each`` replaced by ``target = k`` (an index,
    or ``"T"`` for the last token), keeping every span."""
    value: m.Value = k if isinstance(k, int) else m.Ident(k)
    params = tuple(m.Param(p.key, value, p.span) if p.key == "target" else p for p in use.params)
    return m.Use(use.name, params, use.span)


def family_errors(use: m.Use, contract: m.Contract) -> list[ContractValidationError]:
    """Where ``target = each`` is not allowed: other standard contracts, dataset contracts, and
    contracts that restate the output explained or the score (each member's are fixed by k)."""
    p = family_param(use)
    if p is None:
        return []
    errs = []
    if use.name not in FAMILY_STANDARDS:
        errs.append(ContractValidationError(
            f"`target = each` asks for one map per generated token; `{use.name}` has no per-token family",
            p.span, expected="use " + " | ".join(f"{n}(target = each)" for n in FAMILY_STANDARDS), rule="use-params"))
    if contract.dataset is not None:
        errs.append(ContractValidationError("`target = each` is not available in a dataset contract", p.span,
                                            expected="a single target per example", rule="use-params"))
    for el in ("explain", "score"):
        if getattr(contract.scope, el) is not None:
            errs.append(ContractValidationError(
                f"`target = each` fixes `{el}` for each member; the contract states `{el}` itself",
                contract.spans.get(el, p.span), expected=f"no `{el}` statement with target = each",
                rule="use-params"))
    return errs


def standard_scope(use: m.Use) -> m.Scope:
    """The SCOPE elements a ``use`` statement fills, or a positioned error. A family
    (``target = each``) fills the scope of its last member (``target = T``)."""
    std = STANDARD.get(use.name)
    if std is None:
        raise unknown_name("standard contract", use.name, list(STANDARD), use.span)
    if family_param(use) is not None and use.name in FAMILY_STANDARDS:
        use = member_use(use, "T")
    params = {p.key: p for p in use.params}
    for key, p in params.items():
        if key not in std.params:
            raise ContractValidationError(
                f"`{use.name}` has no parameter `{key}`", p.span,
                expected=", ".join(std.params) or "no parameters",
                hint=did_you_mean(key, list(std.params)), rule="use-params")
    scope = _respan(std.build(params, use.span), use.span)
    assert isinstance(scope, m.Scope), scope  # _respan keeps every node's type
    return scope


def _respan(obj: object, span: Span) -> object:
    """Give every node the standard contract filled the span of its `use` statement."""
    import dataclasses

    if isinstance(obj, tuple):
        return tuple(_respan(o, span) for o in obj)
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return obj
    changes: dict[str, object] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.name == "span":
            if v == m.NOSPAN:
                changes["span"] = span
        elif dataclasses.is_dataclass(v) or isinstance(v, tuple):
            changes[f.name] = _respan(v, span)
    return dataclasses.replace(obj, **changes)


def merge(stated: m.Scope, filled: m.Scope) -> tuple[m.Scope, dict[str, str]]:
    """Stated elements override filled ones; returns the scope and each element's origin."""
    out: dict[str, object] = {}
    origin: dict[str, str] = {}
    for e in m.Scope.ELEMENTS:
        mine = getattr(stated, e)
        if mine is not None:
            out[e], origin[e] = mine, "stated"
        elif getattr(filled, e) is not None:
            out[e], origin[e] = getattr(filled, e), "use"
    return m.Scope(**out), origin  # type: ignore[arg-type]


def standard_table() -> str:
    """The documentation's table of standard contracts (Markdown), generated from
    :data:`STANDARD`: each contract's SCOPE with its symbolic target (``t``) or step, and its
    parameters, as ``scopecheck list`` shows them."""
    from scopecheck.spec.text import fmt_features, fmt_params, fmt_score, fmt_selector

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = ["| name | S score | C held fixed | O output | P process | E eligible | parameters |",
            "|---|---|---|---|---|---|---|"]
    for std in STANDARD.values():
        sc = std.build({k: m.Param(k, m.Ident("t")) for k in std.params if k in ("target", "step")}, m.NOSPAN)
        # a standard contract states every element (tests/spec: each builds a complete SCOPE)
        assert sc.score is not None and sc.explain is not None and sc.process is not None
        assert sc.fixed is not None and sc.eligible is not None
        args = ", ".join(std.params)
        prm = "; ".join(f"`{k}`: {v}" for k, v in std.params.items())
        fixed = fmt_features(sc.fixed) or "nothing"
        rows.append(f"| `{std.name}({args})` | {cell(fmt_score(sc.score))} | {cell(fixed)} "
                    f"| {cell(fmt_selector(sc.explain))} | {cell(sc.process.kind + fmt_params(sc.process.params))} "
                    f"| {cell(fmt_features(sc.eligible))} | {cell(prm)} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m scopecheck.spec.standard: the documentation's table
    print(standard_table(), end="")
