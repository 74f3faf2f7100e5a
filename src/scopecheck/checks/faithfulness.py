"""Faithfulness checks, run by the protocol the contract requires (DESIGN section 4; seed 000, section 5).

Every check is ``fn(result, params, *, ranking=None, seed=0) -> CheckResult``. All current
contracts (classifier and the autoregressive ones) use the ``rescore`` protocol: eligible
positions only are perturbed, through :meth:`AttributionProblem.replace` (which refuses
anything outside E), and the *frozen* output is rescored with ``problem.objective``. Nothing
here ever calls ``model.generate``: under ``span_prompt`` the original ``y[1:T]`` is rescored,
never regenerated (a regenerating evaluation would test ``prompt_to_output``).

Notation. ``F`` = the perturbable features (eligible positions, restricted to the requested
``perturb`` group), ``E = |F|``; ``S`` = the contract's score (the objective: a log-prob, a
span log-prob, a logit...) in its own units, never re-normalised; ``S(x \\ A)`` = S with the
features in ``A`` replaced by the operator (``pad``/``mask``/``unk``/``zero``/``mean``) or
removed (``delete``). The map's ranking orders ``F`` by signed attribution, highest first,
ties by position (as :meth:`AttributionResult.ranking`). A ``ranking`` argument overrides it
(a list of eligible positions, most important first; features it omits follow in the map's
order); the map's *values* are then re-assigned by rank (the i-th largest value goes to the
i-th ranked position), so value-based checks (Soft-NC/NS, infidelity, DSA) see the same
value distribution in the new order. This is how ``random`` baselines and "deliberately
wrong map" tests are run.

Definitions (each function's docstring repeats its own):

* deletion: curve ``S(x \\ top-k)`` for ``k`` on the grid (every ``k = 0..E``, or ``steps``
  evenly spaced counts ``round(j E / steps)``, ``j = 0..steps``); ``aopc = mean_k [S(x) −
  S(x \\ top-k)]`` with ``k = 0`` included (Samek et al. 2017: ``1/(L+1) sum_{k=0}^{L}``);
  ``auc`` = trapezoid of the raw ``S`` curve over the fraction removed ``k/E``;
  ``naopc = (aopc − lower) / (upper − lower)`` (Edin et al. 2025) where upper/lower are the
  max/min AOPC over *all* orderings of ``F`` on the same grid: exact (dynamic programming over
  all ``2^E`` subsets, equivalent to exhaustive search over the ``E!`` orderings) when
  ``E <= EXHAUSTIVE_MAX`` (8), else approximated by beam search of width ``BEAM_WIDTH`` (5), as
  Edin et al. do for long inputs; approximate bounds are widened to include the map's own
  AOPC, so ``naopc`` stays in ``[0, 1]``; ``config['naopc_bounds']`` says which was used.
* insertion: from ``x_∅`` (all of ``F`` perturbed) insert the top-k: curve ``S(x_∅ + top-k)``;
  ``aopc = mean_k [S(x_∅ + top-k) − S(x_∅)]``; ``auc`` trapezoid over fraction inserted;
  ``naopc`` as above on the insertion gains.
* comprehensiveness ``= S(x) − S(x \\ top-k)``; sufficiency ``= S(x) − S(top-k only)``
  (DeYoung et al. 2020, ERASER), ``k`` a fraction of ``E`` (``ceil(k E)``, at least 1) or a count.
* soft_nc / soft_ns (Zhao & Aletras 2023, as ReAGent adapts them to generation): importance
  normalised to ``α ∈ [0, 1]`` by min–max over ``F``; ``samples`` Bernoulli token masks;
  Soft-NC drops feature ``i`` with probability ``α_i`` (keeps with ``1 − α_i``), Soft-NS keeps it
  with probability ``α_i``. With ``d(x') = max(0, S(x) − S(x'))`` and the full-removal change
  ``D0 = d(x_∅)``: ``Soft-NC = mean_m d(x_m) / D0`` and ``Soft-NS = max(0, D0 − mean_m d(x_m)) / D0``
  (ReAGent's ``clamp(soft_suff − suff_0, 0) / (1 − suff_0)`` with ``suff = 1 − d``). Measured on
  the contract's ``S`` (ReAGent uses a distance between next-token distributions; the
  contract fixes the measure here). Undefined (NaN, with a note) when ``D0 = 0``.
* infidelity (Yeh et al. 2019): ``E_I[(Iᵀa − (S(x) − S(x \\ I)))²]`` with ``I`` uniform random
  binary masks over ``F`` (each feature in with probability 1/2), not normalised (captum's
  ``normalize=False``); the masks are returned in ``extra['masks']``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from scopecheck.checks.catalog import CHECKS, PERTURB_OWNER, PROTOCOL_OWNER, PROTOCOLS, CheckInfo, Protocol
from scopecheck.checks.result import CheckResult
from scopecheck.runtime.batching import map_batches
from scopecheck.errors import ContractError
from scopecheck.runtime.progress import current_phase
from scopecheck.spec.check_registry import get_check, unknown_params
from scopecheck.spec.vocabulary import fallback_operator

Tensor = torch.Tensor

#: Largest feature count for which NAOPC bounds are exact (all 2^E subsets evaluated).
EXHAUSTIVE_MAX = 8
#: Beam width of the approximate NAOPC bounds beyond ``EXHAUSTIVE_MAX`` features.
BEAM_WIDTH = 5
#: Model evaluations per forward batch when ``batch_size`` is given by nobody: ``None`` lets
#: ``map_batches`` choose from the free memory (halving on out-of-memory).
DEFAULT_BATCH: int | None = None
#: Share the S of drop masks already evaluated between the checks of one compiled problem, so a
#: check, its random baseline and the other checks of the contract never score the same input
#: twice. Every protocol: under ``rescore`` S is a deterministic function of the perturbed input;
#: the diffusion protocols re-run the chain with randomness drawn per (seed, stage), the same for
#: every row of a batch, so a row's regenerated output and S do not depend on which rows share
#: its call either (the cache keeps each row's changed-output flag beside its S).
SCORE_CACHE = True


# --------------------------------------------------------------------------- parameters


def plain(v: Any) -> Any:
    """A DSL value (Ident, Text, tuples of them) as a plain Python value; selectors stay."""
    from scopecheck.spec import model as m

    if isinstance(v, m.Ident):
        return v.name
    if isinstance(v, m.Text):
        return v.value
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


def check_params(name: str, params: Mapping[str, object] | None) -> dict[str, Any]:
    """Plain parameters over the entry's defaults (``scopecheck.spec.check_registry``); an
    unknown name is a :class:`~scopecheck.spec.check_registry.CheckParamError` (a ``ValueError``)
    listing the declared ones."""
    params = {str(k): plain(v) for k, v in dict(params or {}).items()}
    err = unknown_params(name, params)
    if err is not None:
        raise err
    return {**get_check(name).defaults(), **params}


def as_int(name: str, key: str, v: Any, low: int = 1) -> int:
    bad = ValueError(f"{name}: parameter {key}={v!r} must be an integer >= {low}")
    if isinstance(v, bool):
        raise bad
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, str):
        try:
            v = int(v)
        except ValueError:
            raise bad from None
    if not isinstance(v, int) or v < low:
        raise bad
    return v


def as_float(name: str, key: str, v: Any, low: float = 0.0) -> float:
    bad = ValueError(f"{name}: parameter {key}={v!r} must be a number >= {low}")
    if isinstance(v, bool):
        raise bad
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise bad from None
    if not math.isfinite(f) or f < low:
        raise bad
    return f


def k_count(name: str, k: Any, n: int) -> int:
    """``k`` as a number of features: an int is a count (capped at ``n``); a float in (0, 1]
    is a fraction, ``ceil(k n)`` and at least 1."""
    if isinstance(k, str):
        try:
            k = int(k)
        except ValueError:
            try:
                k = float(k)
            except ValueError:
                raise ValueError(f"{name}: k={k!r} must be a fraction in (0, 1] or a count") from None
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ValueError(f"{name}: k={k!r} must be a fraction in (0, 1] or a count")
    if isinstance(k, int):
        if k < 1:
            raise ValueError(f"{name}: k={k} must be >= 1 when a count")
        return min(k, n)
    if 0 < k <= 1:
        return max(1, min(n, math.ceil(k * n - 1e-9)))
    if k > 1 and float(k).is_integer():
        return min(int(k), n)
    raise ValueError(f"{name}: k={k!r} must be a fraction in (0, 1] or a count")


# --------------------------------------------------------------------------- shared scores

#: The attribute of a compiled :class:`AttributionProblem` holding its row cache.
ROWS_ATTR = "_scopecheck_rows"
_LIVE: list[weakref.ref] = []          # problems holding a row cache (``clear_score_cache``)


def score_cache(problem: Any) -> dict[tuple, Any]:
    """The per-contract row cache of ``problem`` (kept on the problem, so it lives and dies with
    the contract's compiled problem): ``(protocol, operator, mask bits) -> (S, changed)`` for every
    perturbation row scored so far, ``changed`` the regenerated output's flag (``None`` under
    ``rescore``); plus ``("s_x", protocol)`` and the NAOPC bounds (``("bounds", ...)``)."""
    cache = getattr(problem, "__dict__", {}).get(ROWS_ATTR)
    if cache is not None:
        return cache
    cache = {}
    try:
        object.__setattr__(problem, ROWS_ATTR, cache)
        _LIVE.append(weakref.ref(problem))
    except (AttributeError, TypeError):    # no instance dict / not weak-referenceable: nothing is shared
        pass
    return cache


def clear_score_cache() -> None:
    """Forget every shared score (tests comparing against fresh evaluations)."""
    for ref in _LIVE:
        pb = ref()
        if pb is not None:
            pb.__dict__.get(ROWS_ATTR, {}).clear()
    _LIVE[:] = [r for r in _LIVE if r() is not None]


def mask_keys(drop: Tensor) -> list[bytes]:
    """One hashable key per row of a bool matrix ``(N, L)`` (its bits, packed)."""
    packed = np.packbits(drop.to("cpu", torch.bool).numpy(), axis=1)
    return [row.tobytes() for row in packed]


@dataclass
class Work:
    """What one check (or random baseline) cost: ``planned`` perturbation rows it asked for (the
    plan, plus the rows the adaptive NAOPC beam search asked for), ``distinct`` masks among them,
    ``scored`` rows the model evaluated (the others came from the contract's row cache), model
    ``calls`` (batched forwards or chain runs, ``S(x)`` included) and wall ``seconds``."""

    planned: int = 0
    scored: int = 0
    calls: int = 0
    seconds: float = 0.0
    keys: set = field(default_factory=set, repr=False)

    def plan(self, keys: Sequence[Any]) -> None:
        self.planned += len(keys)
        self.keys.update(keys)

    @property
    def distinct(self) -> int:
        return len(self.keys)

    def as_dict(self) -> dict[str, Any]:
        return {"planned_rows": self.planned, "distinct_rows": self.distinct, "scored_rows": self.scored,
                "model_calls": self.calls, "seconds": round(self.seconds, 6)}


_WORK: contextvars.ContextVar[Work | None] = contextvars.ContextVar("scopecheck_check_work", default=None)


@contextlib.contextmanager
def counting(work: Work) -> Any:
    """Count the rows and model calls of the checks run inside on ``work`` (and its seconds)."""
    token = _WORK.set(work)
    t0 = time.perf_counter()
    try:
        yield work
    finally:
        work.seconds += time.perf_counter() - t0
        _WORK.reset(token)


def _tick(n: int) -> None:
    """Advance the running check's planned progress bar (a fixed total) by ``n`` rows."""
    bar = current_phase()
    if bar is not None and bar.fixed and n > 0:
        bar.update(n)


# --------------------------------------------------------------------------- context


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
    _changed: list[bool] = field(default_factory=list, repr=False)
    #: where the flags of the evaluations now running go (``None``: not counted)
    _changed_into: list[bool] | None = field(default=None, repr=False)

    @property
    def compiled(self) -> Any:
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
            obj = getattr(self.compiled, "check_objective", None)
            if obj is None:
                raise ContractError(f"{self.name}: the {self.protocol.then} protocol needs a recorded diffusion chain",
                                    rule="protocol")
            return obj
        return self.problem.objective

    def _cache(self) -> dict[tuple, Any] | None:
        if not SCORE_CACHE or self.operator is None:
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
        work = _WORK.get()
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
            _tick(rows)
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
        is scored once per compiled problem (``SCORE_CACHE``): rows seen by an earlier call of any
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
        cache = self._cache()
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
                _tick(N - len(todo))                              # planned rows served by the cache
            s = torch.tensor([cache[k][0] for k in keys], dtype=torch.float64)
            flags = [cache[k][1] for k in keys]
        if self._changed_into is not None and self.protocol.then != "rescore":
            self._changed_into.extend(bool(c) for c, q in zip(flags, perturbed) if q and c is not None)
        return s

    def drop_rows(self, sets: Sequence[Sequence[int]]) -> Tensor:
        """Drop masks ``(N, L)`` from lists of positions."""
        L = self.problem.length
        drop = torch.zeros(len(sets), L, dtype=torch.bool)
        for r, s in enumerate(sets):
            if len(s):
                drop[r, list(s)] = True
        return drop

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
            cache = self._cache()
            key = ("s_x", self.protocol.then)
            if cache is not None and key in cache:
                self._s_x = cache[key]
            else:
                f = self.evaluator
                with torch.no_grad():
                    self._s_x = float(f(self.problem.embeds.unsqueeze(0)).item())
                work = _WORK.get()
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
        flags = self._changed
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
    return sorted(positions, key=lambda p: (-float(values[p]), p))


def setup(name: str, result: Any, params: Mapping[str, object] | None, *, ranking: Sequence[int] | None = None,
          seed: int = 0) -> Ctx:
    """Validate ``params`` and build the check context (protocol, operator, features, map)."""
    info = CHECKS[name]
    p = check_params(name, params)
    compiled = getattr(result, "compiled", None)
    if compiled is None or getattr(compiled, "problem", None) is None:
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
        order = given + [q for q in own if q not in set(given)]
        sorted_vals = sorted((float(base[q]) for q in features), reverse=True)
        for q, v in zip(order, sorted_vals):
            values[q] = v
    else:
        order = own
    ctx = Ctx(name, info, result, p, protocol, kind, tuple(groups), list(features), operator, batch, int(seed),
              values, order, ranking is not None)
    ctx._changed_into = ctx._changed
    return ctx


# --------------------------------------------------------------------------- curves


def grid(E: int, steps: int | None) -> list[int]:
    """Feature counts at which a curve is measured: ``0..E`` or ``round(j E / steps)``."""
    if steps is None or steps >= E:
        return list(range(E + 1))
    return sorted({int(math.floor(j * E / steps + 0.5)) for j in range(steps + 1)})


def trapezoid(y: Sequence[float], x: Sequence[float]) -> float:
    if len(y) < 2:
        return 0.0
    return float(sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(y) - 1)))


class _Gains:
    """``g(A)`` for feature subsets ``A`` (bitmasks over F), cached and batch-evaluated.

    deletion: ``g(A) = S(x) − S(x \\ A)``; insertion: ``g(A) = S(x \\ (F − A)) − S(x \\ F)``.
    """

    def __init__(self, ctx: Ctx, mode: str, adaptive: bool = False) -> None:
        self.ctx, self.mode = ctx, mode
        self.full = (1 << ctx.E) - 1
        self.vals: dict[int, float] = {}        # drop bitmask -> S
        self.evaluations = 0
        self.adaptive = adaptive                # beam search: its rows join the check's planned rows here

    def _drop_mask(self, a: int) -> int:
        return a if self.mode == "deletion" else self.full ^ a

    def need(self, subsets: Sequence[int]) -> int:
        """Score the drop masks of ``subsets`` not seen yet; returns how many rows were asked for."""
        drops = {self._drop_mask(a) for a in subsets} | {0, self.full}
        todo = sorted(d for d in drops if d not in self.vals)
        if not todo:
            return 0
        E = self.ctx.E
        masks = torch.tensor([[(d >> i) & 1 for i in range(E)] for d in todo], dtype=torch.bool)
        drop = self.ctx.drop_from_masks(masks)
        work = _WORK.get()
        if self.adaptive and work is not None:
            work.plan(self.ctx.row_keys(drop))
        s = self.ctx.score_drops(drop, tick_hits=self.adaptive)
        self.evaluations += len(todo)
        for d, v in zip(todo, s.tolist()):
            self.vals[d] = v
        return len(todo)

    def g(self, a: int) -> float:
        if self.mode == "deletion":
            return self.vals[0] - self.vals[a]
        return self.vals[self.full ^ a] - self.vals[self.full]


def aopc_bounds(ctx: Ctx, ks: Sequence[int], mode: str) -> tuple[float, float, str, int]:
    """(lower, upper, how, evaluations): min/max AOPC over all orderings of F on grid ``ks``.

    Exact for ``E <= EXHAUSTIVE_MAX``: AOPC of an ordering is ``mean_{k in ks} g(first k)``,
    a sum along a maximal chain of the subset lattice, so its max/min over all ``E!``
    orderings is found by dynamic programming over all ``2^E`` subsets
    (``best(A) = w(A) + max_{i in A} best(A − i)``, ``w(A) = g(A)`` if ``|A|`` in ``ks``).
    Beyond, beam search of width ``BEAM_WIDTH`` (Edin et al. 2025 approximate long inputs
    the same way): a lower bound on the max and an upper bound on the min.
    """
    E = ctx.E
    gains = _Gains(ctx, mode, adaptive=E > EXHAUSTIVE_MAX)
    kset = set(ks)
    n = len(ks)
    if E <= EXHAUSTIVE_MAX:
        subsets = list(range(1 << E))
        gains.need(subsets)
        by_size = sorted(subsets, key=lambda a: bin(a).count("1"))
        hi = {0: gains.g(0) if 0 in kset else 0.0}
        lo = dict(hi)
        for a in by_size[1:]:
            w = gains.g(a) if bin(a).count("1") in kset else 0.0
            prev = [a & ~(1 << i) for i in range(E) if (a >> i) & 1]
            hi[a] = w + max(hi[b] for b in prev)
            lo[a] = w + min(lo[b] for b in prev)
        full = (1 << E) - 1
        return lo[full] / n, hi[full] / n, "exact", gains.evaluations

    # the two beams (max and min) advance together, so each size's candidates of both are
    # scored in one batch; the result is that of running them one after the other
    _tick(beam_slots(E, 0) - gains.need([0]))            # the planned bar: a stage's unused slots
    start = gains.g(0) if 0 in kset else 0.0
    beams = {1.0: [(start, 0)], -1.0: [(start, 0)]}
    for size in range(1, E + 1):
        cands: dict[float, dict[int, float]] = {}
        for sign, bs in beams.items():
            c: dict[int, float] = {}
            for cum, a in bs:
                for i in range(E):
                    if not (a >> i) & 1:
                        b = a | (1 << i)
                        if b not in c or sign * cum > sign * c[b]:
                            c[b] = cum
            cands[sign] = c
        _tick(beam_slots(E, size) - gains.need(sorted(set(cands[1.0]) | set(cands[-1.0]))))
        for sign, c in cands.items():
            scored = []
            for b, cum in c.items():
                gb = gains.g(b)
                new = cum + (gb if size in kset else 0.0)
                key = sign * (new + (0.0 if size in kset else gb))
                scored.append((key, new, b))
            scored.sort(key=lambda t: (-t[0], t[2]))
            beams[sign] = [(new, b) for _, new, b in scored[:BEAM_WIDTH]]
    upper = max(c for c, _ in beams[1.0]) / n
    lower = min(c for c, _ in beams[-1.0]) / n
    return lower, upper, f"beam(width={BEAM_WIDTH})", gains.evaluations


def beam_slots(E: int, size: int) -> int:
    """Most rows the beam search asks for at stage ``size`` (``0``: its start, ``x`` and ``x_∅``):
    the union of both beams' expansions, at most ``2 BEAM_WIDTH (E - size + 1)`` and ``C(E, size)``.
    Their sum over the stages is the search's share of a check's planned progress total."""
    if size == 0:
        return 2
    return min(2 * BEAM_WIDTH * (E - size + 1), math.comb(E, size))


def bound_rows(E: int) -> int:
    """Planned rows of the NAOPC bound search over ``E`` features: ``2^E`` (exact), or the beam
    search's most (:func:`beam_slots` summed over its stages)."""
    if E <= EXHAUSTIVE_MAX:
        return 1 << E
    return sum(beam_slots(E, k) for k in range(E + 1))


def _bounds_key(ctx: Ctx, ks: Sequence[int], mode: str) -> tuple:
    """The NAOPC bounds depend on the features, grid, operator and protocol, not on the ranking:
    one search per contract serves the map's check and every random ranking."""
    how = "exact" if ctx.E <= EXHAUSTIVE_MAX else f"beam({BEAM_WIDTH})"
    return ("bounds", how, ctx.protocol.then, str(ctx.operator), mode, tuple(ctx.features), tuple(ks))


def bounds_known(ctx: Ctx, ks: Sequence[int], mode: str) -> bool:
    cache = ctx._cache()
    return cache is not None and _bounds_key(ctx, ks, mode) in cache


def shared_bounds(ctx: Ctx, ks: Sequence[int], mode: str) -> tuple[float, float, str, int, list[bool]]:
    """``aopc_bounds`` once per contract (and its changed-output flags, apart from the check's)."""
    cache = ctx._cache()
    key = _bounds_key(ctx, ks, mode)
    if cache is not None and key in cache:
        return cache[key]
    bound_changed: list[bool] = []
    ctx._changed_into = bound_changed                  # the bound search's regenerations: apart
    try:
        lower, upper, how, evals = aopc_bounds(ctx, ks, mode)
    finally:
        ctx._changed_into = ctx._changed
    hit = (lower, upper, how, evals, bound_changed)
    if cache is not None:
        cache[key] = hit
    return hit


def wants_naopc(fields: Sequence[str] | None) -> bool:
    """Whether the asked fields (``None``: all) need the NAOPC bounds."""
    return fields is None or "naopc" in fields


def _naopc(aopc: float, lower: float, upper: float, how: str) -> tuple[float, float, float, str]:
    note = ""
    if how != "exact":
        lower, upper = min(lower, aopc), max(upper, aopc)
    if not upper > lower:
        return float("nan"), lower, upper, "naopc undefined: every ordering of the features gives the same AOPC"
    return min(1.0, max(0.0, (aopc - lower) / (upper - lower))), lower, upper, note


def curve_steps(ctx: Ctx) -> int | None:
    steps = ctx.params.get("steps")
    return None if steps is None else as_int(ctx.name, "steps", steps)


def curve_sets(ctx: Ctx, mode: str, ks: Sequence[int]) -> list[list[int]]:
    """The feature sets a curve perturbs: ``top-k`` (deletion) or all but ``top-k`` (insertion)."""
    r = ctx.ranking
    return [r[:k] for k in ks] if mode == "deletion" else [r[k:] for k in ks]


def _curve_check(name: str, mode: str, result: Any, params: Mapping[str, object] | None, ranking, seed: int,
                 fields: Sequence[str] | None = None) -> CheckResult:
    ctx = setup(name, result, params, ranking=ranking, seed=seed)
    steps = curve_steps(ctx)
    E = ctx.E
    ks = grid(E, steps)
    r = ctx.ranking
    curve = ctx.score_sets(curve_sets(ctx, mode, ks)).tolist()
    if mode == "deletion":
        ref = curve[0]                                    # S(x): nothing removed
        gains = [ref - c for c in curve]
    else:
        ref = curve[0]                                    # S(x_∅): nothing inserted
        gains = [c - ref for c in curve]
    aopc = float(np.mean(gains))
    fractions = [k / E for k in ks]
    auc = trapezoid(curve, fractions)
    out = {"aopc": aopc, "auc": auc}
    if "auc" not in ctx.info.fields:
        out.pop("auc")
    note = ""
    bounds: dict[str, Any] = {}
    if wants_naopc(fields):
        lower, upper, how, evals, bound_changed = shared_bounds(ctx, ks, mode)
        out["naopc"], lower, upper, note = _naopc(aopc, lower, upper, how)
        bounds = {"aopc_lower": lower, "aopc_upper": upper, "bound_evaluations": evals,
                  **({"bound_changed_rate": sum(bound_changed) / len(bound_changed) if bound_changed else 0.0}
                     if ctx.protocol.then != "rescore" else {})}
    else:
        how = "not computed (no expectation asks for naopc)"
    return ctx.make(out, curve=curve, note=note, skip=() if wants_naopc(fields) else ("naopc",),
                    extra={"k": ks, "fractions": fractions, "ranking": list(r), "gains": gains, **bounds,
                           **({"changed": f"{sum(ctx._changed)} of {len(ctx._changed)} perturbed curve points"}
                              if ctx.protocol.then != "rescore" else {}),
                           "score_input" if mode == "deletion" else "score_empty": ref},
                    steps=steps if steps is not None else E, naopc_bounds=how, mode=mode,
                    normalization="raw S (the contract's score); aopc includes k = 0")


def deletion(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
             seed: int = 0, fields: Sequence[str] | None = None) -> CheckResult:
    """Deletion curve (Samek et al. 2017; Edin et al. 2025).

    Remove features most-important-first; curve ``S(x \\ top-k)`` for ``k`` on the grid (every
    feature, or ``steps`` evenly spaced counts). ``aopc = mean_k [S(x) − S(x \\ top-k)]`` (k = 0
    included); ``auc`` = trapezoid of the raw S curve over the fraction removed (lower is
    better); ``naopc = (aopc − min) / (max − min)`` over all orderings (exact for E <= 8, beam
    search beyond).
    """
    return _curve_check("deletion", "deletion", result, params, ranking, seed, fields)


def insertion(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
              seed: int = 0, fields: Sequence[str] | None = None) -> CheckResult:
    """Insertion curve: from ``x_∅`` (every feature perturbed) insert features most-important
    first; ``aopc = mean_k [S(x_∅ + top-k) − S(x_∅)]`` (k = 0 included); ``auc`` trapezoid of
    the raw S curve over the fraction inserted (higher is better); ``naopc`` as for deletion.
    """
    return _curve_check("insertion", "insertion", result, params, ranking, seed, fields)


def aopc(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
         seed: int = 0, fields: Sequence[str] | None = None) -> CheckResult:
    """AOPC of the deletion curve over every feature, ``1/(E+1) sum_{k=0}^{E} [S(x) − S(x \\ top-k)]``
    (Samek et al. 2017), and NAOPC (Edin et al. 2025; exact bounds for E <= 8, beam beyond)."""
    return _curve_check("aopc", "deletion", result, params, ranking, seed, fields)


def comprehensiveness(result: Any, params: Mapping[str, object] | None = None, *,
                      ranking: Sequence[int] | None = None, seed: int = 0) -> CheckResult:
    """Comprehensiveness (DeYoung et al. 2020): ``S(x) − S(x \\ top-k)``; ``k`` a fraction of E
    (``ceil(k E)``, at least 1) or a count. Higher is better."""
    ctx = setup("comprehensiveness", result, params, ranking=ranking, seed=seed)
    n = k_count("comprehensiveness", ctx.params["k"], ctx.E)
    top = ctx.ranking[:n]
    s = ctx.score_sets([[], top]).tolist()
    return ctx.make({"value": s[0] - s[1]}, curve=s, extra={"top": top, "score_input": s[0], "score_removed": s[1]},
                    k=ctx.params["k"], k_count=n)


def sufficiency(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
                seed: int = 0) -> CheckResult:
    """Sufficiency (DeYoung et al. 2020): ``S(x) − S(top-k only)``, every other feature of F
    perturbed; ``k`` as for comprehensiveness. Lower is better."""
    ctx = setup("sufficiency", result, params, ranking=ranking, seed=seed)
    n = k_count("sufficiency", ctx.params["k"], ctx.E)
    top = ctx.ranking[:n]
    rest = ctx.ranking[n:]
    s = ctx.score_sets([[], rest]).tolist()
    return ctx.make({"value": s[0] - s[1]}, curve=s, extra={"top": top, "score_input": s[0], "score_kept": s[1]},
                    k=ctx.params["k"], k_count=n)


def normalized_importance(ctx: Ctx) -> Tensor:
    """``α`` over F: min–max normalised signed attribution in [0, 1] (0.5 everywhere for a flat map)."""
    v = ctx.values[ctx.features]
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        return torch.full_like(v, 0.5)
    return (v - lo) / (hi - lo)


def soft_masks(ctx: Ctx) -> tuple[int, Tensor, Tensor]:
    """``(samples, keep probability (E,), kept masks (samples, E))`` of Soft-NC / Soft-NS: Soft-NC
    keeps feature i with probability ``1 − α_i``, Soft-NS with ``α_i``; seeded with the check's seed."""
    n = as_int(ctx.name, "samples", ctx.params["samples"])
    alpha = normalized_importance(ctx)                                   # (E,)
    keep_p = 1.0 - alpha if ctx.name == "soft_nc" else alpha
    g = torch.Generator().manual_seed(int(ctx.seed))
    u = torch.rand(n, ctx.E, generator=g, dtype=torch.float64)
    return n, keep_p, u < keep_p.unsqueeze(0)                            # (n, E)


def _soft(name: str, result: Any, params, ranking, seed: int) -> CheckResult:
    ctx = setup(name, result, params, ranking=ranking, seed=seed)
    n, keep_p, kept = soft_masks(ctx)
    s = ctx.score_drops(ctx.drop_from_masks(~kept))
    s_x, s_empty = ctx.s_x, ctx.s_empty()
    d = torch.clamp(s_x - s, min=0.0)
    d0 = max(0.0, s_x - s_empty)
    note = ""
    if d0 <= 0:
        value = float("nan")
        note = (f"{name} undefined: perturbing every feature does not lower S (S(x) = {s_x:.6g}, "
                f"S(x_∅) = {s_empty:.6g})")
    elif name == "soft_nc":
        value = float(d.mean()) / d0
    else:
        value = max(0.0, d0 - float(d.mean())) / d0
    return ctx.make({"value": value}, curve=s.tolist(), note=note,
                    extra={"keep_probability": keep_p.tolist(), "masks_kept": kept.tolist(), "drops": d.tolist(),
                           "score_input": s_x, "score_empty": s_empty, "full_removal_change": d0},
                    samples=n, normalization="alpha = min-max of signed attribution over F; d = max(0, S(x) - S(x')); "
                                             "divided by d(x_∅)")


def soft_nc(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
            seed: int = 0) -> CheckResult:
    """Soft normalised comprehensiveness (Zhao & Aletras 2023; ReAGent's generative form):
    feature i dropped with probability ``α_i`` (min–max normalised attribution), ``samples``
    masks; ``mean_m max(0, S(x) − S(x_m)) / max(0, S(x) − S(x_∅))``. Higher is better."""
    return _soft("soft_nc", result, params, ranking, seed)


def soft_ns(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
            seed: int = 0) -> CheckResult:
    """Soft normalised sufficiency (Zhao & Aletras 2023; ReAGent's generative form): feature i
    kept with probability ``α_i``; ``max(0, D0 − mean_m max(0, S(x) − S(x_m))) / D0`` with
    ``D0 = max(0, S(x) − S(x_∅))``. Higher is better."""
    return _soft("soft_ns", result, params, ranking, seed)


def infidelity_masks(E: int, samples: int, seed: int) -> Tensor:
    """Uniform random binary masks ``(samples, E)`` (True = perturbed), each feature with p = 1/2."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.rand(samples, E, generator=g, dtype=torch.float64) < 0.5


def infidelity(result: Any, params: Mapping[str, object] | None = None, *, ranking: Sequence[int] | None = None,
               seed: int = 0) -> CheckResult:
    """Infidelity (Yeh et al. 2019): ``E_I[(Iᵀa − (S(x) − S(x \\ I)))²]`` over ``samples`` uniform
    random binary masks ``I`` of the eligible features (a feature in ``I`` is replaced by the
    operator). Not normalised (captum ``normalize=False``). Lower is better."""
    ctx = setup("infidelity", result, params, ranking=ranking, seed=seed)
    n = as_int("infidelity", "samples", ctx.params["samples"])
    masks = infidelity_masks(ctx.E, n, seed)                              # (n, E)
    a = ctx.values[ctx.features]                                          # (E,)
    s = ctx.score_drops(ctx.drop_from_masks(masks))
    predicted = (masks.to(torch.float64) * a.unsqueeze(0)).sum(-1)
    actual = ctx.s_x - s
    err = (predicted - actual) ** 2
    return ctx.make({"value": float(err.mean())}, curve=err.tolist(),
                    extra={"masks": masks.tolist(), "predicted": predicted.tolist(), "actual": actual.tolist(),
                           "features": list(ctx.features), "score_input": ctx.s_x},
                    samples=n, perturbation="uniform random binary masks over the eligible features (p = 1/2)",
                    normalize=False)


# --------------------------------------------------------------------------- planned evaluations

#: Checks whose perturbation rows are known before they run (``plan``).
PLANNED = ("deletion", "aopc", "insertion", "comprehensiveness", "sufficiency", "soft_nc", "soft_ns", "infidelity")


def planned_drops(name: str, ctx: Ctx, fields: Sequence[str] | None = None, *, bounds: bool = True,
                  ) -> Tensor | None:
    """The drop masks check ``name`` will score for ``ctx``'s ranking and seed, known before it
    runs (``None`` for checks not planned here): the curve (and, when NAOPC is asked for and
    ``E <= EXHAUSTIVE_MAX``, the 2^E subsets of the exact bounds, unless this contract has them
    already), the top-k sets, the Soft-NC/NS masks and ``x_∅``, the infidelity masks. The beam
    search's rows (``E > EXHAUSTIVE_MAX``) are adaptive: ``plan`` counts its most instead.

    Rows per ranking: deletion/insertion/aopc ``|grid|`` (``E + 1``, or ``steps + 1`` distinct
    counts) plus ``2^E`` for exact bounds (``bounds=False``: left out, another ranking of the same
    plan brings them); comprehensiveness/sufficiency 2; soft_nc/soft_ns ``samples + 1``;
    infidelity ``samples``."""
    if name in ("deletion", "aopc", "insertion"):
        mode = "insertion" if name == "insertion" else "deletion"
        ks = grid(ctx.E, curve_steps(ctx))
        drop = ctx.drop_rows(curve_sets(ctx, mode, ks))
        if bounds and wants_naopc(fields) and ctx.E <= EXHAUSTIVE_MAX and not bounds_known(ctx, ks, mode):
            subsets = torch.arange(1 << ctx.E).unsqueeze(1)
            masks = ((subsets >> torch.arange(ctx.E).unsqueeze(0)) & 1).bool()
            drop = torch.cat([drop, ctx.drop_from_masks(masks)])   # both modes: every subset is dropped once
        return drop
    if name in ("comprehensiveness", "sufficiency"):
        n = k_count(name, ctx.params["k"], ctx.E)
        other = ctx.ranking[:n] if name == "comprehensiveness" else ctx.ranking[n:]
        return ctx.drop_rows([[], other])
    if name in ("soft_nc", "soft_ns"):
        _, _, kept = soft_masks(ctx)
        return torch.cat([ctx.drop_from_masks(~kept), ctx.drop_rows([ctx.features])])
    if name == "infidelity":
        n = as_int(name, "samples", ctx.params["samples"])
        return ctx.drop_from_masks(infidelity_masks(ctx.E, n, ctx.seed))
    return None


@dataclass(frozen=True)
class Plan:
    """The rows one check (or a random baseline: every ranking and the map's own) will score,
    stacked in run order, and the most rows its adaptive beam search can add (``adaptive``);
    ``total`` is the progress denominator, fixed before any row is scored."""

    ctx: Ctx
    drop: Tensor                   # (N, L) bool
    adaptive: int

    @property
    def rows(self) -> int:
        return int(self.drop.shape[0])

    @property
    def total(self) -> int:
        return self.rows + self.adaptive


def plan(name: str, result: Any, params: Mapping[str, object] | None,
         runs: Sequence[tuple[Sequence[int] | None, int]], fields: Sequence[str] | None = None) -> Plan | None:
    """The plan of check ``name`` over ``(ranking, seed)`` runs (``None``: not a planned check, or
    nothing shared because the row cache is off)."""
    if name not in PLANNED or not SCORE_CACHE or not runs:
        return None
    ctxs = [setup(name, result, params, ranking=r, seed=s) for r, s in runs]
    if ctxs[0]._cache() is None:
        return None
    drops = [d for d in (planned_drops(name, c, fields, bounds=i == 0) for i, c in enumerate(ctxs)) if d is not None]
    if not drops:
        return None
    adaptive = 0
    c0 = ctxs[0]
    if name in ("deletion", "aopc", "insertion") and wants_naopc(fields) and c0.E > EXHAUSTIVE_MAX:
        mode = "insertion" if name == "insertion" else "deletion"
        if not bounds_known(c0, grid(c0.E, curve_steps(c0)), mode):
            adaptive = bound_rows(c0.E)                           # one search serves every ranking
    return Plan(c0, torch.cat(drops), adaptive)


def score_plan(p: Plan) -> None:
    """Score a plan's rows in one batched call (deduplicated, into the contract's row cache,
    counted on the running check's ``Work``); the checks then read them back."""
    work = _WORK.get()
    if work is not None:
        work.plan(p.ctx.row_keys(p.drop))
    p.ctx.score_drops(p.drop, tick_hits=True)


def prefetch(name: str, result: Any, params: Mapping[str, object] | None,
             runs: Sequence[tuple[Sequence[int] | None, int]], fields: Sequence[str] | None = None) -> int:
    """Score the planned masks of check ``name`` for every ``(ranking, seed)`` in ``runs`` in one
    batched call (stacked, deduplicated), into the score cache; the checks then run on cached
    scores. Returns how many masks were planned (0 when nothing is shared: the cache switched off)."""
    p = plan(name, result, params, runs, fields)
    if p is None:
        return 0
    score_plan(p)
    return p.rows


__all__ = ["aopc", "comprehensiveness", "deletion", "infidelity", "insertion", "soft_nc", "soft_ns", "sufficiency",
           "setup", "Ctx", "EXHAUSTIVE_MAX", "BEAM_WIDTH", "prefetch", "planned_drops", "clear_score_cache",
           "score_cache", "SCORE_CACHE", "Plan", "plan", "score_plan", "Work", "counting", "PLANNED",
           "bound_rows", "beam_slots", "wants_naopc"]
