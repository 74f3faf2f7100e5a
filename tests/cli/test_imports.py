"""The CLI package's import structure: loading it imports no torch, and its modules import each
other without a cycle (function-level imports included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._modgraph import components, modules
from tests._modgraph import graph as module_graph

PACKAGE = "scopecheck.cli"


def _modules() -> dict[str, Path]:
    return {n: p for n, p in modules().items() if n == PACKAGE or n.startswith(f"{PACKAGE}.")}


def test_loading_the_cli_imports_no_torch():
    code = f"import sys, {PACKAGE}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_modules_import_each_other_without_a_cycle():
    modules = _modules()
    assert {f"{PACKAGE}", f"{PACKAGE}.__main__", f"{PACKAGE}._common"} <= set(modules)
    graph = {n: deps & set(modules) for n, deps in module_graph(modules).items()}
    assert components(graph) == [], "import cycle"
    # the shared helpers import no other CLI module, and no command module imports the package's main
    assert graph[f"{PACKAGE}._common"] == set()
    assert all(PACKAGE not in deps for n, deps in graph.items() if n != f"{PACKAGE}.__main__")


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", PACKAGE, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("usage: scopecheck")
