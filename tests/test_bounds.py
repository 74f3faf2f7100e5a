"""The declared version bounds: the "Supported versions" table (docs/reference/dependencies.md) states, for every direct
dependency, the lower end that ``.ci/bounds`` tests; this checks that each of them is the ``>=``
bound pyproject.toml declares (so raising a bound without its table row, or the reverse, fails),
and that the environment the suite runs in satisfies the declared range of what it imports."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests._docs import page_with

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in ("test", "ray", "docs"):
        reqs += project["optional-dependencies"][extra]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def lower(req: Requirement) -> Version:
    (spec,) = [s for s in req.specifier if s.operator == ">="]
    return Version(spec.version)


def table_lower_ends() -> dict[str, Version]:
    """{package: lower end} from the table's first two columns (rows list several packages as
    ``a, b`` or ``a / b`` with their versions in the same order)."""
    text = page_with("## Supported versions").read_text(encoding="utf-8")
    section = text.split("## Supported versions", 1)[1].split("\n#", 1)[0]
    out: dict[str, Version] = {}
    for row in re.findall(r"^\|(.+)\|$", section, flags=re.M):
        cells = [c.strip() for c in row.split("|")]
        if cells[0] in ("package", "Python") or set(cells[0]) <= set("-"):
            continue
        names = [n.strip() for n in re.split(r"[,/]", re.sub(r"^(extras|docs extra):", "", cells[0]))]
        versions = [v.strip() for v in re.split(r"[,/]", cells[1].replace("(tested)", ""))]
        assert len(names) == len(versions), row
        out.update((n.lower(), Version(v)) for n, v in zip(names, versions))
    return out


def test_versions_table_states_every_declared_lower_bound():
    table, decl = table_lower_ends(), declared()
    assert set(table) == set(decl), (sorted(set(table) ^ set(decl)))
    wrong = {n: (str(table[n]), str(lower(decl[n]))) for n in decl if table[n] != lower(decl[n])}
    assert not wrong, f"table lower end != pyproject >= bound: {wrong}"


@pytest.mark.parametrize("name", sorted(declared()))
def test_installed_version_is_in_the_declared_range(name):
    try:
        have = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed (an extra)")
    req = declared()[name]
    # a local build tag (torch's "+cpu") is not part of the range
    assert req.specifier.contains(Version(have).public, prereleases=True), f"{name} {have} outside {req}"
