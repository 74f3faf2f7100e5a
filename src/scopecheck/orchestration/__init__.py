"""The orchestration layer: running contracts and evaluating their expectations.

Modules, each importing only those above it:

* :mod:`~scopecheck.orchestration.settings`: :class:`RunSettings`, how a runner runs (frozen).
* :mod:`~scopecheck.orchestration.records`: what a run produces (a contract's run, an example's
  values, an expectation's outcome).
* :mod:`~scopecheck.orchestration.expect`: the ``expect`` clauses of a single run or a family.
* :mod:`~scopecheck.orchestration.examples`: one example of a dataset contract and its values.
* :mod:`~scopecheck.orchestration.executors`: where examples run (``serial``, ``ray``).
* :mod:`~scopecheck.orchestration.store`, :mod:`~scopecheck.orchestration.stats`: the resumable
  result store; aggregates with n and a 95% interval.
* :mod:`~scopecheck.orchestration.dataset`: a dataset contract's run (resume, store, fail-fast,
  once for every executor) and its aggregate expectations.
* :mod:`~scopecheck.orchestration.runner`: the :class:`Runner`.
* :mod:`~scopecheck.orchestration.matrix`: the method x contract matrix over a dataset.

Importing this package does not import torch. (Not ``scopecheck.run``: that name is the public
function :func:`scopecheck.run`, which a subpackage of that name would shadow once imported.)
"""
