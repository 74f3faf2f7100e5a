"""Peer toolkits as methods: ``method captum.integrated_gradients(steps = 50)``, ``method inseq.occlusion``.

An adapter method is registered like any other (:func:`scopecheck.register_method`, the public
registration API, so these entries are registered exactly as a package outside scopecheck would
register its own); its implementation lives in ``scopecheck.engine.methods.adapters`` and is
imported when the method first runs, the toolkit with it. This module is torch-free and does not
import the toolkits: ``scopecheck list`` and the validator read the entries without them.

The contracts an adapter supports are derived from the toolkit's API as the audit's toolkit table
(:mod:`scopecheck.spec.toolkits`) reads it: Captum's LLM API attributes the prompt with the target
appended teacher-forced and held fixed, per target token (``prompt_conditioned``) or summed over
the target (``span_prompt``); Inseq attributes each generated token over the context
(``local_next_token``) and, through the baseline ids of a pre-tokenized input, can hold the
generated prefix fixed (``prompt_conditioned``); it has no sequence score. A contract of another
kind is refused by the validator (``method-contract``, naming the kinds the adapter supports); a
score or operator the toolkit cannot express is refused when the method runs
(:class:`~scopecheck.errors.MethodRefused`, naming what it can).

Each entry's summary says which optional extra installs the toolkit (``pip install
"scopecheck[captum]"``); :func:`toolkit_version` reads the installed version from the package
metadata, without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from types import MappingProxyType
from typing import Any, Callable, Mapping

from scopecheck.spec.paramspec import C, I, ParamSpec
from scopecheck.spec.toolkits import TOOLKITS
from scopecheck.spec import vocabulary as vocab


@dataclass(frozen=True)
class Adapter:
    """One adapter method: the toolkit, its attribution class and the contracts and scores it can
    express (``supports``: contract kinds; ``scores``: scopecheck score kinds)."""

    toolkit: str                    # captum | inseq (the distribution and the extra)
    method: str                     # the toolkit's own method name
    summary: str
    supports: tuple[str, ...]
    scores: tuple[str, ...]
    params: Mapping[str, ParamSpec]
    impl: str

    @property
    def name(self) -> str:
        return f"{self.toolkit}.{self.method}"


def toolkit_version(toolkit: str) -> str | None:
    """The installed version of ``toolkit`` (its distribution's metadata), ``None`` when absent."""
    try:
        return metadata.version(toolkit)
    except metadata.PackageNotFoundError:
        return None


def _captum_kinds() -> tuple[str, ...]:
    t = TOOLKITS["captum"]
    return tuple(k for k in (t.per_token, t.sequence) if k is not None)


#: Inseq holds positions fixed through the baseline ids of a pre-tokenized input (the adapter
#: passes the actual id where the contract holds a token fixed), so the generated prefix can be
#: held fixed as well as attributed.
INSEQ_KINDS: tuple[str, ...] = (TOOLKITS["inseq"].per_token, "prompt_conditioned")
CAPTUM_KINDS: tuple[str, ...] = _captum_kinds()

#: Baselines and operators the toolkits take as a token id (Captum's ``TextTokenInput(baselines=)``,
#: Inseq's ``baseline_ids``): the token operators. Embedding operators (zero, mean) and deletion
#: are not expressible.
TOKEN_BASELINES: tuple[str, ...] = vocab.TOKEN_OPERATORS

_A = "scopecheck.engine.methods.adapters."
_STEPS = I(1, 100_000, 50, "n_steps of the toolkit's integral (Captum's default 50)")
_RULE = C("gauss_legendre", "riemann", default="gauss_legendre",
          help="Captum's method: gausslegendre (its default) or riemann_middle")

ADAPTERS: tuple[Adapter, ...] = (
    Adapter("captum", "integrated_gradients",
            "Captum's LLMGradientAttribution(LayerIntegratedGradients) on the input embeddings; the target is "
            "appended teacher-forced and held fixed", CAPTUM_KINDS, ("logprob",),
            {"steps": _STEPS, "rule": _RULE,
             "baseline": C(*TOKEN_BASELINES, default="pad", help="the token id TextTokenInput's baselines take "
                                                                  "(Captum's default is id 0)")},
            _A + "captum_adapter:integrated_gradients"),
    Adapter("captum", "gradient_x_input",
            "Captum's LLMGradientAttribution(LayerGradientXActivation) on the input embeddings", CAPTUM_KINDS,
            ("logprob",), {}, _A + "captum_adapter:gradient_x_input"),
    Adapter("captum", "occlusion",
            "Captum's LLMAttribution(FeatureAblation): each eligible token replaced by the baseline token, the "
            "target rescored", CAPTUM_KINDS, ("logprob", "prob"),
            {"operator": C(*TOKEN_BASELINES, default="pad", help="the token id TextTokenInput's baselines take")},
            _A + "captum_adapter:occlusion"),
    Adapter("inseq", "integrated_gradients",
            "Inseq's integrated_gradients (Captum IntegratedGradients on the input embeddings, per generated "
            "token)", INSEQ_KINDS, ("prob", "logprob", "logit"),
            {"steps": _STEPS, "rule": _RULE,
             "baseline": C(*TOKEN_BASELINES, default="unk", help="the baseline id at eligible positions "
                                                                  "(Inseq's default is unk)")},
            _A + "inseq_adapter:integrated_gradients"),
    Adapter("inseq", "occlusion",
            "Inseq's occlusion (Captum Occlusion, one token at a time, per generated token)", INSEQ_KINDS,
            ("prob", "logprob", "logit"),
            {"operator": C(*TOKEN_BASELINES, default="unk", help="the baseline id at eligible positions "
                                                                  "(Inseq's default is unk)")},
            _A + "inseq_adapter:occlusion"),
)

BY_NAME: Mapping[str, Adapter] = MappingProxyType({a.name: a for a in ADAPTERS})


def register_adapters(register: Callable[..., Any], methods: Mapping[str, Any]) -> None:
    """Register every adapter with ``register`` (the registry's :func:`~scopecheck.spec.registry.
    register_method`, which ``scopecheck.register_method`` exports) unless ``methods`` (the
    registry's table) already has it. The registry calls this with its own function and table
    (so this module never imports the registry; ``python -m scopecheck.spec.registry`` runs that
    module as ``__main__`` with a table of its own)."""
    for a in ADAPTERS:
        if a.name in methods:
            continue
        register(a.name, family="toolkit", supports=a.supports, params=a.params, impl=a.impl,
                 differentiable=a.method in ("integrated_gradients", "gradient_x_input"),
                 refuses={"encoder_decoder": f"the {a.toolkit} adapter passes the model to {a.toolkit} as a causal LM "
                                             "over prompt + output ids; its encoder–decoder input is not wired"},
                 summary=f"{a.summary}; scores {', '.join(a.scores)}; needs pip install \"scopecheck[{a.toolkit}]\"")


__all__ = ["ADAPTERS", "Adapter", "BY_NAME", "CAPTUM_KINDS", "INSEQ_KINDS", "TOKEN_BASELINES", "register_adapters",
           "toolkit_version"]
