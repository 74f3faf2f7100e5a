"""The orchestration package's import structure: its modules import each other without a cycle
(function-level imports included), import no private name of another module, and loading them
imports no torch.

Run as a script (``python -m tests.orchestration.test_run_imports [src/scopecheck]``, from the
repository root) it prints the strongly connected components of the whole package's module graph,
module-level imports only and all imports, for the record of a refactoring.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._modgraph import components, graph, imports, modules

SRC = Path(__file__).resolve().parents[2] / "src" / "scopecheck"
RUN = "scopecheck.orchestration"


def _run_modules() -> dict[str, Path]:
    mods = modules()
    assert f"{RUN}.runner" in mods and f"{RUN}.executors" in mods
    return mods


def test_run_modules_import_each_other_without_a_cycle():
    mods = _run_modules()
    g = graph(mods)
    run_graph = {n: {t for t in deps if t.startswith(RUN)} for n, deps in g.items() if n.startswith(RUN)}
    assert components(run_graph) == []
    # the executors get the runner class from their caller: they never import the runner module
    assert f"{RUN}.runner" not in g[f"{RUN}.executors"]


def test_no_module_imports_a_private_name_of_a_run_module():
    mods = _run_modules()
    crossings = [f"{n} imports {t}.{a}" for n, p in mods.items() for t, a in imports(n, p, mods)
                 if t.startswith(RUN) and a.startswith("_") and not a.startswith("__")]
    assert crossings == []


def test_loading_the_run_modules_imports_no_torch_and_shadows_no_public_name():
    code = ("import sys, scopecheck, scopecheck.orchestration.runner, scopecheck.orchestration.dataset, "
            "scopecheck.orchestration.executors, scopecheck.orchestration.matrix; "
            "print('torch' in sys.modules, type(scopecheck.run).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "function"]          # scopecheck.run() is still the function


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else SRC
    mods = modules(root)
    for label, top in (("module-level imports", True), ("all imports (function level included)", False)):
        comps = components(graph(mods, top_only=top))
        print(f"{label}: {len(comps)} strongly connected component(s)")
        for c in comps:
            print(f"  {len(c)}: {', '.join(c)}")
