"""The interfaces the orchestration modules share, so that none of them imports the runner.

:class:`Driver` is what the dataset, example and executor code needs of a runner (its settings,
its executor, and running one contract or one expectation); :class:`scopecheck.orchestration.
runner.Runner` implements it. :class:`Executor` is where the examples of a dataset contract run,
and :class:`Done` the record each computed example yields. Putting them here, below every module
that uses them, keeps the module graph of this package acyclic (``runner`` -> ``dataset`` ->
``executors`` -> ``examples`` -> ``protocols``), also for the names imported only for typing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

from scopecheck.orchestration.records import ContractRun, ExpectationOutcome
from scopecheck.orchestration.settings import RunSettings
from scopecheck.spec import model as m

if TYPE_CHECKING:                      # datasets reads files lazily; only the type is needed here
    from scopecheck.datasets import Example


@dataclass(frozen=True)
class Done:
    """One computed example of a dataset contract."""

    id: str
    values: dict[str, Any]
    error: str | None
    seconds: float
    #: the example's run when it was computed in this process (the driver shows the first map);
    #: None from a worker
    run: ContractRun | None = field(default=None, compare=False, repr=False)


class Driver(Protocol):
    """What the dataset and executor code needs of a runner."""

    @property
    def settings(self) -> RunSettings: ...

    @property
    def executor(self) -> Executor: ...

    def execute(self, contract: m.Contract) -> ContractRun:
        """Run one single-prompt contract, uncached, its failure isolated."""
        ...

    def evaluate(self, cr: ContractRun, ex: m.Expectation) -> ExpectationOutcome:
        """Evaluate one expectation on a run."""
        ...


class Executor(Protocol):
    """Computes examples of one contract and yields their records as they finish (any order)."""

    @property
    def name(self) -> str:
        """What the run's record calls it (``serial``, ``ray``)."""
        ...

    @property
    def parallelism(self) -> int:
        """How many examples it computes at once (the run's estimate divides by it)."""
        ...

    def run(self, runner: Driver, contract: m.Contract, examples: Sequence[Example]) -> Iterator[Done]:
        ...
