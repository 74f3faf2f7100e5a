"""The declared method table: which contracts each attribution method supports.

Torch-free on purpose: the contract validator and ``scopecheck list`` read it without
loading a model. Implementations are registered against these names in
``scopecheck.engine.methods``; a method exists only if it is declared here.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The seven settings of seed 000, Table 1, in table order.
CONTRACT_KINDS: tuple[str, ...] = (
    "classifier",
    "local_next_token",
    "prompt_conditioned",
    "span_prompt",
    "state_level",
    "denoising_stage",
    "prompt_to_output",
)
AUTOREGRESSIVE_KINDS = ("local_next_token", "prompt_conditioned", "span_prompt")
TOKEN_KINDS = ("classifier", *AUTOREGRESSIVE_KINDS)
DIFFUSION_TOKEN_KINDS = ("state_level", "prompt_to_output")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str                      # gradient | perturbation | surrogate | attention | probabilistic | stage
    summary: str
    supports: tuple[str, ...]        # contract kinds
    params: dict[str, str]           # parameter -> short description (with default)
    differentiable: bool = False     # needs gradients w.r.t. feature embeddings


_GRAD = TOKEN_KINDS + DIFFUSION_TOKEN_KINDS
_PERT = TOKEN_KINDS + DIFFUSION_TOKEN_KINDS
_OPS = "pad | mask | unk | zero | mean | delete"

METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo("saliency", "gradient", "gradient of S w.r.t. each eligible embedding, L2 norm",
                   _GRAD, {"norm": "l2 | l1 | sum (default l2)"}, differentiable=True),
        MethodInfo("gradient_x_input", "gradient", "gradient · embedding, summed over the embedding",
                   _GRAD, {}, differentiable=True),
        MethodInfo("integrated_gradients", "gradient",
                   "path integral of gradients from a baseline to the input over eligible embeddings only",
                   _GRAD, {"steps": "int (default 64)", "rule": "riemann | gauss_legendre (default gauss_legendre)",
                           "baseline": "pad | zero | mask | unk (default pad)", "batch_size": "int (default 32)"},
                   differentiable=True),
        MethodInfo("occlusion", "perturbation", "S(input) − S(input with one eligible token perturbed)",
                   _PERT, {"operator": f"{_OPS} (default pad)", "batch_size": "int (default 32)"}),
        MethodInfo("lime", "surrogate", "weighted linear surrogate on random eligible-token masks",
                   _PERT, {"samples": "int (default 500)", "operator": f"{_OPS} (default pad)",
                           "kernel_width": "float (default 0.75)", "batch_size": "int (default 32)"}),
        MethodInfo("kernel_shap", "surrogate", "KernelSHAP estimate of Shapley values over eligible tokens",
                   _PERT, {"samples": "int (default 2048)", "operator": f"{_OPS} (default pad)",
                           "batch_size": "int (default 64)"}),
        MethodInfo("exact_shapley", "perturbation", "exact Shapley values by enumeration (at most 10 eligible features)",
                   _PERT, {"operator": f"{_OPS} (default pad)", "batch_size": "int (default 64)"}),
        MethodInfo("attention_rollout", "attention",
                   "attention rollout (Abnar & Zuidema 2020) read at the target rows, causal-mask aware",
                   TOKEN_KINDS, {"residual": "bool (default true)"}),
        MethodInfo("reagent", "perturbation",
                   "ReAGent: recursive replacement of random eligible tokens by a model's predictions",
                   AUTOREGRESSIVE_KINDS, {"steps": "int (default 50)", "ratio": "float (default 0.3)"}),
        MethodInfo("context_cite", "surrogate",
                   "ContextCite-style sparse linear surrogate of S on random source ablations",
                   ("span_prompt", "prompt_to_output"), {"samples": "int (default 256)", "operator": f"{_OPS} (default delete)"}),
        MethodInfo("probabilistic_as", "probabilistic",
                   "AS of seed 003: log p(y|x) − log p(y|x with token i marginalised), plus contextual entropies",
                   ("span_prompt",), {"top_p": "float in (0,1]: nucleus of p(x_i | x_<i) whose chains are read (default 0.999999), 1 = the full vocabulary",
                                        "prune": "float in [0,0.5]: chains read in stages (one row, two, then doubling), candidates outside the 1-prune nucleus of the partial posteriors dropped after each (100x looser after the first row), their unread rows extrapolated like the kept ones (default 5e-5); top_p = 1 with prune = 0 is exact AS"}),
        MethodInfo("heta", "gradient",
                   "HETA (seed 004): attention-value rollout gate × (β Hessian sensitivity + γ KL under masking)",
                   ("local_next_token", "prompt_conditioned"),
                   {"beta": "float (default 0.5)", "gamma": "float (default 0.5)",
                    "probes": "int: fixed Hutchinson probes per token (default: adaptive, see rse)",
                    "rse": "float: adaptive probes until each S_i's relative standard error is below it (default 0.1)",
                    "max_probes": "int: most adaptive probes per token (default 256)",
                    "curvature": "hutchinson | lowrank (default hutchinson)",
                    "rank": "int: lowrank range-finder rank (default 64)",
                    "window": "int: tokens per window, 0 = none (default 0)",
                    "stride": "int: window stride, 0 = window // 2 (default 0)",
                    "layers": "int: HETA-LS, gate and curvature in the top k layers only, 0 = all (default 0)"},
                   differentiable=True),
        MethodInfo("stage_perturbation", "stage",
                   "per-stage change in the output score when a denoising stage is perturbed and the chain rerun",
                   ("denoising_stage",), {"perturbation": "noop | schedule | substitute (default noop)",
                                          "shift": "int: extra slots a `schedule` stage commits (default 1)",
                                          "substitute": "second_best | resample (default second_best)"}),
    )
}

#: Aliases users reach for; they resolve to a declared method.
METHOD_ALIASES: dict[str, str] = {
    "ig": "integrated_gradients",
    "feature_ablation": "occlusion",
    "input_x_gradient": "gradient_x_input",
    "shap": "kernel_shap",
    "as": "probabilistic_as",
}


def supported_methods(kind: str) -> list[str]:
    """Names of the declared methods that support contract ``kind``."""
    return [name for name, info in METHODS.items() if kind in info.supports]
