"""The declared method table, as the engine's modules have always imported it.

A view of :mod:`scopecheck.spec.registry`, which holds every method's entry (name, family,
supported contracts, parameters with their defaults, implementation); nothing is declared
here. ``METHODS`` is the registry itself, so a method registered from outside the package
(:func:`scopecheck.register_method`) is seen here too. Torch-free.
"""

from __future__ import annotations

from scopecheck.spec.registry import (
    AUTOREGRESSIVE_KINDS,
    CONTRACT_KINDS,
    DIFFUSION_TOKEN_KINDS,
    METHOD_ALIASES,
    METHODS,
    TOKEN_KINDS,
    supported_methods,
)
from scopecheck.spec.registry import MethodEntry as MethodInfo

__all__ = ["AUTOREGRESSIVE_KINDS", "CONTRACT_KINDS", "DIFFUSION_TOKEN_KINDS", "METHODS", "METHOD_ALIASES",
           "MethodInfo", "TOKEN_KINDS", "supported_methods"]
