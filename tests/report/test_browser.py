"""Look at a real report in headless Chromium: the screenshot is not blank and the token
texts are in the rendered DOM. Skipped only when chromium is not installed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from markupsafe import escape

from scopecheck.checks.result import CheckResult
from scopecheck.report.browser import assert_not_blank, dump_dom, find_chromium, is_blank, pixel_variance, screenshot
from scopecheck.report.html import shown, write_report
from stories_run import run_stories

INF = math.inf
needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="chromium is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    cr = run_stories()
    n = sum(t.eligible for t in cr.result.tokens)
    cr.checks["deletion(operator = pad)"] = CheckResult(
        "deletion", {"auc": -1.0, "aopc": 0.4, "naopc": 0.7}, {"auc": (-INF, INF), "aopc": (-INF, INF),
                                                               "naopc": (0.0, 1.0)},
        {"auc": "lower", "aopc": "higher", "naopc": "higher"}, {"operator": "pad", "protocol": "rescore"},
        curve=tuple(-0.1 * i for i in range(n + 1)))
    out = tmp_path_factory.mktemp("report")
    return cr, write_report([cr], out)


@needs_chromium
def test_screenshot_is_not_blank(report, tmp_path):
    cr, page = report
    png = screenshot(page, tmp_path / "shots" / "report.png")
    assert png.is_file() and [p.name for p in png.parent.iterdir()] == ["report.png"]  # no temp leftovers
    import matplotlib.image as mpimg

    h, w = mpimg.imread(str(png)).shape[:2]
    assert (w, h) == (1200, 1600)
    assert assert_not_blank(png) > 1e-3


@needs_chromium
def test_rendered_dom_contains_the_tokens(report):
    cr, page = report
    dom = dump_dom(page)
    for t in cr.result.tokens:
        assert f'<span class="t">{escape(shown(t.text))}</span>' in dom, t.text
    for needle in ("stories", cr.result.model, cr.result.method, cr.result.device):
        assert needle in dom


def test_blank_detection(tmp_path):
    import matplotlib.image as mpimg

    flat = tmp_path / "flat.png"
    mpimg.imsave(flat, np.ones((40, 60, 3)))
    assert is_blank(flat) and pixel_variance(flat) == pytest.approx(0.0)
    with pytest.raises(AssertionError, match="blank"):
        assert_not_blank(flat)
    busy = tmp_path / "busy.png"
    checker = (np.indices((40, 60)).sum(axis=0) % 2).astype(float)
    mpimg.imsave(busy, np.stack([checker] * 3, axis=2))
    assert not is_blank(busy) and pixel_variance(busy) == pytest.approx(0.25, abs=0.01)
