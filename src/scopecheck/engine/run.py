"""Run a contract: load the model, compile the contract, run its method."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from scopecheck.dsl.format import fmt_features, fmt_params, fmt_score, fmt_selector, fmt_value, format_document
from scopecheck.engine.compile import compile_contract, contract_dir
from scopecheck.engine.compiled import CompiledContract
from scopecheck.engine.cost import check_budget
from scopecheck.engine.diffusion.compile import compile_diffusion
from scopecheck.engine.family import run_family
from scopecheck.engine import methods
from scopecheck.engine.methods import external
from scopecheck.engine.models import LoadedModel, LoadOptions, load
from scopecheck.engine.precision import float64_forward
from scopecheck.engine.result import AttributionResult, TokenScore
from scopecheck.engine.scoring import fast_path_notes
from scopecheck.engine.words import AGGREGATIONS, DEFAULT_AGGREGATION, TEXT_ROLES, alignment_inputs, word_map
from scopecheck.errors import (
    ContractError, ContractErrors, ContractValidationError, InternalError, MethodRefused, Span, reraise_interrupt,
    unknown_name,
)
from scopecheck.loader import is_contract_path, load_contracts
from scopecheck.runtime.batching import BatchSizeError
from scopecheck.runtime.devices import is_out_of_memory
from scopecheck.runtime.provenance import model_facts
from scopecheck.spec import model as m
from scopecheck.spec.standard import family_param, member_use
from scopecheck.spec.validate import Resolved, resolve, validate

from scopecheck.spec.registry import get_method
from scopecheck.spec.vocabulary import OPERATOR_PARAMS, fallback_operator

T = TypeVar("T")

#: Method parameters every method accepts, handled here rather than by the method itself.
COMMON_PARAMS = ("aggregate",)


def aggregation(method: m.Method) -> str:
    """``aggregate = tokens | words`` of a method (default tokens): how the map is reported.
    A value outside the choices is a positioned error (the validator reports it first)."""
    for p in method.params:
        if p.key == "aggregate":
            value = p.value.name if isinstance(p.value, m.Ident) else p.value.value if isinstance(p.value, m.Text) \
                else None
            if value not in AGGREGATIONS:
                raise ContractValidationError(f"method `{method.name}`: `aggregate = {fmt_value(p.value)}` is not "
                                              "allowed", p.span, expected="aggregate = " + " | ".join(AGGREGATIONS),
                                              rule="params")
            return str(value)
    return DEFAULT_AGGREGATION


def method_params(compiled: CompiledContract, method: m.Method) -> tuple[str, dict[str, Any], str | None]:
    """Canonical method name, its parameters (operator made explicit) and the operator used."""
    info = get_method(method.name)
    name = info.name
    params = {p.key: m.py_value(p.value) for p in method.params if p.key not in COMMON_PARAMS}
    operator = None
    for key in OPERATOR_PARAMS:
        if key in info.params:
            available = set(compiled.problem.operators) | {"delete"}
            if key in params:
                operator = str(params[key])
                if operator not in available:
                    p = next(q for q in method.params if q.key == key)
                    raise ContractValidationError(
                        f"{compiled.contract.model.name if compiled.contract.model else 'the model'} has no "
                        f"`{operator}` token", p.span, expected=f"{key} = " + " | ".join(sorted(available)),
                        rule="operator")
            else:
                # the entry's default where the model has it, else the first of the fallback order
                default = info.params[key].default
                operator = str(default) if default in available else fallback_operator(compiled.problem.operators)
                params[key] = operator
    return name, params, operator


def _budget(name: str, params: dict[str, Any], compiled: CompiledContract, contract: m.Contract,
            max_evaluations: int | None) -> None:
    pb = compiled.problem
    V = int(pb.vocab_embeds.shape[0]) if getattr(pb, "vocab_embeds", None) is not None else 1
    chain = compiled.chain
    reads = len([s for s in chain.steps if s.positions]) if chain is not None else 1
    too_much = check_budget(name, params, len(compiled.eligible), pb.length, V, reads, max_evaluations)
    if too_much:
        assert contract.method is not None
        raise ContractValidationError(too_much, contract.method.span, rule="budget",
                                      expected="fewer steps or samples, a smaller eligible set",
                                      hint="raise the budget with --max-evaluations N (scopecheck run) or "
                                           "--scope-max-evaluations N (pytest)")


def _refused(exc: MethodRefused, name: str, contract: m.Contract) -> ContractValidationError:
    """A method refusing this problem (e.g. too many features), positioned on the method."""
    assert contract.method is not None
    return ContractValidationError(f"`{name}` cannot run this contract: {exc.message}", contract.method.span,
                                   expected=exc.expected, hint=exc.hint, rule="method")


def _method_call(name: str, contract: m.Contract, call: Callable[[], T]) -> T:
    """``call()`` (the method, or a family's methods), its failures sorted: a :class:`MethodRefused`
    is the method declining this contract (positioned on its ``method`` line); a contract error
    keeps its own position; running out of memory (a batch size that does not fit, see
    :mod:`scopecheck.runtime.batching`) is reported as it came; anything else is a bug in
    the method and says so (:class:`InternalError`, the original chained), never relabelled as a
    refusal."""
    try:
        return call()
    except MethodRefused as exc:
        raise _refused(exc, name, contract) from None
    except ContractError:
        raise
    except Exception as exc:
        reraise_interrupt(exc)
        if isinstance(exc, BatchSizeError) or is_out_of_memory(exc):
            raise
        raise InternalError(name, exc) from exc


def operator_note(name: str, params: dict[str, Any], method: m.Method) -> str | None:
    """When the registry's default operator does not exist for this model and another was used."""
    declared = get_method(name).params
    stated = {p.key for p in method.params}
    for key in OPERATOR_PARAMS:
        default = declared[key].default if key in declared else None
        if key in params and key not in stated and default is not None and params[key] != default:
            return (f"the default {key} `{default}` does not exist for this model; `{params[key]}` was used "
                    f"(state `{key} = ...` to choose another)")
    return None


def ig_note(info: dict[str, Any]) -> str | None:
    """IG whose map misses S(x) - S(baseline) by more than 1% of it (and 1e-3): not converged."""
    delta, s_in, s_base = info.get("delta"), info.get("score_input"), info.get("score_baseline")
    if not all(isinstance(v, (int, float)) for v in (delta, s_in, s_base)):
        return None
    gap = abs(float(s_in) - float(s_base))
    if abs(float(delta)) <= max(1e-3, 0.01 * gap):
        return None
    return (f"the map sums to {float(delta) + float(s_in) - float(s_base):.6g} but S(input) - S(baseline) = "
            f"{float(s_in) - float(s_base):.6g}: raise steps (measured delta {float(delta):.3g} at steps = "
            f"{info.get('steps')}, rule {info.get('rule')}, baseline {info.get('baseline')})"
            + (f"; {info['warning']}" if "warning" in info else ""))


def heta_note(info: dict[str, Any]) -> str | None:
    """HETA's Hutchinson estimate of the curvature term with a relative standard error above 10%,
    or its low-rank estimate with an estimated error bound on S_i above 10% (``lowrank_error_max``:
    exact block probes against the reconstructed blocks; the subspace residual
    ``lowrank_residual`` does not bound the error of S_i and drives nothing)."""
    err = info.get("lowrank_error_max")
    if isinstance(err, (int, float)) and float(err) > 0.10:
        worst = max((k for k in info if k.startswith("lowrank_error@")), key=lambda k: float(info[k]), default=None)
        where = f" (position {worst.split('@')[1]})" if worst else ""
        return (f"HETA's low-rank curvature S_i may be off by up to {float(err):.0%}{where}: the bound "
                f"E||(H_ii - Ĥ_ii) r||_1 / E||H_ii r||_1 from {info.get('lowrank_check_probes')} exact probes per "
                f"token against the rank-{info.get('rank')} blocks; raise rank, or use curvature = hutchinson")
    rse = info.get("S_rse_max")
    if not isinstance(rse, (int, float)) or not math.isfinite(float(rse)) or float(rse) <= 0.10:
        return None
    if info.get("probes") == "auto":
        return (f"HETA's curvature term S_i has a relative standard error up to {float(rse):.0%} after "
                f"max_probes = {info.get('probes_max')} adaptive probes (Hutchinson estimate): raise max_probes "
                f"(the error falls as 1/sqrt(probes))")
    return (f"HETA's curvature term S_i has a relative standard error up to {float(rse):.0%} with probes = "
            f"{info.get('probes')} (Hutchinson estimate): raise probes, or leave it out for the adaptive count "
            f"(the error falls as 1/sqrt(probes))")


def execute(contract: m.Contract, options: LoadOptions = LoadOptions(), progress: bool = False,
            max_evaluations: int | None = None, strict: bool = False, allow_outside_data: bool = False,
            scores: Any = None) -> AttributionResult:
    """Run one single-target contract. (A map family, ``target = each``: :func:`execute_family`.)

    ``method external(map = ...)`` reads its map from a file (``allow_outside_data`` lifts the
    folder rule) instead of computing one; ``scores`` (:func:`check_map`) gives that map directly."""
    if family_param(contract.use) is not None:
        raise ContractValidationError("a map family (target = each) runs with execute_family", contract.span,
                                      rule="engine")
    errs = validate(contract)
    if errs:
        raise ContractErrors(errs)
    resolved = resolve(contract)
    assert contract.model is not None and contract.method is not None
    aggregate = aggregation(contract.method)  # before the model loads: a bad value fails fast
    process = resolved.scope.process
    t0 = time.perf_counter()
    if process is not None and process.kind == "masked_diffusion":
        lm = load(contract.model, options, contract_dir(contract), family="masked_diffusion")
        t1 = time.perf_counter()
        compiled: CompiledContract = compile_diffusion(contract, resolved, lm)
    else:
        lm = load(contract.model, options, contract_dir(contract))
        t1 = time.perf_counter()
        compiled = compile_contract(contract, resolved, lm, strict=strict)
    t2 = time.perf_counter()
    phases = {"load": t1 - t0, "compile": t2 - t1}
    name, params, operator = method_params(compiled, contract.method)
    if name == "external":
        seed = contract.seed if contract.seed is not None else 0
        if scores is None:
            out = external.external_output(contract, compiled, allow_outside_data)
        else:
            vec = external.scores_vector(scores, compiled, contract.method.span)
            external.check_eligible(vec, compiled, contract.method.span, "given to check_map")
            out = external.output(vec, compiled, "check_map")
        phases["attribution"] = time.perf_counter() - t2
        return build_result(contract, resolved, lm, compiled, name, params, None, aggregate, out, seed,
                            "as given by the map", phases)
    _budget(name, params, compiled, contract, max_evaluations)

    seed = contract.seed if contract.seed is not None else 0
    torch.manual_seed(seed)
    t3 = time.perf_counter()
    with float64_forward(lm.model) as precision:
        out = _method_call(name, contract, lambda: methods.run_method(name, compiled.problem, params, seed=seed,
                                                              progress=progress))
    phases["attribution"] = time.perf_counter() - t3
    return build_result(contract, resolved, lm, compiled, name, params, operator, aggregate, out, seed,
                        precision.text(), phases)


def execute_family(contract: m.Contract, options: LoadOptions = LoadOptions(), progress: bool = False,
                   max_evaluations: int | None = None, strict: bool = False
                   ) -> tuple[list[m.Contract], list[AttributionResult]]:
    """Run a map family (``use prompt_conditioned(target = each)``): one member contract per
    generated token ``y[k]`` (``target = k``), each compiled as its own single-target contract
    on one frozen output, computed together where the work can be shared
    (:mod:`scopecheck.engine.family`). Returns the member contracts and their results."""
    if family_param(contract.use) is None:
        raise ContractValidationError("not a map family: state `target = each`", contract.span, rule="engine")
    errs = validate(contract)
    if errs:
        raise ContractErrors(errs)
    assert contract.model is not None and contract.method is not None and contract.use is not None
    aggregate = aggregation(contract.method)
    t0 = time.perf_counter()
    lm = load(contract.model, options, contract_dir(contract))
    t1 = time.perf_counter()

    def member(k: int | str) -> m.Contract:
        from dataclasses import replace

        label = "T" if isinstance(k, str) else str(k)
        return replace(contract, use=member_use(contract.use, k), name=f"{contract.name} [y[{label}]]")

    last = member("T")
    compiled_last = compile_contract(last, resolve(last), lm, strict=strict)
    al = compiled_last.alignment
    outputs = al.role("output")
    frozen = (al.output_text, [t.id for t in outputs] if compiled_last.generated else None)
    members, compiled = [], []
    for k in range(1, len(outputs) + 1):
        mc = member(k)
        members.append(mc)
        compiled.append(compile_contract(mc, resolve(mc), lm, strict=strict, frozen=frozen))
    name, params, operator = method_params(compiled[0], contract.method)
    if name == "external":
        raise ContractValidationError("method `external` reads one map and a map family (target = each) has one "
                                      "per generated token", contract.method.span, rule="map",
                                      expected="a single-target contract (target = k)")
    for mc, c in zip(members, compiled):
        _budget(name, params, c, mc, max_evaluations)
    seed = contract.seed if contract.seed is not None else 0
    t2 = time.perf_counter()
    with float64_forward(lm.model) as precision:
        outs, shared = _method_call(name, contract, lambda: run_family(
            name, [c.problem for c in compiled], params, seed=seed, progress=progress))
    phases = {"load": t1 - t0, "compile": t2 - t1, "attribution": time.perf_counter() - t2}  # the family's
    results = []
    for k, (mc, c, out) in enumerate(zip(members, compiled, outs), 1):
        out.info["family"] = f"y[{k}] of {len(members)}, " + ("forwards shared with the family" if shared
                                                             else "computed on its own")
        results.append(build_result(mc, c.resolved, lm, c, name, params, operator, aggregate, out, seed,
                                    precision.text(), phases))
    return members, results


def build_result(contract: m.Contract, resolved: Resolved, lm: LoadedModel, compiled: CompiledContract, name: str, params: dict[str, Any],
                 operator: str | None, aggregate: str, out: Any, seed: int, precision: str,
                 phases: dict[str, float] | None = None) -> AttributionResult:
    """The checked, reportable result of one method output on one compiled contract (``phases``:
    the wall seconds of loading, compiling and the method, as measured by the caller)."""
    assert contract.method is not None
    scores = out.scores.detach().to("cpu", torch.float64)
    bad = torch.nonzero(~torch.isfinite(scores)).flatten().tolist()
    toks = compiled.alignment.tokens
    if bad:
        where = ", ".join(f"{toks[p].role} {toks[p].text!r} (position {p}: {float(scores[p])})" for p in bad[:5])
        raise ContractValidationError(f"`{name}` produced a non-finite attribution map at {len(bad)} position(s): "
                                      f"{where}", contract.method.span, rule="non-finite",
                                      expected="finite attributions (check the model's weights for NaN/Inf)")
    for key in ("score_input", "score_baseline"):
        v = out.info.get(key)
        if isinstance(v, float) and not math.isfinite(v):
            raise ContractValidationError(f"the score S is not finite ({key} = {v})", contract.method.span,
                                          rule="non-finite", expected="a finite score (check the model's weights)")
    E, C, O = set(compiled.eligible), set(compiled.fixed) | set(compiled.special), set(compiled.targets)
    toks = tuple(TokenScore(t.position, t.text, t.role, t.index, t.position in E, t.position in C,
                            t.position in O, float(scores[t.position])) for t in compiled.alignment.tokens)
    words = None
    if aggregate == "words":
        al = compiled.alignment
        # the tokenizer's pieces (``▁upon``, ``Ġupon``) mark word starts where a token has no offset
        pieces = [str(lm.tokenizer.convert_ids_to_tokens(int(t.id))) if t.role in TEXT_ROLES else t.text
                  for t in al.tokens]
        roles, spans, texts, pieces = alignment_inputs(al, pieces)
        words = word_map(roles, spans, texts, pieces, [t.score for t in toks], [t.eligible for t in toks],
                         [t.target for t in toks])
    sc = resolved.scope
    scope = {"score": fmt_score(sc.score), "fixed": fmt_features(sc.fixed), "explain": fmt_selector(sc.explain),
             "process": sc.process.kind + fmt_params(sc.process.params),
             "eligible": fmt_features(sc.eligible)}
    full = {k: v for k, v in out.info.items()}
    notes = [*compiled.warnings]
    for note in (operator_note(name, params, contract.method), ig_note(full) if name == "integrated_gradients"
                 else None, heta_note(full) if name == "heta" else None):
        if note:
            notes.append(note)
    notes.extend(n for n in fast_path_notes(compiled.problem) if n not in notes)
    chain = compiled.chain
    diffusion = None
    if chain is not None:
        tok = lm.tokenizer
        diffusion = {**compiled.info, "chain": chain.to_json(lambda i: tok.convert_ids_to_tokens(int(i)))}
    return AttributionResult(
        name=contract.name, path=contract.span.path, line=contract.span.line,
        contract_text=format_document(contract), kind=resolved.kind or "custom", scope=scope,
        origin=dict(resolved.origin), method=name, method_params=params, operator=operator, tokens=toks,
        output_ids=(tuple(chain.output) if chain is not None
                    else tuple(t.id for t in compiled.alignment.role("output"))),
        generated=compiled.generated,
        score_input=_f(full.get("score_input")), score_baseline=_f(full.get("score_baseline")), info=full,
        model=lm.identity, device=lm.device, dtype=lm.dtype, seed=seed,
        special=tuple(compiled.alignment.tokens[p].text for p in compiled.special), compiled=compiled,
        diffusion=diffusion, aggregate=aggregate, words=words, warnings=tuple(notes), precision=precision,
        quantization=getattr(lm, "quantization", None), model_facts=_model_facts(lm),
        phases=dict(phases or {}))


def _model_facts(lm: LoadedModel) -> dict[str, Any] | None:
    """The model's provenance; None (never a failed run) when its files cannot be read."""
    try:
        return model_facts(lm)
    except OSError:
        return None


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def _one_contract(source: m.Contract | str | Path, name: str | None) -> m.Contract:
    """The one contract of ``source`` (named ``name`` when given), or the positioned error."""
    contracts = load_contracts(source)
    if name is not None:
        contracts = [c for c in contracts if c.name == name]
    if len(contracts) != 1:
        found = [c.name for c in load_contracts(source)]
        where = Span(str(source)) if is_contract_path(source) else None
        if name is not None and not contracts:
            raise unknown_name("contract", name, found, where)
        raise ContractValidationError(
            f"expected exactly one contract{f' named {name!r}' if name else ''}; found: "
            f"{', '.join(map(repr, found)) or 'none'}", where, rule="unknown-name",
            hint="pass name=... to pick one" if len(found) > 1 else None)
    return contracts[0]


def run(source: m.Contract | str | Path, *, name: str | None = None, device: str = "auto", dtype: str = "float32",
        allow_pickle: bool = False, trust_remote_code: bool = False, progress: bool = False) -> AttributionResult:
    """Run one contract: a spec, contract text, or a ``.scope`` path (``name`` picks one of several)."""
    opts = LoadOptions(device, dtype, allow_pickle, trust_remote_code)
    return execute(_one_contract(source, name), opts, progress)


def check_map(source: m.Contract | str | Path, scores: Any, *, name: str | None = None, device: str = "auto",
              dtype: str = "float32", allow_pickle: bool = False, trust_remote_code: bool = False) -> AttributionResult:
    """Check a map computed elsewhere under a contract (a spec, contract text or a ``.scope`` path;
    ``name`` picks one of several): ``scores`` is a 1-D list, NumPy array or torch tensor with one
    score per sequence position (``L``, as ``AttributionResult.tokens``) or one per eligible token
    in sequence order (``|E|``). The contract's ``method`` statement is replaced by ``external``; the
    result is a run's :class:`AttributionResult`, for every check and expectation."""
    from dataclasses import replace

    c = _one_contract(source, name)
    span = c.method.span if c.method is not None else c.span
    c = replace(c, method=m.Method("external", (m.Param("map", m.Text("check_map"), span),), span))
    return execute(c, LoadOptions(device, dtype, allow_pickle, trust_remote_code), scores=scores)


def attribute(*, model: str, prompt: str, output: str, contract: str = "prompt_conditioned",
              method: str = "integrated_gradients", target: str | int | None = None, seed: int = 0,
              device: str = "auto", dtype: str = "float32", **method_params: Any) -> AttributionResult:
    """Keyword form of a contract for tests written in Python::

        attribute(model="reference:translate-ar", prompt="Translate to French: The dog is black.",
                  output="Le chien est noir.", contract="prompt_conditioned", target="noir")

    A contract error points at the caller's call (file and line, the keyword underlined) and names
    the keyword arguments it is about (``attribute(target='dog'): 'dog' does not occur in the
    output text``), not a line of the contract text built here.
    """
    import json

    use_params = []
    if target is not None:
        use_params.append(m.Param("target", m.Text(target) if isinstance(target, str) else target))
    mref = (f"reference:{model.split(':', 1)[1]}" if model.startswith("reference:")
            else f"hub:{json.dumps(model[4:])}" if model.startswith("hub:") else json.dumps(model))
    mp = tuple(m.Param(k, m.Ident(v) if isinstance(v, str) else v) for k, v in method_params.items())
    lines = [f'contract "attribute" {{', f" model {mref}", f" prompt {json.dumps(prompt)}",
             f" output {json.dumps(output)}", f" use {contract}{fmt_params(tuple(use_params))}",
             f" method {method}{fmt_params(mp)}", f" seed {seed}", "}"]
    values = dict(model=model, prompt=prompt, output=output, contract=contract, target=target, method=method,
                  seed=seed, **method_params)
    # generated line -> [(first column, keyword)]: a keyword owns its columns up to the next one's
    owners: dict[int, list[tuple[int, str]]] = {2: [(1, "model")], 3: [(1, "prompt")], 4: [(1, "output")],
                                                5: [(1, "contract")], 6: [(1, "method")], 7: [(1, "seed")]}
    for line, params in ((5, use_params), (6, mp)):
        for p in params:
            owners[line].append((lines[line - 1].index(f"{p.key} = ") + 1, p.key))
    try:
        return run("\n".join(lines) + "\n", device=device, dtype=dtype)
    except ContractError as exc:
        raise _at_call(exc, owners, values) from None


def _caller() -> tuple[str, int] | None:
    """File and line of the first frame outside scopecheck (the test calling ``attribute``)."""
    import sys

    f = sys._getframe(1)
    while f is not None and (f.f_globals.get("__name__") or "").split(".")[0] == "scopecheck":
        f = f.f_back
    return (f.f_code.co_filename, f.f_lineno) if f is not None else None


def _at_call(exc: ContractError, owners: dict[int, list[tuple[int, str]]], values: dict[str, Any]) -> ContractError:
    """``exc`` (or each error of a :class:`ContractErrors`) re-positioned at the caller's call."""
    import copy
    import linecache
    import re

    if isinstance(exc, ContractErrors):
        return ContractErrors([_at_call(e, owners, values) for e in exc.errors])
    sp = exc.span
    keys: list[str] = []
    if sp.path == "<string>" and sp.line in owners:
        cols = owners[sp.line]
        if len(cols) > 1 and sp.column < cols[1][0]:   # the whole statement (a standard's selectors): all of it
            keys = [k for _, k in cols]
        else:
            keys = [[k for c, k in cols if c <= sp.column][-1]]
    args = ", ".join(f"{k}={values[k]!r}" for k in keys if k in values)
    new = copy.copy(exc)
    new.message = f"attribute({args}): {exc.message}"
    new.args = (new.message,)
    where = _caller()
    if where is None:
        new.span, new.source = Span("scopecheck.attribute", 1, 1, 1, 2), None
        return new
    path, line = where
    source = linecache.getlines(path)
    new.span, new.source = Span(path, line, 1, line, 1), "".join(source) or None
    for i in range(line, min(line + 30, len(source) + 1)):   # the keyword in the call, on this or a later line
        hit = re.search(rf"\b{re.escape(keys[-1])}\s*=", source[i - 1]) if keys else None
        if hit:                                                # the most specific keyword: the last named
            new.span = Span(path, i, hit.start() + 1, i, hit.start() + 1 + len(keys[-1]))
            break
    else:
        new.span = Span(path, line, 1, line, len(source[line - 1]) if line <= len(source) else 2)
    return new
