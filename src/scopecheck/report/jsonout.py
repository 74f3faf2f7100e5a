"""JSON results of contract runs, validated by the published schema ``results.schema.json``.

The document states, per run, the whole contract (canonical text and the five SCOPE
elements with their origin), the method and its parameters, the baseline/perturbation
operator, the model (with a GGUF checkpoint's quantization), device, dtype and seed, the map
(every token with its score and roles; with ``aggregate = words`` also every word, its tokens'
positions and its score, the sum of theirs), every check (fields, ranges, direction, configuration,
raw curves) and every expectation (pass/fail, measured value, threshold) -- seed 002, "Reporting Attribution
Results"), and its provenance (:func:`run_provenance`, :func:`environment_provenance`: the software,
the model's files and tokenizer, the contract's and dataset's hashes, the seed, the phases' wall
seconds). Non-finite floats, which JSON cannot hold, are written as the strings
``"inf"``, ``"-inf"`` and ``"nan"``.

The schema ships inside the package (``scopecheck/report/results.schema.json``); its
``$id`` is :data:`SCHEMA_ID`. :func:`schema_path` gives its location on disk.

This record (:func:`run_record`) is also what the HTML report and the summary table
render, so all reports state the same facts.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from scopecheck.dsl.format import (
    fmt_expectation,
    fmt_features,
    fmt_model,
    fmt_operand,
    fmt_score,
    fmt_selector,
    fmt_value,
    format_document,
)
from scopecheck.loader import load_text
from scopecheck.orchestration.records import ContractRun
from scopecheck.runtime.files import atomic_write_many, atomic_write_text  # noqa: F401 - re-exported
from scopecheck.runtime.provenance import environment, sha256_text
from scopecheck.spec import model as m
from scopecheck.spec.validate import resolve
from scopecheck.version import __version__

if TYPE_CHECKING:
    from scopecheck.checks.result import CheckResult
    from scopecheck.engine.result import AttributionResult
    from scopecheck.orchestration.records import ExpectationOutcome

SCHEMA_FILE = "results.schema.json"
SCHEMA_ID = "https://scopecheck.dev/schema/results.schema.json"
FORMAT_VERSION = "1.0"
ELEMENTS = ("score", "fixed", "explain", "process", "eligible")
LETTERS = {"score": "S", "fixed": "C", "explain": "O", "process": "P", "eligible": "E"}
COMPARATORS = ("==", "!=", "<=", ">=", "<", ">", "in")


class ResultsSchemaError(ValueError):
    """A results document does not conform to ``results.schema.json``."""

    def __init__(self, message: str, path: str = "$", errors: list[str] | None = None) -> None:
        super().__init__(f"results document violates {SCHEMA_FILE} at {path}: {message}")
        self.path = path
        self.errors = errors or [message]


# --------------------------------------------------------------------------- schema


@functools.cache
def schema() -> dict[str, Any]:
    """The results JSON Schema (draft 2020-12), read from the package data."""
    return json.loads(resources.files("scopecheck.report").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def schema_path() -> Path:
    """Where the shipped schema file lives (inside the installed package)."""
    return Path(str(resources.files("scopecheck.report").joinpath(SCHEMA_FILE)))


def validate_results(doc: Any) -> None:
    """Raise :class:`ResultsSchemaError` unless ``doc`` conforms to the results schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(doc), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        where = "$" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in best.absolute_path)
        all_msgs = [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in errors]
        raise ResultsSchemaError(best.message, where, all_msgs)


# --------------------------------------------------------------------------- values


def num(v: Any) -> float | str | None:
    """A float for JSON: non-finite values become ``"inf"``, ``"-inf"`` or ``"nan"``."""
    if v is None:
        return None
    f = float(v)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


def jsonable(v: Any) -> Any:
    """Any value as plain JSON data (tuples to lists, numpy/torch scalars to numbers,
    non-finite floats to strings, spec nodes to their canonical text)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return num(v)
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        items = list(v)
        if isinstance(v, (set, frozenset)):
            items = sorted(items, key=repr)
        return [jsonable(x) for x in items]
    # numpy / torch scalars and arrays
    if hasattr(v, "tolist") and callable(v.tolist):
        try:
            return jsonable(v.tolist())
        except Exception:  # pragma: no cover - exotic array types
            pass
    if hasattr(v, "item") and callable(v.item):
        try:
            return jsonable(v.item())
        except Exception:  # pragma: no cover
            pass
    text = _spec_text(v)
    if text is not None:
        return text
    return str(v)


def _spec_text(v: Any) -> str | None:
    try:
        if isinstance(v, m.Selector):
            return fmt_selector(v)
        if isinstance(v, m.Call):
            return fmt_operand(v)
        if isinstance(v, m.Ident):
            return v.name
        if isinstance(v, m.Text):
            return v.value
    except Exception:  # pragma: no cover - defensive: a report never fails on a value
        return None
    return None


# --------------------------------------------------------------------------- runs


def as_run(obj: Any) -> Any:
    """A ContractRun for ``obj`` (a ContractRun, or a bare AttributionResult)."""
    if hasattr(obj, "outcomes") and hasattr(obj, "contract"):
        return obj
    if hasattr(obj, "tokens") and hasattr(obj, "contract_text"):
        contract = None
        try:
            docs = load_text(obj.contract_text)
            contract = docs[0] if docs else None
        except Exception:
            contract = None
        return ContractRun(contract, result=obj, kind="single")  # type: ignore[arg-type]
    raise TypeError(f"expected a ContractRun or an AttributionResult, got {type(obj).__name__}")


def _spec_facts(contract: Any) -> dict[str, Any]:
    """What the contract spec alone says (for runs that failed before producing a result)."""
    facts: dict[str, Any] = {"name": contract.name, "path": contract.span.path, "line": contract.span.line,
                             "contract": format_document(contract), "kind": None,
                             "scope": {e: None for e in ELEMENTS}, "origin": {e: None for e in ELEMENTS}}
    try:
        res = resolve(contract)
        sc, facts["kind"] = res.scope, res.kind
        facts["origin"].update({k: v for k, v in res.origin.items() if k in ELEMENTS})
    except Exception:
        sc = contract.scope
        facts["origin"].update({e: "stated" for e in ELEMENTS if getattr(sc, e, None) is not None})
    txt = {
        "score": lambda v: fmt_score(v),
        "fixed": lambda v: fmt_features(v),
        "explain": lambda v: fmt_selector(v),
        "process": lambda v: v.kind + ("(" + ", ".join(f"{p.key} = {fmt_value(p.value)}" for p in v.params) + ")"
                                       if v.params else ""),
        "eligible": lambda v: fmt_features(v),
    }
    for e in ELEMENTS:
        v = getattr(sc, e, None)
        if v is not None:
            try:
                facts["scope"][e] = txt[e](v)
            except Exception:
                facts["scope"][e] = str(v)
    meth = contract.method
    facts["method"] = {"name": meth.name if meth else None,
                       "params": {p.key: jsonable(p.value) for p in meth.params} if meth else {},
                       "operator": None}
    if meth:
        for key in ("baseline", "operator"):
            if key in facts["method"]["params"]:
                facts["method"]["operator"] = str(facts["method"]["params"][key])
    facts["model"] = fmt_model(contract.model).strip('"') if contract.model is not None else None
    facts["seed"] = contract.seed if contract.seed is not None else 0
    return facts


def _op_of(run: ContractRun, outcome: ExpectationOutcome) -> str | None:
    contract = getattr(run, "contract", None)
    for ex in getattr(contract, "expects", ()) or ():
        if ex.span.line == outcome.line:
            if fmt_expectation(ex) == outcome.text:
                return ex.op
    for op in COMPARATORS:  # fall back to the canonical text
        if f" {op} " in outcome.text:
            return op
    return None


def check_record(key: str, res: CheckResult) -> dict[str, Any]:
    fields = {k: num(v) for k, v in dict(getattr(res, "fields", {}) or {}).items()}
    ranges = {k: [num(lo), num(hi)] for k, (lo, hi) in dict(getattr(res, "ranges", {}) or {}).items()}
    passed = getattr(res, "passed", None)
    in_range = {}
    for k, v in dict(getattr(res, "fields", {}) or {}).items():
        lo, hi = dict(getattr(res, "ranges", {}) or {}).get(k, (-math.inf, math.inf))
        try:
            fv = float(v)
            in_range[k] = bool(math.isnan(fv) or lo <= fv <= hi)
        except (TypeError, ValueError):
            in_range[k] = True
    return {
        "call": key.removeprefix("random:"),
        "name": getattr(res, "name", key.split("(")[0]),
        "random": key.startswith("random:"),
        "fields": fields,
        "ranges": ranges,
        "in_range": in_range,
        "better": {k: str(v) for k, v in dict(getattr(res, "better", {}) or {}).items()},
        "config": jsonable(dict(getattr(res, "config", {}) or {})),
        "curve": [num(x) for x in (getattr(res, "curve", ()) or ())],
        "passed": None if passed is None else bool(passed),
        "note": str(getattr(res, "note", "") or ""),
        "extra": jsonable(dict(getattr(res, "extra", {}) or {})),
    }


def _output_text(r: AttributionResult) -> str:
    """The frozen output's text (a diffusion stage contract's tokens are stages, not the output)."""
    if r.compiled is not None:
        return str(r.compiled.alignment.output_text)
    return "".join(t.text for t in r.tokens if t.role == "output")


def _quantization(r: AttributionResult) -> str | None:
    """A GGUF checkpoint's quantization (``Q8_0``, ``Q4_1``, ``F32``...); None for other models."""
    q = getattr(r, "quantization", None)
    return None if q is None else str(q)


def run_record(run: ContractRun | AttributionResult) -> dict[str, Any]:
    """One run as plain JSON data (the ``runs[i]`` of :func:`results_json`)."""
    run = as_run(run)
    r = run.result
    if r is not None:
        rec: dict[str, Any] = {
            "name": r.name, "source": {"path": r.path, "line": r.line},
            "contract": r.contract_text, "kind": r.kind,
            "scope": {e: {"text": r.scope.get(e), "origin": r.origin.get(e)} for e in ELEMENTS},
            "method": {"name": r.method, "params": jsonable(dict(r.method_params)), "operator": r.operator},
            "model": r.model, "quantization": _quantization(r), "device": r.device, "dtype": r.dtype,
            "seed": int(r.seed),
            "output": {"ids": [int(i) for i in r.output_ids], "generated": bool(r.generated),
                       "text": _output_text(r)},
            "special_held_fixed": list(r.special),
            "score_input": num(r.score_input), "score_baseline": num(r.score_baseline),
            "info": jsonable({k: v for k, v in dict(r.info).items()
                              if isinstance(v, (int, float, str, bool)) or v is None}),
            "tokens": [{"position": int(t.position), "text": t.text, "role": t.role, "index": int(t.index),
                        "eligible": bool(t.eligible), "fixed": bool(t.fixed), "target": bool(t.target),
                        "score": num(t.score)} for t in r.tokens],
        }
        if r.diffusion is not None:
            rec["diffusion"] = jsonable(r.diffusion)
        rec["aggregate"] = str(getattr(r, "aggregate", "tokens"))
        rec["warnings"] = [str(w) for w in getattr(r, "warnings", ())]
        if getattr(r, "precision", None) is not None:
            rec["precision"] = str(r.precision)
        words = getattr(r, "words", None)
        if words is not None:
            rec["words"] = [{**w.to_json(), "score": num(w.score)} for w in words]
    else:
        if run.contract is None:
            raise ValueError("a run with neither a result nor a contract cannot be reported")
        f = _spec_facts(run.contract)
        rec = {
            "name": f["name"], "source": {"path": f["path"], "line": f["line"]},
            "contract": f["contract"], "kind": f["kind"],
            "scope": {e: {"text": f["scope"][e], "origin": f["origin"][e]} for e in ELEMENTS},
            "method": f["method"], "model": f["model"], "quantization": None, "device": None, "dtype": None,
            "seed": f["seed"],
            "output": None, "special_held_fixed": [], "score_input": None, "score_baseline": None,
            "info": {}, "tokens": [],
        }
    if run.kind == "dataset":
        assert run.dataset is not None                  # a dataset run has its facts from construction
        rec["dataset"] = jsonable({
            **run.dataset,
            # the dataset contract itself (the run's name and contract are its first example's)
            "name": run.contract.name, "contract": format_document(run.contract),
            "row_errors": [{"row": e.row, "id": e.id, "message": e.message} for e in run.row_errors],
            "per_example": [{"id": e.id, "error": e.error, "seconds": e.seconds, "stored": e.stored,
                             "values": e.values} for e in run.examples],
        })
    rec["checks"] = [check_record(k, v) for k, v in dict(run.checks or {}).items()]
    rec["expectations"] = [
        {"text": o.text, "line": int(o.line), "passed": bool(o.passed), "op": _op_of(run, o),
         "measured": jsonable(o.left), "threshold": jsonable(o.right), "explanation": str(o.explanation)}
        for o in (run.outcomes or ())
    ]
    error = run.error if run.error is not None else (None if r is not None else "the contract did not run")
    rec["error"] = error
    rec["seconds"] = num(float(run.seconds or 0.0))
    if error is not None:
        status = "error"
    elif any(not e["passed"] for e in rec["expectations"]):
        status = "failed"
    elif rec["expectations"]:
        status = "passed"
    else:
        status = "ran"
    rec["status"] = status
    rec["provenance"] = run_provenance(run, rec)
    return rec


def _null_model(identity: str | None) -> dict[str, Any]:
    """A model identity when no model was loaded (the run failed before): its name only."""
    return {"identity": identity, "location": None, "revision": None, "weights": [], "quantization": None,
            "tokenizer": None}


def run_provenance(run: ContractRun, rec: dict[str, Any]) -> dict[str, Any]:
    """Where one run came from (``runs[i].provenance``): the model's identity
    (:func:`scopecheck.runtime.provenance.model_facts`), the sha256 of the contract's canonical
    text (the contract as written: a dataset contract's, not its examples'), a dataset's
    fingerprint with n requested and n effective, the seed, and the wall seconds of each phase."""
    r = run.result
    facts = getattr(r, "model_facts", None) if r is not None else None
    model = jsonable(dict(facts)) if facts else _null_model(rec["model"])
    if model.get("quantization") is None:
        model["quantization"] = rec.get("quantization")
    text = rec["contract"]
    if getattr(run, "contract", None) is not None:
        text = format_document(run.contract)
    ds = run.dataset if run.kind == "dataset" else None
    dataset = None
    phases: dict[str, Any] = {"load_seconds": None, "compile_seconds": None, "attribution_seconds": None,
                              "checks_seconds": {}, "examples_seconds": None, "total_seconds": rec["seconds"]}
    if ds is not None:
        dataset = {"fingerprint": ds.get("fingerprint"), "n_requested": ds.get("requested"),
                   "n_effective": sum(e.error is None for e in run.examples)}
        phases["examples_seconds"] = num(sum(float(e.seconds or 0.0) for e in run.examples))
    else:                  # a dataset run's result and checks are its first example's: not its phases
        measured = dict(getattr(r, "phases", None) or {}) if r is not None else {}
        for k in ("load", "compile", "attribution"):
            phases[f"{k}_seconds"] = num(measured.get(k))
        for c in rec["checks"]:
            work = (c.get("extra") or {}).get("work")
            if isinstance(work, dict) and work.get("seconds") is not None:
                phases["checks_seconds"][("random:" if c["random"] else "") + c["call"]] = num(work["seconds"])
    return {"model": model, "contract_sha256": sha256_text(text), "dataset": dataset, "seed": rec["seed"],
            "phases": phases}


def environment_provenance(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The top-level provenance: the software (:func:`scopecheck.runtime.provenance.environment`)
    and the devices and dtypes the runs used."""
    return {**environment(),
            "devices": sorted({rec["device"] for rec in records if rec.get("device")}),
            "dtypes": sorted({rec["dtype"] for rec in records if rec.get("dtype")})}


def results_json(runs: Iterable[Any]) -> dict[str, Any]:
    """The results document for ``runs`` (ContractRuns or AttributionResults)."""
    records = [run_record(r) for r in runs]
    exp = [e for rec in records for e in rec["expectations"]]
    return {
        "$schema": SCHEMA_ID,
        "version": FORMAT_VERSION,
        "generator": {"name": "scopecheck", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "summary": {
            "runs": len(records),
            "errors": sum(rec["status"] == "error" for rec in records),
            "failed_runs": sum(rec["status"] == "failed" for rec in records),
            "expectations": {"total": len(exp), "passed": sum(e["passed"] for e in exp),
                             "failed": sum(not e["passed"] for e in exp)},
        },
        "provenance": environment_provenance(records),
        "runs": records,
    }


# --------------------------------------------------------------------------- writing


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(runs: Iterable[Any], path: str | os.PathLike[str], *, validate: bool = True) -> Path:
    """Render, validate and atomically write the results document; returns the path.

    Everything is computed before the file is opened, so a failure (a bad value, a schema
    violation) leaves any existing file untouched and no temporary file behind. Missing folders
    are created; a destination that is not a regular file (a symbolic link, a FIFO, a device) is
    refused with :class:`~scopecheck.runtime.files.DestinationError`."""
    doc = results_json(runs)
    if validate:
        validate_results(doc)
    return atomic_write_text(path, dumps(doc), make_parents=True)
