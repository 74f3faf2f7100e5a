"""The check registry at run time (issue 24): the defaults the entries state are the ones the
checks use, a parameter the entry declares runs, and a check registered from outside the
package runs through ``run_check`` like a shipped one. The torch-free half is in
tests/spec/test_check_registry.py."""

from __future__ import annotations

import math

import pytest

from scopecheck.checks import context
from scopecheck.checks.params import check_params
from scopecheck.checks.registry import random_baseline, run_check
from scopecheck.spec.check_registry import (
    CHECKS, PROTOCOL_PARAMS, CheckParamError, Field, UnknownCheckError, register_check, unregister_check,
)
from scopecheck.spec.registry import I
from scopecheck.spec.vocabulary import OPERATOR_FALLBACK, PERTURBATIONS


@pytest.fixture(scope="module")
def occ_zero(run_tiny):
    """Occlusion with the `zero` operator under span_prompt (the tiny model also has `pad`,
    the first of the fallback order, so an unstated check operator of `pad` would differ)."""
    return run_tiny("span_prompt", "occlusion(operator = zero)")


def test_unstated_check_operator_is_the_methods_as_the_entry_says(occ_zero):
    """Drift case: the catalog's help said a check's `operator` defaults to pad; the checks use
    the method's operator (here zero) when nobody states one, as the entry's default now says,
    and the error that lists the declared parameters says so instead of `(default pad)`."""
    assert "pad" in occ_zero.compiled.problem.operators
    out = run_check("comprehensiveness", occ_zero)
    assert out.config["operator"] == "zero"
    assert run_check("comprehensiveness", occ_zero, {"operator": "pad"}).config["operator"] == "pad"
    with pytest.raises(ValueError) as err:
        run_check("comprehensiveness", occ_zero, {"kk": 1})
    msg = str(err.value)
    assert "(default pad)" not in msg and "the method's operator" in msg
    assert all(p in msg for p in PERTURBATIONS) and ", ".join(OPERATOR_FALLBACK) in msg
    assert isinstance(err.value, CheckParamError) and "did you mean `k`" in msg


def test_entry_defaults_are_the_values_the_checks_run_with(occ_zero):
    """Every default an entry states is what the check records in its config when the
    parameter is unstated, and stating that default gives the same fields."""
    for name in ("comprehensiveness", "sufficiency", "soft_nc", "infidelity"):
        e = CHECKS[name]
        unstated = run_check(name, occ_zero)
        for key, v in e.defaults().items():
            assert unstated.config[key] == v, (name, key)
        stated = run_check(name, occ_zero, e.defaults())
        assert stated.fields == pytest.approx(unstated.fields, nan_ok=True), name
    assert check_params("comprehensiveness", None) == {"k": 0.2}
    assert check_params("deletion", {"steps": 2}) == {"steps": 2}   # no None defaults passed on


def test_stated_batch_size_runs_and_changes_no_number(occ_zero):
    whole = run_check("deletion", occ_zero, {"steps": 3})
    small = run_check("deletion", occ_zero, {"steps": 3, "batch_size": 1})
    assert small.fields == pytest.approx(whole.fields, rel=0, abs=1e-12, nan_ok=True)


def test_unknown_check_at_run_time_lists_what_exists(occ_zero):
    with pytest.raises(UnknownCheckError) as err:
        run_check("delition", occ_zero)
    assert isinstance(err.value, KeyError) and all(n in str(err.value) for n in CHECKS)


def peer_drop(result, params=None, *, ranking=None, seed=0):
    """A check from outside the package: S(x) − S(x without the top `flips` features), written
    against the public check context only."""
    ctx = context.setup("peer_drop", result, params, ranking=ranking, seed=seed)
    flips = int(ctx.params["flips"])
    s = ctx.score_sets([[], ctx.ranking[:flips]]).tolist()
    return ctx.make({"value": s[0] - s[1]}, flips=flips)


@pytest.fixture
def peer():
    entry = register_check("peer_drop", family="faithfulness", summary="drop of the top features",
                           fields={"value": Field(-math.inf, math.inf, "higher")}, default_field="value",
                           params={"flips": I(1, 64, 2, "top features removed")}, protocol=True, ranking=True,
                           impl=f"{__name__}:peer_drop")
    yield entry
    unregister_check("peer_drop")


def test_a_registered_check_runs_like_a_shipped_one(peer, occ_zero):
    """The registered check is resolved from its `module:attr`, gets its entry's defaults and
    protocol parameters, and agrees with comprehensiveness at the same count (an independent
    implementation of the same number); its random baseline is defined since it ranks."""
    out = run_check("peer_drop", occ_zero)
    ref = run_check("comprehensiveness", occ_zero, {"k": 2})
    assert out.config["flips"] == 2 and out.config["operator"] == "zero"
    assert out.fields["value"] == pytest.approx(ref.fields["value"], rel=0, abs=1e-12)
    assert run_check("peer_drop", occ_zero, {"flips": 1, "operator": "pad"}).fields["value"] == pytest.approx(
        run_check("comprehensiveness", occ_zero, {"k": 1, "operator": "pad"}).fields["value"], rel=0, abs=1e-12)
    base = random_baseline("peer_drop", occ_zero, seeds=(0, 1))
    assert len(base.extra["per_seed"]["value"]) == 2
    assert list(peer.params) == [*PROTOCOL_PARAMS, "flips"]
