"""Agreement checks: with causal tokens known by construction, with a distractor split, and
with another method or contract on the same input.

* ground_truth: ``causal`` = prompt indices ``x[i]`` (1-based ints) or selector texts
  (``'x["black"]'``, ``'x.fact'``; a bare word ``black`` means ``x["black"]``). Over the
  eligible ranking (signed, highest first): ``precision = |top-k ∩ causal| / k``,
  ``top1 = [top-1 ∈ causal]``, and DSA (seed 004) with the causal tokens as evidence and every
  other eligible token as distractor: ``dsa = sum_{causal} |a_i| / Z − sum_{other} |a_j| / Z``,
  ``Z = sum_E |a|`` (mass normalised to one, so ``dsa ∈ [−1, 1]``).
* dsa (seed 004, Dependent Sentence Attribution): ``evidence`` and ``distractor`` selectors;
  ``dsa = (sum_{evidence ∩ E} |a_i| − sum_{distractor ∩ E} |a_j|) / sum_E |a|``; eligible tokens in
  neither set count only in the normaliser.
* agreement: ``method`` reruns another method on the same compiled problem
  (``run_method``, its operator defaulted as the engine does); ``contract`` executes another
  standard contract on the same model, prompt and frozen output (``use`` replaced, the stated
  scope dropped, the output given as its frozen text so nothing is regenerated). Spearman and
  Kendall (``scipy.stats``) over the eligible positions common to both maps.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from scopecheck.checks.context import setup
from scopecheck.checks.params import as_int, plain
from scopecheck.checks.result import CheckResult
from scopecheck.checks.sanity import rank_correlations
from scopecheck.engine.methods import resolve_method, run_method
from scopecheck.engine.models import LoadOptions
from scopecheck.engine.run import execute, method_params
from scopecheck.spec import model as m
from scopecheck.spec.registry import METHODS
from scopecheck.spec.standard import STANDARD

if TYPE_CHECKING:
    from scopecheck.engine.result import AttributionResult


def _selector_positions(result: AttributionResult, sel: Any, name: str) -> list[int]:
    """Positions of a selector (spec Selector or text), a prompt index, or a bare word."""
    if isinstance(sel, bool):
        raise ValueError(f"{name}: {sel!r} is not a position or selector")
    if isinstance(sel, int):
        prompt = [t for t in result.compiled.alignment.tokens if t.role == "prompt"]
        if not 1 <= sel <= len(prompt):
            raise ValueError(f"{name}: prompt index x[{sel}] out of range 1..{len(prompt)}")
        return [prompt[sel - 1].position]
    if isinstance(sel, str):
        text = sel.strip()
        try:
            return list(result.positions(text))
        except Exception:
            return list(result.positions(f"x[{json.dumps(text)}]"))
    return list(result.positions(sel))


def _positions(result: AttributionResult, value: Any, name: str) -> list[int]:
    value = plain(value)
    items = value if isinstance(value, list) else [value]
    out: list[int] = []
    for it in items:
        for p in _selector_positions(result, it, name):
            if p not in out:
                out.append(p)
    return out


def ground_truth(result: AttributionResult, params: Mapping[str, object] | None = None, *,
                 ranking: Sequence[int] | None = None, seed: int = 0) -> CheckResult:
    """Agreement with causal tokens known by construction: top-k ``precision``, ``top1`` and DSA
    (seed 004) with the causal tokens as evidence and every other eligible token as distractor,
    absolute mass normalised to one over E."""
    ctx = setup("ground_truth", result, params, ranking=ranking, seed=seed)
    if ctx.params.get("causal") is None:
        raise ValueError("ground_truth needs `causal`: the prompt positions (x[i], 1-based) or selector texts of "
                         "the tokens that cause the output")
    causal = _positions(result, ctx.params["causal"], "ground_truth")
    E = list(ctx.compiled.eligible)
    eligible_causal = [p for p in causal if p in set(E)]
    k = min(as_int("ground_truth", "k", ctx.params["k"]), len(ctx.ranking))
    top = ctx.ranking[:k]
    precision = sum(p in set(causal) for p in top) / k
    top1 = float(ctx.ranking[0] in set(causal))
    mass = ctx.values.abs()
    z = float(mass[E].sum())
    note = ""
    if z > 0:
        ev = float(mass[eligible_causal].sum()) if eligible_causal else 0.0
        dsa = (ev - (z - ev)) / z
    else:
        dsa = 0.0
        note = "the map is zero on every eligible token: dsa = 0"
    if len(eligible_causal) < len(causal):
        note = (note + "; " if note else "") + (
            f"causal positions {sorted(set(causal) - set(E))} are not eligible and can receive no attribution")
    return ctx.make({"precision": precision, "dsa": dsa, "top1": top1},
                    curve=[float(ctx.values[p]) for p in ctx.ranking],
                    note=note, extra={"causal": causal, "top": top, "ranking": list(ctx.ranking)}, operator=None, k=k)


def dsa(result: AttributionResult, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
        seed: int = 0) -> CheckResult:
    """Dependent Sentence Attribution (seed 004): ``(mass(evidence) − mass(distractor)) / mass(E)``
    with absolute attribution, restricted to eligible tokens; in ``[−1, 1]``."""
    ctx = setup("dsa", result, params, ranking=ranking, seed=seed)
    for key in ("evidence", "distractor"):
        if ctx.params.get(key) is None:
            raise ValueError(f"dsa needs `{key}`: a selector such as x.fact / x.story")
    E = set(ctx.compiled.eligible)
    ev = [p for p in _positions(result, ctx.params["evidence"], "dsa") if p in E]
    di = [p for p in _positions(result, ctx.params["distractor"], "dsa") if p in E]
    both = sorted(set(ev) & set(di))
    if both:
        raise ValueError(f"dsa: evidence and distractor overlap on positions {both}")
    mass = ctx.values.abs()
    z = float(mass[sorted(E)].sum())
    note = ""
    if z > 0:
        value = (float(mass[ev].sum()) - float(mass[di].sum())) / z
        parts = (float(mass[ev].sum()) / z, float(mass[di].sum()) / z)
    else:
        value, parts, note = 0.0, (0.0, 0.0), "the map is zero on every eligible token: dsa = 0"
    return ctx.make({"value": value}, curve=parts, note=note,
                    extra={"evidence": ev, "distractor": di, "evidence_mass": parts[0], "distractor_mass": parts[1]},
                    operator=None)


# --------------------------------------------------------------------------- agreement


def _other_method(result: AttributionResult, name: str) -> tuple[torch.Tensor, dict[str, Any], str | None, str]:
    canonical = resolve_method(name)
    info = METHODS[canonical]
    if result.kind not in info.supports and result.kind != "custom":
        raise ValueError(f"agreement: method {canonical} does not support {result.kind} contracts "
                         f"(it supports {', '.join(info.supports)})")
    canonical, mparams, operator = method_params(result.compiled, m.Method(canonical))
    out = run_method(canonical, result.compiled.problem, mparams, seed=result.seed)
    return out.scores.detach().to("cpu", torch.float64), mparams, operator, canonical


def _other_contract(result: AttributionResult, name: str) -> tuple[Any, str]:
    if name not in STANDARD:
        raise KeyError(f"agreement: unknown standard contract {name!r}; known: {', '.join(STANDARD)}")
    c = result.compiled.contract
    keep = STANDARD[name].params
    uparams = tuple(p for p in (c.use.params if c.use is not None else ()) if p.key in keep)
    if c.use is None and "target" in keep and len(result.compiled.targets) == 1:
        t = result.compiled.alignment.tokens[result.compiled.targets[0]]
        uparams = (m.Param("target", t.index),)
    out = m.Output(text=result.compiled.alignment.output_text)
    other = dataclasses.replace(c, use=m.Use(name, uparams), scope=m.Scope(), output=out, expects=())
    device = result.device
    opts = LoadOptions(device=device, dtype=result.dtype)
    return execute(other, opts), name


def agreement(result: AttributionResult, params: Mapping[str, object] | None = None, *,
              ranking: Sequence[int] | None = None, seed: int = 0) -> CheckResult:
    """Rank agreement with another method (same compiled problem) or another standard contract
    (same model, prompt and frozen output): Spearman and Kendall (scipy.stats) over the
    eligible positions common to both maps. Higher means more agreement."""
    ctx = setup("agreement", result, params, ranking=ranking, seed=seed)
    method, contract = ctx.params.get("method"), ctx.params.get("contract")
    if (method is None) == (contract is None):
        raise ValueError("agreement needs exactly one of `method` (another attribution method) or `contract` "
                         "(another standard contract)")
    note = ""
    mine_E = list(ctx.compiled.eligible)
    cfg: dict[str, Any] = {}
    if method is not None:
        other, mparams, operator, canonical = _other_method(result, str(method))
        common = mine_E
        cfg.update(other_method=canonical, other_params=mparams, other_operator=operator, other_contract=result.kind)
        theirs_map = other
    else:
        res, name = _other_contract(result, str(contract))
        theirs_map = torch.tensor(res.scores, dtype=torch.float64)
        same_ids = list(res.compiled.problem.ids.tolist()) == list(ctx.problem.ids.tolist())
        other_E = set(res.compiled.eligible)
        common = [p for p in mine_E if p in other_E]
        if not same_ids:
            prompt = {t.position for t in ctx.compiled.alignment.tokens if t.role == "prompt"}
            common = [p for p in common if p in prompt]
            note = "the other contract's token sequence differs after the prompt: compared on prompt tokens only"
        cfg.update(other_contract=res.kind, other_method=res.method, other_params=res.method_params)
    mine = [float(ctx.values[p]) for p in common]
    theirs = [float(theirs_map[p]) for p in common]
    rho, tau, why = rank_correlations(mine, theirs)
    note = "; ".join(x for x in (note, why) if x)
    return ctx.make({"spearman": rho, "kendall": tau}, curve=theirs, note=note,
                    extra={"positions": common, "map": mine, "other_map": theirs}, operator=None, **cfg)


__all__ = ["agreement", "dsa", "ground_truth"]
