"""The check registry: one entry per check, the single source of its name, family, fields,
supported contracts, protocol, parameters and implementation.

The sibling of :mod:`scopecheck.spec.registry` (methods), built the same way: an entry
(:class:`CheckEntry`) declares each parameter once, as a :class:`~scopecheck.spec.registry.ParamSpec`
(kind, range or allowed values, default, help), and each field with its range and the direction
that is better; the validator (``scopecheck.spec.validate``), the checks' parameter resolution
(``scopecheck.checks.faithfulness.check_params``), ``scopecheck list``, the static audit and the
documentation's check table all read the entry. The implementation is a lazy ``"module:attr"``
reference, a function ``(result, params, *, ranking=None, seed=0) -> CheckResult`` imported on
first use (:meth:`CheckEntry.load`), so this module and everything that only validates stays
torch-free.

A check with ``protocol = True`` perturbs features and re-measures by the protocol its contract
requires (:data:`PROTOCOLS`, DESIGN section 4) and takes the protocol parameters
(:data:`PROTOCOL_PARAMS`: ``operator``, ``protocol``, ``perturb``); every check also takes
``batch_size`` (:data:`COMMON_CHECK_PARAMS`, an engine setting). :func:`register_check` adds an
entry, from this package or from outside it; unknown names are :class:`UnknownCheckError`,
listing what exists.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from scopecheck.errors import ContractValidationError, UnknownNameError, did_you_mean
from scopecheck.spec import vocabulary as vocab
from scopecheck.spec.paramspec import PARAM_KINDS, B, C, F, I, ParamSpec, batch, samples
from scopecheck.spec.registry import (
    AUTOREGRESSIVE_KINDS,
    CONTRACT_KINDS,
    EXTRA_KINDS,
    RegistryError,
    fits,
    plain_message,
    resolve_impl,
)

INF = math.inf

# ------------------------------------------------------------------------------ protocols


@dataclass(frozen=True)
class Protocol:
    """How a faithfulness check must perturb and re-measure under one contract kind."""

    kind: str
    perturb: tuple[str, ...]   # feature groups that may be perturbed
    then: str                  # rescore | continue_chain | run_chain | regenerate
    measure: str


PROTOCOLS: dict[str, Protocol] = {
    p.kind: p
    for p in (
        Protocol("classifier", ("prompt",), "rescore", "change in log p(c | x)"),
        Protocol("local_next_token", ("prompt", "prefix"), "rescore", "change in log p(y[t] | x, y[<t])"),
        Protocol("prompt_conditioned", ("prompt",), "rescore",
                 "change in log p(y[t] | x, y[<t]) with the prefix fixed"),
        Protocol("span_prompt", ("prompt",), "rescore",
                 "change in log p(y[1:T] | x), the original y rescored, never regenerated"),
        Protocol("state_level", ("prompt", "states"), "continue_chain", "change in log p(z[t] | x, z[>t])"),
        Protocol("denoising_stage", ("stages",), "run_chain", "change in the stated output score"),
        Protocol("prompt_to_output", ("prompt",), "regenerate",
                 "change in log p(y | x) (stated estimator), and whether y changed"),
    )
}

#: Which contract kind a protocol choice belongs to, for "this would test X" errors.
PROTOCOL_OWNER = {"regenerate": "prompt_to_output", "continue_chain": "state_level", "run_chain": "denoising_stage",
                  "rescore": "span_prompt"}
PERTURB_OWNER = {"prefix": "local_next_token", "states": "state_level", "stages": "denoising_stage",
                 "prompt": "prompt_conditioned"}
#: The protocol choices and feature groups, in the order shown to users (the keys above).
PROTOCOL_CHOICES: tuple[str, ...] = ("rescore", "regenerate", "continue_chain", "run_chain")
PERTURB_GROUPS: tuple[str, ...] = ("prompt", "prefix", "states", "stages")
assert set(PROTOCOL_CHOICES) == set(PROTOCOL_OWNER) and set(PERTURB_GROUPS) == set(PERTURB_OWNER)

# ------------------------------------------------------------------------------ entries

#: Check families, as ``scopecheck list`` groups them.
CHECK_FAMILIES: tuple[str, ...] = ("faithfulness", "sanity", "ground_truth", "agreement")
BETTER: tuple[str, ...] = ("higher", "lower", "none")


@dataclass(frozen=True)
class Field:
    """One reported number: its mathematical range ``[low, high]`` and which way is better."""

    low: float
    high: float
    better: str  # higher | lower | none


#: The replacement of a perturbed feature: a token operator, or a stage perturbation under
#: ``denoising_stage``. Stated by nobody, it is the method's own operator when the problem has
#: it, else the first of :data:`~scopecheck.spec.vocabulary.OPERATOR_FALLBACK` the problem has.
OPERATOR_DEFAULT = "the method's operator, else the first the problem has of " + ", ".join(vocab.OPERATOR_FALLBACK)

#: Parameters of every check with ``protocol = True`` (they come first in its parameters).
PROTOCOL_PARAMS: dict[str, ParamSpec] = {
    "operator": ParamSpec("choice", choices=(*vocab.OPERATORS, *vocab.PERTURBATIONS), help="the replacement of a "
                          "perturbed feature (a stage perturbation under denoising_stage)",
                          default_text=OPERATOR_DEFAULT),
    "protocol": ParamSpec("choice", choices=PROTOCOL_CHOICES, help="what follows the perturbation; only the "
                          "contract's own is allowed", default_text="the contract's"),
    "perturb": ParamSpec("choice", choices=PERTURB_GROUPS, help="the feature group perturbed; only the "
                         "contract's eligible groups are allowed", default_text="the contract's eligible groups"),
}
#: Parameters every check accepts (an engine setting, not part of a check's definition).
COMMON_CHECK_PARAMS: dict[str, ParamSpec] = {"batch_size": batch()}


@dataclass(frozen=True)
class CheckEntry:
    """One check. ``impl`` is ``"module:attr"``, a callable ``(result, params, *, ranking=None,
    seed=0) -> CheckResult`` imported on first :meth:`load`. ``params`` are the check's own,
    after the :data:`PROTOCOL_PARAMS` when ``protocol``; :meth:`declared` adds the common ones.
    ``ranking``: the check reads the map's ranking, so ``random`` (shuffled rankings) is defined."""

    name: str
    family: str
    summary: str
    fields: Mapping[str, Field] = field(hash=False)
    default_field: str
    params: Mapping[str, ParamSpec] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    impl: str = ""
    supports: tuple[str, ...] = (*CONTRACT_KINDS, *EXTRA_KINDS)   # contract kinds
    protocol: bool = False       # perturbs and re-measures by the contract's protocol
    ranking: bool = False
    #: parameters a call may also give by position, in order (``snapshot("snapshots/noir.json")``)
    positional: tuple[str, ...] = ()

    def field(self, name: str | None) -> str:
        """The field an expectation reads: the one it names, else the default field."""
        return name or self.default_field

    def declared(self) -> dict[str, ParamSpec]:
        """Every parameter the check accepts: its own, then :data:`COMMON_CHECK_PARAMS`."""
        return {**self.params, **COMMON_CHECK_PARAMS}

    def defaults(self) -> dict[str, object]:
        """The parameters that have a value when the contract states none (the others, e.g.
        ``operator`` or ``steps``, are chosen by the check; see their ``default_text``)."""
        return {k: p.default for k, p in self.params.items() if p.default is not None}

    def load(self) -> Callable[..., Any]:
        """The implementation (imported once, then cached)."""
        fn = _LOADED.get(self.impl)
        if fn is None:
            fn = resolve_impl(self.impl, self.name, "check")
            _LOADED[self.impl] = fn
        return fn


_LOADED: dict[str, Callable[..., Any]] = {}


class UnknownCheckError(UnknownNameError, KeyError):
    """A check name the registry does not know; the message lists what exists."""

    def __str__(self) -> str:
        return self.message + (f"; hint: {self.hint}" if self.hint else "")


class CheckParamError(ContractValidationError, ValueError):
    """A parameter a check does not declare, passed through the Python API (contracts get the
    validator's positioned error instead); the message lists the declared ones."""

    kind = "invalid check parameter"

    def __str__(self) -> str:  # no source position: the parameters came from Python
        return plain_message(self)


#: The registry: name -> entry, in registration order. Read it; add with :func:`register_check`.
CHECKS: dict[str, CheckEntry] = {}


def _bad(name: str, why: str, expected: str) -> RegistryError:
    return RegistryError(f"check `{name}`: {why}", expected=expected, rule="registry")


def _check_entry(e: CheckEntry) -> None:
    if not e.name.isidentifier():
        raise RegistryError(f"check name {e.name!r} is not an identifier", expected="a name like `my_check`",
                            rule="registry")
    if e.family not in CHECK_FAMILIES:
        raise _bad(e.name, f"unknown family {e.family!r}", f"one of: {', '.join(CHECK_FAMILIES)}")
    kinds = (*CONTRACT_KINDS, *EXTRA_KINDS)
    bad = [k for k in e.supports if k not in kinds]
    if bad or not e.supports:
        raise _bad(e.name, f"unknown contract kind(s) {', '.join(bad) or '(none given)'}",
                   f"supports from: {', '.join(kinds)}")
    if ":" not in e.impl:
        raise _bad(e.name, f"implementation {e.impl!r} is not a `module:attr` reference",
                   "impl = \"package.module:function\"")
    if not e.fields:
        raise _bad(e.name, "declares no field", "fields = {\"value\": Field(low, high, better)}")
    for key, f in e.fields.items():
        if not (isinstance(f, Field) and f.better in BETTER and f.low <= f.high):
            raise _bad(e.name, f"field `{key}` is not a Field(low <= high, better)",
                       f"better from: {', '.join(BETTER)}")
    bad = [k for k in e.positional if k not in e.params]
    if bad:
        raise _bad(e.name, f"positional parameter(s) {', '.join(bad)} not among its parameters", ", ".join(e.params))
    if e.default_field not in e.fields:
        raise _bad(e.name, f"default field `{e.default_field}` is not one of its fields", ", ".join(e.fields))
    for key, p in e.params.items():
        if key.startswith("_") or key in COMMON_CHECK_PARAMS or (not e.protocol and key in PROTOCOL_PARAMS):
            raise _bad(e.name, f"parameter `{key}` is reserved", "another parameter name")
        if p.kind not in PARAM_KINDS:
            raise _bad(e.name, f"parameter `{key}` has unknown kind {p.kind!r}", ", ".join(PARAM_KINDS))
        if p.default is None:
            if p.default_text is None:
                raise _bad(e.name, f"parameter `{key}` has no default and no default_text saying how the check "
                           "chooses it", "a ParamSpec with a default that fits it")
        elif not fits(p, p.default):
            raise _bad(e.name, f"parameter `{key}` has a default {p.default!r} outside {p.describe()}",
                       "a ParamSpec with a default that fits it")


def register_check(
    name: str | CheckEntry,
    *,
    family: str = "",
    summary: str = "",
    fields: Mapping[str, Field] | None = None,
    default_field: str = "",
    params: Mapping[str, ParamSpec] | None = None,
    impl: str = "",
    supports: Iterable[str] = (*CONTRACT_KINDS, *EXTRA_KINDS),
    protocol: bool = False,
    ranking: bool = False,
    positional: Iterable[str] = (),
    replace: bool = False,
) -> CheckEntry:
    """Add a check to the registry and return its entry.

    ``name`` is the check's name (or a complete :class:`CheckEntry`); ``impl`` the
    ``"module:attr"`` of its function ``(result, params, *, ranking=None, seed=0) -> CheckResult``,
    imported when the check first runs. ``fields`` maps each reported number to its
    :class:`Field`; ``default_field`` is the one a bare expectation reads. ``params`` maps each
    parameter to its :class:`ParamSpec`; with ``protocol`` the :data:`PROTOCOL_PARAMS` come
    first; ``positional`` names those a call may also give by position, in order. A name already
    taken is a :class:`RegistryError` unless ``replace``.
    """
    if isinstance(name, CheckEntry):
        entry = name
    else:
        entry = CheckEntry(name=name, family=family, summary=summary, fields=dict(fields or {}),
                           default_field=default_field, params=dict(params or {}), impl=impl,
                           supports=tuple(supports), protocol=protocol, ranking=ranking,
                           positional=tuple(positional))
    own = {k: p for k, p in entry.params.items() if not (entry.protocol and k in PROTOCOL_PARAMS)}
    _check_entry(dataclasses.replace(entry, params=own))
    prm = {**PROTOCOL_PARAMS, **own} if entry.protocol else own
    entry = dataclasses.replace(entry, params=MappingProxyType(prm), fields=MappingProxyType(dict(entry.fields)),
                                supports=tuple(entry.supports))
    if entry.name in CHECKS and not replace:
        raise RegistryError(f"check name {entry.name} already registered", rule="registry", expected="a new name",
                            hint="pass replace=True to replace the entry")
    CHECKS[entry.name] = entry
    _LOADED.pop(entry.impl, None)
    return entry


def unregister_check(name: str) -> CheckEntry:
    """Remove a check from the registry; returns the entry removed."""
    entry = get_check(name)
    del CHECKS[entry.name]
    return entry


def get_check(name: str) -> CheckEntry:
    """The entry of ``name``; :class:`UnknownCheckError` listing the registered checks otherwise."""
    entry = CHECKS.get(name)
    if entry is None:
        known = list(CHECKS)
        raise UnknownCheckError(f"check {name!r} is not a known check; known checks: {', '.join(known)}",
                                expected=f"one of: {', '.join(known)}", hint=did_you_mean(name, known),
                                rule="unknown-name")
    return entry


def unknown_params(name: str, params: Iterable[str]) -> CheckParamError | None:
    """``None`` when check ``name`` declares every key of ``params``; otherwise the error
    naming the unknown ones and listing the declared ones with their meaning."""
    declared = get_check(name).declared()
    unknown = sorted(k for k in params if k not in declared)
    if not unknown:
        return None
    listed = "; ".join(f"{k}: {p.summary()}" for k, p in declared.items())
    return CheckParamError(f"unknown parameter(s) {', '.join(unknown)} for check {name!r}; declared parameters: "
                           f"{listed}", expected=", ".join(declared),
                           hint=did_you_mean(unknown[0], list(declared)), rule="params")


def supported_checks(kind: str) -> list[str]:
    """Names of the registered checks that support contract ``kind``."""
    return [name for name, e in CHECKS.items() if kind in e.supports]


def _range(f: Field) -> str:
    def n(x: float) -> str:
        return "∞" if x == INF else "-∞" if x == -INF else f"{x:g}"
    return f"[{n(f.low)}, {n(f.high)}]"


def _contracts(e: CheckEntry) -> str:
    every = (*CONTRACT_KINDS, *EXTRA_KINDS)
    missing = [k for k in every if k not in e.supports]
    if not missing:
        return "all"
    if len(missing) < len(every) / 2:
        return "all but " + ", ".join(f"`{k}`" for k in missing)
    return ", ".join(f"`{k}`" for k in e.supports)


def check_table() -> str:
    """The documentation's check table (Markdown), generated from the registry: one row per check with
    its family, the contracts it supports, its fields (range, better; the default field first,
    in bold) and its own parameters with their defaults."""
    rows = ["| check | family | contracts | fields [range] better | parameters (default) |", "|---|---|---|---|---|"]
    for e in CHECKS.values():
        order = [e.default_field, *(k for k in e.fields if k != e.default_field)]
        fl = ", ".join((f"**`{k}`**" if k == e.default_field else f"`{k}`") + f" {_range(e.fields[k])} "
                       f"{e.fields[k].better}" for k in order)
        prm = "; ".join(f"`{k}` = {p.describe() if p.kind in ('choice', 'bool') else p.kind} "
                        f"({p.shown_default()})" for k, p in e.params.items() if k not in PROTOCOL_PARAMS)
        if e.protocol:
            prm = "protocol parameters" + ("; " + prm if prm else "")
        rows.append(f"| `{e.name}` | {e.family} | {_contracts(e)} | {fl} | "
                    f"{(prm or 'none').replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------------------ map functions, metrics

#: Functions on the map itself, usable in `expect` without running a check.
MAP_FUNCTIONS: dict[str, str] = {
    "top": "top(k): the k highest-attributed eligible tokens (texts)",
    "mass": "mass(selector): share of absolute attribution mass on the selected features, in [0, 1]",
    "rank": "rank(selector): rank (1 = highest) of the best-ranked selected feature",
    "attribution": "attribution(selector): signed sum of the attributions of the selected features",
}

#: Metric names a claim may report, with their mathematical range.
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "dsa": (-1.0, 1.0),
    "naopc": (0.0, 1.0),
    "spearman": (-1.0, 1.0),
    "kendall": (-1.0, 1.0),
    "pearson": (-1.0, 1.0),
    "probability": (0.0, 1.0),
    "precision": (0.0, 1.0),
    "recall": (0.0, 1.0),
    "accuracy": (0.0, 1.0),
    "mass": (0.0, 1.0),
    "infidelity": (0.0, INF),
    "max_sensitivity": (0.0, INF),
    "aopc": (-INF, INF),
    "comprehensiveness": (-INF, INF),
    "sufficiency": (-INF, INF),
    "soft_nc": (-INF, INF),
    "soft_ns": (-INF, INF),
}

# ------------------------------------------------------------------------------ the shipped checks

#: share of the check's perturbed inputs whose output changed on regeneration (diffusion
#: protocols); 0 under ``rescore``, where the frozen output is never regenerated
_CHANGED = {"changed_rate": Field(0.0, 1.0, "none")}
_CURVE = {"auc": Field(-INF, INF, "none"), "aopc": Field(-INF, INF, "higher"),
          "naopc": Field(0.0, 1.0, "higher"), **_CHANGED}
_STEPS = {"steps": I(1, 100_000, help="points of the curve, evenly spaced counts", default_text="every feature")}
_K = {"k": ParamSpec("count_or_fraction", high=100_000, default=0.2,
                     help="the top features: a fraction of the perturbable ones (ceil(k E), at least 1) or a count")}
_F, _S, _A = "scopecheck.checks.faithfulness:", "scopecheck.checks.sanity:", "scopecheck.checks.agreement:"
_NOT_STAGES = tuple(k for k in (*CONTRACT_KINDS, *EXTRA_KINDS) if k != "denoising_stage")

for _e in (
    CheckEntry("deletion", "faithfulness", "remove features most-important first; score drop curve",
               {**_CURVE, "auc": Field(-INF, INF, "lower")}, "aopc", _STEPS, _F + "deletion", protocol=True,
               ranking=True),
    CheckEntry("insertion", "faithfulness", "insert features most-important first into the baseline; score rise",
               {**_CURVE, "auc": Field(-INF, INF, "higher")}, "aopc", _STEPS, _F + "insertion", protocol=True,
               ranking=True),
    CheckEntry("comprehensiveness", "faithfulness", "S(x) − S(x without top-k) (DeYoung et al. 2020)",
               {"value": Field(-INF, INF, "higher"), **_CHANGED}, "value", _K, _F + "comprehensiveness",
               protocol=True, ranking=True),
    CheckEntry("sufficiency", "faithfulness", "S(x) − S(top-k only) (DeYoung et al. 2020)",
               {"value": Field(-INF, INF, "lower"), **_CHANGED}, "value", _K, _F + "sufficiency", protocol=True,
               ranking=True),
    CheckEntry("aopc", "faithfulness", "area over the perturbation curve, and its normalized form (Edin et al.)",
               {"aopc": Field(-INF, INF, "higher"), "naopc": Field(0.0, 1.0, "higher"), **_CHANGED}, "aopc", {},
               _F + "aopc", protocol=True, ranking=True),
    CheckEntry("soft_nc", "faithfulness", "Soft normalized comprehensiveness (Zhao & Aletras 2023)",
               {"value": Field(-INF, INF, "higher"), **_CHANGED}, "value",
               {"samples": samples(16, "Bernoulli feature masks")}, _F + "soft_nc", protocol=True, ranking=True),
    CheckEntry("soft_ns", "faithfulness", "Soft normalized sufficiency (Zhao & Aletras 2023)",
               {"value": Field(-INF, INF, "higher"), **_CHANGED}, "value",
               {"samples": samples(16, "Bernoulli feature masks")}, _F + "soft_ns", protocol=True, ranking=True),
    CheckEntry("infidelity", "faithfulness", "E[(Iᵀa − (S(x) − S(x − I)))²] (Yeh et al. 2019)",
               {"value": Field(0.0, INF, "lower"), **_CHANGED}, "value",
               {"samples": samples(64, "uniform random binary masks")}, _F + "infidelity", protocol=True),
    CheckEntry("max_sensitivity", "sanity", "max change of the map under small input perturbations",
               {"value": Field(0.0, INF, "lower")}, "value",
               {"radius": F(0.0, 1e6, default=0.02, help="noise radius, a share of each eligible embedding's norm"),
                "samples": I(1, 10_000, 8, "noise draws, the method rerun on each")},
               _S + "max_sensitivity", supports=_NOT_STAGES),
    CheckEntry("randomization", "sanity", "map under randomized weights vs the trained map (Adebayo et al. 2018)",
               {"spearman": Field(-1.0, 1.0, "lower"), "kendall": Field(-1.0, 1.0, "lower")}, "spearman",
               {"layers": C("all", "top", default="all", help="re-initialise every layer, or the last block and "
                            "the output head only")},
               _S + "randomization"),
    CheckEntry("completeness", "sanity", "sum of attributions = S(input) − S(baseline) within tolerance",
               {"delta": Field(-INF, INF, "none"), "abs_delta": Field(0.0, INF, "lower")}, "abs_delta",
               {"tolerance": F(0.0, 1e12, default=1e-3, help="largest |delta| that passes")},
               _S + "completeness"),
    CheckEntry("conservation", "sanity",
               "relevance over every input position (+ the rules' stated absorption) = the quantity propagated",
               {"relative_gap": Field(0.0, INF, "lower"), "raw_gap": Field(0.0, INF, "lower"),
                "gap": Field(-INF, INF, "none")}, "relative_gap",
               {"tolerance": F(0.0, 1e12, default=1e-4, help="largest relative_gap that passes"),
                "absorbed": B(True, "count what the rules state they absorb (AttnLRP: the softmax rule's bias, "
                                    "linear biases) as conserved; false: the relevance alone must sum to it")},
               "scopecheck.checks.conservation:conservation", supports=AUTOREGRESSIVE_KINDS),
    CheckEntry("eligibility", "sanity", "attribution mass outside E is exactly zero",
               {"outside_mass": Field(0.0, INF, "lower")}, "outside_mass", {}, _S + "eligibility"),
    CheckEntry("ground_truth", "ground_truth", "agreement with causal tokens known by construction",
               {"precision": Field(0.0, 1.0, "higher"), "dsa": Field(-1.0, 1.0, "higher"),
                "top1": Field(0.0, 1.0, "higher")}, "precision",
               {"k": I(1, 100_000, 1, "top-k tokens compared with the causal ones"),
                "causal": ParamSpec("any", help="the causal prompt tokens: texts, selectors or x indices (1-based)",
                                    default_text="required")},
               _A + "ground_truth", ranking=True),
    CheckEntry("dsa", "ground_truth", "distractor-sensitive attribution (seed 004): evidence mass − distractor mass",
               {"value": Field(-1.0, 1.0, "higher")}, "value",
               {"evidence": ParamSpec("selector", help="the evidence tokens", default_text="required"),
                "distractor": ParamSpec("selector", help="the distractor tokens", default_text="required")},
               _A + "dsa"),
    CheckEntry("agreement", "agreement", "rank correlation with another method or contract on the same input",
               {"spearman": Field(-1.0, 1.0, "higher"), "kendall": Field(-1.0, 1.0, "higher")}, "spearman",
               {"method": ParamSpec("any", help="another attribution method (exactly one of method, contract)",
                                    default_text="none"),
                "contract": ParamSpec("any", help="another standard contract (exactly one of method, contract)",
                                      default_text="none")},
               _A + "agreement"),
    CheckEntry("snapshot", "agreement", "the map against a stored baseline map: top-k set, Spearman, max |difference|",
               {"max_abs": Field(0.0, INF, "lower"), "spearman": Field(-1.0, 1.0, "higher"),
                "top_k_match": Field(0.0, 1.0, "higher")}, "max_abs",
               {"path": ParamSpec("any", help="the snapshot file (JSON), relative to the contract's folder; also "
                                  "given as the first argument", default_text="required"),
                "top_k": I(0, 100_000, 3, "the k highest-attributed eligible tokens must be the snapshot's, as a "
                           "set (0: not compared)"),
                "spearman": F(-1.0, 1.0, default=0.99, help="least Spearman rank correlation with the snapshot "
                              "over E (-1: not compared)"),
                "max_abs": F(0.0, 1e12, default=1e-4, help="largest absolute difference of a token's score from "
                             "the snapshot's")},
               "scopecheck.checks.snapshot:snapshot", positional=("path",)),
):
    register_check(_e)
del _e


__all__ = ["CHECKS", "CHECK_FAMILIES", "COMMON_CHECK_PARAMS", "CheckEntry", "CheckParamError", "Field",
           "MAP_FUNCTIONS", "METRIC_RANGES", "OPERATOR_DEFAULT", "PERTURB_GROUPS", "PERTURB_OWNER", "PROTOCOLS",
           "PROTOCOL_CHOICES", "PROTOCOL_OWNER", "PROTOCOL_PARAMS", "Protocol", "UnknownCheckError", "check_table",
           "get_check", "register_check", "supported_checks", "unknown_params", "unregister_check"]


if __name__ == "__main__":  # python -m scopecheck.spec.check_registry: the documentation's check table
    print(check_table(), end="")
