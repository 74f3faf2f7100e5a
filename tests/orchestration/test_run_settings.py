"""RunSettings fixed at construction, and the executor seam: whatever order an executor yields
records in, the driver's resume lookup, store appends, dataset order and fail-fast are the same
(written once in scopecheck.orchestration.dataset)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from scopecheck.loader import check_text
from scopecheck.orchestration.executors import RayExecutor, SerialExecutor
from scopecheck.orchestration.runner import Runner
from scopecheck.orchestration.settings import RunSettings
from tests.test_datasets import DATA, _records

CONTRACT = """contract "seam" {
    model    reference:translate-ar
    dataset  "data.jsonl"(limit = 5, id = "id")
    use prompt_conditioned(target = 2)
    method occlusion(operator = zero)
    seed 0
    expect mass(x) == 1
    expect rate(top(1) in truth) >= 0
}
"""


class Reversed:
    """An executor that computes its examples in this process and yields them last first (as Ray
    may), recording what it was asked for and whether its stream was closed."""

    name = "reversed"
    parallelism = 2

    def __init__(self) -> None:
        self.asked: list[list[str]] = []
        self.closed = False

    def run(self, runner, contract, examples):
        self.asked.append([e.id for e in examples])
        done = list(SerialExecutor().run(runner, contract, examples))
        try:
            yield from reversed(done)
        finally:
            self.closed = True


class Listed:
    """An executor whose ``run`` returns a plain iterator, as the protocol's ``Iterator[Done]``
    allows: it has no ``close()`` (only a generator's stream is closed)."""

    name = "listed"
    parallelism = 1

    def run(self, runner, contract, examples):
        return iter(list(SerialExecutor().run(runner, contract, examples)))


@pytest.fixture
def doc(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    rows = DATA.read_text().splitlines()
    long = json.dumps({"id": "long", "prompt": "Translate to French: The dog is black.",
                       "output": "Le chien est noir. " * 20})                 # longer than the context
    (d / "data.jsonl").write_text("\n".join(rows[:2] + [long] + rows[2:4]) + "\n")
    f = d / "seam.scope"
    f.write_text(CONTRACT)
    sf = check_text(CONTRACT, str(f))
    assert not sf.errors, [e.render() for e in sf.errors]
    return sf.documents[0]


def _rows(cr):
    return [(e.id, e.values, e.error) for e in cr.examples]


def test_settings_are_given_at_construction_and_never_assigned():
    r = Runner(RunSettings(device="cpu"), store_dir="s", resume=True)
    assert r.settings == RunSettings(device="cpu", store_dir="s", resume=True)
    with pytest.raises(AttributeError):
        r.store_dir = "elsewhere"                    # the old way: an attribute the runner read later
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.settings.resume = False
    assert isinstance(Runner().executor, SerialExecutor)
    ray = Runner(executor="ray", ray_address="ray://head:10001", workers=3)
    assert ray.settings.executor == "ray" and ray.executor == RayExecutor("ray://head:10001", 3)
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        RunSettings(executor="dask")


def test_any_executor_order_gives_the_serial_runs_examples_and_records(tmp_path, doc):
    serial = Runner(device="cpu", store_dir=str(tmp_path / "serial")).run(doc)
    ex = Reversed()
    cr = Runner(device="cpu", store_dir=str(tmp_path / "rev"), executor=ex).run(doc)
    assert [e.id for e in cr.examples] == ["t00", "t01", "long", "t02", "t03"]   # dataset order
    assert _rows(cr) == _rows(serial) and cr.dataset["executor"] == "reversed"
    assert _records(tmp_path / "rev") == _records(tmp_path / "serial")
    assert cr.result is not None and ex.closed
    # resume: the driver asks the executor only for what the store lacks
    (path,) = (tmp_path / "rev").glob("*.jsonl")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(ln for ln in lines if json.loads(ln)["example"] != "t01") + "\n")
    ex2 = Reversed()
    cr2 = Runner(device="cpu", store_dir=str(tmp_path / "rev"), resume=True, executor=ex2).run(doc)
    assert ex2.asked == [["t01"]] and cr2.dataset["resumed"] == 4
    assert _rows(cr2) == _rows(serial)


def test_fail_fast_stops_at_the_first_bad_example_in_dataset_order_for_any_executor(tmp_path, doc):
    serial = Runner(device="cpu", fail_fast=True).run(doc)
    assert [e.id for e in serial.examples] == ["t00", "t01", "long"] and serial.examples[-1].error
    ex = Reversed()
    cr = Runner(device="cpu", fail_fast=True, executor=ex).run(doc)
    assert _rows(cr) == _rows(serial) and ex.closed


def test_an_executor_may_return_a_plain_iterator(doc):
    serial = Runner(device="cpu").run(doc)
    cr = Runner(device="cpu", executor=Listed()).run(doc)     # was: AttributeError: no close()
    assert _rows(cr) == _rows(serial) and cr.dataset["executor"] == "listed"
