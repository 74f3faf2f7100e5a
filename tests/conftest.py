import os

import pytest
from hypothesis import settings

# The suite is the same everywhere: CI runs what a developer runs (a CI=true switch once made the
# CI suite 20 times deeper in places and twice as long). Deep runs are asked for by name:
# HYPOTHESIS_PROFILE=deep for 2,000 examples per property, --slow for the 100,000-text fuzz run.
settings.register_profile("deep", max_examples=2000, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "dev")

pytest_plugins = ["pytester"]

# The golden contract files are data for tests/dsl/test_golden.py, not test files.
collect_ignore_glob = ["dsl/golden/*"]


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="long runs: the 100,000-text fuzz test (tests/test_hardening.py)")


WARM = """contract "warm" {
    model    reference:translate-ar
    prompt   "Translate to French: The dog is black."
    output   "Le chien est noir."
    use prompt_conditioned(target = "noir")
    method occlusion(operator = zero)
}
"""


@pytest.fixture(scope="session")
def _engine_imported():
    """Every module a reference contract's run imports (torch, transformers and the lazily
    imported model classes), imported once for the session."""
    from scopecheck.engine.run import run

    run(WARM)


@pytest.fixture
def pytester(_engine_imported, pytester):
    """pytester, with the engine imported before its ``sys.modules`` snapshot. pytester restores
    that snapshot when a test ends, dropping every module first imported during the test; the
    next in-process run imports them again, which torch's C extension does not survive (a
    segfault) and transformers' lazy modules do not either ("Could not import module
    'LlamaConfig'"), seen running tests/test_plugin.py on its own. Imported by the session
    fixture, set up before the snapshot, they stay."""
    return pytester
