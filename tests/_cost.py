"""Deterministic cost measures for tests: how many Python function calls a computation makes.

Wall and CPU time depend on the machine and its load (a CI runner at twice the load failed a
2-second bound that passes in 0.4 s here), so tests never assert on them; speed targets live in
``benchmarks/``. A call count is the same on every machine for the same input, and its growth
with the input size says whether an algorithm is linear or quadratic."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any


def python_calls(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``(fn(), number of Python and C function calls it made)``."""
    n = 0

    def count(frame, event, arg):   # noqa: ARG001 - sys.setprofile's signature
        nonlocal n
        if event == "call" or event == "c_call":
            n += 1

    old = sys.getprofile()
    sys.setprofile(count)
    try:
        out = fn()
    finally:
        sys.setprofile(old)
    return out, n


def growth(cost: Callable[[int], int], n: int, factor: int = 4) -> float:
    """``cost(factor * n) / cost(n)``: about ``factor`` for a linear cost (a little more for
    n log n), ``factor ** 2`` for a quadratic one."""
    return cost(factor * n) / cost(n)


@contextlib.contextmanager
def forward_calls() -> Iterator[list[str]]:
    """The class names of every ``torch.nn.Module`` forward run inside the block (a global
    pre-hook): ``== []`` says a refusal came before any model computation."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    seen: list[str] = []
    handle = register_module_forward_pre_hook(lambda module, args: seen.append(type(module).__name__))
    try:
        yield seen
    finally:
        handle.remove()
