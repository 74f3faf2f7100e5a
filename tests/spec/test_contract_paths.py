"""The one contract-folder path rule (``spec.paths.contract_file``): a path a contract writes is
relative to its folder and must resolve inside it, however spelled; the dataset, external-map and
snapshot files all go through it and so answer alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from scopecheck.errors import ContractValidationError, Span
from scopecheck.spec import model as m
from scopecheck.spec.paths import OUTSIDE_HINT, contract_file

SPAN = Span("c.scope", 3, 5, 3, 20)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """``tmp/home/.bashrc``, ``tmp/elsewhere.json``, and the contract folder ``tmp/c`` holding
    ``data.json``, ``sub/inner.json``, a folder ``adir``, a link to ``data.json`` and a link out."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("x")
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "elsewhere.json").write_text("{}")
    c = tmp_path / "c"
    (c / "sub").mkdir(parents=True)
    (c / "adir").mkdir()
    (c / "data.json").write_text("{}")
    (c / "sub" / "inner.json").write_text("{}")
    (c / "link_in.json").symlink_to(c / "data.json")
    (c / "link_out.json").symlink_to(tmp_path / "elsewhere.json")
    return c


def _file(spelled, base, **kw):
    return contract_file(spelled, base, SPAN, what="data file", rule="dataset", expected="a .json file", **kw)


@pytest.mark.parametrize("spelled, want", [
    ("data.json", "data.json"),
    ("sub/inner.json", "sub/inner.json"),
    ("sub/../data.json", "data.json"),           # a `..` that stays inside
    ("./sub/./inner.json", "sub/inner.json"),
    ("link_in.json", "data.json"),               # a link is the file it points to
])
def test_a_path_resolves_relative_to_the_contracts_folder(tree, spelled, want, monkeypatch):
    monkeypatch.chdir(tree.parent)               # not the working directory: the contract's folder
    assert _file(spelled, tree) == (tree / want).resolve()


def test_an_absolute_path_inside_the_folder_is_accepted(tree):
    assert _file(str(tree / "sub" / "inner.json"), tree) == (tree / "sub" / "inner.json").resolve()


@pytest.mark.parametrize("spelled, spelling", [
    ("../elsewhere.json", "a path"),
    ("sub/../../elsewhere.json", "a path"),
    ("link_out.json", "a path"),                 # a link pointing out of the folder
    ("~/.bashrc", "a home-relative path"),
    ("ABS", "an absolute path"),                 # replaced by tmp/elsewhere.json below
    (".", "a path"),                             # the folder itself is not a file inside it
])
def test_a_path_outside_the_folder_is_refused_however_spelled(tree, spelled, spelling):
    if spelled == "ABS":
        spelled = str(tree.parent / "elsewhere.json")
    with pytest.raises(ContractValidationError) as err:
        _file(spelled, tree)
    e = err.value
    full = (Path(spelled).expanduser() if Path(spelled).expanduser().is_absolute() else tree / spelled).resolve()
    assert e.message == f"data file {spelled!r} is {spelling} outside the contract's folder ({full})"
    assert e.rule == "dataset" and e.span == SPAN and e.hint == OUTSIDE_HINT
    assert e.expected == f"a file inside {str(tree.resolve())!r}, the folder of the contract file"


def test_allow_outside_lifts_only_the_folder_rule(tree):
    out = tree.parent / "elsewhere.json"
    assert _file("../elsewhere.json", tree, allow_outside=True) == out.resolve()
    assert _file("link_out.json", tree, allow_outside=True) == out.resolve()
    with pytest.raises(ContractValidationError, match="does not exist"):
        _file("../missing.json", tree, allow_outside=True)


def test_missing_files_and_folders(tree):
    with pytest.raises(ContractValidationError) as err:
        _file("nope.json", tree)
    assert err.value.message == f"data file {str(tree.resolve() / 'nope.json')!r} does not exist"
    assert err.value.expected == "a .json file"
    assert _file("nope.json", tree, must_exist=False) == tree.resolve() / "nope.json"   # a file to be written
    for must_exist in (True, False):
        with pytest.raises(ContractValidationError) as err:
            _file("adir", tree, must_exist=must_exist)
        assert err.value.message == f"data file {str(tree.resolve() / 'adir')!r} is not a regular file"


def test_allow_dir_lifts_only_the_regular_file_rule(tree):
    """A Hugging Face ``save_to_disk`` dataset is a folder: ``allow_dir`` accepts one, and still
    applies the folder rule and the existence rule to it."""
    assert _file("adir", tree, allow_dir=True) == tree.resolve() / "adir"
    assert _file("data.json", tree, allow_dir=True) == tree.resolve() / "data.json"
    with pytest.raises(ContractValidationError, match="outside the contract's folder"):
        _file("..", tree, allow_dir=True)
    with pytest.raises(ContractValidationError, match="does not exist"):
        _file("nodir", tree, allow_dir=True)


def test_no_base_dir_means_the_working_directory(tree, monkeypatch):
    monkeypatch.chdir(tree)
    assert _file("sub/inner.json", None) == (tree / "sub" / "inner.json").resolve()
    with pytest.raises(ContractValidationError, match="outside the contract's folder"):
        _file("../elsewhere.json", None)


# ------------------------------------------------------------------ the three users answer alike

def _users():
    from scopecheck.checks.snapshot import resolve_snapshot_path
    from scopecheck.datasets import resolve_path
    from scopecheck.engine.methods.external import resolve_map_path

    return {
        "dataset file": lambda s, base, **kw: resolve_path(m.Dataset("path", s, span=SPAN), base, **kw),
        "map file": lambda s, base, **kw: resolve_map_path(s, base, SPAN, **kw),
        "snapshot file": lambda s, base, **kw: resolve_snapshot_path(s, base, SPAN, **kw),
    }


def _outcome(call, spelled, base, **kw):
    try:
        return "ok", call(spelled, base, **kw)
    except ContractValidationError as e:
        return "error", (e.message, e.expected, e.hint, e.span)


@pytest.mark.parametrize("spelled", ["data.json", "sub/../data.json", "link_in.json", "../elsewhere.json",
                                     "link_out.json", "~/.bashrc", "ABS", "adir", "nope.json"])
@pytest.mark.parametrize("allow_outside", [False, True])
def test_dataset_map_and_snapshot_files_follow_the_one_rule(tree, spelled, allow_outside):
    if spelled == "ABS":
        spelled = str(tree.parent / "elsewhere.json")
    for what, call in _users().items():
        rule = {"dataset file": "dataset", "map file": "map", "snapshot file": "snapshot"}[what]
        must_exist = what != "snapshot file"          # a snapshot may be written for the first time
        got = _outcome(call, spelled, tree, allow_outside=allow_outside)
        want = _outcome(lambda s, b, **kw: contract_file(s, b, SPAN, what=what, rule=rule, expected="-",
                                                         must_exist=must_exist, **kw), spelled, tree,
                        allow_outside=allow_outside)
        assert got[0] == want[0], (what, got, want)
        if got[0] == "ok":
            assert got[1] == want[1]
        else:
            message, _, hint, span = got[1]
            assert (message, hint, span) == (want[1][0], want[1][2], want[1][3]), what
    # and alike among themselves: the same outcome, the same words but for the file's name
    outcomes = {what: _outcome(call, spelled, tree, allow_outside=allow_outside) for what, call in _users().items()}
    if spelled == "nope.json":                        # only a snapshot may not exist yet
        assert outcomes.pop("snapshot file")[0] == "ok"
    kinds = {kind for kind, _ in outcomes.values()}
    assert len(kinds) == 1, outcomes
    if kinds == {"error"}:
        words = {(msg.replace(what, "<file>", 1), hint) for what, (_, (msg, _, hint, _)) in outcomes.items()}
        assert len(words) == 1, words
