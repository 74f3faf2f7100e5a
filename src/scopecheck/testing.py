"""Assertion helpers and pytest fixtures for attribution tests written in Python.

    from scopecheck.testing import assert_top, assert_zero_outside_eligible

    def test_noir(scope_run):
        r = scope_run(model="reference:translate-ar", prompt="Translate to French: The dog is black.",
                      output="Le chien est noir.", contract="prompt_conditioned", target="noir",
                      method="integrated_gradients", steps=256, baseline="zero")
        assert_top(r, "black")
        assert_zero_outside_eligible(r)

Each failing assertion prints the contract and the token heatmap. The fixtures are
registered by the scopecheck pytest plugin (``scope_run``, ``scope_check``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from scopecheck.checks.catalog import CHECKS
from scopecheck.report.terminal import heatmap_text

if TYPE_CHECKING:
    from scopecheck.engine.result import AttributionResult

__all__ = ["AttributionAssertionError", "assert_better_than_random", "assert_check", "assert_complete",
           "assert_mass", "assert_top", "assert_zero_outside_eligible", "scope_check", "scope_run"]


class AttributionAssertionError(AssertionError):
    """An attribution property did not hold; the message carries the map and its contract."""


def _fail(result: AttributionResult, message: str) -> None:
    raise AttributionAssertionError(f"{message}\n\n{heatmap_text(result, color=False)}")


def assert_top(result: AttributionResult, text: str, k: int = 1) -> None:
    """``text`` is among the ``k`` highest-attributed eligible tokens."""
    top = result.top(k)
    if text not in top:
        _fail(result, f"expected {text!r} in the top {k}, got {top}")


def assert_mass(result: AttributionResult, selector: str, *, at_least: float | None = None, at_most: float | None = None) -> float:
    """Share of absolute mass on ``selector`` (selector text, e.g. ``'y[<"noir"]'``) within bounds."""
    value = result.mass(selector)
    if at_least is not None and value < at_least:
        _fail(result, f"mass({selector}) = {value:.6g} < {at_least}")
    if at_most is not None and value > at_most:
        _fail(result, f"mass({selector}) = {value:.6g} > {at_most}")
    return value


def assert_zero_outside_eligible(result: AttributionResult) -> None:
    bad = [(t.text, t.score) for t in result.tokens if not t.eligible and t.score != 0.0]
    if bad:
        _fail(result, f"attribution outside E: {bad}")


def assert_check(result: AttributionResult, name: str, field: str | None = None, *, above: float | None = None,
                 below: float | None = None, **params: Any) -> Any:
    """Run check ``name`` (e.g. ``deletion``) and bound one of its fields; returns the CheckResult."""
    from scopecheck.checks.registry import run_check  # lazy: imports torch

    res = run_check(name, result, params, seed=result.seed)
    fld = field or CHECKS[name].default_field
    v = res.fields[fld]
    if above is not None and not v > above:
        _fail(result, f"{name}.{fld} = {v:.6g}, not above {above} (config {res.config})")
    if below is not None and not v < below:
        _fail(result, f"{name}.{fld} = {v:.6g}, not below {below} (config {res.config})")
    if above is None and below is None and res.passed is False:
        _fail(result, f"{name} failed: {res.note}")
    return res


def assert_complete(result: AttributionResult, tolerance: float = 1e-3) -> None:
    assert_check(result, "completeness", tolerance=tolerance)


def assert_better_than_random(result: AttributionResult, name: str = "deletion", field: str = "aopc", **params: Any) -> None:
    """The map's ranking beats the mean of random rankings on a ranking check."""
    from scopecheck.checks.registry import random_baseline, run_check  # lazy: imports torch

    mine = run_check(name, result, params, seed=result.seed).fields[field]
    rnd = random_baseline(name, result, params).fields[field]
    if not mine > rnd:
        _fail(result, f"{name}.{field} = {mine:.6g} is not better than random ({rnd:.6g})")


def scope_run(request: Any) -> Callable[..., Any]:
    """Fixture body: ``scope_run(**contract)`` runs :func:`scopecheck.attribute` on the session's device."""
    from scopecheck.engine.run import attribute  # lazy: imports torch

    device = request.config.getoption("scope_device", default="auto")

    def _run(**kwargs: Any) -> Any:
        kwargs.setdefault("device", device)
        return attribute(**kwargs)

    return _run


def scope_check(request: Any) -> Callable[..., Any]:
    """Fixture body: ``scope_check(result, name, **params)`` runs a check."""
    from scopecheck.checks.registry import run_check  # lazy: imports torch

    def _check(result: AttributionResult, name: str, **params: Any) -> Any:
        return run_check(name, result, params, seed=result.seed)

    return _check
