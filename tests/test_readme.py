"""README truth: the Quick start commands CI runs are the README's, exactly as a reader sees
them. (Every code block of the README and of the pages under docs/ is run or validated by
tests/test_docs.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest


README = Path(__file__).resolve().parents[1] / "README.md"


def _quickstart():
    import importlib.machinery
    import importlib.util

    path = README.parent / ".ci" / "quickstart"
    loader = importlib.machinery.SourceFileLoader("ci_quickstart", str(path))
    spec = importlib.util.spec_from_loader("ci_quickstart", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_ci_runs_the_readme_quick_start_commands_as_written():
    """CI runs what ``.ci/quickstart`` extracts; it extracts exactly the two lines a reader sees in
    the Quick start block (located here independently, by a plain text search), and ``.ci/run``
    names no install or test command of its own."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    shown = section.split("```", 2)[1].split("\n", 1)[1].strip().splitlines()
    assert _quickstart().quickstart_commands(text) == shown
    assert len(shown) == 2 and shown[0].endswith("scopecheck run contracts/") and shown[1].endswith("&& pytest")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert ".ci/quickstart" in ci
    code = [ln for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    # the one install of its own: the docs extra, for `mkdocs build --strict` after the two commands
    assert not any(re.search(r"pip install (-q )?(torch|-e (?!\"\.\[docs\]\"))|\bpytest\b|scopecheck run", ln)
                   for ln in code), code
    assert any(re.search(r'pip install -q -e "\.\[docs\]"', ln) for ln in code) and \
        any(re.search(r"mkdocs build --strict -d ", ln) for ln in code), "CI builds the docs site"


@pytest.mark.parametrize("readme, why", [
    ("# x\n", "no '## Quick start' heading"),
    ("## Quick start\n\n```bash\npip install x\n", "no closed fenced code block"),
])
def test_quickstart_extraction_refuses_a_readme_without_the_block(readme, why):
    with pytest.raises(SystemExit, match=why):
        _quickstart().quickstart_commands(readme)
