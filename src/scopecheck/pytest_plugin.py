"""pytest plugin: ``*.scope`` files are test files.

Each contract or claim yields a validation item (``file::name``); each ``expect`` of a
valid contract yields its own item (``file::name::line N``) whose attribution and checks
are computed once per session and shared (``config.stash``). Items report the
contract's real line; failures print the positioned message or the numbered contract
lines with the measured value. This module imports no torch: the engine is imported
only when the first expectation runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from scopecheck.errors import ContractError
from scopecheck.spec import model as m

if TYPE_CHECKING:                       # the runner imports torch: only its type is needed here
    from scopecheck.orchestration.runner import Runner


@dataclass
class PluginState:
    """The plugin's state for one pytest session (the one ``config.stash`` key)."""

    runner: Runner | None = None        # built when the first expectation runs, shared by all items
    warned: set[int] = field(default_factory=set)   # runs whose result warnings were raised
    scope_files: list[Path] = field(default_factory=list)   # collected *.scope files (unused snapshots)


STATE = pytest.StashKey[PluginState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("scopecheck", "attribution contracts (*.scope)")
    g.addoption("--scope-device", default="auto", choices=("auto", "cpu", "cuda"),
                help="device for contract runs (default: auto = cuda when available)")
    g.addoption("--scope-report", default=None, metavar="DIR", help="write the HTML report of contract runs to DIR")
    g.addoption("--scope-json", default=None, metavar="FILE", help="write JSON results of contract runs to FILE")
    g.addoption("--scope-no-run", action="store_true", help="only validate contracts; do not run expectations")
    g.addoption("--scope-store", default=None, metavar="DIR",
                help="result store of dataset contracts (default: results kept in memory)")
    g.addoption("--scope-resume", action="store_true", help="reuse the records already in --scope-store")
    g.addoption("--scope-max-evaluations", type=int, default=None, metavar="N",
                help="token-positions one method may evaluate (default 5e7; above it a contract is refused)")
    g.addoption("--scope-strict", action="store_true",
                help="input warnings are errors (an output whose tokens change when joined to the prompt)")
    g.addoption("--scope-threads", default=None, metavar="POLICY",
                help="CPU threads while a contract's model runs: auto (default; models under 10M parameters "
                     "single-threaded, OMP_NUM_THREADS/MKL_NUM_THREADS respected), torch, or a number; "
                     "also SCOPECHECK_THREADS")
    g.addoption("--scope-snapshot-update", action="store_true",
                help="expect snapshot(...): write each missing, stale or failing snapshot file (atomically) from "
                     "this session's map")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[STATE] = PluginState()
    check_destinations(config)
    import os

    from scopecheck.engine import threads      # torch-free at import
    from scopecheck.errors import ContractError

    value = config.getoption("scope_threads") or os.environ.get("SCOPECHECK_THREADS") or "auto"
    try:
        threads.set_policy(value)
    except ContractError as exc:
        raise pytest.UsageError(f"--scope-threads {value}: {exc.message}; expected {exc.expected}") from None


def check_destinations(config: pytest.Config) -> None:
    """Refuse (a usage error, before collection: nothing is computed) an output option naming a
    destination that would not be written: ``--scope-json`` must be a regular file or a new one in an
    existing folder, ``--scope-report``/``--scope-store`` a folder or a new one in an existing folder."""
    from scopecheck.runtime.files import DestinationError, check_file, check_folder

    problems = []
    for option, check, kw in (("--scope-json", check_file, {}), ("--scope-report", check_folder,
                              {"files": ("index.html",)}), ("--scope-store", check_folder, {})):
        value = config.getoption(option.lstrip("-").replace("-", "_"))
        if value is not None:
            try:
                check(value, option, **kw)
            except DestinationError as exc:
                problems.append(str(exc))
    if problems:
        raise pytest.UsageError("\n".join(problems))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".scope":
        state = parent.config.stash.get(STATE, None)
        if state is not None:
            state.scope_files.append(file_path)
        return ScopeFile.from_parent(parent, path=file_path)
    return None


def numbered(text: str, first: int, last: int, mark: int | None = None) -> str:
    from scopecheck.errors import source_lines, visible

    lines = [visible(ln) for ln in source_lines(text.removeprefix("\ufeff"))]
    width = len(str(last))
    out = []
    for i in range(max(first, 1), min(last, len(lines)) + 1):
        arrow = ">" if i == mark else " "
        out.append(f"{arrow}{i:>{width}}  {lines[i - 1]}")
    return "\n".join(out)


class ScopeFile(pytest.File):
    def collect(self):
        from scopecheck.loader import check_file

        sf = check_file(self.path)
        if not sf.documents:  # unreadable or a syntax error: one failing item for the file
            yield FileErrorItem.from_parent(self, name=self.path.name, errors=sf.errors)
            return
        by_doc: dict[int, list[ContractError]] = {}
        for e in sf.errors:
            for i, d in enumerate(sf.documents):
                if d.span.line <= e.span.line <= d.span.end_line:
                    by_doc.setdefault(i, []).append(e)
                    break
        for i, d in enumerate(sf.documents):
            errs = by_doc.get(i, [])
            yield ValidationItem.from_parent(self, name=d.name, doc=d, errors=errs, source=sf.text)
            if isinstance(d, m.Claim) and not errs and d.expects:
                yield AuditItem.from_parent(self, name=f"{d.name}::audit", doc=d, source=sf.text)
            if isinstance(d, m.Contract) and not errs and not self.config.getoption("scope_no_run"):
                for ex in d.expects:
                    yield ExpectItem.from_parent(self, name=f"{d.name}::line {ex.span.line}", doc=d, expect=ex,
                                                 source=sf.text)


class ContractFailure(Exception):
    """An expectation did not hold (carries the rendered explanation)."""


class ScopeItem(pytest.Item):
    """The base of every item the plugin makes: a :class:`ContractFailure` is shown as its text
    after the contract lines of :meth:`context`; a :class:`~scopecheck.errors.ContractError` as
    its rendering (which shows its own line and caret); anything else as pytest shows any error."""

    def context(self) -> str:
        """Source lines shown above a failure ("" for none)."""
        return ""

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ContractError):
            return excinfo.value.render()
        if isinstance(excinfo.value, ContractFailure):
            ctx = self.context()
            return f"{ctx}\n\n{excinfo.value}" if ctx else str(excinfo.value)
        return super().repr_failure(excinfo, style=style)


class FileErrorItem(ScopeItem):
    def __init__(self, *, errors, **kw: Any) -> None:
        super().__init__(**kw)
        self.errors = errors

    def runtest(self) -> None:
        raise ContractFailure("\n\n".join(e.render() for e in self.errors))

    def reportinfo(self):
        line = self.errors[0].span.line - 1 if self.errors else 0
        return self.path, line, f"{self.path.name} (syntax)"


class ValidationItem(ScopeItem):
    def __init__(self, *, doc: m.Document, errors: list[ContractError], source: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.doc, self.errors, self.source = doc, errors, source

    def runtest(self) -> None:
        if self.errors:
            raise ContractFailure("\n\n".join(e.render() for e in self.errors))

    def reportinfo(self):
        kind = "contract" if isinstance(self.doc, m.Contract) else "claim"
        return self.path, self.doc.span.line - 1, f"{kind} {self.doc.name!r} is valid"


class AuditItem(ScopeItem):
    """A claim's static audit, checked against the claim's own `expect` clauses (no model)."""

    def __init__(self, *, doc: m.Claim, source: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.doc, self.source = doc, source

    def runtest(self) -> None:
        from scopecheck.audit import audit_claim, render_text

        report = audit_claim(self.doc, path=str(self.path))
        if not report.passed:
            raise ContractFailure(render_text([report], color=False))

    def context(self) -> str:
        return numbered(self.source, self.doc.span.line, self.doc.span.end_line)

    def reportinfo(self):
        return self.path, self.doc.span.line - 1, f"audit of claim {self.doc.name!r}"


class ExpectItem(ScopeItem):
    """One ``expect`` clause; the contract's run is shared by its items."""

    def __init__(self, *, doc: m.Contract, expect: m.Expectation, source: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.doc, self.expect, self.source = doc, expect, source

    def runtest(self) -> None:
        from scopecheck.plugin_runtime import evaluate_expectation

        outcome = evaluate_expectation(self.config, STATE, self.doc, self.expect)
        if not outcome.passed:
            raise ContractFailure(outcome.explanation)

    def context(self) -> str:
        return numbered(self.source, self.doc.span.line, self.doc.span.end_line, self.expect.span.line)

    def reportinfo(self):
        from scopecheck.dsl.format import fmt_expectation

        return self.path, self.expect.span.line - 1, f"{self.doc.name}: {fmt_expectation(self.expect)}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """One line naming the snapshot files in ``snapshots/`` folders next to the collected
    contracts that no contract names (:func:`scopecheck.checks.snapshot.unused_snapshots`)."""
    state = config.stash.get(STATE, None)
    if state is None or not state.scope_files:
        return
    from scopecheck.checks.snapshot import unused_note

    note = unused_note(state.scope_files)
    if note:
        terminalreporter.write_line(f"scopecheck: {note}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the HTML report / JSON results of the contracts this session ran."""
    state = session.config.stash.get(STATE, None)
    runner = state.runner if state else None
    report = session.config.getoption("scope_report")
    out_json = session.config.getoption("scope_json")
    if runner is None or not (report or out_json):
        return
    runs = [u for cr in runner.runs.values() for u in cr.units()]
    if report:
        from scopecheck.report.html import write_report

        path = write_report(runs, Path(report))
        session.config.get_terminal_writer().line(f"scopecheck HTML report: {path}")
    if out_json:
        from scopecheck.report.jsonout import write_json

        write_json(runs, Path(out_json))
        session.config.get_terminal_writer().line(f"scopecheck JSON results: {out_json}")


@pytest.fixture
def scope_run(request: pytest.FixtureRequest):
    """Run a contract given as keywords (see :mod:`scopecheck.testing`)."""
    from scopecheck.testing import scope_run as body

    return body(request)


@pytest.fixture
def scope_check(request: pytest.FixtureRequest):
    """Run a named check on a result (see :mod:`scopecheck.testing`)."""
    from scopecheck.testing import scope_check as body

    return body(request)
