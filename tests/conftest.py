import os

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
