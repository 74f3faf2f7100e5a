"""Output destinations: the one place that checks them and writes them.

Every report, JSON document and heatmap scopecheck writes goes through :func:`atomic_write_many`
(or :func:`atomic_write_text`): the text goes to a temporary file in the destination's own
folder, is ``fsync``-ed, given the mode a plainly created file would get (``0o666`` less the
umask; an existing file keeps its mode), and ``os.replace``-d into place with SIGINT and SIGTERM
held back, so a destination is always the previous file or the complete new one.

Only regular files are ever replaced: a destination that exists and is anything else (a folder,
a symbolic link -- even one to a regular file --, a FIFO, a device, a socket) is refused, and so
is one whose folder does not exist. :func:`check_file` and :func:`check_folder` say so before any
computation starts (the CLI and the pytest plugin call them on their options first);
:func:`atomic_write_many` checks again right before it writes.
"""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import threading
from pathlib import Path

__all__ = ["DestinationError", "atomic_write_many", "atomic_write_text", "check_file", "check_folder"]

EXPECT_FILE = "a regular file, or a new file in an existing folder"
EXPECT_FOLDER = "a folder, or a new folder in an existing folder"


class DestinationError(OSError):
    """An output destination scopecheck will not write: ``option path: problem; expected ...``."""

    def __init__(self, path: str | os.PathLike[str], problem: str, expected: str, option: str | None = None,
                 hint: str | None = None) -> None:
        self.path, self.problem, self.expected, self.option, self.hint = str(path), problem, expected, option, hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.option} {self.path}" if self.option else self.path
        text = f"{where}: {self.problem}; expected {self.expected}"
        return text + (f" ({self.hint})" if self.hint else "")


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    for test, words in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "not a regular file"


def _probe(folder: Path, make_dir: bool) -> str | None:
    """Try to create (and remove) a file -- or a folder -- in ``folder``: the error, or None."""
    try:
        if make_dir:
            os.rmdir(tempfile.mkdtemp(prefix=".scopecheck-probe-", dir=folder))
        else:
            fd, tmp = tempfile.mkstemp(prefix=".scopecheck-probe-", dir=folder)
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _parent_problem(path: Path, make_dir: bool) -> str | None:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        st = os.stat(parent)
    except FileNotFoundError:
        return f"its folder {parent} does not exist"
    except OSError as exc:
        return f"its folder {parent} cannot be read ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return f"{parent} is not a folder"
    why = _probe(parent, make_dir)
    return None if why is None else f"cannot create {'folders' if make_dir else 'files'} in {parent} ({why})"


def check_file(path: str | os.PathLike[str], option: str | None = None) -> None:
    """Raise :class:`DestinationError` unless ``path`` is a regular file (not a symbolic link)
    that may be replaced, or a new name in an existing folder where files can be created."""
    p = Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise DestinationError(p, f"cannot be read ({exc.strerror})", EXPECT_FILE, option) from None
    if st is not None:
        kind = _kind(st.st_mode)
        if kind is not None:
            hint = None
            if kind == "a symbolic link" and str(p).startswith(("/dev/fd/", "/proc/")):
                hint = "for a pipe or process substitution write to stdout with '-'" if option == "--json" else \
                    "write to a file and read it from there"
            raise DestinationError(p, f"is {kind}", EXPECT_FILE, option, hint)
        if not os.access(p, os.W_OK):
            raise DestinationError(p, "is a read-only file", EXPECT_FILE, option)
    why = _parent_problem(p, make_dir=False)
    if why is not None:
        raise DestinationError(p, why, EXPECT_FILE, option)


def check_folder(path: str | os.PathLike[str], option: str | None = None, *, files: tuple[str, ...] = ()) -> None:
    """Raise :class:`DestinationError` unless ``path`` is a folder (a symbolic link to one is kept,
    nothing replaces it) where files can be created, or a new name in an existing folder; each of
    ``files`` inside it must pass :func:`check_file`."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.lexists(p):
            raise DestinationError(p, "is a symbolic link to nothing", EXPECT_FOLDER, option) from None
        why = _parent_problem(p, make_dir=True)
        if why is not None:
            raise DestinationError(p, why, EXPECT_FOLDER, option) from None
        return
    except OSError as exc:
        raise DestinationError(p, f"cannot be read ({exc.strerror})", EXPECT_FOLDER, option) from None
    if not stat.S_ISDIR(st.st_mode):
        what = _kind(st.st_mode) or "a regular file"
        if os.path.islink(p):
            what = f"a symbolic link to {what}"
        raise DestinationError(p, f"is {what}, not a folder", EXPECT_FOLDER, option)
    why = _probe(p, make_dir=False)
    if why is not None:
        raise DestinationError(p, f"cannot create files in it ({why})", EXPECT_FOLDER, option)
    for name in files:
        try:
            check_file(p / name)
        except DestinationError as exc:
            raise DestinationError(p, f"{name} in it {exc.problem}", f"{name} to be {EXPECT_FILE}", option) from None


def _file_mode(path: Path) -> int:
    """The mode a plainly created file would get (an existing file keeps its mode)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _hold_signals():
    """Block SIGINT and SIGTERM in this thread (delivered when released); returns the old mask or None."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def atomic_write_many(files: list[tuple[str | os.PathLike[str], str]], *, make_parents: bool = False) -> list[Path]:
    """Write every ``(path, text)`` through a temporary file beside it, and only when all of them
    are complete on disk ``os.replace`` each into place, SIGINT and SIGTERM held back meanwhile: a
    failure or a signal leaves every destination as it was (or all of them new) and no temporary
    file behind. Each destination must pass :func:`check_file` (checked again here); its folder is
    created only with ``make_parents``."""
    staged: list[tuple[str, Path]] = []
    try:
        for raw, text in files:
            path = Path(raw)
            if make_parents:
                path.parent.mkdir(parents=True, exist_ok=True)
            check_file(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, _file_mode(path))
        old = _hold_signals() if threading.current_thread() is threading.main_thread() else None
        try:
            for tmp, path in staged:
                os.replace(tmp, path)
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise
    return [p for _, p in staged]


def atomic_write_text(path: str | os.PathLike[str], text: str, *, make_parents: bool = False) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``:
    the file is either the old one or the complete new one, never partial."""
    return atomic_write_many([(path, text)], make_parents=make_parents)[0]
