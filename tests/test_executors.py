"""The Ray executor (optional extra `scopecheck[ray]`, installed by .ci/run): per-example
results identical to the serial executor, records streamed into the same store, a failing
shard retried and reported, never lost."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'scopecheck[ray]')")

from tests.test_datasets import _records, run_file, setup_dir  # noqa: E402


def test_ray_matches_serial_and_retries_a_failed_shard(tmp_path, monkeypatch):
    from scopecheck.executors import FAIL_ONCE_ENV
    from scopecheck.loader import check_text
    from scopecheck.runner import Runner

    f = setup_dir(tmp_path, limit=10)
    run_file(f, tmp_path / "serial")
    marker = tmp_path / "failed-once"
    monkeypatch.setenv(FAIL_ONCE_ENV, f"t05:{marker}")
    (doc,) = check_text(f.read_text(), str(f)).documents
    r = Runner(device="cpu")
    r.store_dir, r.executor, r.workers = str(tmp_path / "ray"), "ray", 2
    cr = r.run(doc)
    assert marker.exists()                                   # the shard with t05 failed once ...
    assert cr.dataset["executor"] == "ray" and cr.error is None
    assert [e.id for e in cr.examples] == [f"t{i:02d}" for i in range(10)]
    assert all(e.error is None for e in cr.examples)         # ... and was retried, not lost
    assert _records(tmp_path / "ray") == _records(tmp_path / "serial")
    outcomes = [r.evaluate(cr, e) for e in doc.expects]
    assert all(o.passed for o in outcomes), [o.explanation for o in outcomes]
