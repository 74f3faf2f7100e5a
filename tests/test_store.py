"""The result store never loses or duplicates a record: a fresh run replaces the old file only
when it completes (a SIGKILL-ed one leaves it intact), one run at a time holds a store, and a bad
line costs that line only (model-free; the run-level behaviour is in tests/test_datasets.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scopecheck.errors import ContractError
from scopecheck.orchestration.store import Store, StoreBusyError, contract_key

SRC = str(Path(__file__).resolve().parents[1] / "src")
KEY = contract_key("contract text", "data", "model")


def _fill(root: Path, ids: list[str], resume: bool = True) -> Store:
    s = Store(root, KEY, resume=resume)
    for i in ids:
        s.append(i, "m", 0, {"v": float(len(i))}, None, 0.5)
    return s


def _holder(root: Path, script: str) -> subprocess.Popen:
    """A subprocess that runs ``script`` with a store open, prints 'ready' and waits to be killed."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {SRC!r})
        from scopecheck.orchestration.store import Store
        s = Store({str(root)!r}, {KEY!r}, resume=False)
        {script}
        print("ready", flush=True)
        time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def test_a_killed_fresh_run_leaves_the_old_store_intact(tmp_path):
    _fill(tmp_path, ["a", "b", "c"]).close()
    (path,) = tmp_path.glob("*.jsonl")
    before = path.read_bytes()
    p = _holder(tmp_path, 's.append("n1", "m", 0, {"v": 1.0}, None, 0.1); s.append("n2", "m", 0, {"v": 2.0}, None, 0.1)')
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert path.read_bytes() == before                      # the old records survive the kill
    # the interrupted run's records are valid (same key): a resume adopts them, keeps the old ones
    with Store(tmp_path, KEY, resume=True) as s:
        assert s.adopted == 2 and sorted(k[0] for k in s.records) == ["a", "b", "c", "n1", "n2"]
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert sorted(r["example"] for r in lines) == ["a", "b", "c", "n1", "n2"]   # each once
    assert not list(tmp_path.glob("*.partial"))


def test_a_completed_fresh_run_replaces_the_store(tmp_path):
    _fill(tmp_path, ["a", "b", "c"]).close()
    s = _fill(tmp_path, ["x"], resume=False)
    (path,) = tmp_path.glob("*.jsonl")
    assert [json.loads(x)["example"] for x in path.read_text().splitlines()] == ["a", "b", "c"]
    s.commit()
    s.close()
    assert [json.loads(x)["example"] for x in path.read_text().splitlines()] == ["x"]


@pytest.mark.parametrize("resume", [True, False])
def test_a_second_run_on_a_held_store_is_refused(tmp_path, resume):
    _fill(tmp_path, ["a"]).close()
    (path,) = tmp_path.glob("*.jsonl")
    before = path.read_bytes()
    p = _holder(tmp_path, "pass")
    try:
        with pytest.raises(StoreBusyError) as err:
            Store(tmp_path, KEY, resume=resume)
        assert isinstance(err.value, ContractError) and "in use by another run" in err.value.render()
        assert "hint:" in err.value.render()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert path.read_bytes() == before                      # the refused run deleted nothing
    with Store(tmp_path, KEY, resume=True) as s:           # the lock died with its process
        assert set(s.records) == {("a", "m", 0)}


def test_two_stores_in_one_process_exclude_each_other(tmp_path):
    s = Store(tmp_path, KEY)
    with pytest.raises(StoreBusyError):
        Store(tmp_path, KEY)
    s.close()
    Store(tmp_path, KEY).close()


def _rec(ex: str, **over) -> dict:
    r = {"key": {"contract": KEY, "example": ex, "method": "m", "seed": 0}, "example": ex,
         "values": {"v": 1.0}, "error": None, "seconds": 0.25}
    r.update(over)
    return r


def test_a_bad_line_costs_that_line_only(tmp_path):
    lines = [
        json.dumps(_rec("a")),
        "{not json",
        json.dumps(_rec("b")),
        json.dumps(_rec("c", values=5)),                    # wrongly typed: crashed resume before
        json.dumps({"example": "d", "values": {}}),         # no key
        json.dumps(_rec("e", seconds="slow")),
        "[1, 2]",
        json.dumps(_rec("f")),
    ]
    path = tmp_path / f"{KEY}.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"key": {"contr')   # and a cut-off last line
    with Store(tmp_path, KEY, resume=True) as s:
        assert sorted(k[0] for k in s.records) == ["a", "b", "f"]    # the records after a bad one are kept
        got = {p.line: p.reason for p in s.problems}
        assert sorted(got) == [2, 4, 5, 6, 7, 9]
        assert got[2].startswith("not JSON") and "`values` is not an object" in got[4]
        assert "`key`" in got[5] and "`seconds`" in got[6] and "incomplete last line" in got[9]
        assert all(str(p).startswith(f"{path}:{p.line}: ") for p in s.problems)
        s.append("c", "m", 0, {"v": 2.0}, None, 0.1)
    # the file now holds each good record once, then the recomputed one; it reads back clean
    with Store(tmp_path, KEY, resume=True) as s:
        assert not s.problems and sorted(k[0] for k in s.records) == ["a", "b", "c", "f"]
    assert len(path.read_text().splitlines()) == 4


def test_the_key_names_the_store_format():
    from scopecheck.orchestration import store

    old = contract_key("t", "d", "m")
    fmt = store.STORE_FORMAT
    try:
        store.STORE_FORMAT = fmt + "x"
        assert contract_key("t", "d", "m") != old
    finally:
        store.STORE_FORMAT = fmt
    assert contract_key("t", "d", "m") == old and os.sep not in old
