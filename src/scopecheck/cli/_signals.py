"""SIGINT and SIGTERM end the ``scopecheck`` command cleanly: exit 130 / 143, one line ``interrupted``
on stderr, no traceback, at any moment.

Phases of a command process:

* starting (imports, argument parsing; nothing is written yet): a signal exits at once;
* working (the command runs): a signal raises :class:`Interrupted` (a ``KeyboardInterrupt``), so
  ``finally`` blocks and the atomic writers' clean-up run (the writers hold signals back while they
  replace files, so a report is the previous one or the complete new one); ``main`` turns it into
  the exit status. A second signal while that unwinds exits at once;
* done (the command returned; reports written): a signal exits at once with its status. The
  command does not return into the interpreter's shutdown, where a signal may print a traceback
  or be lost (exit 0): :func:`finish` runs the exit handlers itself and ends the process with
  ``os._exit``, checking for a signal that arrived at the last moment.

``main`` called in-process (tests, embedding) installs the handlers only while it runs, restores
the previous ones and returns the status instead of exiting. This module imports nothing heavy.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
STARTING, WORKING, STOPPING, DONE = "starting", "working", "stopping", "done"

_state: dict[str, Any] = {"phase": STARTING, "command": False, "first": None, "late": None, "said": False}


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while a command was working; ``code`` is its exit status (128 + signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.code = 128 + signum


def exit_code(exc: BaseException) -> int:
    return exc.code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


def say_interrupted() -> None:
    """Print ``interrupted`` on stderr, once per process."""
    if _state["said"]:
        return
    _state["said"] = True
    try:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - a closed or reentrant stream: the status still says it
        pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe, or a flush this signal interrupted
            pass


def _exit_now(code: int) -> None:
    say_interrupted()
    _flush()
    os._exit(code)


def _handler(signum: int, frame: Any) -> None:
    phase = _state["phase"]
    if phase == WORKING:
        _state["phase"], _state["first"] = STOPPING, signum
        raise Interrupted(signum)
    if phase == STOPPING and _state["command"]:     # a second signal while the first unwinds
        _exit_now(128 + (_state["first"] or signum))
    if _state["command"]:           # starting (nothing written) or done (everything written)
        _exit_now(128 + signum)
    if _state["late"] is None:      # in-process, after the command: main returns this status
        _state["late"] = signum


def is_command() -> bool:
    """Whether this process is the ``scopecheck`` command (the console script or ``python -m scopecheck.cli``)."""
    argv0 = sys.argv[0] if getattr(sys, "argv", None) else ""
    if os.path.basename(argv0) in ("scopecheck", "scopecheck.exe", "scopecheck-script.py"):
        return True
    orig = list(getattr(sys, "orig_argv", ()))
    return "-m" in orig[:-1] and orig[orig.index("-m") + 1] == "scopecheck.cli"


def _install() -> dict[int, Any] | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    return previous


def install_command() -> None:
    """The command process: handlers from the first import on, for the rest of the process."""
    if not _state["command"] and _install() is not None:
        _state["command"] = True


def begin() -> dict[int, Any] | None:
    """``main`` starts a command: signals now raise :class:`Interrupted`. Returns what :func:`end` restores."""
    previous = None if _state["command"] else _install()
    _state.update(phase=WORKING, first=None, late=None, said=False)
    return previous


def interrupted_while_working() -> int | None:
    """The exit status of a signal that arrived while the command worked, when the command went on
    anyway (a library caught the :class:`Interrupted` it raised and carried on): None when none did."""
    first = _state["first"]
    return None if first is None else 128 + first


def end_of_work() -> None:
    """The command returned (or was interrupted): from here a signal no longer raises."""
    _state["phase"] = DONE


def end(previous: dict[int, Any] | None) -> int | None:
    """``main`` is done: later signals exit at once (the command) or are returned (in-process, with the
    previous handlers restored): the status of a signal that arrived after the command, or None."""
    _state["phase"] = DONE
    if previous is not None:
        for s, h in previous.items():
            signal.signal(s, h)
        _state["phase"] = STARTING
    late, _state["late"] = _state["late"], None
    return None if late is None else 128 + late


def is_command_process() -> bool:
    return bool(_state["command"])


def finish(code: int) -> None:
    """End the command process with ``code``: non-daemon threads joined, exit handlers run, streams
    flushed, then ``os._exit`` -- 128 + the signal instead when one arrives before the end."""
    _state["phase"] = DONE
    shutdown = getattr(threading, "_shutdown", None)
    try:
        if shutdown is not None:
            shutdown()
        import atexit

        atexit._run_exitfuncs()
    except Exception:  # noqa: BLE001 - an exit handler's failure must not turn into a traceback
        pass
    _flush()
    if hasattr(signal, "pthread_sigmask"):  # a signal from here on stays pending instead of being lost
        signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
        pending = signal.sigpending()
        for s in SIGNALS:
            if s in pending:
                _exit_now(128 + s)
    os._exit(code)
