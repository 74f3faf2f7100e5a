"""CLI command ``run`` (torch and the engine are imported inside the command, when it runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from scopecheck.checks.snapshot import unused_note
from scopecheck.cli._common import destination_problems, print_errors, refuse
from scopecheck.engine.preflight import preflight
from scopecheck.errors import visible
from scopecheck.loader import check_file, collect
from scopecheck.orchestration.records import ContractRun
from scopecheck.orchestration.settings import RunSettings
from scopecheck.report.html import render_report
from scopecheck.report.jsonout import dumps, results_json, validate_results
from scopecheck.report.summary import print_summary, work_table
from scopecheck.report.terminal import heatmap_text
from scopecheck.runtime.files import DestinationError, atomic_write_many
from scopecheck.runtime.progress import progress_enabled
from scopecheck.spec import model as m

DEFAULT_REPORT_DIR = "scopecheck-report"
DEFAULT_STORE = "scopecheck-store"


def _engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: cuda when available)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow pickle checkpoints (never enabled by a contract file)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code from the model directory (never enabled by a contract file)")


def output_problems(report_dir: str | None, json_path: str | None, store: str | None = None) -> list[str]:
    """What is wrong with the output destinations (one line each), checked before any computation:
    ``--json`` a regular file or a new one in an existing folder, ``--report`` and ``--store`` a
    folder or a new one in an existing folder (``index.html`` in the report folder a regular file)."""
    return destination_problems({"--json": json_path}, {"--report": report_dir, "--store": store},
                                 report_files=("index.html",))


def cmd_run(args: argparse.Namespace) -> int:
    report_dir = args.report or DEFAULT_REPORT_DIR
    store = args.store or DEFAULT_STORE
    bad_outputs = output_problems(report_dir, args.json, store)   # before anything is imported or loaded
    if bad_outputs:
        return refuse(bad_outputs)
    from rich.console import Console

    from scopecheck.engine.models import LoadOptions  # lazy: imports torch
    from scopecheck.orchestration.runner import Runner  # lazy: imports numpy

    files, errors = collect(args.paths)
    # every contract in file order: (contract, None) runs; (contract, why) is invalid and is reported
    # as not run (summary, HTML, JSON) with its errors
    entries: list[tuple[m.Contract, str | None]] = []
    loose = list(errors)  # errors of no contract: unreadable files, parse errors, claims
    for f in files:
        sf = check_file(f)
        # a contract's validation errors are that contract's: the file's other contracts still run
        owned: set[int] = set()
        for d in sf.documents:
            mine = [i for i, e in enumerate(sf.errors) if d.span.line <= e.span.line <= d.span.end_line]
            owned.update(mine)
            if isinstance(d, m.Contract):
                # tokenizer-level checks of every contract before any attribution starts
                pre = [] if mine else [e.with_source(sf.text) for e in preflight(d, trust_remote_code=args.trust_remote_code)]
                errors += pre
                why = [sf.errors[i].render() for i in mine] + [e.render() for e in pre]
                entries.append((d, "\n".join(why) if why else None))
            else:
                loose += [sf.errors[i] for i in mine]
        loose += [e for i, e in enumerate(sf.errors) if i not in owned]
        errors += [e for i, e in enumerate(sf.errors) if i in owned] + \
            [e for i, e in enumerate(sf.errors) if i not in owned]
    if errors:
        print_errors(errors)
        if not entries:
            return 1
    # with --json - the JSON document is stdout's only content; the human-readable output goes to stderr
    to_err = args.json == "-"
    out = Console(highlight=False, markup=False, stderr=to_err,
                  width=None if (sys.stderr if to_err else sys.stdout).isatty() else 160)

    runner = Runner(RunSettings(
        device=args.device, dtype=args.dtype, progress=progress_enabled(None),
        debug=bool(getattr(args, "debug", False)), max_evaluations=args.max_evaluations,
        strict=bool(getattr(args, "strict", False)),
        store_dir=None if store == "-" else store, resume=bool(args.resume), fail_fast=bool(args.fail_fast),
        allow_outside_data=bool(args.allow_outside_data), update_snapshots=bool(args.update_snapshots),
        executor=args.executor, ray_address=args.address,
        workers=max(1, args.workers),
        options=LoadOptions(args.device, args.dtype, args.allow_pickle, args.trust_remote_code)))
    runs = []
    for c, why in entries:
        if why is not None:  # invalid: printed above; reported as not run
            runs.append(ContractRun(c, error=why, kind="failed"))
            continue
        cr = runner.run(c)
        if not args.no_expect:
            if cr.kind == "family":        # a map family: every member's run records its outcomes
                for e in c.expects:
                    runner.evaluate(cr, e)
            elif cr.kind == "single" or cr.kind == "dataset" and cr.result is not None:
                cr.outcomes = [runner.evaluate(cr, e) for e in c.expects]
        for unit in cr.units():
            runs.append(unit)
            if unit.result is not None:
                out.print(heatmap_text(unit.result, color=sys.stdout.isatty()))
            else:
                out.print(visible(f"{c.span}: {c.name}: did not run\n{unit.error}"))
            for o in unit.outcomes:
                mark = {"stale": "  STALE ", "written": "  WROTE "}.get(o.status,
                                                                 "  PASS  " if o.passed else "  FAIL  ")
                out.print(visible(mark + f"line {o.line}: {o.explanation}"))
            out.print()

    totals = print_summary(runs, out, len(loose))

    note = unused_note(files)
    if note:
        out.print(visible(note))
    if args.verbose:
        out.print(work_table(runs))
    # both documents are rendered (and the JSON validated) before either file is replaced
    outputs: list[tuple[str, str]] = []
    if report_dir != "-":
        page = render_report(runs, problems=[e.render() for e in loose])
        outputs.append((str(Path(report_dir) / "index.html"), page))
    if args.json:
        doc = results_json(runs)
        validate_results(doc)
        if args.json == "-":
            print(dumps(doc), end="")
        else:
            outputs.append((args.json, dumps(doc)))
    try:
        if report_dir != "-":
            Path(report_dir).mkdir(exist_ok=True)
        atomic_write_many(outputs)
    except DestinationError as exc:     # changed while the contracts ran
        print(f"scopecheck: {exc}; nothing was replaced", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"scopecheck: cannot write the reports ({exc.strerror}: {exc.filename}); nothing was replaced",
              file=sys.stderr)
        return 1
    for path, _ in outputs:
        print(f"{'HTML report' if path.endswith('index.html') else 'JSON results'}: {path}", file=sys.stderr)
    # the totals line was printed once, under the summary table; the exit status says the same
    return 1 if (totals["failed"] or totals["errors"] or loose) else 0


def add_commands(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    p = sub.add_parser("run", help="run contracts: attribution maps, checks, expectations, reports")
    p.add_argument("paths", nargs="+")
    _engine_options(p)
    p.add_argument("--report", default=None, metavar="DIR",
                   help=f"HTML report folder (default {DEFAULT_REPORT_DIR}; '-' for none)")
    p.add_argument("--json", default=None, metavar="FILE", help="write JSON results to FILE ('-' for stdout)")
    p.add_argument("--no-expect", action="store_true", help="compute the maps only")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="after the summary, a table of each phase's work: perturbation rows planned, distinct "
                        "and scored, model calls and seconds per check")
    p.add_argument("--store", default=None, metavar="DIR",
                   help=f"result store of dataset contracts (default {DEFAULT_STORE}; '-' keeps results in memory)")
    p.add_argument("--resume", action="store_true",
                   help="dataset contracts: reuse the records already in the store (same contract text, data, "
                        "model, method and seed) and compute only the missing examples")
    p.add_argument("--fail-fast", action="store_true", help="dataset contracts: stop at the first bad row or example")
    p.add_argument("--executor", default="serial", choices=("serial", "ray"),
                   help="where dataset examples run: this process, or Ray actors (pip install 'scopecheck[ray]')")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start Ray locally)")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (each loads the model once; default 2)")
    p.add_argument("--max-evaluations", type=int, default=None, metavar="N",
                   help="token-positions (model rows x sequence length) one method may evaluate "
                        "(default 5e7; a contract above it is refused with its estimate)")
    p.add_argument("--strict", action="store_true",
                   help="input warnings are errors (an output whose tokens change when joined to the prompt)")
    p.add_argument("--allow-outside-data", action="store_true",
                   help="dataset files may lie outside the contract's folder (absolute, ~ and ../ paths; "
                        "refused by default: a contract file is data and names no file of yours)")
    p.add_argument("--update-snapshots", action="store_true",
                   help="expect snapshot(...): write each missing, stale or failing snapshot file (atomically) "
                        "from this run's map")
    commands["run"] = cmd_run
