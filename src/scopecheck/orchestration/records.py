"""What a run produces: a contract's run, a dataset example's values, an expectation's outcome.

Plain records shared by the runner, the dataset runs, the executors and the reports; and
:func:`contract_failure`, which turns any exception of one contract into that contract's
positioned error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scopecheck.errors import ContractError, InternalError, reraise_interrupt
from scopecheck.spec import model as m

if TYPE_CHECKING:
    from scopecheck.checks.result import CheckResult
    from scopecheck.engine.result import AttributionResult


@dataclass(frozen=True)
class ExpectationOutcome:
    text: str                 # the clause in canonical form
    line: int
    passed: bool
    left: Any                 # measured value(s)
    right: Any
    explanation: str
    #: "" for most clauses; a snapshot's: pass | fail | stale | missing | written
    status: str = ""


@dataclass
class ContractRun:
    contract: m.Contract
    result: AttributionResult | None = None
    checks: dict[str, CheckResult] = field(default_factory=dict)  # canonical call text -> its result
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    #: dataset contracts: one record per example, the rows that could not be examples, and facts
    examples: list["ExampleRun"] = field(default_factory=list)
    row_errors: list[Any] = field(default_factory=list)
    dataset: dict[str, Any] | None = None
    #: a map family (``target = each``): one run per generated token, each a complete contract run
    members: list["ContractRun"] = field(default_factory=list)
    #: the expectations whose fields this run's checks compute (None: the contract's own); a
    #: dataset example's run is asked by the dataset contract's aggregates, which it does not carry
    asks: tuple[m.Expectation, ...] | None = None

    def units(self) -> list["ContractRun"]:
        """What reports list: a family's members, or this run itself."""
        return list(self.members) if self.members else [self]


@dataclass
class ExampleRun:
    """One example of a dataset contract: the per-example value of every quantity its
    expectations aggregate (numbers, booleans, or None when it could not be computed)."""

    id: str
    values: dict[str, Any]
    error: str | None
    seconds: float
    stored: bool = False          # read back from the result store (resume), not computed now


def contract_failure(exc: BaseException, span: Any) -> ContractError:
    """Any exception raised while running one contract, as that contract's positioned error:
    a :class:`ContractError` keeps its own position; anything else is placed on ``span`` (the
    contract's header or the expectation) with the exception's message. An interrupt a library
    wrapped in an ordinary exception is re-raised, never made the contract's error."""
    reraise_interrupt(exc)
    if isinstance(exc, ContractError):
        return exc
    if isinstance(exc, InternalError):      # its message already says what it is (and --debug)
        return ContractError(str(exc), span, rule="run")
    msg = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    return ContractError(f"{type(exc).__name__}: {msg}" if not isinstance(exc, (ValueError, KeyError)) else msg,
                         span, rule="run")


__all__ = ["ContractRun", "ExampleRun", "ExpectationOutcome", "contract_failure"]
