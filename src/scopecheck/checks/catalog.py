"""Declared checks and the protocol each contract kind requires (DESIGN section 4), as the
checks' modules have always imported them.

A view of :mod:`scopecheck.spec.check_registry`, which holds every check's entry (name, family,
fields with their ranges, supported contracts, protocol, parameters with their defaults,
implementation); nothing is declared here. ``CHECKS`` is the registry itself, so a check
registered from outside the package (:func:`scopecheck.register_check`) is seen here too.
Torch-free.
"""

from __future__ import annotations

from scopecheck.spec.check_registry import (
    CHECKS,
    INF,
    MAP_FUNCTIONS,
    METRIC_RANGES,
    PERTURB_OWNER,
    PROTOCOL_OWNER,
    PROTOCOLS,
    Field,
    Protocol,
)
from scopecheck.spec.check_registry import CheckEntry as CheckInfo

__all__ = ["CHECKS", "INF", "MAP_FUNCTIONS", "METRIC_RANGES", "PERTURB_OWNER", "PROTOCOLS", "PROTOCOL_OWNER",
           "CheckInfo", "Field", "Protocol"]
