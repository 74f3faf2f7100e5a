"""Fixtures for the engine tests; the tiny model itself lives in tiny_llama.py (importable by
name from the test modules without clashing with the other conftest modules)."""

from tiny_llama import _one_thread, problems, seq, tiny_llama  # noqa: F401
