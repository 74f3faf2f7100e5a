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

from dataclasses import dataclass


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
        sp = self.span
        tag = f"{self.kind}[{self.rule}]" if self.rule else self.kind
        out = [f"{sp}: {tag}: {self.message}"]
        if self.source is not None:
            lines = self.source.splitlines()
            if 1 <= sp.line <= len(lines):
                text = lines[sp.line - 1]
                width = len(str(sp.line))
                out.append(f"  {sp.line:>{width}} | {text}")
                end = sp.end_column if sp.end_line == sp.line else len(text) + 1
                carets = max(1, min(end, len(text) + 1) - sp.column)
                out.append(f"  {'':>{width}} | {' ' * (sp.column - 1)}{'^' * carets}")
        if self.expected:
            out.append(f"  expected: {self.expected}")
        if self.hint:
            out.append(f"  hint: {self.hint}")
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
        n = len(self.errors)
        body = "\n".join(e.render() for e in self.errors)
        return f"{body}\n{n} error{'s' if n != 1 else ''}"


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
