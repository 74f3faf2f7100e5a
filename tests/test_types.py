"""The typed packages pass ``mypy --strict``: ``[tool.mypy]`` in pyproject.toml names them (the
spec, the DSL, the run orchestration, the check registry, errors, version), and ``mypy`` run from
the checkout root with that configuration reports no error. So plain ``pytest`` with the ``test``
extra (which CI runs) fails on a type error there. Skipped where mypy or the extra's stub packages
are not installed. mypy's cache lives in the temp dir, one per checkout: a first run takes about
half a minute, a run after a change seconds."""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what the run needs: mypy, and the stubs of the untyped libraries the typed packages import
NEEDS = ("mypy", "types-jsonschema", "types-tqdm")
TYPED = ("spec", "dsl", "orchestration")


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    missing = []
    for name in NEEDS:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[test]')")
    cache = Path(tempfile.gettempdir()) / f"scopecheck-mypy-{hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]}"
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_the_config_holds_the_typed_packages_to_strict():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert cfg["strict"] is True
    files = set(cfg["files"])
    assert {f"src/scopecheck/{p}" for p in TYPED} <= files
    assert {"src/scopecheck/errors.py", "src/scopecheck/version.py", "src/scopecheck/checks/registry.py"} <= files
    assert all((ROOT / f).exists() for f in files)


def test_the_configuration_reports_what_strict_forbids(tmp_path):
    """Not vacuous: the same configuration on an unannotated function fails, naming the rule."""
    bad = tmp_path / "untyped.py"
    bad.write_text("def f(x):\n    return x\n", encoding="utf-8")
    r = _mypy(str(bad))
    assert r.returncode == 1, r.stdout + r.stderr
    # (the path as mypy's cache first saw a file of this name and content: not asserted)
    assert "untyped.py:1: error: Function is missing a type annotation  [no-untyped-def]" in r.stdout


def test_the_typed_packages_pass_mypy_strict():
    r = _mypy()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("Success: no issues found in ")
