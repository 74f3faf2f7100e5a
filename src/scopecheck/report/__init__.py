"""Reports of contract runs: terminal heatmap, summary table, JSON results, HTML report.

Every report states the whole contract (the five SCOPE elements with their origin),
the method and its parameters, the baseline/perturbation operator, the model, device,
dtype and seed (seed 002, "Reporting Attribution Results").

Submodules are imported lazily, so ``scopecheck.report.heatmap_text`` does not pull in
matplotlib or jinja2.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "heatmap_text": "terminal",
    "print_heatmap": "terminal",
    "summary_table": "summary",
    "print_summary": "summary",
    "results_json": "jsonout",
    "run_record": "jsonout",
    "validate_results": "jsonout",
    "write_json": "jsonout",
    "schema": "jsonout",
    "schema_path": "jsonout",
    "ResultsSchemaError": "jsonout",
    "write_report": "html",
    "render_report": "html",
    "screenshot": "browser",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'scopecheck.report' has no attribute {name!r}")
    return getattr(importlib.import_module(f"scopecheck.report.{mod}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
