"""Progress of long phases: a bar on a terminal, rate-limited lines otherwise (torch-free)."""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time
from typing import Any, Iterator

#: Spellings of a switch that is on / off (``$SCOPECHECK_PROGRESS``, a method's bool parameter).
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})

#: Environment switch for progress when the caller does not say: 1/true/on or 0/false/off.
PROGRESS_ENV = "SCOPECHECK_PROGRESS"
#: Seconds between two progress lines of one phase when the stream is not a terminal.
LOG_INTERVAL = 10.0

_PHASE: contextvars.ContextVar["Progress | None"] = contextvars.ContextVar("scopecheck_phase", default=None)


def progress_enabled(requested: bool | None = None) -> bool:
    """Whether a long phase reports progress: ``requested`` when given; else ``$SCOPECHECK_PROGRESS``
    when set; else off inside pytest (``PYTEST_CURRENT_TEST``, inherited by subprocesses) and on
    elsewhere (a bar on a terminal, a line per ``LOG_INTERVAL`` seconds otherwise)."""
    if requested is not None:
        return bool(requested)
    env = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if env in TRUE_WORDS:
        return True
    if env in FALSE_WORDS:
        return False
    return "PYTEST_CURRENT_TEST" not in os.environ


class Progress:
    """Progress of one long phase (a method's scoring, a check, a random baseline).

    On a terminal it is a tqdm bar (removed when done); on any other stream (CI logs, files)
    it writes ``scopecheck: <desc>: <done>/<total> <unit>s (<seconds> s)`` at most once per
    ``LOG_INTERVAL`` seconds and one closing line with the totals, so a phase shorter than the
    interval writes exactly one line. A phase that runs longer than the interval without an
    update (one long forward, a slow chain) still gets a line every ``LOG_INTERVAL`` seconds from
    a heartbeat thread, so a log never goes quiet for longer than that.

    ``total`` given (``fixed``): the planned work, never changed afterwards (a check plans its
    perturbation rows before it scores them; ``grow`` is then a no-op and ``map_batches`` leaves
    the bar to the planner). ``total=None``: work whose size is not known in advance; ``grow``
    counts what was scheduled and lines show the count done, never a denominator that moves.
    """

    def __init__(self, desc: str, total: int | None = None, *, unit: str = "evaluation",
                 stream: Any = None, interval: float | None = None, label: str = "") -> None:
        self.desc, self.unit = desc, unit
        self.fixed = total is not None
        self.total, self.done = total, 0
        self.scheduled = 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = LOG_INTERVAL if interval is None else float(interval)
        self.t0 = self._last = time.monotonic()
        self._pc0 = self._last_pc = time.perf_counter()
        self.closed = False
        self.label = label              # what runs now (the matrix's pair), shown in the lines
        self.bar: Any = None
        self._stop: Any = None
        isatty = getattr(self.stream, "isatty", None)
        if callable(isatty) and isatty():
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream,
                                dynamic_ncols=True)
            except ImportError:  # pragma: no cover - tqdm ships with transformers
                self.bar = None
        if self.bar is None and self.interval > 0:
            self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        import threading

        self._stop = threading.Event()

        def beat() -> None:
            while not self._stop.wait(self.interval):
                if self.closed:
                    return
                if time.perf_counter() - self._last_pc >= self.interval:
                    self._last_pc = time.perf_counter()
                    self._line(self._status(time.perf_counter() - self._pc0))

        threading.Thread(target=beat, name=f"scopecheck-progress:{self.desc}", daemon=True).start()

    def _status(self, seconds: float) -> str:
        now = f"; {self.label}" if self.label else ""
        if self.fixed:
            return f"{self.done}/{self.total} {self.unit}s ({seconds:.0f} s{now})"
        return f"{self.done} {self.unit}s so far ({seconds:.0f} s{now})"

    def grow(self, n: int) -> None:
        """``n`` more units of work were scheduled (ignored on a planned, ``fixed`` total)."""
        if self.fixed:
            return
        self.scheduled += int(n)

    def update(self, n: int) -> None:
        self.done += int(n)
        if self.bar is not None:
            self.bar.update(int(n))
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._last_pc = time.perf_counter()
            self._line(self._status(now - self.t0))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._stop is not None:
            self._stop.set()
        if self.bar is not None:
            self.bar.close()
        elif self.done:
            self._line(f"done, {self.done} {self.unit}s in {time.monotonic() - self.t0:.1f} s")

    def _line(self, text: str) -> None:
        try:
            self.stream.write(f"scopecheck: {self.desc}: {text}\n")
            self.stream.flush()
        except (OSError, ValueError):  # pragma: no cover - a closed stream never stops a run
            pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def current_phase() -> Progress | None:
    """The progress of the phase running now (``phase``), if any reports."""
    return _PHASE.get()


@contextlib.contextmanager
def phase(desc: str, progress: bool | None = None, *, unit: str = "evaluation",
          stream: Any = None, total: int | None = None) -> Iterator[Progress | None]:
    """Run a long phase: when progress is enabled (``progress_enabled``), every evaluation scored
    inside it (``map_batches``, ``batches``) is counted on one :class:`Progress` named ``desc``.
    A phase inside a reporting phase reports into the outer one (one bar, one line per check).
    ``total``: the planned units (a fixed denominator; the planner, not ``map_batches``, then
    advances the bar)."""
    outer = _PHASE.get()
    if outer is not None or not progress_enabled(progress):
        yield outer
        return
    bar = Progress(desc, total, unit=unit, stream=stream)
    token = _PHASE.set(bar)
    try:
        yield bar
    finally:
        _PHASE.reset(token)
        bar.close()


__all__ = ["FALSE_WORDS", "LOG_INTERVAL", "PROGRESS_ENV", "Progress", "TRUE_WORDS", "current_phase", "phase",
           "progress_enabled"]
