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

from tests._modgraph import components, graph, modules

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
    function level and ``TYPE_CHECKING`` blocks alike."""
    return graph(modules(src / "scopecheck"), type_checking=True)


def test_the_module_graph_has_no_cycle():
    """No two project modules import each other, directly or through others, counting
    function-level and ``TYPE_CHECKING`` imports (issue 24: no strongly connected component)."""
    assert components(module_graph(SRC)) == []


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path):
    """Not vacuous: an import of the runner planted into the module the runner imports (a
    ``TYPE_CHECKING``-only one, as the old cycle was) is found, with every module on the loop."""
    copy = tmp_path / "src"
    shutil.copytree(SRC / "scopecheck", copy / "scopecheck", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    store = copy / "scopecheck" / "orchestration" / "store.py"
    store.write_text(store.read_text(encoding="utf-8")
                     + "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                       "    from scopecheck.orchestration.runner import Runner\n", encoding="utf-8")
    found = components(module_graph(copy))
    assert len(found) == 1
    assert {"scopecheck.orchestration.store", "scopecheck.orchestration.runner"} <= set(found[0])


def test_the_component_finder_finds_components():
    assert components({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert components({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    assert components({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}}) == [["c", "d", "e"], ["a", "b"]]


def test_the_graph_reads_every_form_of_import(tmp_path):
    """``import a.b``, ``from a import b`` (a module or a name), relative imports, imports in
    functions, and ``TYPE_CHECKING`` blocks only when asked for."""
    pkg = tmp_path / "scopecheck"
    (pkg / "sub").mkdir(parents=True)
    for f in ("__init__.py", "a.py", "sub/__init__.py", "sub/b.py", "sub/c.py"):
        (pkg / f).write_text("")
    (pkg / "sub" / "b.py").write_text("from . import c\nfrom ..a import thing\n")
    (pkg / "sub" / "c.py").write_text("import scopecheck.a\ndef f():\n    from scopecheck.sub import b as _b\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from scopecheck.sub.c import f\n")
    mods = modules(pkg)
    g = graph(mods)
    assert g["scopecheck.sub.b"] == {"scopecheck.sub.c", "scopecheck.a"}
    assert g["scopecheck.sub.c"] == {"scopecheck.a", "scopecheck.sub.b"}
    assert g["scopecheck.a"] == set() and graph(mods, type_checking=True)["scopecheck.a"] == {"scopecheck.sub.c"}
    assert graph(mods, top_only=True)["scopecheck.sub.c"] == {"scopecheck.a"}
    assert components(g) == [["scopecheck.sub.b", "scopecheck.sub.c"]]
