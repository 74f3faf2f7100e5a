"""Helpers the CLI's command modules share; this module imports none of them."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def print_errors(errors) -> None:
    err = sys.stderr
    for e in errors:
        print(e.render(), file=err)
        print(file=err)


def atomic_write(path: Path, text: str) -> None:
    """Replace the file at ``path`` atomically (:func:`scopecheck.runtime.files.atomic_write_text`); a
    symbolic link keeps pointing where it did and its target is what is replaced."""
    from scopecheck.runtime.files import atomic_write_text

    atomic_write_text(os.path.realpath(path), text)


def destination_problems(files: dict[str, str | None], folders: dict[str, str | None],
                          report_files: tuple[str, ...] = ()) -> list[str]:
    """One line per output destination scopecheck will not write (option -> path; None or '-': none),
    checked before any computation (:mod:`scopecheck.runtime.files`)."""
    from scopecheck.runtime.files import DestinationError, check_file, check_folder

    problems = []
    for option, path in files.items():
        if path not in (None, "-"):
            try:
                check_file(path, option)
            except DestinationError as exc:
                problems.append(str(exc))
    for option, path in folders.items():
        if path not in (None, "-"):
            try:
                check_folder(path, option, files=report_files if option.endswith("report") else ())
            except DestinationError as exc:
                problems.append(str(exc))
    return problems


def refuse(problems: list[str]) -> int:
    for msg in problems:
        print(f"scopecheck: {msg}", file=sys.stderr)
    return 1
