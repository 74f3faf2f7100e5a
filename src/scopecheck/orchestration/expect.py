"""Evaluating the ``expect`` clauses of a single run or a map family, and the check calls they make.

Each distinct check call runs once per contract (:func:`check` caches it in the run, keyed by its
canonical text); :func:`value` is what one side of an expectation measures; :func:`compare`
applies the operator (token lists, texts, numbers; a NaN or infinite number never satisfies
one); :func:`evaluate` turns a clause into an :class:`ExpectationOutcome`. A dataset contract's
clauses aggregate over examples instead (:mod:`scopecheck.orchestration.dataset`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from scopecheck.checks.catalog import CHECKS
from scopecheck.checks.snapshot import compare_snapshot
from scopecheck.dsl.format import fmt_expectation, fmt_operand, fmt_selector
from scopecheck.errors import ContractError, ContractValidationError, InternalError, Span
from scopecheck.orchestration.records import ContractRun, ExpectationOutcome, contract_failure
from scopecheck.spec import model as m

if TYPE_CHECKING:
    from scopecheck.engine.result import AttributionResult


def call_key(call: m.Call) -> str:
    """The canonical text of a check call without its fields: the key of its cached result."""
    return fmt_operand(m.Call(call.name, call.args, call.params, (), True))


def partner_of(agg: m.Aggregate, ex: m.Expectation) -> m.Call | None:
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


def _reads(ex: m.Expectation) -> Iterator[tuple[Any, Any, bool]]:
    """What one expectation reads, as ``(operand, the operand it is compared with, whole)``:
    both sides of a plain expectation (``whole``: a bare check call alone asks for its whole
    result, ``expect completeness``); inside a dataset contract's aggregates, each argument
    (a check call's field per example, a ``random.<field>`` beside its partner check, both sides
    of a comparison), as ``examples.inner_items`` evaluates them."""
    aggs = [s for s in (ex.left, ex.right) if isinstance(s, m.Aggregate)]
    if not aggs:
        yield ex.left, ex.right, True
        yield ex.right, ex.left, True
        return
    for agg in aggs:
        for a in agg.args:
            if isinstance(a, m.Comparison):
                yield a.left, a.right, False
                yield a.right, a.left, False
            elif isinstance(a, m.Call) and a.name == "random":
                yield a, partner_of(agg, ex), False
            else:
                yield a, None, False


def asked_fields(contract: m.Contract, key: str,
                 expects: Sequence[m.Expectation] | None = None) -> tuple[str, ...] | None:
    """The fields of check call ``key`` (``random:`` prefixed for its random baseline) that the
    expectations read (``expects``, default the contract's own; a dataset example's run is asked
    by the dataset contract's aggregates): a field named (``deletion.aopc``), the default field of a
    bare call compared with something or aggregated, every field (``None``) when the whole result
    is asked for (``expect completeness``) or the call is not among them. A check computes only
    what is asked when asking more costs work (a curve's NAOPC bound search)."""
    found: set[str] = set()
    hit = False
    for ex in (getattr(contract, "expects", ()) or ()) if expects is None else expects:
        for op, other, whole in _reads(ex):
            if not isinstance(op, m.Call):
                continue
            if op.name == "random":
                if not isinstance(other, m.Call) or "random:" + call_key(other) != key:
                    continue
                subject = other
            elif call_key(op) == key:
                subject = op
            else:
                continue
            info = CHECKS.get(subject.name)
            if info is None:
                return None
            hit = True
            if op.fields:
                found.add(op.fields[0])
            elif whole and other is None and op.name != "random":
                return None                          # the whole result (its own criterion)
            else:
                found.add(info.default_field)
    return tuple(sorted(found)) if hit else None


def param_value(v: m.Value) -> Any:
    """Check parameters as plain values; selectors as their canonical text."""
    if isinstance(v, m.Selector):
        return fmt_selector(v)
    return m.py_value(v)


def call_params(call: m.Call) -> dict[str, Any]:
    """A check call's parameters as plain values: those given by position (as its registry entry's
    ``positional`` names them, ``snapshot("snapshots/noir.json")``), then those given by name."""
    entry = CHECKS.get(call.name)
    names = entry.positional if entry is not None else ()
    out = {k: param_value(v) for k, v in zip(names, call.args)}
    out.update({p.key: param_value(p.value) for p in call.params})
    return out


def snapshot_outcome(cr: ContractRun, ex: m.Expectation, text: str, *, update: bool = False,
                     allow_outside: bool = False) -> ExpectationOutcome:
    """``expect snapshot(...)``: the run against its stored snapshot (:mod:`scopecheck.checks.snapshot`),
    written when ``update``. The outcome's ``status`` is the snapshot's: pass, fail, stale, missing
    or written; stale and missing fail, and say why and how to re-record."""
    call = ex.left
    assert isinstance(call, m.Call)
    key = call_key(call)
    res = cr.checks.get(key)
    if res is None:
        t0 = time.perf_counter()
        res = compare_snapshot(cr.contract, _attribution(cr), call_params(call), span=call.span, update=update,
                               allow_outside=allow_outside)
        cr.checks[key] = res
        cr.seconds += time.perf_counter() - t0
    status = res.extra["status"]
    verdict = {"pass": "holds", "written": "written", "stale": "STALE", "missing": "FAILED (no snapshot)"}.get(
        status, "FAILED")
    if status in ("pass", "fail"):
        shown = f"{status}: " + ", ".join(f"{k} = {v:.6g}" for k, v in res.fields.items())
    else:                                   # stale, missing, written: what happened, first clause
        shown = f"{status}: {res.extra['reason'].split('; ')[0]}"
    return ExpectationOutcome(text, ex.span.line, bool(res.passed), shown, None, f"{text}: {verdict}: {res.note}",
                              status=status)


def check(cr: ContractRun, call: m.Call, random: bool = False, *, progress: bool = False) -> Any:
    """The result of check ``call`` on ``cr``'s attribution (its random baseline with ``random``),
    computed once per run."""
    from scopecheck.checks.registry import random_baseline, run_check  # lazy: imports torch

    key = ("random:" if random else "") + call_key(call)
    if key not in cr.checks:
        params = call_params(call)
        seed = cr.contract.seed or 0
        t0 = time.perf_counter()
        fields = asked_fields(cr.contract, key, cr.asks)
        if random:
            cr.checks[key] = random_baseline(call.name, _attribution(cr), params, progress=progress, fields=fields)
        else:
            cr.checks[key] = run_check(call.name, _attribution(cr), params, seed=seed, progress=progress,
                                       fields=fields)
        cr.seconds += time.perf_counter() - t0
    return cr.checks[key]


def value(cr: ContractRun, op: m.Operand, other: m.Operand | None, *, progress: bool = False) -> Any:
    """What one side ``op`` of an expectation measures on ``cr`` (``other`` is the other side)."""
    if isinstance(op, bool) or isinstance(op, (int, float)):
        return op
    if isinstance(op, m.Text):
        return op.value
    assert not isinstance(op, m.Aggregate), op   # aggregates are a dataset run's (dataset.aggregate)
    r = _attribution(cr)
    if isinstance(op, m.Selector):
        return ("tokens", [r.tokens[p].text.strip() for p in r.positions(op)])
    name = op.name
    if name == "top":
        return ("top", r.top(top_count(op)))
    if name in ("mass", "rank", "attribution"):
        if len(op.args) != 1 or not isinstance(op.args[0], m.Selector):
            raise ContractValidationError(f"{name}(...) takes one selector", op.span,
                                          expected=f'{name}(x["black"])', rule="expect")
        return getattr(r, name)(op.args[0])
    if name == "random":
        if not isinstance(other, m.Call) or other.name in ("top", "mass", "rank", "attribution", "random"):
            raise ContractValidationError("`random` compares with a ranking check on the other side", op.span,
                                          expected="deletion(...).aopc > random.aopc", rule="expect")
        res = check(cr, other, random=True, progress=progress)
        return res.fields[op.fields[0]]
    res = check(cr, op, progress=progress)
    if not op.fields and (other is None):
        return res

    fld = op.fields[0] if op.fields else CHECKS[name].default_field
    return res.fields[fld]


def _attribution(cr: ContractRun) -> AttributionResult:
    """``cr``'s attribution: evaluation reaches a clause only on a run that has one."""
    if cr.result is None:
        raise InternalError("evaluate", RuntimeError(f"contract `{cr.contract.name}` has no attribution"))
    return cr.result


def top_count(call: m.Call) -> int:
    """The ``k`` of ``top(k)`` (1 when omitted); validation refuses anything but a count >= 1, and
    so does this for a contract run unvalidated."""
    k = call.args[0] if call.args else 1
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ContractValidationError("top(k) takes a count k >= 1", call.span, expected='top(1) == "black"',
                                      rule="expect")
    return k


def evaluate(cr: ContractRun, ex: m.Expectation, *, debug: bool = False, progress: bool = False,
             update_snapshots: bool = False, allow_outside: bool = False) -> ExpectationOutcome:
    """The outcome of clause ``ex`` on a single run or a map family. One clause's failure is that
    clause's: an exception while evaluating it becomes its positioned error (``debug``: re-raised).
    ``update_snapshots`` writes a missing, stale or failing ``snapshot(...)``'s file;
    ``allow_outside`` lifts the folder rule for it (``--allow-outside-data``)."""
    text = fmt_expectation(ex)
    snap = ex.op is None and isinstance(ex.left, m.Call) and ex.left.name == "snapshot"
    if snap and cr.kind == "family":
        err = ContractValidationError("a map family has one map per member, and a snapshot pins one map",
                                      ex.span, expected="snapshot(...) in a single-map contract",
                                      hint="snapshot a member: a contract with use ...(target = y[t])",
                                      rule="snapshot")
        return ExpectationOutcome(text, ex.span.line, False, None, None, err.render())
    if cr.kind == "family":
        return _evaluate_family(cr, ex, text, debug=debug, progress=progress)
    if cr.kind == "failed":
        return ExpectationOutcome(text, ex.span.line, False, None, None, cr.error or "the contract did not run")
    try:
        if snap:
            return snapshot_outcome(cr, ex, text, update=update_snapshots, allow_outside=allow_outside)
        # a random baseline plans the rows of the map's own ranking too, so computed first it scores
        # them with its own rows in one call, and the check beside it reads them from the row cache
        random_first = isinstance(ex.right, m.Call) and ex.right.name == "random"
        if random_first:
            assert ex.right is not None
            right = value(cr, ex.right, ex.left, progress=progress)
        left = value(cr, ex.left, ex.right, progress=progress)
        if ex.op is None:
            passed = bool(getattr(left, "passed", False))
            desc = _describe_check(left)
            return ExpectationOutcome(text, ex.span.line, passed, desc, None,
                                      f"{text}: {'holds' if passed else 'FAILED'} ({desc})")
        assert ex.right is not None    # the grammar gives a comparator its right operand
        if not random_first:
            right = value(cr, ex.right, ex.left, progress=progress)
        passed = compare(left, ex.op, right)
    except ContractError as exc:
        if exc.span == Span():                   # raised without a position: it is this expectation's
            exc.span = ex.span
        return ExpectationOutcome(text, ex.span.line, False, None, None, exc.render())
    except Exception as exc:  # noqa: BLE001 - one expectation's failure is that expectation's
        if debug:
            raise
        return ExpectationOutcome(text, ex.span.line, False, None, None, contract_failure(exc, ex.span).render())
    shown_l, shown_r = _show(left), _show(right)
    verdict = "holds" if passed else "FAILED"
    why = ""
    if _not_finite(left) or _not_finite(right):
        why = " (a NaN or infinite value never satisfies an expectation)"
    return ExpectationOutcome(text, ex.span.line, passed, shown_l, shown_r,
                              f"{text}: {verdict}: measured {shown_l} {ex.op} {shown_r}{why}")


def _evaluate_family(cr: ContractRun, ex: m.Expectation, text: str, *, debug: bool,
                     progress: bool) -> ExpectationOutcome:
    """An expectation of a map family holds when it holds for every member (each member's
    run records its own outcome for the reports)."""
    outcomes = []
    for mr in cr.members:
        o = evaluate(mr, ex, debug=debug, progress=progress)
        mr.outcomes = [q for q in mr.outcomes if q.line != o.line] + [o]
        outcomes.append((mr, o))
    failed = [(mr, o) for mr, o in outcomes if not o.passed]
    passed = not failed
    if passed:
        why = f"{text}: holds for every member ({len(outcomes)} maps, y[1] .. y[{len(outcomes)}])"
    else:
        lines = [f"{len(failed)} of {len(outcomes)} members fail:"]
        lines += [f"  {mr.contract.name}: {o.explanation}" for mr, o in failed[:10]]
        if len(failed) > 10:
            lines.append(f"  ... and {len(failed) - 10} more")
        why = f"{text}: FAILED: " + "\n".join(lines)
    return ExpectationOutcome(text, ex.span.line, passed, [o.left for _, o in outcomes],
                              [o.right for _, o in outcomes], why)


def _describe_check(res: Any) -> str:
    if not hasattr(res, "fields"):
        return repr(res)
    vals = ", ".join(f"{k} = {v:.6g}" for k, v in res.fields.items())
    cfg = ", ".join(f"{k} = {v}" for k, v in res.config.items() if k in ("tolerance", "operator", "protocol"))
    note = f"; {res.note}" if res.note else ""
    return f"{res.name}: {vals}" + (f" [{cfg}]" if cfg else "") + note


def _show(v: Any) -> Any:
    if isinstance(v, tuple) and len(v) == 2 and v[0] in ("top", "tokens"):
        return v[1]
    if isinstance(v, float):
        return float(f"{v:.6g}")
    return v


def _not_finite(v: Any) -> bool:
    return isinstance(v, float) and not math.isfinite(v)


def compare(left: Any, op: str, right: Any) -> bool:
    if op == "in":
        items = right[1] if isinstance(right, tuple) else right
        needles = left[1] if isinstance(left, tuple) else [left]
        return bool(needles) and all(n in items for n in needles)
    if isinstance(left, tuple) or isinstance(right, tuple):
        seq, other = (left, right) if isinstance(left, tuple) else (right, left)
        items = seq[1]
        if op in ("==", "!="):
            if isinstance(other, tuple):
                eq = items == other[1]
            else:  # top(k) == "s": s is among the top k
                eq = other in items
            return eq if op == "==" else not eq
        raise ContractValidationError(f"cannot order token lists with {op}", rule="expect")
    if isinstance(left, str) or isinstance(right, str):
        if op == "==":
            return bool(left == right)
        if op == "!=":
            return bool(left != right)
        raise ContractValidationError(f"cannot order texts with {op}", rule="expect")
    a, b = float(left), float(right)
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


__all__ = ["asked_fields", "call_key", "call_params", "check", "compare", "evaluate", "param_value", "partner_of",
           "snapshot_outcome", "top_count", "value"]
