"""`scopecheck.spec.paramspec.fits`: one value-fits-spec rule for a registry entry's Python
defaults and a contract's DSL values (the validator's `check_value`), checked against the
ranges written out by hand and against every registered method's and check's parameters."""

from __future__ import annotations

import math

import pytest

from scopecheck.spec import model as m
from scopecheck.spec.check_registry import CHECKS
from scopecheck.spec.params import check_value
from scopecheck.spec.paramspec import C, F, I, ParamSpec, fits
from scopecheck.spec.registry import METHODS
from scopecheck.errors import Span

NUMBERS = [-2, -1, 0, 1, 2, 3, 10, 11, -0.5, 0.0, 0.25, 0.5, 1.0, 1.5, 10.0, 10.5, math.inf, -math.inf, math.nan]


def _by_hand(kind: str, low, high, open_low: bool, v) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (math.inf, -math.inf):
        return False
    if kind == "int" and not isinstance(v, int):
        return False
    if kind == "count_or_fraction":
        return (1 <= v <= (high or math.inf)) if isinstance(v, int) else 0 < v <= 1
    above = low is None or (v > low if open_low else v >= low)
    return above and (high is None or v <= high)


@pytest.mark.parametrize("spec", [I(0, 10), I(1, 10), F(0.0, 10.0), F(0.0, 10.0, open_low=True), F(1.0),
                                  ParamSpec("count_or_fraction", high=10), ParamSpec("count_or_fraction")])
def test_numbers_fit_as_the_range_says(spec):
    for v in NUMBERS + [True, False]:
        assert fits(spec, v) is _by_hand(spec.kind, spec.low, spec.high, spec.open_low, v), (spec, v)


def test_a_name_fits_a_choice_as_python_text_or_identifier():
    spec = C("pad", "zero", "mask")
    for name in ("pad", "zero", "mask"):
        assert fits(spec, name) and fits(spec, m.Ident(name)) and fits(spec, m.Text(name))
    for other in ("unk", "Pad", ""):
        assert not (fits(spec, other) or fits(spec, m.Ident(other)) or fits(spec, m.Text(other)))
    assert not fits(spec, 1) and not fits(spec, True)


def test_selectors_bools_and_any():
    sel = ParamSpec("selector")
    assert fits(sel, "x") and fits(sel, m.Text("noir")) and fits(sel, m.Selector("x"))
    assert not fits(sel, m.Ident("x")) and not fits(sel, 3)          # an identifier is a name, not a selector
    b = ParamSpec("bool")
    assert fits(b, True) and fits(b, False) and not fits(b, 1) and not fits(b, m.Ident("true"))
    anything = ParamSpec("any")
    assert all(fits(anything, v) for v in (None, "a", m.Ident("a"), 3, math.nan))


def _specs():
    for table in (METHODS, CHECKS):
        for name, e in table.items():
            for key, p in e.params.items():
                yield f"{name}.{key}", p


@pytest.mark.parametrize("where, spec", list(_specs()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_registered_parameter_accepts_its_default_in_both_forms(where, spec):
    d = spec.default
    if d is None:
        return
    assert fits(spec, d)
    dsl = m.Ident(d) if isinstance(d, str) and spec.kind == "choice" else m.Text(d) if isinstance(d, str) else d
    assert check_value(spec, "k", dsl, Span(), "owner") is None
    for c in spec.choices:
        assert check_value(spec, "k", m.Ident(c), Span(), "owner") is None
    if spec.kind == "choice":
        err = check_value(spec, "k", m.Ident("no_such_value"), Span(), "owner")
        assert err is not None and spec.describe() in str(err)
