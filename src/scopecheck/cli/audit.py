"""CLI commands ``audit`` and ``matrix``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from scopecheck.cli._common import destination_problems, refuse
from scopecheck.orchestration import matrix
from scopecheck.report.jsonout import jsonable
from scopecheck.runtime.files import atomic_write_many, atomic_write_text


class _NamedOption(argparse.Action):
    """Stores the value and the spelling used (``--output`` or ``--out``), for messages about it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_option", option_string or self.option_strings[0])


def cmd_audit(args: argparse.Namespace) -> int:
    bad_outputs = destination_problems({getattr(args, "out_option", "--output"): args.out}, {})
    if bad_outputs:
        return refuse(bad_outputs)
    # lazy: imports numpy
    from scopecheck.audit import audit_paths, exit_code, render_html, render_markdown, render_text, to_json

    reports = audit_paths(args.paths, dynamic=args.dynamic, device=args.device)
    if args.format == "text":
        text = render_text(reports, stream=sys.stdout)
    elif args.detail:           # the per-claim reports, each with its elements, reasons and re-run maps
        text = {"markdown": lambda: render_markdown(reports), "html": lambda: render_html(reports),
                "json": lambda: json.dumps([to_json(r) for r in reports], indent=2)}[args.format]()
    else:                       # the table: one row per claim, and the summary
        from scopecheck.audit.table import build_table, table_json  # lazy: imports numpy
        from scopecheck.audit.table_render import render_table_html, render_table_markdown  # lazy: imports numpy

        # claim files are linked (HTML) and named relative to where the table is written
        base = Path(args.out).resolve().parent if args.out else Path.cwd()
        table = build_table(reports, dynamic=args.dynamic, base=base)
        if args.format == "markdown":
            text = render_table_markdown(table)
        elif args.format == "html":
            text = render_table_html(table)
        else:
            text = json.dumps(table_json(table), indent=2, ensure_ascii=False, allow_nan=False)
    if args.out:
        try:
            atomic_write_text(args.out, text)
        except OSError as exc:  # a DestinationError: the destination changed while the audit ran
            print(f"scopecheck: cannot write the audit ({exc}); nothing was replaced", file=sys.stderr)
            return 1
        print(f"audit written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return exit_code(reports)


def cmd_matrix(args: argparse.Namespace) -> int:
    bad_outputs = destination_problems({"--json": args.json, "--html": args.html}, {"--store": args.store})
    if bad_outputs:             # before any model loads
        return refuse(bad_outputs)
    from rich.console import Console

    store = None if args.store == "-" else args.store
    cells = matrix.run_matrix(args.examples, args.methods or None, args.device, dataset=args.dataset, store=store,
                       resume=args.resume, path=str(Path.cwd() / "matrix.scope"))
    Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 160).print(
        matrix.matrix_table(cells, args.dataset))

    outputs = []                # rendered first, then replaced together
    if args.json:
        from dataclasses import asdict

        # strict JSON: a cell that did not run has NaN fields, written as "nan" (never a bare NaN)
        outputs.append((args.json, json.dumps(jsonable([asdict(c) for c in cells]), indent=2,
                                              allow_nan=False) + "\n"))
    if args.html:
        outputs.append((args.html, matrix.matrix_html(cells, args.dataset)))
    try:
        atomic_write_many(outputs)
    except OSError as exc:      # a DestinationError: the destination changed while the matrix ran
        print(f"scopecheck: cannot write the matrix ({exc}); nothing was replaced", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    p = sub.add_parser("audit", help="audit attribution claims: unstated elements, fallacies, impossible numbers")
    p.add_argument("paths", nargs="+")
    p.add_argument("--dynamic", action="store_true", help="re-run claims that name a model and a prompt")
    p.add_argument("--device", default="auto")
    p.add_argument("--format", default="text", choices=("text", "markdown", "html", "json"),
                   help="text: the per-claim report (default); markdown, html, json: the audit table, one row "
                        "per claim, and its summary")
    p.add_argument("--detail", action="store_true",
                   help="with --format markdown/html/json: the per-claim reports instead of the table")
    p.add_argument("--output", "--out", dest="out", default=None, metavar="FILE", action=_NamedOption,
                   help="write to FILE (atomically: the previous file or the complete new one) instead of stdout")
    commands["audit"] = cmd_audit
    p = sub.add_parser("matrix", help="every method under every autoregressive standard contract, evaluated")
    p.add_argument("--examples", type=int, default=3, help="examples per pair (default 3)")
    p.add_argument("--dataset", default="reference:translate/heldout",
                   help="reference:<task>/<split> or a JSONL file (prompt/output/truth/id fields)")
    p.add_argument("--store", default="scopecheck-store", metavar="DIR", help="result store ('-': memory only)")
    p.add_argument("--resume", action="store_true", help="reuse the store's records")
    p.add_argument("--html", default=None, metavar="FILE", help="write the matrix as an HTML heatmap")
    p.add_argument("--methods", nargs="*", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, metavar="FILE")
    commands["matrix"] = cmd_matrix
