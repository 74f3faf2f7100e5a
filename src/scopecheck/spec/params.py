"""Type and range of every number and name a contract can pass: decoding and estimator
parameters and the seed here; method and check parameters in their registry entries
(:mod:`scopecheck.spec.registry`, :mod:`scopecheck.spec.check_registry`), whose
:class:`ParamSpec` this module checks DSL values against.

Checked by the validator before anything runs, so a bad value is a positioned
:class:`~scopecheck.errors.ContractError` naming the parameter, the value and the allowed range
instead of an exception from numpy or torch hours later. Torch-free.
"""

from __future__ import annotations

from scopecheck.errors import ContractValidationError, Span
from scopecheck.spec import model as m
from scopecheck.spec.registry import F, I, ParamSpec, fits
from scopecheck.spec.text import fmt_selector

SEED_MAX = 2 ** 63 - 1


DECODING_PARAMS: dict[str, ParamSpec] = {
    "max_new_tokens": I(1, 4096), "seed": I(0, SEED_MAX), "temperature": F(0.0, 100.0, open_low=True),
    "top_p": F(0.0, 1.0, open_low=True), "top_k": I(1, 1_000_000),
}
ESTIMATOR_PARAMS: dict[str, ParamSpec] = {"samples": I(1, 100_000)}
SEED = I(0, SEED_MAX)


def check_value(spec: ParamSpec, key: str, value: object, span: Span, owner: str) -> ContractValidationError | None:
    """``None`` when ``value`` fits ``spec``; otherwise a positioned error naming the parameter,
    the value and what is allowed."""
    if fits(spec, value):
        return None
    shown = _show(value)
    return ContractValidationError(f"{owner}: `{key} = {shown}` is out of range" if _numeric(value)
                                   else f"{owner}: `{key} = {shown}` is not allowed", span,
                                   expected=f"{key} = {spec.describe()}", rule="params")


def _numeric(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _show(v: object) -> str:
    if isinstance(v, m.Ident):
        return v.name
    if isinstance(v, m.Text):
        return f'"{v.value}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, m.Selector):
        return fmt_selector(v)
    return str(v)


def check_params(table: dict[str, ParamSpec], params: m.Params, owner: str) -> list[ContractValidationError]:
    """Errors for declared parameters whose values do not fit (unknown names are reported elsewhere)."""
    out = []
    for p in params:
        spec = table.get(p.key)
        if spec is not None:
            err = check_value(spec, p.key, p.value, p.span, owner)
            if err is not None:
                out.append(err)
    return out
