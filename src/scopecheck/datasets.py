"""Examples of a dataset contract: a JSON Lines / CSV file, a Hugging Face dataset
(:mod:`scopecheck.hf_datasets`) or a reference task split.

``load_examples(contract)`` returns the examples (each a prompt, an optional output text,
optional ground truth and a stable id) and one :class:`RowError` per row that cannot be an
example (a missing field, an empty prompt, a line that is not JSON): a bad row never hides
the good ones. Torch-free.

Parameters of ``dataset "..."(...)``: ``prompt`` / ``output`` / ``truth`` / ``id`` name the
fields (defaults ``prompt``, ``output``, ``truth``, the row number); ``limit`` keeps the first
N examples (after ``shuffle = <seed>``). ``hf("...")`` rows follow the same rules (and take
``split`` / ``config``). Where the contract writes ``prompt { context: field("document") ... }``
the prompt is those segments, each filled from its field of the row (text segments kept as
written), so that selectors and anchors name the segments of every example. For ``dataset
reference:<task>/<split>(limit = N, seed = s)`` the examples are ``generate(task, N, split=split,
seed=s)`` with their causal ground truth.
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
from scopecheck.hf_datasets import read_rows
from scopecheck.reference.tasks import generate
from scopecheck.spec import model as m
from scopecheck.spec.anchors import anchor
from scopecheck.spec.paths import contract_file
from scopecheck.spec.references import MAX_LIMIT, PATH_PARAMS, REFERENCE_PARAMS, dataset_errors  # noqa: F401


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str
    output: str | None
    #: data files: the prompt tokens that cause the output, each a prompt text (``TextRef``, matched
    #: like ``x["..."]``) or a 1-based prompt token index
    truth: tuple[m.TextRef | int, ...] | None = None
    causal: tuple[tuple[int, ...], ...] | None = None   # reference tasks: per output token, prompt indices
    prompt_tokens: tuple[str, ...] | None = None
    row: int | None = None                               # 1-based line (JSONL), data row (CSV) or row (hf)
    #: the prompt's segments as ``(name, text)`` where the contract's segments are filled from fields
    #: (``prompt`` is their texts joined with a space, as :class:`~scopecheck.spec.model.Prompt` joins them)
    segments: tuple[tuple[str | None, str], ...] | None = None


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


def resolve_path(ds: m.Dataset, base_dir: Path | None, allow_outside: bool = False) -> Path:
    """The data file, relative to the contract file's folder and inside its tree (the folder
    rule of :func:`scopecheck.spec.paths.contract_file`: every spelling, symlinks resolved).
    ``allow_outside`` lifts the rule; it is the caller's (a command-line flag), never a contract
    statement's, since contract files are data."""
    return contract_file(ds.name, base_dir, ds.span, what="dataset file", rule="dataset",
                         expected="a .jsonl or .csv file", allow_outside=allow_outside)


def inside(ds: m.Dataset, base_dir: Path | None, allow_outside: bool = False) -> Path:
    """The resolved path ``ds.name`` names, relative to the contract file's folder, which it must
    lie in (:func:`scopecheck.spec.paths.contract_file`'s rule; it may be a folder, and need not
    exist yet: the Hugging Face reader says what is missing)."""
    return contract_file(ds.name, base_dir, ds.span, what="dataset", rule="dataset",
                         expected="a dataset folder or file", must_exist=False, allow_outside=allow_outside,
                         allow_dir=True)


def _truth_item(v: Any, prompt: str) -> m.TextRef | int:
    """One truth item: a prompt text (matched like the text selector ``x["..."]``: it must occur
    in the prompt once, or name its occurrence), or a 1-based prompt token index (``x[i]``)."""
    if isinstance(v, bool):
        raise ValueError(f"truth item {v!r} is neither a prompt text nor a token index")
    if isinstance(v, int):
        if v < 1:
            raise ValueError(f"truth item {v}: a token index counts from 1 (x[1] is the first prompt token)")
        return v
    if isinstance(v, dict) and set(v) == {"text", "occurrence"} and isinstance(v["text"], str) \
            and isinstance(v["occurrence"], int) and not isinstance(v["occurrence"], bool):
        ref = m.TextRef(v["text"], v["occurrence"])
    elif isinstance(v, str):
        ref = m.TextRef(v)
    else:
        raise ValueError(f"truth item {json.dumps(v)[:60]} is neither a prompt text, a token index nor "
                         '{"text": ..., "occurrence": k}')
    # the text must be in the prompt exactly as x["..."] requires (the tokens it covers are found
    # when the example runs, by the same matching)
    try:
        anchor(prompt, "x", ref, Span())
    except ContractValidationError as exc:
        hint = ""
        if ref.text[:1] in ("\u2581", "\u0120") and ref.text[1:] and ref.text[1:] in prompt:
            hint = f"; a truth item is prompt text, not a tokenizer piece: write {ref.text[1:]!r}"
        elif "ambiguous" in exc.message:
            occ = json.dumps({"text": ref.text, "occurrence": 1}, ensure_ascii=False)
            hint = f"; name one occurrence, e.g. {occ}, or give its token index"
        raise ValueError(f"truth item {ref.text!r}: {exc.message}{hint}") from None
    return ref


def _as_truth(v: Any, prompt: str) -> tuple[m.TextRef | int, ...] | None:
    if v is None:
        return None
    items = v if isinstance(v, list) else [v]
    if not items:
        raise ValueError("truth is an empty list")
    return tuple(_truth_item(x, prompt) for x in items)


def _invalid_utf8(raw: bytes, start: int, end: int) -> int | None:
    """File offset of the first byte of ``raw[start:end]`` that is not UTF-8, or None."""
    try:
        raw[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        return start + exc.start
    return None


def _jsonl_rows(raw: bytes, errors: list[RowError]) -> list[tuple[int, Any]]:
    rows: list[tuple[int, Any]] = []
    pos = 0
    for i, line in enumerate(raw.split(b"\n"), 1):
        start, pos = pos, pos + len(line) + 1
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.append(RowError(i, None, f"invalid UTF-8 at byte {start + exc.start} of the file (byte "
                                            f"{exc.start} of the line): {exc.reason}"))
            continue
        try:
            rows.append((i, json.loads(text)))
        except json.JSONDecodeError as exc:
            errors.append(RowError(i, None, f"not a JSON object: {exc.msg}"))
    return rows


def _csv_rows(raw: bytes, errors: list[RowError]) -> list[tuple[int, Any]]:
    """Data rows (1-based after the header) of a CSV file; quoted newlines stay in their field.
    A row with bytes that are not UTF-8 is that row's error (the other rows are read)."""
    import io

    text = raw.decode("utf-8", errors="surrogateescape")     # undecodable bytes -> lone surrogates
    # byte offset of the start of each physical line, to place a bad byte of a row in the file
    starts = [0]
    for j, b in enumerate(raw):
        if b == 0x0A:
            starts.append(j + 1)
    starts.append(len(raw))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[tuple[int, Any]] = []
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        errors.append(RowError(0, None, f"the header is not CSV: {exc}"))
        return rows
    first = reader.reader.line_num
    if any(_has_surrogate(h) for h in header):
        bad = _invalid_utf8(raw, 0, starts[min(first, len(starts) - 1)])
        errors.append(RowError(0, None, f"the header has invalid UTF-8 at byte {bad} of the file"))
        return rows
    try:
        for i, row in enumerate(reader, 1):
            last = reader.reader.line_num                         # physical lines read so far
            bad = None
            if any(isinstance(v, str) and _has_surrogate(v) for v in row.values() if v):
                bad = _invalid_utf8(raw, starts[min(first, len(starts) - 1)], starts[min(last, len(starts) - 1)])
            if bad is not None:
                errors.append(RowError(i, None, f"invalid UTF-8 at byte {bad} of the file"))
            else:
                rows.append((i, row))
            first = last
    except csv.Error as exc:
        errors.append(RowError(reader.line_num, None, f"not CSV: {exc}"))
    return rows


def _has_surrogate(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def load_examples(ds: m.Dataset, base_dir: Path | None, *, allow_outside: bool = False,
                  prompt: m.Prompt | None = None) -> Loaded:
    """The examples of ``ds``; ``prompt`` is the contract's own prompt where its segments are
    filled from fields (``prompt { context: field("document") ... }``), else None (the prompt is
    the ``prompt`` field)."""
    prm = _params(ds)
    if ds.kind == "reference":
        task, _, split = ds.name.partition("/")
        n, seed = int(prm.get("limit", 100)), int(prm.get("seed", 0))
        exs = generate(task, n, split=split, seed=seed)
        out = tuple(Example(f"{task}/{split}/{seed}/{i}", e.prompt, e.output, None, e.causal, e.prompt_tokens,
                            row=i + 1) for i, e in enumerate(exs))
        fp = hashlib.sha256(json.dumps([task, split, n, seed]).encode()).hexdigest()
        return Loaded(out, (), fp, f"reference:{ds.name}", {"rows": len(out), "limited": True})
    errors: list[RowError] = []
    csv_file = False
    if ds.kind == "hf":
        rows, fp, source = read_rows(ds, base_dir, resolve=inside, allow_outside=allow_outside)
        label = Path(source).name if not source.startswith("hf:") else source
    else:
        path = resolve_path(ds, base_dir, allow_outside)
        raw = path.read_bytes()
        fp = hashlib.sha256(raw).hexdigest()
        body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw         # a UTF-8 byte-order mark
        csv_file = path.suffix.lower() == ".csv"
        rows = _csv_rows(body, errors) if csv_file else _jsonl_rows(body, errors)
        source, label = str(path), path.name
    segments = prompt.segments if prompt is not None and any(s.field is not None for s in prompt.segments) else None
    examples = _examples(rows, prm, segments, csv_file, errors)
    usable = len(examples)
    if "shuffle" in prm:
        random.Random(int(prm["shuffle"])).shuffle(examples)
    if "limit" in prm:
        examples = examples[: int(prm["limit"])]
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        raise ContractValidationError(f"example id {dup!r} occurs twice in {label}", ds.span,
                                      expected="a unique id per row", rule="dataset")
    return Loaded(tuple(examples), tuple(errors), fp, source, {"rows": usable, "limited": "limit" in prm})


def _text(row: dict, key: str, what: str) -> str:
    """The non-empty text of field ``key`` (``what`` names it in the row's error)."""
    v = row[key]
    if not isinstance(v, str):
        raise ValueError(f"{what} is not text: {type(v).__name__} {json.dumps(v, default=str)[:60]}")
    if not v.strip():
        raise ValueError(f"{what} is empty")
    return v


def _examples(rows: list[tuple[int, Any]], prm: dict[str, Any], segments: tuple[m.Segment, ...] | None,
              csv_file: bool, errors: list[RowError]) -> list[Example]:
    """Rows -> examples (JSON Lines, CSV and Hugging Face rows alike); a row that cannot be one is
    its :class:`RowError` (a missing field, an empty or non-text prompt or output, a bad truth)."""
    fields = {k: str(prm.get(k, k)) for k in ("prompt", "output", "truth")}
    id_field = prm.get("id")
    examples: list[Example] = []
    for i, row in rows:
        rid = None
        try:
            if not isinstance(row, dict):
                raise ValueError("a row must be an object with named fields")
            rid = str(row[id_field]) if id_field is not None and row.get(id_field) is not None else f"row{i}"
            filled = None
            if segments is not None:
                filled = []
                for seg in segments:
                    if seg.field is None:
                        filled.append((seg.name, seg.text))
                        continue
                    if seg.field not in row:
                        raise ValueError(f"no field {seg.field!r} (segment {seg.name}); "
                                         f"fields: {', '.join(map(str, row))}")
                    filled.append((seg.name, _text(row, seg.field, f"field {seg.field!r} (segment {seg.name})")))
                prompt = " ".join(t for _, t in filled)
            else:
                if fields["prompt"] not in row:
                    raise ValueError(f"no field {fields['prompt']!r}; fields: {', '.join(map(str, row))}")
                prompt = _text(row, fields["prompt"], "the prompt")
            output = row.get(fields["output"])
            if output is not None:
                output = _text(row, fields["output"], "the output")
            truth = row.get(fields["truth"])
            if isinstance(truth, str) and csv_file:
                truth = truth if truth.strip() else None              # an empty CSV cell: no truth
            examples.append(Example(rid, prompt, output, _as_truth(truth, prompt), row=i,
                                    segments=tuple(filled) if filled is not None else None))
        except (ValueError, KeyError) as exc:
            errors.append(RowError(i, rid, str(exc)))
    return examples


def example_contract(c: m.Contract, ex: Example) -> m.Contract:
    """The contract for one example: its prompt, and its output (or the contract's decoding rule)."""
    import dataclasses

    span = c.dataset.span if c.dataset is not None else c.span
    if ex.segments is not None and c.prompt is not None:       # the contract's segments, filled from the row
        prompt = m.Prompt(tuple(m.Segment(name, text, seg.span) for (name, text), seg in zip(ex.segments,
                                                                                                c.prompt.segments)),
                          c.prompt.span, chat=c.prompt.chat)
    else:
        prompt = m.Prompt((m.Segment(None, ex.prompt, span),), span)
    output = m.Output(text=ex.output, span=span) if ex.output is not None else c.output
    # the expectations are the dataset contract's: aggregates are evaluated over all examples
    plain = tuple(e for e in c.expects if not any(isinstance(s, m.Aggregate) for s in (e.left, e.right)))
    return dataclasses.replace(c, prompt=prompt, output=output, dataset=None, name=f"{c.name} [{ex.id}]", expects=plain,
                               span=Span(c.span.path, c.span.line, c.span.column, c.span.end_line,
                                         c.span.end_column))


__all__ = ["Example", "Loaded", "RowError", "dataset_errors", "example_contract", "inside", "load_examples",
           "resolve_path"]
