"""The ``scopecheck`` command line: check, fmt, list, run, audit, matrix.

No traceback reaches a user: contract errors print positioned messages (exit 1);
anything unexpected prints one line (exit 2) unless ``--debug`` is given.

Modules: this one builds the parser and runs a command; ``check`` (check, fmt, list), ``run`` (run)
and ``audit`` (audit, matrix) each add their commands; ``_common`` holds what they share and
imports none of them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from scopecheck.cli import audit, check, run
from scopecheck.cli._common import _print_errors
from scopecheck.errors import ContractError

__all__ = ["main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scopecheck", description="Test harness for attribution contracts (SCOPE).")
    ap.add_argument("--debug", action="store_true", help="show Python tracebacks for internal errors")
    sub = ap.add_subparsers(dest="command", required=True)
    check.add_commands(sub, COMMANDS)
    run.add_commands(sub, COMMANDS)
    audit.add_commands(sub, COMMANDS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ContractError as exc:
        _print_errors(getattr(exc, "errors", [exc]))
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback unless asked
        if args.debug:
            raise
        print(f"scopecheck: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
              file=sys.stderr)
        return 2
