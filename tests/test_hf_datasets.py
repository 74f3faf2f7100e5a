"""``dataset hf(...)``: Hugging Face datasets the tests build locally (a save_to_disk folder, a
Parquet file, a JSON Lines file written by ``to_json``), each run end to end on the reference model
and compared with the same rows as a plain JSON Lines dataset; prompt segments filled from fields;
row errors; hub ids refused offline; the extra missing."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from scopecheck.datasets import load_examples  # noqa: E402
from scopecheck.errors import ContractError  # noqa: E402
from scopecheck.loader import check_text  # noqa: E402
from scopecheck.orchestration.runner import Runner  # noqa: E402
from scopecheck.spec import model as m  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "contracts" / "datasets" / "translate_heldout.jsonl"

BODY = '''
    use prompt_conditioned(target = 2)
    {fixed}
    method occlusion(operator = zero)
    seed 0

    expect rate(top(1) in truth) >= 0.5
    expect mean(comprehensiveness(operator = zero, k = 0.2).value) > mean(random.value)
'''


def contract(dataset: str, prompt: str = "", fixed: str = "") -> str:
    return f'contract "hf" {{\n    model reference:translate-ar\n    dataset {dataset}\n{prompt}' + \
        BODY.format(fixed=fixed) + "}\n"


SEGMENTS = '''    prompt {
        instruction: field("instr")
        source: field("sentence")
    }
'''
SEG_FIXED = "fixed y[<2], x.instruction\n    eligible x.source"


def rows(n: int = 3) -> list[dict]:
    out = []
    for line in DATA.read_text(encoding="utf-8").splitlines()[:n]:
        r = json.loads(line)
        instr, sentence = r["prompt"].split(": ", 1)
        out.append({"id": r["id"], "prompt": r["prompt"], "output": r["output"], "truth": r["truth"],
                    "instr": instr + ":", "sentence": sentence})
    return out


def columns(rs: list[dict]) -> dict[str, list]:
    return {k: [r[k] for r in rs] for k in rs[0]}


def build(tmp_path: Path, rs: list[dict] | None = None) -> Path:
    """The same rows as a save_to_disk folder, a Parquet file, a to_json file and a JSONL file."""
    rs = rows() if rs is None else rs
    d = tmp_path / "c"
    d.mkdir(parents=True, exist_ok=True)
    ds = datasets.Dataset.from_dict(columns(rs))
    ds.save_to_disk(str(d / "disk"))
    ds.to_parquet(str(d / "rows.parquet"))
    ds.to_json(str(d / "rows.json"))
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs), encoding="utf-8")
    return d


def run(d: Path, text: str, name: str = "c.scope"):
    f = d / name
    f.write_text(text, encoding="utf-8")
    sf = check_text(text, str(f))
    assert not sf.errors, [e.render() for e in sf.errors]
    (doc,) = sf.documents
    r = Runner(device="cpu")
    return doc, r, r.run(doc)


def values(cr) -> dict[str, dict]:
    assert cr.error is None, cr.error
    assert all(e.error is None for e in cr.examples), [e.error for e in cr.examples]
    return {e.id: e.values for e in cr.examples}


def test_every_local_form_gives_the_jsonl_datasets_per_example_results(tmp_path):
    d = build(tmp_path)
    _, r, ref = run(d, contract('"rows.jsonl"(id = "id")'))
    want = values(ref)
    assert len(want) == 3
    for spelled in ('hf("disk", id = "id")', 'hf("rows.parquet", split = "train", id = "id")',
                    'hf("rows.json", id = "id")'):
        doc, r, cr = run(d, contract(spelled))
        assert values(cr) == want, spelled
        assert [r.evaluate(cr, e).passed for e in doc.expects] == [r.evaluate(ref, e).passed for e in doc.expects]
    # the same rows give the same fingerprint, whatever file holds them; other rows another one
    prm = lambda name: m.Dataset("hf", name, (), m.Span())  # noqa: E731
    fps = {n: load_examples(prm(n), d).fingerprint for n in ("disk", "rows.parquet", "rows.json")}
    assert len(set(fps.values())) == 1
    other = build(tmp_path / "o", rows(4))
    assert load_examples(prm("disk"), other).fingerprint != fps["disk"]


def test_a_dataset_dict_folder_is_read_by_its_split(tmp_path):
    d = build(tmp_path)
    rs = rows(5)
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(columns(rs[3:])),
                          "test": datasets.Dataset.from_dict(columns(rs[:3]))}).save_to_disk(str(d / "dict"))
    _, _, ref = run(d, contract('"rows.jsonl"(id = "id")'))
    _, _, cr = run(d, contract('hf("dict", split = "test", id = "id")'))
    assert values(cr) == values(ref)
    # without a split, a folder with two is refused with the splits it has
    _, _, cr = run(d, contract('hf("dict", id = "id")'))
    assert cr.error is not None and "c.scope:3:5:" in cr.error and 'split = "train"' in cr.error \
        and 'split = "test"' in cr.error
    _, _, cr = run(d, contract('hf("dict", split = "validation")'))
    assert "has no split 'validation'" in cr.error


def test_segments_are_filled_from_fields_and_their_tokens_are_the_fields_tokens(tmp_path):
    from scopecheck.datasets import example_contract
    from scopecheck.engine.align import align, positions
    from scopecheck.engine.models import load

    d = build(tmp_path)
    doc, r, cr = run(d, contract('hf("disk", id = "id")', SEGMENTS, SEG_FIXED))
    got = values(cr)
    # the same segments filled from the same rows written as JSON Lines: the same results
    _, _, ref = run(d, contract('"rows.jsonl"(id = "id")', SEGMENTS, SEG_FIXED), "ref.scope")
    assert got == values(ref)
    # the prompt is the fields joined with a space: the whole-prompt dataset with the same token
    # split gives the same attributions (the random baseline's draws differ with the contract text)
    _, _, whole = run(d, contract('"rows.jsonl"(id = "id")', fixed="fixed y[<2], x[1:4]\n    eligible x[>4]"),
                      "whole.scope")
    strip = lambda vs: {i: {k: v for k, v in x.items() if not k.startswith("random:")}  # noqa: E731
                        for i, x in vs.items()}
    assert strip(got) == strip(values(whole))
    # each example's segments: the field texts, and x.<segment> names exactly their tokens
    loaded = load_examples(doc.dataset, d, prompt=doc.prompt)
    tok = load(m.ModelRef("reference", "translate-ar")).tokenizer
    for ex, row in zip(loaded.examples, rows()):
        sub = example_contract(doc, ex)
        assert [(s.name, s.text) for s in sub.prompt.segments] == [("instruction", row["instr"]),
                                                                 ("source", row["sentence"])]
        al = align(tok, sub.prompt, ex.output)
        for seg, fld in (("instruction", "instr"), ("source", "sentence")):
            pos = positions(al, m.Selector("x", "all", segment=seg))
            assert [al.tokens[p].text for p in pos] == tok.tokenize(row[fld])
            assert [al.tokens[p].id for p in pos] == tok(row[fld], add_special_tokens=False)["input_ids"]


def test_row_errors_are_positioned_and_the_good_rows_run(tmp_path):
    rs = rows(3)
    bad = [dict(rs[0], id="nosentence", sentence=None), dict(rs[1], id="blank", sentence="   "),
           dict(rs[2], id="numprompt")]
    d = build(tmp_path, rs + bad[:2])
    # a missing field (None in a typed column), an empty field: that row's error, the others run
    doc, r, cr = run(d, contract('hf("disk", id = "id")', SEGMENTS, SEG_FIXED))
    errs = {(e.row, e.id): e.message for e in cr.row_errors}
    assert errs == {(4, "nosentence"): "field 'sentence' (segment source) is not text: NoneType null",
                    (5, "blank"): "field 'sentence' (segment source) is empty"}
    assert sorted(values(cr)) == ["t00", "t01", "t02"]
    # a field the rows do not have; a prompt column that is not text
    cols = columns(rs)
    datasets.Dataset.from_dict({**cols, "prompt": [1, 2, 3]}).save_to_disk(str(d / "ints"))
    loaded = load_examples(m.Dataset("hf", "ints", (m.Param("id", m.Text("id")),)), d)
    assert not loaded.examples and [e.message for e in loaded.errors] == ["the prompt is not text: int 1",
                                                                           "the prompt is not text: int 2",
                                                                           "the prompt is not text: int 3"]
    loaded = load_examples(m.Dataset("hf", "disk", (m.Param("prompt", m.Text("question")),)), d)
    assert {e.message.split(";")[0] for e in loaded.errors} == {"no field 'question'"}
    # the same rule for the same rows written as JSON Lines
    jl = load_examples(m.Dataset("path", "rows.jsonl", (m.Param("prompt", m.Text("question")),)), d)
    assert [e.message for e in jl.errors] == [e.message for e in loaded.errors]


def test_dataset_statements_are_validated_where_written(tmp_path):
    d = build(tmp_path)
    base = contract('hf("disk", id = "id")', SEGMENTS, SEG_FIXED)

    def errors(text):
        return check_text(text, str(d / "c.scope")).errors

    (e,) = errors(base.replace('id = "id"', 'splt = "x"'))
    assert e.rule == "params" and "no parameter `splt`" in e.message and (e.span.line, e.span.column) == (3, 24)
    (e,) = errors(base.replace('id = "id"', 'split = 3'))
    assert e.rule == "params" and "split" in e.message
    (e,) = errors(base.replace('hf("disk", id = "id")', 'hf("disk")(id = "id")'))
    assert "inside hf(...)" in e.message and (e.span.line, e.span.column) == (3, 24)
    (e,) = errors(base.replace('hf("disk", id = "id")', 'hf("disk", prompt = "prompt")'))
    assert e.rule == "dataset" and "both a field" in e.message
    # a field-filled segment without a dataset; a dataset contract's prompt without fields
    single = base.replace('    dataset hf("disk", id = "id")\n', '    output "Le chien est noir."\n')
    errs = errors(single)
    assert any(e.rule == "dataset" and "no dataset" in e.message and e.span.line == 5 for e in errs)
    errs = errors(base.replace('field("instr")', '"Translate to French:"').replace('field("sentence")', '"x"'))
    assert any("takes its prompts from the dataset" in e.message for e in errs)
    # a selector naming a segment the prompt does not have is still refused before the run
    errs = errors(base.replace("eligible x.source", "eligible x.sourse"))
    assert any("no segment `sourse`" in e.message for e in errs)


def test_the_canonical_text_and_json_keep_hf_and_fields(tmp_path):
    from scopecheck.dsl.format import format_document, format_text
    from scopecheck.spec.jsonio import schema_errors, to_json

    d = build(tmp_path)
    text = contract('hf("disk", split = "train", id = "id")', SEGMENTS, SEG_FIXED)
    (doc,) = check_text(text, str(d / "c.scope")).documents
    canon = format_document(doc)
    assert 'dataset  hf("disk", split = "train", id = "id")' in canon and 'source: field("sentence")' in canon
    (again,) = check_text(canon, str(d / "c.scope")).documents
    assert format_document(again) == canon
    # the file formatter (scopecheck fmt) keeps them too, and its output reads back as the same contract
    written = format_text(text.replace('hf("disk", split = "train", id = "id")', 'hf( "disk",split="train" ,id="id")'))
    assert 'dataset  hf("disk", split = "train", id = "id")' in written
    assert 'instruction: field("instr")' in written and 'source:      field("sentence")' in written
    (back,) = check_text(written, str(d / "c.scope")).documents
    assert format_document(back) == canon
    data, _ = to_json(doc)
    assert data["dataset"]["kind"] == "hf" and data["prompt"]["segments"][1] == {"name": "source", "text": "",
                                                                                "field": "sentence"}
    assert not schema_errors(doc)


def test_local_paths_follow_the_folder_rule(tmp_path):
    d = build(tmp_path)
    outside = build(tmp_path / "elsewhere")
    (d / "link").symlink_to(outside / "disk")
    for spelled in (f'"{outside / "disk"}"', '"../elsewhere/c/rows.parquet"', '"link"'):
        _, _, cr = run(d, contract(f'hf({spelled})'))
        assert cr.error is not None and "outside the contract's folder" in cr.error, spelled
    # a folder inside whose files link out is refused too
    (d / "mixed").mkdir()
    for f in (outside / "disk").iterdir():
        (d / "mixed" / f.name).symlink_to(f)
    _, _, cr = run(d, contract('hf("mixed")'))
    assert "links outside the contract's folder" in cr.error
    r = Runner(device="cpu", allow_outside_data=True)
    (doc,) = check_text(contract('hf("link", id = "id")'), str(d / "c.scope")).documents
    assert values(r.run(doc)).keys() == {"t00", "t01", "t02"}


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_a_hub_id_offline_is_refused_quickly_on_the_statement(tmp_path, monkeypatch, var):
    d = build(tmp_path)
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv(var, "1")
    t0 = time.perf_counter()
    _, _, cr = run(d, contract('hf("someone/some-dataset", split = "test")'))
    assert cr.error is not None and "c.scope:3:5:" in cr.error and f"{var} is set" in cr.error
    # no offline variable, and an endpoint that does not answer: refused by the probe, not a timeout
    monkeypatch.delenv(var)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    _, _, cr = run(d, contract('hf("squad")'))
    assert cr.error is not None and "127.0.0.1:9 cannot be reached" in cr.error
    assert time.perf_counter() - t0 < 10


def test_without_the_extra_the_error_names_it(tmp_path, monkeypatch):
    d = build(tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)       # `import datasets` raises ImportError
    _, _, cr = run(d, contract('hf("disk")'))
    assert cr.error is not None and "scopecheck[hf]" in cr.error and "c.scope:3:5:" in cr.error
    with pytest.raises(ContractError, match=r"scopecheck\[hf\]"):
        load_examples(m.Dataset("hf", "disk"), d)
    # plain JSON Lines datasets need no extra
    assert len(load_examples(m.Dataset("path", "rows.jsonl"), d).examples) == 3


def test_import_scopecheck_does_not_import_datasets():
    import subprocess

    code = ("import sys, scopecheck, scopecheck.datasets, scopecheck.loader, scopecheck.orchestration.runner; "
            "print('datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.stdout.strip() == "False"


def test_chat_segments_are_filled_too(tmp_path):
    from scopecheck.datasets import example_contract

    d = build(tmp_path)
    text = contract('hf("disk", id = "id")', '    prompt chat {\n        system: "You translate."\n'
                                              '        user: field("sentence")\n    }\n', SEG_FIXED)
    (doc,) = check_text(text, str(d / "c.scope")).documents
    loaded = load_examples(doc.dataset, d, prompt=doc.prompt)
    sub = example_contract(doc, loaded.examples[1])
    assert sub.prompt.chat and [(s.name, s.text) for s in sub.prompt.segments] == [
        ("system", "You translate."), ("user", rows()[1]["sentence"])]


def test_a_file_the_library_cannot_read_is_an_error_on_the_statement(tmp_path):
    d = build(tmp_path)
    (d / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    _, _, cr = run(d, contract('hf("broken.parquet")'))
    assert cr.error is not None and "c.scope:3:5:" in cr.error and "cannot read 'broken.parquet' as parquet" \
        in cr.error
    # types that disagree across lines (datasets 5 reads them as a Json column): that row's error
    (d / "mixed.jsonl").write_text('{"prompt": "Translate to French: The cow is heavy."}\n{"prompt": {"x": 1}}\n',
                                   encoding="utf-8")
    loaded = load_examples(m.Dataset("hf", "mixed.jsonl"), d)
    assert [e.id for e in loaded.examples] == ["row1"]
    assert [(e.row, e.message) for e in loaded.errors] == [(2, 'the prompt is not text: dict {"x": 1}')]
    _, _, cr = run(d, contract('hf("rows.parquet", split = "test")'))
    assert "one split, `train`" in cr.error
    _, _, cr = run(d, contract('hf("disk", config = "en")'))
    assert "`config` names a configuration of a hub dataset" in cr.error


def test_a_stored_run_resumes_and_edited_rows_are_redone(tmp_path):
    d = build(tmp_path)
    text = contract('hf("disk", id = "id")', SEGMENTS, SEG_FIXED)
    (d / "c.scope").write_text(text, encoding="utf-8")
    (doc,) = check_text(text, str(d / "c.scope")).documents
    first = Runner(device="cpu", store_dir=str(tmp_path / "store")).run(doc)
    again = Runner(device="cpu", store_dir=str(tmp_path / "store"), resume=True).run(doc)
    assert again.dataset["resumed"] == 3 and values(again) == values(first)
    rs = rows()
    rs[0]["sentence"] = "The cow is heavy."
    import shutil

    shutil.rmtree(d / "disk")
    datasets.Dataset.from_dict(columns(rs)).save_to_disk(str(d / "disk"))
    edited = Runner(device="cpu", store_dir=str(tmp_path / "store"), resume=True).run(doc)
    assert edited.dataset["key"] != first.dataset["key"] and edited.dataset["resumed"] == 0


def test_the_guide_pages_contracts_run_and_pass():
    """docs/guide/hf-datasets.md, read like the README: its contracts as files in contracts/."""
    import re

    page = ROOT / "docs" / "guide" / "hf-datasets.md"
    blocks = [b for b in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
              if re.match(r'\s*(contract|claim) "', b)]
    assert blocks
    for i, body in enumerate(blocks):
        sf = check_text(body, str(ROOT / "contracts" / f"hf-datasets-block{i + 1}.scope"))
        assert not sf.errors, [e.render() for e in sf.errors]
        r = Runner(device="cpu")
        for doc in sf.documents:
            cr = r.run(doc)
            assert cr.error is None and doc.dataset.kind == "hf", cr.error
            assert all(r.evaluate(cr, e).passed for e in doc.expects)
