"""Where the examples of a dataset contract run: in this process, or on a Ray cluster.

An :class:`Executor` takes the runner, the contract and the examples still to compute, and yields
one :class:`Done` per example as it finishes. Everything around that is written once, in
:func:`scopecheck.orchestration.dataset.run_dataset`: which examples the store already holds (resume), the
store appends (the driver is the single writer, so an interrupted run loses at most what was in
flight), the progress bar, the estimate, and ``fail_fast`` (closing the executor's stream).

* ``serial`` (default, :class:`SerialExecutor`): each example in this process, in dataset order,
  with the driver's runner.
* ``ray`` (:class:`RayExecutor`; ``pip install scopecheck[ray]``; ``scopecheck run --executor ray
  [--address ...]``): ``workers`` Ray actors, each loading the model once (``num_gpus = 1`` when
  CUDA is present), process shards of examples; a shard whose worker raises is retried
  (``retries`` times, on a fresh actor) and, if it still fails, every example of it is reported
  with the error rather than lost. With no address, Ray starts locally (``num_cpus = workers``):
  on a laptop or CI. A worker parses the very contract the driver runs (its file text and path,
  so positions are the same; the canonical text when the file has changed since) and runs it
  with the driver's settings and runner class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Protocol, Sequence

from scopecheck.orchestration.examples import compute_example, inner_items
from scopecheck.orchestration.protocols import Done, Driver, Executor
from scopecheck.orchestration.records import ContractRun
from scopecheck.orchestration.settings import EXECUTORS, RunSettings
from scopecheck.spec import model as m

if TYPE_CHECKING:
    from scopecheck.datasets import Example


@dataclass(frozen=True)
class SerialExecutor:
    """Every example in this process, in order, with the driver's runner."""

    name: ClassVar[str] = "serial"
    parallelism: ClassVar[int] = 1

    def run(self, runner: Driver, contract: m.Contract, examples: Sequence[Example]) -> Iterator[Done]:
        items = inner_items(contract)
        for ex in examples:
            sub, values, secs, error = compute_example(runner, contract, ex, items)
            yield Done(ex.id, values, error, secs, sub)


@dataclass(frozen=True)
class Job:
    """What a worker needs to compute examples of one contract (all picklable)."""

    text: str                   # the contract file's text
    path: str                   # its path (for relative datasets, models and error positions)
    name: str                   # which contract in the file
    line: int | None            # the contract's line in ``text`` (two contracts may share a name)
    settings: RunSettings       # the driver's, less what only the driver does (store, progress, ...)
    runner: type                # the driver's runner class (a worker builds one from the settings)
    threads: int = 1            # torch threads: the driver's, so that float results are bit-identical


def _contract(job: Job) -> m.Contract:
    from scopecheck.loader import load_text

    docs = [d for d in load_text(job.text, job.path) if isinstance(d, m.Contract) and d.name == job.name]
    same_line = [d for d in docs if d.span.line == job.line]
    return (same_line or docs)[0]


def compute(job: Job, examples: Sequence[Example], runner: Driver | None = None) -> list[Done]:
    """Compute ``examples`` of ``job``'s contract in this process (a fresh runner unless given):
    what a Ray worker runs on a shard."""
    contract = _contract(job)
    runner = runner or job.runner(job.settings)
    items = inner_items(contract)
    out = []
    for ex in examples:
        sub, values, secs, error = compute_example(runner, contract, ex, items)
        out.append(Done(ex.id, values, error, secs))
    return out


def source_text(contract: m.Contract) -> str | None:
    """The text of the file the contract was read from (None: unreadable now)."""
    try:
        return Path(contract.span.path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def job_text(contract: m.Contract) -> str:
    """The text a worker parses: the contract's own file when it still holds this very contract
    (so every position, and every error message, is the serial run's), else its canonical form."""
    from scopecheck.dsl.format import format_document
    from scopecheck.loader import load_text

    text = source_text(contract)
    if text is not None:
        try:
            if any(d == contract for d in load_text(text, contract.span.path)):
                return text
        except Exception:  # noqa: BLE001 - an unreadable file: the canonical text below
            pass
    return format_document(contract)


def worker_settings(settings: RunSettings) -> RunSettings:
    """The settings a worker runs examples with: the driver's, less the driver's own duties
    (the store, resume, progress, fail-fast, choosing executors) and less ``debug`` (a worker's
    exception fails its shard, which is retried)."""
    return dataclasses.replace(settings, progress=False, debug=False, store_dir=None, resume=False,
                               fail_fast=False, executor="serial", ray_address=None)


@dataclass(frozen=True)
class RayExecutor:
    """Shards of examples on Ray actors (see the module docstring). ``compute`` is what a worker
    runs on a shard (:func:`compute`); a test wraps it to make a worker fail."""

    address: str | None = None
    workers: int = 2
    shard_size: int = 4
    retries: int = 2
    compute: Callable[[Job, list[Any], Any], list[Done]] = compute

    name: ClassVar[str] = "ray"

    @property
    def parallelism(self) -> int:
        return max(1, self.workers)

    def run(self, runner: Driver, contract: m.Contract, examples: Sequence[Example]) -> Iterator[Done]:
        try:
            import ray
        except ImportError:
            raise RuntimeError("the Ray executor needs Ray: pip install 'scopecheck[ray]'") from None
        import torch

        job = Job(job_text(contract), contract.span.path, contract.name, contract.span.line,
                  worker_settings(runner.settings), type(runner), torch.get_num_threads())
        started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if self.address:
                kw["address"] = self.address
            else:
                kw["num_cpus"] = self.workers
            ray.init(**kw)
            started = True
        try:
            yield from self._shards(ray, torch, job, examples)
        finally:
            if started:
                ray.shutdown()

    def _shards(self, ray: Any, torch: Any, job: Job, examples: Sequence[Any]) -> Iterator[Done]:
        gpus = 1 if torch.cuda.is_available() else 0
        retries = self.retries

        class Worker:
            def __init__(self, job: Job, compute: Callable[[Job, list[Any], Any], list[Done]]) -> None:
                import torch

                torch.set_num_threads(job.threads)
                self.job, self.compute = job, compute
                self.runner = job.runner(job.settings)

            def run(self, shard: list[Any]) -> list[Done]:
                return self.compute(self.job, shard, self.runner)

        # an actor class; applied by call, not as a decorator, since mypy keeps a decorated class's type
        remote_worker = ray.remote(num_cpus=1, num_gpus=gpus)(Worker)
        actors = [remote_worker.remote(job, self.compute) for _ in range(self.parallelism)]
        shards = [list(examples[i:i + self.shard_size]) for i in range(0, len(examples), self.shard_size)]
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
                    actors[a] = remote_worker.remote(job, self.compute)  # a fresh actor for the retry
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


def executor_for(settings: RunSettings) -> Executor:
    """The executor ``settings.executor`` names, configured from the settings."""
    if settings.executor == "ray":
        return RayExecutor(address=settings.ray_address, workers=settings.workers)
    assert settings.executor == EXECUTORS[0]          # RunSettings admits only EXECUTORS
    return SerialExecutor()


__all__ = ["EXECUTORS", "Done", "Executor", "Job", "RayExecutor", "SerialExecutor", "compute", "executor_for",
           "job_text", "source_text", "worker_settings"]
