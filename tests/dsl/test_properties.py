"""Property tests of the language (hypothesis).

(a) any spec -> fmt -> parse gives the same spec;
(b) texts drawn from the grammar itself, and random mutations of valid contracts,
    either parse or raise ContractSyntaxError — never any other exception; those that parse
    survive ``format_text``: the same documents, the same comments, a fixed point.
The suite runs 100 examples of each everywhere; HYPOTHESIS_PROFILE=deep runs 2,000.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark

from scopecheck.dsl import format_documents, format_text, parse_layout, parse_text
from scopecheck.dsl.parser import lark_parser
from scopecheck.errors import ContractError, ContractSyntaxError
from scopecheck.loader import check_text
from scopecheck.strategies import documents

CONTRACTS = sorted((Path(__file__).parents[2] / "contracts").rglob("*.scope"))
VALID_TEXTS = [p.read_text(encoding="utf-8") for p in CONTRACTS]


@given(documents())
def test_format_then_parse_is_identity(docs) -> None:
    text = format_documents(docs)
    assert parse_text(text) == docs
    assert format_documents(parse_text(text)) == text  # canonical form is a fixed point


def _comments(text: str) -> list[str]:
    return [str(c).rstrip(" \t\f\r") for c in parse_layout(text).comments]


def _parse_or_syntax_error(text: str) -> None:
    try:
        docs = parse_text(text, "fuzz.scope")
    except ContractSyntaxError as exc:
        rendered = exc.render()
        assert rendered.startswith("fuzz.scope:")
    else:
        out = format_text(text, "fuzz.scope")
        assert parse_text(out) == docs and _comments(out) == _comments(text) and format_text(out) == out
    # and validation of whatever parsed never raises (it returns errors)
    sf = check_text(text, "fuzz.scope")
    for e in sf.errors:
        assert isinstance(e, ContractError)
        e.render()


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(from_lark(lark_parser(), start="start"))
def test_grammar_generated_texts_parse_or_raise_syntax_error(text: str) -> None:
    _parse_or_syntax_error(text)


@st.composite
def mutations(draw) -> str:
    text = draw(st.sampled_from(VALID_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        j = draw(st.integers(i, min(len(text), i + 8)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate"]))
        piece = draw(st.sampled_from(['"', "{", "}", "(", ")", "[", "]", "<", ":", ",", "=", "@", "-", "|",
                                      ";", "\\", "y", "x", "nothing", " ", "\n", "0", "1e9", "'", "#", "T"])
                     | st.text(max_size=3))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "replace":
            text = text[:i] + piece + text[j:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text


@given(mutations())
def test_mutated_contracts_parse_or_raise_syntax_error(text: str) -> None:
    _parse_or_syntax_error(text)
