"""Running a dataset contract: every example as its own contract, per-example values streamed to
the result store, aggregate expectations with n and a 95% interval (DESIGN section 9).

What an example contributes is decided by the contract's expectations: each argument of an
aggregate (a check field such as ``deletion(operator = pad).aopc``, its random baseline
``random.aopc``, a comparison such as ``top(1) in truth``) and each plain expectation (which must
then hold on every example) is one named value per example. ``truth`` is the example's ground
truth, a set of prompt tokens: the causal prompt tokens of the explained output tokens for a
reference task, or the tokens the ``truth`` field of a data file names (each item a prompt text,
resolved to the tokens covering it exactly as ``x["..."]`` is, or a 1-based token index).

Comparisons with ``truth`` are between token sets (positions, not texts): ``top(k) in truth``
holds when some token of the top k is a truth token (a hit at k), ``truth in top(k)`` when every
truth token is among the top k; ``==``/``!=`` compare the sets.

Per-example values are keyed by what every executor computes the same way: an aggregate's
argument by its canonical text, a plain expectation by its index in the contract and its
canonical text (``expect[0] mass(x["dog"]) > 0.1``), never by a line number.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scopecheck.errors import ContractError, ContractValidationError, Span
from scopecheck.spec import model as m

WORST = 3
#: a data file with more usable rows than this and no ``limit`` gets a notice with its size before
#: the run starts and an estimate of the run's length after the first computed example
LARGE_DATASET = 1_000
log = logging.getLogger("scopecheck.dataset")


@dataclass(frozen=True)
class Inner:
    key: str
    kind: str                   # call | random | compare | plain
    obj: Any                    # Call | Comparison | Expectation
    partner: m.Call | None = None


def _text(o: Any) -> str:
    from scopecheck.dsl.format import fmt_expectation, fmt_operand

    return fmt_expectation(o) if isinstance(o, m.Expectation) else fmt_operand(o)


def _random_key(call: m.Call, partner: m.Call) -> str:
    base = m.Call(partner.name, partner.args, partner.params, (), True)
    return f"random:{_text(base)}.{call.fields[0] if call.fields else ''}"


def _partner(agg: m.Aggregate, ex: m.Expectation) -> m.Call | None:
    """The check a ``random.<field>`` inside ``agg`` stands beside: another argument of the same
    aggregate (paired), or the first argument of the aggregate on the other side."""
    for a in agg.args:
        if isinstance(a, m.Call) and a.name != "random":
            return a
    other = ex.right if agg is ex.left else ex.left
    if isinstance(other, m.Aggregate):
        for a in other.args:
            if isinstance(a, m.Call) and a.name != "random":
                return a
    return None


def plain_key(contract: m.Contract, ex: m.Expectation) -> str:
    """The value key of a plain expectation: its index in the contract and its canonical text
    (the same in the driver and in a worker that parsed the contract again)."""
    i = next((j for j, e in enumerate(contract.expects) if e is ex), None)
    if i is None:
        i = contract.expects.index(ex)
    return f"expect[{i}] {_text(ex)}"


def inner_items(contract: m.Contract) -> list[Inner]:
    out: dict[str, Inner] = {}
    for ex in contract.expects:
        aggs = [s for s in (ex.left, ex.right) if isinstance(s, m.Aggregate)]
        if not aggs:
            k = plain_key(contract, ex)
            out[k] = Inner(k, "plain", ex)
            continue
        for agg in aggs:
            for a in agg.args:
                if isinstance(a, m.Comparison):
                    out.setdefault(_text(a), Inner(_text(a), "compare", a))
                elif a.name == "random":
                    partner = _partner(agg, ex)
                    if partner is not None:
                        k = _random_key(a, partner)
                        out.setdefault(k, Inner(k, "random", a, partner))
                else:
                    out.setdefault(_text(a), Inner(_text(a), "call", a))
    return list(out.values())


def _uses_truth(o: Any) -> bool:
    return isinstance(o, m.Call) and o.name == "truth" and not o.called


def truth_positions(sub: Any, ex: Any) -> list[int] | None:
    """Sequence positions of the example's truth tokens (None: the example has no truth).

    A data file's truth items resolve through the text-selector matching (``x["Lily"]`` for the
    item ``"Lily"``, ``x[3]`` for ``3``); a reference task's causal prompt indices are ``x[i + 1]``.
    An item that covers no token raises a :class:`ContractValidationError`."""
    r = sub.result
    if ex.truth is not None:
        refs: list[Any] = list(ex.truth)
    elif ex.causal is not None:
        comp = r.compiled
        causes: set[int] = set()
        for p in comp.targets:
            t = comp.alignment.tokens[p]
            if t.role == "output" and 1 <= t.index <= len(ex.causal):
                causes.update(ex.causal[t.index - 1])
        refs = [i + 1 for i in sorted(causes)]
    else:
        return None
    out: set[int] = set()
    for ref in refs:
        try:
            out.update(r.positions(m.Selector("x", "at", ref)))
        except ContractValidationError as exc:
            what = repr(ref.text) if isinstance(ref, m.TextRef) else f"x[{ref}]"
            raise ContractValidationError(f"truth item {what}: {exc.message}", exc.span, expected=exc.expected,
                                          hint=exc.hint, rule="truth") from None
    return sorted(out)


def _position_set(runner: Any, sub: Any, o: Any, truth: list[int] | None, c: m.Comparison) -> set[int]:
    if _uses_truth(o):
        if truth is None:
            raise ContractError("this example has no ground truth", c.span, rule="dataset")
        return set(truth)
    if isinstance(o, m.Call) and o.name == "top":
        k = int(o.args[0]) if o.args else 1
        return {t.position for t in sub.result.ranking()[:k]}
    raise ContractValidationError("`truth` compares with top(k)", c.span,
                                  expected="top(3) in truth, truth in top(2)", rule="expect")


def compare_truth(runner: Any, sub: Any, c: m.Comparison, truth: list[int] | None) -> bool:
    """A comparison with ``truth`` on token sets (see the module docstring)."""
    left = _position_set(runner, sub, c.left, truth, c)
    right = _position_set(runner, sub, c.right, truth, c)
    if c.op == "in":
        if _uses_truth(c.right) and not _uses_truth(c.left):
            return bool(left & right)                   # top(k) in truth: some top-k token is truth
        return bool(left) and left <= right             # truth in top(k): every truth token is in it
    if c.op in ("==", "!="):
        return (left == right) == (c.op == "==")
    raise ContractValidationError(f"cannot order token sets with {c.op}", c.span,
                                  expected="in, == or !=", rule="expect")


def _plain(v: Any) -> Any:
    if isinstance(v, tuple) and len(v) == 2 and v[0] in ("top", "tokens"):
        return list(v[1])
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    passed = getattr(v, "passed", None)
    if passed is not None:
        return bool(passed)
    return None


def example_values(runner: Any, sub: Any, ex: Any, items: list[Inner]) -> dict[str, Any]:
    from scopecheck.orchestration.runner import _compare

    values: dict[str, Any] = {}
    truth: Any = None
    for it in items:
        try:
            if it.kind == "plain":
                values[it.key] = bool(runner.evaluate(sub, it.obj).passed)
            elif it.kind == "random":
                values[it.key] = _plain(runner._value(sub, it.obj, it.partner))
            elif it.kind == "call":
                values[it.key] = _plain(runner._value(sub, it.obj, None))
            else:
                c: m.Comparison = it.obj
                if _uses_truth(c.left) or _uses_truth(c.right):
                    if truth is None:
                        truth = (truth_positions(sub, ex),)
                    values[it.key] = compare_truth(runner, sub, c, truth[0])
                else:
                    values[it.key] = bool(_compare(runner._value(sub, c.left, c.right), c.op,
                                                   runner._value(sub, c.right, c.left)))
        except ContractError:
            values[it.key] = None
        except Exception:  # noqa: BLE001 - one value of one example; recorded as missing
            if runner.debug:
                raise
            values[it.key] = None
    return values


def _truth_error(sub: Any, ex: Any, items: list[Inner]) -> str | None:
    """The example's error when its truth does not resolve to prompt tokens (a row error)."""
    needs = any(it.kind == "compare" and (_uses_truth(it.obj.left) or _uses_truth(it.obj.right)) for it in items)
    if not needs or sub.result is None:
        return None
    try:
        truth_positions(sub, ex)
    except ContractError as exc:
        row = f"row {ex.row} ({ex.id})" if getattr(ex, "row", None) is not None else ex.id
        return f"{row}: {exc.message}"
    return None


def compute_example(runner: Any, contract: m.Contract, ex: Any,
                    items: list[Inner]) -> tuple[Any, dict[str, Any], float, str | None]:
    """Run one example as its own contract: ``(its ContractRun, its values, seconds, its error)``;
    the error is the run's, or the row's when its truth names no prompt token."""
    from scopecheck.datasets import example_contract

    t0 = time.perf_counter()
    sub = runner.execute(example_contract(contract, ex))
    error = sub.error or _truth_error(sub, ex, items)
    if sub.result is None or error is not None:
        values = {it.key: None for it in items}
    else:
        values = example_values(runner, sub, ex, items)
    return sub, values, time.perf_counter() - t0, error


def _stored(store: Any, ex_id: str, method: str, seed: int) -> Any:
    """The example's record in the store, as an ExampleRun, or None."""
    from scopecheck.orchestration.runner import ExampleRun

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


def _notice(runner: Any, cr: Any, bar: Any, msg: str) -> None:
    """A line for the user, through the run's log channel (and above the progress bar)."""
    cr.dataset.setdefault("notices", []).append(msg)
    if bar is not None:
        bar.write(f"scopecheck: {msg}")
    else:
        log.warning(msg)


def _source_text(contract: m.Contract) -> str | None:
    try:
        return Path(contract.span.path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _positioned(exc: ContractError, contract: m.Contract, span: Span) -> ContractError:
    if exc.span == Span():
        exc.span = span
    if exc.source is None and exc.span.path == contract.span.path:
        text = _source_text(contract)
        if text is not None:
            exc.with_source(text)
    return exc


def run_dataset(runner: Any, contract: m.Contract) -> Any:
    from scopecheck.datasets import example_contract, load_examples
    from scopecheck.dsl.format import fmt_model, format_document
    from scopecheck.engine.compile import contract_dir
    from scopecheck.orchestration.runner import ContractRun, ExampleRun, contract_failure
    from scopecheck.orchestration.store import Store, contract_key

    cr = ContractRun(contract)
    t0 = time.perf_counter()
    try:
        loaded = load_examples(contract.dataset, contract_dir(contract),
                               allow_outside=bool(getattr(runner, "allow_outside_data", False)))
    except ContractError as exc:
        cr.error = _positioned(exc, contract, contract.dataset.span).render()
        return cr
    except Exception as exc:  # noqa: BLE001
        if runner.debug:
            raise
        cr.error = contract_failure(exc, contract.dataset.span).render()
        return cr
    cr.row_errors = list(loaded.errors)
    items = inner_items(contract)
    keys = {it.key for it in items}
    seed = contract.seed or 0
    from scopecheck.dsl.format import fmt_params

    method = contract.method.name + fmt_params(contract.method.params) if contract.method is not None else ""
    key = contract_key(format_document(contract), loaded.fingerprint, fmt_model(contract.model) if contract.model
                       else "")
    try:
        store = Store(runner.store_dir, key, resume=runner.resume) if runner.store_dir else None
    except ContractError as exc:                      # another run holds this store
        cr.error = _positioned(exc, contract, contract.dataset.span).render()
        return cr
    try:
        _run_examples(runner, contract, loaded, store, items, keys, method, seed, key, cr)
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


def _run_examples(runner: Any, contract: m.Contract, loaded: Any, store: Any, items: list[Inner], keys: set[str],
                  method: str, seed: int, key: str, cr: Any) -> None:
    from scopecheck.orchestration.runner import ExampleRun

    cr.dataset = {"source": loaded.source, "examples": len(loaded.examples), "row_errors": len(loaded.errors),
                  "store": str(store.path) if store else None, "key": key, "resumed": 0,
                  "truncated_record_redone": bool(store and store.truncated),
                  "store_problems": [str(p) for p in store.problems] if store else [],
                  "adopted": store.adopted if store else 0, "stale_records_redone": 0}
    bar = None
    if runner.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(loaded.examples), desc=contract.name[:40], unit="ex", leave=False)
    for p in cr.dataset["store_problems"]:
        _notice(runner, cr, bar, p)
    todo = []
    for ex in loaded.examples:
        if _reusable(store, ex.id, method, seed, keys) is None:
            todo.append(ex)
            if store is not None and store.has(ex.id, method, seed):
                cr.dataset["stale_records_redone"] += 1
    big = not loaded.extra.get("limited", True) and loaded.extra.get("rows", 0) > LARGE_DATASET
    if big:
        _notice(runner, cr, bar, f"{loaded.source}: {len(loaded.examples):,} examples and no `limit` "
                                 f"({len(todo):,} to compute); an estimate follows the first example "
                                 f"(add `limit = N` to the dataset statement to run fewer)")
    estimate = big and bool(todo)
    executor = getattr(runner, "executor", "serial")
    try:
        if executor == "ray":
            _run_on_ray(runner, contract, loaded, store, method, seed, cr, bar, keys)
            return
        for ex in loaded.examples:
            stored = _reusable(store, ex.id, method, seed, keys)
            if stored is not None:
                cr.examples.append(stored)
                cr.dataset["resumed"] += 1
            else:
                sub, values, secs, error = compute_example(runner, contract, ex, items)
                er = ExampleRun(ex.id, values, error, secs)
                cr.examples.append(er)
                if store:
                    store.append(ex.id, method, seed, values, error, er.seconds)
                if cr.result is None and sub.result is not None:
                    cr.result, cr.checks = sub.result, sub.checks
                if estimate:
                    estimate = False
                    _notice(runner, cr, bar, f"estimate: {secs:.3g} s for the first example, so about "
                                             f"{_duration(secs * len(todo))} for the {len(todo):,} to compute")
            if bar is not None:
                bar.update(1)
            if runner.fail_fast and (cr.examples[-1].error or cr.row_errors):
                break
    finally:
        if bar is not None:
            bar.close()


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _job_text(contract: m.Contract) -> str:
    """The text a worker parses: the contract's own file when it still holds this very contract
    (so every position, and every error message, is the serial run's), else its canonical form."""
    from scopecheck.dsl.format import format_document
    from scopecheck.loader import load_text

    text = _source_text(contract)
    if text is not None:
        try:
            if any(d == contract for d in load_text(text, contract.span.path)):
                return text
        except Exception:  # noqa: BLE001 - an unreadable file: the canonical text below
            pass
    return format_document(contract)


def _run_on_ray(runner: Any, contract: m.Contract, loaded: Any, store: Any, method: str, seed: int, cr: Any,
                bar: Any, keys: set[str]) -> None:
    """Examples not yet in the store go to Ray workers; records stream into the store here."""
    import torch

    from scopecheck.orchestration.executors import Job, ray_executor
    from scopecheck.orchestration.runner import ExampleRun

    done: dict[str, Any] = {}
    todo = []
    for ex in loaded.examples:
        stored = _reusable(store, ex.id, method, seed, keys)
        if stored is not None:
            done[ex.id] = stored
            cr.dataset["resumed"] += 1
        else:
            todo.append(ex)
    job = Job(_job_text(contract), contract.span.path, contract.name, runner.device, runner.dtype,
              runner.max_evaluations, torch.get_num_threads(), contract.span.line)
    for d in ray_executor(job, todo, address=getattr(runner, "ray_address", None),
                          workers=getattr(runner, "workers", 2)):
        er = ExampleRun(d.id, d.values, d.error, d.seconds)
        done[d.id] = er
        if store:
            store.append(d.id, method, seed, d.values, d.error, d.seconds)
        if bar is not None:
            bar.update(1)
    cr.examples.extend(done[ex.id] for ex in loaded.examples if ex.id in done)
    cr.dataset["executor"] = "ray"


# ---------------------------------------------------------------------------- evaluation


def _agg(cr: Any, agg: m.Aggregate, ex: m.Expectation, seed: int) -> Any:
    from scopecheck.orchestration import stats

    def column(a: Any) -> list[Any]:
        if isinstance(a, m.Call) and a.name == "random":
            partner = _partner(agg, ex)
            k = _random_key(a, partner) if partner is not None else ""
        else:
            k = _text(a)
        return [e.values.get(k) for e in cr.examples]

    prm = {p.key: m.py_value(p.value) for p in agg.params}
    if agg.func == "paired":
        a, b = (column(x) for x in agg.args[:2])
        return stats.paired(a, b, test=str(prm.get("test", "wilcoxon")),
                            alternative=str(prm.get("alternative", "two_sided")).replace("_", "-"), seed=seed)
    return stats.aggregate(agg.func, column(agg.args[0]), q=float(prm.get("q", 0.5)), seed=seed)


def _describe(res: Any, fld: str) -> str:
    v = res.field_value(fld)
    lo, hi = res.ci
    drop = f", {res.dropped} missing" if res.dropped else ""
    if res.func == "paired":
        return (f"{v:.4g} (paired, n = {res.n}{drop}; median difference {res.fields['median_diff']:.4g} "
                f"[95% CI {lo:.4g}, {hi:.4g}]; {res.method})")
    return f"{v:.4g} [95% CI {lo:.4g}, {hi:.4g}] (n = {res.n}{drop}; {res.method})"


def _worst(cr: Any, agg: m.Aggregate, ex: m.Expectation, high_is_good: bool) -> str:
    if agg.func == "paired" or not agg.args:
        return ""
    a = agg.args[0]
    k = _text(a) if not (isinstance(a, m.Call) and a.name == "random") else None
    if k is None:
        return ""
    scored = [(e.values.get(k), e.id) for e in cr.examples]
    nums = [(float(v), i) for v, i in scored if isinstance(v, (int, float)) and math.isfinite(float(v))]
    missing = [i for v, i in scored if not (isinstance(v, (int, float)) and math.isfinite(float(v)))]
    nums.sort(reverse=not high_is_good)
    worst = [f"{i} ({v:.4g})" for v, i in nums[:WORST]] + [f"{i} (missing)" for i in missing[:WORST]]
    return f"; worst examples: {', '.join(worst[:WORST])}" if worst else ""


def evaluate_dataset(runner: Any, cr: Any, ex: m.Expectation) -> Any:
    from scopecheck.dsl.format import fmt_expectation
    from scopecheck.orchestration.runner import ExpectationOutcome, _compare

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
            res = _agg(cr, s, ex, seed)
            fld = s.fields[0] if s.fields else ("p" if s.func == "paired" else "value")
            shown.append(res.field_value(fld))
            descs.append(_describe(res, fld))
            results.append(res)
        else:
            shown.append(s if isinstance(s, (int, float)) else None)
            descs.append(_text(s) if s is not None else "")
    if ex.op is None or shown[1] is None and not isinstance(ex.right, (int, float)):
        passed = False
        expl = f"{text}: an aggregate compares with a number or another aggregate"
        return ExpectationOutcome(text, ex.span.line, False, shown[0], None, expl)
    passed = _compare(shown[0], ex.op, shown[1])
    nan = any(isinstance(v, float) and not math.isfinite(v) for v in shown)
    expl = f"{text}: {'holds' if passed else 'FAILED'}: measured {descs[0]} {ex.op} {descs[1]}"
    if nan:
        expl += " (a NaN value never satisfies an expectation)"
    if not passed and isinstance(ex.left, m.Aggregate):
        expl += _worst(cr, ex.left, ex, ex.op in (">", ">="))
    return ExpectationOutcome(text, ex.span.line, passed, shown[0], shown[1], expl + rows)


__all__ = ["LARGE_DATASET", "Inner", "compare_truth", "evaluate_dataset", "example_values", "inner_items",
           "plain_key", "run_dataset", "truth_positions"]
