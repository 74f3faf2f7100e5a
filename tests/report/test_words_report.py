"""The word map (``aggregate = words``) in every report: terminal, HTML and JSON (valid against
the published schema), beside the token map."""

from __future__ import annotations

import dataclasses
import math

import pytest
from markupsafe import escape

from scopecheck.engine.words import words_of
from scopecheck.report.html import render_report
from scopecheck.report.jsonout import results_json, validate_results
from scopecheck.report.summary import rows
from scopecheck.report.terminal import fmt_score, heatmap_text
from stories_run import run_stories


@pytest.fixture(scope="module")
def word_run():
    cr = run_stories()
    r = cr.result
    from transformers import AutoTokenizer

    from stories_run import STORIES

    pieces = AutoTokenizer.from_pretrained(STORIES).convert_ids_to_tokens([t.id for t in r.compiled.alignment.tokens])
    cr.result = dataclasses.replace(r, aggregate="words", words=words_of(r, pieces))
    return cr


def test_terminal_shows_the_word_map_and_keeps_the_token_map(word_run):
    r = word_run.result
    out = heatmap_text(r, color=False)
    assert "aggregate    words" in out
    table = out[out.index("positions "):]
    girl = next(w for w in r.words if w.text == "girl")
    row = next(ln for ln in table.splitlines() if '"girl"' in ln)
    assert row.split()[0] == f"{girl.positions[0]}-{girl.positions[-1]}" and fmt_score(girl.score) in row
    assert 'words: ⟨<s>⟩ Once upon a time, there was a little girl named Lily.' in out
    # the token table is still there, every token with its own number
    tokens = out[out.index("pos "):out.index("positions ")]
    for t in r.tokens:
        assert fmt_score(t.score) in tokens
    colored = heatmap_text(r, color=True)
    assert "girl" in colored and "48;2;" in colored


def test_html_shows_the_word_map(word_run):
    r = word_run.result
    page = render_report([word_run])
    assert "<h3>Word map</h3>" in page and "aggregate = words" in page
    assert page.count('class="word tok ') == len(r.words)
    assert page.count('class="tok ') == len(r.tokens)  # the token heatmap is kept
    girl = next(w for w in r.words if w.text == "girl")
    assert f'data-positions="{" ".join(map(str, girl.positions))}"' in page
    assert str(escape('"girl"')) in page
    assert "<th>parameters</th>" in page and "aggregate = words" in page
    assert all("aggregate = words" in row["method"] for row in rows([word_run]))


def test_json_words_validate_and_sum_to_the_token_map(word_run):
    doc = results_json([word_run])
    validate_results(doc)
    run = doc["runs"][0]
    assert run["aggregate"] == "words"
    positions = [p for w in run["words"] for p in w["positions"]]
    assert positions == [t["position"] for t in run["tokens"]]
    score = {t["position"]: t["score"] for t in run["tokens"]}
    for w in run["words"]:
        assert w["score"] == math.fsum(score[p] for p in w["positions"])
        assert w["eligible"] in ("all", "partial", "none")
    prompt = [w["text"] for w in run["words"] if w["role"] == "prompt"]
    assert " ".join(prompt) == "Once upon a time, there was a little girl named Lily."
    broken = {**doc, "runs": [{**run, "words": [{**run["words"][0], "eligible": "some"}]}]}
    with pytest.raises(Exception, match="some"):
        validate_results(broken)
    plain = results_json([run_stories()])["runs"][0]
    assert plain["aggregate"] == "tokens" and "words" not in plain
