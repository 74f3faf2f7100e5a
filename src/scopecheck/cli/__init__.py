"""The ``scopecheck`` command line: check, fmt, list, run, audit, matrix, compare.

No traceback reaches a user: contract errors print positioned messages (exit 1);
anything unexpected prints one line (exit 2) unless ``--debug`` is given.

Modules: this one builds the parser and runs a command; ``check`` (check, fmt, list), ``run`` (run)
``audit`` (audit, matrix) and ``compare`` (compare) each add their commands; ``_common`` holds what they share and
imports none of them; ``_signals`` makes SIGINT and SIGTERM end a command with 130 / 143 and one line,
``interrupted``, at any moment (its handlers are installed before this package imports anything else
when the process is the ``scopecheck`` command).
"""

from __future__ import annotations

from scopecheck.cli import _signals

if _signals.is_command():
    _signals.install_command()

import argparse  # noqa: E402 - after the signal handlers
import os  # noqa: E402
import sys  # noqa: E402
from typing import Callable  # noqa: E402

from scopecheck.cli import audit, check, compare, run  # noqa: E402
from scopecheck.cli._common import print_errors  # noqa: E402
from scopecheck.errors import ContractError  # noqa: E402

__all__ = ["main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scopecheck", description="Test harness for attribution contracts (SCOPE).")
    ap.add_argument("--debug", action="store_true", help="show Python tracebacks for internal errors")
    ap.add_argument("--threads", default=None, metavar="POLICY",
                    help="CPU threads while a model runs: auto (default; models under 10M parameters "
                         "single-threaded, OMP_NUM_THREADS/MKL_NUM_THREADS respected), torch (leave torch's "
                         "setting), or a number; also SCOPECHECK_THREADS")
    sub = ap.add_subparsers(dest="command", required=True)
    check.add_commands(sub, COMMANDS)
    run.add_commands(sub, COMMANDS)
    audit.add_commands(sub, COMMANDS)
    compare.add_commands(sub, COMMANDS)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status. In the ``scopecheck`` command process this does not return:
    it ends the process (:func:`scopecheck.cli._signals.finish`), so that a signal during the
    interpreter's shutdown cannot print a traceback or exit 0."""
    previous = _signals.begin()
    try:
        code = _dispatch(argv)
    except SystemExit as exc:           # argparse: --help, a bad option
        if not _signals.is_command_process():
            _signals.end(previous)
            raise
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    late = _signals.end(previous)
    if late is not None:                # in-process: a signal after the command still says so
        _signals.say_interrupted()
        code = late
    if _signals.is_command_process():
        _signals.finish(code)
    return code


def _dispatch(argv: list[str] | None) -> int:
    try:
        ap = build_parser()
        args = ap.parse_args(argv)
        try:
            from scopecheck.engine import threads

            threads.set_policy(args.threads or os.environ.get("SCOPECHECK_THREADS") or "auto")
            code = COMMANDS[args.command](args)
        except ContractError as exc:
            print_errors(getattr(exc, "errors", [exc]))
            code = 1
        except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback unless asked
            if args.debug:
                raise
            print(f"scopecheck: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
                  file=sys.stderr)
            code = 2
        _signals.end_of_work()          # a signal before this line is caught below; after it, exits with its status
        swallowed = _signals.interrupted_while_working()
        if swallowed is not None:       # the interrupt was caught inside a library: still an interrupt
            _signals.say_interrupted()
            return swallowed
        return code
    except KeyboardInterrupt as exc:    # SIGINT / SIGTERM while working (Interrupted), or a plain Ctrl-C
        _signals.end_of_work()
        _signals.say_interrupted()
        return _signals.exit_code(exc)
