"""The method registry: one entry per attribution method, the single source of its name,
family, supported contracts, parameters and implementation.

An entry (:class:`MethodEntry`) declares each parameter once, as a :class:`ParamSpec` (kind,
range or allowed values, default, help); the validator (``scopecheck.spec.validate``), the
engine's parameter resolution (``scopecheck.engine.methods``), ``scopecheck list``, the
static audit and the documentation's method table all read the entry. The implementation is a
lazy ``"module:attr"`` reference, imported on first use (:meth:`MethodEntry.load`), so this
module and everything that only validates stays torch-free.

:func:`register_method` adds an entry, from this package or from outside it (an adapter to
another toolkit registers its methods the same way the shipped ones are registered here).
Unknown names are :class:`UnknownMethodError`, listing what exists.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from scopecheck.errors import ContractValidationError, UnknownNameError, did_you_mean
from scopecheck.spec import vocabulary as vocab

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
AUTOREGRESSIVE_KINDS: tuple[str, ...] = ("local_next_token", "prompt_conditioned", "span_prompt")
TOKEN_KINDS: tuple[str, ...] = ("classifier", *AUTOREGRESSIVE_KINDS)
DIFFUSION_TOKEN_KINDS: tuple[str, ...] = ("state_level", "prompt_to_output")
#: Contract kinds a method may support besides the standard ones (a contract whose SCOPE
#: matches no standard contract).
EXTRA_KINDS: tuple[str, ...] = ("custom",)

#: Model architectures a contract's model may have: one stack over the whole sequence (a causal LM,
#: a masked-diffusion denoiser), or an encoder over the prompt and a decoder over ``[start, y]``.
ARCHITECTURES: tuple[str, ...] = ("decoder_only", "encoder_decoder")

#: Method families, as ``scopecheck list`` groups them.
FAMILIES: tuple[str, ...] = ("gradient", "perturbation", "surrogate", "attention", "probabilistic", "stage",
                             "external", "toolkit")

from scopecheck.spec.paramspec import (  # noqa: E402 - re-exported: entries are declared with them
    B, BATCH_HELP, C, F, FROM_MEMORY, I, PARAM_KINDS, SAMPLES_MAX, ParamSpec, batch, fits, operator, samples,
    show_value,
)


@dataclass(frozen=True)
class MethodEntry:
    """One attribution method. ``impl`` is ``"module:attr"``, a callable
    ``(AttributionProblem, params) -> MethodOutput`` imported on first :meth:`load`."""

    name: str
    family: str
    summary: str
    supports: tuple[str, ...]                              # contract kinds
    params: Mapping[str, ParamSpec] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    impl: str = ""
    differentiable: bool = False                           # needs gradients w.r.t. feature embeddings
    aliases: tuple[str, ...] = ()
    #: model architectures (:data:`ARCHITECTURES`) the method cannot run on, each with the reason the
    #: refusal states (``run_method`` refuses before the implementation runs)
    refuses: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def refusal(self, architecture: str) -> str | None:
        """Why the method cannot run on a model of ``architecture`` (``None``: it can)."""
        return self.refuses.get(architecture)

    def defaults(self) -> dict[str, object]:
        """The value of every declared parameter when the contract states none (``None``: the
        engine chooses, see the parameter's ``default_text``)."""
        return {k: p.default for k, p in self.params.items()}

    def load(self) -> Callable[..., Any]:
        """The implementation (imported once, then cached)."""
        fn = _LOADED.get(self.impl)
        if fn is None:
            fn = resolve_impl(self.impl, self.name)
            _LOADED[self.impl] = fn
        return fn


_LOADED: dict[str, Callable[..., Any]] = {}


def resolve_impl(ref: str, name: str, what: str = "method") -> Callable[..., Any]:
    """The object a ``"module:attr"`` reference names (``attr`` may be dotted); a
    :class:`RegistryError` naming the ``what`` (``method``, ``check``) when it cannot be imported
    or is not callable."""
    mod_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"{what} `{name}`: its implementation `{ref}` cannot be imported ({exc})",
                            expected="an importable `package.module:function`", rule="registry") from exc
    if not callable(obj):
        raise RegistryError(f"{what} `{name}`: `{ref}` is not callable", expected="a function (problem, params)",
                            rule="registry")
    return obj  # type: ignore[no-any-return]


class RegistryError(ContractValidationError, ValueError):
    """A method registration that cannot be honoured (a clash, an unknown kind, a bad parameter
    declaration, an implementation that cannot be imported)."""

    kind = "registry error"

    def __str__(self) -> str:  # no source position: a registration is Python, not a contract file
        return plain_message(self)


class UnknownMethodError(UnknownNameError, KeyError):
    """A method name the registry does not know; the message lists what exists."""

    def __str__(self) -> str:
        return self.message + (f"; hint: {self.hint}" if self.hint else "")


def plain_message(e: ContractValidationError) -> str:
    """An error's message with its expected and hint, for errors that have no source position."""
    return e.message + "".join(f"; {k}: {v}" for k, v in (("expected", e.expected), ("hint", e.hint)) if v)


#: The registry: canonical name -> entry, in registration order. Read it; add with
#: :func:`register_method`.
METHODS: dict[str, MethodEntry] = {}
#: Other names users reach for, each resolving to a registered method.
METHOD_ALIASES: dict[str, str] = {}

#: Parameters every method accepts (the engine handles them, not the method): ``aggregate = words``
#: also reports the map per word, each word's score the sum of its tokens' (scopecheck.engine.words).
COMMON_METHOD_PARAMS: dict[str, ParamSpec] = {
    "aggregate": C(*vocab.AGGREGATIONS, default=vocab.DEFAULT_AGGREGATION,
                   help="report the map per token, or also per word"),
}


def _bad_param(name: str, key: str, why: str) -> RegistryError:
    return RegistryError(f"method `{name}`: parameter `{key}` {why}",
                         expected="a ParamSpec with a default that fits it", rule="registry")


def valid_method_name(name: str) -> bool:
    """An identifier, or two joined by a dot (``captum.integrated_gradients``: a toolkit's method)."""
    parts = name.split(".")
    return len(parts) <= 2 and all(p.isidentifier() for p in parts)


def _check_entry(e: MethodEntry) -> None:
    if not valid_method_name(e.name):
        raise RegistryError(f"method name {e.name!r} is not an identifier", expected="a name like `my_method` or, "
                            "for a toolkit's method, `toolkit.method`", rule="registry")
    kinds = (*CONTRACT_KINDS, *EXTRA_KINDS)
    bad = [k for k in e.supports if k not in kinds]
    if bad or not e.supports:
        raise RegistryError(f"method `{e.name}`: unknown contract kind(s) {', '.join(bad) or '(none given)'}",
                            expected=f"supports from: {', '.join(kinds)}", rule="registry")
    if ":" not in e.impl:
        raise RegistryError(f"method `{e.name}`: implementation {e.impl!r} is not a `module:attr` reference",
                            expected="impl = \"package.module:function\"", rule="registry")
    odd = [a for a in e.refuses if a not in ARCHITECTURES]
    if odd or any(not isinstance(r, str) or not r.strip() for r in e.refuses.values()):
        raise RegistryError(f"method `{e.name}`: refuses {', '.join(odd) or 'an architecture without a reason'}",
                            expected=f"refuses = {{architecture: reason}}, architectures: {', '.join(ARCHITECTURES)}",
                            rule="registry")
    for key, p in e.params.items():
        if key.startswith("_") or key in COMMON_METHOD_PARAMS:
            raise _bad_param(e.name, key, "is reserved")
        if p.kind not in PARAM_KINDS:
            raise _bad_param(e.name, key, f"has unknown kind {p.kind!r} (one of {', '.join(PARAM_KINDS)})")
        if p.default is None:
            if p.default_text is None:
                raise _bad_param(e.name, key, "has no default and no default_text saying how the engine chooses it")
        elif not fits(p, p.default):
            raise _bad_param(e.name, key, f"has a default {p.default!r} outside {p.describe()}")


def register_method(
    name: str | MethodEntry,
    *,
    family: str = "",
    summary: str = "",
    supports: Iterable[str] = (),
    params: Mapping[str, ParamSpec] | None = None,
    impl: str = "",
    differentiable: bool = False,
    aliases: Iterable[str] = (),
    replace: bool = False,
    refuses: Mapping[str, str] | None = None,
) -> MethodEntry:
    """Add a method to the registry and return its entry.

    ``name`` is the method's name (or a complete :class:`MethodEntry`); ``impl`` the
    ``"module:attr"`` of its function ``(AttributionProblem, params) -> MethodOutput``, imported
    when the method first runs. ``params`` maps each parameter to its :class:`ParamSpec`
    (every one with a default). ``refuses`` maps a model architecture (:data:`ARCHITECTURES`) the
    method cannot run on to the reason. A name or alias already taken is a :class:`RegistryError`
    unless ``replace``.
    """
    if isinstance(name, MethodEntry):
        entry = name
    else:
        entry = MethodEntry(name=name, family=family, summary=summary, supports=tuple(supports),
                            params=MappingProxyType(dict(params or {})), impl=impl, differentiable=differentiable,
                            aliases=tuple(aliases), refuses=MappingProxyType(dict(refuses or {})))
    if not isinstance(entry.params, MappingProxyType):
        entry = dataclasses.replace(entry, params=MappingProxyType(dict(entry.params)))
    if not isinstance(entry.refuses, MappingProxyType):
        entry = dataclasses.replace(entry, refuses=MappingProxyType(dict(entry.refuses)))
    _check_entry(entry)
    old = METHODS.get(entry.name)
    mine = (entry.name, *(old.aliases if old is not None else ()))
    taken = [n for n in (entry.name, *entry.aliases)
             if (n in METHODS or n in METHOD_ALIASES) and not (replace and n in mine)]
    if taken:
        raise RegistryError(f"method name(s) {', '.join(taken)} already registered", rule="registry",
                            expected="a new name", hint="pass replace=True to replace the entry" if not replace else
                            "an alias of another method cannot be taken over")
    if old is not None:
        for a in old.aliases:
            METHOD_ALIASES.pop(a, None)
    METHODS[entry.name] = entry
    for a in entry.aliases:
        METHOD_ALIASES[a] = entry.name
    _LOADED.pop(entry.impl, None)
    return entry


def unregister_method(name: str) -> MethodEntry:
    """Remove a method (and its aliases) from the registry; returns the entry removed."""
    entry = get_method(name)
    del METHODS[entry.name]
    for a in entry.aliases:
        METHOD_ALIASES.pop(a, None)
    return entry


def canonical_name(name: str) -> str:
    """The registered name ``name`` stands for (aliases resolved); unchanged when unknown."""
    return METHOD_ALIASES.get(name, name)


def get_method(name: str) -> MethodEntry:
    """The entry of ``name`` (or of the method it is an alias of); :class:`UnknownMethodError`
    listing the registered methods and aliases otherwise."""
    entry = METHODS.get(canonical_name(name))
    if entry is None:
        known = sorted(METHODS)
        aliases = ", ".join(f"{a} -> {t}" for a, t in sorted(METHOD_ALIASES.items()))
        raise UnknownMethodError(f"method {name!r} is not a known attribution method; available: "
                                 f"{', '.join(known)} (aliases: {aliases or 'none'})",
                                 expected=f"one of: {', '.join(known)}",
                                 hint=did_you_mean(name, [*known, *METHOD_ALIASES]), rule="unknown-name")
    return entry


def supported_methods(kind: str) -> list[str]:
    """Names of the registered methods that support contract ``kind``."""
    return [name for name, info in METHODS.items() if kind in info.supports]


def method_table() -> str:
    """The documentation's method table (Markdown; ``python docs/gen.py`` writes it into
    docs/reference/methods.md), generated from the registry: one row per method
    with its family, the contracts it supports and its parameters with their defaults."""
    rows = ["| method | family | contracts | parameters (default) |", "|---|---|---|---|"]
    for e in METHODS.values():
        kinds = ", ".join(f"`{k}`" for k in e.supports)
        prm = "; ".join(f"`{k}` = {p.describe() if p.kind in ('choice', 'bool') else p.kind} "
                        f"({p.shown_default()})" for k, p in e.params.items()) or "none"
        alias = "".join(f" (`{a}`)" for a in e.aliases)
        rows.append(f"| `{e.name}`{alias} | {e.family} | {kinds} | {prm.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------------------ the shipped methods

# what an encoder–decoder (engine/seq2seq.py) cannot give a method, and so why it is refused there
_ED_ROLLOUT = {"encoder_decoder": "attention rollout multiplies one stack's (L, L) attention maps; an encoder–decoder "
                                  "has encoder self-attention, decoder self-attention and cross-attention between "
                                  "them, which this rollout does not compose"}
_ED_PROMPT_LM = {"encoder_decoder": "it draws prompt tokens from the model's own p(x_i | x_<i), and an encoder–decoder "
                                    "has no distribution over its input (the encoder reads the prompt bidirectionally)"}
_ED_HETA = {"encoder_decoder": "HETA's gate is the attention-value rollout of one causal stack and its curvature is "
                               "read through that stack's layers; an encoder–decoder has two stacks joined by "
                               "cross-attention"}
_ED_LRP = {"encoder_decoder": "scopecheck's AttnLRP rules are written for Llama-family decoder-only blocks"}

_GRAD = TOKEN_KINDS + DIFFUSION_TOKEN_KINDS
_PERT = TOKEN_KINDS + DIFFUSION_TOKEN_KINDS
_M = "scopecheck.engine.methods."

for _e in (
    MethodEntry("saliency", "gradient", "gradient of S w.r.t. each eligible embedding, L2 norm", _GRAD,
                {"norm": C("l2", "l1", "sum", default="l2", help="how the gradient row is reduced")},
                _M + "gradients:saliency", differentiable=True),
    MethodEntry("gradient_x_input", "gradient", "gradient · embedding, summed over the embedding", _GRAD, {},
                _M + "gradients:gradient_x_input", differentiable=True, aliases=("input_x_gradient",)),
    MethodEntry("integrated_gradients", "gradient",
                "path integral of gradients from a baseline to the input over eligible embeddings only", _GRAD,
                {"steps": I(1, 100_000, 64, "quadrature nodes of the path integral"),
                 "rule": C("riemann", "gauss_legendre", default="gauss_legendre", help="quadrature rule"),
                 "baseline": C(*vocab.EMBEDDING_OPERATORS, default="pad",
                               help="the embedding the path starts from (eligible rows only)"),
                 "batch_size": batch()},
                _M + "gradients:integrated_gradients", differentiable=True, aliases=("ig",)),
    MethodEntry("occlusion", "perturbation", "S(input) − S(input with one eligible token perturbed)", _PERT,
                {"operator": operator("pad"), "batch_size": batch()},
                _M + "perturbation:occlusion", aliases=("feature_ablation",)),
    MethodEntry("lime", "surrogate", "weighted linear surrogate on random eligible-token masks", _PERT,
                {"samples": samples(500, "random masks"), "operator": operator("pad"),
                 "kernel_width": F(0.0, 1e6, open_low=True, default=0.75, help="width of the exponential kernel"),
                 "batch_size": batch()},
                _M + "surrogate:lime"),
    MethodEntry("kernel_shap", "surrogate", "KernelSHAP estimate of Shapley values over eligible tokens", _PERT,
                {"samples": samples(2048, "sampled coalitions"), "operator": operator("pad"), "batch_size": batch()},
                _M + "surrogate:kernel_shap", aliases=("shap",)),
    MethodEntry("exact_shapley", "perturbation",
                "exact Shapley values by enumeration (at most 10 eligible features)", _PERT,
                {"operator": operator("pad"), "batch_size": batch()},
                _M + "perturbation:exact_shapley"),
    MethodEntry("attention_rollout", "attention",
                "attention rollout (Abnar & Zuidema 2020) read at the target rows, causal-mask aware", TOKEN_KINDS,
                {"residual": B(True, "add the identity for the residual stream")},
                _M + "rollout:attention_rollout", refuses=_ED_ROLLOUT),
    MethodEntry("reagent", "perturbation",
                "ReAGent: recursive replacement of random eligible tokens by a model's predictions",
                AUTOREGRESSIVE_KINDS,
                {"steps": I(1, 100_000, 50, "replacement rounds"),
                 "ratio": F(0.0, 1.0, open_low=True, default=0.3, help="share of eligible tokens replaced per round")},
                _M + "reagent:reagent", refuses=_ED_PROMPT_LM),
    MethodEntry("context_cite", "surrogate",
                "ContextCite-style sparse linear surrogate of S on random source ablations",
                ("span_prompt", "prompt_to_output"),
                {"samples": samples(256, "random source ablations"), "operator": operator("delete")},
                _M + "surrogate:context_cite"),
    MethodEntry("probabilistic_as", "probabilistic",
                "AS of seed 003: log p(y|x) − log p(y|x with token i marginalised), plus contextual entropies",
                ("span_prompt",),
                {"top_p": F(0.0, 1.0, open_low=True, default=0.999999,
                            help="nucleus of p(x_i | x_<i) whose chains are read, 1 = the full vocabulary"),
                 "prune": F(0.0, 0.5, default=5e-5,
                            help="chains read in stages (one row, two, then doubling), candidates outside the "
                                 "1-prune nucleus of the partial posteriors dropped after each (100x looser after "
                                 "the first row), their unread rows extrapolated like the kept ones; top_p = 1 "
                                 "with prune = 0 is exact AS")},
                _M + "probabilistic:probabilistic_as", aliases=("as",), refuses=_ED_PROMPT_LM),
    MethodEntry("heta", "gradient",
                "HETA (seed 004): attention-value rollout gate × (β Hessian sensitivity + γ KL under masking)",
                ("local_next_token", "prompt_conditioned"),
                {"beta": F(-1e6, 1e6, default=0.5, help="weight of the Hessian sensitivity"),
                 "gamma": F(-1e6, 1e6, default=0.5, help="weight of the KL under masking"),
                 "probes": I(1, 100_000, help="fixed Hutchinson probes per token", default_text="adaptive, see rse"),
                 "rse": F(0.0, 0.999, open_low=True, default=0.1,
                          help="adaptive probes until each S_i's relative standard error is below it"),
                 "max_probes": I(2, 100_000, 256, "most adaptive probes per token"),
                 "curvature": C("hutchinson", "lowrank", default="hutchinson", help="curvature estimator"),
                 "rank": I(1, 1_000_000, 64, "lowrank range-finder rank"),
                 "window": I(0, 1_000_000, 0, "tokens per window, 0 = none"),
                 "stride": I(0, 1_000_000, 0, "window stride, 0 = window // 2"),
                 "layers": I(0, 100_000, 0, "HETA-LS, gate and curvature in the top k layers only, 0 = all")},
                _M + "heta:heta", differentiable=True, refuses=_ED_HETA),
    MethodEntry("attnlrp", "gradient",
                "AttnLRP (Achtibat et al. 2024), scopecheck's own rules for Llama (LXT needs transformers < 5): "
                "relevance of the target logit(s), one backward; conserved up to the softmax rule's absorption",
                AUTOREGRESSIVE_KINDS, {}, _M + "attnlrp:attnlrp", differentiable=True, refuses=_ED_LRP),
    MethodEntry("external", "external",
                "a map computed elsewhere, read from a JSON or CSV file (scopecheck/spec/map.schema.json), aligned "
                "to the contract's tokens and checked against E; checks that rerun the method are refused",
                TOKEN_KINDS,
                {"map": ParamSpec("any", help="the map file, relative to the contract's folder", default_text="required")},
                "scopecheck.engine.methods.external:external"),
    MethodEntry("stage_perturbation", "stage",
                "per-stage change in the output score when a denoising stage is perturbed and the chain rerun",
                ("denoising_stage",),
                {"perturbation": C(*vocab.PERTURBATIONS, default="noop", help="what the perturbed stage does"),
                 "shift": I(-4096, 4096, 1, "extra slots a `schedule` stage commits"),
                 "substitute": C("second_best", "resample", default="second_best",
                                 help="the alternative step of a `substitute` stage")},
                _M + "stages:stage_perturbation"),
):
    register_method(_e)
del _e

# the peer toolkits' adapters (captum.*, inseq.*), registered as an outside package would register its own
from scopecheck.spec.adapters import register_adapters  # noqa: E402 - after register_method is defined

register_adapters(register_method, METHODS)

#: The entry-point group a distribution declares its methods in (``[project.entry-points."scopecheck.methods"]``):
#: each entry point names a :class:`MethodEntry` or a function that registers methods when called.
ENTRY_POINT_GROUP = "scopecheck.methods"
#: Entry points that failed to load, ``name -> reason`` (``scopecheck list`` shows none of their methods).
PLUGIN_ERRORS: dict[str, str] = {}


def load_entry_points(register: Callable[..., MethodEntry] = register_method) -> list[str]:
    """Register the methods of every installed distribution's ``scopecheck.methods`` entry points
    (read when the registry is first imported; the implementations stay lazy ``module:attr``
    references). An entry point that cannot be loaded or registered is recorded in
    :data:`PLUGIN_ERRORS` and skipped, so one broken package does not break scopecheck.
    Returns the names of the entry points loaded."""
    from importlib.metadata import entry_points

    done = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if isinstance(obj, MethodEntry) or type(obj).__name__ == "MethodEntry":
                if obj.name not in METHODS:
                    register(obj)
            elif callable(obj):
                obj()
            else:
                raise RegistryError(f"entry point {ep.value} is neither a MethodEntry nor a function",
                                    rule="registry")
            done.append(ep.name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
            PLUGIN_ERRORS[ep.name] = f"{ep.value}: {type(exc).__name__}: {exc}"
    return done


load_entry_points(register_method)


__all__ = ["AUTOREGRESSIVE_KINDS", "ENTRY_POINT_GROUP", "PLUGIN_ERRORS", "load_entry_points", "B", "C", "COMMON_METHOD_PARAMS", "CONTRACT_KINDS", "DIFFUSION_TOKEN_KINDS",
           "EXTRA_KINDS", "F", "FAMILIES", "I", "METHODS", "METHOD_ALIASES", "MethodEntry", "PARAM_KINDS", "ParamSpec",
           "RegistryError", "TOKEN_KINDS", "UnknownMethodError", "batch", "canonical_name", "fits", "get_method",
           "method_table", "plain_message", "register_method", "resolve_impl", "show_value", "supported_methods",
           "unregister_method", "valid_method_name"]


if __name__ == "__main__":  # python -m scopecheck.spec.registry: the documentation's method table
    print(method_table(), end="")
