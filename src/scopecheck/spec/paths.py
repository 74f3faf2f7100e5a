"""Files a contract names (a dataset file, an external map, a snapshot): the one rule for where
they may lie.

A path written in a contract is relative to the contract file's folder, and the file it names
must lie inside that folder's tree. The rule holds for every spelling: relative (``../``),
absolute (``/etc/passwd``), home-relative (``~/.bashrc``) and through symlinks, it is the
resolved file that must lie inside the folder (the folder itself is not a file inside it).
``allow_outside`` lifts the rule; it is the caller's (the command line's
``--allow-outside-data``), never a contract statement's, since contract files are data.
Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from scopecheck.errors import ContractValidationError, Span

OUTSIDE_HINT = ("copy the file into the contract's folder (a symlink counts as the file it points to); a run may "
                "lift the rule with --allow-outside-data (a command-line choice, never a contract's)")


def contract_file(spelled: str, base_dir: Path | None, span: Span | None, *, what: str, rule: str, expected: str,
                  must_exist: bool = True, allow_outside: bool = False, allow_dir: bool = False) -> Path:
    """The resolved file ``spelled`` names, relative to ``base_dir`` (the contract file's folder;
    the working directory when None) and inside its tree unless ``allow_outside``.

    ``what`` names the file in errors (``"dataset file"``), ``rule`` is the error's rule id and
    ``expected`` the kind of file (``"a .jsonl or .csv file"``). The file must exist when
    ``must_exist`` (a snapshot about to be written need not); an existing path must be a regular
    file, or a folder where ``allow_dir`` (a Hugging Face ``save_to_disk`` dataset). Raises
    :class:`~scopecheck.errors.ContractValidationError` at ``span``."""
    p = Path(spelled).expanduser()
    base = (base_dir or Path(".")).resolve()
    full = (p if p.is_absolute() else base / p).resolve()
    if not allow_outside and base not in full.parents:
        spelling = "an absolute path" if Path(spelled).is_absolute() else \
            "a home-relative path" if spelled.startswith("~") else "a path"
        raise ContractValidationError(f"{what} {spelled!r} is {spelling} outside the contract's folder ({full})", span,
                                      expected=f"a file inside {str(base)!r}, the folder of the contract file",
                                      hint=OUTSIDE_HINT, rule=rule)
    if full.exists() and not full.is_file() and not (allow_dir and full.is_dir()):
        raise ContractValidationError(f"{what} {str(full)!r} is not a regular file", span, expected=expected,
                                      rule=rule)
    if must_exist and not full.exists():
        raise ContractValidationError(f"{what} {str(full)!r} does not exist", span, expected=expected, rule=rule)
    return full


__all__ = ["OUTSIDE_HINT", "contract_file"]
