"""Dynamic audit: re-run a claim under its own contract and under the one that answers it.

Needs a claim that names a model (``reference:...``, a local directory, or a hub id) and a
prompt; the output is the claim's (given text, or ``generate(...)`` frozen once). When the
claim gives no output, the re-run freezes a greedy generation and says so.

* **Own contract**: the claim's computed SCOPE after filling (``use``, toolkit, implied
  process; :func:`scopecheck.audit.static.fill`). Elements still unstated are completed
  from the standard contract of the kind the computation instantiates (e.g. the
  hallucination claim's ``explain y[t]; eligible x, y[<t]`` is local next-token, so
  ``score log p(y[t] | x, y[<t])`` and ``fixed nothing``), and the report says which.
* **Answering contract**: the standard contract that answers the claim's question
  (:data:`scopecheck.audit.static.QUESTION_CONTRACT`), with the claim's method when that
  method supports it (else a declared method that does, noted).
* **Symbolic indices** are resolved before running: any index symbol other than ``T``/``K``
  (``y[t]``, ``y[<t]``) becomes ``T``, the last output token. A claim that means another
  token says so by naming it (``explain y["noir"]``, or ``use local_next_token(target =
  "noir")``).

Both runs go through :func:`scopecheck.engine.run.execute`. The report gives both maps,
the prompt and generated-prefix shares of absolute attribution mass in each (the mass
the answering contract moves from prefix to prompt), the Spearman rank correlation of the
two maps over prompt tokens, agreement with a reported ``map { ... }`` if the claim has
one, and, when :mod:`scopecheck.checks.registry` is importable, faithfulness checks
(``deletion`` by default) run under each contract's own protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from scopecheck.audit.static import (
    StaticAudit,
    audit_static,
    claim_model,
    fill,
    pick_method,
    standard_for,
)
from scopecheck.dsl.format import fmt_model, format_document
from scopecheck.errors import ContractError
from scopecheck.orchestration.stats import spearman
from scopecheck.spec import adapters
from scopecheck.spec import model as m
from scopecheck.spec.registry import METHOD_ALIASES
from scopecheck.spec.standard import merge

DEFAULT_CHECKS = ("deletion",)


@dataclass(frozen=True)
class TokenView:
    text: str
    role: str          # special | prompt | output
    index: int
    score: float
    eligible: bool
    fixed: bool
    target: bool


@dataclass(frozen=True)
class MapView:
    """One re-run: its contract and its map over every token."""

    label: str                     # "own" | "answer"
    kind: str
    contract_text: str             # runnable contract, canonical text
    method: str
    method_params: dict[str, Any]
    tokens: tuple[TokenView, ...]
    prompt_mass: float             # share of absolute mass on prompt tokens
    prefix_mass: float             # share of absolute mass on generated tokens
    top_prompt: str | None         # highest-attributed prompt token
    score_input: float | None

    def prompt_scores(self) -> list[float]:
        return [t.score for t in self.tokens if t.role == "prompt"]


@dataclass(frozen=True)
class ReportedAgreement:
    """A reported map compared with the re-run maps, token by token."""

    matched: tuple[tuple[str, float, float, float | None], ...]   # (token, reported, own, answer)
    unmatched: tuple[str, ...]
    spearman_own: float | None
    spearman_answer: float | None
    top_agrees_own: bool | None


@dataclass(frozen=True)
class DynamicAudit:
    model: str | None
    device: str | None
    own: MapView | None
    answer: MapView | None
    same_contract: bool                      # the computation is the answering contract: one run
    mass_moved: float | None                 # answer.prompt_mass − own.prompt_mass
    spearman_prompt: float | None            # rank correlation of the two maps over prompt tokens
    reported: ReportedAgreement | None
    faithfulness: dict[str, dict[str, dict[str, float]]] | None   # label -> check -> fields
    notes: tuple[str, ...] = ()
    protocols: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> check -> protocol in words
    errors: tuple[str, ...] = ()
    results: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # label -> AttributionResult
    skipped: str | None = None               # why nothing was re-run (no model or prompt, a model not here)


# --------------------------------------------------------------------------- helpers


def _resolve_ref(r: m.Ref | None) -> m.Ref | None:
    if isinstance(r, m.Symbol) and r.name not in ("T", "K"):
        return m.Symbol("T")
    return r


def _resolve_sel(s: m.Selector | None) -> m.Selector | None:
    if s is None:
        return None
    return replace(s, a=_resolve_ref(s.a), b=_resolve_ref(s.b))


def resolve_symbols(sc: m.Scope) -> m.Scope:
    """Every index symbol other than T/K becomes T, the last output token."""
    def many(sels):
        return None if sels is None else tuple(_resolve_sel(s) for s in sels)

    score = sc.score
    if score is not None:
        score = replace(score, target=_resolve_sel(score.target), given=many(score.given),
                        perturbed=_resolve_sel(score.perturbed))
    return replace(sc, score=score, fixed=many(sc.fixed), explain=_resolve_sel(sc.explain),
                   eligible=many(sc.eligible))


def _has_symbols(sc: m.Scope) -> bool:
    return resolve_symbols(sc) != sc


def runnable(claim: m.Claim, name: str, scope: m.Scope, method: str, notes: list[str]) -> m.Contract:
    """A runnable contract for ``scope`` on the claim's model, prompt and output."""
    output = claim.output
    if output is None:
        output = m.Output(rule="greedy")
        notes.append("the claim gives no output; the re-run freezes a greedy generation")

    adapter = adapters.BY_NAME.get(method)
    own = adapter.method if adapter is not None else method          # an adapter keeps the claim's parameters
    params = claim.computed.method.params if (claim.computed.method is not None and
                                              _canon(claim.computed.method.name) == own) else ()
    if adapter is not None:
        params = tuple(p for p in params if p.key in adapter.params)
    return m.Contract(name, claim_model(claim), claim.prompt, output, None, scope, m.Method(method, params),
                      seed=0, span=claim.span)


def toolkit_method(toolkit: str | None, method: str, kind: str) -> tuple[str, str | None]:
    """The method a ``toolkit X`` claim's own computation runs with: X's adapter of ``method``
    (``captum.integrated_gradients``) when X has one for ``kind`` and X is installed, else
    ``method`` itself (scopecheck's own implementation), with a note saying which and why."""
    if toolkit is None:
        return method, None
    name = f"{toolkit}.{method}"
    adapter = adapters.BY_NAME.get(name)
    if adapter is None:
        return method, (f"{toolkit} has no adapter for `{method}`; scopecheck's own `{method}` computes the map "
                        "(the toolkit's implementation choices are not reproduced)")
    if kind not in adapter.supports:
        return method, (f"`{name}` cannot express {kind} contracts (it can: {', '.join(adapter.supports)}); "
                        f"scopecheck's own `{method}` computes the map")
    version = adapters.toolkit_version(toolkit)
    if version is None:
        return method, (f"{toolkit} is not installed, so scopecheck's own `{method}` computes the map instead of "
                        f"`{name}` (pip install \"scopecheck[{toolkit}]\" to run the toolkit itself)")
    return name, f"computed by {toolkit} {version} itself (`{name}`)"


def _canon(name: str) -> str:
    return METHOD_ALIASES.get(name, name)


def _view(label: str, res: Any) -> MapView:
    toks = tuple(TokenView(t.text, t.role, t.index, t.score, t.eligible, t.fixed, t.target) for t in res.tokens)
    total = sum(abs(t.score) for t in toks)
    pm = sum(abs(t.score) for t in toks if t.role == "prompt") / total if total else 0.0
    ym = sum(abs(t.score) for t in toks if t.role == "output") / total if total else 0.0
    prompt = [t for t in toks if t.role == "prompt" and t.eligible]
    top = max(prompt, key=lambda t: t.score).text.strip() if prompt else None
    return MapView(label, res.kind, res.contract_text, res.method, dict(res.method_params), toks, pm, ym, top,
                   res.score_input)


def _run(contract: m.Contract, device: str) -> Any:
    from scopecheck.engine.models import LoadOptions  # lazy: imports torch
    from scopecheck.engine.run import execute  # lazy: imports torch

    return execute(contract, LoadOptions(device=device))


def _agreement(rmap: tuple[tuple[str, float], ...], own: MapView, answer: MapView | None) -> ReportedAgreement:
    pool = [i for i, t in enumerate(own.tokens) if t.role != "special"]
    used: set[int] = set()
    matched, unmatched = [], []
    for key, value in rmap:
        hit = next((i for i in pool if i not in used and own.tokens[i].text.strip() == key.strip()), None)
        if hit is None:
            unmatched.append(key)
            continue
        used.add(hit)
        ans = answer.tokens[hit].score if answer is not None and hit < len(answer.tokens) else None
        matched.append((key, float(value), own.tokens[hit].score, ans))
    rep = [x[1] for x in matched]
    rho_own = spearman(rep, [x[2] for x in matched])
    rho_ans = spearman(rep, [x[3] for x in matched]) if answer is not None and all(
        x[3] is not None for x in matched) else None
    top = None
    if len(matched) >= 1:
        top = max(matched, key=lambda x: x[1])[0] == max(matched, key=lambda x: x[2])[0]
    return ReportedAgreement(tuple(matched), tuple(unmatched), rho_own, rho_ans, top)


def _protocol(config: dict[str, Any]) -> str:
    perturb = config.get("perturb")
    parts = []
    if perturb:
        parts.append("perturb " + " and ".join(perturb) if isinstance(perturb, (list, tuple)) else f"perturb {perturb}")
    if config.get("operator"):
        parts.append(f"operator {config['operator']}")
    if config.get("protocol"):
        parts.append(f"then {config['protocol']}")
    if config.get("measure"):
        parts.append(f"measure {config['measure']}")
    return ", ".join(parts)


def _faithfulness(results: dict[str, Any], checks: tuple[str, ...], notes: list[str],
                  protocols: dict[str, dict[str, str]]):
    try:
        from scopecheck.checks.registry import run_check  # lazy: imports torch
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("scopecheck.checks"):
            notes.append("faithfulness skipped: scopecheck.checks.registry is not available")
        else:
            notes.append(f"faithfulness skipped: scopecheck.checks.registry failed to import ({exc})")
        return None
    except Exception as exc:  # noqa: BLE001 - a module under construction must not sink the audit
        notes.append(f"faithfulness skipped: scopecheck.checks.registry failed to import ({exc})")
        return None
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, res in results.items():
        for chk in checks:
            try:
                cr = run_check(chk, res, {}, seed=0)
            except Exception as exc:  # noqa: BLE001 - report, do not crash the audit
                msg = exc.render() if isinstance(exc, ContractError) else f"{type(exc).__name__}: {exc}"
                notes.append(f"faithfulness `{chk}` under the {label} contract failed: {msg}")
                continue
            out.setdefault(label, {})[chk] = {k: float(v) for k, v in cr.fields.items()}
            config = getattr(cr, "config", None)
            if isinstance(config, dict):
                protocols.setdefault(label, {})[chk] = _protocol(config)
    return out


def _complete(sc: m.Scope, kind: str) -> tuple[m.Scope, list[str]]:
    missing = sc.missing()
    if not missing:
        return sc, []
    full, origin = merge(sc, standard_for(kind, sc.explain))
    got = [e for e, o in origin.items() if o == "use"]
    return full, got


# --------------------------------------------------------------------------- the audit


def can_rerun(claim: m.Claim) -> bool:
    return claim_model(claim) is not None and claim.prompt is not None


def offline_problem(model: m.ModelRef) -> str | None:
    """Why ``model`` is not available on this machine without the network, or None.

    A reference model ships with scopecheck and a path is the user's own (its loader reports a
    missing one as an error); a hub id is available only when the local Hugging Face cache holds
    it. The audit never downloads a claim's model, and never substitutes another one for it."""
    if model.kind != "hub":
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:     # transformers depends on it; without it nothing from the hub loads
        return f'model hub:"{model.name}" cannot be looked up (huggingface_hub is not installed)'
    try:
        hit = try_to_load_from_cache(model.name, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id is "not here", not a crash of the audit
        hit = None
    if isinstance(hit, str):
        return None
    return f'model hub:"{model.name}" is not available offline (not in the local Hugging Face cache)'


def rerun_problem(claim: m.Claim) -> str | None:
    """Why ``claim`` cannot be re-run here (no model, no prompt, a model not available), or None."""
    model = claim_model(claim)
    if model is None or claim.prompt is None:
        missing = " and no ".join(w for w, v in (("model", model), ("prompt", claim.prompt)) if v is None)
        return f"the claim names no {missing}"
    return offline_problem(model)


def audit_dynamic(claim: m.Claim, device: str = "auto", *, checks: tuple[str, ...] = DEFAULT_CHECKS,
                  static: StaticAudit | None = None) -> DynamicAudit:
    """Re-run ``claim`` under its own contract and under the one answering its question."""
    notes: list[str] = []
    errors: list[str] = []
    model = claim_model(claim)
    problem = rerun_problem(claim)
    if model is None or problem is not None:    # the note names the model that is not here
        return DynamicAudit(None, None, None, None, False, None, None, None, None, (f"no re-run: {problem}",),
                            skipped=problem)
    audit = static or audit_static(claim)

    model_text = fmt_model(model)
    sc, _, _, _, _, _ = fill(claim)
    kind = audit.kind
    results: dict[str, Any] = {}
    own = answer = None
    device_used = None

    # the claim's own computation
    own_contract = None
    if kind is None:  # not a failure of the re-run: the static verdict already says underspecified
        notes.append("no re-run of the claim's own computation: it cannot be reconstructed (" +
                     (f"{', '.join(audit.unstated)} not stated" if audit.unstated else "its contract is unclear") + ")")
    else:
        full, completed = _complete(sc, kind)
        if completed:
            notes.append(f"own contract completed for the re-run from {kind}: {', '.join(completed)} "
                         "(the claim does not state them)")
        if _has_symbols(full):
            notes.append("symbolic indices resolved: y[t] is the last output token T")
        full = resolve_symbols(full)
        meth, why = pick_method(audit.method, kind)
        if why:
            notes.append(f"own contract: {why}")
        if meth is not None:
            meth, how = toolkit_method(claim.computed.toolkit, meth, kind)
            if how:
                notes.append(f"own contract: {how}")
            own_contract = runnable(claim, f"{claim.name} [as computed: {kind}]", full, meth, notes)

    # the contract that answers the question
    ans_contract = None
    ans_kind = audit.answering_kind
    if ans_kind is None and claim.question is None:
        notes.append("no answering contract: the claim states no question")
    same = ans_kind is not None and ans_kind == kind and own_contract is not None
    if ans_kind is not None and not same:
        ascope = resolve_symbols(audit.answering_scope or standard_for(ans_kind, sc.explain))
        meth, why = pick_method(audit.method, ans_kind)
        if why:
            notes.append(f"answering contract: {why}")
        if meth is not None:
            ans_contract = runnable(claim, f"{claim.name} [answers {claim.question}: {ans_kind}]", ascope, meth, [])
    if same:
        notes.append(f"the computation ({kind}) is the contract that answers the question; one run")

    for label, contract in (("own", own_contract), ("answer", ans_contract)):
        if contract is None:
            continue
        try:
            res = _run(contract, device)
        except ContractError as exc:
            errors.append(f"{label} contract: {exc.render()}\n{format_document(contract)}")
            continue
        results[label] = res
        device_used = res.device
        view = _view(label, res)
        if label == "own":
            own = view
        else:
            answer = view

    mass_moved = rho = None
    if own is not None and answer is not None:
        mass_moved = answer.prompt_mass - own.prompt_mass
        rho = spearman(own.prompt_scores(), answer.prompt_scores())
    reported = None
    if claim.reported.map is not None:
        if own is not None:
            reported = _agreement(claim.reported.map, own, answer)
        else:
            notes.append("the reported map is not compared: the own contract did not run")
    protocols: dict[str, dict[str, str]] = {}
    faith = _faithfulness(results, checks, notes, protocols) if results and checks else None
    return DynamicAudit(model=model_text, device=device_used, own=own, answer=answer, same_contract=same,
                        mass_moved=mass_moved, spearman_prompt=rho, reported=reported, faithfulness=faith,
                        notes=tuple(notes), protocols=protocols, errors=tuple(errors), results=results)
