"""No scopecheck module reaches into another module's private names.

Walks every module under ``src/scopecheck`` with :mod:`ast` and fails on
``from scopecheck.X import _name`` and on ``alias._name`` where ``alias`` is a scopecheck
module bound by an import (``import scopecheck.X as alias`` / ``from scopecheck import X``).
Dunder names and ``__future__`` are allowed, and so is importing a package's own private
*submodule* (``from scopecheck.cli import _signals``: a ``_module`` is how a package keeps a
file internal, not another module's private name).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "scopecheck"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_module(dotted: str) -> bool:
    path = SRC.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def crossings(source: str, module: str) -> list[str]:
    """``line: what`` for every private name of another scopecheck module ``source`` uses."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}      # local name -> the scopecheck module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "scopecheck":
            for a in node.names:
                target = f"{node.module}.{a.name}"
                if _is_module(target):
                    aliases[a.asname or a.name] = target
                    if _private(a.name) and not module.startswith(node.module):
                        found.append(f"{node.lineno}: from {node.module} import {a.name}")
                elif _private(a.name):
                    found.append(f"{node.lineno}: from {node.module} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "scopecheck":
                    if a.asname:
                        aliases[a.asname] = a.name
                    if any(_private(p) for p in a.name.split(".")) and a.asname is None:
                        pass                  # ``import scopecheck.x._m``: checked at its attribute uses
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        chain, base = [], node.value
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name) and (base.id in aliases or base.id == "scopecheck"):
            owner = ".".join([aliases.get(base.id, base.id), *reversed(chain)])
            if _is_module(owner) and owner != module:
                found.append(f"{node.lineno}: {owner}.{node.attr}")
    return found


def test_the_walker_catches_both_forms_and_spares_the_allowed_ones():
    src = ("from __future__ import annotations\n"
           "from scopecheck.engine.align import _anchor, positions\n"
           "from scopecheck.engine import scoring as sc\n"
           "import scopecheck.engine.models as mdl\n"
           "x = sc._Forward\n"
           "y = mdl._family(None)\n"
           "z = sc.__name__, sc.causal_lm_problem\n"
           "from scopecheck.cli import _signals\n")
    assert crossings(src, "scopecheck.other") == [
        "2: from scopecheck.engine.align import _anchor",
        "8: from scopecheck.cli import _signals",       # another package's private submodule
        "5: scopecheck.engine.scoring._Forward",
        "6: scopecheck.engine.models._family",
    ]
    # a package may import its own private submodule; a module its own names
    assert crossings("from scopecheck.cli import _signals\n", "scopecheck.cli") == []
    assert crossings("import scopecheck.engine.models as mdl\nmdl._x\n", "scopecheck.engine.models") == []


def test_no_module_uses_another_modules_private_names():
    files = sorted(PKG.rglob("*.py"))
    assert len(files) > 50
    bad = [f"{f.relative_to(SRC)}:{hit}" for f in files for hit in crossings(f.read_text(), _module_name(f))]
    assert bad == []
