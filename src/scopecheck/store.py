"""The resumable result store of dataset contracts: one append-only JSON Lines file per contract.

Why JSON Lines and not Parquet: a record is written the moment its example finishes, as one
line, flushed and ``fsync``-ed; a crash (SIGINT, SIGTERM, kill -9) can only leave the last line
incomplete, which the next open detects and cuts off. Parquet is columnar, written in row groups
with a footer: appending one record at a time safely is exactly what it is not for.

Layout: ``<store>/<contract key>.jsonl``; the key is the sha256 of the canonical contract text,
the dataset's fingerprint (its file bytes, or its reference recipe) and the model identity, so
an edited contract or dataset never reuses stale records. Each line is ``{"key": {"contract",
"example", "method", "seed"}, "example": id, "values": {...}, "error": str | null, "seconds": s}``;
a record is identified by ``(example, method, seed)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


def contract_key(contract_text: str, data_fingerprint: str, model: str) -> str:
    h = hashlib.sha256()
    for part in (contract_text, data_fingerprint, model):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


class Store:
    """Append-only records of one contract; ``records`` holds what is on disk (resume)."""

    def __init__(self, root: str | os.PathLike[str], key: str, *, resume: bool = True) -> None:
        self.root = Path(root)
        self.key = key
        self.path = self.root / f"{key}.jsonl"
        self.records: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.truncated = False
        self.root.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            if resume:
                self._load()
            else:
                self.path.unlink()

    def _load(self) -> None:
        data = self.path.read_bytes()
        good = 0
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                break                                   # an incomplete last line: cut off below
            line = data[pos:nl]
            try:
                rec = json.loads(line)
                k = rec["key"]
                self.records[(str(k["example"]), str(k["method"]), int(k["seed"]))] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                break                                   # a corrupt line: it and what follows are redone
            pos = nl + 1
            good = pos
        if good < len(data):
            self.truncated = True
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())

    def has(self, example: str, method: str, seed: int) -> bool:
        return (example, method, seed) in self.records

    def get(self, example: str, method: str, seed: int) -> dict[str, Any] | None:
        return self.records.get((example, method, seed))

    def append(self, example: str, method: str, seed: int, values: dict[str, Any], error: str | None,
               seconds: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        rec = {"key": {"contract": self.key, "example": example, "method": method, "seed": seed},
               "example": example, "values": values, "error": error, "seconds": round(seconds, 6),
               **(extra or {})}
        line = json.dumps(rec, sort_keys=True, allow_nan=True, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.records[(example, method, seed)] = rec
        return rec

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records.values())


__all__ = ["Store", "contract_key"]
