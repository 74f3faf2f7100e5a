"""Reports show configuration as readable name = value lists: no `None`, no Python dict syntax
(issue 26: the HTML configuration column showed `'samples': None` and `operator = None`)."""

from __future__ import annotations

from scopecheck.report.summary import config_items, config_text


def test_unset_values_are_left_out_and_nesting_is_flattened():
    cfg = {"operator": "zero", "samples": None, "k": 0.2, "bounds": {"kind": "beam", "width": 5, "extra": None},
           "exact": True, "fractions": [0.0, 0.5, 1.0]}
    assert config_items(cfg) == [("operator", "zero"), ("k", "0.2"), ("bounds.kind", "beam"), ("bounds.width", "5"),
                                 ("exact", "true"), ("fractions", "[0, 0.5, 1]")]
    text = config_text(cfg)
    assert "None" not in text and "{" not in text and "'" not in text
    assert config_text({"samples": None}) == "—" and config_text(None) == "—"


def test_the_html_check_table_uses_it():
    from scopecheck.report.html import _check_views

    (row,) = _check_views([{"call": "deletion(operator = zero)", "name": "deletion", "random": False,
                            "fields": {"aopc": 0.5}, "ranges": {}, "better": {}, "in_range": {},
                            "config": {"operator": "zero", "samples": None, "bounds": {"kind": "beam"}},
                            "passed": None, "note": "", "curve": [1.0, 0.5]}])
    assert row["config"] == "operator = zero, bounds.kind = beam"
