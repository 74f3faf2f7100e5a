"""Read contract files: parse, validate and schema-check, collecting every error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scopecheck.dsl.parser import parse_text
from scopecheck.errors import ContractError, ContractErrors, Span
from scopecheck.spec import model as m
from scopecheck.spec.jsonio import schema_errors
from scopecheck.spec.validate import validate

SUFFIX = ".scope"


@dataclass(frozen=True)
class SourceFile:
    path: str
    text: str
    documents: tuple[m.Document, ...]
    errors: tuple[ContractError, ...]


def check_text(text: str, path: str = "<string>") -> SourceFile:
    """Parse and validate; never raises for bad contract text (errors are returned)."""
    text = text.removeprefix("\ufeff")
    try:
        docs = parse_text(text, path)
    except ContractError as exc:
        return SourceFile(path, text, (), (exc.with_source(text),))
    errors: list[ContractError] = []
    seen: dict[str, m.Document] = {}
    for d in docs:
        if d.name in seen:
            first = seen[d.name]
            errors.append(ContractError(f"a second {type(d).__name__.lower()} named {d.name!r} (the first is at line "
                                        f"{first.span.line}): results and pytest items are keyed by name",
                                        d.spans.get("name", d.span), expected="distinct names in one file",
                                        rule="duplicate").with_source(text))
        seen.setdefault(d.name, d)
        found = validate(d)
        if not found:
            found = list(schema_errors(d))
        errors += [e.with_source(text) for e in found]
    return SourceFile(path, text, tuple(docs), tuple(errors))


def check_file(path: str | Path) -> SourceFile:
    """Read a ``.scope`` file and check it as :func:`check_text` does; a file that cannot be read
    or is not UTF-8 text is a positioned error (``io``, ``encoding``) in the result, not an exception."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return SourceFile(str(path), "", (), (ContractError(f"not UTF-8 text: {exc.reason}", Span(str(path)),
                                                             rule="encoding"),))
    except OSError as exc:
        return SourceFile(str(path), "", (), (ContractError(f"cannot read: {exc.strerror}", Span(str(path)),
                                                             rule="io"),))
    return check_text(text, str(path))


def load_text(text: str, path: str = "<string>") -> list[m.Document]:
    """Parse and validate; raise :class:`ContractErrors` listing every problem."""
    sf = check_text(text, path)
    if sf.errors:
        raise ContractErrors(list(sf.errors))
    return list(sf.documents)


def load_file(path: str | Path) -> list[m.Document]:
    """Read, parse and validate a ``.scope`` file; raise :class:`ContractErrors` listing every problem."""
    sf = check_file(path)
    if sf.errors:
        raise ContractErrors(list(sf.errors))
    return list(sf.documents)


def is_contract_path(source: object) -> bool:
    """A ``.scope`` file to read (a ``Path``, or one line of text ending in ``.scope``), not contract text."""
    return isinstance(source, Path) or (isinstance(source, str) and source.endswith(SUFFIX) and "\n" not in source)


def load_contracts(source: m.Contract | str | Path) -> list[m.Contract]:
    """The contracts of a spec, contract text or a ``.scope`` path (a bad file raises its errors,
    as :func:`load_file` / :func:`load_text`); the file's other documents (audits) are left out."""
    if isinstance(source, m.Contract):
        return [source]
    if is_contract_path(source):
        docs = load_file(source)
    else:
        docs = load_text(str(source))
    return [d for d in docs if isinstance(d, m.Contract)]


def collect(paths: list[str] | list[Path]) -> tuple[list[Path], list[ContractError]]:
    """Contract files under ``paths`` (folders searched recursively for ``*.scope``), sorted."""
    files: list[Path] = []
    errors: list[ContractError] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += sorted(q for q in p.rglob(f"*{SUFFIX}") if q.is_file())
        elif p.is_file():
            files.append(p)
        else:
            errors.append(ContractError("no such file or folder", Span(str(raw)), rule="io"))
    return files, errors
