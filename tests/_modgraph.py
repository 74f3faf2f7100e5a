"""The package's import graph read from its source (``ast``, nothing imported): the one helper
the layer, cycle, private-name and lazy-import tests build on.

* :func:`modules`: every module under a package folder, dotted name -> file.
* :func:`imports`: the project modules one module imports, with the name it takes from each.
* :func:`graph`: module -> the project modules it imports.
* :func:`components`: the strongly connected components of more than one module (Tarjan).
* :func:`function_level_imports`: the imports of project modules inside functions, with the
  comment lines around each (the ``# lazy: <reason>`` rule).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def modules(root: Path = SRC / "scopecheck") -> dict[str, Path]:
    """Every module of the ``scopecheck`` package under ``root`` (the package's folder): dotted
    name -> file, a package's ``__init__`` under the package's own name."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = ("scopecheck",) + p.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    return {id(s) for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
            for s in ast.walk(n)}


def _resolve(target: str, mods: dict[str, Path]) -> str | None:
    """The deepest module of ``mods`` that ``target`` (a dotted name) lies in."""
    while target and target not in mods:
        target = target.rpartition(".")[0]
    return target or None


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_pkg: bool) -> list[tuple[str, str]]:
    """``(dotted target, imported name or "")`` of one import statement in module ``name``."""
    if isinstance(node, ast.Import):
        return [(a.name, "") for a in node.names]
    if node.level:                                     # relative: against this module's package
        parts = name.split(".") if is_pkg else name.split(".")[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [(f"{base}.{a.name}", a.name) for a in node.names]


def imports(name: str, path: Path, mods: dict[str, Path], *, top_only: bool = False,
            type_checking: bool = False) -> list[tuple[str, str]]:
    """``(module, imported name or "")`` for each import of another project module in ``name``'s
    text: ``import a.b`` and ``from a import b`` resolved to the deepest module that exists; the
    name is ``""`` when the import names that module itself (``from pkg import submodule``).

    ``top_only``: module level only (into ``if`` / ``try`` blocks, not into functions or
    classes). ``if TYPE_CHECKING:`` blocks are never imports at run time: left out unless
    ``type_checking``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = set() if type_checking else _type_checking_nodes(tree)
    if top_only:
        nodes: list[ast.AST] = []
        stack: list[ast.stmt] = list(tree.body)
        while stack:
            n = stack.pop()
            if id(n) in skip:
                continue
            if isinstance(n, (ast.If, ast.Try)):
                stack += n.body + n.orelse + getattr(n, "finalbody", []) + \
                    [s for h in getattr(n, "handlers", []) for s in h.body]
            else:
                nodes.append(n)
    else:
        nodes = [n for n in ast.walk(tree) if id(n) not in skip]
    found = []
    for node in nodes:
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for target, attr in _targets(node, name, path.stem == "__init__"):
            if not target.startswith("scopecheck"):
                continue
            module = _resolve(target, mods)
            if module is not None and module != name:
                found.append((module, "" if module == target else attr))
    return found


def graph(mods: dict[str, Path], *, top_only: bool = False, type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> the project modules it imports (as :func:`imports`)."""
    return {n: {t for t, _ in imports(n, p, mods, top_only=top_only, type_checking=type_checking)}
            for n, p in mods.items()}


def components(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative), each
    sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(g):
        if start in index:
            continue
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        work = [(start, iter(sorted(g.get(start, ()))))]
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.get(w, ())))))
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
    return sorted(out, key=lambda c: (-len(c), c))


@dataclass(frozen=True)
class LocalImport:
    """An import of a project module inside a function (or a method)."""

    module: str        # the importing module
    path: Path
    line: int          # 1-based, the statement's first line
    targets: tuple[str, ...]
    comments: tuple[str, ...]   # the comment on the statement's lines and the comment lines just above


def function_level_imports(mods: dict[str, Path]) -> list[LocalImport]:
    """Every import of a project module that runs inside a function, once each (a nested
    function's imports are not counted again for the function around it); ``if TYPE_CHECKING:``
    blocks are not imports at run time and are left out."""
    out = []
    for name, path in mods.items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text, str(path))
        skip = _type_checking_nodes(tree)
        seen: set[int] = set()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in seen or id(node) in skip:
                    continue
                seen.add(id(node))
                targets = tuple(t for t, _ in _targets(node, name, path.stem == "__init__")
                                if t.startswith("scopecheck"))
                if not targets:
                    continue
                end = node.end_lineno or node.lineno
                comments = [ln.split("#", 1)[1].strip() for ln in lines[node.lineno - 1:end] if "#" in ln]
                i = node.lineno - 2
                while i >= 0 and lines[i].strip().startswith("#"):
                    comments.append(lines[i].strip()[1:].strip())
                    i -= 1
                out.append(LocalImport(name, path, node.lineno, targets, tuple(comments)))
    return sorted(out, key=lambda li: (li.module, li.line))


__all__ = ["LocalImport", "SRC", "components", "function_level_imports", "graph", "imports", "modules"]
