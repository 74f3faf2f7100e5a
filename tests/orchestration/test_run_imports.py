"""The orchestration package's import structure: its modules import each other without a cycle
(function-level imports included), import no private name of another module, and loading them
imports no torch.

Run as a script (``python tests/orchestration/test_run_imports.py [src/scopecheck]``) it prints
the strongly connected components of the whole package's module graph, module-level imports only
and all imports, for the record of a refactoring.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "scopecheck"
RUN = "scopecheck.orchestration"


def modules(root: Path = SRC) -> dict[str, Path]:
    """Every module of the package under ``root``: dotted name -> file."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = ("scopecheck",) + p.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(name: str, path: Path, mods: dict[str, Path], *, top_only: bool = False) -> list[tuple[str, str]]:
    """``(module, imported name or "")`` for each import of a project module in ``name``'s text (at
    module level only with ``top_only``; ``if TYPE_CHECKING:`` blocks are never imports at run time)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.stem == "__init__"
    if top_only:
        nodes = []
        stack = list(tree.body)
        while stack:                                   # module level: into if/try blocks, not defs
            n = stack.pop()
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                continue
            if isinstance(n, (ast.If, ast.Try)):
                stack += n.body + n.orelse + getattr(n, "finalbody", []) + \
                    [s for h in getattr(n, "handlers", []) for s in h.body]
            else:
                nodes.append(n)
    else:
        skip = {id(s) for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
                for s in ast.walk(n)}
        nodes = [n for n in ast.walk(tree) if id(n) not in skip]
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name in mods]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in mods:
                    found.append((sub, ""))
                elif base in mods:
                    found.append((base, a.name))
    return [(t, n) for t, n in found if t != name]


def graph(mods: dict[str, Path], *, top_only: bool = False) -> dict[str, set[str]]:
    return {n: {t for t, _ in imports(n, p, mods, top_only=top_only)} for n, p in mods.items()}


def components(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out, key=lambda c: (-len(c), c))


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


def test_the_component_finder_finds_components():
    assert components({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert components({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


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
