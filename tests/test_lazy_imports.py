"""Function-level imports of the project's own modules only where they keep a heavy dependency
out of import time (issue 24), each saying so: a ``# lazy: <reason>`` comment on the import or on
the comment lines just above it. And the entry points a user loads first (``import scopecheck``,
the pytest plugin, the command line) import neither torch nor numpy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests._modgraph import function_level_imports, modules


def unexplained(mods) -> list[str]:
    return [f"{li.path}:{li.line}: {', '.join(li.targets)}" for li in function_level_imports(mods)
            if not any(c.startswith("lazy:") and c.removeprefix("lazy:").strip() for c in li.comments)]


def test_every_function_level_project_import_says_why_it_is_lazy():
    assert unexplained(modules()) == []


def test_the_rule_sees_a_bare_function_level_import(tmp_path):
    pkg = tmp_path / "scopecheck"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "light.py").write_text("X = 1\n")
    (pkg / "a.py").write_text(
        "import json\n\n"
        "def bare():\n    from scopecheck.light import X\n    return X\n\n"
        "def said():\n    from scopecheck.light import X  # lazy: imports torch\n    return X\n\n"
        "def above():\n    # lazy: imports torch\n    from scopecheck import light\n    return light\n\n"
        "def empty():\n    from scopecheck.light import X  # lazy:\n    return X\n\n"
        "def stdlib():\n    import os\n    return os\n\n"
        "class C:\n    def method(self):\n        def inner():\n"
        "            import scopecheck.light\n            return scopecheck.light\n        return inner\n")
    found = unexplained(modules(pkg))
    assert [f.split(":")[1] for f in found] == ["4", "17", "27"]      # bare, empty reason, nested


@pytest.mark.parametrize("module", ["scopecheck", "scopecheck.pytest_plugin", "scopecheck.cli"])
def test_loading_an_entry_point_imports_no_torch_or_numpy(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
