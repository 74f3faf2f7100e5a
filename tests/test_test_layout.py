"""The test tree collects under plain `pytest` (the README's command): test folders are not
packages, so two test files with one basename collide at collection ("import file mismatch"),
which a developer's warm `__pycache__` can hide. Found by the fresh-clone check."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_file_basenames_are_unique():
    names = Counter(p.name for p in TESTS.rglob("test_*.py") if "golden" not in p.parts)
    assert [n for n, c in names.items() if c > 1] == []
