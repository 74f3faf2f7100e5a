"""Running a dataset contract: every example as its own contract, per-example values streamed to
the result store, aggregate expectations with n and a 95% interval (DESIGN section 9).

The examples and their values are :mod:`scopecheck.orchestration.examples`; where they run is an executor
(:mod:`scopecheck.orchestration.executors`). Written once here, for every executor: the store lookup
(``resume`` reuses a record that has a value for every item, in dataset order), the store appends
as records arrive, ``fail_fast`` (the run stops at the first bad row or example in dataset
order), the progress bar and, for a large dataset without ``limit``, the notice and the estimate.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from scopecheck.datasets import example_contract, load_examples
from scopecheck.dsl.format import fmt_expectation, fmt_model, fmt_params, format_document
from scopecheck.errors import ContractError, ContractValidationError, Span
from scopecheck.orchestration import stats
from scopecheck.orchestration.examples import argument_key, canonical_text, inner_items, plain_key
from scopecheck.orchestration.executors import source_text
from scopecheck.orchestration.expect import compare
from scopecheck.orchestration.records import ContractRun, ExampleRun, ExpectationOutcome, contract_failure
from scopecheck.orchestration.store import Store, contract_key
from scopecheck.spec import model as m

if TYPE_CHECKING:
    from scopecheck.datasets import Loaded
    from scopecheck.orchestration.protocols import Driver

WORST = 3
#: a data file with more usable rows than this and no ``limit`` gets a notice with its size before
#: the run starts and an estimate of the run's length after the first computed example
LARGE_DATASET = 1_000
log = logging.getLogger("scopecheck.dataset")


def _stored(store: Any, ex_id: str, method: str, seed: int) -> Any:
    """The example's record in the store, as an ExampleRun, or None."""
    rec = store.get(ex_id, method, seed) if store else None
    if rec is None:
        return None
    return ExampleRun(ex_id, dict(rec["values"]), rec.get("error"), float(rec["seconds"]), True)


def _reusable(store: Any, ex_id: str, method: str, seed: int, keys: set[str]) -> Any:
    """The stored record if it has a value for every item of this contract (else it is redone)."""
    er = _stored(store, ex_id, method, seed)
    if er is None or not keys <= set(er.values):
        return None
    return er


def _notice(runner: Driver, cr: ContractRun, bar: Any, msg: str) -> None:
    """A line for the user, through the run's log channel (and above the progress bar)."""
    assert cr.dataset is not None  # a dataset run has its facts from construction
    cr.dataset.setdefault("notices", []).append(msg)
    if bar is not None:
        bar.write(f"scopecheck: {msg}")
    else:
        log.warning(msg)


def _positioned(exc: ContractError, contract: m.Contract, span: Span) -> ContractError:
    if exc.span == Span():
        exc.span = span
    if exc.source is None and exc.span.path == contract.span.path:
        text = source_text(contract)
        if text is not None:
            exc.with_source(text)
    return exc


def run_dataset(runner: Driver, contract: m.Contract) -> ContractRun:
    """Run every example of a dataset contract (its failure isolated, as a single run's)."""
    from scopecheck.engine.compile import contract_dir  # lazy: imports torch

    assert contract.dataset is not None  # the runner sends only dataset contracts here
    t0 = time.perf_counter()
    try:
        loaded = load_examples(contract.dataset, contract_dir(contract),
                               allow_outside=runner.settings.allow_outside_data, prompt=contract.prompt)
    except ContractError as exc:
        return ContractRun(contract, error=_positioned(exc, contract, contract.dataset.span).render(), kind="failed")
    except Exception as exc:  # noqa: BLE001
        if runner.settings.debug:
            raise
        return ContractRun(contract, error=contract_failure(exc, contract.dataset.span).render(), kind="failed")
    items = inner_items(contract)
    keys = {it.key for it in items}
    seed = contract.seed or 0

    method = contract.method.name + fmt_params(contract.method.params) if contract.method is not None else ""
    key = contract_key(format_document(contract), loaded.fingerprint, fmt_model(contract.model) if contract.model
                       else "")
    try:
        s = runner.settings
        store = Store(s.store_dir, key, resume=s.resume) if s.store_dir else None
    except ContractError as exc:                      # another run holds this store
        return ContractRun(contract, error=_positioned(exc, contract, contract.dataset.span).render(),
                           row_errors=list(loaded.errors), kind="failed")
    cr = ContractRun(contract, row_errors=list(loaded.errors), dataset=_facts(contract, loaded, store, key),
                     kind="dataset")
    try:
        _run_examples(runner, contract, loaded, store, keys, method, seed, cr)
        if store is not None:
            store.commit()                            # a fresh run replaces the old store only now
    finally:
        if store is not None:
            store.close()
    if cr.result is None and loaded.examples:
        # every example came from the store: the first is recomputed (not re-stored) to show its map
        for ex in loaded.examples[:5]:
            sub = runner.execute(example_contract(contract, ex))
            if sub.result is not None:
                cr.result, cr.checks = sub.result, sub.checks
                break
    if not loaded.examples:
        cr.error = f"{contract.dataset.span}: the dataset has no usable example ({len(loaded.errors)} bad row(s))"
    cr.seconds = time.perf_counter() - t0
    return cr


def _facts(contract: m.Contract, loaded: Loaded, store: Store | None, key: str) -> dict[str, Any]:
    """A dataset run's facts (``ContractRun.dataset``) before its first example: the source, the
    examples loaded and requested, the store; the counters start at 0."""
    params = contract.dataset.params if contract.dataset is not None else ()
    limit = next((m.py_value(p.value) for p in params if p.key == "limit"), None)
    requested = int(limit) if isinstance(limit, (int, float)) else len(loaded.examples) + len(loaded.errors)
    return {"source": loaded.source, "examples": len(loaded.examples), "row_errors": len(loaded.errors),
            "fingerprint": loaded.fingerprint,
            "requested": requested,
            "store": str(store.path) if store else None, "key": key, "resumed": 0,
            "truncated_record_redone": bool(store and store.truncated),
            "store_problems": [str(p) for p in store.problems] if store else [],
            "adopted": store.adopted if store else 0, "stale_records_redone": 0}


def _run_examples(runner: Driver, contract: m.Contract, loaded: Loaded, store: Store | None, keys: set[str],
                  method: str, seed: int, cr: ContractRun) -> None:
    """The examples of ``loaded`` into ``cr.examples`` in dataset order: a stored record where the
    store has a usable one, else the executor's record (appended to the store as it arrives)."""
    assert cr.dataset is not None  # a dataset run has its facts from construction
    bar = None
    if runner.settings.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(loaded.examples), desc=contract.name[:40], unit="ex", leave=False)
    for p in cr.dataset["store_problems"]:
        _notice(runner, cr, bar, p)
    stored: dict[str, ExampleRun] = {}
    todo = []
    for ex in loaded.examples:
        er = _reusable(store, ex.id, method, seed, keys)
        if er is not None:
            stored[ex.id] = er
        else:
            todo.append(ex)
            if store is not None and store.has(ex.id, method, seed):
                cr.dataset["stale_records_redone"] += 1
    big = not loaded.extra.get("limited", True) and loaded.extra.get("rows", 0) > LARGE_DATASET
    if big:
        _notice(runner, cr, bar, f"{loaded.source}: {len(loaded.examples):,} examples and no `limit` "
                                 f"({len(todo):,} to compute); an estimate follows the first example "
                                 f"(add `limit = N` to the dataset statement to run fewer)")
    estimate = big and bool(todo)
    executor = runner.executor
    stream = executor.run(runner, contract, todo)      # lazy: nothing is computed before the first next()
    computed: dict[str, ExampleRun] = {}
    try:
        for ex in loaded.examples:
            er = stored.get(ex.id)
            if er is not None:
                cr.dataset["resumed"] += 1
                if bar is not None:
                    bar.update(1)
            else:
                while ex.id not in computed:           # records arrive in the executor's order
                    d = next(stream, None)
                    if d is None:
                        raise RuntimeError(f"the {executor.name} executor returned no record for {ex.id}")
                    computed[d.id] = ExampleRun(d.id, d.values, d.error, d.seconds)
                    if store:
                        store.append(d.id, method, seed, d.values, d.error, d.seconds)
                    if cr.result is None and d.run is not None and d.run.result is not None:
                        cr.result, cr.checks = d.run.result, d.run.checks
                    if estimate:
                        estimate = False
                        total = d.seconds * len(todo) / executor.parallelism
                        _notice(runner, cr, bar, f"estimate: {d.seconds:.3g} s for the first example, so "
                                                 f"about {_duration(total)} for the {len(todo):,} to compute")
                    if bar is not None:
                        bar.update(1)
                er = computed[ex.id]
            cr.examples.append(er)
            if runner.settings.fail_fast and (er.error or cr.row_errors):
                break
    finally:
        if isinstance(stream, Generator):             # stops its work; a plain iterator has no close()
            stream.close()
        if bar is not None:
            bar.close()
    if executor.name != "serial":                     # a serial run's record is as it always was
        cr.dataset["executor"] = executor.name


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


# ---------------------------------------------------------------------------- evaluation


def aggregate(cr: ContractRun, agg: m.Aggregate, ex: m.Expectation, seed: int) -> stats.AggregateResult:
    """Aggregate ``agg`` of clause ``ex`` over the examples of ``cr`` (missing values left out)."""

    def column(a: Any) -> list[Any]:
        k = argument_key(agg, a, ex)
        return [e.values.get(k) for e in cr.examples]

    prm = {p.key: m.py_value(p.value) for p in agg.params}
    if agg.func == "paired":
        a, b = (column(x) for x in agg.args[:2])
        return stats.paired(a, b, test=str(prm.get("test", "wilcoxon")),
                            alternative=str(prm.get("alternative", "two_sided")).replace("_", "-"), seed=seed)
    q = prm.get("q", 0.5)
    if not isinstance(q, (int, float)):               # validate refuses it: a contract run unvalidated
        raise ContractValidationError(f"`q = {q}` is not a number", agg.span, expected="q = a number in [0, 1]",
                                      rule="params")
    return stats.aggregate(agg.func, column(agg.args[0]), q=float(q), seed=seed)


def _describe(res: Any, fld: str) -> str:
    v = res.field_value(fld)
    lo, hi = res.ci
    drop = f", {res.dropped} missing" if res.dropped else ""
    if res.func == "paired":
        return (f"{v:.4g} (paired, n = {res.n}{drop}; median difference {res.fields['median_diff']:.4g} "
                f"[95% CI {lo:.4g}, {hi:.4g}]; {res.method})")
    return f"{v:.4g} [95% CI {lo:.4g}, {hi:.4g}] (n = {res.n}{drop}; {res.method})"


def _worst(cr: ContractRun, agg: m.Aggregate, ex: m.Expectation, high_is_good: bool) -> str:
    if agg.func == "paired" or not agg.args:
        return ""
    a = agg.args[0]
    k = canonical_text(a) if not (isinstance(a, m.Call) and a.name == "random") else None
    if k is None:
        return ""
    scored = [(e.values.get(k), e.id) for e in cr.examples]
    nums = [(float(v), i) for v, i in scored if isinstance(v, (int, float)) and math.isfinite(float(v))]
    missing = [i for v, i in scored if not (isinstance(v, (int, float)) and math.isfinite(float(v)))]
    nums.sort(reverse=not high_is_good)
    worst = [f"{i} ({v:.4g})" for v, i in nums[:WORST]] + [f"{i} (missing)" for i in missing[:WORST]]
    return f"; worst examples: {', '.join(worst[:WORST])}" if worst else ""


def evaluate_dataset(cr: ContractRun, ex: m.Expectation) -> ExpectationOutcome:
    """An expectation of a dataset contract: an aggregate with its n and interval, or a plain
    expectation that must hold on every example."""
    text = fmt_expectation(ex)
    if cr.error is not None:
        return ExpectationOutcome(text, ex.span.line, False, None, None, cr.error)
    rows = f"; {len(cr.row_errors)} row(s) could not be examples" if cr.row_errors else ""
    seed = cr.contract.seed or 0
    sides = (ex.left, ex.right)
    if not any(isinstance(s, m.Aggregate) for s in sides):
        k = plain_key(cr.contract, ex)
        vals = [(e.values.get(k), e.id) for e in cr.examples]
        bad = [i for v, i in vals if v is not True]
        passed = bool(vals) and not bad
        expl = (f"{text}: {'holds' if passed else 'FAILED'} on {len(vals) - len(bad)}/{len(vals)} examples"
                + (f"; failing: {', '.join(bad[:5])}" if bad else "") + rows)
        return ExpectationOutcome(text, ex.span.line, passed, len(vals) - len(bad), len(vals), expl)
    shown: list[Any] = []
    descs: list[str] = []
    results = []
    for s in sides:
        if isinstance(s, m.Aggregate):
            res = aggregate(cr, s, ex, seed)
            fld = s.fields[0] if s.fields else ("p" if s.func == "paired" else "value")
            shown.append(res.field_value(fld))
            descs.append(_describe(res, fld))
            results.append(res)
        else:
            shown.append(s if isinstance(s, (int, float)) else None)
            descs.append(canonical_text(s) if s is not None else "")
    if ex.op is None or shown[1] is None and not isinstance(ex.right, (int, float)):
        passed = False
        expl = f"{text}: an aggregate compares with a number or another aggregate"
        return ExpectationOutcome(text, ex.span.line, False, shown[0], None, expl)
    passed = compare(shown[0], ex.op, shown[1])
    nan = any(isinstance(v, float) and not math.isfinite(v) for v in shown)
    expl = f"{text}: {'holds' if passed else 'FAILED'}: measured {descs[0]} {ex.op} {descs[1]}"
    if nan:
        expl += " (a NaN value never satisfies an expectation)"
    if not passed and isinstance(ex.left, m.Aggregate):
        expl += _worst(cr, ex.left, ex, ex.op in (">", ">="))
    return ExpectationOutcome(text, ex.span.line, passed, shown[0], shown[1], expl + rows)


__all__ = ["LARGE_DATASET", "aggregate", "evaluate_dataset", "run_dataset"]
