"""Time to check pathological contracts (not a test): 5,000 overlapping selectors, 5,000
segments, 5,000 expectations, each checked and its error list rendered, best of three.

    python benchmarks/validate_measure.py [--n 5000]

The tests (tests/spec/test_validate_limits.py) bound the growth of the Python calls instead,
which is the same on every machine; this prints the seconds on this one, split into parsing and
validation.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scopecheck.dsl.parser import parse_text  # noqa: E402
from tests.spec.test_validate_limits import checked, expectations, overlapping, segments  # noqa: E402


def best(fn, repeats: int = 3) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    n = ap.parse_args().n
    checked(overlapping(50))                    # the parser is built once, outside the timing
    for shape in (overlapping, segments, expectations):
        text = shape(n)
        total = best(lambda: checked(text))
        parse = best(lambda: parse_text(text, "c.scope"))
        print(f"{shape.__name__:>12} n={n}: {total:.3f} s checked and rendered "
              f"({parse:.3f} s parsing, {total - parse:.3f} s the rest)")


if __name__ == "__main__":
    main()
