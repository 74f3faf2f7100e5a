"""Run contracts and evaluate their ``expect`` clauses, sharing work per contract.

A :class:`Runner` computes each contract's attribution once and each distinct check
call once (per session in pytest, per command on the CLI). Expectations evaluate to
:class:`ExpectationOutcome` objects that say what was measured against what threshold.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from scopecheck.errors import ContractError, ContractValidationError, Span, reraise_interrupt
from scopecheck.spec import model as m


@dataclass(frozen=True)
class ExpectationOutcome:
    text: str                 # the clause in canonical form
    line: int
    passed: bool
    left: Any                 # measured value(s)
    right: Any
    explanation: str


@dataclass
class ContractRun:
    contract: m.Contract
    result: Any = None                                   # AttributionResult
    checks: dict[str, Any] = field(default_factory=dict)  # canonical call text -> CheckResult
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    #: dataset contracts: one record per example, the rows that could not be examples, and facts
    examples: list["ExampleRun"] = field(default_factory=list)
    row_errors: list[Any] = field(default_factory=list)
    dataset: dict[str, Any] | None = None
    #: a map family (``target = each``): one run per generated token, each a complete contract run
    members: list["ContractRun"] = field(default_factory=list)

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


def _call_key(call: m.Call) -> str:
    from scopecheck.dsl.format import fmt_operand

    return fmt_operand(m.Call(call.name, call.args, call.params, (), True))


def asked_fields(contract: m.Contract, key: str) -> tuple[str, ...] | None:
    """The fields of check call ``key`` (``random:`` prefixed for its random baseline) that the
    contract's expectations read: a field named (``deletion.aopc``), the default field of a bare
    call compared with something, every field (``None``) when the whole result is asked for
    (``expect completeness``) or the call is not among them. A check computes only what is asked
    when asking more costs work (a curve's NAOPC bound search)."""
    from scopecheck.checks.catalog import CHECKS

    found: set[str] = set()
    hit = False
    for ex in getattr(contract, "expects", ()) or ():
        sides = [(ex.left, ex.right), (ex.right, ex.left)]
        for op, other in sides:
            if not isinstance(op, m.Call):
                continue
            if op.name == "random":
                if not isinstance(other, m.Call) or "random:" + _call_key(other) != key:
                    continue
                subject = other
            elif _call_key(op) == key:
                subject = op
            else:
                continue
            info = CHECKS.get(subject.name)
            if info is None:
                return None
            hit = True
            if op.fields:
                found.add(op.fields[0])
            elif other is None and op.name != "random":
                return None                          # the whole result (its own criterion)
            else:
                found.add(info.default_field)
    return tuple(sorted(found)) if hit else None


def _py(v: m.Value) -> Any:
    """Check parameters as plain values; selectors as their canonical text."""
    if isinstance(v, m.Selector):
        from scopecheck.dsl.format import fmt_selector

        return fmt_selector(v)
    return m.py_value(v)


def contract_failure(exc: BaseException, span: Any) -> ContractError:
    """Any exception raised while running one contract, as that contract's positioned error:
    a :class:`ContractError` keeps its own position; anything else is placed on ``span`` (the
    contract's header or the expectation) with the exception's message. An interrupt a library
    wrapped in an ordinary exception is re-raised, never made the contract's error."""
    reraise_interrupt(exc)
    if isinstance(exc, ContractError):
        return exc
    msg = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    return ContractError(f"{type(exc).__name__}: {msg}" if not isinstance(exc, (ValueError, KeyError)) else msg,
                         span, rule="run")


class Runner:
    """Runs contracts and their expectations. One contract's failure is that contract's failure:
    every exception while running it (or evaluating one expectation) becomes a positioned error
    on it, and the other contracts still run. ``debug=True`` re-raises instead (``--debug``)."""

    def __init__(self, device: str = "auto", dtype: str = "float32", progress: bool = False,
                 debug: bool = False, max_evaluations: int | None = None, strict: bool = False) -> None:
        from scopecheck.engine.models import LoadOptions

        self.device, self.dtype, self.progress, self.debug = device, dtype, progress, debug
        self.max_evaluations = max_evaluations
        self.strict = strict                   # input warnings (tokenization) are errors
        self.options = LoadOptions(device, dtype)
        self.runs: dict[tuple[str, int, str], ContractRun] = {}
        self.store_dir: str | None = None      # dataset contracts: where records stream (None: memory only)
        self.resume = False
        #: dataset files outside the contract's folder (absolute, ``~``, ``..``, symlinks) are refused
        #: unless the caller lifts the rule (``--allow-outside-data``; never a contract statement)
        self.allow_outside_data = False
        self.fail_fast = False
        self.executor = "serial"               # serial | ray (scopecheck.orchestration.executors)
        self.ray_address: str | None = None
        self.workers = 2

    def run(self, contract: m.Contract) -> ContractRun:
        key = (contract.span.path, contract.span.line, contract.name)
        if key not in self.runs:
            from scopecheck.spec.standard import family_param

            if contract.dataset is not None:
                from scopecheck.orchestration.dataset import run_dataset

                self.runs[key] = run_dataset(self, contract)
            elif family_param(contract.use) is not None:
                self.runs[key] = self.execute_family(contract)
            else:
                self.runs[key] = self.execute(contract)
        return self.runs[key]

    def execute(self, contract: m.Contract) -> ContractRun:
        """Run one (single-prompt) contract, uncached, its failure isolated."""
        from scopecheck.engine.run import execute

        cr = ContractRun(contract)
        t0 = time.perf_counter()
        try:
            cr.result = execute(contract, self.options, progress=self.progress, max_evaluations=self.max_evaluations,
                                strict=self.strict)
        except ContractError as exc:
            cr.error = exc.render()
        except Exception as exc:  # noqa: BLE001 - isolated to this contract (see the class docstring)
            if self.debug:
                raise
            cr.error = contract_failure(exc, contract.spans.get("name", contract.span)).render()
        cr.seconds = time.perf_counter() - t0
        return cr

    def execute_family(self, contract: m.Contract) -> ContractRun:
        """Run a map family: the family's run holds one complete run per member (y[1] .. y[T])."""
        from scopecheck.engine.run import execute_family

        cr = ContractRun(contract)
        t0 = time.perf_counter()
        try:
            members, results = execute_family(contract, self.options, progress=self.progress,
                                              max_evaluations=self.max_evaluations, strict=self.strict)
        except ContractError as exc:
            cr.error = exc.render()
        except Exception as exc:  # noqa: BLE001 - isolated to this contract
            if self.debug:
                raise
            cr.error = contract_failure(exc, contract.spans.get("name", contract.span)).render()
        cr.seconds = time.perf_counter() - t0
        if cr.error is None:
            cr.members = [ContractRun(mc, result=r, seconds=cr.seconds / len(results))
                          for mc, r in zip(members, results)]
        return cr

    # ------------------------------------------------------------------ checks
    def check(self, cr: ContractRun, call: m.Call, random: bool = False) -> Any:
        from scopecheck.checks.registry import random_baseline, run_check

        key = ("random:" if random else "") + _call_key(call)
        if key not in cr.checks:
            params = {p.key: _py(p.value) for p in call.params}
            seed = cr.contract.seed or 0
            t0 = time.perf_counter()
            fields = asked_fields(cr.contract, key)
            if random:
                cr.checks[key] = random_baseline(call.name, cr.result, params, progress=self.progress, fields=fields)
            else:
                cr.checks[key] = run_check(call.name, cr.result, params, seed=seed, progress=self.progress,
                                           fields=fields)
            cr.seconds += time.perf_counter() - t0
        return cr.checks[key]

    # ------------------------------------------------------------------ expectations
    def _value(self, cr: ContractRun, op: m.Operand, other: m.Operand | None) -> Any:
        r = cr.result
        if isinstance(op, bool) or isinstance(op, (int, float)):
            return op
        if isinstance(op, m.Text):
            return op.value
        if isinstance(op, m.Selector):
            return ("tokens", [r.tokens[p].text.strip() for p in r.positions(op)])
        name = op.name
        if name == "top":
            k = int(op.args[0]) if op.args else 1
            return ("top", r.top(k))
        if name in ("mass", "rank", "attribution"):
            if len(op.args) != 1 or not isinstance(op.args[0], m.Selector):
                raise ContractValidationError(f"{name}(...) takes one selector", op.span,
                                              expected=f'{name}(x["black"])', rule="expect")
            return getattr(r, name)(op.args[0])
        if name == "random":
            if not isinstance(other, m.Call) or other.name in ("top", "mass", "rank", "attribution", "random"):
                raise ContractValidationError("`random` compares with a ranking check on the other side", op.span,
                                              expected="deletion(...).aopc > random.aopc", rule="expect")
            res = self.check(cr, other, random=True)
            return res.fields[op.fields[0]]
        res = self.check(cr, op)
        if not op.fields and (other is None):
            return res
        from scopecheck.checks.catalog import CHECKS

        fld = op.fields[0] if op.fields else CHECKS[name].default_field
        return res.fields[fld]

    def evaluate(self, cr: ContractRun, ex: m.Expectation) -> ExpectationOutcome:
        from scopecheck.dsl.format import fmt_expectation

        text = fmt_expectation(ex)
        if cr.contract.dataset is not None:
            from scopecheck.orchestration.dataset import evaluate_dataset

            return evaluate_dataset(self, cr, ex)
        if cr.members:
            return self._evaluate_family(cr, ex, text)
        if cr.result is None:
            return ExpectationOutcome(text, ex.span.line, False, None, None, cr.error or "the contract did not run")
        try:
            left = self._value(cr, ex.left, ex.right)
            if ex.op is None:
                passed = bool(getattr(left, "passed", False))
                desc = _describe_check(left)
                return ExpectationOutcome(text, ex.span.line, passed, desc, None,
                                          f"{text}: {'holds' if passed else 'FAILED'} ({desc})")
            right = self._value(cr, ex.right, ex.left)
            passed = _compare(left, ex.op, right)
        except ContractError as exc:
            if exc.span == Span():                   # raised without a position: it is this expectation's
                exc.span = ex.span
            return ExpectationOutcome(text, ex.span.line, False, None, None, exc.render())
        except Exception as exc:  # noqa: BLE001 - one expectation's failure is that expectation's
            if self.debug:
                raise
            return ExpectationOutcome(text, ex.span.line, False, None, None, contract_failure(exc, ex.span).render())
        shown_l, shown_r = _show(left), _show(right)
        verdict = "holds" if passed else "FAILED"
        why = ""
        if _not_finite(left) or _not_finite(right):
            why = " (a NaN or infinite value never satisfies an expectation)"
        return ExpectationOutcome(text, ex.span.line, passed, shown_l, shown_r,
                                  f"{text}: {verdict}: measured {shown_l} {ex.op} {shown_r}{why}")


    def _evaluate_family(self, cr: ContractRun, ex: m.Expectation, text: str) -> ExpectationOutcome:
        """An expectation of a map family holds when it holds for every member (each member's
        run records its own outcome for the reports)."""
        outcomes = []
        for mr in cr.members:
            o = self.evaluate(mr, ex)
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


def _compare(left: Any, op: str, right: Any) -> bool:
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
            return left == right
        if op == "!=":
            return left != right
        raise ContractValidationError(f"cannot order texts with {op}", rule="expect")
    a, b = float(left), float(right)
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
