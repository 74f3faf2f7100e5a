"""``top(k)`` takes a count k >= 1 wherever it appears: the left or the right side of an
expectation, and a dataset contract's ``rate(...)`` comparison. Only the left side used to be
checked, so ``expect "noir" == top("a")`` passed ``scopecheck check`` and failed at run time
with a bare ``TypeError`` from ``int(Text)`` (``top(0)`` silently measured an empty list)."""

from __future__ import annotations

import pytest

from scopecheck.loader import check_text

HEAD = """contract "t" {
    model    reference:translate-ar
    prompt   "Translate to French: The dog is black."
    output   "Le chien est noir."
    use prompt_conditioned(target = "noir")
    method occlusion(operator = zero)
"""

DATASET_HEAD = """contract "d" {
    model    reference:translate-ar
    dataset  "data.jsonl"(limit = 5, id = "id")
    use prompt_conditioned(target = 2)
    method occlusion(operator = zero)
"""


def _top_errors(head: str, line: str) -> list[tuple[int, int, int]]:
    """(line, column, end column) of each top(k) error of the contract ``head`` + ``line``."""
    sf = check_text(head + f"    {line}\n}}\n", "t.scope")
    return [(e.span.line, e.span.column, e.span.end_column) for e in sf.errors if "top(k)" in e.message]


def _where(head: str, line: str, call: str) -> tuple[int, int, int]:
    """The span of the text ``call`` in ``line`` (the contract's last line), found by hand."""
    col = 4 + line.index(call) + 1
    return (head.count("\n") + 1, col, col + len(call))


@pytest.mark.parametrize("bad", ['top("a")', "top(0)", "top(-1)", "top(1.5)", "top(true)"])
@pytest.mark.parametrize("form", ['expect "noir" == {}', 'expect {} == "noir"', 'expect "noir" in {}'])
def test_a_bad_count_is_a_positioned_error_on_either_side(form: str, bad: str) -> None:
    line = form.format(bad)
    assert _top_errors(HEAD, line) == [_where(HEAD, line, bad)]


@pytest.mark.parametrize("good", ["top(1)", "top(3)", "top"])
def test_a_count_of_at_least_one_is_accepted_on_either_side(good: str) -> None:
    for line in (f'expect "noir" == {good}', f'expect {good} == "noir"'):
        assert check_text(HEAD + f"    {line}\n}}\n", "t.scope").errors == ()


@pytest.mark.parametrize("bad", ['top("a")', "top(0)"])
def test_a_bad_count_in_a_rate_comparison_is_an_error(bad: str) -> None:
    for line in (f"expect rate({bad} in truth) >= 0.5", f"expect rate(truth in {bad}) >= 0.5"):
        assert _top_errors(DATASET_HEAD, line) == [_where(DATASET_HEAD, line, bad)]
    assert _top_errors(DATASET_HEAD, "expect rate(top(2) in truth) >= 0.5") == []
