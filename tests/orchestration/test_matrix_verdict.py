"""`matrix` says a method "beats random" only when the paired test says so at its stated level
(issue 26: "beats random: yes (0.12)" was printed for p = 0.12 at n = 3), and shows n."""

from __future__ import annotations

import math

import pytest

from scopecheck.orchestration import matrix as mx


def cell(aopc: float, random_aopc: float, p: float, n: int) -> mx.Cell:
    return mx.Cell("occlusion", "prompt_conditioned", n, aopc, (aopc, aopc), random_aopc, (0.0, 0.0), p, 0.0, 0.0,
                   1.0, (1.0, 1.0), 0.1)


@pytest.mark.parametrize("aopc, random_aopc, p, n, verdict", [
    (0.5, 0.1, 0.12, 3, "no"),        # higher mean, no evidence: not "yes"
    (0.5, 0.1, 0.01, 20, "yes"),
    (0.1, 0.5, 0.01, 20, "no"),       # a small p with the mean the other way is not a win
    (0.5, 0.1, mx.ALPHA, 20, "no"),   # the level is strict, as the contract's `.p < 0.05`
])
def test_beats_random_is_the_paired_tests_verdict(aopc, random_aopc, p, n, verdict):
    c = cell(aopc, random_aopc, p, n)
    assert c.beats_random is (verdict == "yes")
    assert c.beats_random_text() == f"{verdict} (p = {p:.2g}, n = {n})"


def test_the_level_is_the_one_the_matrix_contract_tests():
    (paired,) = [e for e in mx.EXPECTS if e.startswith("paired(")]
    assert paired.endswith(f"< {mx.ALPHA}") and not math.isnan(mx.ALPHA)


def test_the_table_shows_the_verdict_with_p_and_n():
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(mx.matrix_table([cell(0.5, 0.1, 0.12, 3)]))
    text = console.export_text()
    assert "no (p = 0.12, n = 3)" in text and f"> random (p < {mx.ALPHA})" in text
