"""Aggregates over a dataset contract's per-example values, each with n and a 95% interval.

* ``mean`` / ``median`` / ``quantile(q)`` / ``rate`` (the mean of 0/1 outcomes): the statistic
  and a seeded percentile bootstrap interval (``scipy.stats.bootstrap``, 2,000 resamples,
  ``numpy.random.default_rng(seed)``); with fewer than two values, or constant values, the
  interval is the value itself.
* ``paired(a, b)``: the Wilcoxon signed-rank test of ``a - b`` (``scipy.stats.wilcoxon``,
  ``alternative`` two-sided by default), fields ``p``, ``statistic``, ``n`` (pairs with both
  values), ``median_diff`` (median of ``a - b``, with its bootstrap interval); ``test = bootstrap``
  gives a bootstrap p-value for the mean difference instead.
* :func:`spearman`: Spearman's rank correlation of two score lists (ties share their average
  rank), the one the report comparison and the dynamic audit use.

Per-example values that are missing (the example failed) or not finite are left out and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from scopecheck.spec.vocabulary import AGG_FIELDS, PAIRED_FIELDS  # noqa: F401  (re-exported)

RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class AggregateResult:
    func: str
    value: float
    n: int
    ci: tuple[float, float]
    fields: dict[str, float] = field(default_factory=dict)
    dropped: int = 0                         # missing or non-finite values left out
    method: str = ""
    per_example: dict[str, Any] = field(default_factory=dict)

    def field_value(self, name: str | None) -> float:
        if name is None:
            return self.value
        return self.fields[name]


def _clean(values: Sequence[Any]) -> tuple[np.ndarray, int]:
    """Finite numbers (booleans as 0/1) and how many values were missing or not finite."""
    x = np.asarray([float(v) if isinstance(v, (int, float)) else float("nan") for v in values], dtype=float)
    keep = np.isfinite(x)
    return x[keep], len(values) - int(keep.sum())


def bootstrap_ci(x: np.ndarray, stat: Callable[[np.ndarray], float], seed: int) -> tuple[float, float]:
    if len(x) < 2 or np.all(x == x[0]):
        v = float(stat(x)) if len(x) else float("nan")
        return v, v
    from scipy import stats

    res = stats.bootstrap((x,), lambda s, axis=-1: np.apply_along_axis(stat, axis, s), n_resamples=RESAMPLES,
                          confidence_level=CONFIDENCE, method="percentile", vectorized=True,
                          random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def aggregate(func: str, values: Sequence[Any], *, q: float = 0.5, seed: int = 0) -> AggregateResult:
    x, dropped = _clean(values)
    stat: Callable[[np.ndarray], float]
    if func in ("mean", "rate"):
        stat = np.mean
    elif func == "median":
        stat = np.median
    elif func == "quantile":
        stat = lambda a: np.quantile(a, q)  # noqa: E731
    else:
        raise ValueError(f"unknown aggregate {func!r}")
    value = float(stat(x)) if len(x) else float("nan")
    ci = bootstrap_ci(x, stat, seed) if len(x) else (float("nan"), float("nan"))
    how = f"{func}" + (f"(q = {q})" if func == "quantile" else "") + \
        f"; 95% percentile bootstrap, {RESAMPLES} resamples, seed {seed}"
    return AggregateResult(func, value, int(len(x)), ci, {"value": value, "n": float(len(x)), "low": ci[0],
                                                           "high": ci[1]}, dropped, how)


def paired(a: Sequence[Any], b: Sequence[Any], *, test: str = "wilcoxon", alternative: str = "two-sided",
           seed: int = 0) -> AggregateResult:
    pairs = [(float(u), float(v)) for u, v in zip(a, b)
             if isinstance(u, (int, float)) and isinstance(v, (int, float))
             and math.isfinite(float(u)) and math.isfinite(float(v))]
    dropped = len(list(zip(a, b))) - len(pairs)
    d = np.asarray([u - v for u, v in pairs], dtype=float)
    n = len(d)
    med = float(np.median(d)) if n else float("nan")
    ci = bootstrap_ci(d, np.median, seed) if n else (float("nan"), float("nan"))
    if n == 0 or np.all(d == 0):
        p, statistic = 1.0, 0.0
        how = "no non-zero paired difference: p = 1"
    elif test == "bootstrap":
        rng = np.random.default_rng(seed)
        centred = d - d.mean()
        means = rng.choice(centred, size=(RESAMPLES, n), replace=True).mean(axis=1)
        obs = d.mean()
        if alternative == "greater":
            p = float((np.sum(means >= obs) + 1) / (RESAMPLES + 1))
        elif alternative == "less":
            p = float((np.sum(means <= obs) + 1) / (RESAMPLES + 1))
        else:
            p = float((np.sum(np.abs(means) >= abs(obs)) + 1) / (RESAMPLES + 1))
        statistic = float(obs)
        how = f"bootstrap test of the mean paired difference ({alternative}), {RESAMPLES} resamples, seed {seed}"
    else:
        from scipy import stats

        res = stats.wilcoxon(d, alternative=alternative)
        p, statistic = float(res.pvalue), float(res.statistic)
        how = f"Wilcoxon signed-rank test of a - b (scipy.stats.wilcoxon, {alternative})"
    return AggregateResult("paired", p, n, ci, {"p": p, "statistic": statistic, "n": float(n), "median_diff": med,
                                                "low": ci[0], "high": ci[1]}, dropped, how)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (``scipy.stats.spearmanr``: Pearson's correlation of the ranks,
    tied values sharing their average rank); None when it is undefined: the lengths differ, fewer
    than two values, a value is not finite, or one side is constant."""
    a, b = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    if np.all(a == a[0]) or np.all(b == b[0]):
        return None
    from scipy import stats  # lazy: scipy, kept out of loading the report and audit modules

    return float(stats.spearmanr(a, b).statistic)


__all__ = ["AGG_FIELDS", "AggregateResult", "PAIRED_FIELDS", "aggregate", "bootstrap_ci", "paired", "spearman"]
