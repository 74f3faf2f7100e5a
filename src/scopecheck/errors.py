"""One exception family for everything a user can get wrong in a contract.

Every error carries a source position and renders as::

    contracts/x.scope:7:14: error[E-disjoint]: E and C overlap on y[<"noir"]
        7 |     fixed    y[<"noir"]
          |              ^^^^^^^^^^
      expected: E and C disjoint (a feature is either attributed or held fixed)
      hint: drop y[<"noir"] from `eligible`, or from `fixed`

Nothing here asserts on user input; nothing prints a traceback.

Every rule id an error carries is an entry of :data:`RULES` (id -> what it is about), the one
list the validator's docstring, the documentation's rule list (``python -m scopecheck.errors`` prints
it) and the tests read.

Two errors are about the engine rather than the text: :class:`MethodRefused` is a method saying,
on purpose, that it cannot run this problem (positioned on the contract's ``method`` line as
"`name` cannot run this contract: ..."); :class:`InternalError` is anything else a method raised,
a bug, reported as one ("internal error ...; rerun with --debug"), never relabelled as a refusal.
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


#: Every rule id an error can carry (shown as ``error[rule]``), id -> one line on what it is about,
#: grouped as the pipeline meets them: reading the file, validating the contract (DESIGN section 2),
#: the engine after tokenization, the run. An error's ``rule`` is one of these keys (a test walks
#: ``src/`` and checks every ``rule=...`` it finds).
RULES: dict[str, str] = {
    # reading a file
    "io": "the file or folder cannot be read (missing, a permission, not a regular file)",
    "encoding": "the file is not UTF-8 text",
    "syntax": "the text is not a contract: the grammar cannot read it",
    "number": "a numeric literal that cannot be read (too many digits, not finite)",
    "score": "a score expression the grammar reads but cannot be a score (`logprob(...)` arguments)",
    "selector": "a selector that names nothing (a diffusion state or stage outside the chain, a reversed range)",
    "chat": "chat prompt messages not named by a role",
    "duplicate": "a name, parameter or statement given twice",
    "string": "a string literal with a lone surrogate (`\\ud800`)",
    "source": "a claim's `source { ... }` block or `states` line that cannot be read (a field missing or unknown, a year that is not 4 digits)",
    "fmt": "`scopecheck fmt`: the canonical form cannot express this file exactly",
    "schema": "the normalized spec does not satisfy the published JSON Schema",
    # validating a contract (DESIGN section 2)
    "missing": "a SCOPE element, the model, prompt, output or method is neither stated nor filled by `use`",
    "disjoint": "E and C overlap: a feature is either attributed or held fixed",
    "coverage": "an autoregressive input token is in neither E nor C",
    "causality": "an output explained by itself or a later output (`y[t]` by `y[>=t]`, `z[t]` by `z[<=t]`)",
    "score-output": "the score S does not score the output O, or the conditioning does not match the process",
    "process-features": "features of the wrong process (states or stages without diffusion, prefixes without AR)",
    "method-contract": "the method does not support this contract kind",
    "protocol": "a check uses another contract's protocol",
    "text-anchor": "a text anchor that does not occur, or occurs more than once, where it must be unique",
    "symbolic": "a symbolic index (`T`, a name) where a number is needed",
    "params": "a method, check or process parameter that is unknown, of the wrong type or out of range",
    "use-params": "a standard contract's parameter (`use prompt_conditioned(target = ...)`) that is not allowed",
    "unknown-name": "a name (standard contract, method, check, process, model, ...) that does not exist",
    "expect": "an expectation that cannot be evaluated on this contract (its check, aggregate or value)",
    "dataset": "a dataset statement or file that cannot be used (its path, format, fields or split)",
    "output": "an output that cannot be scored (empty, or not the shape the process needs)",
    "generation": "the output's decoding rule generated nothing usable",
    "registry": "a method or check registration that is malformed or whose implementation cannot be imported",
    # the engine, after tokenization
    "model": "the model cannot be loaded or cannot run this process (weights, config, remote code, mask token)",
    "device": "the requested device is not available",
    "dtype": "an unknown or unsupported dtype",
    "threads": "an unknown thread policy",
    "context": "the prompt and output are longer than the model's context window",
    "tokenization": "the output's tokens change when joined to the prompt (an error under --strict)",
    "operator": "a perturbation operator the model has no token for",
    "diffusion": "a diffusion contract the chain cannot realise (schedule, adapter, estimator, sampling)",
    "map": "an external map file that cannot be used (its path, its tokens, scores outside E)",
    "snapshot": "an attribution snapshot that cannot be used (its file, its path, how it is stated)",
    "budget": "the method's estimated work exceeds --max-evaluations",
    "method": "the method refuses this contract (MethodRefused): too many features, no attention, ...",
    "non-finite": "an attribution map, score or check value that is NaN or infinite",
    "engine": "a contract given to the wrong engine entry point (a map family, a diffusion contract)",
    # running
    "truth": "a dataset example's truth item that cannot be placed on its tokens",
    "store": "the run store cannot be read or written (another run's store, a corrupt record)",
    "run": "an exception while running the contract, placed on it (an internal error: rerun with --debug)",
    "results": "a file that is not a results JSON, or cannot be read back (`scopecheck compare`, `scopecheck.load_results`): not JSON, not valid against its schema, a key missing or mistyped",
    # the Python API
    "extra": "a feature whose optional dependency is not installed (`pip install 'scopecheck[NAME]'`)",
}


def rule_list() -> str:
    """The documentation's list of rule ids (``python -m scopecheck.errors`` prints it; ``python
    docs/gen.py`` writes it into docs/reference/rules.md), from :data:`RULES`."""
    return "".join(f"- `{rid}`: {text}\n" for rid, text in RULES.items())


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


def _render_unplaced(err: ContractError) -> str | None:
    """An error raised where no contract position is known (inside a method, by a settings check)
    as ``kind: message`` (then what was expected and a hint), not at a made-up ``<string>:1:1``;
    ``None`` once it has a position or a source (rendered as usual then)."""
    if err.span != Span() or err.source is not None:
        return None
    out = [visible(f"{err.kind}: {err.message}")]
    out += [visible(f"  expected: {err.expected}")] if err.expected else []
    out += [visible(f"  hint: {err.hint}")] if err.hint else []
    return "\n".join(out)


class MethodRefused(ContractError, ValueError):
    """An attribution method declining, on purpose, to run this problem or these parameters
    (too many features for exact enumeration, no attention probabilities, a baseline the model
    has no token for). Raised inside a method, where the contract's position is not known; the
    engine (``scopecheck.engine.run``) catches it by name and reports it on the contract's
    ``method`` line as "`name` cannot run this contract: ...". A ``ValueError`` too, for callers
    of the Python API (``run_method``) that catch one."""

    kind = "method refused"

    def __init__(self, message: str, span: Span | None = None, *, expected: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, span, expected=expected, hint=hint, rule="method")

    def render(self) -> str:
        return _render_unplaced(self) or super().render()


class Unavailable(MethodRefused, KeyError):
    """A refusal because something the method looks up does not exist for this problem: a
    perturbation operator or IG baseline the model has no token for, the stages a stage method
    needs. A ``KeyError`` too (a lookup that failed), for callers that catch one."""


class InvalidSettings(ContractValidationError, ValueError):
    """A process setting the engine cannot use (an unknown denoiser adapter, diffusion steps that
    are not a multiple of blocks), raised where the settings are checked, without a position;
    the compiler that knows the statement catches it by name and positions it. A ``ValueError``
    too, for callers of the Python API."""

    def __init__(self, message: str, span: Span | None = None, *, expected: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, span, expected=expected, hint=hint, rule="params")

    def render(self) -> str:
        return _render_unplaced(self) or super().render()


class ResultsError(ContractError, ValueError):
    """A results document (``scopecheck run --json``) that :func:`scopecheck.load_results` cannot
    read: its file, its JSON position, or the JSON path of a key that is missing or mistyped."""

    kind = "results error"

    def __init__(self, message: str, span: Span | None = None, *, source: str | None = None,
                 expected: str | None = None, hint: str | None = None, rule: str = "results") -> None:
        super().__init__(message, span, source=source, expected=expected, hint=hint, rule=rule)


class MissingExtra(ContractError, ImportError):
    """A feature of the Python API whose optional dependency is not installed (``to_pandas()``
    without pandas): names the package and the extra that installs it. An ``ImportError`` too."""

    kind = "missing extra"

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(f"{feature} needs {package}, which is not installed", rule="extra",
                         hint=f"pip install 'scopecheck[{extra}]'")
        self.feature, self.package, self.extra = feature, package, extra

    def render(self) -> str:
        return _render_unplaced(self) or super().render()


class InternalError(RuntimeError):
    """A method raised something other than a refusal: a bug in scopecheck or in a registered
    method, never the contract's fault and never relabelled as a refusal. Deliberately not a
    :class:`ContractError`: the runner's contract isolation places it on the contract, and
    ``--debug`` re-raises it with the original exception chained as its cause."""

    def __init__(self, method: str, exc: BaseException) -> None:
        super().__init__(f"internal error in method `{method}`: {type(exc).__name__}: {exc} "
                         "(a bug, not a refusal of this contract); rerun with --debug for the traceback")
        self.method = method
        self.original = exc


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


__all__ = ["ContractError", "ContractErrors", "ContractSyntaxError", "ContractValidationError", "ERROR_LIMIT",
           "InternalError", "InvalidSettings", "LINE_WINDOW", "MethodRefused", "MissingExtra", "MoreErrors", "RULES",
           "ResultsError", "SchemaError",
           "ScopeWarning", "Span", "Unavailable", "UnknownNameError", "cap_errors", "did_you_mean", "error_count",
           "reraise_interrupt", "rule_list", "source_lines", "unknown_name", "visible"]


if __name__ == "__main__":  # python -m scopecheck.errors: the documentation's list of rule ids
    print(rule_list(), end="")
