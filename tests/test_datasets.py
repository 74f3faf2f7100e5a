"""Contracts over datasets: examples, aggregates with intervals, the resumable store, bad rows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scopecheck.loader import check_text
from scopecheck.orchestration.runner import Runner
from scopecheck.orchestration.store import Store

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "contracts" / "datasets" / "translate_heldout.jsonl"

CONTRACT = '''contract "ds" {{
    model    reference:translate-ar
    dataset  "data.jsonl"(limit = {limit}, id = "id")

    use prompt_conditioned(target = 2)

    method occlusion(operator = zero)
    seed 0

    expect rate(top(1) in truth) >= 0.9
    expect mean(comprehensiveness(operator = zero, k = 0.2).value) > mean(random.value)
    expect paired(comprehensiveness(operator = zero, k = 0.2).value, random.value).p < 0.05
    expect quantile(comprehensiveness(operator = zero, k = 0.2).value, q = 0.25) > 0
    expect eligibility
}}
'''


def setup_dir(tmp_path: Path, limit: int = 8, rows: list[str] | None = None) -> Path:
    d = tmp_path / "c"
    d.mkdir(exist_ok=True)
    if rows is None:
        shutil.copy(DATA, d / "data.jsonl")
    else:
        (d / "data.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    f = d / "ds.scope"
    f.write_text(CONTRACT.format(limit=limit), encoding="utf-8")
    return f


def run_file(path: Path, store: Path | None = None, resume: bool = False):
    sf = check_text(path.read_text(encoding="utf-8"), str(path))
    assert not sf.errors, [e.render() for e in sf.errors]
    (doc,) = sf.documents
    r = Runner(device="cpu", store_dir=str(store) if store else None, resume=resume)
    cr = r.run(doc)
    return doc, r, cr


def test_aggregates_equal_an_independent_recomputation(tmp_path):
    from scipy import stats

    f = setup_dir(tmp_path, limit=10)
    doc, r, cr = run_file(f, tmp_path / "store")
    assert cr.error is None and len(cr.examples) == 10
    outcomes = [r.evaluate(cr, e) for e in doc.expects]
    assert all(o.passed for o in outcomes), [o.explanation for o in outcomes]
    # recompute from the stored per-example values, independently of scopecheck.orchestration.stats
    (store_file,) = (tmp_path / "store").glob("*.jsonl")
    recs = [json.loads(line) for line in store_file.read_text().splitlines()]
    assert len(recs) == 10
    comp = np.array([x["values"]["comprehensiveness(operator = zero, k = 0.2).value"] for x in recs])
    rnd = np.array([x["values"]["random:comprehensiveness(operator = zero, k = 0.2).value"] for x in recs])
    hit = np.array([x["values"]["top(1) in truth"] for x in recs], dtype=float)
    mean_out, paired_out = outcomes[1], outcomes[2]
    assert mean_out.left == pytest.approx(comp.mean()) and mean_out.right == pytest.approx(rnd.mean())
    assert outcomes[0].left == pytest.approx(hit.mean())
    want = stats.bootstrap((comp,), np.mean, n_resamples=2000, confidence_level=0.95, method="percentile",
                           random_state=np.random.default_rng(0)).confidence_interval
    assert f"[95% CI {want.low:.4g}, {want.high:.4g}]" in mean_out.explanation
    assert paired_out.left == pytest.approx(stats.wilcoxon(comp - rnd).pvalue)
    assert outcomes[3].left == pytest.approx(np.quantile(comp, 0.25))
    assert "n = 10" in mean_out.explanation


def test_failing_aggregate_names_its_worst_examples(tmp_path):
    f = setup_dir(tmp_path, limit=6)
    f.write_text(f.read_text().replace("rate(top(1) in truth) >= 0.9", "rate(top(1) in truth) >= 1.5"))
    doc, r, cr = run_file(f)
    o = r.evaluate(cr, doc.expects[0])
    assert not o.passed and "worst examples" in o.explanation and "n = 6" in o.explanation


def _records(store: Path) -> dict[str, dict]:
    out = {}
    for fpath in store.glob("*.jsonl"):
        for line in fpath.read_text().splitlines():
            rec = json.loads(line)
            out[rec["example"]] = {"key": rec["key"], "values": rec["values"], "error": rec["error"]}
    return out


def test_resume_after_sigkill_gives_the_uninterrupted_store(tmp_path):
    f = setup_dir(tmp_path, limit=12)
    full, part = tmp_path / "full", tmp_path / "part"
    cmd = [sys.executable, "-m", "scopecheck.cli", "run", str(f), "--device", "cpu", "--report", "-",
           "--store"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(cmd + [str(full)], check=False, capture_output=True, env=env, timeout=600)
    proc = subprocess.Popen(cmd + [str(part)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        files = list(part.glob("*.jsonl.partial"))       # a fresh run writes beside the store file
        if files and files[0].read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    files = list(part.glob("*.jsonl.partial"))
    assert not list(part.glob("*.jsonl"))                  # replaced only by a completed run
    done = files[0].read_text().count("\n")
    assert 4 <= done < 12, done                            # interrupted mid-way
    with open(files[0], "a") as fh:                        # and a record cut off in the middle
        fh.write('{"key": {"contract": "x", "exam')
    r = subprocess.run(cmd + [str(part), "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _records(part) == _records(full)                # the resume adopted the killed run's records
    assert len(_records(full)) == 12 and not list(part.glob("*.partial"))


def test_truncated_last_line_is_redone_and_edits_change_the_key(tmp_path):
    f = setup_dir(tmp_path, limit=4)
    store = tmp_path / "store"
    doc, r, cr = run_file(f, store)
    (path,) = store.glob("*.jsonl")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])               # the last record loses its end
    with Store(store, path.stem) as s:                     # the lock is released on leaving
        assert s.truncated and len(s.records) == 3
    doc, r, cr = run_file(f, store, resume=True)
    assert cr.dataset["resumed"] == 3 and len(_records(store)) == 4
    # the same examples under an edited contract: another key, nothing reused
    f.write_text(f.read_text().replace("k = 0.2", "k = 0.3"))
    doc, r, cr = run_file(f, store, resume=True)
    assert cr.dataset["resumed"] == 0 and len(list(store.glob("*.jsonl"))) == 2


def test_bad_rows_are_listed_and_good_rows_run(tmp_path):
    good = DATA.read_text().splitlines()[:3]
    long_output = json.dumps({"id": "long", "prompt": "Translate to French: The dog is black.",
                              "output": "Le chien est noir. " * 20, "truth": ["dog"]})
    rows = good + [
        json.dumps({"id": "nofield", "question": "Translate to French: The dog is black.", "output": "x"}),
        json.dumps({"id": "empty", "prompt": "   ", "output": "Le chien est noir."}),
        "{not json",
        long_output,
    ]
    f = setup_dir(tmp_path, limit=100, rows=rows)
    doc, r, cr = run_file(f)
    errs = {(e.row, e.id): e.message for e in cr.row_errors}
    assert errs[(4, "nofield")].startswith("no field 'prompt'")
    assert errs[(5, "empty")] == "the prompt is empty"
    assert any(row == 6 for row, _ in errs)
    by_id = {e.id: e for e in cr.examples}
    assert set(by_id) == {"t00", "t01", "t02", "long"}
    assert by_id["long"].error is not None and "[context]" in by_id["long"].error
    assert all(by_id[i].error is None for i in ("t00", "t01", "t02"))
    o = r.evaluate(cr, doc.expects[0])
    assert "3 row(s) could not be examples" in o.explanation and "1 missing" in o.explanation


def test_dataset_statements_are_validated(tmp_path):
    f = setup_dir(tmp_path)
    text = f.read_text()
    errs = check_text(text.replace('limit = 8', 'limt = 8'), str(f)).errors
    assert errs and errs[0].rule == "params"
    errs = check_text(text.replace('dataset  "data.jsonl"(limit = 8, id = "id")', 'prompt "x"\n    output "y"'), str(f)).errors
    assert any("aggregates over examples" in e.message for e in errs)
    errs = check_text(text.replace('"data.jsonl"', 'reference:nope/heldout'), str(f)).errors
    assert errs and errs[0].rule == "unknown-name"
    outside = check_text(text.replace('"data.jsonl"', '"../../x.jsonl"'), str(f))
    assert not outside.errors
    r = Runner(device="cpu")
    cr = r.run(outside.documents[0])
    assert cr.error is not None and "outside the contract's folder" in cr.error


# ---------------------------------------------------------------------------- the folder rule


@pytest.mark.parametrize("spelled", ["/etc/passwd", "~/.bashrc", "/proc/self/environ", "outside_link.jsonl",
                                     "../elsewhere.jsonl"])
def test_dataset_paths_outside_the_folder_are_refused_however_spelled(tmp_path, monkeypatch, spelled):
    from scopecheck.datasets import load_examples
    from scopecheck.errors import ContractValidationError

    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text('{"prompt": "export SECRET=1"}\n')
    (tmp_path / "elsewhere.jsonl").write_text('{"prompt": "outside"}\n')
    monkeypatch.setenv("HOME", str(home))
    f = setup_dir(tmp_path)
    (f.parent / "outside_link.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    text = f.read_text().replace('"data.jsonl"', json.dumps(spelled))
    sf = check_text(text, str(f))
    (doc,) = sf.documents
    with pytest.raises(ContractValidationError) as err:
        load_examples(doc.dataset, f.parent)
    assert err.value.rule == "dataset" and err.value.span == doc.dataset.span
    assert "outside the contract's folder" in err.value.message
    f.write_text(text)
    cr = Runner(device="cpu").run(doc)                     # the run: a positioned error with a caret
    assert cr.error.startswith(f"{f}:3:5: invalid contract[dataset]: ") and "\n  3 | " in cr.error and "^" in cr.error
    assert not cr.examples


def test_allow_outside_data_is_the_callers_choice(tmp_path):
    from scopecheck.datasets import load_examples

    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(DATA.read_text().splitlines()[0] + "\n")
    f = setup_dir(tmp_path)
    (doc,) = check_text(f.read_text().replace('"data.jsonl"', json.dumps(str(outside))), str(f)).documents
    loaded = load_examples(doc.dataset, f.parent, allow_outside=True)
    assert [e.id for e in loaded.examples] == ["t00"]
    inside = load_examples(check_text(f.read_text().replace('"data.jsonl"', json.dumps(str(f.parent / "data.jsonl"))),
                                      str(f)).documents[0].dataset, f.parent)
    assert len(inside.examples) == 8                       # an absolute path inside the folder is fine



def test_allow_outside_data_on_the_command_line(tmp_path, capsys):
    """``scopecheck run`` refuses an outside dataset (exit 1, the positioned error), and runs it
    with ``--allow-outside-data``."""
    from scopecheck.cli import main

    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(DATA.read_text().splitlines()[0] + "\n")
    f = setup_dir(tmp_path)
    f.write_text(f.read_text().replace('"data.jsonl"', json.dumps(str(outside))))
    args = ["run", str(f), "--device", "cpu", "--report", "-", "--store", "-", "--no-expect",
            "--json", str(tmp_path / "r.json")]
    assert main(args) == 1
    assert "outside the contract's folder" in capsys.readouterr().out
    assert main([*args, "--allow-outside-data"]) == 0
    (run,) = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert run["error"] is None

# ---------------------------------------------------------------------------- reading rows


def _load(tmp_path: Path, name: str, raw: bytes, params: str = ""):
    from scopecheck.datasets import load_examples

    d = tmp_path / "rows"
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(raw)
    f = d / "c.scope"
    f.write_text(CONTRACT.format(limit=8).replace('"data.jsonl"(limit = 8, id = "id")', f'"{name}"({params})'))
    (doc,) = check_text(f.read_text(), str(f)).documents
    return load_examples(doc.dataset, d)


def test_csv_quoted_newlines_stay_and_bad_utf8_is_that_rows_error(tmp_path):
    import csv
    import io

    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["prompt", "output"])
    w.writerow(["The dog\nis black.", "Le chien\r\nest noir."])
    w.writerow(["BAD", "x"])
    w.writerow(["The cat is white.", "Le chat est blanc."])
    raw = buf.getvalue().encode("utf-8").replace(b"BAD", b"B\xffD")
    loaded = _load(tmp_path, "d.csv", raw)
    assert [(e.prompt, e.output) for e in loaded.examples] == [("The dog\nis black.", "Le chien\r\nest noir."),
                                                               ("The cat is white.", "Le chat est blanc.")]
    (err,) = loaded.errors
    at = raw.index(b"\xff")
    assert err.row == 2 and f"invalid UTF-8 at byte {at} of the file" in err.message
    assert [e.row for e in loaded.examples] == [1, 3]


def test_jsonl_bad_utf8_is_that_rows_error(tmp_path):
    good = DATA.read_text().splitlines()[:2]
    raw = (good[0] + "\n").encode() + b'{"prompt": "caf\xe9"}\n' + (good[1] + "\n").encode()
    loaded = _load(tmp_path, "d.jsonl", raw, 'id = "id"')
    assert [e.id for e in loaded.examples] == ["t00", "t01"]
    (err,) = loaded.errors
    at = raw.index(b"\xe9")
    assert err.row == 2 and f"invalid UTF-8 at byte {at} of the file" in err.message
    assert "\ufffd" not in "".join(e.prompt for e in loaded.examples)


def test_a_large_dataset_without_limit_says_its_size_and_an_estimate(tmp_path, monkeypatch, caplog):
    import logging

    from scopecheck.orchestration import dataset as dataset_run

    monkeypatch.setattr(dataset_run, "LARGE_DATASET", 3)      # the rule, on four rows instead of 1,001
    f = setup_dir(tmp_path, rows=DATA.read_text().splitlines()[:4])
    f.write_text(f.read_text().replace("limit = 8, ", ""))
    with caplog.at_level(logging.WARNING, logger="scopecheck.dataset"):
        doc, r, cr = run_file(f)
    size, estimate = cr.dataset["notices"]
    assert "4 examples and no `limit`" in size and "4 to compute" in size
    secs = cr.examples[0].seconds
    assert estimate.startswith(f"estimate: {secs:.3g} s for the first example") and "the 4 to compute" in estimate
    assert [rec.getMessage() for rec in caplog.records] == [size, estimate]
    f.write_text(f.read_text().replace('"data.jsonl"(', '"data.jsonl"(limit = 4, '))
    doc, r, cr = run_file(f)
    assert "notices" not in cr.dataset                       # a stated limit: nothing to say


# ---------------------------------------------------------------------------- the store in runs


def test_store_problems_are_reported_and_only_they_are_recomputed(tmp_path):
    f = setup_dir(tmp_path, limit=4)
    store = tmp_path / "store"
    doc, r, cr = run_file(f, store)
    (path,) = store.glob("*.jsonl")
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["values"] = 5                                          # crashed --resume with a TypeError
    lines[1] = json.dumps(bad)
    lines[2] = "{corrupt"
    path.write_text("\n".join(lines) + "\n")
    doc, r2, cr2 = run_file(f, store, resume=True)
    assert cr2.error is None and cr2.dataset["resumed"] == 2       # lines 1 and 4 kept, 2 and 3 redone
    probs = cr2.dataset["store_problems"]
    assert len(probs) == 2 and probs[0].startswith(f"{path}:2: `values` is not an object")
    assert probs[1].startswith(f"{path}:3: not JSON")
    assert cr2.dataset["notices"][:2] == probs
    assert _store_values(store) == _records_of(cr)              # nothing lost, nothing twice
    assert len(path.read_text().splitlines()) == 4


def _records_of(cr) -> dict[str, dict]:
    return {e.id: e.values for e in cr.examples}


def _store_values(store: Path) -> dict[str, dict]:
    return {k: v["values"] for k, v in _records(store).items()}


def test_an_interrupted_fresh_run_leaves_the_old_store(tmp_path, monkeypatch):
    from scopecheck.orchestration import executors

    f = setup_dir(tmp_path, limit=3)
    store = tmp_path / "store"
    run_file(f, store)
    (path,) = store.glob("*.jsonl")
    before = path.read_bytes()
    real, calls = executors.compute_example, []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt                           # Ctrl-C during the second example
        return real(*a, **kw)

    monkeypatch.setattr(executors, "compute_example", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_file(f, store)                                    # a rerun without --resume
    assert path.read_bytes() == before                        # used to be deleted at the start
    monkeypatch.setattr(executors, "compute_example", real)
    doc, r, cr = run_file(f, store, resume=True)              # the lock was released
    assert cr.error is None and cr.dataset["resumed"] == 3 and not list(store.glob("*.partial"))
    run_file(f, store)                                        # a completed fresh run replaces the file
    assert len(path.read_text().splitlines()) == 3 and not list(store.glob("*.partial"))


def test_a_run_on_a_store_in_use_is_refused(tmp_path):
    f = setup_dir(tmp_path, limit=2)
    store = tmp_path / "store"
    doc, r, cr = run_file(f, store)
    (path,) = store.glob("*.jsonl")
    before = path.read_bytes()
    with Store(store, path.stem):
        for resume in (False, True):
            doc, r2, cr2 = run_file(f, store, resume=resume)
            assert cr2.error is not None and "in use by another run" in cr2.error and not cr2.examples
    assert path.read_bytes() == before


# ---------------------------------------------------------------------------- truth

STORIES = ROOT.parent / "shared" / "models" / "stories260k"
TRUTH_PROMPT = "Once upon a time, a girl named Lily went out. She"      # 13 tokens: top(20) is all


def test_truth_semantics_on_a_hand_made_ranking():
    from types import SimpleNamespace as NS

    from scopecheck.orchestration.examples import compare_truth
    from scopecheck.dsl.parser import parse_text

    ranking = [NS(position=p) for p in (5, 3, 7, 2, 9)]            # top(3) = {5, 3, 7}
    result = NS(ranking=lambda: ranking, positions=lambda sel: [sel.a + 1])   # x[i] is position i + 1
    sub = NS(result=result)

    def holds(expr: str, truth: list[int]) -> bool:
        (doc,) = parse_text(f'contract "c" {{ expect rate({expr}) > 0 }}')
        return compare_truth(None, sub, doc.expects[0].left.args[0], truth)

    assert holds("top(3) in truth", [3]) and holds("truth in top(3)", [3])
    assert holds("top(3) in truth", [3, 9]) and not holds("truth in top(3)", [3, 9])   # any / every
    assert not holds("top(3) in truth", [9]) and not holds("truth in top(3)", [9])
    assert holds("truth in top(5)", [3, 9]) and holds("top(1) in truth", [5]) and not holds("top(1) in truth", [3])
    assert holds("top(3) == truth", [3, 5, 7]) and holds("top(3) != truth", [3, 5])


@pytest.mark.skipif(not STORIES.exists(), reason=f"stories260k is not in {STORIES.parent}")
def test_truth_items_match_prompt_tokens_like_text_selectors(tmp_path):
    from transformers import AutoTokenizer

    from scopecheck.datasets import example_contract, load_examples

    rows = [{"id": "plain", "truth": "Lily"}, {"id": "spaced", "truth": " Lily"}, {"id": "piece", "truth": "\u2581Lily"},
            {"id": "index", "truth": 6}, {"id": "two", "truth": ["Lily", "girl"]}, {"id": "absent", "truth": "Bob"},
            {"id": "beyond", "truth": 99}]
    d = tmp_path / "c"
    d.mkdir()
    (d / "data.jsonl").write_text("".join(json.dumps({"prompt": TRUTH_PROMPT, "output": " saw a dog.", **r}) + "\n"
                                          for r in rows), encoding="utf-8")
    f = d / "t.scope"
    f.write_text(f'''contract "truth" {{
    model    "{STORIES}"
    dataset  "data.jsonl"(id = "id")
    use prompt_conditioned(target = 1)
    method occlusion
    seed 0
    expect rate(top(3) in truth) >= 0
    expect rate(truth in top(20)) >= 1
}}
''', encoding="utf-8")
    doc, r, cr = run_file(f)
    errs = {e.id: (e.row, e.message) for e in cr.row_errors}
    assert errs["piece"][0] == 3 and "not a tokenizer piece: write 'Lily'" in errs["piece"][1]
    assert errs["absent"][0] == 6 and "'Bob' does not occur in the prompt" in errs["absent"][1]
    by_id = {e.id: e for e in cr.examples}
    assert set(by_id) == {"plain", "spaced", "index", "two", "beyond"}
    assert by_id["beyond"].error.startswith("row 7 (beyond): truth item x[99]: index 99 is out of range")
    # independently: the tokenizer's offsets say which prompt tokens cover each truth text
    tok = AutoTokenizer.from_pretrained(str(STORIES))
    offsets = tok(TRUTH_PROMPT, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]

    def covering(text: str) -> set[int]:                      # 1-based prompt token indices
        a = TRUTH_PROMPT.index(text)
        return {i for i, (s, e) in enumerate(offsets, 1) if s < a + len(text) and a < e}

    want = {"plain": covering("Lily"), "spaced": covering(" Lily"), "index": {6},
            "two": covering("Lily") | covering("girl")}
    assert want["plain"] == want["spaced"] and len(offsets) <= 20
    ex_by_id = {ex.id: ex for ex in load_examples(doc.dataset, d).examples}
    for i, truth in want.items():
        sub = r.execute(example_contract(doc, ex_by_id[i]))
        prompt = {t.position: t.index for t in sub.result.tokens if t.role == "prompt"}
        top3 = {prompt[t.position] for t in sub.result.ranking()[:3]}
        top20 = {prompt[t.position] for t in sub.result.ranking()[:20]}
        assert by_id[i].values["top(3) in truth"] == bool(top3 & truth), i
        assert by_id[i].values["truth in top(20)"] == (truth <= top20) is True, i
    o3, o20 = (r.evaluate(cr, e) for e in doc.expects)
    assert o20.passed and o20.left == 1.0                     # every truth token is among all 13
    assert "n = 4, 1 missing" in o20.explanation and "2 row(s) could not be examples" in o20.explanation
