"""Maps computed elsewhere, checked under a contract: ``method external(map = "maps/noir.json")``
and :func:`check_map`.

A map file is data (never code): JSON or CSV, one entry per token of the contract's
tokenization, each with its 0-based sequence ``position`` (special tokens first, then the prompt
``x``, then the output ``y``: ``AttributionResult.tokens[k].position``), its token ``text`` and its
``score``. The format is published as ``scopecheck/spec/map.schema.json``; a JSON map is validated
against it, a CSV map (header ``position,text,score``) is read row by row into the same entries and
validated the same way, every error naming the map file (and, for CSV and malformed JSON, its line).

The file is resolved relative to the contract's folder under the dataset files' folder rule (the
resolved file must lie inside that folder; ``--allow-outside-data`` lifts it). The map is then
aligned to the contract's tokenization: a count, position or token-text mismatch is an error on
the ``method`` statement naming both tokenizations. A non-zero score outside E is refused as what
it is (a map of another contract: the held-fixed prefix ``y[<t]`` is a local next-token map's, a
held-fixed prompt token a span or prefix contract's). The map then runs every check and
expectation under the contract's protocol as a computed map does; the checks that need the method
itself (:data:`NEEDS_METHOD`) are refused with their reason.

Shapes: ``scores`` ``(L,)`` float64, one per sequence position, exactly 0 outside E.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from scopecheck.engine.compile import contract_dir
from scopecheck.engine.methods._common import score_input
from scopecheck.engine.problem import MethodOutput
from scopecheck.errors import ContractError, ContractValidationError, MethodRefused, SchemaError, Span
from scopecheck.spec import model as m
from scopecheck.spec.paths import contract_file

if TYPE_CHECKING:
    import torch

    from scopecheck.engine.compiled import CompiledContract
    from scopecheck.engine.problem import AttributionProblem
    from scopecheck.engine.result import AttributionResult

MAP_SCHEMA_FILE = "map.schema.json"
CSV_HEADER = ("position", "text", "score")

#: Checks that need the method itself, not only its map: refused on an external map, with why.
NEEDS_METHOD: dict[str, str] = {
    "completeness": "completeness compares the map's sum with S(input) − S(baseline) of the method's own "
                    "baseline path, and a map read from a file carries no baseline it was computed from",
    "randomization": "randomization reruns the method on a re-initialised model, and a map read from a file "
                     "cannot be recomputed",
    "max_sensitivity": "max_sensitivity reruns the method on perturbed embeddings, and a map read from a file "
                       "cannot be recomputed",
}


@dataclass(frozen=True)
class MapEntry:
    """One token of a map file: its 0-based sequence position, token text, score and file line."""

    position: int
    text: str
    score: float
    line: int = 1


@lru_cache(maxsize=1)
def map_schema() -> dict[str, Any]:
    """The published map format (``scopecheck/spec/map.schema.json``)."""
    text = resources.files("scopecheck.spec").joinpath(MAP_SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def _schema_error(path: str, message: str, line: int = 1, column: int = 1) -> SchemaError:
    return SchemaError(f"map file {path}: {message}", Span(path, line, column, line, column + 1),
                       expected=f"the map format of scopecheck/spec/{MAP_SCHEMA_FILE}: "
                                '{"tokens": [{"position": 0, "text": "<s>", "score": 0.0}, ...]} or a CSV with the '
                                "header position,text,score", rule="schema")


def _validate(path: str, doc: Any, lines: Sequence[int] | None = None) -> None:
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(map_schema()).iter_errors(doc), key=lambda e: list(e.path))
    if not errors:
        return
    e = errors[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".") or "the document"
    if e.validator == "oneOf" and e.context:          # the closest branch's reason
        e = min(e.context, key=lambda c: (-len(list(c.absolute_path)), str(c.message)))
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".") \
            or "the document"
    index = next((p for p in e.absolute_path if isinstance(p, int)), None)
    line = lines[index] if lines is not None and index is not None and index < len(lines) else 1
    raise _schema_error(path, f"{where}: {e.message}", line)


def parse_map(text: str, path: str) -> list[MapEntry]:
    """The entries of a map file's ``text`` (CSV when ``path`` ends in ``.csv``, else JSON),
    validated by the map schema; a :class:`SchemaError` at the file's line otherwise."""
    if path.lower().endswith(".csv"):
        return _parse_csv(text, path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _schema_error(path, f"not JSON ({exc.msg})", exc.lineno, exc.colno) from None
    _validate(path, doc)
    tokens = doc["tokens"] if isinstance(doc, dict) else doc
    return [MapEntry(int(t["position"]), str(t["text"]), float(t["score"])) for t in tokens]


def _parse_csv(text: str, path: str) -> list[MapEntry]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(c.strip() for c in rows[0]) != CSV_HEADER:
        got = ",".join(rows[0]) if rows else "(an empty file)"
        raise _schema_error(path, f"the header is {got!r}, not {','.join(CSV_HEADER)!r}")
    items: list[dict[str, Any]] = []
    lines: list[int] = []
    for k, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != 3:
            raise _schema_error(path, f"row {k} has {len(row)} fields, not 3 (position,text,score)", k)
        pos, txt, score = row
        try:
            p: Any = int(pos)
        except ValueError:
            p = pos
        try:
            s: Any = float(score)
        except ValueError:
            s = score
        items.append({"position": p, "text": txt, "score": s})
        lines.append(k)
    _validate(path, items, lines)
    return [MapEntry(int(t["position"]), str(t["text"]), float(t["score"]), ln) for t, ln in zip(items, lines)]


def resolve_map_path(spelled: str, base_dir: Path | None, span: Span, allow_outside: bool = False) -> Path:
    """The map file, relative to the contract file's folder and inside its tree (the rule
    of :func:`scopecheck.spec.paths.contract_file`: every spelling, symlinks resolved);
    ``allow_outside`` is the caller's (``--allow-outside-data``), never a contract's."""
    return contract_file(spelled, base_dir, span, what="map file", rule="map", expected="a .json or .csv map file",
                         allow_outside=allow_outside)


def read_map(spelled: str, base_dir: Path | None, span: Span, allow_outside: bool = False) -> list[MapEntry]:
    """Resolve, read and validate one map file (:func:`resolve_map_path`, :func:`parse_map`)."""
    full = resolve_map_path(spelled, base_dir, span, allow_outside)
    try:
        text = full.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ContractValidationError(f"map file {str(full)!r} is not UTF-8 text", span, rule="encoding") from None
    except OSError as exc:
        raise ContractValidationError(f"map file {str(full)!r} cannot be read ({exc.strerror})", span,
                                      rule="io") from None
    err: ContractError
    try:
        return parse_map(text, str(full))
    except SchemaError as exc:
        err = exc
    raise err.with_source(text)


def _shown(compiled: CompiledContract) -> str:
    return " ".join(f"{t.position}:{t.text!r}" for t in compiled.alignment.tokens)


def align_entries(entries: Sequence[MapEntry], compiled: CompiledContract, span: Span, name: str) -> list[float]:
    """Map entries -> one score per sequence position ``(L,)``; a count, position or token-text
    mismatch is an error at ``span`` (the ``method`` statement) naming both tokenizations."""
    toks = compiled.alignment.tokens
    theirs = " ".join(f"{e.position}:{e.text!r}" for e in entries)
    both = f"the contract's tokenization ({len(toks)} tokens): {_shown(compiled)}; the map's ({len(entries)} " \
           f"entries): {theirs}"
    hint = "write one entry per token of the contract's tokenization, with its 0-based sequence position " \
           "(AttributionResult.tokens[k].position)"
    if len(entries) != len(toks):
        raise ContractValidationError(f"map {name} has {len(entries)} entries but the contract's tokenization has "
                                      f"{len(toks)} tokens; {both}", span, hint=hint, rule="map",
                                      expected=f"{len(toks)} entries, positions 0..{len(toks) - 1}")
    by_pos: dict[int, MapEntry] = {}
    for e in entries:
        if e.position in by_pos:
            raise ContractValidationError(f"map {name} gives position {e.position} twice; {both}", span, hint=hint,
                                          rule="map", expected="each position once")
        by_pos[e.position] = e
    scores = []
    for t in toks:
        e = by_pos.get(t.position)
        if e is None:
            raise ContractValidationError(f"map {name} has no entry for position {t.position} ({t.text!r}); {both}",
                                          span, hint=hint, rule="map", expected=f"positions 0..{len(toks) - 1}")
        if e.text.strip() != t.text.strip():
            raise ContractValidationError(f"map {name}: position {t.position} is {e.text!r} in the map but "
                                          f"{t.text!r} in the contract's tokenization; {both}", span, hint=hint,
                                          rule="map", expected="the same tokens (tokenize with the contract's model)")
        if not math.isfinite(e.score):
            raise ContractValidationError(f"map {name}: the score at position {t.position} is {e.score}", span,
                                          rule="non-finite", expected="finite scores")
        scores.append(float(e.score))
    return scores


def _describe_outside(compiled: CompiledContract, positions: Sequence[int]) -> str:
    """What a map that scores these non-eligible positions answers instead."""
    toks = compiled.alignment.tokens
    targets, fixed, special = set(compiled.targets), set(compiled.fixed), set(compiled.special)
    first_target = min((toks[p].index for p in targets if toks[p].role == "output"), default=None)
    listed = ", ".join(f"{'x' if toks[p].role == 'prompt' else 'y' if toks[p].role == 'output' else 'special'}"
                       f"{f'[{toks[p].index}]' if toks[p].role != 'special' else ''} {toks[p].text!r}"
                       for p in positions[:8])
    prefix = [p for p in positions if p in fixed and toks[p].role == "output"
              and (first_target is None or toks[p].index < first_target)]
    if prefix:
        return (f"this map attributes to the held-fixed prefix y[<{first_target}] ({listed}): it answers a local "
                "next-token question, not this contract's")
    if any(p in targets for p in positions):
        return f"this map attributes to the explained output itself ({listed}): an output cannot explain itself"
    if any(p in special for p in positions):
        return f"this map attributes to special/template tokens ({listed}), which every contract holds fixed"
    return (f"this map attributes to held-fixed tokens ({listed}): it answers a contract whose eligible set "
            "includes them, not this one")


def check_eligible(scores: Sequence[float], compiled: CompiledContract, span: Span, name: str) -> None:
    """A non-zero score outside E refuses the map, saying which question it answers instead."""
    E = set(compiled.eligible)
    outside = [p for p, s in enumerate(scores) if p not in E and s != 0.0]
    if outside:
        raise ContractValidationError(f"map {name} is not a map of this contract: "
                                      f"{_describe_outside(compiled, outside)}", span, rule="map",
                                      expected="exactly 0 at every position outside E (E: positions "
                                               f"{list(compiled.eligible)})",
                                      hint="check the map under the contract it answers, or zero those positions "
                                           "if the toolkit attributed them by construction")


def output(scores: Sequence[float], compiled: CompiledContract, source: str) -> MethodOutput:
    """A :class:`MethodOutput` of aligned, E-checked scores (float64, the problem's device)."""
    import torch

    problem = compiled.problem
    t = torch.tensor(list(scores), dtype=torch.float64).to(problem.embeds.device)
    return MethodOutput(scores=t, info={"map": source, "score_input": score_input(problem)})


def map_param(method: m.Method) -> tuple[str, Span]:
    """The ``map = "..."`` of an ``external`` method statement and its position."""
    for p in method.params:
        if p.key == "map":
            if isinstance(p.value, (m.Text, m.Ident)):
                return str(m.py_value(p.value)), p.span
            raise ContractValidationError("`map` is a file path", p.span, expected='map = "maps/noir.json"',
                                          rule="params")
    raise ContractValidationError("method `external` needs its map file", method.span,
                                  expected='method external(map = "maps/noir.json")', rule="params")


def external_output(contract: m.Contract, compiled: CompiledContract, allow_outside: bool = False) -> MethodOutput:
    """The ``external`` method of ``contract``: its map file read, aligned and checked against E."""
    assert contract.method is not None
    spelled, span = map_param(contract.method)
    entries = read_map(spelled, contract_dir(contract), span, allow_outside)
    scores = align_entries(entries, compiled, contract.method.span, repr(spelled))
    check_eligible(scores, compiled, contract.method.span, repr(spelled))
    return output(scores, compiled, spelled)


def external(problem: AttributionProblem, params: Any) -> MethodOutput:
    """The registry's implementation of ``external``: a map from a file is read by the engine
    (:func:`external_output`), never recomputed, so a direct call refuses."""
    raise MethodRefused("`external` reads its map from a file and cannot be recomputed on another problem",
                        hint="; ".join(NEEDS_METHOD.values()))


def refuse_check(name: str, result: AttributionResult) -> None:
    """Checks that need the method itself are refused on an external map, with the reason."""
    if result.method == "external" and name in NEEDS_METHOD:
        raise ContractValidationError(f"check `{name}` cannot run on a map read from a file: {NEEDS_METHOD[name]}",
                                      rule="expect", expected="a check that reads the map only (deletion, insertion, "
                                                              "aopc, comprehensiveness, sufficiency, eligibility, ...)",
                                      hint="compute the map with scopecheck's own method to check this property")


def scores_vector(scores: Any, compiled: CompiledContract, span: Span) -> list[float]:
    """``check_map``'s scores (a list, NumPy array or torch tensor, 1-D): one per sequence position
    (``L`` values) or one per eligible token in sequence order (``|E|`` values, zero elsewhere)."""
    try:
        import numpy as np

        if hasattr(scores, "detach"):
            scores = scores.detach().to("cpu").double().numpy()
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ContractValidationError(f"scores cannot be read as numbers ({exc})", span, rule="map",
                                      expected="a 1-D list, NumPy array or torch tensor of floats") from None
    L, E = len(compiled.alignment.tokens), list(compiled.eligible)
    if arr.ndim != 1 or arr.shape[0] not in (L, len(E)):
        raise ContractValidationError(f"scores have shape {tuple(arr.shape)}, but the contract's tokenization has "
                                      f"{L} tokens of which {len(E)} are eligible: {_shown(compiled)}", span,
                                      rule="map", expected=f"({L},): one per sequence position, or ({len(E)},): one "
                                                           "per eligible token in sequence order")
    bad = [int(i) for i in np.nonzero(~np.isfinite(arr))[0]]
    if bad:
        raise ContractValidationError(f"scores are not finite at index(es) {bad[:8]}", span, rule="non-finite",
                                      expected="finite scores")
    if arr.shape[0] == L:
        return [float(v) for v in arr]
    full = [0.0] * L
    for p, v in zip(E, arr):
        full[p] = float(v)
    return full


__all__ = ["CSV_HEADER", "MAP_SCHEMA_FILE", "MapEntry", "NEEDS_METHOD", "align_entries", "check_eligible",
           "external", "external_output", "map_param", "map_schema", "parse_map", "read_map", "refuse_check",
           "resolve_map_path", "scores_vector"]
