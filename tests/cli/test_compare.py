"""``scopecheck compare A.json B.json``: a run compared with itself is equal (exit 0); runs with
another method or another seed differ (exit 1) and the differing tokens, the largest difference,
the rank correlation, the top-k overlap and the changed expectations it reports are the ones
computed here from the two JSON files; bad inputs exit 2 naming the file, never a traceback."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest

from scopecheck.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from stories_run import STORIES, stories_contract  # noqa: E402

TOL = 1e-6


def _run(tmp: Path, name: str, text: str) -> Path:
    src, out = tmp / f"{name}.scope", tmp / f"{name}.json"
    src.write_text(text, encoding="utf-8")
    assert main(["run", "--device", "cpu", "--report", "-", "--json", str(out), str(src)]) in (0, 1)
    assert out.is_file()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not (STORIES / "config.json").is_file():
        pytest.skip(f"the shared checkpoint {STORIES} is not beside this checkout")
    tmp = tmp_path_factory.mktemp("compare")
    ig = stories_contract(3)
    lime = ig.replace("integrated_gradients(steps = 8)", "lime(samples = 24)")
    return {"ig": _run(tmp, "ig", ig),
            "gxi": _run(tmp, "gxi", ig.replace("integrated_gradients(steps = 8)", "gradient_x_input")),
            "lime1": _run(tmp, "lime1", lime.replace("seed 3", "seed 1")),
            "lime2": _run(tmp, "lime2", lime.replace("seed 3", "seed 2"))}


def compare_json(capsys, a: Path, b: Path, *extra: str) -> tuple[int, dict]:
    code = main(["compare", "--json", *extra, str(a), str(b)])
    return code, json.loads(capsys.readouterr().out)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def spearman_by_hand(xs: list[float], ys: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def expected_map(a: dict, b: dict, k: int = 5) -> dict:
    """The map comparison computed directly from two results documents' first runs."""
    ta, tb = a["runs"][0]["tokens"], b["runs"][0]["tokens"]
    assert [t["text"] for t in ta] == [t["text"] for t in tb]
    diffs = {x["position"]: (x["score"], y["score"]) for x, y in zip(ta, tb) if abs(x["score"] - y["score"]) > TOL}
    gaps = [abs(x["score"] - y["score"]) for x, y in zip(ta, tb)]
    el = [(x["score"], y["score"]) for x, y in zip(ta, tb) if x["eligible"]]

    def top(ts):
        return [t["position"] for t in sorted((t for t in ts if t["eligible"]), key=lambda t: (-t["score"],
                                                                                            t["position"]))[:k]]

    return {"diffs": diffs, "max": max(gaps), "at": ta[gaps.index(max(gaps))]["position"],
            "rho": spearman_by_hand([p[0] for p in el], [p[1] for p in el]),
            "overlap": len(set(top(ta)) & set(top(tb))) / k, "top_a": top(ta), "top_b": top(tb)}


def changed_expectations(a: dict, b: dict) -> set[str]:
    ea = {e["text"]: e for e in a["runs"][0]["expectations"]}
    eb = {e["text"]: e for e in b["runs"][0]["expectations"]}
    return {t for t in ea if (ea[t]["passed"], ea[t]["measured"]) != (eb[t]["passed"], eb[t]["measured"])}


def test_a_run_compared_with_itself_is_equal(runs, capsys):
    assert main(["compare", str(runs["ig"]), str(runs["ig"])]) == 0
    out = capsys.readouterr().out
    assert "equal within the tolerance" in out and "software (provenance): the same" in out
    code, doc = compare_json(capsys, runs["ig"], runs["ig"])
    assert code == 0 and doc["equal"] is True and doc["environment"] == []
    (r,) = doc["runs"]
    assert r["provenance"] == [] and r["map"]["tokens"] == [] and r["map"]["max_abs_diff"] == 0
    assert r["map"]["spearman"] == pytest.approx(1.0) and r["map"]["top_k"]["overlap"] == 1.0
    assert r["checks"] == r["expectations"] == []


@pytest.mark.parametrize("pair, what", [(("ig", "gxi"), "method"), (("lime1", "lime2"), "seed")])
def test_differing_runs_report_the_right_numbers(runs, capsys, pair, what):
    a, b = (runs[p] for p in pair)
    da, db = load(a), load(b)
    want = expected_map(da, db)
    assert want["diffs"], "the two runs were expected to give different maps"
    code, doc = compare_json(capsys, a, b)
    assert code == 1 and doc["equal"] is False
    (r,) = doc["runs"]
    prov = {f["what"]: (f["a"], f["b"]) for f in r["provenance"]}
    assert what in prov and "contract sha256" in prov
    assert prov[what] == ((da["runs"][0]["method"]["name"], db["runs"][0]["method"]["name"]) if what == "method"
                          else (1, 2))
    got = {t["position"]: (t["a"], t["b"]) for t in r["map"]["tokens"]}
    assert got.keys() == want["diffs"].keys()
    for pos, (sa, sb) in want["diffs"].items():
        t = next(t for t in r["map"]["tokens"] if t["position"] == pos)
        assert (t["a"], t["b"]) == (sa, sb) and t["diff"] == pytest.approx(sb - sa, abs=1e-15)
    assert r["map"]["max_abs_diff"] == pytest.approx(want["max"], abs=1e-15) and r["map"]["at_position"] == want["at"]
    assert r["map"]["spearman"] == pytest.approx(want["rho"], abs=1e-12)
    tk = r["map"]["top_k"]
    assert (tk["a"], tk["b"], tk["overlap"]) == (want["top_a"], want["top_b"], want["overlap"])
    assert {e["what"] for e in r["expectations"]} == changed_expectations(da, db)
    assert main(["compare", str(a), str(b)]) == 1                       # the text says the same
    out = capsys.readouterr().out
    assert out.index("provenance differs") < out.index("map: max")      # provenance first
    assert f"{len(want['diffs'])} token(s) differ" in out and "the runs differ" in out
    worst = next(t for t in r["map"]["tokens"] if t["position"] == want["at"])
    assert f"{worst['b'] - worst['a']:.6g}" in out


def test_the_tolerance_decides(runs, capsys, tmp_path):
    """One score moved by 1e-4 (and nothing else): unequal at the default tolerance, naming that
    token only; equal at --tolerance 1e-3."""
    doc = load(runs["ig"])
    other = copy.deepcopy(doc)
    tok = next(t for t in other["runs"][0]["tokens"] if t["eligible"])
    tok["score"] += 1e-4
    b = tmp_path / "moved.json"
    b.write_text(json.dumps(other), encoding="utf-8")
    code, res = compare_json(capsys, runs["ig"], b)
    assert code == 1
    (t,) = res["runs"][0]["map"]["tokens"]
    assert t["position"] == tok["position"] and t["diff"] == pytest.approx(1e-4)
    code, res = compare_json(capsys, runs["ig"], b, "--tolerance", "1e-3")
    assert code == 0 and res["runs"][0]["map"]["tokens"] == [] and res["tolerance"] == 1e-3
    assert math.isclose(res["runs"][0]["map"]["max_abs_diff"], 1e-4, rel_tol=1e-6)


def test_changed_checks_and_missing_runs_differ(runs, capsys, tmp_path):
    doc = load(runs["ig"])
    other = copy.deepcopy(doc)
    other["runs"][0]["name"] = "renamed"
    b = tmp_path / "renamed.json"
    b.write_text(json.dumps(other), encoding="utf-8")
    code, res = compare_json(capsys, runs["ig"], b)
    assert code == 1 and [(r["name"], r["in_a"], r["in_b"]) for r in res["runs"]] == \
        [("stories", True, False), ("renamed", False, True)]


def test_documents_without_provenance_compare(runs, capsys, tmp_path):
    """An older document (no provenance keys) is still a results file; its results are compared."""
    old = load(runs["ig"])
    del old["provenance"]
    for r in old["runs"]:
        del r["provenance"]
    b = tmp_path / "old.json"
    b.write_text(json.dumps(old), encoding="utf-8")
    code, res = compare_json(capsys, runs["ig"], b)
    assert code == 0 and res["equal"] is True
    assert {f["what"] for f in res["environment"]} >= {"scopecheck", "torch"}     # shown, not counted


@pytest.mark.parametrize("kind", ["missing", "folder", "not_json", "not_results", "invalid"])
def test_bad_inputs_exit_2_naming_the_file(runs, capsys, tmp_path, kind):
    bad = tmp_path / f"{kind}.json"
    if kind == "folder":
        bad.mkdir()
    elif kind == "not_json":
        bad.write_text('contract "x" {\n', encoding="utf-8")
    elif kind == "not_results":
        bad.write_text('{"runs": []}', encoding="utf-8")
    elif kind == "invalid":
        doc = load(runs["ig"])
        del doc["runs"][0]["tokens"]
        bad.write_text(json.dumps(doc), encoding="utf-8")
    for args in ([str(runs["ig"]), str(bad)], [str(bad), str(runs["ig"])]):
        assert main(["compare", *args]) == 2
        out = capsys.readouterr()
        assert str(bad) in out.err and "Traceback" not in out.err + out.out and out.out == ""
        assert "error[" in out.err


def test_bad_options_are_refused(runs, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--tolerance", "-1", str(runs["ig"]), str(runs["ig"])])
    assert exc.value.code == 2
