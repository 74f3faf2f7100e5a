"""The audit table (``scopecheck audit --format markdown|html|json``): rows, summary, renderings.

Fixture claims are written here, in a temporary folder, so the tests do not depend on the
corpus's content; the counts the summary gives are recomputed from the per-row JSON and, for
"states every element", from the claim files themselves.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest

from scopecheck.audit import audit_paths
from scopecheck.audit.dynamic import offline_problem, rerun_problem
from scopecheck.audit.table import build_table, table_json, table_schema
from scopecheck.audit.table_render import md_cell, render_table_html, render_table_markdown
from scopecheck.cli import main
from scopecheck.loader import load_text
from scopecheck.spec import model as m

SOURCE = '''    source {{
        authors "{authors}"
        title   "{title}"
        year    {year}
        locator "{locator}"{url}
    }}
    states {kind} "{text}"'''


def _source(authors: str = "Doe, J.; Roe, R.", title: str = "A Paper", year: int = 2024, locator: str = "Table 1",
            url: str | None = "https://example.org/paper", kind: str = "quote", text: str = "the words") -> str:
    return SOURCE.format(authors=authors, title=title, year=year, locator=locator, kind=kind, text=text,
                         url=f'\n        url     "{url}"' if url else "")


# Four claims over three sources: a self-attribution fallacy with an impossible number, a complete
# supported one, a toolkit-filled unsupported one, an underspecified one with a text citation.
FIXTURE = f'''
claim "fallacy and an impossible DSA" {{
{_source(locator="Section 4.1")}
    question prompt_level
    computed {{
        toolkit  inseq
        method   integrated_gradients
        explain  y[t]
        eligible x, y[<t]
    }}
    reported {{
        metric dsa = 4.8
    }}
    expect verdict == "unsupported"
}}

claim "every element stated" {{
{_source(locator="Figure 2", kind="paraphrase", text="a paraphrase")}
    question span
    computed {{
        method  integrated_gradients
        score   log p(y | x)
        fixed   nothing
        explain y
        process autoregressive
        eligible x
    }}
    expect verdict == "supported"
}}

claim "a toolkit's usual contract" {{
{_source(authors="Other, A.", title="Another Paper", year=2023, url=None)}
    question prompt_level
    computed {{
        toolkit inseq
        method  integrated_gradients
    }}
    expect verdict == "supported"
}}

claim "nothing said" {{
    source "a blog post"
    question next_token
    computed {{
        method integrated_gradients
    }}
}}
'''


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "claims"
    d.mkdir()
    (d / "a.scope").write_text(FIXTURE, encoding="utf-8")
    return d


def _table(path: Path, **kw):
    return build_table(audit_paths([path]), base=path.parent, **kw)


# --------------------------------------------------------------------------- rows and summary


def test_rows_carry_the_audits_own_results(corpus: Path) -> None:
    reports = audit_paths([corpus])
    t = build_table(reports, base=corpus.parent)
    assert [r.name for r in t.rows] == [r.name for r in reports]
    for row, rep in zip(t.rows, reports):      # read from the verdict, never re-judged
        assert row.verdict == rep.verdict.status and row.unstated == rep.verdict.unstated
        assert row.computed == rep.static.kind and row.passed == rep.passed
        assert row.path == "claims/a.scope" and row.line == rep.line
    fallacy, stated, toolkit, vague = t.rows
    assert fallacy.fallacies == ("self-attribution",) and [n.name for n in fallacy.impossible] == ["dsa"]
    assert fallacy.citation == "Doe, J.; Roe, R. (2024), A Paper, Section 4.1"
    assert fallacy.url == "https://example.org/paper" and fallacy.states == m.Statement("quote", "the words")
    assert stated.every_element_stated and stated.verdict == "supported" and stated.matched is True
    # inseq's usual contract fills it (local next-token) and does not answer a prompt-level question
    assert toolkit.toolkit == "inseq" and not toolkit.every_element_stated
    assert toolkit.fallacies == ("self-attribution",)
    assert toolkit.verdict == "unsupported" and toolkit.expected == "supported" and toolkit.matched is False
    assert vague.verdict == "underspecified" and vague.expected is None and vague.matched is None
    assert vague.citation == "a blog post" and vague.url is None and vague.states is None


def _stated_in_file(claim: m.Claim) -> bool:
    """Independently of the audit: the claim's computed block names each element, or a `use`."""
    c = claim.computed
    return c.use is not None or all(getattr(c.scope, e) is not None for e in m.Scope.ELEMENTS)


def test_summary_counts_equal_counts_from_the_rows_and_the_files(corpus: Path) -> None:
    doc = table_json(_table(corpus))
    rows = [r for r in doc["rows"] if r["verdict"] is not None]
    s = doc["summary"]
    assert s["claims"] == len(rows) == 4
    pubs = {(p["authors"], p["title"], p["year"]) for r in rows if (p := r["source"]["publication"])}
    texts = {r["source"]["citation"] for r in rows if r["source"]["publication"] is None and r["source"]["citation"]}
    assert s["sources"] == len(pubs) + len(texts) == 3
    # the toolkit claim commits it too: inseq's usual contract makes the generated prefix eligible
    assert s["self_attribution"] == sum("self-attribution" in r["fallacies"] for r in rows) == 2
    assert s["impossible_numbers"] == sum(bool(r["impossible"]) for r in rows) == 1
    for status in ("supported", "unsupported", "underspecified"):
        assert s["verdicts"][status] == sum(r["verdict"] == status for r in rows)
    assert s["expected"] == sum(r["expected"] is not None for r in rows) == 3
    assert s["matched"] == sum(r["expected"] == r["verdict"] for r in rows if r["expected"]) == 2
    claims = [d for d in load_text(FIXTURE) if isinstance(d, m.Claim)]
    assert s["state_every_element"] == sum(map(_stated_in_file, claims)) == 1


def test_a_file_that_does_not_load_is_a_row_without_a_verdict(tmp_path: Path) -> None:
    (tmp_path / "bad.scope").write_text('claim "x" {\n    source {\n        title "t"\n    }\n}\n', encoding="utf-8")
    t = _table(tmp_path)
    assert len(t.rows) == 1 and t.rows[0].verdict is None and t.rows[0].errors
    assert t.summary.claims == 0 and t.summary.not_loading == 1
    jsonschema.Draft202012Validator(table_schema()).validate(table_json(t))
    assert "does not load" in render_table_markdown(t) and "does not load" in render_table_html(t)


# --------------------------------------------------------------------------- renderings


def test_json_validates_against_the_published_schema(corpus: Path) -> None:
    schema = table_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = table_json(_table(corpus))
    jsonschema.Draft202012Validator(schema).validate(doc)
    json.dumps(doc, allow_nan=False)                   # strict JSON
    doc["rows"][0]["verdict"] = "plausible"            # the schema is not vacuous
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(doc)


def test_markdown_is_one_table_row_per_claim_and_the_summary(corpus: Path) -> None:
    t = _table(corpus)
    md = render_table_markdown(t)
    lines = md.splitlines()
    head = lines.index(next(x for x in lines if x.startswith("| claim |")))
    body = [x for x in lines[head + 2:] if x.startswith("|")]
    assert len(body) == len(t.rows) == 4
    n_cols = lines[head].count(" | ") + 1
    for row in body:                               # escaped pipes do not split a cell
        assert len(re.split(r"(?<!\\)\|", row)) - 2 == n_cols
    assert "[link](https://example.org/paper)" in body[0]
    assert "self-attribution" in body[0] and "dsa = 4.8 (outside \\[-1, 1\\])" in body[0]
    assert "commit the self-attribution fallacy: 2" in md and "state every SCOPE element: 1 of 4" in md
    linked = render_table_markdown(t, link_base="https://github.com/o/r/blob/main/")
    assert "(https://github.com/o/r/blob/main/claims/a.scope#L2)" in linked


def test_md_cell_leaves_no_markup() -> None:
    assert md_cell("a | b") == "a \\| b"
    assert md_cell("<script>x</script>") == "&lt;script&gt;x&lt;/script&gt;"
    assert md_cell("[x](javascript:y) *e*\nnext") == "\\[x\\](javascript:y) \\*e\\* next"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.hrefs += [v for k, v in attrs if k == "href" and v]
        self.rows += tag == "tr"


def test_html_escapes_every_field_and_links_claims_and_sources(tmp_path: Path) -> None:
    evil = '<script>alert(1)</script>'
    text = FIXTURE.replace('"the words"', json.dumps(evil)).replace('"nothing said"', json.dumps(evil + " name"))
    (tmp_path / "x.scope").write_text(text, encoding="utf-8")
    t = _table(tmp_path)
    page = render_table_html(t)
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    p = _Collect()
    p.feed(page)
    assert p.tags.count("script") == 1              # the page's own sorting script, nothing else
    assert p.rows == len(t.rows) + 1                # the header and one row per claim
    assert "https://example.org/paper" in p.hrefs
    claim_links = [h for h in p.hrefs if h.startswith(f"{tmp_path.name}/x.scope#L")]
    assert len(claim_links) == len(t.rows)
    assert "<link" not in page and "src=" not in page   # self-contained


# --------------------------------------------------------------------------- the CLI


def test_cli_format_choices_and_atomic_output(corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "t.json"
    out.write_text("previous", encoding="utf-8")
    code = main(["audit", str(corpus), "--format", "json", "--output", str(out)])
    assert code == 1                                # one expectation fails, one claim is not supported
    doc = json.loads(out.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(table_schema()).validate(doc)
    assert doc["rows"][0]["path"] == "claims/a.scope"   # relative to the output's folder
    assert not list(tmp_path.glob(".*.tmp"))           # the temporary file was replaced into place
    for fmt, marker in (("markdown", "| claim |"), ("html", "<table id=\"audit\">")):
        capsys.readouterr()
        main(["audit", str(corpus), "--format", fmt])
        assert marker in capsys.readouterr().out
    main(["audit", str(corpus), "--format", "markdown", "--detail"])
    assert "**Reasons**" in capsys.readouterr().out     # the per-claim report
    main(["audit", str(corpus)])
    assert "verdict: UNSUPPORTED" in capsys.readouterr().out   # text stays the per-claim report
    with pytest.raises(SystemExit):
        main(["audit", str(corpus), "--format", "csv"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_output_is_not_written_when_the_destination_is_refused(corpus: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "folder"
    target.mkdir()
    assert main(["audit", str(corpus), "--format", "json", "--output", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"scopecheck: --output {target}: ") and target.is_dir()


# --------------------------------------------------------------------------- re-runs


def test_rows_say_whether_and_why_not_rerun(tmp_path: Path) -> None:
    hub = 'model hub:"no-such-org/no-such-model-xyz"'
    (tmp_path / "c.scope").write_text(f'''
claim "hub model, not cached" {{
    source "s"
    question next_token
    {hub}
    prompt "Translate to French: The dog is black."
    computed {{ use local_next_token  method occlusion }}
}}
claim "no prompt" {{
    source "s"
    question next_token
    computed {{ use local_next_token  method occlusion }}
}}
''', encoding="utf-8")
    reports = audit_paths([tmp_path], dynamic=True, device="cpu")
    t = build_table(reports, dynamic=True)
    hub_row, bare = t.rows
    assert not hub_row.rerun and "not available offline" in hub_row.rerun_note
    assert "no-such-org/no-such-model-xyz" in hub_row.rerun_note
    assert reports[0].dynamic.errors == () and reports[0].dynamic.model is None   # no stand-in model
    assert not bare.rerun and "names no model and no prompt" in bare.rerun_note
    static = build_table(audit_paths([tmp_path]))
    assert "not available offline" in static.rows[0].rerun_note


def test_offline_problem_only_for_hub_models_not_cached() -> None:
    assert offline_problem(m.ModelRef("reference", "translate-ar")) is None
    assert offline_problem(m.ModelRef("path", "/somewhere")) is None   # the loader reports a missing path
    assert "not available offline" in offline_problem(m.ModelRef("hub", "no-such-org/no-such-model-xyz"))
    c = load_text('claim "c" { model reference:translate-ar prompt "p" }')[0]
    assert rerun_problem(c) is None


def test_seed_audits_table_matches_the_per_claim_verdicts() -> None:
    files = sorted((Path(__file__).parents[2] / "contracts" / "audits").glob("*.scope"))   # the seeds' claims
    reports = audit_paths(files)
    t = build_table(reports)
    assert [r.verdict for r in t.rows] == [r.verdict.status for r in reports]
    assert t.summary.matched == t.summary.expected == len(t.rows) > 0
