"""The one Spearman (``orchestration.stats.spearman``): average ranks for ties, None when undefined,
and the report comparison and the dynamic audit call that same function."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from scopecheck.orchestration.stats import spearman


def _average_ranks_by_counting(v: list[float]) -> list[float]:
    """Rank of v[i] = (values below it) + (values equal to it, itself included, + 1) / 2: the mean
    of the 1-based positions a tie group occupies, with no sorting."""
    return [sum(u < x for u in v) + (sum(u == x for u in v) + 1) / 2 for x in v]


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def test_spearman_matches_brute_force_average_ranks_with_ties():
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(2, 12)
        xs = [float(rng.randint(0, 4)) for _ in range(n)]           # few values: many ties
        ys = [float(rng.randint(0, 4)) for _ in range(n)]
        if len(set(xs)) == 1 or len(set(ys)) == 1:
            assert spearman(xs, ys) is None
            continue
        want = _pearson(_average_ranks_by_counting(xs), _average_ranks_by_counting(ys))
        assert spearman(xs, ys) == pytest.approx(want, abs=1e-12)


def test_spearman_without_ties_is_the_squared_rank_difference_formula():
    # 1 - 6 sum d^2 / (n (n^2 - 1)) over every permutation of 5 ranks: exact for distinct values
    base = [0.1, 0.5, 2.0, 3.5, 9.0]
    n = len(base)
    for perm in itertools.permutations(range(n)):
        ys = [base[i] for i in perm]
        d2 = sum((i - p) ** 2 for i, p in enumerate(perm))
        assert spearman(base, ys) == pytest.approx(1 - 6 * d2 / (n * (n * n - 1)), abs=1e-12)


@pytest.mark.parametrize("xs, ys", [
    ([1.0], [2.0]),                              # fewer than two values
    ([], []),
    ([1.0, 2.0], [1.0, 2.0, 3.0]),               # lengths differ
    ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]),          # a constant side
    ([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]),
    ([1.0, math.nan, 3.0], [1.0, 2.0, 3.0]),     # not finite
    ([1.0, 2.0, 3.0], [1.0, math.inf, 3.0]),
])
def test_spearman_is_none_when_undefined(xs, ys):
    assert spearman(xs, ys) is None


def test_report_and_audit_use_the_one_spearman():
    from scopecheck import audit
    from scopecheck.audit import dynamic
    from scopecheck.report import compare

    assert compare.spearman is spearman and dynamic.spearman is spearman and audit.spearman is spearman
