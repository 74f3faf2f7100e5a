"""The resumable result store of dataset contracts: one JSON Lines file per contract.

Why JSON Lines and not Parquet: a record is written the moment its example finishes, as one
line, flushed and ``fsync``-ed; a crash (SIGINT, SIGTERM, kill -9) can only leave the last line
incomplete, which the next open detects and redoes. Parquet is columnar, written in row groups
with a footer: appending one record at a time safely is exactly what it is not for.

Layout: ``<store>/<contract key>.jsonl``; the key is the sha256 of the store format, the
canonical contract text, the dataset's fingerprint (its file bytes, or its reference recipe)
and the model identity, so an edited contract or dataset never reuses stale records. Each line
is ``{"key": {"contract", "example", "method", "seed"}, "example": id, "values": {...}, "error":
str | null, "seconds": s}``; a record is identified by ``(example, method, seed)``.

Never losing or duplicating a record:

* **One writer per store file.** Opening a :class:`Store` takes an exclusive ``fcntl.flock`` on
  ``<key>.lock``; a second run on the same contract and store (``--resume`` or not) is refused
  with :class:`StoreBusyError` instead of writing every example a second time or deleting the
  first run's records. The lock goes with the process (a killed run never leaves it held).
* **A fresh run replaces the old file only when it completes.** Without ``resume`` the records
  go to ``<key>.jsonl.partial``; :meth:`Store.commit` renames it over ``<key>.jsonl``
  (``os.replace``, then the folder is ``fsync``-ed). An interrupted fresh run leaves the old
  store as it was; its partial records are valid (same key) and a later ``resume`` adopts them.
* **A bad line costs that line only.** A line that is not JSON, or whose fields have the wrong
  types (``"values": 5``, a missing ``key``), is reported in :attr:`Store.problems` (line
  number and reason), left out and recomputed; every good record after it is kept. With
  ``resume`` the file is rewritten (atomically) without the bad lines before anything is
  appended.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from scopecheck.errors import ContractError

try:  # POSIX; elsewhere the store is unlocked (one run at a time is then the user's to ensure)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: part of every contract key: records of another format (v1 keyed plain expectations by their
#: line number) are never read as this one's; they stay on disk and are simply not found
STORE_FORMAT = "2"


def contract_key(contract_text: str, data_fingerprint: str, model: str) -> str:
    h = hashlib.sha256()
    for part in (f"scopecheck-store-v{STORE_FORMAT}", contract_text, data_fingerprint, model):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


class StoreBusyError(ContractError):
    """Another run holds the store file of this contract."""

    def __init__(self, message: str) -> None:
        super().__init__(message, rule="store",
                         hint="wait for the other run to finish, or give this one another --store DIR")


@dataclass(frozen=True)
class StoreProblem:
    path: str
    line: int                    # 1-based line of the store file
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}; the record is recomputed"


def _record_problem(rec: Any) -> str | None:
    """Why ``rec`` is not a record of this store format, or None."""
    if not isinstance(rec, dict):
        return f"a record is a JSON object, not {type(rec).__name__}"
    k = rec.get("key")
    if not isinstance(k, dict):
        return "no `key` object"
    for f, t in (("example", str), ("method", str)):
        if not isinstance(k.get(f), t):
            return f"`key.{f}` is not a string"
    if not isinstance(k.get("seed"), int) or isinstance(k.get("seed"), bool):
        return "`key.seed` is not an integer"
    if not isinstance(rec.get("values"), dict):
        return f"`values` is not an object (it is {json.dumps(rec.get('values'))[:40]})"
    if rec.get("error") is not None and not isinstance(rec.get("error"), str):
        return "`error` is neither a string nor null"
    s = rec.get("seconds")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
        return "`seconds` is not a non-negative number"
    return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class Store:
    """Records of one contract; ``records`` holds what is on disk (resume).

    Use as a context manager, or call :meth:`close` (releases the lock); a fresh run (``resume =
    False``) calls :meth:`commit` when it completes, which replaces the old store file."""

    def __init__(self, root: str | os.PathLike[str], key: str, *, resume: bool = True) -> None:
        self.root = Path(root)
        self.key = key
        self.path = self.root / f"{key}.jsonl"
        self.partial = self.root / f"{key}.jsonl.partial"
        self.lock_path = self.root / f"{key}.lock"
        self.resume = resume
        self.records: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.problems: list[StoreProblem] = []
        self.adopted = 0                 # records taken over from an interrupted fresh run
        self._lock_fh: Any = None
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening
    def _lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        fh = open(self.lock_path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise StoreBusyError(f"the result store {str(self.path)!r} is in use by another run (lock "
                                 f"{str(self.lock_path)!r}); two runs on one store would write every example "
                                 "twice or delete each other's records") from None
        self._lock_fh = fh

    def _open(self) -> None:
        if self.resume:
            if self.path.exists():
                self._read(self.path)
            if self.partial.exists():               # an interrupted fresh run: its records are valid
                before = len(self.records)
                self._read(self.partial, keep_existing=True)
                self.adopted = len(self.records) - before
            if self.problems or self.adopted or self.partial.exists():
                self._rewrite()
            self._target = self.path
        else:
            # a fresh run: the old file stays untouched until commit()
            with open(self.partial, "wb") as fh:
                fh.flush()
                os.fsync(fh.fileno())
            self._target = self.partial

    def _read(self, path: Path, keep_existing: bool = False) -> None:
        data = path.read_bytes()
        lines = data.split(b"\n")
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if i == len(lines):                     # no newline after it: cut off mid-write
                self.problems.append(StoreProblem(str(path), i, "an incomplete last line (the run was "
                                                  "interrupted while writing it)"))
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else "invalid UTF-8"
                self.problems.append(StoreProblem(str(path), i, f"not JSON ({why})"))
                continue
            problem = _record_problem(rec)
            if problem is not None:
                self.problems.append(StoreProblem(str(path), i, problem))
                continue
            k = rec["key"]
            ident = (k["example"], k["method"], int(k["seed"]))
            if keep_existing and ident in self.records:
                continue
            self.records[ident] = rec

    def _rewrite(self) -> None:
        """The store file holds exactly ``records`` (atomically replaced); no partial remains."""
        tmp = self.root / f"{self.key}.jsonl.rewrite"
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in self.records.values():
                fh.write(_line(rec))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        if self.partial.exists():
            self.partial.unlink()
        _fsync_dir(self.root)

    # ------------------------------------------------------------------ use
    @property
    def truncated(self) -> bool:
        """Some line of the file could not be read (it is recomputed)."""
        return bool(self.problems)

    def has(self, example: str, method: str, seed: int) -> bool:
        return (example, method, seed) in self.records

    def get(self, example: str, method: str, seed: int) -> dict[str, Any] | None:
        return self.records.get((example, method, seed))

    def append(self, example: str, method: str, seed: int, values: dict[str, Any], error: str | None,
               seconds: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._lock_fh is None and fcntl is not None:
            raise RuntimeError("the store is closed")
        rec = {"key": {"contract": self.key, "example": example, "method": method, "seed": seed},
               "example": example, "values": values, "error": error, "seconds": round(seconds, 6),
               **(extra or {})}
        with open(self._target, "a", encoding="utf-8") as fh:
            fh.write(_line(rec))
            fh.flush()
            os.fsync(fh.fileno())
        self.records[(example, method, seed)] = rec
        return rec

    def commit(self) -> None:
        """A fresh run completed: its file replaces the old store (a resumed run is already in place)."""
        if not self.resume and self.partial.exists():
            os.replace(self.partial, self.path)
            _fsync_dir(self.root)

    def close(self) -> None:
        if self._lock_fh is not None:
            try:
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._lock_fh.close()
                self._lock_fh = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records.values())


def _line(rec: dict[str, Any]) -> str:
    return json.dumps(rec, sort_keys=True, allow_nan=True, ensure_ascii=False) + "\n"


__all__ = ["STORE_FORMAT", "Store", "StoreBusyError", "StoreProblem", "contract_key"]
