"""HTML report of a dataset contract: the contract as written and titled by its name, the data
source and n, the aggregates with n and intervals, a per-example table (failing examples first,
sortable) and one distribution plot per aggregated numeric quantity, the random baseline's
overlaid. A real run (reference:translate-ar, occlusion, rows of the shipped held-out set)."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from scopecheck.orchestration.records import ExampleRun
from scopecheck.report.html import render_report
from scopecheck.spec.text import format_document

DATA = Path(__file__).resolve().parents[2] / "contracts" / "datasets" / "translate_heldout.jsonl"
NAME = "held-out nouns: the noun's causes rank first"
AOPC = "deletion(operator = zero).aopc"
RANDOM = "random:deletion(operator = zero).aopc"
HIT = "top(1) in truth"
CONTRACT = f'''contract "{NAME}" {{
    model    reference:translate-ar
    dataset  "data.jsonl"(id = "id")

    use prompt_conditioned(target = 2)

    method occlusion(operator = zero)
    seed 0

    expect mean(deletion(operator = zero).aopc) > mean(random.aopc)
    expect rate(top(1) in truth) >= 0.5
}}
'''


class Page(HTMLParser):
    """The parts of the report a reader sees: section titles, the contract text, the example
    table's rows (cells' text and data-sort), the distribution figures, every text and attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.h2: list[str] = []
        self.contract_texts: list[str] = []
        self.example_heads: list[str] = []
        self.example_rows: list[list[tuple[str, str | None]]] = []
        self.distributions: list[dict[str, str]] = []
        self.texts: list[str] = []
        self.attrs: list[str] = []
        self.scripts: list[str] = []
        self.h3: list[str] = []

    def _within(self, tag: str, cls: str | None = None) -> dict[str, str] | None:
        for t, a in reversed(self.stack):
            if t == tag and (cls is None or cls in (a.get("class") or "").split()):
                return a
        return None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.attrs += [v for k, v in a.items() if not v.startswith("data:image/")]
        if tag in ("br", "img", "meta", "link", "input"):
            if tag == "img" and self._within("figure", "distribution") is not None:
                self.distributions.append(a)
            return
        self.stack.append((tag, a))
        if tag == "tr" and self._within("table", "examples") is not None and self._within("tbody") is not None:
            self.example_rows.append([])
        if tag == "td" and self._within("table", "examples") is not None and self._within("tbody") is not None:
            if len(self.stack) >= 2 and self.stack[-2][0] == "tr":
                self.example_rows[-1].append(["", a.get("data-sort")])
        if tag == "th" and self._within("table", "examples") is not None:
            self.example_heads.append("")
        for name, lst in (("h2", self.h2), ("h3", self.h3)):
            if tag == name:
                lst.append("")
        if tag == "pre" and "contract-text" in (a.get("class") or ""):
            self.contract_texts.append("")

    def handle_endtag(self, tag):
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break

    def handle_data(self, data):
        self.texts.append(data)
        if self._within("script") is not None:
            self.scripts.append(data)
        if self._within("h2") is not None:
            self.h2[-1] += data
        if self._within("h3") is not None:
            self.h3[-1] += data
        if self._within("pre", "contract-text") is not None:
            self.contract_texts[-1] += data
        if self._within("table", "examples") is not None:
            if self._within("th") is not None and self.example_heads:
                self.example_heads[-1] += data
            elif self._within("td") is not None and self._within("tbody") is not None and self.example_rows:
                row = self.example_rows[-1]
                if row:
                    row[-1][0] += data


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    return p


@pytest.fixture(scope="module")
def ds_run(tmp_path_factory):
    from scopecheck.loader import check_text
    from scopecheck.orchestration.runner import Runner

    d = tmp_path_factory.mktemp("ds")
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()[:5]]
    rows[1]["truth"] = ["French"]       # not the noun's cause: top(1) misses it, the example fails
    rows[4]["truth"] = ["zebra"]        # not in the prompt: a row that cannot be an example
    (d / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    path = d / "ds.scope"
    path.write_text(CONTRACT, encoding="utf-8")
    sf = check_text(CONTRACT, str(path))
    assert not sf.errors, [e.render() for e in sf.errors]
    (contract,) = sf.documents
    runner = Runner(device="cpu", progress=False)
    cr = runner.run(contract)
    assert cr.error is None, cr.error
    cr.outcomes = [runner.evaluate(cr, ex) for ex in contract.expects]
    return cr


def failing(e: ExampleRun) -> bool:
    return bool(e.error) or e.values.get(HIT) is not True


def test_dataset_section_states_the_contract_aggregates_and_every_example(ds_run):
    cr = ds_run
    assert [e.id for e in cr.examples] == ["t00", "t01", "t02", "t03"] and len(cr.row_errors) == 1
    assert cr.examples[1].values[HIT] is False and cr.examples[0].values[HIT] is True
    p = parse(render_report([cr]))

    # titled by the dataset contract's name (not an example's), its text as written
    (h2,) = p.h2
    assert NAME in h2 and "[t0" not in h2
    assert p.contract_texts == [format_document(cr.contract)]
    assert "dataset" in p.contract_texts[0] and "rate(top(1) in truth)" in p.contract_texts[0]
    text = " ".join(" ".join(p.texts).split())
    assert f"source {cr.dataset['source']}" in text
    assert "examples 4" in text and "rows that are not examples 1" in text and "resumed from the store 0" in text
    assert "'zebra' does not occur in the prompt" in text

    # one row per example, the failing ones first (each group in dataset order)
    ids = [row[0][0].split()[0] for row in p.example_rows]
    want = [e.id for e in cr.examples if failing(e)] + [e.id for e in cr.examples if not failing(e)]
    assert ids == want and ids[0] == "t01"
    heads = [" ".join(h.split()) for h in p.example_heads]
    i_aopc, i_rnd, i_hit = (heads.index(h) for h in (AOPC, "random.aopc (of deletion(operator = zero))", HIT))
    by_id = {e.id: e for e in cr.examples}
    for row in p.example_rows:
        e = by_id[row[0][0].split()[0]]
        assert row[1][0].strip().startswith("fail" if failing(e) else "pass")
        for i, key in ((i_aopc, AOPC), (i_rnd, RANDOM)):
            assert float(row[i][0]) == pytest.approx(e.values[key], rel=1e-5)
            assert float(row[i][1]) == e.values[key]            # sorted by the exact value
        assert row[i_hit][0].strip() == ("yes" if e.values[HIT] else "no")
    # sortable: a header click sorts (inline script, no external asset)
    assert any("table.sortable th" in s and "addEventListener" in s for s in p.scripts)
    assert not any(a.startswith(("http:", "https:", "//")) for a in p.attrs)

    # aggregates: measured values recomputed independently, n, the interval around the mean
    aopc = np.array([e.values[AOPC] for e in cr.examples])
    rnd = np.array([e.values[RANDOM] for e in cr.examples])
    hits = np.array([e.values[HIT] for e in cr.examples], dtype=float)
    for side, value in (("mean(deletion(operator = zero).aopc)", aopc.mean()), ("> mean(random.aopc)", rnd.mean()),
                        ("rate(top(1) in truth)", hits.mean())):
        # the side, its method note, the measured value, n = 4, the interval
        interval = r"-?[0-9.e+-]+, -?[0-9.e+-]+\]"
        assert re.search(re.escape(side) + r" [^\[]*?" + re.escape(f" {value:.6g} 4 [") + interval, text), side
    assert text.count("pass") >= 2 + sum(not failing(e) for e in cr.examples)

    # one distribution plot per aggregated numeric quantity (the random baseline overlaid, not its own)
    (fig,) = p.distributions
    assert AOPC in fig["alt"]
    assert f"n = 4, mean {aopc.mean():.6g}" in fig["alt"]
    assert f"random baseline n = 4, mean {rnd.mean():.6g}" in fig["alt"]
    page = render_report([cr])
    uri = next(s for s in page.split('"') if s.startswith("data:image/svg+xml;base64,") and
               page.find(s) > page.find("Distributions over the examples"))
    svg = base64.b64decode(uri.split(",", 1)[1]).decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # the map is labelled as one example's
    assert any("one example's map (example t00)" in h for h in p.h3)
    # no Python reprs anywhere a reader sees
    for s in p.texts + p.attrs:
        assert "None" not in s and "{'" not in s and "[]" not in s, s


def test_examples_with_an_error_fail_and_come_first(ds_run):
    broken = ExampleRun("t99", {AOPC: None, RANDOM: None, HIT: None}, "ds.scope:3:14: the example could not run", 0.0)
    cr = dataclasses.replace(ds_run, examples=list(ds_run.examples) + [broken])
    p = parse(render_report([cr]))
    ids = [row[0][0].split()[0] for row in p.example_rows]
    assert ids[:2] == ["t01", "t99"] and sorted(ids[2:]) == ["t00", "t02", "t03"]
    row = p.example_rows[1]
    assert row[-1][0].strip() == broken.error and all(c[0].strip() == "—" for c in row[2:-1])
    text = " ".join(" ".join(p.texts).split())
    assert "examples with an error 1" in text and "failing examples 2" in text
    # the histogram leaves the missing values out: n counts the 4 computed examples
    (fig,) = p.distributions
    assert "n = 4," in fig["alt"]


def test_a_dataset_without_a_usable_example_is_reported_by_name_with_its_rows(tmp_path):
    from scopecheck.loader import check_text
    from scopecheck.orchestration.runner import Runner

    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()[:2]]
    for r in rows:
        r["truth"] = ["zebra"]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    sf = check_text(CONTRACT, str(tmp_path / "ds.scope"))
    (contract,) = sf.documents
    runner = Runner(device="cpu", progress=False)
    cr = runner.run(contract)
    assert cr.error is not None and not cr.examples and len(cr.row_errors) == 2
    cr.outcomes = [runner.evaluate(cr, ex) for ex in contract.expects]
    p = parse(render_report([cr]))
    (h2,) = p.h2
    assert NAME in h2 and "error" in h2
    assert p.contract_texts == [format_document(contract)]
    text = " ".join(" ".join(p.texts).split())
    assert "examples 0" in text and "rows that are not examples 2" in text and text.count("'zebra' does not occur") == 2
    assert p.example_rows == [] and p.distributions == []
    for s in p.texts + p.attrs:
        assert "None" not in s and "{'" not in s, s


FAKE_DOM = r"""
const data = JSON.parse(process.argv[1]);
function Row(cells) {
  this.cells = cells.map(([t, s]) => ({textContent: t, dataset: s === null ? {} : {sort: s}}));
  this.id = cells[0][0].trim().split(/\s+/)[0];
}
const body = {rows: data.rows.map(c => new Row(c)),
              appendChild(r) { this.rows = this.rows.filter(x => x !== r).concat([r]); }};
const table = {tBodies: [body]};
const handlers = [];
const heads = data.heads.map((h, i) => ({cellIndex: i, dataset: {}, style: {},
                                         closest: t => t === "table" ? table : headRow,
                                         addEventListener(ev, f) { handlers[i] = f; }}));
const headRow = {querySelectorAll: () => heads};
global.document = {querySelectorAll: () => heads};
eval(data.script);
const out = [];
for (const i of data.clicks) { handlers[i](); out.push(body.rows.map(r => r.id)); }
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(__import__("shutil").which("node") is None, reason="node is not installed")
def test_clicking_a_header_sorts_the_example_table(ds_run):
    """The page's own script, run by node on the rendered rows (a minimal DOM of what it touches)."""
    import subprocess

    p = parse(render_report([ds_run]))
    heads = [" ".join(h.split()) for h in p.example_heads]
    i = heads.index(AOPC)
    arg = json.dumps({"rows": p.example_rows, "heads": heads, "script": "".join(p.scripts), "clicks": [i, i, 0]})
    out = subprocess.run(["node", "-e", FAKE_DOM, arg], capture_output=True, text=True, timeout=60, check=True)
    asc, desc, by_id = json.loads(out.stdout)
    order = sorted(ds_run.examples, key=lambda e: e.values[AOPC])
    assert asc == [e.id for e in order] and desc == [e.id for e in reversed(order)]
    assert by_id == [e.id for e in ds_run.examples]      # the id column sorts in dataset order


def test_a_resumed_run_states_what_came_from_the_store(tmp_path):
    from scopecheck.loader import check_text
    from scopecheck.orchestration.runner import Runner

    rows = DATA.read_text(encoding="utf-8").splitlines()[:3]
    (tmp_path / "data.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (contract,) = check_text(CONTRACT, str(tmp_path / "ds.scope")).documents
    first = Runner(device="cpu", progress=False, store_dir=str(tmp_path / "store")).run(contract)
    runner = Runner(device="cpu", progress=False, store_dir=str(tmp_path / "store"), resume=True)
    cr = runner.run(contract)
    assert cr.error is None and [e.stored for e in cr.examples] == [True] * 3
    cr.outcomes = [runner.evaluate(cr, ex) for ex in contract.expects]
    p = parse(render_report([cr]))
    text = " ".join(" ".join(p.texts).split())
    assert "examples 3 computed now 0 resumed from the store 3" in text
    assert [row[0][0].split() for row in p.example_rows] == [[e.id, "(resumed)"] for e in first.examples]
    assert any("one example's map (example t00)" in h for h in p.h3)   # recomputed to show its map
