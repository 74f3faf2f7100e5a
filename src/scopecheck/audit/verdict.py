"""The verdict on a claim, and the claim's own ``expect`` clauses about it.

Status, by precedence:

``unsupported``
    the computation does not answer the question asked (self-attribution fallacy or
    another contract mismatch), a reported number is impossible, the method cannot
    compute the stated contract, or the stated SCOPE breaks a contract rule;
``underspecified``
    otherwise, when a SCOPE element is neither stated nor filled by ``use`` or a named
    toolkit (a process only implied by the notation counts as not stated), when the
    computation cannot be classified, or when the claim does not say which question it
    answers. Each missing element is named;
``supported``
    otherwise: every element is stated (or filled, and the audit says from where), the
    computation answers the question, and every reported number is possible.

``reasons`` lists every finding, those that decide the status first.

Claim expectations (evaluated by :func:`evaluate_expectations`)::

    expect verdict == "unsupported"     # also !=
    expect fallacy                      # the self-attribution fallacy is committed
    expect fallacy == 0                 # ... is not (1 / 0)
    expect "score" in unstated          # an element is neither stated nor filled
    expect unstated == 2                # how many are (an implied process is not counted)
"""

from __future__ import annotations

from dataclasses import dataclass

from scopecheck.audit.static import StaticAudit
from scopecheck.dsl.format import fmt_expectation
from scopecheck.spec import model as m

STATUSES = ("supported", "unsupported", "underspecified")


@dataclass(frozen=True)
class Verdict:
    status: str                          # supported | unsupported | underspecified
    reasons: tuple[str, ...]
    unstated: tuple[str, ...] = ()       # elements neither stated nor filled, SCOPE order
    implied: tuple[str, ...] = ()        # elements not stated, only implied by the notation (the process)
    fallacy: bool = False
    impossible: tuple[str, ...] = ()     # messages about impossible reported numbers
    answering_contract: str | None = None  # contract text that answers the question, when it is not answered
    notes: tuple[str, ...] = ()

    @property
    def supported(self) -> bool:
        return self.status == "supported"


def judge(audit: StaticAudit) -> Verdict:
    bad: list[str] = []
    vague: list[str] = []
    if audit.mismatch:
        bad.append(audit.mismatch)
    bad += [n.message for n in audit.impossible]
    if audit.method_message:
        bad.append(audit.method_message)
    bad += [f"the computed SCOPE is not a coherent contract: {e}" for e in audit.inconsistencies]
    if audit.unstated:
        vague.append(f"SCOPE element{'s' if len(audit.unstated) > 1 else ''} not stated: {', '.join(audit.unstated)}")
    for e, why in audit.implied:
        vague.append(f"{e} not stated (only implied: {why})")
    if audit.kind is None and not audit.fallacy:
        vague.append("the computation cannot be classified as a contract from what the claim states")
    if audit.question is None:
        vague.append("the question the claim answers is not stated")
    status = "unsupported" if bad else "underspecified" if vague else "supported"
    answering = audit.answering_text if audit.answers is False else None
    return Verdict(status, tuple(bad + vague), audit.unstated, tuple(e for e, _ in audit.implied), audit.fallacy,
                   tuple(n.message for n in audit.impossible), answering, audit.notes)


# --------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class ExpectOutcome:
    text: str
    line: int
    passed: bool
    measured: object
    explanation: str


def _operand(op: m.Operand | None, audit: StaticAudit, verdict: Verdict) -> tuple[bool, object]:
    """(known, value) of one side of an audit expectation."""
    if op is None:
        return True, None
    if isinstance(op, bool):
        return True, op
    if isinstance(op, (int, float)):
        return True, op
    if isinstance(op, m.Text):
        return True, op.value
    if isinstance(op, m.Call) and not op.called and not op.fields:
        if op.name == "verdict":
            return True, verdict.status
        if op.name == "fallacy":
            return True, audit.fallacy
        if op.name == "unstated":
            return True, verdict.unstated
    return False, None


def _compare(left: object, op: str, right: object) -> bool:
    if op == "in":
        return isinstance(right, tuple) and left in right
    if isinstance(left, tuple) and isinstance(right, (int, float)) and not isinstance(right, bool):
        left = len(left)
    if isinstance(left, bool) and isinstance(right, (int, float)):
        left = int(left)
    if isinstance(left, bool) and isinstance(right, str):
        right = right.lower() in ("true", "yes", "1")
    try:
        return {"==": lambda: left == right, "!=": lambda: left != right, "<": lambda: left < right,
                "<=": lambda: left <= right, ">": lambda: left > right, ">=": lambda: left >= right}[op]()
    except (TypeError, KeyError):
        return False


def evaluate_expectations(claim: m.Claim, audit: StaticAudit, verdict: Verdict) -> tuple[ExpectOutcome, ...]:
    out = []
    for ex in claim.expects:
        text = fmt_expectation(ex)
        kl, left = _operand(ex.left, audit, verdict)
        kr, right = _operand(ex.right, audit, verdict)
        if not (kl and kr):
            out.append(ExpectOutcome(text, ex.span.line, False, None,
                                     "the audit evaluates only `verdict`, `fallacy` and `unstated` in a claim"))
            continue
        if ex.op is None:
            ok = bool(left)
            out.append(ExpectOutcome(text, ex.span.line, ok, left, f"measured {left!r}"))
            continue
        ok = _compare(left, ex.op, right)
        shown = left if not isinstance(left, tuple) else list(left)
        out.append(ExpectOutcome(text, ex.span.line, ok, left,
                                 f"measured {shown!r} {ex.op} {right!r}: {'holds' if ok else 'does not hold'}"))
    return tuple(out)


def has_verdict_expectation(claim: m.Claim) -> bool:
    return any(isinstance(side, m.Call) and side.name == "verdict" and not side.called
               for ex in claim.expects for side in (ex.left, ex.right))
