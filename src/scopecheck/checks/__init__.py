"""Faithfulness and sanity checks, chosen by the contract's protocol."""

from scopecheck.checks.catalog import CHECKS, MAP_FUNCTIONS, PROTOCOLS, CheckInfo, Protocol

__all__ = ["CHECKS", "MAP_FUNCTIONS", "PROTOCOLS", "CheckInfo", "Protocol"]
