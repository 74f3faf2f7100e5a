"""Running a dataset contract: every example as its own contract, per-example values streamed to
the result store, aggregate expectations with n and a 95% interval (DESIGN section 9).

What an example contributes is decided by the contract's expectations: each argument of an
aggregate (a check field such as ``deletion(operator = pad).aopc``, its random baseline
``random.aopc``, a comparison such as ``top(1) in truth``) and each plain expectation (which must
then hold on every example) is one named value per example. ``truth`` is the example's ground
truth: the causal prompt tokens of the explained output tokens for a reference task, or the
``truth`` field of a data file.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from scopecheck.errors import ContractError
from scopecheck.spec import model as m

WORST = 3


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


def inner_items(contract: m.Contract) -> list[Inner]:
    out: dict[str, Inner] = {}
    for ex in contract.expects:
        aggs = [s for s in (ex.left, ex.right) if isinstance(s, m.Aggregate)]
        if not aggs:
            out[f"expect:{ex.span.line}"] = Inner(f"expect:{ex.span.line}", "plain", ex)
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


def _truth(sub: Any, ex: Any) -> list[str] | None:
    if ex.truth is not None:
        return list(ex.truth)
    if ex.causal is None or sub.result is None:
        return None
    comp = sub.result.compiled
    toks = comp.alignment.tokens
    causes: set[int] = set()
    for p in comp.targets:
        t = toks[p]
        if t.role == "output" and 1 <= t.index <= len(ex.causal):
            causes.update(ex.causal[t.index - 1])
    return [ex.prompt_tokens[i] for i in sorted(causes)]


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
    from scopecheck.runner import _compare

    values: dict[str, Any] = {}
    truth = _truth(sub, ex)
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

                def side(o: Any, other: Any) -> Any:
                    if isinstance(o, m.Call) and o.name == "truth" and not o.called:
                        if truth is None:
                            raise ContractError("this example has no ground truth", c.span, rule="dataset")
                        return ("tokens", truth)
                    return runner._value(sub, o, other)

                values[it.key] = bool(_compare(side(c.left, c.right), c.op, side(c.right, c.left)))
        except ContractError:
            values[it.key] = None
        except Exception:  # noqa: BLE001 - one value of one example; recorded as missing
            if runner.debug:
                raise
            values[it.key] = None
    return values


def compute_example(runner: Any, contract: m.Contract, ex: Any, items: list[Inner]) -> tuple[Any, dict[str, Any], float]:
    """Run one example as its own contract: ``(its ContractRun, its values, seconds)``."""
    from scopecheck.datasets import example_contract

    t0 = time.perf_counter()
    sub = runner.execute(example_contract(contract, ex))
    values = example_values(runner, sub, ex, items) if sub.result is not None else {it.key: None for it in items}
    return sub, values, time.perf_counter() - t0


def _stored(store: Any, ex_id: str, method: str, seed: int) -> Any:
    """The example's record in the store, as an ExampleRun, or None."""
    from scopecheck.runner import ExampleRun

    rec = store.get(ex_id, method, seed) if store else None
    if rec is None:
        return None
    return ExampleRun(ex_id, dict(rec["values"]), rec.get("error"), float(rec["seconds"]), True)


def run_dataset(runner: Any, contract: m.Contract) -> Any:
    from scopecheck.datasets import example_contract, load_examples
    from scopecheck.dsl.format import fmt_model, format_document
    from scopecheck.engine.compile import contract_dir
    from scopecheck.runner import ContractRun, ExampleRun, contract_failure
    from scopecheck.store import Store, contract_key

    cr = ContractRun(contract)
    t0 = time.perf_counter()
    try:
        loaded = load_examples(contract.dataset, contract_dir(contract))
    except ContractError as exc:
        cr.error = exc.render()
        return cr
    except Exception as exc:  # noqa: BLE001
        if runner.debug:
            raise
        cr.error = contract_failure(exc, contract.dataset.span).render()
        return cr
    cr.row_errors = list(loaded.errors)
    items = inner_items(contract)
    seed = contract.seed or 0
    from scopecheck.dsl.format import fmt_params

    method = contract.method.name + fmt_params(contract.method.params) if contract.method is not None else ""
    key = contract_key(format_document(contract), loaded.fingerprint, fmt_model(contract.model) if contract.model
                       else "")
    store = Store(runner.store_dir, key, resume=runner.resume) if runner.store_dir else None
    cr.dataset = {"source": loaded.source, "examples": len(loaded.examples), "row_errors": len(loaded.errors),
                  "store": str(store.path) if store else None, "key": key, "resumed": 0,
                  "truncated_record_redone": bool(store and store.truncated)}
    bar = None
    if runner.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(loaded.examples), desc=contract.name[:40], unit="ex", leave=False)
    executor = getattr(runner, "executor", "serial")
    if executor == "ray":
        _run_on_ray(runner, contract, loaded, store, method, seed, cr, bar)
    for ex in ([] if executor == "ray" else loaded.examples):
        stored = _stored(store, ex.id, method, seed)
        if stored is not None:
            cr.examples.append(stored)
            cr.dataset["resumed"] += 1
        else:
            sub, values, secs = compute_example(runner, contract, ex, items)
            er = ExampleRun(ex.id, values, sub.error, secs)
            cr.examples.append(er)
            if store:
                store.append(ex.id, method, seed, values, sub.error, er.seconds)
            if cr.result is None and sub.result is not None:
                cr.result, cr.checks = sub.result, sub.checks
        if bar is not None:
            bar.update(1)
        if runner.fail_fast and (cr.examples[-1].error or cr.row_errors):
            break
    if bar is not None:
        bar.close()
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


def _run_on_ray(runner: Any, contract: m.Contract, loaded: Any, store: Any, method: str, seed: int, cr: Any,
                bar: Any) -> None:
    """Examples not yet in the store go to Ray workers; records stream into the store here."""
    import torch

    from scopecheck.dsl.format import format_document
    from scopecheck.executors import Job, ray_executor
    from scopecheck.runner import ExampleRun

    done: dict[str, Any] = {}
    todo = []
    for ex in loaded.examples:
        stored = _stored(store, ex.id, method, seed)
        if stored is not None:
            done[ex.id] = stored
            cr.dataset["resumed"] += 1
        else:
            todo.append(ex)
    job = Job(format_document(contract), contract.span.path, contract.name, runner.device, runner.dtype,
              runner.max_evaluations, torch.get_num_threads())
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
    from scopecheck import stats

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
    from scopecheck.runner import ExpectationOutcome, _compare

    text = fmt_expectation(ex)
    if cr.error is not None:
        return ExpectationOutcome(text, ex.span.line, False, None, None, cr.error)
    rows = f"; {len(cr.row_errors)} row(s) could not be examples" if cr.row_errors else ""
    seed = cr.contract.seed or 0
    sides = (ex.left, ex.right)
    if not any(isinstance(s, m.Aggregate) for s in sides):
        vals = [(e.values.get(f"expect:{ex.span.line}"), e.id) for e in cr.examples]
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


__all__ = ["Inner", "evaluate_dataset", "example_values", "inner_items", "run_dataset"]
