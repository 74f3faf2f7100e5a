"""Engine-backed commands of the CLI: run, audit, matrix (torch is imported only here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

DEFAULT_REPORT_DIR = "scopecheck-report"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: cuda when available)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow pickle checkpoints (never enabled by a contract file)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code from the model directory (never enabled by a contract file)")


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from scopecheck.cli import _print_errors
    from scopecheck.engine.models import LoadOptions
    from scopecheck.loader import check_file, collect
    from scopecheck.report.terminal import heatmap_text
    from scopecheck.runner import Runner
    from scopecheck.spec import model as m

    files, errors = collect(args.paths)
    contracts: list[m.Contract] = []
    for f in files:
        sf = check_file(f)
        errors += list(sf.errors)
        if not sf.errors:
            contracts += [d for d in sf.documents if isinstance(d, m.Contract)]
    if errors:
        _print_errors(errors)
        return 1
    out = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 160)
    runner = Runner(device=args.device, dtype=args.dtype, progress=sys.stderr.isatty())
    runner.options = LoadOptions(args.device, args.dtype, args.allow_pickle, args.trust_remote_code)
    runs = []
    for c in contracts:
        cr = runner.run(c)
        if cr.result is not None and not args.no_expect:
            cr.outcomes = [runner.evaluate(cr, e) for e in c.expects]
        runs.append(cr)
        if cr.result is not None:
            out.print(heatmap_text(cr.result, color=sys.stdout.isatty()))
        else:
            out.print(f"{c.span}: {c.name}: did not run\n{cr.error}")
        for o in cr.outcomes:
            out.print(("  PASS  " if o.passed else "  FAIL  ") + f"line {o.line}: {o.explanation}")
        out.print()
    from scopecheck.report.summary import print_summary

    print_summary(runs, out)
    report_dir = args.report or DEFAULT_REPORT_DIR
    if report_dir != "-":
        from scopecheck.report.html import write_report

        path = write_report(runs, Path(report_dir))
        print(f"HTML report: {path}", file=sys.stderr)
    if args.json:
        from scopecheck.report.jsonout import results_json, write_json

        if args.json == "-":
            import json

            print(json.dumps(results_json(runs), indent=2))
        else:
            write_json(runs, Path(args.json))
            print(f"JSON results: {args.json}", file=sys.stderr)
    failed = sum(1 for r in runs for o in r.outcomes if not o.passed) + sum(1 for r in runs if r.result is None)
    passed = sum(1 for r in runs for o in r.outcomes if o.passed)
    print(f"{len(runs)} contract(s) run; expectations: {passed} passed, {failed} failed",
          file=sys.stderr)
    return 1 if failed else 0


def add_commands(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    p = sub.add_parser("run", help="run contracts: attribution maps, checks, expectations, reports")
    p.add_argument("paths", nargs="+")
    _common(p)
    p.add_argument("--report", default=None, metavar="DIR",
                   help=f"HTML report folder (default {DEFAULT_REPORT_DIR}; '-' for none)")
    p.add_argument("--json", default=None, metavar="FILE", help="write JSON results to FILE ('-' for stdout)")
    p.add_argument("--no-expect", action="store_true", help="compute the maps only")
    commands["run"] = cmd_run
    try:
        from scopecheck import cli_audit

        cli_audit.add_commands(sub, commands, _common)
    except ImportError:
        pass
