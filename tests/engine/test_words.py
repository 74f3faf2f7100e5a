"""Word-level maps (``aggregate = words``): words partition the tokens, each word's score is the
exact sum of its tokens' scores, and the words are the text's whitespace-separated words."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scopecheck.engine.words import (aggregate, check_partition, word_groups, word_map, words_of)
from scopecheck.errors import ContractError

STORIES = Path(__file__).resolve().parents[3] / "shared" / "models" / "stories260k"
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


# ------------------------------------------------------------------ pure functions


@st.composite
def grouping_and_scores(draw):
    """A random partition of 0..L-1 into consecutive runs, and random scores (L,)."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=20))
    groups, p = [], 0
    for n in sizes:
        groups.append(tuple(range(p, p + n)))
        p += n
    return tuple(groups), draw(st.lists(finite, min_size=p, max_size=p))


@given(grouping_and_scores())
def test_word_scores_are_the_exact_sums_of_their_tokens(case):
    groups, scores = case
    check_partition(groups, len(scores))
    words = aggregate(scores, groups)
    assert len(words) == len(groups)
    for g, w in zip(groups, words):
        assert w == math.fsum(scores[p] for p in g)          # exact sum, rounded once
        if len(g) == 1:
            assert w == scores[g[0]]
    assert math.isclose(math.fsum(words), math.fsum(scores), rel_tol=1e-12, abs_tol=1e-9)


WORD = st.text(alphabet="abcdefghijXYZ.,!'é", min_size=1, max_size=8)
SPACE = st.sampled_from([" ", "  ", "\n", " \t"])


@st.composite
def tokenized(draw, marker: str | None):
    """Text of random words and whitespace, cut into random pieces: a special token, then the
    prompt's tokens with their char offsets (``marker``: the tokenizer marks word starts in its
    pieces, and the offsets include the leading space, as llama's and GPT-2's fast tokenizers do)."""
    words = draw(st.lists(WORD, min_size=1, max_size=8))
    gaps = [draw(SPACE) for _ in words[1:]]
    text, roles, spans, pieces, expected = "", ["special"], [(0, 0)], ["<s>"], []
    for i, w in enumerate(words):
        gap = gaps[i - 1] if i else ""
        start = len(text)
        text += gap + w
        cuts = sorted(set(draw(st.lists(st.integers(1, len(w) - 1), max_size=3)))) if len(w) > 1 else []
        bounds = [0, *cuts, len(w)]
        first = len(roles)
        for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
            lead = gap if k == 0 and marker else ""
            s = start + len(gap) + a - len(lead)
            roles.append("prompt")
            spans.append((s, start + len(gap) + b))
            pieces.append((marker if lead else "") + w[a:b] if marker else w[a:b])
        expected.append(tuple(range(first, len(roles))))
    return text, roles, spans, pieces, expected


@pytest.mark.parametrize("marker", [None, "▁", "Ġ"])
def test_words_are_the_texts_whitespace_separated_words(marker):
    @given(tokenized(marker), st.data())
    def prop(case, data):
        text, roles, spans, pieces, expected = case
        scores = [0.0] + data.draw(st.lists(finite, min_size=len(roles) - 1, max_size=len(roles) - 1))
        eligible = [False] + [True] * (len(roles) - 1)
        words = word_map(roles, spans, {"prompt": text}, pieces, scores, eligible, [False] * len(roles))
        assert words[0].positions == (0,) and words[0].role == "special" and words[0].text == "<s>"
        assert [w.positions for w in words[1:]] == expected
        assert [w.text for w in words[1:]] == text.split()                 # the words reconstruct the text
        for w in words[1:]:
            assert text[w.start:w.end] == w.text
            assert w.score == math.fsum(scores[p] for p in w.positions)
        # between consecutive words only whitespace: the words and the gaps rebuild the text exactly
        cursor, rebuilt = 0, ""
        for w in words[1:]:
            assert text[cursor:w.start].strip() == ""
            rebuilt += text[cursor:w.start] + w.text
            cursor = w.end
        assert rebuilt + text[cursor:] == text

    prop()


def test_tokens_without_offsets_use_word_markers():
    # a generated output: "play outs" where the lone "▁" piece has no offset
    text = "play outs"
    roles = ["output"] * 4
    spans = [(0, 4), (5, 5), (5, 8), (8, 9)]
    words = word_map(roles, spans, {"output": text}, ["▁play", "▁", "out", "s"], [0.0] * 4, [False] * 4,
                     [False, False, False, True])
    assert [(w.text, w.positions) for w in words] == [("play", (0,)), ("outs", (1, 2, 3))]
    assert words[1].target and words[1].eligible == "none"
    # no offsets at all: the pieces' markers alone
    groups = word_groups(["prompt"] * 5, [(0, 0)] * 5, {}, ["Ġthe", "Ġg", "ir", "l", "."])
    assert groups == ((0,), (1, 2, 3, 4))


def test_special_tokens_and_roles_are_their_own_groups():
    roles = ["special", "prompt", "prompt", "special", "prompt", "output", "output"]
    text = "ab cd"
    spans = [(0, 0), (0, 1), (1, 2), (0, 0), (3, 5), (0, 2), (2, 3)]
    groups = word_groups(roles, spans, {"prompt": text, "output": "Lex"}, ["<s>", "a", "b", "<sep>", "cd", "Le",
                                                                        "x"])
    assert groups == ((0,), (1, 2), (3,), (4,), (5, 6))


def test_partial_words_sum_their_eligible_tokens_only():
    text = "girl named"
    roles = ["prompt"] * 4
    spans = [(0, 1), (1, 3), (3, 4), (4, 10)]
    scores = [0.5, 0.25, 0.0, 1.0]  # "l" (position 2) is outside E: its score is exactly 0
    words = word_map(roles, spans, {"prompt": text}, ["g", "ir", "l", " named"], scores,
                     [True, True, False, True], [False] * 4)
    assert [(w.text, w.eligible, w.score) for w in words] == [("girl", "partial", 0.75), ("named", "all", 1.0)]


def test_a_bad_grouping_is_refused():
    with pytest.raises(ValueError):
        check_partition(((0, 1), (3,)), 4)
    with pytest.raises(ValueError):
        word_groups(["prompt"], [(0, 1)], {"prompt": "a"}, [])


# ------------------------------------------------------------------ real runs


def _stories_text(method_params: str = "steps = 8") -> str:
    return (f'contract "stories words" {{\n    model {json.dumps(str(STORIES))}\n'
            '    prompt "Once upon a time, there was a little girl named Lily."\n'
            '    output generate(greedy, max_new_tokens = 8)\n'
            '    use prompt_conditioned(target = T)\n'
            f'    method integrated_gradients({method_params})\n}}\n')


@pytest.fixture(scope="module")
def stories_result():
    if not (STORIES / "config.json").is_file():
        pytest.skip(f"the shared checkpoint {STORIES} is not beside this checkout")
    from scopecheck.engine.run import run

    return run(_stories_text(), device="cpu")


def _assert_exact_word_map(result, words):
    al = result.compiled.alignment
    check_partition(tuple(w.positions for w in words), len(result.tokens))
    for w in words:
        assert w.score == math.fsum(result.tokens[p].score for p in w.positions)
        assert {result.tokens[p].role for p in w.positions} == {w.role}
    assert math.isclose(math.fsum(w.score for w in words), math.fsum(result.scores), rel_tol=1e-12, abs_tol=1e-15)
    for role, text in (("prompt", al.prompt_text), ("output", al.output_text)):
        assert [w.text for w in words if w.role == role] == text.split()


def test_stories260k_words(stories_result):
    r = stories_result
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(STORIES)
    pieces = tok.convert_ids_to_tokens([int(t.id) for t in r.compiled.alignment.tokens])
    words = words_of(r, pieces)
    _assert_exact_word_map(r, words)
    by_text = {w.text: w for w in words}
    girl = by_text["girl"]  # " g" "ir" "l": one word, the sum of three subword tokens
    assert [r.tokens[p].text for p in girl.positions] == [" g", "ir", "l"]
    assert girl.eligible == "all" and girl.score == math.fsum(r.tokens[p].score for p in girl.positions)
    assert words[0].role == "special" and words[0].positions == (0,)
    assert any(w.target for w in words)


def test_stories260k_aggregate_words_parameter(stories_result):
    """``method ...(aggregate = words)`` in a contract: the result carries the word map, the token
    map is the same as without it, and the method never sees the parameter."""
    from scopecheck.engine.run import run

    r = run(_stories_text("steps = 8, aggregate = words"), device="cpu")
    assert r.aggregate == "words" and "aggregate" not in r.method_params
    assert r.scores == stories_result.scores
    _assert_exact_word_map(r, r.words)
    doc = r.to_json()
    assert doc["aggregate"] == "words" and [w["positions"] for w in doc["words"]] == [list(w.positions)
                                                                                     for w in r.words]
    assert stories_result.words is None and stories_result.aggregate == "tokens"


def test_reference_translate_words():
    from scopecheck.engine.run import attribute

    r = attribute(model="reference:translate-ar", prompt="Translate to French: The dog is black.",
                  output="Le chien est noir.", contract="prompt_conditioned", method="occlusion", target="noir")
    words = words_of(r)
    _assert_exact_word_map(r, words)
    assert [w.text for w in words if w.role == "prompt"] == ["Translate", "to", "French:", "The", "dog", "is",
                                                             "black."]
    black = next(w for w in words if w.text == "black.")
    assert len(black.positions) == 2 and black.score == math.fsum(r.tokens[p].score for p in black.positions)
    r2 = dataclasses.replace(r, words=words, aggregate="words")
    assert r2.to_json()["words"][0]["role"] == "special"


def test_bad_aggregate_value_is_a_positioned_error():
    from scopecheck.engine.run import aggregation
    from scopecheck.dsl.parser import parse_text

    text = ('contract "c" {\n    model reference:translate-ar\n    prompt "a"\n    output "b"\n'
            '    use prompt_conditioned\n    method occlusion(aggregate = sentences)\n}\n')
    method = parse_text(text)[0].method
    with pytest.raises(ContractError) as info:
        aggregation(method)
    err = info.value
    assert err.span.line == 6 and "aggregate = sentences" in err.render() and "tokens | words" in err.render()
