"""What a run produces: a contract's run, a dataset example's values, an expectation's outcome.

Plain records shared by the runner, the dataset runs, the executors and the reports. A
:class:`ContractRun` says what it is in :attr:`ContractRun.kind` (a single run, a map family, a
dataset run, or a run that failed), so its consumers branch on that and not on which of its
fields happen to be set. And
:func:`contract_failure`, which turns any exception of one contract into that contract's
positioned error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

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


#: What a :class:`ContractRun` is, and so which of its fields it has.
RunKind = Literal["single", "family", "dataset", "failed"]
RUN_KINDS: tuple[RunKind, ...] = ("single", "family", "dataset", "failed")


@dataclass
class ContractRun:
    """One contract's run. Its :attr:`kind` says which fields it has:

    * ``single``: one map, ``result`` (and the ``checks`` and ``outcomes`` computed on it);
    * ``family`` (``target = each``): ``members``, one complete ``single`` run per generated
      token; no ``result`` of its own;
    * ``dataset``: the facts of the run (``dataset``), ``examples`` and ``row_errors``; ``result``
      and ``checks`` are the first example's map (``None`` when no example produced one), and
      ``error`` is set when no example was usable;
    * ``failed``: nothing was computed; ``error`` says why (``None``: never run) and ``row_errors``
      the rows a dataset had loaded with before its run failed.

    ``kind`` is set by whoever builds the run (the runner, a dataset run, the API); left out, it
    is read from the fields given (members: a family; dataset facts: a dataset run; a result and no
    error: a single run; else a failed one). Fields that do not fit the kind are a
    :class:`TypeError`."""

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
    #: what this run is (see the class docstring); never ``None`` after construction
    kind: RunKind | None = None

    def __post_init__(self) -> None:
        if self.kind is None:
            self.kind = ("family" if self.members else
                         "dataset" if self.dataset is not None else
                         "single" if self.result is not None and self.error is None else "failed")
        if self.kind not in RUN_KINDS:
            raise TypeError(f"ContractRun kind {self.kind!r} is not one of {', '.join(RUN_KINDS)}")
        has = {"result": self.result is not None, "members": bool(self.members), "error": self.error is not None,
               "examples": bool(self.examples), "row_errors": bool(self.row_errors),
               "dataset": self.dataset is not None}
        allowed = {"single": {"result"}, "family": {"members"},
                   "dataset": {"result", "error", "examples", "row_errors", "dataset"},
                   "failed": {"error", "row_errors"}}[self.kind]
        required = {"single": {"result"}, "family": {"members"}, "dataset": {"dataset"}, "failed": set()}[self.kind]
        extra = sorted(k for k, v in has.items() if v and k not in allowed)
        missing = sorted(k for k in required if not has[k])
        if extra or missing:
            raise TypeError(f"a {self.kind} ContractRun of {self.contract.name if self.contract else None!r}"
                            + (f" has {', '.join(extra)}" if extra else "")
                            + (f" lacks {', '.join(missing)}" if missing else ""))

    def units(self) -> list["ContractRun"]:
        """What reports list: a family's members, or this run itself."""
        return list(self.members) if self.kind == "family" else [self]


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


__all__ = ["RUN_KINDS", "ContractRun", "ExampleRun", "ExpectationOutcome", "RunKind", "contract_failure"]
