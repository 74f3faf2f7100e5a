"""The check context (:class:`Ctx`): a check's compiled problem, protocol, perturbable features,
operator and map, and the scoring of its drop masks through the contract's row cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from scopecheck.checks import rowcache
from scopecheck.checks.catalog import CHECKS, PERTURB_OWNER, PROTOCOL_OWNER, PROTOCOLS, CheckInfo, Protocol
from scopecheck.checks.params import as_int, check_params
from scopecheck.checks.result import CheckResult
from scopecheck.checks.rowcache import current_work, mask_keys, score_cache, tick
from scopecheck.errors import ContractError
from scopecheck.runtime.batching import map_batches
from scopecheck.spec.vocabulary import fallback_operator

if TYPE_CHECKING:
    from scopecheck.engine.compiled import CompiledContract

Tensor = torch.Tensor

#: Model evaluations per forward batch when ``batch_size`` is given by nobody: ``None`` lets
#: ``map_batches`` choose from the free memory (halving on out-of-memory).
DEFAULT_BATCH: int | None = None


@dataclass
class Ctx:
    """Everything a check needs: the compiled problem, its protocol, features and map."""

    name: str
    info: CheckInfo
    result: Any
    params: dict[str, Any]
    protocol: Protocol
    kind: str
    perturb: tuple[str, ...]
    features: list[int]            # perturbable eligible positions (F)
    operator: str | None
    batch_size: int | None         # the user's, or None: chosen from the free memory
    seed: int
    values: Tensor                 # (L,) float64 map (re-assigned by rank when a ranking is given)
    ranking: list[int]             # F, most important first
    ranking_given: bool
    _s_x: float | None = field(default=None, repr=False)
    #: per perturbed input regenerated for the check's own quantity: did its output change?
    changed_flags: list[bool] = field(default_factory=list, repr=False)
    #: where the flags of the evaluations now running go (``None``: not counted)
    flags_into: list[bool] | None = field(default=None, repr=False)

    @property
    def compiled(self) -> CompiledContract:
        return self.result.compiled

    @property
    def problem(self) -> Any:
        return self.result.compiled.problem

    @property
    def E(self) -> int:
        return len(self.features)

    # ---- evaluation (rescore protocol)

    @property
    def evaluator(self) -> Any:
        """The score a perturbed input is measured with: the problem's objective under the
        ``rescore`` protocol; under the diffusion protocols the compiled chain objective, which
        first regenerates (``regenerate``), continues the chain (``continue_chain``) or runs
        it to completion (``run_chain``) and then measures."""
        if self.protocol.then != "rescore":
            obj = self.compiled.check_objective
            if obj is None:
                raise ContractError(f"{self.name}: the {self.protocol.then} protocol needs a recorded diffusion chain",
                                    rule="protocol")
            return obj
        return self.problem.objective

    def row_cache(self) -> dict[tuple, Any] | None:
        """The contract's row cache (``rowcache.score_cache``), ``None`` when nothing is shared
        (``rowcache.SCORE_CACHE`` off, or a check with no operator)."""
        if not rowcache.SCORE_CACHE or self.operator is None:
            return None
        return score_cache(self.problem)

    def row_keys(self, drop: Tensor) -> list[tuple[str, str, bytes]]:
        """The row-cache key of every row of ``drop`` ``(N, L)`` (only eligible positions count)."""
        drop = drop.to("cpu", torch.bool) & self.problem.eligible.to("cpu").unsqueeze(0)
        return [(self.protocol.then, str(self.operator), k) for k in mask_keys(drop)]

    def _evaluate(self, drop: Tensor) -> tuple[Tensor, list[bool | None]]:
        """``S`` of every row of ``drop`` ``(N, L)``, batched by ``map_batches`` (``batch_size``
        rows per forward when the user set it, else as many as memory allows) -> ``(N,)`` float64,
        and per row whether the regenerated output changed (``None`` under ``rescore``)."""
        pb = self.problem
        f = self.evaluator
        dev = pb.embeds.device
        work = current_work()
        flags = getattr(f, "changed", None) if self.protocol.then != "rescore" else None

        @torch.no_grad()
        def chunk(sl: slice) -> tuple[Tensor, list[bool | None]]:
            n0 = len(flags) if flags is not None else 0
            embeds, keep = pb.replace(self.operator, drop[sl].to(dev))
            s = f(embeds, keep).detach().to("cpu", torch.float64)
            rows = sl.stop - sl.start
            new: list[bool | None] = [None] * rows
            if flags is not None and len(flags) - n0 == rows:          # one flag per row, in order
                new = [bool(c) for c in flags[n0:]]
            if work is not None:
                work.calls += 1
                work.scored += rows
            tick(rows)
            return s, new

        out = map_batches(chunk, int(drop.shape[0]), self.batch_size, problem=pb,
                          kind="forward" if self.protocol.then == "rescore" else f"chain:{self.protocol.then}",
                          desc=f"check {self.name}")
        if not out:
            return torch.zeros(0, dtype=torch.float64), []
        return torch.cat([o[0] for o in out]), [c for o in out for c in o[1]]

    @torch.no_grad()
    def score_drops(self, drop: Tensor, *, tick_hits: bool = False) -> Tensor:
        """``S`` for each drop mask ``(N, L)`` bool -> ``(N,)`` float64, batched. Only eligible
        positions are ever perturbed (``problem.replace`` refuses the others). Each distinct mask
        is scored once per compiled problem (``rowcache.SCORE_CACHE``): rows seen by an earlier call of any
        check on this problem cost no model call. Under the diffusion protocols the flags of the
        perturbed rows (did the regenerated output change?) go to the running quantity's list.
        Evaluated rows advance a planned progress bar; ``tick_hits``: so do the cached ones (a
        plan's own scoring call: the check then re-reads its planned rows without counting them)."""
        assert self.operator is not None
        pb = self.problem
        N = int(drop.shape[0])
        if N == 0:
            return torch.zeros(0, dtype=torch.float64)
        drop = drop.to("cpu", torch.bool) & pb.eligible.to("cpu").unsqueeze(0)
        perturbed = drop.any(-1).tolist()
        cache = self.row_cache()
        if cache is None:
            s, flags = self._evaluate(drop)
        else:
            keys = self.row_keys(drop)
            todo: dict[tuple, int] = {}
            for i, k in enumerate(keys):
                if k not in cache and k not in todo:
                    todo[k] = i
            if todo:
                vals, new = self._evaluate(drop[list(todo.values())])
                for k, v, c in zip(todo, vals.tolist(), new):
                    cache[k] = (v, c)
            if tick_hits:
                tick(N - len(todo))                              # planned rows served by the cache
            s = torch.tensor([cache[k][0] for k in keys], dtype=torch.float64)
            flags = [cache[k][1] for k in keys]
        if self.flags_into is not None and self.protocol.then != "rescore":
            self.flags_into.extend(bool(c) for c, q in zip(flags, perturbed) if q and c is not None)
        return s

    def drop_rows(self, sets: Sequence[Sequence[int]]) -> Tensor:
        """Drop masks ``(N, L)`` from lists of positions."""
        L = self.problem.length
        drop = np.zeros((len(sets), L), dtype=bool)               # filled in numpy: a torch index per set costs more
        for r, s in enumerate(sets):
            if len(s):
                drop[r, list(s)] = True
        return torch.from_numpy(drop)

    def score_sets(self, sets: Sequence[Sequence[int]]) -> Tensor:
        return self.score_drops(self.drop_rows(sets))

    def drop_from_masks(self, masks: Tensor) -> Tensor:
        """Feature masks ``(N, E)`` bool (True = perturbed) -> drop masks ``(N, L)``."""
        drop = torch.zeros(masks.shape[0], self.problem.length, dtype=torch.bool)
        drop[:, self.features] = masks
        return drop

    @property
    def s_x(self) -> float:
        """``S(x)``, the unperturbed input through the protocol's evaluator (once per contract)."""
        if self._s_x is None:
            cache = self.row_cache()
            key = ("s_x", self.protocol.then)
            if cache is not None and key in cache:
                self._s_x = cache[key]
            else:
                f = self.evaluator
                with torch.no_grad():
                    self._s_x = float(f(self.problem.embeds.unsqueeze(0)).item())
                work = current_work()
                if work is not None:
                    work.calls += 1
                if cache is not None:
                    cache[key] = self._s_x
        return self._s_x

    def changed_rate(self) -> float:
        """Share of the check's perturbed inputs whose regenerated output differs from the
        original ``y``: the inputs its own quantity is computed from (a curve's perturbed points,
        not the NAOPC bound search, whose flags ``_curve_check`` reports apart; never an
        unperturbed input such as the curve's ``k = 0`` point). 0 under ``rescore``: the frozen
        output is rescored, never regenerated."""
        if self.protocol.then == "rescore":
            return 0.0
        flags = self.changed_flags
        return float(sum(flags) / len(flags)) if flags else 0.0

    def s_empty(self) -> float:
        """``S(x_∅)``: every feature of ``F`` perturbed."""
        return float(self.score_sets([self.features])[0])

    # ---- output

    def config(self, **extra: Any) -> dict[str, Any]:
        r = self.result
        cfg: dict[str, Any] = {
            "check": self.name, "operator": self.operator, "protocol": self.protocol.then,
            "contract": self.kind, "measure": self.protocol.measure,
            "perturb": list(self.perturb), "features": self.E,
            "k": None, "steps": None, "samples": None, "seed": self.seed,
            "ranking": "given" if self.ranking_given else "map",
            "method": r.method, "model": r.model, "device": r.device, "dtype": r.dtype,
            "batch_size": self.batch_size if self.batch_size is not None else "auto",
        }
        diffusion = getattr(r, "diffusion", None)
        if diffusion:
            cfg["chain"] = {k: diffusion.get(k) for k in ("sampler", "steps", "length", "blocks", "temperature",
                                                           "sampler_seed", "chain_mode", "estimator", "samples",
                                                           "adapter")}
            if diffusion.get("block") is not None:          # a block-causal denoiser (slots per block)
                cfg["chain"]["block"] = diffusion["block"]
        cfg.update(extra)
        return cfg

    def make(self, fields: Mapping[str, float], *, curve: Sequence[float] = (), passed: bool | None = None,
             note: str = "", extra: Mapping[str, Any] | None = None, skip: Sequence[str] = (),
             **config: Any) -> CheckResult:
        """The check's result; ``skip``: declared fields not computed because nothing asks for them."""
        declared = {k: f for k, f in self.info.fields.items() if k not in skip}
        if "changed_rate" in declared and "changed_rate" not in fields:
            fields = {**fields, "changed_rate": self.changed_rate()}
        missing = set(declared) - set(fields)
        assert not missing, f"{self.name}: fields {missing} not computed"
        return CheckResult(
            name=self.name,
            fields={k: float(fields[k]) for k in declared},
            ranges={k: (f.low, f.high) for k, f in declared.items()},
            better={k: f.better for k, f in declared.items()},
            config=self.config(**config),
            curve=tuple(float(c) for c in curve),
            passed=passed,
            note=note,
            extra=dict(extra or {}),
        )


def protocol_of(result: Any) -> tuple[str, Protocol]:
    """The contract kind and the protocol its faithfulness checks must use."""
    kind = result.kind
    if kind in PROTOCOLS:
        return kind, PROTOCOLS[kind]
    process = None
    try:
        process = result.compiled.resolved.scope.process.kind
    except AttributeError:
        pass
    if process == "masked_diffusion":
        explain = result.compiled.resolved.scope.explain
        base = "state_level" if explain is not None and explain.space == "z" else "prompt_to_output"
        return kind, PROTOCOLS[base]
    if process in (None, "autoregressive", "classifier"):
        # a custom contract compiled by the autoregressive engine: rescore the frozen output
        return kind, Protocol(kind, ("prompt", "prefix"), "rescore", "change in S, the frozen output rescored")
    raise ContractError(f"no evaluation protocol for a {process} contract in this engine", rule="protocol")


def _groups(name: str, kind: str, protocol: Protocol, requested: Any) -> tuple[str, ...]:
    if requested is None:
        return protocol.perturb
    groups = tuple(str(g).strip() for g in (requested if isinstance(requested, list) else str(requested).split(",")))
    for g in groups:
        if g not in PERTURB_OWNER:
            raise ValueError(f"{name}: perturb={g!r} is not a feature group; known: {', '.join(PERTURB_OWNER)}")
        if g not in protocol.perturb:
            raise ContractError(
                f"{name}: perturbing `{g}` would test the {PERTURB_OWNER[g]} contract; under {kind} only "
                f"{' and '.join(protocol.perturb)} may be perturbed", rule="protocol",
                expected=f"perturb = {' | '.join(protocol.perturb)}")
    return groups


def _protocol_param(name: str, kind: str, protocol: Protocol, requested: Any) -> None:
    if requested is None or str(requested) == protocol.then:
        return
    req = str(requested)
    if req not in PROTOCOL_OWNER:
        raise ValueError(f"{name}: protocol={req!r} unknown; known: {', '.join(PROTOCOL_OWNER)}")
    raise ContractError(
        f"{name}: protocol `{req}` would test the {PROTOCOL_OWNER[req]} contract, not {kind}; {kind} is evaluated "
        f"by `{protocol.then}` ({protocol.measure})", rule="protocol", expected=f"protocol = {protocol.then}")


def _features(result: Any, groups: tuple[str, ...]) -> list[int]:
    compiled = result.compiled
    roles = {"prompt": ("prompt",), "prefix": ("output",), "states": ("output", "pad"), "stages": ("stage",)}
    want = {r for g in groups for r in roles.get(g, ())}
    toks = compiled.alignment.tokens
    return [p for p in compiled.eligible if toks[p].role in want]


def _operator(result: Any, requested: Any) -> str:
    problem = result.compiled.problem
    available = set(problem.operators) | {"delete"}
    if requested is not None:
        op = str(requested)
        if op not in available:
            raise KeyError(f"perturbation operator {op!r} is not available for {result.model}; available: "
                           f"{', '.join(sorted(available))}")
        return op
    if result.operator is not None and result.operator in available:
        return str(result.operator)
    return fallback_operator(available)   # "delete" is always available: never a LookupError


def map_order(values: Tensor, positions: Sequence[int]) -> list[int]:
    """Positions by signed value, highest first, ties by position."""
    vals = values.tolist()                                         # one conversion, not one per position
    return sorted(positions, key=lambda p: (-float(vals[p]), p))


def setup(name: str, result: Any, params: Mapping[str, object] | None, *, ranking: Sequence[int] | None = None,
          seed: int = 0) -> Ctx:
    """Validate ``params`` and build the check context (protocol, operator, features, map)."""
    info = CHECKS[name]
    p = check_params(name, params)
    compiled = result.compiled
    if compiled is None:
        raise ValueError(f"{name}: the result carries no compiled problem; run the contract with scopecheck.run")
    kind, protocol = protocol_of(result)
    if "protocol" in info.params:
        _protocol_param(name, kind, protocol, p.get("protocol"))
    groups = _groups(name, kind, protocol, p.get("perturb")) if "perturb" in info.params else protocol.perturb
    features = _features(result, groups) if "perturb" in info.params else list(compiled.eligible)
    if not features:
        raise ValueError(f"{name}: no eligible feature in the perturbed group(s) {', '.join(groups)}")
    operator = _operator(result, p.get("operator"))
    given = p.get("batch_size", DEFAULT_BATCH)
    batch = None if given is None else as_int(name, "batch_size", given)
    base = torch.tensor(result.scores, dtype=torch.float64)
    own = map_order(base, features)
    values = base.clone()
    if ranking is not None:
        eligible = set(compiled.eligible)
        given = [int(r) for r in ranking]
        bad = [r for r in given if r not in eligible]
        if bad:
            raise ValueError(f"{name}: ranking names non-eligible positions {bad}; eligible: {sorted(eligible)}")
        if len(set(given)) != len(given):
            raise ValueError(f"{name}: ranking repeats positions")
        fset = set(features)
        given = [r for r in given if r in fset]
        given_set = set(given)
        order = given + [q for q in own if q not in given_set]
        vals_l = base.tolist()
        sorted_vals = sorted((float(vals_l[q]) for q in features), reverse=True)
        for q, v in zip(order, sorted_vals):
            vals_l[q] = v
        values = torch.tensor(vals_l, dtype=torch.float64)
    else:
        order = own
    ctx = Ctx(name, info, result, p, protocol, kind, tuple(groups), list(features), operator, batch, int(seed),
              values, order, ranking is not None)
    ctx.flags_into = ctx.changed_flags
    return ctx


__all__ = ["DEFAULT_BATCH", "Ctx", "map_order", "protocol_of", "setup"]
