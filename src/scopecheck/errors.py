"""One exception family for everything a user can get wrong in a contract.

Every error carries a source position and renders as::

    contracts/x.scope:7:14: error[E-disjoint]: E and C overlap on y[<"noir"]
        7 |     fixed    y[<"noir"]
          |              ^^^^^^^^^^
      expected: E and C disjoint (a feature is either attributed or held fixed)
      hint: drop y[<"noir"] from `eligible`, or from `fixed`

Nothing here asserts on user input; nothing prints a traceback.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

#: Lark counts lines by "\n" only, so every line-based view of a source does too (``str.splitlines``
#: would also break at \r, \f, \v, \x1c-\x1e, \x85, \u2028 and \u2029 and put carets on the wrong line).
def source_lines(text: str) -> list[str]:
    """The lines of ``text`` as the parser numbers them (``\n`` only; a CRLF's ``\r`` dropped)."""
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


@lru_cache(maxsize=16)
def _shared_lines(text: str) -> tuple[str, ...]:
    """:func:`source_lines` of a source without its byte-order mark, split once per source and shared
    by every error rendered against it (a file's errors hold the same string, whose hash is cached)."""
    return tuple(source_lines(text.removeprefix("\ufeff")))


def visible(text: str) -> str:
    """``text`` safe for a terminal: control and format characters (escape sequences, line and
    paragraph separators, a byte-order mark) shown as ``\\xNN`` / ``\\uNNNN``; tabs as one space."""
    out = []
    for ch in text:
        if ch == "\t":
            out.append(" ")
        elif ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return "".join(out)


def _width(ch: str) -> int:
    """Terminal columns of one character as :func:`visible` shows it."""
    if ch == "\t":
        return 1
    cat = unicodedata.category(ch)
    if cat in ("Cc", "Cf", "Zl", "Zp", "Cs"):
        return len(visible(ch))
    if cat in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


#: characters of a source line shown under an error before it is cut to a window around the caret
LINE_WINDOW = 200


@dataclass(frozen=True)
class Span:
    """A source region, 1-based lines and columns; ``end_*`` is exclusive."""

    path: str = "<string>"
    line: int = 1
    column: int = 1
    end_line: int = 1
    end_column: int = 2

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class ContractError(Exception):
    """Root of every error about a contract or claim file."""

    kind = "error"

    def __init__(
        self,
        message: str,
        span: Span | None = None,
        *,
        source: str | None = None,
        expected: str | None = None,
        hint: str | None = None,
        rule: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.span = span or Span()
        self.source = source
        self.expected = expected
        self.hint = hint
        self.rule = rule

    def with_source(self, source: str) -> "ContractError":
        if self.source is None:
            self.source = source
        return self

    def render(self) -> str:
        """``path:line:col: kind[rule]: message``, the source line with carets under the span
        (aligned by display width: wide characters take two columns, combining marks none,
        control characters are shown escaped), then what was expected and a hint."""
        sp = self.span
        tag = f"{self.kind}[{self.rule}]" if self.rule else self.kind
        out = [visible(f"{sp}: {tag}: {self.message}")]
        if self.source is not None:
            lines = _shared_lines(self.source)
            if 1 <= sp.line <= len(lines):
                text = lines[sp.line - 1]
                width = len(str(sp.line))
                col = min(max(sp.column, 1), len(text) + 1)
                end = sp.end_column if sp.end_line == sp.line else len(text) + 1
                end = max(col + 1, min(end, len(text) + 1))
                # a long line is shown as a window around the caret, so that fifty errors on one
                # 60 KB line print fifty short lines
                a, b, lead, tail = 0, len(text), "", ""
                if len(text) > LINE_WINDOW:
                    a = max(0, col - 1 - LINE_WINDOW // 4)
                    b = min(len(text), a + LINE_WINDOW)
                    lead, tail = ("..." if a > 0 else ""), ("..." if b < len(text) else "")
                out.append(f"  {sp.line:>{width}} | {lead}{visible(text[a:b])}{tail}")
                pad = len(lead) + sum(_width(c) for c in text[a: col - 1])
                carets = max(1, sum(_width(c) for c in text[col - 1: min(end, b + 1) - 1]))
                out.append(f"  {'':>{width}} | {' ' * pad}{'^' * carets}")
        if self.expected:
            out.append(visible(f"  expected: {self.expected}"))
        if self.hint:
            out.append(visible(f"  hint: {self.hint}"))
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


class ContractSyntaxError(ContractError):
    """The text is not a contract: the grammar could not read it."""

    kind = "syntax error"


class ContractValidationError(ContractError):
    """The contract reads but breaks a SCOPE rule (DESIGN section 2)."""

    kind = "invalid contract"


class UnknownNameError(ContractValidationError):
    """A name (standard contract, method, check, process, model, ...) that does not exist."""

    kind = "unknown name"


class SchemaError(ContractError):
    """The normalized spec does not satisfy the published JSON Schema."""

    kind = "schema violation"


class ContractErrors(ContractError):
    """Several errors found in one pass; each keeps its own position."""

    def __init__(self, errors: list[ContractError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.message, first.span, source=first.source, rule=first.rule)

    def render(self) -> str:
        n = sum(e.count if isinstance(e, MoreErrors) else 1 for e in self.errors)
        body = "\n".join(e.render() for e in self.errors)
        return f"{body}\n{n} error{'s' if n != 1 else ''}"


class MoreErrors(ContractError):
    """The errors of one rule beyond those shown: one line, at the first one left out."""

    kind = "note"

    def __init__(self, rule: str | None, count: int, span: Span | None = None) -> None:
        super().__init__(f"and {count} more error{'s' if count != 1 else ''} of the same kind (the next one is here)",
                         span, rule=rule)
        self.count = count

    def render(self) -> str:
        return visible(f"{self.span}: {self.kind}[{self.rule or 'error'}]: {self.message}")


def reraise_interrupt(exc: BaseException) -> None:
    """Re-raise the ``KeyboardInterrupt`` (Ctrl-C, or SIGINT/SIGTERM in the command) that a library
    turned into an ordinary exception (transformers' lazy imports re-raise what interrupted them as
    a ``RuntimeError``), so that a broad ``except Exception`` never reports an interrupt as the
    contract's error; returns when ``exc``'s cause/context chain holds none."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            raise e
        seen.add(id(e))
        e = e.__cause__ or e.__context__


#: errors shown per contract; each rule gets its first ones before any rule gets more
ERROR_LIMIT = 50


def error_count(errors: list[ContractError]) -> int:
    """How many errors ``errors`` stands for: a :class:`MoreErrors` line counts the errors it
    summarises, every other error counts one."""
    return sum(e.count if isinstance(e, MoreErrors) else 1 for e in errors)


def cap_errors(errors: list[ContractError], limit: int = ERROR_LIMIT) -> list[ContractError]:
    """At most ``limit`` of ``errors`` (in source order), shared fairly among rules: every rule
    keeps its first errors, the quota being the largest that fits (water-filling); each rule with
    errors left out gets one :class:`MoreErrors` line, at the first one left out."""
    if len(errors) <= limit:
        return list(errors)
    ordered = sorted(errors, key=lambda e: (e.span.line, e.span.column))
    by_rule: dict[str | None, list[ContractError]] = {}
    for e in ordered:
        by_rule.setdefault(e.rule, []).append(e)
    counts = [len(v) for v in by_rule.values()]
    quota = 0   # the largest per-rule quota that fits (at most ``limit``), then the spare to the earliest rules
    while quota < limit and sum(min(n, quota + 1) for n in counts) <= limit:
        quota += 1
    spare = limit - sum(min(len(v), quota) for v in by_rule.values())
    keep: list[ContractError] = []
    for rule, errs in by_rule.items():   # dict order: rules by their first error's position
        q = min(len(errs), quota)
        if q < len(errs) and spare > 0:
            q, spare = q + 1, spare - 1
        keep += errs[:q]
        if q < len(errs):
            more = MoreErrors(rule, len(errs) - q, errs[q].span)
            more.source = errs[q].source
            keep.append(more)
    return sorted(keep, key=lambda e: (e.span.line, e.span.column, isinstance(e, MoreErrors)))


def did_you_mean(name: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def unknown_name(what: str, name: str, known: list[str] | tuple[str, ...], span: Span | None) -> UnknownNameError:
    return UnknownNameError(
        f"unknown {what} `{name}`",
        span,
        expected=f"one of: {', '.join(sorted(known))}",
        hint=did_you_mean(name, known),
        rule="unknown-name",
    )


class ScopeWarning(UserWarning):
    """Something a result's reader should know that does not make it wrong (a tokenization that
    changes when joined, an IG integral that has not converged, a replaced default operator)."""
