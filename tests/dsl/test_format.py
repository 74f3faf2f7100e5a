"""``format_text`` (``scopecheck fmt``): every comment and statement kept, in order, nothing added.

Unit tests pin the placement of comments (before a document, between statements, in blocks, at the
end of a line, inside a statement spread over lines, on a last line without a newline, CRLF input).
The property test draws any document the spec strategies can express, prints it, inserts comments,
line breaks and blank lines at random token boundaries, and checks that ``format_text`` reads back as
the same documents, keeps the comments (same texts, same order) and is a fixed point.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Lark

from scopecheck.cli import main
from scopecheck.dsl import format_documents, format_text, parse_text
from scopecheck.dsl.parser import grammar_text, lark_parser
from scopecheck.errors import ContractSyntaxError
from scopecheck.strategies import documents

CONTRACTS_DIR = Path(__file__).parents[2] / "contracts"
CONTRACTS = sorted(CONTRACTS_DIR.rglob("*.scope"))

# An independent tokenizer: the grammar with a lexer callback on every terminal, so the test knows
# where each token and each comment is without asking the formatter's own layout parse.
_seen: list = []


def _keep(tok):
    _seen.append(tok)
    return tok


_TOKENIZER = Lark(grammar_text(), parser="lalr", lexer_callbacks={t.name: _keep for t in lark_parser().terminals})


def _tokens(text: str) -> list:
    _seen.clear()
    _TOKENIZER.parse(text)
    out = sorted({t.start_pos: t for t in _seen}.values(), key=lambda t: t.start_pos)
    _seen.clear()
    return out


def _comments(text: str) -> list[str]:
    return [str(t).rstrip(" \t\f\r") for t in _tokens(text) if t.type == "COMMENT"]


def _fmt(text: str) -> str:
    out = format_text(text)
    assert parse_text(out) == parse_text(text)
    assert format_text(out) == out
    return out


# --------------------------------------------------------------------------- placement


def test_whole_line_comments_before_the_contract_are_kept_with_their_blank_line() -> None:
    src = '# one\n# two\n\n\n\n# three\ncontract "a" {\nseed 0\n}\n'
    assert _fmt(src) == '# one\n# two\n\n# three\ncontract "a" {\n    seed 0\n}\n'


def test_comments_between_statements_stay_between_them_in_order() -> None:
    src = ('contract "a" {\n  model reference:translate-ar\n  # about the score\n'
           '  score log p(y[2] | x)\n\n\n  # the method\n  method occlusion(operator=zero)\n'
           '  # last word\n}\n')
    assert _fmt(src) == ('contract "a" {\n    model    reference:translate-ar\n    # about the score\n'
                         '    score    log p(y[2] | x)\n\n    # the method\n'
                         '    method occlusion(operator = zero)\n    # last word\n}\n')


def test_comments_inside_nested_blocks_keep_their_block_and_depth() -> None:
    src = ('claim "c" { # on the header\n'
           '  computed { # opens computed\n    # in computed\n    method ig # the method\n'
           '    # before computed closes\n  } # after computed\n'
           '  reported {\n    # in reported\n    metric dsa = 4.80 # as reported\n  }\n'
           '  prompt chat {\n    # the system message\n    system: "s" # s\n    user: "u"\n  }\n'
           '  # the expectations\n  expect verdict == "unsupported" # v\n  # more\n  expect fallacy\n}\n')
    assert _fmt(src) == (
        'claim "c" {  # on the header\n'
        '    computed {  # opens computed\n        # in computed\n        method   ig  # the method\n'
        '        # before computed closes\n    }  # after computed\n'
        '    reported {\n        # in reported\n        metric dsa = 4.8  # as reported\n    }\n'
        '    prompt chat {\n        # the system message\n        system: "s"  # s\n        user:   "u"\n    }\n'
        '    # the expectations\n    expect verdict == "unsupported"  # v\n    # more\n    expect fallacy\n}\n')


def test_trailing_comment_keeps_its_column_where_the_line_leaves_room() -> None:
    src = 'contract "a" {\n    seed 0                      # aligned\n    expect eligibility # close\n}\n'
    out = _fmt(src)
    assert out.splitlines()[1] == "    seed 0                      # aligned"
    assert out.splitlines()[2] == "    expect eligibility  # close"   # two spaces at least


def test_comment_inside_a_statement_over_several_lines_goes_above_it() -> None:
    src = ('contract "a" {\n    method integrated_gradients( # why these steps\n'
           '        # measured gap 1e-3\n        steps = 256) # after\n}\n')
    assert _fmt(src) == ('contract "a" {\n    # why these steps\n    # measured gap 1e-3\n'
                         '    method integrated_gradients(steps = 256)  # after\n}\n')


@pytest.mark.parametrize("last", ["} # end of file", '}\n# end of file'])
def test_comment_on_the_last_line_without_a_newline(last: str) -> None:
    out = _fmt('contract "a" {\n    seed 0\n' + last)
    assert out.endswith("# end of file\n") and _comments(out) == ["# end of file"]


def test_crlf_input_formats_as_the_lf_text_and_drops_the_carriage_returns() -> None:
    lf = '# head\ncontract "a" {  # h\n    seed 0  # s\n\n    # e\n    expect eligibility\n}\n'
    out = _fmt(lf.replace("\n", "\r\n"))
    assert out == _fmt(lf) == lf
    assert "\r" not in out


def test_hash_in_a_string_is_not_a_comment() -> None:
    src = 'contract "a # b" {\n    prompt   "x # y"  # real\n}\n'
    assert _fmt(src) == src and _comments(src) == ["# real"]


def test_a_file_of_comments_only() -> None:
    assert _fmt("# a\n\n\n# b") == "# a\n\n# b\n"
    assert format_text("") == ""


def test_documents_are_set_apart_by_one_blank_line() -> None:
    assert _fmt('contract "a" {\n}\ncontract "b" {\n}\n') == 'contract "a" {\n}\n\ncontract "b" {\n}\n'
    # a comment between them: the blank line the file has is kept where it is, none is added
    src = 'contract "a" {\n}\n# about b\n\ncontract "b" {\n}\n'
    assert _fmt(src) == src


def test_nothing_is_added_to_what_the_file_says() -> None:
    src = 'claim "c" {\n    question prompt_level\n    expect fallacy\n}\ncontract "a" {use span_prompt\nmethod ig()}\n'
    out = _fmt(src)
    assert "reported" not in out and "computed" not in out        # the old fmt added `reported { }`
    assert "method ig\n" in out and "(" not in out                # no parameters appear
    # and an empty block the file states is kept, not dropped
    assert "    reported {\n    }\n" in _fmt('claim "c" {\n    reported { }\n}\n')


def test_syntax_errors_are_raised_as_by_the_parser() -> None:
    with pytest.raises(ContractSyntaxError) as exc:
        format_text('contract "a" {\n    seed\n}\n', "bad.scope")
    assert exc.value.render().startswith("bad.scope:3:1: ")


# --------------------------------------------------------------------------- shipped files and CLI


@pytest.mark.parametrize("path", CONTRACTS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_contracts_are_canonical(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert format_text(text, str(path)) == text


def test_fmt_check_passes_on_the_shipped_contracts(capsys) -> None:
    assert main(["fmt", "--check", str(CONTRACTS_DIR)]) == 0
    assert "would reformat" not in capsys.readouterr().out


def test_fmt_write_keeps_every_comment(tmp_path: Path, capsys) -> None:
    src = tmp_path / "a.scope"
    text = ('# head\nclaim "c" {  # h\n  question prompt_level # q\n  computed {\n    # m\n    method ig\n  }\n'
            '  expect fallacy\n} # end')
    src.write_text(text, encoding="utf-8")
    assert main(["fmt", "--write", str(src)]) == 0
    out = src.read_text(encoding="utf-8")
    assert _comments(out) == _comments(text) == ["# head", "# h", "# q", "# m", "# end"]
    assert "reported" not in out
    assert main(["fmt", "--check", str(src)]) == 0
    capsys.readouterr()


# --------------------------------------------------------------------------- property

_comment_texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\n\r"), max_size=12).map(
    lambda t: "#" + t)


@st.composite
def commented_texts(draw) -> tuple[str, list, list[str]]:
    """(text, the documents it holds, its comments in order): a printed document with comments,
    line breaks and blank lines at random token boundaries, possibly CRLF, possibly no final newline."""
    docs = draw(documents())
    text = format_documents(docs)
    comments: list[str] = []
    out, pos = [], 0
    if draw(st.booleans()):
        c = draw(_comment_texts)
        comments.append(c)
        out.append(c + "\n" + draw(st.sampled_from(["", "\n"])))
    how = ""
    for tok in (t for t in _tokens(text) if t.type not in ("WS", "COMMENT")):
        out.append(text[pos:tok.end_pos])
        pos = tok.end_pos
        how = draw(st.sampled_from(["", "", "", "", "eol", "own", "nl", "blank"]))
        if how in ("eol", "own"):
            c = draw(_comment_texts)
            comments.append(c)
            out.append((" " if how == "eol" else "\n  ") + c + "\n")
        elif how:
            out.append("\n" if how == "nl" else "\n\n")
    out.append(text[pos:])
    result = "".join(out)
    end = draw(st.sampled_from(["", "eol", "own"]))
    if end == "eol" and how in ("eol", "own"):   # the last line is a comment already
        end = "own"
    if end:                                       # a comment on the last line, no newline after it
        c = draw(_comment_texts)
        comments.append(c)
        result = result.rstrip("\n") + (" " if end == "eol" else "\n") + c
    if draw(st.booleans()):
        result = result.replace("\n", "\r\n")
    return result, docs, [c.rstrip(" \t\f\r") for c in comments]


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(commented_texts())
def test_format_keeps_specs_and_comments_and_is_a_fixed_point(case) -> None:
    text, docs, comments = case
    assert parse_text(text) == docs and _comments(text) == comments   # the generator did what it says
    out = format_text(text)
    assert parse_text(out) == docs
    assert _comments(out) == comments
    assert format_text(out) == out
    lines = out.split("\n")
    assert out.endswith("\n") and all(ln == ln.rstrip(" \t\f\r") for ln in lines)
    assert "\n\n\n" not in out and not out.startswith("\n")
