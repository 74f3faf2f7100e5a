"""``scopecheck compare A.json B.json``: two results documents side by side
(:mod:`scopecheck.report.compare`): the provenance that differs (the software's, then each
contract's), then per contract the maps' per-token differences, the largest absolute difference,
the rank correlation and top-k overlap, and the checks, expectations and dataset examples whose
outcomes changed.

Exit status: 0 when the runs are equal within the tolerance, 1 when they differ, 2 when a file
cannot be compared (missing, not JSON, not a results document: one positioned error naming it).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from scopecheck.cli._common import print_errors
from scopecheck.errors import ContractError


def _non_negative(kind: type) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {'number' if kind is float else 'whole number'}: {text!r}")
        if not v >= 0 or v == float("inf"):
            raise argparse.ArgumentTypeError(f"must be finite and at least 0: {text!r}")
        return v
    return parse


def cmd_compare(args: argparse.Namespace) -> int:
    from scopecheck.report.compare import compare, comparison_json, read_results, render

    try:
        a, b = read_results(args.a), read_results(args.b)
    except ContractError as exc:
        print_errors([exc])
        return 2
    c = compare(a, b, tolerance=args.tolerance, top_k=args.top_k)
    if args.json:
        sys.stdout.write(json.dumps(comparison_json(c, args.a, args.b), indent=2, ensure_ascii=False,
                                    allow_nan=False) + "\n")
    else:
        sys.stdout.write(render(c, args.a, args.b, show=args.show))
    return 0 if c.equal else 1


def add_commands(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    from scopecheck.report.compare import TOLERANCE, TOP_K

    p = sub.add_parser("compare", help="two JSON results side by side: provenance, map differences, changed "
                                       "outcomes (exit 0 equal, 1 different, 2 bad input)",
                       description="Compare two results files written by `scopecheck run --json`. Exit status: "
                                   "0 when the runs are equal within the tolerance (provenance differences are "
                                   "shown, not counted), 1 when they differ, 2 when a file is missing or not a "
                                   "results file.")
    p.add_argument("a", metavar="A.json")
    p.add_argument("b", metavar="B.json")
    p.add_argument("--tolerance", type=_non_negative(float), default=TOLERANCE,
                   help=f"absolute tolerance for numbers: scores, check fields, measured values (default {TOLERANCE:g})")
    p.add_argument("--top-k", type=_non_negative(int), default=TOP_K,
                   help=f"k of the top-k overlap of the eligible tokens (default {TOP_K})")
    p.add_argument("--show", type=_non_negative(int), default=20,
                   help="at most this many differing tokens per map in the text (default 20; --json has all)")
    p.add_argument("--json", action="store_true", help="a JSON document instead of the text")
    commands["compare"] = cmd_compare
