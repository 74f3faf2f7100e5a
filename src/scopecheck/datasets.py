"""Examples of a dataset contract: a JSON Lines / CSV file or a reference task split.

``load_examples(contract)`` returns the examples (each a prompt, an optional output text,
optional ground truth and a stable id) and one :class:`RowError` per row that cannot be an
example (a missing field, an empty prompt, a line that is not JSON): a bad row never hides
the good ones. Torch-free.

Parameters of ``dataset "..."(...)``: ``prompt`` / ``output`` / ``truth`` / ``id`` name the
fields (defaults ``prompt``, ``output``, ``truth``, the row number); ``limit`` keeps the first
N examples (after ``shuffle = <seed>``). For ``dataset reference:<task>/<split>(limit = N, seed
= s)`` the examples are ``generate(task, N, split=split, seed=s)`` with their causal ground truth.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scopecheck.errors import ContractValidationError, Span
from scopecheck.spec import model as m

PATH_PARAMS = ("prompt", "output", "truth", "id", "limit", "shuffle")
REFERENCE_PARAMS = ("limit", "seed")
MAX_LIMIT = 1_000_000


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str
    output: str | None
    truth: tuple[str, ...] | None = None            # prompt token texts that cause the output (JSONL)
    causal: tuple[tuple[int, ...], ...] | None = None   # reference tasks: per output token, prompt indices
    prompt_tokens: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RowError:
    row: int                     # 1-based line (JSONL) or data row (CSV)
    id: str | None
    message: str


@dataclass(frozen=True)
class Loaded:
    examples: tuple[Example, ...]
    errors: tuple[RowError, ...]
    fingerprint: str             # sha256 of the data (file bytes, or the reference recipe)
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


def _params(ds: m.Dataset) -> dict[str, Any]:
    return {p.key: m.py_value(p.value) for p in ds.params}


def dataset_errors(ds: m.Dataset) -> list[ContractValidationError]:
    """Static checks of the ``dataset`` statement (names, types, ranges)."""
    allowed = REFERENCE_PARAMS if ds.kind == "reference" else PATH_PARAMS
    errs = []
    for p in ds.params:
        if p.key not in allowed:
            errs.append(ContractValidationError(f"dataset has no parameter `{p.key}`", p.span,
                                                expected=", ".join(allowed), rule="params"))
        elif p.key in ("prompt", "output", "truth", "id") and not isinstance(p.value, m.Text):
            errs.append(ContractValidationError(f"`{p.key}` names a field, as a string", p.span,
                                                expected=f'{p.key} = "{p.key}"', rule="params"))
        elif p.key in ("limit", "shuffle", "seed"):
            v = p.value
            lo = 1 if p.key == "limit" else 0
            hi = MAX_LIMIT if p.key == "limit" else 2 ** 63 - 1
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                errs.append(ContractValidationError(f"dataset: `{p.key} = {v}` is out of range", p.span,
                                                    expected=f"{p.key} = an integer in [{lo}, {hi}]", rule="params"))
    if ds.kind == "reference":
        from scopecheck.engine.reference.tasks import SPLITS, TASKS

        task, _, split = ds.name.partition("/")
        if task not in TASKS or split not in SPLITS:
            errs.append(ContractValidationError(f"no reference dataset `{ds.name}`", ds.span,
                                                expected=", ".join(f"reference:{t}/{s}" for t in TASKS for s in SPLITS),
                                                rule="unknown-name"))
    return errs


def resolve_path(ds: m.Dataset, base_dir: Path | None, allow_outside: bool = False) -> Path:
    """The data file, relative to the contract file's folder and inside its tree."""
    p = Path(ds.name).expanduser()
    base = (base_dir or Path(".")).resolve()
    full = (p if p.is_absolute() else base / p).resolve()
    if not allow_outside and not p.is_absolute() and base not in full.parents:
        raise ContractValidationError(f"dataset {ds.name!r} resolves outside the contract's folder ({full})", ds.span,
                                      expected="a file inside the folder of the contract file", rule="dataset")
    if not full.is_file():
        raise ContractValidationError(f"dataset file {str(full)!r} does not exist", ds.span,
                                      expected="a .jsonl or .csv file", rule="dataset")
    return full


def _as_truth(v: Any) -> tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise ValueError("truth must be a string or a list of strings")


def load_examples(ds: m.Dataset, base_dir: Path | None) -> Loaded:
    prm = _params(ds)
    if ds.kind == "reference":
        from scopecheck.engine.reference.tasks import generate

        task, _, split = ds.name.partition("/")
        n, seed = int(prm.get("limit", 100)), int(prm.get("seed", 0))
        exs = generate(task, n, split=split, seed=seed)
        out = tuple(Example(f"{task}/{split}/{seed}/{i}", e.prompt, e.output, None, e.causal, e.prompt_tokens)
                    for i, e in enumerate(exs))
        fp = hashlib.sha256(json.dumps([task, split, n, seed]).encode()).hexdigest()
        return Loaded(out, (), fp, f"reference:{ds.name}")
    path = resolve_path(ds, base_dir)
    raw = path.read_bytes()
    fp = hashlib.sha256(raw).hexdigest()
    rows: list[tuple[int, Any]] = []
    errors: list[RowError] = []
    text = raw.decode("utf-8", errors="replace")
    if path.suffix.lower() == ".csv":
        for i, row in enumerate(csv.DictReader(text.splitlines()), 1):
            rows.append((i, row))
    else:
        for i, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                rows.append((i, json.loads(line)))
            except json.JSONDecodeError as exc:
                errors.append(RowError(i, None, f"not a JSON object: {exc.msg}"))
    fields = {k: str(prm.get(k, k)) for k in ("prompt", "output", "truth")}
    id_field = prm.get("id")
    examples: list[Example] = []
    for i, row in rows:
        rid = None
        try:
            if not isinstance(row, dict):
                raise ValueError("a row must be an object with named fields")
            rid = str(row[id_field]) if id_field is not None and id_field in row else f"row{i}"
            if fields["prompt"] not in row:
                raise ValueError(f"no field {fields['prompt']!r}; fields: {', '.join(map(str, row))}")
            prompt = row[fields["prompt"]]
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError("the prompt is empty")
            output = row.get(fields["output"])
            if output is not None and (not isinstance(output, str) or not output.strip()):
                raise ValueError("the output is empty")
            truth = _as_truth(row.get(fields["truth"]))
            examples.append(Example(rid, prompt, output, truth))
        except (ValueError, KeyError) as exc:
            errors.append(RowError(i, rid, str(exc)))
    if "shuffle" in prm:
        random.Random(int(prm["shuffle"])).shuffle(examples)
    if "limit" in prm:
        examples = examples[: int(prm["limit"])]
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        raise ContractValidationError(f"example id {dup!r} occurs twice in {path.name}", ds.span,
                                      expected="a unique id per row", rule="dataset")
    return Loaded(tuple(examples), tuple(errors), fp, str(path))


def example_contract(c: m.Contract, ex: Example) -> m.Contract:
    """The contract for one example: its prompt, and its output (or the contract's decoding rule)."""
    import dataclasses

    span = c.dataset.span if c.dataset is not None else c.span
    prompt = m.Prompt((m.Segment(None, ex.prompt, span),), span)
    output = m.Output(text=ex.output, span=span) if ex.output is not None else c.output
    # the expectations are the dataset contract's: aggregates are evaluated over all examples
    plain = tuple(e for e in c.expects if not any(isinstance(s, m.Aggregate) for s in (e.left, e.right)))
    return dataclasses.replace(c, prompt=prompt, output=output, dataset=None, name=f"{c.name} [{ex.id}]", expects=plain,
                               span=Span(c.span.path, c.span.line, c.span.column, c.span.end_line,
                                         c.span.end_column))


__all__ = ["Example", "Loaded", "RowError", "dataset_errors", "example_contract", "load_examples", "resolve_path"]
