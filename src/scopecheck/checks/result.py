"""What a check returns: its value, range and direction, configuration and raw data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckResult:
    name: str                          # check name (catalog.CHECKS)
    fields: dict[str, float]           # e.g. {"aopc": 0.41, "naopc": 0.77, "auc": ...}
    ranges: dict[str, tuple[float, float]]   # each field's mathematical range
    better: dict[str, str]             # each field: higher | lower | none
    config: dict[str, Any]             # operator, protocol, perturb group, k, steps, samples, seed...
    curve: tuple[float, ...] = ()      # raw curve (deletion/insertion) or samples
    passed: bool | None = None         # for checks with their own criterion (completeness, eligibility)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str | None = None) -> float:
        if name is None:
            name = next(iter(self.fields))
        return self.fields[name]
