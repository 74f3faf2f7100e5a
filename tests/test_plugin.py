"""The pytest plugin, run end to end with pytester."""

from __future__ import annotations

import sys

import pytest

VALID = '''
contract "noir" {
    model    reference:translate-ar
    prompt   "Translate to French: The dog is black."
    output   "Le chien est noir."
    use prompt_conditioned(target = "noir")
    method occlusion(operator = zero)
    expect rank(x["black"]) == 1
    expect mass(y) == 0
}
claim "a claim" {
    question span
    computed { toolkit inseq }
}
'''

INVALID = '''
contract "overlap" {
    model    reference:translate-ar
    prompt   "Translate to French: The dog is black."
    output   "Le chien est noir."
    use prompt_conditioned(target = "noir")
    eligible x, y[<"noir"]
    method occlusion
}
'''


def test_plugin_module_imports_no_torch() -> None:
    import subprocess

    code = "import sys, scopecheck.pytest_plugin, scopecheck; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_collects_one_validation_item_per_document_and_one_item_per_expect(pytester: pytest.Pytester) -> None:
    pytester.makefile(".scope", good=VALID)
    res = pytester.runpytest("--collect-only", "-q")
    out = res.stdout.str()
    assert "good.scope::noir" in out
    assert "good.scope::noir::line 7" in out and "good.scope::noir::line 8" in out
    assert "good.scope::a claim" in out


def test_invalid_contract_fails_with_positioned_message(pytester: pytest.Pytester) -> None:
    pytester.makefile(".scope", bad=INVALID)
    res = pytester.runpytest("--scope-no-run")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "bad.scope:5:5" in out and "invalid contract[disjoint]" in out
    assert "^" in out


def test_syntax_error_is_one_failing_item(pytester: pytest.Pytester) -> None:
    pytester.makefile(".scope", broken='contract "x" {\n    methd occlusion\n}\n')
    res = pytester.runpytest()
    res.assert_outcomes(failed=1)
    assert "broken.scope:2:5: syntax error" in res.stdout.str()
    assert "did you mean `method`?" in res.stdout.str()


def test_expectations_run_and_pass_on_the_reference_model(pytester: pytest.Pytester) -> None:
    pytester.makefile(".scope", good=VALID)
    res = pytester.runpytest("--scope-device", "cpu", "-v")
    res.assert_outcomes(passed=4)


def test_failing_expectation_prints_numbered_contract_lines_and_the_measured_value(pytester: pytest.Pytester) -> None:
    failing = VALID.replace('expect rank(x["black"]) == 1', 'expect rank(x["dog"]) == 1')
    pytester.makefile(".scope", bad=failing)
    res = pytester.runpytest("--scope-device", "cpu")
    res.assert_outcomes(passed=3, failed=1)
    out = res.stdout.str()
    assert ">7  " in out and "expect rank(x[\"dog\"]) == 1" in out
    assert "measured" in out and "== 1" in out
    assert "black" in out  # the heatmap shows the tokens
