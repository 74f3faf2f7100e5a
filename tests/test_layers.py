"""The package's layers import downward only: the import-linter ``layers`` contract of
pyproject.toml (errors -> spec -> dsl -> data -> engine -> checks -> run -> audit / report ->
cli / plugin) is kept, it names every module it must, and it is not vacuous (an upward import
planted into a copy of the tree breaks it)."""

from __future__ import annotations

import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the `test` extra")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

_LINT = ("import sys\nfrom importlinter.cli import lint_imports\n"
         "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))\n")


def lint(src: Path, config: Path = ROOT / "pyproject.toml") -> subprocess.CompletedProcess[str]:
    """``lint-imports`` of ``config`` against the ``scopecheck`` package under ``src``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-c", _LINT, str(config)], cwd=src, env=env, capture_output=True,
                          text=True, timeout=300)


def contract() -> dict:
    (c,) = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]
    return c


def layers() -> list[list[str]]:
    return [[m.strip() for m in re.split(r"[|:]", layer)] for layer in contract()["layers"]]


def named() -> set[str]:
    return {m for layer in layers() for m in layer}


def test_the_layers_contract_is_kept():
    r = lint(SRC)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout


def test_the_contract_names_every_module_below_the_root():
    """Every top-level module and every engine module is in some layer (an unnamed module is
    unconstrained); the engine is named module by module (its modules are one layer that may
    import each other, and naming them keeps a new one from escaping the contract unseen)."""
    import scopecheck
    import scopecheck.engine

    have = named()
    want = {f"scopecheck.{i.name}" for i in pkgutil.iter_modules(scopecheck.__path__) if i.name != "engine"}
    want |= {f"scopecheck.engine.{i.name}" for i in pkgutil.iter_modules(scopecheck.engine.__path__)}
    assert want - have == set(), sorted(want - have)
    assert have - want == set(), sorted(have - want)      # no stale name either


@pytest.mark.parametrize("module, target", [
    ("spec/validate.py", "scopecheck.orchestration.stats"),      # spec -> run (the old AGG_FIELDS import)
    ("spec/model.py", "scopecheck.dsl.format"),                  # spec -> dsl
    ("datasets.py", "scopecheck.engine.align"),                  # data -> engine (the old _anchor import)
    ("reference/tasks.py", "scopecheck.engine.diffusion.chain"),   # data -> engine
    ("reference/__init__.py", "scopecheck.training.train"),       # data -> the scripts that trained it
    ("training/loop.py", "scopecheck.checks.registry"),         # training -> checks
    ("engine/scoring.py", "scopecheck.checks.registry"),         # engine -> checks
    ("report/jsonout.py", "scopecheck.cli"),                     # report -> cli
])
def test_an_upward_import_breaks_the_contract(tmp_path, module, target):
    src = tmp_path / "src"
    shutil.copytree(SRC / "scopecheck", src / "scopecheck", ignore=shutil.ignore_patterns("weights", "__pycache__"))
    path = src / "scopecheck" / module
    text = path.read_text(encoding="utf-8")
    path.write_text(text + f"\n\ndef _planted():\n    import {target}  # noqa: F401\n", encoding="utf-8")
    r = lint(src)
    assert r.returncode != 0, r.stdout
    importer = ("scopecheck." + module.removesuffix(".py").replace("/", ".")).removesuffix(".__init__")
    assert f"{importer} -> {target}" in r.stdout, r.stdout


def module_graph(src: Path) -> dict[str, set[str]]:
    """Every import of a project module by a project module under ``src``: module level,
    function level and ``TYPE_CHECKING`` blocks alike (``import a.b`` and ``from a import b``
    resolved to the deepest module that exists)."""
    import ast

    root = src / "scopecheck"
    mods: dict[str, Path] = {}
    for p in root.rglob("*.py"):
        parts = ("scopecheck",) + p.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p

    def resolve(target: str) -> str | None:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        return target or None

    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                r = resolve(t) if t.startswith("scopecheck") else None
                if r is not None and r != name:
                    graph[name].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return out


def test_the_module_graph_has_no_cycle():
    """No two project modules import each other, directly or through others, counting
    function-level and ``TYPE_CHECKING`` imports (issue 24: no strongly connected component)."""
    assert cycles(module_graph(SRC)) == []


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path):
    """Not vacuous: an import of the runner planted into the module the runner imports (a
    ``TYPE_CHECKING``-only one, as the old cycle was) is found, with every module on the loop."""
    copy = tmp_path / "src"
    shutil.copytree(SRC / "scopecheck", copy / "scopecheck", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    store = copy / "scopecheck" / "orchestration" / "store.py"
    store.write_text(store.read_text(encoding="utf-8")
                     + "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                       "    from scopecheck.orchestration.runner import Runner\n", encoding="utf-8")
    found = cycles(module_graph(copy))
    assert len(found) == 1
    assert {"scopecheck.orchestration.store", "scopecheck.orchestration.runner"} <= set(found[0])
