"""What the pytest plugin runs when an expectation item executes (imports the engine)."""

from __future__ import annotations

from typing import Any

from scopecheck.orchestration.records import ExpectationOutcome
from scopecheck.orchestration.runner import Runner
from scopecheck.orchestration.settings import RunSettings
from scopecheck.spec import model as m


def runner_for(config: Any, key: Any) -> Runner:
    state = config.stash[key]
    if state.runner is None:
        state.runner = Runner(RunSettings(device=config.getoption("scope_device"),
                                          max_evaluations=config.getoption("scope_max_evaluations"),
                                          strict=bool(config.getoption("scope_strict")),
                                          store_dir=config.getoption("scope_store"),
                                          resume=bool(config.getoption("scope_resume")),
                                          update_snapshots=bool(config.getoption("scope_snapshot_update"))))
    return state.runner


def evaluate_expectation(config: Any, key: Any, doc: m.Contract, expect: m.Expectation) -> ExpectationOutcome:
    runner = runner_for(config, key)
    cr = runner.run(doc)
    warned = config.stash[key].warned   # runs whose warnings were raised
    for unit in cr.units():
        if unit.result is not None and id(unit) not in warned:
            warned.add(id(unit))
            import warnings

            from scopecheck.errors import ScopeWarning

            for w in unit.result.warnings:
                warnings.warn(ScopeWarning(f"{unit.contract.span}: {unit.contract.name}: {w}"), stacklevel=1)
    outcome = runner.evaluate(cr, expect)
    cr.outcomes = [o for o in cr.outcomes if o.line != outcome.line] + [outcome]
    if not outcome.passed and cr.result is not None:
        from scopecheck.report.terminal import heatmap_text

        outcome = ExpectationOutcome(outcome.text, outcome.line, False, outcome.left, outcome.right,
                                     outcome.explanation + "\n\n" + heatmap_text(cr.result))
    return outcome
