"""The public Python API over every contract kind: typed, frozen results and their tables.

    import scopecheck

    r = scopecheck.run("contracts/figure1.scope", name="...")    # one contract -> its result
    rs = scopecheck.run_file("contracts/families.scope")          # every contract -> Results
    back = scopecheck.load_results("results.json")                # a results JSON -> Results

One result type per contract kind, each a frozen dataclass with ``to_records()`` (a list of
plain dicts, the columns below) and ``to_pandas()`` (the same rows as a ``pandas.DataFrame``;
pandas is the optional extra ``scopecheck[pandas]``, imported only there):

* :class:`ContractResult`: a single-target contract. It *is* the engine's
  :class:`~scopecheck.engine.result.AttributionResult` (every field and method of it), plus
  the checks and expectation outcomes when they were evaluated. Rows: one per token,
  :data:`TOKEN_COLUMNS`.
* :class:`FamilyResult`: a map family (``target = each``): one :class:`ContractResult` per
  generated token ``y[k]`` and the facts the members share (model, method, frozen output).
  Rows: one per member and token, :data:`FAMILY_COLUMNS`.
* :class:`DatasetResult`: a dataset contract: one :class:`ExampleRecord` per example (the values
  its aggregates read), one :class:`AggregateRecord` per aggregate of its expectations (the
  :class:`~scopecheck.orchestration.stats.AggregateResult` of the orchestration layer: value, n,
  95% interval) and the first example's map. Rows: ``table="examples"`` one per example
  (:data:`EXAMPLE_COLUMNS` and one column per value), ``table="aggregates"`` one per aggregate
  (:data:`AGGREGATE_COLUMNS`).
* :class:`FailedRun`: a contract that did not run (in :func:`run_file` and :func:`load_results`;
  :func:`run` raises the error instead).

:func:`load_results` reads what ``scopecheck run --json`` (or :func:`write_results`) wrote back
into the same types: the records of a loaded result equal those of the result that was written
(floats exactly). Keys it does not know are ignored. What JSON does not hold is not restored:
a loaded result has no compiled contract (``positions``/``mass`` of a selector need a run) and
only the scalar entries of ``info``; a dataset's aggregates are recomputed from the stored
per-example values by the same orchestration code (same seed, so the same numbers).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from scopecheck.checks.result import CheckResult
from scopecheck.engine.result import AttributionResult, TokenScore
from scopecheck.engine.words import WordScore
from scopecheck.errors import ContractError, ContractValidationError, MissingExtra, ResultsError, Span, unknown_name
from scopecheck.loader import is_contract_path, load_contracts, load_text
from scopecheck.orchestration import expect
from scopecheck.orchestration.dataset import aggregate
from scopecheck.orchestration.examples import canonical_text
from scopecheck.orchestration.records import ContractRun, ExampleRun, ExpectationOutcome
from scopecheck.orchestration.runner import Runner
from scopecheck.orchestration.settings import RunSettings
from scopecheck.orchestration.stats import AggregateResult
from scopecheck.report.jsonout import jsonable, write_json
from scopecheck.spec import model as m
from scopecheck.spec.standard import family_param
from scopecheck.spec.text import format_document

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped, unused-ignore]

#: columns of :meth:`ContractResult.to_records` (one row per token of the map)
TOKEN_COLUMNS = ("contract", "position", "text", "role", "index", "eligible", "fixed", "target", "score")
#: columns of :meth:`FamilyResult.to_records` (one row per member and token)
FAMILY_COLUMNS = ("family", "member", *TOKEN_COLUMNS)
#: the fixed columns of :meth:`DatasetResult.to_records` ``table="examples"``; each value the
#: contract's aggregates read (keyed by its canonical text) is one more column
EXAMPLE_COLUMNS = ("contract", "id", "error", "seconds", "stored")
#: columns of :meth:`DatasetResult.to_records` ``table="aggregates"`` (``p``, ``statistic`` and
#: ``median_diff`` are those of a ``paired`` aggregate, None for the others)
AGGREGATE_COLUMNS = ("contract", "expectation", "line", "side", "aggregate", "func", "value", "n", "low", "high",
                     "dropped", "method", "p", "statistic", "median_diff")

Table = Literal["examples", "aggregates"]


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pandas.DataFrame:
    """``rows`` as a data frame with ``columns`` first (in that order), even when empty."""
    try:
        import pandas  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise MissingExtra("to_pandas()", "pandas", "pandas") from None
    extra = [c for r in rows for c in r if c not in columns]
    cols = [*columns, *dict.fromkeys(extra)]
    return pandas.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class ContractResult(AttributionResult):
    """A single-target contract's result: the engine's :class:`AttributionResult`, and the checks
    (canonical call text, ``random:`` prefixed for a random baseline -> its result) and outcomes
    of the contract's expectations when they were evaluated (``measured``/``threshold`` as the
    results JSON writes them)."""

    checks: Mapping[str, CheckResult] = field(default_factory=dict)
    expectations: tuple[ExpectationOutcome, ...] = ()
    seconds: float = field(default=0.0, compare=False)
    #: the orchestration run behind this result (None when loaded from JSON): what :func:`write_results` writes
    run: ContractRun | None = field(default=None, compare=False, repr=False)

    @property
    def passed(self) -> bool:
        """Every expectation evaluated holds (True when none was)."""
        return all(o.passed for o in self.expectations)

    def to_records(self) -> list[dict[str, Any]]:
        """One row per token, :data:`TOKEN_COLUMNS`: the contract's name, then the token's fields
        (:class:`~scopecheck.engine.result.TokenScore`)."""
        return [{"contract": self.name, "position": t.position, "text": t.text, "role": t.role, "index": t.index,
                 "eligible": t.eligible, "fixed": t.fixed, "target": t.target, "score": t.score}
                for t in self.tokens]

    def to_pandas(self) -> pandas.DataFrame:
        """:meth:`to_records` as a ``pandas.DataFrame`` (needs ``scopecheck[pandas]``)."""
        return _frame(self.to_records(), TOKEN_COLUMNS)


@dataclass(frozen=True)
class FamilyResult:
    """A map family (``target = each``): one member per generated token ``y[k]`` (member ``k`` is
    the contract with ``target = k``, named ``"<name> [y[k]]"``) and the facts they share."""

    name: str
    path: str
    line: int
    model: str
    method: str
    method_params: Mapping[str, Any]
    operator: str | None
    seed: int
    device: str
    dtype: str
    output_ids: tuple[int, ...]           # the one frozen output every member explains a token of
    generated: bool
    members: tuple[ContractResult, ...]

    @classmethod
    def of(cls, name: str, members: Sequence[ContractResult]) -> FamilyResult:
        """The family of ``members`` (at least one; the shared facts are the first member's)."""
        first = members[0]
        return cls(name, first.path, first.line, first.model, first.method, first.method_params, first.operator,
                   first.seed, first.device, first.dtype, first.output_ids, first.generated, tuple(members))

    @property
    def passed(self) -> bool:
        """Every member's evaluated expectations hold (an expectation of a family holds when it
        holds for every member)."""
        return all(r.passed for r in self.members)

    def to_records(self) -> list[dict[str, Any]]:
        """One row per member and token, :data:`FAMILY_COLUMNS`: the family's name, the member's
        ``k`` (1-based, its ``y[k]``), then the member's token rows."""
        return [{"family": self.name, "member": k, **row}
                for k, r in enumerate(self.members, 1) for row in r.to_records()]

    def to_pandas(self) -> pandas.DataFrame:
        """:meth:`to_records` as a ``pandas.DataFrame`` (needs ``scopecheck[pandas]``)."""
        return _frame(self.to_records(), FAMILY_COLUMNS)


@dataclass(frozen=True)
class ExampleRecord:
    """One example of a dataset contract: the per-example value of each quantity its expectations
    aggregate (keyed by canonical text, as in the result store), or its error."""

    id: str
    values: Mapping[str, Any]
    error: str | None
    seconds: float
    stored: bool                          # read back from the result store (resume), not computed


@dataclass(frozen=True)
class AggregateRecord:
    """One aggregate of a dataset contract's expectation (``side`` left or right of its
    operator), as :mod:`scopecheck.orchestration.stats` computed it."""

    expectation: str                      # the clause, canonical
    line: int
    side: str                             # left | right
    text: str                             # the aggregate, canonical (``mean(deletion.aopc)``)
    stats: AggregateResult


@dataclass(frozen=True)
class DatasetResult:
    """A dataset contract: every example's values, the aggregates of its expectations with n and
    a 95% interval, the expectations' outcomes and the first computed example's map (``first``)."""

    name: str
    path: str
    line: int
    contract_text: str
    seed: int
    source: str | None                    # the data file or reference split
    examples: tuple[ExampleRecord, ...]
    aggregates: tuple[AggregateRecord, ...]
    expectations: tuple[ExpectationOutcome, ...]
    first: ContractResult | None
    row_errors: tuple[Mapping[str, Any], ...] = ()   # {row, id, message}: rows that could not be examples
    facts: Mapping[str, Any] = field(default_factory=dict)   # store, key, resumed, notices... (JSON data)
    error: str | None = None
    seconds: float = field(default=0.0, compare=False)
    run: ContractRun | None = field(default=None, compare=False, repr=False)

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.expectations)

    def to_records(self, table: Table = "examples") -> list[dict[str, Any]]:
        """``table="examples"``: one row per example, :data:`EXAMPLE_COLUMNS` then one column per
        value; ``table="aggregates"``: one row per aggregate, :data:`AGGREGATE_COLUMNS`."""
        if table == "examples":
            return [{"contract": self.name, "id": e.id, "error": e.error, "seconds": e.seconds, "stored": e.stored,
                     **e.values} for e in self.examples]
        if table == "aggregates":
            out = []
            for a in self.aggregates:
                s = a.stats
                paired = s.func == "paired"
                out.append({"contract": self.name, "expectation": a.expectation, "line": a.line, "side": a.side,
                            "aggregate": a.text, "func": s.func, "value": s.value, "n": s.n, "low": s.ci[0],
                            "high": s.ci[1], "dropped": s.dropped, "method": s.method,
                            "p": s.fields["p"] if paired else None,
                            "statistic": s.fields["statistic"] if paired else None,
                            "median_diff": s.fields["median_diff"] if paired else None})
            return out
        raise ContractError(f"to_records(table={table!r}): a dataset result has the tables examples and aggregates",
                            Span("scopecheck.DatasetResult"), expected="table = examples | aggregates",
                            rule="params")

    def to_pandas(self, table: Table = "examples") -> pandas.DataFrame:
        """:meth:`to_records` as a ``pandas.DataFrame`` (needs ``scopecheck[pandas]``)."""
        return _frame(self.to_records(table), EXAMPLE_COLUMNS if table == "examples" else AGGREGATE_COLUMNS)


@dataclass(frozen=True)
class FailedRun:
    """A contract that did not run (its error as reported), in :func:`run_file` and :func:`load_results`."""

    name: str
    path: str
    line: int
    contract_text: str
    error: str

    @property
    def passed(self) -> bool:
        return False

    def to_records(self) -> list[dict[str, Any]]:
        """No rows: it has no map."""
        return []

    def to_pandas(self) -> pandas.DataFrame:
        return _frame([], TOKEN_COLUMNS)


Result = Union[ContractResult, FamilyResult, DatasetResult, FailedRun]


@dataclass(frozen=True)
class Results(Mapping[str, Result]):
    """The results of several contracts in order (a file's, a results JSON's), a read-only mapping
    contract name -> result. Two contracts of one name (from two files) are keyed
    ``"path:line: name"`` instead."""

    results: tuple[Result, ...]

    def _keys(self) -> list[str]:
        count: dict[str, int] = {}
        for r in self.results:
            count[r.name] = count.get(r.name, 0) + 1
        return [r.name if count[r.name] == 1 else f"{r.path}:{r.line}: {r.name}" for r in self.results]

    def __getitem__(self, key: str) -> Result:
        for k, r in zip(self._keys(), self.results):
            if k == key:
                return r
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


# --------------------------------------------------------------------------- from runs


def _plain(v: Any) -> Any:
    return jsonable(v)


def _outcome(o: ExpectationOutcome) -> ExpectationOutcome:
    """An outcome with its measured value and threshold as the results JSON writes them."""
    return ExpectationOutcome(o.text, o.line, o.passed, _plain(o.left), _plain(o.right), o.explanation)


def _single(cr: ContractRun) -> ContractResult:
    r = cr.result
    assert r is not None
    base = {f.name: getattr(r, f.name) for f in dataclasses.fields(AttributionResult)}
    return ContractResult(**base, checks=dict(cr.checks), expectations=tuple(_outcome(o) for o in cr.outcomes),
                          seconds=float(cr.seconds), run=cr)


def _aggregates(cr: ContractRun, contract: m.Contract,
                lines: Sequence[int] | None = None) -> tuple[AggregateRecord, ...]:
    """Every aggregate of ``contract``'s expectations over ``cr.examples``, by the dataset runner's
    own :func:`~scopecheck.orchestration.dataset.aggregate` (same seed, same numbers). ``lines``:
    each expectation's line in its source file (a contract read from its canonical text has others)."""
    seed = contract.seed or 0
    out = []
    for i, ex in enumerate(contract.expects):
        line = lines[i] if lines is not None and i < len(lines) else ex.span.line
        for side, s in (("left", ex.left), ("right", ex.right)):
            if isinstance(s, m.Aggregate):
                out.append(AggregateRecord(canonical_text(ex), line, side, canonical_text(s),
                                           aggregate(cr, s, ex, seed)))
    return tuple(out)


def _dataset(cr: ContractRun) -> DatasetResult:
    c = cr.contract
    facts = dict(cr.dataset or {})
    first = _single(ContractRun(c, result=cr.result, checks=cr.checks, kind="single")) if cr.result is not None else None
    return DatasetResult(
        name=c.name, path=c.span.path, line=c.span.line, contract_text=format_document(c), seed=c.seed or 0,
        source=facts.get("source"),
        examples=tuple(ExampleRecord(e.id, dict(e.values), e.error, float(e.seconds), bool(e.stored))
                       for e in cr.examples),
        aggregates=_aggregates(cr, c) if cr.error is None else (),
        expectations=tuple(_outcome(o) for o in cr.outcomes), first=first,
        row_errors=tuple({"row": e.row, "id": e.id, "message": e.message} for e in cr.row_errors),
        facts=_plain(facts), error=cr.error, seconds=float(cr.seconds), run=cr)


def from_run(cr: ContractRun) -> Result:
    """The typed result of one orchestration run (a single contract, a family, a dataset, or a
    contract that did not run)."""
    c = cr.contract
    if cr.kind == "dataset" or c.dataset is not None:     # a dataset contract's, even one that failed
        return _dataset(cr)
    if cr.kind == "family":
        return FamilyResult.of(c.name, [_single(mr) for mr in cr.members])
    if cr.kind == "failed":
        return FailedRun(c.name, c.span.path, c.span.line, format_document(c), cr.error or "the contract did not run")
    return _single(cr)


# --------------------------------------------------------------------------- running


def settings(*, device: str = "auto", dtype: str = "float32", allow_pickle: bool = False,
             trust_remote_code: bool = False, progress: bool = False, max_evaluations: int | None = None,
             strict: bool = False, allow_outside_data: bool = False, store: str | Path | None = None,
             resume: bool = False, fail_fast: bool = False, executor: str = "serial", workers: int = 2,
             ray_address: str | None = None) -> RunSettings:
    """The :class:`RunSettings` of the keyword options of :func:`run` / :func:`run_file`."""
    from scopecheck.engine.models import LoadOptions  # lazy: imports torch

    return RunSettings(device=device, dtype=dtype, progress=progress, max_evaluations=max_evaluations,
                       strict=strict, store_dir=None if store is None else str(store), resume=resume,
                       allow_outside_data=allow_outside_data, fail_fast=fail_fast, executor=executor,
                       ray_address=ray_address, workers=workers,
                       options=LoadOptions(device, dtype, allow_pickle, trust_remote_code))


def _pick(source: m.Contract | str | Path, name: str | None) -> m.Contract:
    found = load_contracts(source)
    picked = [c for c in found if name is None or c.name == name]
    if len(picked) == 1:
        return picked[0]
    names = [c.name for c in found]
    where = Span(str(source)) if is_contract_path(source) else None
    if name is not None:
        raise unknown_name("contract", name, names, where)
    raise ContractValidationError(
        f"expected exactly one contract; found: {', '.join(map(repr, names)) or 'none'}", where,
        rule="unknown-name", hint="pass name=... to pick one, or run them all with scopecheck.run_file" if names
        else None)


def _evaluate(cr: ContractRun, s: RunSettings) -> None:
    """The contract's expectations on ``cr`` (a family's: recorded on every member's run)."""
    outcomes = [expect.evaluate(cr, e, debug=s.debug, progress=s.progress) for e in cr.contract.expects]
    if cr.kind != "family":
        cr.outcomes = outcomes


def run(source: m.Contract | str | Path, *, name: str | None = None, expect: bool = False,
        **options: Any) -> Result:
    """Run one contract (a spec, contract text or a ``.scope`` path; ``name`` picks one of several)
    and return its typed result: a :class:`ContractResult`, a :class:`FamilyResult` for a map
    family (``target = each``) or a :class:`DatasetResult` for a dataset contract.

    ``expect=True`` also evaluates the contract's expectations (running the checks they call) into
    ``expectations`` and ``checks``; a dataset contract always evaluates them (its examples' values
    are what its aggregates read). ``options``: ``device``, ``dtype``, ``allow_pickle``,
    ``trust_remote_code``, ``progress``, ``max_evaluations``, ``strict``, ``allow_outside_data``
    and, for dataset contracts, ``store`` (a folder; default in memory), ``resume``,
    ``fail_fast``, ``executor`` (serial | ray), ``workers``, ``ray_address``.

    A contract that cannot run raises its :class:`~scopecheck.errors.ContractError` (a dataset
    contract: the error of the contract as a whole; a failing example is that example's ``error``)."""
    s = settings(**options)
    c = _pick(source, name)
    if c.dataset is not None:
        runner = Runner(s)
        cr = runner.run(c)
        if cr.error is not None and not cr.examples:
            raise ContractError(f"the dataset contract {c.name!r} did not run:\n{cr.error}", c.span,
                                rule="dataset")
        cr.outcomes = [runner.evaluate(cr, e) for e in c.expects]
        return _dataset(cr)

    import time

    t0 = time.perf_counter()
    assert s.options is not None
    if family_param(c.use) is not None:
        from scopecheck.engine.run import execute_family  # lazy: imports torch

        member_specs, results = execute_family(c, s.options, progress=s.progress, max_evaluations=s.max_evaluations,
                                               strict=s.strict)
        secs = time.perf_counter() - t0
        cr = ContractRun(c, seconds=secs, kind="family",
                         members=[ContractRun(mc, result=r, seconds=secs / len(results), kind="single")
                                  for mc, r in zip(member_specs, results)])
    else:
        from scopecheck.engine.run import execute  # lazy: imports torch

        cr = ContractRun(c, result=execute(c, s.options, progress=s.progress, max_evaluations=s.max_evaluations,
                                           strict=s.strict, allow_outside_data=s.allow_outside_data), kind="single")
        cr.seconds = time.perf_counter() - t0
    if expect:
        _evaluate(cr, s)
    return from_run(cr)


def run_file(source: str | Path, *, expect: bool = True, **options: Any) -> Results:
    """Run every contract of a ``.scope`` file (or contract text) as ``scopecheck run`` does: each
    contract's failure is that contract's (a :class:`FailedRun`; the others still run) and the
    expectations are evaluated unless ``expect=False``. Options as :func:`run`. A file that does
    not parse or validate raises its errors."""
    runner = Runner(settings(**options))
    out: list[Result] = []
    for c in load_contracts(source):
        cr = runner.run(c)
        if expect or c.dataset is not None:
            if cr.kind == "family":
                for e in c.expects:
                    runner.evaluate(cr, e)
            elif cr.kind != "failed" or c.dataset is not None:   # a failed dataset contract's outcomes say why
                cr.outcomes = [runner.evaluate(cr, e) for e in c.expects]
        out.append(from_run(cr))
    return Results(tuple(out))


def write_results(results: Result | Results, path: str | Path) -> Path:
    """Write the results JSON of results returned by :func:`run` / :func:`run_file` (the document
    ``scopecheck run --json`` writes; :func:`load_results` reads it back). A loaded result has no
    run to write (write the original file instead)."""
    items = results.results if isinstance(results, Results) else (results,)
    runs: list[ContractRun] = []
    for r in items:
        if isinstance(r, FamilyResult):
            member_runs = [x.run for x in r.members]
        else:
            member_runs = [r.run] if not isinstance(r, FailedRun) else [None]
        if any(x is None for x in member_runs):
            raise ContractError(f"{r.name!r}: only a result of scopecheck.run / run_file can be written "
                                "(a loaded or failed one has no run)", Span(str(path)), rule="io")
        runs += [x for x in member_runs if x is not None]
    return write_json(runs, path)


# --------------------------------------------------------------------------- loading

_MEMBER = re.compile(r"^(?P<name>.*) \[y\[(?P<k>\d+)\]\]$")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class _Doc:
    """Reading one results document: every missing or mistyped key is a :class:`ResultsError`
    naming its JSON path; keys not read here are ignored (newer writers may add some)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> ResultsError:
        return ResultsError(f"{where}: {what}", Span(self.path),
                            expected="a results document of scopecheck run --json (results.schema.json)")

    def get(self, obj: Any, key: str, where: str, *types: type) -> Any:
        if not isinstance(obj, dict):
            raise self.fail(where, "is not an object")
        if key not in obj:
            raise self.fail(f"{where}.{key}", "is missing")
        v = obj[key]
        if types and not isinstance(v, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise self.fail(f"{where}.{key}", f"is {type(v).__name__}, expected {names}")
        return v

    def num(self, obj: Any, key: str, where: str, null: bool = False) -> float | None:
        v = self.get(obj, key, where)
        if v is None and null:
            return None
        if isinstance(v, str) and v in _NONFINITE:
            return _NONFINITE[v]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(f"{where}.{key}", f"is {v!r}, expected a number")
        return float(v)

    def number(self, obj: Any, key: str, where: str) -> float:
        v = self.num(obj, key, where)
        assert v is not None
        return v


def _value(v: Any) -> Any:
    """A stored per-example value: the JSON spellings of non-finite floats as floats."""
    return _NONFINITE[v] if isinstance(v, str) and v in _NONFINITE else v


def _check(d: _Doc, rec: Any, where: str) -> tuple[str, CheckResult]:
    fields = {str(k): d.number(rec["fields"], k, f"{where}.fields") for k in d.get(rec, "fields", where, dict)}
    ranges = {}
    for k, v in d.get(rec, "ranges", where, dict).items():
        if not (isinstance(v, list) and len(v) == 2):
            raise d.fail(f"{where}.ranges.{k}", "is not [low, high]")
        ranges[str(k)] = (d.number({"v": v[0]}, "v", where), d.number({"v": v[1]}, "v", where))
    curve = tuple(d.number({"v": x}, "v", f"{where}.curve") for x in d.get(rec, "curve", where, list))
    res = CheckResult(name=d.get(rec, "name", where, str), fields=fields, ranges=ranges,
                      better={str(k): str(v) for k, v in d.get(rec, "better", where, dict).items()},
                      config=dict(d.get(rec, "config", where, dict)), curve=curve,
                      passed=d.get(rec, "passed", where, bool, type(None)), note=d.get(rec, "note", where, str),
                      extra=dict(rec.get("extra") or {}))
    call = d.get(rec, "call", where, str)
    return ("random:" if d.get(rec, "random", where, bool) else "") + call, res


def _outcomes(d: _Doc, rec: Any, where: str) -> tuple[ExpectationOutcome, ...]:
    out = []
    for i, o in enumerate(d.get(rec, "expectations", where, list)):
        w = f"{where}.expectations[{i}]"
        out.append(ExpectationOutcome(d.get(o, "text", w, str), d.get(o, "line", w, int), d.get(o, "passed", w, bool),
                                      o.get("measured"), o.get("threshold"), d.get(o, "explanation", w, str)))
    return tuple(out)


def _loaded_single(d: _Doc, rec: Any, where: str) -> ContractResult:
    toks = []
    for i, t in enumerate(d.get(rec, "tokens", where, list)):
        w = f"{where}.tokens[{i}]"
        toks.append(TokenScore(d.get(t, "position", w, int), d.get(t, "text", w, str), d.get(t, "role", w, str),
                               d.get(t, "index", w, int), d.get(t, "eligible", w, bool), d.get(t, "fixed", w, bool),
                               d.get(t, "target", w, bool), d.number(t, "score", w)))
    scope = d.get(rec, "scope", where, dict)
    elements = {k: v for k, v in scope.items() if isinstance(v, dict)}
    method = d.get(rec, "method", where, dict)
    output = d.get(rec, "output", where, dict)
    source = d.get(rec, "source", where, dict)
    words = None
    if isinstance(rec.get("words"), list):
        words = tuple(WordScore(w["text"], w["role"], tuple(w["positions"]), d.number(w, "score", f"{where}.words"),
                                w["eligible"], w["target"], w.get("start"), w.get("end")) for w in rec["words"])
    checks = dict(_check(d, c, f"{where}.checks[{i}]") for i, c in enumerate(d.get(rec, "checks", where, list)))
    return ContractResult(
        name=d.get(rec, "name", where, str), path=d.get(source, "path", f"{where}.source", str),
        line=d.get(source, "line", f"{where}.source", int), contract_text=d.get(rec, "contract", where, str),
        kind=d.get(rec, "kind", where, str, type(None)) or "custom",
        scope={k: str(v["text"]) for k, v in elements.items() if v.get("text") is not None},
        origin={k: str(v["origin"]) for k, v in elements.items() if v.get("origin") is not None},
        method=d.get(method, "name", f"{where}.method", str), method_params=dict(d.get(method, "params", where, dict)),
        operator=d.get(method, "operator", f"{where}.method", str, type(None)), tokens=tuple(toks),
        output_ids=tuple(d.get(output, "ids", f"{where}.output", list)),
        generated=d.get(output, "generated", f"{where}.output", bool),
        score_input=d.num(rec, "score_input", where, null=True),
        score_baseline=d.num(rec, "score_baseline", where, null=True),
        info={k: _value(v) for k, v in d.get(rec, "info", where, dict).items()},
        model=d.get(rec, "model", where, str), device=d.get(rec, "device", where, str),
        dtype=d.get(rec, "dtype", where, str), seed=d.get(rec, "seed", where, int),
        special=tuple(d.get(rec, "special_held_fixed", where, list)), diffusion=rec.get("diffusion"),
        aggregate=str(rec.get("aggregate", "tokens")), words=words,
        warnings=tuple(str(w) for w in rec.get("warnings", ())), precision=rec.get("precision"),
        quantization=rec.get("quantization"), checks=checks, expectations=_outcomes(d, rec, where),
        seconds=d.number(rec, "seconds", where))


def _loaded_dataset(d: _Doc, rec: Any, where: str) -> DatasetResult:
    ds = d.get(rec, "dataset", where, dict)
    if "contract" not in ds:
        raise d.fail(f"{where}.dataset.contract", "is missing (written before scopecheck recorded a dataset "
                                                  "contract's own text): rerun it to read its aggregates back")
    text = d.get(ds, "contract", f"{where}.dataset", str)
    source = d.get(rec, "source", where, dict)
    path, line = d.get(source, "path", f"{where}.source", str), d.get(source, "line", f"{where}.source", int)
    try:
        (contract,) = [c for c in load_text(text, path) if isinstance(c, m.Contract)]
    except (ContractError, ValueError) as exc:
        raise d.fail(f"{where}.dataset.contract", f"is not one contract: {exc}") from None
    examples = []
    for i, e in enumerate(d.get(ds, "per_example", f"{where}.dataset", list)):
        w = f"{where}.dataset.per_example[{i}]"
        examples.append(ExampleRecord(d.get(e, "id", w, str),
                                      {str(k): _value(v) for k, v in d.get(e, "values", w, dict).items()},
                                      d.get(e, "error", w, str, type(None)), float(e.get("seconds") or 0.0),
                                      bool(e.get("stored", False))))
    error = rec.get("error")
    facts = {k: v for k, v in ds.items() if k not in ("per_example", "row_errors", "name", "contract")}
    cr = ContractRun(contract, examples=[ExampleRun(e.id, dict(e.values), e.error, e.seconds, e.stored)
                                         for e in examples], dataset=facts, kind="dataset")
    first = _loaded_single(d, rec, where) if rec.get("tokens") else None
    outcomes = _outcomes(d, rec, where)
    return DatasetResult(
        name=contract.name, path=path, line=line, contract_text=text, seed=contract.seed or 0,
        source=ds.get("source"), examples=tuple(examples),
        aggregates=_aggregates(cr, contract, [o.line for o in outcomes]) if error is None else (),
        expectations=outcomes,
        first=dataclasses.replace(first, expectations=()) if first is not None else None,
        row_errors=tuple(dict(e) for e in ds.get("row_errors", ())), facts=facts, error=error,
        seconds=d.number(rec, "seconds", where))


def load_results(path: str | Path) -> Results:
    """Read a results JSON (``scopecheck run --json FILE``, ``pytest --scope-json``,
    :func:`write_results`) back into typed results, in the document's order: the consecutive runs
    of a map family's members (``"<name> [y[k]]"``, one source line) become one
    :class:`FamilyResult`, a run with ``dataset`` a :class:`DatasetResult`, a run that did not run
    a :class:`FailedRun`. An unreadable file or one that is not a results document raises
    :class:`~scopecheck.errors.ResultsError` (its JSON position or the key that is wrong)."""
    p = str(path)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"cannot read the results file: {exc}", Span(p), rule="io") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"not JSON: {exc.msg}", Span(p, exc.lineno, exc.colno, exc.lineno, exc.colno + 1),
                           source=text, expected="a results document of scopecheck run --json") from None
    d = _Doc(p)
    runs = d.get(doc, "runs", "$", list)
    out: list[Result] = []
    family: list[tuple[str, Any, ContractResult]] = []     # (family name, source, member)

    def close() -> None:
        if family:
            out.append(FamilyResult.of(family[0][0], [r for _, _, r in family]))
            family.clear()

    for i, rec in enumerate(runs):
        where = f"$.runs[{i}]"
        name = d.get(rec, "name", where, str)
        if isinstance(rec.get("dataset"), dict):
            close()
            out.append(_loaded_dataset(d, rec, where))
            continue
        if not d.get(rec, "tokens", where, list):
            close()
            source = d.get(rec, "source", where, dict)
            out.append(FailedRun(name, d.get(source, "path", where, str), d.get(source, "line", where, int),
                                 d.get(rec, "contract", where, str),
                                 str(rec.get("error") or "the contract did not run")))
            continue
        r = _loaded_single(d, rec, where)
        hit = _MEMBER.match(name)
        if hit and "family" in r.info:
            key = (r.path, r.line)
            if family and (family[0][0] != hit["name"] or family[0][1] != key or int(hit["k"]) != len(family) + 1):
                close()
            family.append((hit["name"], key, r))
            continue
        close()
        out.append(r)
    close()
    return Results(tuple(out))


__all__ = ["AGGREGATE_COLUMNS", "AggregateRecord", "ContractResult", "DatasetResult", "EXAMPLE_COLUMNS",
           "ExampleRecord", "FAMILY_COLUMNS", "FailedRun", "FamilyResult", "Result", "Results", "TOKEN_COLUMNS",
           "from_run", "load_results", "run", "run_file", "settings", "write_results"]
