"""scopecheck.testing helpers and fixtures, and a property test with scopecheck.strategies."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from scopecheck.strategies import reference_examples
from scopecheck.testing import (
    AttributionAssertionError,
    assert_better_than_random,
    assert_complete,
    assert_mass,
    assert_top,
    assert_zero_outside_eligible,
)

FIG1 = dict(model="reference:translate-ar", prompt="Translate to French: The dog is black.",
            output="Le chien est noir.", target="noir")


def test_fixture_and_helpers_on_figure1(scope_run) -> None:
    r = scope_run(**FIG1, contract="prompt_conditioned", method="integrated_gradients", steps=256,
                  baseline="zero", dtype="float64")
    assert_top(r, "black")
    assert_zero_outside_eligible(r)
    assert_mass(r, "y", at_most=0.0)
    assert_complete(r, tolerance=1e-3)
    assert_better_than_random(r, "deletion", operator="zero")


def test_failing_helper_prints_the_map(scope_run) -> None:
    r = scope_run(**FIG1, contract="prompt_conditioned", method="occlusion", operator="zero")
    with pytest.raises(AttributionAssertionError) as exc:
        assert_top(r, "Translate")
    msg = str(exc.value)
    assert "expected 'Translate' in the top 1" in msg and "black" in msg and "occlusion" in msg


def _content_target(ex) -> int:
    """0-based index of the first adjective in the French output."""
    return next(j for j, t in enumerate(ex.output_tokens) if j >= 3 and t not in ("très",))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reference_examples("translate", "heldout"))
def test_prompt_conditioned_gives_prefix_zero_mass_and_ranks_a_causal_token_first(scope_run, ex) -> None:
    j = _content_target(ex)
    r = scope_run(model="reference:translate-ar", prompt=ex.prompt, output=ex.output, contract="prompt_conditioned",
                  target=j + 1, method="occlusion", operator="zero")
    assert r.mass(f"y[<{j + 1}]") == 0.0
    best = r.ranking()[0]
    assert best.role == "prompt" and (best.index - 1) in ex.causal[j], (ex.prompt, ex.output, r.top(3))
