"""Helpers the CLI's command modules share; this module imports none of them."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def _print_errors(errors) -> None:
    err = sys.stderr
    for e in errors:
        print(e.render(), file=err)
        print(file=err)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
