import os

from hypothesis import settings

# CI (CI=true, set by the CI runner) or HYPOTHESIS_PROFILE=ci: 2,000 examples per property.
settings.register_profile("ci", max_examples=2000, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

pytest_plugins = ["pytester"]

# The golden contract files are data for tests/dsl/test_golden.py, not test files.
collect_ignore_glob = ["dsl/golden/*"]


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="long runs: the 100,000-text fuzz test (tests/test_hardening.py)")
