"""CLI commands ``check``, ``fmt`` and ``list``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from scopecheck.cli._common import atomic_write, print_errors
from scopecheck.dsl.format import fmt_features, fmt_params, fmt_score, fmt_selector, format_document, format_text
from scopecheck.dsl.parser import parse_text
from scopecheck.engine.preflight import preflight
from scopecheck.errors import ContractError, error_count
from scopecheck.loader import check_file, collect
from scopecheck.spec import model as m
from scopecheck.spec.check_registry import CHECKS, COMMON_CHECK_PARAMS, PROTOCOLS, PROTOCOL_PARAMS
from scopecheck.spec.jsonio import check_output, to_json
from scopecheck.spec.registry import CONTRACT_KINDS, METHODS
from scopecheck.spec.standard import STANDARD
from scopecheck.spec.text import resolved_scope_lines
from scopecheck.spec.validate import resolve


#: the width of tables printed to something that is not a terminal (a pipe, a file, CI logs)
PIPE_WIDTH = 100


def _console(stderr: bool = False, width: int | None = None):
    """A console for tables: ``width`` when stated, else the terminal's, else ``$COLUMNS``, else
    :data:`PIPE_WIDTH` (rich folds long cells to fit)."""
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if width is None and not stream.isatty():
        cols = os.environ.get("COLUMNS", "")
        width = int(cols) if cols.isdigit() and int(cols) > 0 else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, markup=False, width=width)


def cmd_check(args: argparse.Namespace) -> int:
    files, errors = collect(args.paths)
    docs_json = []
    n_docs = 0
    for f in files:
        sf = check_file(f)
        errors += list(sf.errors)
        if sf.errors:
            continue

        for d in sf.documents:
            n_docs += 1
            if isinstance(d, m.Contract):   # what the model's tokenizer reveals, before any weights load
                errors += [e.with_source(sf.text) for e in
                           preflight(d, trust_remote_code=bool(getattr(args, "trust_remote_code", False)))]
            if args.json:
                docs_json.append(to_json(d)[0])
            elif not args.quiet:
                print(f"# {d.span}")
                print(format_document(d))
                if isinstance(d, m.Contract):
                    res = resolve(d)
                    print("\n".join(resolved_scope_lines(d, res.scope, res.origin)))
                    print()
    if args.json:
        print(json.dumps(check_output(docs_json), indent=2, ensure_ascii=False))
    if errors:
        print_errors(errors)
        n = error_count(errors)
        print(f"{n} error{'s' if n != 1 else ''} in {len(files)} file(s)", file=sys.stderr)
        return 1
    if not files:
        print("no .scope files found", file=sys.stderr)
        return 1
    print(f"ok: {n_docs} document(s) in {len(files)} file(s)", file=sys.stderr)
    return 0


def cmd_fmt(args: argparse.Namespace) -> int:
    files, errors = collect(args.paths)
    changed = []
    outputs: dict[Path, str] = {}
    for f in files:
        text = f.read_text(encoding="utf-8")
        try:
            docs = parse_text(text, str(f))
            new = format_text(text, str(f))   # every statement and comment kept, in order
        except ContractError as exc:
            errors.append(exc)
            continue
        try:  # the canonical form must read back as the same documents, or nothing is written
            again = parse_text(new, str(f))
        except ContractError:
            again = None
        if again != docs:
            first = next((d for d, g in zip(docs, again or []) if d != g), docs[0] if docs else None)
            errors.append(ContractError(
                "the canonical form cannot express this file exactly; it is left as it is",
                first.span if first is not None else None, rule="fmt",
                expected="a file whose formatted text reads back as the same contracts").with_source(text))
            continue
        outputs[f] = new
        if new != text:
            changed.append(f)
    if errors:  # nothing is written when any file fails to parse
        print_errors(errors)
        return 1
    if args.check:
        for f in changed:
            print(f"would reformat {f}")
        return 1 if changed else 0
    if args.write:
        for f in changed:
            atomic_write(f, outputs[f])
            print(f"reformatted {f}", file=sys.stderr)
        return 0
    for f in files:
        sys.stdout.write(outputs[f])
    return 0


#: columns of `list` whose cells are names a reader searches for: never folded to fit the width
NAMES = ("name", "method", "check", "contract", "parameter")


def cmd_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    con = _console(width=getattr(args, "width", None))
    t = Table(title="Standard contracts (seed 000, Table 1)", show_lines=True)
    for col in ("name", "S score", "C held fixed", "O output", "P process", "E eligible", "parameters"):
        t.add_column(col, no_wrap=col in NAMES, overflow="fold")
    for std in STANDARD.values():
        params = {k: m.Param(k, m.Ident("t")) for k in std.params
                  if k in ("target", "step")}
        sc = std.build(params, m.NOSPAN)
        proc = sc.process.kind + fmt_params(sc.process.params)
        t.add_row(std.name, fmt_score(sc.score), fmt_features(sc.fixed), fmt_selector(sc.explain), proc,
                  fmt_features(sc.eligible), "; ".join(f"{k}: {v}" for k, v in std.params.items()))
    con.print(t)
    t = Table(title="Methods and the contracts they support", show_lines=False)
    t.add_column("method", no_wrap=True)
    t.add_column("family", overflow="fold")
    for k in CONTRACT_KINDS:
        t.add_column(k.replace("_", " "), justify="center", overflow="fold")
    for info in METHODS.values():
        t.add_row(info.name, info.family, *["yes" if k in info.supports else "-" for k in CONTRACT_KINDS])
    con.print(t)
    t = Table(title="Method parameters (every method also takes aggregate = tokens | words)", show_lines=True)
    for col in ("method", "parameter", "values", "default", "meaning"):
        t.add_column(col, no_wrap=col in NAMES, overflow="fold")
    for info in METHODS.values():
        for key, spec in info.params.items():
            t.add_row(info.name, key, spec.describe(), spec.shown_default(), spec.help)
    con.print(t)
    t = Table(title="Check protocols by contract (DESIGN section 4)")
    for col in ("contract", "perturb", "then", "measure"):
        t.add_column(col, no_wrap=col in NAMES, overflow="fold")
    for p in PROTOCOLS.values():
        t.add_row(p.kind, " and ".join(p.perturb), p.then, p.measure)
    con.print(t)
    t = Table(title="Checks")
    for col in ("check", "family", "fields (range, better)", "summary"):
        t.add_column(col, no_wrap=col in NAMES, overflow="fold")
    for c in CHECKS.values():
        fields = ", ".join(f"{k} [{f.low:g}, {f.high:g}] {f.better}" for k, f in c.fields.items())
        t.add_row(c.name, c.family, fields, c.summary)
    con.print(t)
    common = "; ".join(f"{k} = {p.kind} ({p.shown_default()})" for k, p in COMMON_CHECK_PARAMS.items())
    proto = [c.name for c in CHECKS.values() if c.protocol]
    t = Table(title=f"Check parameters (every check also takes {common}; the protocol parameters are "
                    f"taken by {', '.join(proto)})", show_lines=True)
    for col in ("check", "parameter", "values", "default", "meaning"):
        t.add_column(col, no_wrap=col in NAMES, overflow="fold")
    for key, spec in PROTOCOL_PARAMS.items():
        t.add_row("(protocol)", key, spec.describe(), spec.shown_default(), spec.help)
    for c in CHECKS.values():
        for key, spec in c.params.items():
            if not (c.protocol and key in PROTOCOL_PARAMS):
                t.add_row(c.name, key, spec.describe(), spec.shown_default(), spec.help)
    con.print(t)
    return 0


def add_commands(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    p = sub.add_parser("check", help="parse and validate contract files; print the normalized contracts")
    p.add_argument("paths", nargs="+")
    p.add_argument("--json", action="store_true", help="print normalized JSON (validates against the schema)")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a model folder's own code (config auto_map) be imported to read its tokenizer and "
                        "config (refused by default: nothing from a model folder runs unless you say so)")
    commands["check"] = cmd_check
    p = sub.add_parser("fmt", help="print contract files in canonical form")
    p.add_argument("paths", nargs="+")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if a file is not canonical")
    g.add_argument("--write", action="store_true", help="rewrite files in place")
    commands["fmt"] = cmd_fmt
    p = sub.add_parser("list", help="standard contracts, methods, checks, and which pairs are valid")
    p.add_argument("--width", type=int, default=None, metavar="N",
                   help=f"table width in columns (default: the terminal's; when piped $COLUMNS, else {PIPE_WIDTH})")
    commands["list"] = cmd_list
