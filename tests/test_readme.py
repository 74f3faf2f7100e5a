"""README truth: every contract and claim shown in the README parses and validates, every
contract runs on its model with all its expectations passing, every claim gets the verdict
its own expectation states."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scopecheck.loader import check_text
from scopecheck.orchestration.runner import Runner
from scopecheck.spec import model as m

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    out = []
    for body in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        code = [ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if code and re.match(r'(contract|claim) "', code[0]):
            out.append(body)
    return out


def test_readme_shows_contracts():
    kinds = [next(ln for ln in b.splitlines() if ln.strip() and not ln.lstrip().startswith("#")).split()[0]
             for b in blocks()]
    assert kinds.count("contract") >= 1 and kinds.count("claim") >= 1


@pytest.mark.parametrize("i", range(len(blocks())))
def test_readme_block_runs_and_passes(i):
    text = blocks()[i]
    # read as if it were a file in contracts/ (relative dataset paths resolve there)
    sf = check_text(text, str(README.parent / "contracts" / f"README-block{i + 1}.scope"))
    assert not sf.errors, "\n".join(e.render() for e in sf.errors)
    runner = Runner(device="cpu")            # results in memory: no store written
    for doc in sf.documents:
        if isinstance(doc, m.Contract):
            cr = runner.run(doc)
            assert cr.error is None, cr.error
            for e in doc.expects:
                o = runner.evaluate(cr, e)
                assert o.passed, o.explanation
        else:
            from scopecheck.audit import audit_claim

            report = audit_claim(doc)
            assert report.expectations and all(o.passed for o in report.expectations), report.expectations


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
    assert not any(re.search(r"pip install (-q )?(torch|-e)|\bpytest\b|scopecheck run", ln) for ln in code), code


@pytest.mark.parametrize("readme, why", [
    ("# x\n", "no '## Quick start' heading"),
    ("## Quick start\n\n```bash\npip install x\n", "no closed fenced code block"),
])
def test_quickstart_extraction_refuses_a_readme_without_the_block(readme, why):
    with pytest.raises(SystemExit, match=why):
        _quickstart().quickstart_commands(readme)
