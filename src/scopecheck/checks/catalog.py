"""Declared checks and the protocol each contract kind requires (DESIGN section 4).

Torch-free: the validator reads it to reject a check whose protocol belongs to another
contract, and ``scopecheck list`` prints it. Implementations live beside this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INF = math.inf


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


@dataclass(frozen=True)
class Field:
    low: float
    high: float
    better: str  # higher | lower | none


@dataclass(frozen=True)
class CheckInfo:
    name: str
    family: str          # faithfulness | sanity | agreement | ground_truth
    summary: str
    fields: dict[str, Field]
    params: dict[str, str]
    default_field: str
    ranking: bool = False   # uses the map's ranking, so `random` (shuffled rankings) is defined

    def field(self, name: str | None) -> str:
        return name or self.default_field


_OP = "operator: pad | mask | unk | zero | mean | delete (default pad)"
_PROTO = {"operator": _OP, "protocol": "rescore | regenerate | continue_chain | run_chain (default: the contract's)",
          "perturb": "prompt | prefix | states | stages (default: the contract's eligible groups)"}
#: share of the check's perturbed inputs whose output changed on regeneration (diffusion
#: protocols); 0 under ``rescore``, where the frozen output is never regenerated
_CHANGED = {"changed_rate": Field(0.0, 1.0, "none")}
_CURVE = {"auc": Field(-INF, INF, "none"), "aopc": Field(-INF, INF, "higher"),
          "naopc": Field(0.0, 1.0, "higher"), **_CHANGED}

CHECKS: dict[str, CheckInfo] = {
    c.name: c
    for c in (
        CheckInfo("deletion", "faithfulness", "remove features most-important first; score drop curve",
                  {**_CURVE, "auc": Field(-INF, INF, "lower")}, {**_PROTO, "steps": "int (default: every feature)"},
                  "aopc", ranking=True),
        CheckInfo("insertion", "faithfulness", "insert features most-important first into the baseline; score rise",
                  {**_CURVE, "auc": Field(-INF, INF, "higher")}, {**_PROTO, "steps": "int (default: every feature)"},
                  "aopc", ranking=True),
        CheckInfo("comprehensiveness", "faithfulness", "S(x) − S(x without top-k) (DeYoung et al. 2020)",
                  {"value": Field(-INF, INF, "higher"), **_CHANGED},
                  {**_PROTO, "k": "fraction in (0,1] or count (default 0.2)"}, "value", ranking=True),
        CheckInfo("sufficiency", "faithfulness", "S(x) − S(top-k only) (DeYoung et al. 2020)",
                  {"value": Field(-INF, INF, "lower"), **_CHANGED},
                  {**_PROTO, "k": "fraction in (0,1] or count (default 0.2)"}, "value", ranking=True),
        CheckInfo("aopc", "faithfulness", "area over the perturbation curve, and its normalized form (Edin et al.)",
                  {"aopc": Field(-INF, INF, "higher"), "naopc": Field(0.0, 1.0, "higher"), **_CHANGED}, _PROTO, "aopc",
                  ranking=True),
        CheckInfo("soft_nc", "faithfulness", "Soft normalized comprehensiveness (Zhao & Aletras 2023)",
                  {"value": Field(-INF, INF, "higher"), **_CHANGED}, {**_PROTO, "samples": "int (default 16)"}, "value",
                  ranking=True),
        CheckInfo("soft_ns", "faithfulness", "Soft normalized sufficiency (Zhao & Aletras 2023)",
                  {"value": Field(-INF, INF, "higher"), **_CHANGED}, {**_PROTO, "samples": "int (default 16)"}, "value",
                  ranking=True),
        CheckInfo("infidelity", "faithfulness", "E[(Iᵀa − (S(x) − S(x − I)))²] (Yeh et al. 2019)",
                  {"value": Field(0.0, INF, "lower"), **_CHANGED}, {**_PROTO, "samples": "int (default 64)"}, "value"),
        CheckInfo("max_sensitivity", "sanity", "max change of the map under small input perturbations",
                  {"value": Field(0.0, INF, "lower")}, {"radius": "float (default 0.02)", "samples": "int (default 8)"},
                  "value"),
        CheckInfo("randomization", "sanity", "map under randomized weights vs the trained map (Adebayo et al. 2018)",
                  {"spearman": Field(-1.0, 1.0, "lower"), "kendall": Field(-1.0, 1.0, "lower")},
                  {"layers": "all | top (default all)"}, "spearman"),
        CheckInfo("completeness", "sanity", "sum of attributions = S(input) − S(baseline) within tolerance",
                  {"delta": Field(-INF, INF, "none"), "abs_delta": Field(0.0, INF, "lower")},
                  {"tolerance": "float (default 1e-3)"}, "abs_delta"),
        CheckInfo("eligibility", "sanity", "attribution mass outside E is exactly zero",
                  {"outside_mass": Field(0.0, INF, "lower")}, {}, "outside_mass"),
        CheckInfo("ground_truth", "ground_truth", "agreement with causal tokens known by construction",
                  {"precision": Field(0.0, 1.0, "higher"), "dsa": Field(-1.0, 1.0, "higher"),
                   "top1": Field(0.0, 1.0, "higher")},
                  {"k": "int (default 1)", "causal": "the causal prompt tokens: texts, selectors or x indices"},
                  "precision", ranking=True),
        CheckInfo("dsa", "ground_truth", "distractor-sensitive attribution (seed 004): evidence mass − distractor mass",
                  {"value": Field(-1.0, 1.0, "higher")}, {"evidence": "selector", "distractor": "selector"}, "value"),
        CheckInfo("agreement", "agreement", "rank correlation with another method or contract on the same input",
                  {"spearman": Field(-1.0, 1.0, "higher"), "kendall": Field(-1.0, 1.0, "higher")},
                  {"method": "method name", "contract": "standard contract name"}, "spearman"),
    )
}

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
