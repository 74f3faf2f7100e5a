"""scopecheck: a test harness for feature-attribution claims about generative language models.

Contracts state the SCOPE tuple (Score, held fixed, Output, Process, Eligible features)
of an attribution claim; scopecheck validates them, derives the computation and the
checks that are valid for them, and runs those checks as tests.

Importing ``scopecheck`` does not import torch; :func:`run` and :func:`attribute` do,
when first called. :func:`run` returns a typed result for every contract kind, :func:`run_file`
the results of every contract of a file and :func:`load_results` reads a results JSON back
into the same types (:mod:`scopecheck.api`; its result types are importable from here).
"""

from __future__ import annotations

import sys as _sys

if _sys.argv and (_sys.argv[0] == "-m" or _sys.argv[0].replace("\\", "/").rsplit("/", 1)[-1].startswith("scopecheck")):
    # the ``scopecheck`` command: its SIGINT/SIGTERM handlers come before the imports below
    import scopecheck.cli  # noqa: F401

from typing import TYPE_CHECKING, Any  # noqa: E402

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
    "AggregateRecord",
    "ContractResult",
    "DatasetResult",
    "ExampleRecord",
    "FailedRun",
    "FamilyResult",
    "Results",
    "__version__",
    "attribute",
    "check_file",
    "check_map",
    "check_text",
    "load_file",
    "load_results",
    "load_text",
    "register_check",
    "register_method",
    "run",
    "run_file",
    "write_results",
]

if TYPE_CHECKING:      # for type checkers and the API reference; at run time __getattr__ imports them
    from scopecheck.api import (  # noqa: F401
        AggregateRecord, ContractResult, DatasetResult, ExampleRecord, FailedRun, FamilyResult, Results,
    )

#: the result types of :mod:`scopecheck.api`, imported from it when first used (not at ``import scopecheck``)
_API_TYPES = ("AggregateRecord", "ContractResult", "DatasetResult", "ExampleRecord", "FailedRun", "FamilyResult",
              "Results")


def __getattr__(name: str) -> Any:
    if name in _API_TYPES:
        import scopecheck.api  # lazy: imports numpy

        return getattr(scopecheck.api, name)
    raise AttributeError(f"module 'scopecheck' has no attribute {name!r}")


def run(contract: Any, **kwargs: Any) -> Any:
    """Run a contract (a :class:`~scopecheck.spec.Contract`, contract text or a path) of any kind:
    a :class:`~scopecheck.api.ContractResult`, :class:`~scopecheck.api.FamilyResult` (``target =
    each``) or :class:`~scopecheck.api.DatasetResult`; see :func:`scopecheck.api.run`."""
    from scopecheck.api import run as _run  # lazy: imports numpy

    return _run(contract, **kwargs)


def run_file(source: Any, **kwargs: Any) -> Any:
    """Run every contract of a file: :class:`~scopecheck.api.Results`, name -> result; see
    :func:`scopecheck.api.run_file`."""
    from scopecheck.api import run_file as _run_file  # lazy: imports numpy

    return _run_file(source, **kwargs)


def load_results(path: Any) -> Any:
    """A results JSON (``scopecheck run --json``) read back into typed results; see
    :func:`scopecheck.api.load_results`."""
    from scopecheck.api import load_results as _load_results  # lazy: imports numpy

    return _load_results(path)


def write_results(results: Any, path: Any) -> Any:
    """Write the results JSON of results of :func:`run` / :func:`run_file`; see
    :func:`scopecheck.api.write_results`."""
    from scopecheck.api import write_results as _write_results  # lazy: imports numpy

    return _write_results(results, path)


def check_map(contract: Any, scores: Any, **kwargs: Any) -> Any:
    """Check a map computed elsewhere (a list, NumPy array or torch tensor: one score per sequence
    position, or per eligible token) under a contract; see :func:`scopecheck.engine.run.check_map`."""
    from scopecheck.engine.run import check_map as _check_map  # lazy: imports torch

    return _check_map(contract, scores, **kwargs)


def attribute(**kwargs: Any) -> Any:
    """Build a contract from keyword arguments and run it; see :func:`scopecheck.engine.run.attribute`."""
    from scopecheck.engine.run import attribute as _attribute  # lazy: imports torch

    return _attribute(**kwargs)
