"""scopecheck: a test harness for feature-attribution claims about generative language models.

Contracts state the SCOPE tuple (Score, held fixed, Output, Process, Eligible features)
of an attribution claim; scopecheck validates them, derives the computation and the
checks that are valid for them, and runs those checks as tests.

Importing ``scopecheck`` does not import torch; :func:`run` and :func:`attribute` do,
when first called.
"""

from __future__ import annotations

import sys as _sys

if _sys.argv and (_sys.argv[0] == "-m" or _sys.argv[0].replace("\\", "/").rsplit("/", 1)[-1].startswith("scopecheck")):
    # the ``scopecheck`` command: its SIGINT/SIGTERM handlers come before the imports below
    import scopecheck.cli  # noqa: F401

from typing import Any  # noqa: E402

from scopecheck.errors import (
    ContractError,
    ContractErrors,
    ContractSyntaxError,
    ContractValidationError,
    SchemaError,
    UnknownNameError,
)
from scopecheck.loader import check_file, check_text, load_file, load_text
from scopecheck.spec.check_registry import CheckEntry, register_check
from scopecheck.spec.registry import MethodEntry, ParamSpec, register_method

from scopecheck.version import __version__  # noqa: E402

__all__ = [
    "CheckEntry",
    "ContractError",
    "ContractErrors",
    "ContractSyntaxError",
    "ContractValidationError",
    "MethodEntry",
    "ParamSpec",
    "SchemaError",
    "UnknownNameError",
    "__version__",
    "attribute",
    "check_file",
    "check_map",
    "check_text",
    "load_file",
    "load_text",
    "register_check",
    "register_method",
    "run",
]


def run(contract: Any, **kwargs: Any) -> Any:
    """Run a contract (a :class:`~scopecheck.spec.Contract`, contract text or a path); see
    :func:`scopecheck.engine.run.run`."""
    from scopecheck.engine.run import run as _run  # lazy: imports torch

    return _run(contract, **kwargs)


def check_map(contract: Any, scores: Any, **kwargs: Any) -> Any:
    """Check a map computed elsewhere (a list, NumPy array or torch tensor: one score per sequence
    position, or per eligible token) under a contract; see :func:`scopecheck.engine.run.check_map`."""
    from scopecheck.engine.run import check_map as _check_map  # lazy: imports torch

    return _check_map(contract, scores, **kwargs)


def attribute(**kwargs: Any) -> Any:
    """Build a contract from keyword arguments and run it; see :func:`scopecheck.engine.run.attribute`."""
    from scopecheck.engine.run import attribute as _attribute  # lazy: imports torch

    return _attribute(**kwargs)
