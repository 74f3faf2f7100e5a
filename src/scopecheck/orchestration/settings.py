"""How a :class:`~scopecheck.orchestration.runner.Runner` runs: one frozen value, given at construction.

Every setting a caller chooses (the command line, the pytest plugin, the matrix, the Python API)
is a field here; a runner never has its settings assigned after it is built, so two runs with the
same settings and contracts compute the same thing however they were started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:                      # engine.models imports torch: only the type is needed here
    from scopecheck.engine.models import LoadOptions

#: where the examples of a dataset contract run (:mod:`scopecheck.orchestration.executors`)
EXECUTORS = ("serial", "ray")


@dataclass(frozen=True)
class RunSettings:
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    dtype: str = "float32"
    progress: bool = False              # progress bars (methods, checks, dataset examples)
    debug: bool = False                 # re-raise a contract's exception instead of recording it
    max_evaluations: int | None = None  # the model-evaluation budget of one contract
    strict: bool = False                # input warnings (tokenization) are errors
    #: dataset contracts: where records stream (None: memory only), and whether a run reuses them
    store_dir: str | None = None
    resume: bool = False
    #: dataset files outside the contract's folder (absolute, ``~``, ``..``, symlinks) are refused
    #: unless the caller lifts the rule (``--allow-outside-data``; never a contract statement)
    allow_outside_data: bool = False
    fail_fast: bool = False             # a dataset contract stops at its first bad row or example
    #: ``expect snapshot(...)`` writes a missing, stale or failing snapshot (``--update-snapshots``)
    update_snapshots: bool = False
    executor: str = "serial"            # one of EXECUTORS
    ray_address: str | None = None      # the Ray cluster (None: Ray starts locally)
    workers: int = 2                    # Ray actors, each loading the model once
    #: how models load (pickles, remote code: command line only); None: ``LoadOptions(device, dtype)``
    options: LoadOptions | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}: one of {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")


__all__ = ["EXECUTORS", "RunSettings"]
