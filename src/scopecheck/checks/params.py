"""Check parameters: the registry's defaults under the given values, and their coercion
(integers, numbers, ``k`` as a fraction or a count)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from scopecheck.spec import model as m
from scopecheck.spec.check_registry import get_check, unknown_params


def plain(v: Any) -> Any:
    """A DSL value (Ident, Text, tuples of them) as a plain Python value; selectors stay."""
    if isinstance(v, m.Ident):
        return v.name
    if isinstance(v, m.Text):
        return v.value
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


def check_params(name: str, params: Mapping[str, object] | None) -> dict[str, Any]:
    """Plain parameters over the entry's defaults (``scopecheck.spec.check_registry``); an
    unknown name is a :class:`~scopecheck.spec.check_registry.CheckParamError` (a ``ValueError``)
    listing the declared ones."""
    params = {str(k): plain(v) for k, v in dict(params or {}).items()}
    err = unknown_params(name, params)
    if err is not None:
        raise err
    return {**get_check(name).defaults(), **params}


def as_int(name: str, key: str, v: Any, low: int = 1) -> int:
    bad = ValueError(f"{name}: parameter {key}={v!r} must be an integer >= {low}")
    if isinstance(v, bool):
        raise bad
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, str):
        try:
            v = int(v)
        except ValueError:
            raise bad from None
    if not isinstance(v, int) or v < low:
        raise bad
    return v


def as_float(name: str, key: str, v: Any, low: float = 0.0) -> float:
    bad = ValueError(f"{name}: parameter {key}={v!r} must be a number >= {low}")
    if isinstance(v, bool):
        raise bad
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise bad from None
    if not math.isfinite(f) or f < low:
        raise bad
    return f


def k_count(name: str, k: Any, n: int) -> int:
    """``k`` as a number of features: an int is a count (capped at ``n``); a float in (0, 1]
    is a fraction, ``ceil(k n)`` and at least 1."""
    if isinstance(k, str):
        try:
            k = int(k)
        except ValueError:
            try:
                k = float(k)
            except ValueError:
                raise ValueError(f"{name}: k={k!r} must be a fraction in (0, 1] or a count") from None
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise ValueError(f"{name}: k={k!r} must be a fraction in (0, 1] or a count")
    if isinstance(k, int):
        if k < 1:
            raise ValueError(f"{name}: k={k} must be >= 1 when a count")
        return min(k, n)
    if 0 < k <= 1:
        return max(1, min(n, math.ceil(k * n - 1e-9)))
    if k > 1 and float(k).is_integer():
        return min(int(k), n)
    raise ValueError(f"{name}: k={k!r} must be a fraction in (0, 1] or a count")


__all__ = ["as_float", "as_int", "check_params", "k_count", "plain"]
