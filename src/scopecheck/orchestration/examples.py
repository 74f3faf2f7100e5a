"""One example of a dataset contract: its own contract run and the named values it contributes.

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


:func:`compute_example` is what every executor runs per example.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scopecheck.datasets import example_contract
from scopecheck.dsl.format import fmt_expectation, fmt_operand
from scopecheck.errors import ContractError, ContractValidationError
from scopecheck.orchestration import expect
from scopecheck.orchestration.records import ContractRun
from scopecheck.spec import model as m

if TYPE_CHECKING:
    from scopecheck.datasets import Example
    from scopecheck.orchestration.protocols import Driver


@dataclass(frozen=True)
class Inner:
    key: str
    kind: str                   # call | random | compare | plain
    obj: Any                    # Call | Comparison | Expectation
    partner: m.Call | None = None


def canonical_text(o: Any) -> str:
    """A clause or an operand in canonical form (what value keys are made of)."""
    return fmt_expectation(o) if isinstance(o, m.Expectation) else fmt_operand(o)


def random_key(call: m.Call, partner: m.Call) -> str:
    base = m.Call(partner.name, partner.args, partner.params, (), True)
    return f"random:{canonical_text(base)}.{call.fields[0] if call.fields else ''}"


def plain_key(contract: m.Contract, ex: m.Expectation) -> str:
    """The value key of a plain expectation: its index in the contract and its canonical text
    (the same in the driver and in a worker that parsed the contract again)."""
    i = next((j for j, e in enumerate(contract.expects) if e is ex), None)
    if i is None:
        i = contract.expects.index(ex)
    return f"expect[{i}] {canonical_text(ex)}"


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
                    out.setdefault(canonical_text(a), Inner(canonical_text(a), "compare", a))
                elif a.name == "random":
                    partner = expect.partner_of(agg, ex)
                    if partner is not None:
                        k = random_key(a, partner)
                        out.setdefault(k, Inner(k, "random", a, partner))
                else:
                    out.setdefault(canonical_text(a), Inner(canonical_text(a), "call", a))
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


def _position_set(runner: Driver, sub: ContractRun, o: Any, truth: list[int] | None, c: m.Comparison) -> set[int]:
    if _uses_truth(o):
        if truth is None:
            raise ContractError("this example has no ground truth", c.span, rule="dataset")
        return set(truth)
    if isinstance(o, m.Call) and o.name == "top":
        assert sub.result is not None   # example_values runs only on an example that computed
        return {t.position for t in sub.result.ranking()[:expect.top_count(o)]}
    raise ContractValidationError("`truth` compares with top(k)", c.span,
                                  expected="top(3) in truth, truth in top(2)", rule="expect")


def compare_truth(runner: Driver, sub: ContractRun, c: m.Comparison, truth: list[int] | None) -> bool:
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


def example_values(runner: Driver, sub: ContractRun, ex: Example, items: list[Inner]) -> dict[str, Any]:
    """The example's value of every item (None where it could not be computed): a plain
    expectation's outcome, a check field, a comparison."""
    s = runner.settings
    values: dict[str, Any] = {}
    truth: Any = None
    # random baselines first: each plans the rows of the map's own ranking too, so the check beside
    # it then reads them from the row cache instead of making its own model call
    for it in sorted(items, key=lambda i: i.kind != "random"):
        try:
            if it.kind == "plain":
                values[it.key] = bool(runner.evaluate(sub, it.obj).passed)
            elif it.kind == "random":
                values[it.key] = _plain(expect.value(sub, it.obj, it.partner, progress=s.progress))
            elif it.kind == "call":
                values[it.key] = _plain(expect.value(sub, it.obj, None, progress=s.progress))
            else:
                c: m.Comparison = it.obj
                if _uses_truth(c.left) or _uses_truth(c.right):
                    if truth is None:
                        truth = (truth_positions(sub, ex),)
                    values[it.key] = compare_truth(runner, sub, c, truth[0])
                else:
                    values[it.key] = bool(expect.compare(expect.value(sub, c.left, c.right, progress=s.progress),
                                                         c.op, expect.value(sub, c.right, c.left,
                                                                            progress=s.progress)))
        except ContractError:
            values[it.key] = None
        except Exception:  # noqa: BLE001 - one value of one example; recorded as missing
            if s.debug:
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


def compute_example(runner: Driver, contract: m.Contract, ex: Example,
                    items: list[Inner]) -> tuple[ContractRun, dict[str, Any], float, str | None]:
    """Run one example as its own contract: ``(its ContractRun, its values, seconds, its error)``;
    the error is the run's, or the row's when its truth names no prompt token."""
    t0 = time.perf_counter()
    sub = runner.execute(example_contract(contract, ex))
    sub.asks = tuple(contract.expects)        # its checks serve the dataset's aggregates
    error = sub.error or _truth_error(sub, ex, items)
    if sub.result is None or error is not None:
        values = {it.key: None for it in items}
    else:
        values = example_values(runner, sub, ex, items)
    return sub, values, time.perf_counter() - t0, error


def argument_key(agg: m.Aggregate, a: Any, ex: m.Expectation) -> str:
    """The value key of argument ``a`` of aggregate ``agg`` in clause ``ex`` (a ``random.<field>``
    by the check it stands beside; ``""`` when it stands beside none)."""
    if isinstance(a, m.Call) and a.name == "random":
        p = expect.partner_of(agg, ex)
        return random_key(a, p) if p is not None else ""
    return canonical_text(a)


__all__ = ["Inner", "argument_key", "canonical_text", "compare_truth", "compute_example", "example_values",
           "inner_items", "plain_key", "random_key", "truth_positions"]
