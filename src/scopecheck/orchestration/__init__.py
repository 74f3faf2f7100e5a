"""The orchestration layer: running contracts and evaluating their expectations.

* :mod:`~scopecheck.orchestration.runner`: the :class:`Runner` (one contract, a map family, or a
  dataset contract; each check call once per contract; expectation outcomes).
* :mod:`~scopecheck.orchestration.dataset`: a dataset contract's examples, their per-example
  values and the aggregate expectations.
* :mod:`~scopecheck.orchestration.executors`: where examples run (``serial``, ``ray``).
* :mod:`~scopecheck.orchestration.store`: the resumable result store (JSON Lines).
* :mod:`~scopecheck.orchestration.stats`: aggregates with n and a 95% interval.
* :mod:`~scopecheck.orchestration.matrix`: the method x contract matrix over a dataset.

Importing this package does not import torch. (Not ``scopecheck.run``: that name is the public
function :func:`scopecheck.run`, which a subpackage of that name would shadow once imported.)
"""
