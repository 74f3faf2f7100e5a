"""The Ray executor (optional extra `scopecheck[ray]`, installed by .ci/run): per-example
results identical to the serial executor, records streamed into the same store, a failing
shard retried and reported, never lost."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="the Ray extra is not installed (pip install 'scopecheck[ray]')")

from tests.test_datasets import _records, run_file, setup_dir  # noqa: E402


def fail_once(example_id: str, marker: str):
    """What a worker runs on a shard (executors.compute), except that the worker that first meets
    ``example_id`` raises once (``marker`` records it): injected into the executor by the test,
    pickled by value into the Ray workers (a closure), never read from the environment."""
    from scopecheck.orchestration.executors import compute

    def run(job, shard, runner):
        import os

        if any(e.id == example_id for e in shard) and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError(f"injected worker failure on the shard holding {example_id}")
        return compute(job, shard, runner)

    return run


def test_ray_matches_serial_and_retries_a_failed_shard(tmp_path):
    from scopecheck.loader import check_text
    from scopecheck.orchestration.executors import RayExecutor
    from scopecheck.orchestration.runner import Runner

    f = setup_dir(tmp_path, limit=10)
    run_file(f, tmp_path / "serial")
    marker = tmp_path / "failed-once"
    (doc,) = check_text(f.read_text(), str(f)).documents
    r = Runner(device="cpu", store_dir=str(tmp_path / "ray"),
               executor=RayExecutor(workers=2, compute=fail_once("t05", str(marker))))
    cr = r.run(doc)
    assert marker.exists()                                   # the shard with t05 failed once ...
    assert cr.dataset["executor"] == "ray" and cr.error is None
    assert [e.id for e in cr.examples] == [f"t{i:02d}" for i in range(10)]
    assert all(e.error is None for e in cr.examples)         # ... and was retried, not lost
    assert _records(tmp_path / "ray") == _records(tmp_path / "serial")
    outcomes = [r.evaluate(cr, e) for e in doc.expects]
    assert all(o.passed for o in outcomes), [o.explanation for o in outcomes]


RAGGED = (
    "# a dataset contract under comments, blank lines and CRLF line endings:\r\n"
    "# the old store keyed plain expectations by a line number that the worker\r\n"
    "\r\n"
    "# (which parsed the canonical text) computed one line off\r\n"
    'contract "ragged" {\r\n'
    "    model    reference:translate-ar   # a trailing comment\r\n"
    '    dataset  "data.jsonl"(limit = 6, id = "id")\r\n'
    "\r\n"
    "    use prompt_conditioned(target = 2)\r\n"
    "    # a comment inside\r\n"
    "    method occlusion(operator = zero)\r\n"
    "    seed 0\r\n"
    "\r\n"
    "    expect mass(x) == 1\r\n"
    "    # between expectations\r\n"
    "    expect rate(top(1) in truth) >= 0.5\r\n"
    "\r\n"
    "    expect eligibility\r\n"
    "}\r\n"
)


def test_ray_equals_serial_on_a_ragged_file(tmp_path):
    import json

    from scopecheck.loader import check_text
    from scopecheck.orchestration.runner import Runner
    from tests.test_datasets import DATA

    d = tmp_path / "c"
    d.mkdir()
    rows = DATA.read_text().splitlines()[:5] + [json.dumps({"id": "long", "prompt": "Translate to French: The dog "
                                                            "is black.", "output": "Le chien est noir. " * 20})]
    (d / "data.jsonl").write_text("\n".join(rows) + "\n")
    f = d / "ragged.scope"
    f.write_bytes(RAGGED.encode())
    sf = check_text(f.read_bytes().decode("utf-8"), str(f))
    assert not sf.errors, [e.render() for e in sf.errors]
    (doc,) = sf.documents
    runs = {}
    for executor in ("serial", "ray"):
        r = Runner(device="cpu", store_dir=str(tmp_path / executor), executor=executor, workers=2)
        cr = r.run(doc)
        assert cr.error is None and len(cr.examples) == 6
        runs[executor] = (cr, [r.evaluate(cr, e) for e in doc.expects])
    assert _records(tmp_path / "ray") == _records(tmp_path / "serial")   # values and errors, record by record
    (serial, s_out), (ray_cr, r_out) = runs["serial"], runs["ray"]
    assert ray_cr.dataset["executor"] == "ray"
    assert [(e.id, e.values, e.error) for e in ray_cr.examples] == [(e.id, e.values, e.error) for e in serial.examples]
    assert [(o.passed, o.left, o.right, o.explanation) for o in r_out] == \
        [(o.passed, o.left, o.right, o.explanation) for o in s_out]
    errs = {e.id: e.error for e in serial.examples}
    assert errs["long"] is not None and all(errs[i] is None for i in errs if i != "long")
    # the plain expectations hold on the five examples that ran, under both executors
    assert s_out[0].left == 5 and s_out[2].left == 5 and s_out[0].right == 6
