"""Where the examples of a dataset contract run: in this process, or on a Ray cluster.

An executor takes the contract (its file text and path, so a worker parses the very contract the
driver runs, with the same positions; the canonical text when the file has changed since), the
examples still to compute, and the runner settings, and yields one :class:`Done` per example as
it finishes; the driver appends each to the result store (the single writer) and keeps going,
so an interrupted run loses at most what was in flight.

* ``serial`` (default): the loop of :func:`scopecheck.orchestration.dataset.run_dataset`, in this process.
* ``ray`` (``pip install scopecheck[ray]``; ``scopecheck run --executor ray [--address ...]``):
  ``workers`` Ray actors, each loading the model once (``num_gpus = 1`` when CUDA is present),
  process shards of examples; a shard whose worker raises is retried (``retries`` times, on a
  fresh actor) and, if it still fails, every example of it is reported with the error rather
  than lost. With no address, Ray starts locally (``num_cpus = workers``): on a laptop or CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

EXECUTORS = ("serial", "ray")


@dataclass(frozen=True)
class Done:
    id: str
    values: dict[str, Any]
    error: str | None
    seconds: float


@dataclass(frozen=True)
class Job:
    """What a worker needs to compute examples of one contract (all picklable)."""

    text: str                   # the contract file's text
    path: str                   # its path (for relative datasets, models and error positions)
    name: str                   # which contract in the file
    device: str
    dtype: str
    max_evaluations: int | None
    threads: int = 1            # torch threads: the driver's, so that float results are bit-identical
    line: int | None = None     # the contract's line in ``text`` (two contracts may share a name)


def _contract(job: Job) -> Any:
    from scopecheck.loader import load_text
    from scopecheck.spec import model as m

    docs = [d for d in load_text(job.text, job.path) if isinstance(d, m.Contract) and d.name == job.name]
    same_line = [d for d in docs if d.span.line == job.line]
    return (same_line or docs)[0]


def compute(job: Job, examples: Sequence[Any], runner: Any = None) -> list[Done]:
    """Compute ``examples`` of ``job``'s contract in this process (a fresh runner unless given)."""
    from scopecheck.orchestration.dataset import compute_example, inner_items
    from scopecheck.orchestration.runner import Runner

    contract = _contract(job)
    runner = runner or Runner(device=job.device, dtype=job.dtype, max_evaluations=job.max_evaluations)
    items = inner_items(contract)
    out = []
    for ex in examples:
        sub, values, secs, error = compute_example(runner, contract, ex, items)
        out.append(Done(ex.id, values, error, secs))
    return out


#: Test hook (``tests/test_executors.py``): ``"<example id>:<marker file>"`` makes the worker that
#: first meets that example raise once (the marker records it), to prove shards are retried.
FAIL_ONCE_ENV = "SCOPECHECK_TEST_FAIL_ONCE"


def _injected_failure(shard: Sequence[Any]) -> None:
    import os

    spec = os.environ.get(FAIL_ONCE_ENV)
    if not spec:
        return
    ex_id, _, marker = spec.partition(":")
    if any(e.id == ex_id for e in shard) and not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError(f"injected worker failure on the shard holding {ex_id}")


def ray_executor(job: Job, examples: Sequence[Any], *, address: str | None = None, workers: int = 2,
                 shard_size: int = 4, retries: int = 2, progress: Any = None) -> Iterator[Done]:
    try:
        import ray
    except ImportError:
        raise RuntimeError("the Ray executor needs Ray: pip install 'scopecheck[ray]'") from None
    import torch

    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            kw["address"] = address
        else:
            kw["num_cpus"] = workers
        ray.init(**kw)
        started = True
    try:
        gpus = 1 if torch.cuda.is_available() else 0

        @ray.remote(num_cpus=1, num_gpus=gpus)
        class Worker:
            def __init__(self, job: Job) -> None:
                from scopecheck.orchestration.runner import Runner

                torch.set_num_threads(job.threads)
                self.job = job
                self.runner = Runner(device=job.device, dtype=job.dtype, max_evaluations=job.max_evaluations)

            def run(self, shard: list[Any]) -> list[Done]:
                _injected_failure(shard)
                return compute(self.job, shard, self.runner)

        actors = [Worker.remote(job) for _ in range(max(1, workers))]
        shards = [list(examples[i:i + shard_size]) for i in range(0, len(examples), shard_size)]
        pending: dict[Any, tuple[int, int, int]] = {}        # ref -> (shard index, actor index, attempt)
        queue = list(range(len(shards)))
        free = list(range(len(actors)))
        attempts = [0] * len(shards)

        def submit() -> None:
            while queue and free:
                s, a = queue.pop(0), free.pop(0)
                pending[actors[a].run.remote(shards[s])] = (s, a, attempts[s])

        submit()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            s, a, attempt = pending.pop(ref)
            try:
                done = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a worker's failure is its shard's, retried
                attempts[s] += 1
                if attempts[s] <= retries:
                    actors[a] = Worker.remote(job)               # a fresh actor for the retry
                    queue.insert(0, s)
                else:
                    msg = f"shard failed {attempts[s]} time(s) on Ray: {type(exc).__name__}: {exc}"
                    done = [Done(e.id, {}, msg, 0.0) for e in shards[s]]
                    yield from done
                free.append(a)
                submit()
                continue
            yield from done
            free.append(a)
            submit()
    finally:
        if started:
            ray.shutdown()


__all__ = ["EXECUTORS", "Done", "Job", "compute", "ray_executor"]
