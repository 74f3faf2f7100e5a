"""Run contracts and evaluate their ``expect`` clauses, sharing work per contract.

A :class:`Runner` computes each contract's attribution once and each distinct check
call once (per session in pytest, per command on the CLI). Expectations evaluate to
:class:`ExpectationOutcome` objects that say what was measured against what threshold.
How it runs (device, store, executor, ...) is one :class:`RunSettings`, fixed at construction.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from scopecheck.errors import ContractError
from scopecheck.orchestration import expect
from scopecheck.orchestration.dataset import evaluate_dataset, run_dataset
from scopecheck.orchestration.executors import executor_for
from scopecheck.orchestration.protocols import Executor
from scopecheck.orchestration.records import ContractRun, ExpectationOutcome, contract_failure
from scopecheck.orchestration.settings import RunSettings
from scopecheck.spec import model as m
from scopecheck.spec.standard import family_param

if TYPE_CHECKING:                      # engine.models imports torch: only the type is needed here
    from scopecheck.engine.models import LoadOptions


class Runner:
    """Runs contracts and their expectations. One contract's failure is that contract's failure:
    every exception while running it (or evaluating one expectation) becomes a positioned error
    on it, and the other contracts still run. ``debug=True`` re-raises instead (``--debug``).

    ``Runner(settings)`` or ``Runner(device="cpu", ...)`` (keywords: the fields of
    :class:`RunSettings`, over ``settings`` when both are given). ``executor`` is a name
    (``settings.executor``) or an :class:`Executor` that replaces the one the settings name (a
    test's instrumented executor, say)."""

    __slots__ = ("settings", "executor", "runs")     # settings are not assigned after construction

    def __init__(self, settings: RunSettings | None = None, /, *, executor: str | Executor | None = None,
                 **fields: Any) -> None:
        if isinstance(executor, str):
            fields["executor"], executor = executor, None
        self.settings = dataclasses.replace(settings or RunSettings(), **fields)
        self.executor = executor if executor is not None else executor_for(self.settings)
        self.runs: dict[tuple[str, int, str], ContractRun] = {}

    @property
    def options(self) -> LoadOptions:
        """How models load: the settings' options, else ``LoadOptions(device, dtype)``."""
        if self.settings.options is not None:
            return self.settings.options
        from scopecheck.engine.models import LoadOptions  # lazy: imports torch

        return LoadOptions(self.settings.device, self.settings.dtype)

    def run(self, contract: m.Contract) -> ContractRun:
        key = (contract.span.path, contract.span.line, contract.name)
        if key not in self.runs:
            if contract.dataset is not None:
                self.runs[key] = run_dataset(self, contract)
            elif family_param(contract.use) is not None:
                self.runs[key] = self.execute_family(contract)
            else:
                self.runs[key] = self.execute(contract)
        return self.runs[key]

    def execute(self, contract: m.Contract) -> ContractRun:
        """Run one (single-prompt) contract, uncached, its failure isolated."""
        from scopecheck.engine.run import execute  # lazy: imports torch

        s = self.settings
        t0 = time.perf_counter()
        try:
            result = execute(contract, self.options, progress=s.progress, max_evaluations=s.max_evaluations,
                             strict=s.strict, allow_outside_data=s.allow_outside_data)
        except ContractError as exc:
            return ContractRun(contract, error=exc.render(), seconds=time.perf_counter() - t0, kind="failed")
        except Exception as exc:  # noqa: BLE001 - isolated to this contract (see the class docstring)
            if s.debug:
                raise
            error = contract_failure(exc, contract.spans.get("name", contract.span)).render()
            return ContractRun(contract, error=error, seconds=time.perf_counter() - t0, kind="failed")
        return ContractRun(contract, result=result, seconds=time.perf_counter() - t0, kind="single")

    def execute_family(self, contract: m.Contract) -> ContractRun:
        """Run a map family: the family's run holds one complete run per member (y[1] .. y[T])."""
        from scopecheck.engine.run import execute_family  # lazy: imports torch

        s = self.settings
        t0 = time.perf_counter()
        try:
            members, results = execute_family(contract, self.options, progress=s.progress,
                                              max_evaluations=s.max_evaluations, strict=s.strict)
        except ContractError as exc:
            return ContractRun(contract, error=exc.render(), seconds=time.perf_counter() - t0, kind="failed")
        except Exception as exc:  # noqa: BLE001 - isolated to this contract
            if s.debug:
                raise
            error = contract_failure(exc, contract.spans.get("name", contract.span)).render()
            return ContractRun(contract, error=error, seconds=time.perf_counter() - t0, kind="failed")
        seconds = time.perf_counter() - t0
        return ContractRun(contract, seconds=seconds, kind="family",
                           members=[ContractRun(mc, result=r, seconds=seconds / len(results), kind="single")
                                    for mc, r in zip(members, results)])

    # ------------------------------------------------------------------ expectations
    def evaluate(self, cr: ContractRun, ex: m.Expectation) -> ExpectationOutcome:
        """The outcome of clause ``ex`` on ``cr``: an aggregate over a dataset run's examples, else
        the clause on the single run or every member of the family (a failed run's: its error)."""
        if cr.kind == "dataset":
            return evaluate_dataset(cr, ex)
        s = self.settings
        return expect.evaluate(cr, ex, debug=s.debug, progress=s.progress, update_snapshots=s.update_snapshots,
                               allow_outside=s.allow_outside_data)


__all__ = ["Runner"]
