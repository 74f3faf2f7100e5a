"""Attribution snapshots: ``expect snapshot("snapshots/noir.json", top_k = 3, spearman = 0.99,
max_abs = 1e-4)`` pins a contract's map to a stored baseline.

A snapshot file (JSON, published as ``scopecheck/spec/snapshot.schema.json``) records what made
the map and the map itself: the contract's canonical text with its ``expect`` clauses left out
and that text's sha256 (expectations never change a map, so adding or loosening one does not
make a snapshot stale), the model reference and its revision (the sha256 of the weight files of
a local directory or a reference model; a hub id has none to record), the method with every
resolved parameter and its operator, and the tokens with their scores.

Comparing a run with its snapshot gives one of four statuses (``CheckResult.extra["status"]``):

* ``stale``: the snapshot was made by something else (the contract text, the model reference or
  revision, the method's resolved parameters or the tokenization differ); it is not compared,
  and the reason says what changed;
* ``missing``: no snapshot file yet; the message says how to create it;
* ``pass`` / ``fail``: the criteria, each with its tolerance from the contract (defaults in the
  check registry entry, :mod:`scopecheck.spec.check_registry`), over the eligible tokens E:
  ``top_k`` (the set of the k highest-attributed tokens, by position, is the snapshot's; 0 skips
  it), ``spearman`` (Spearman rank correlation of the scores on E at least this; -1 skips it) and
  ``max_abs`` (the largest absolute score difference at most this);
* ``written``: with ``update`` (``scopecheck run --update-snapshots``, ``pytest
  --scope-snapshot-update``) a missing, stale or failing snapshot is rewritten (atomically: a
  temporary file beside it, then ``os.replace``); a passing one is left as it is.

The file is resolved relative to the contract's folder and must lie inside it (the dataset
files' folder rule; ``--allow-outside-data`` lifts it). :func:`unused_snapshots` lists the snapshot
files in ``snapshots/`` folders next to contracts that no contract refers to. Torch-free.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from scopecheck.checks.params import as_float, as_int, check_params
from scopecheck.checks.result import CheckResult
from scopecheck.errors import ContractValidationError, Span
from scopecheck.runtime.provenance import file_sha256, weight_files

if TYPE_CHECKING:
    from scopecheck.engine.result import AttributionResult
    from scopecheck.spec import model as m

SNAPSHOT_FORMAT = "scopecheck-snapshot"
SNAPSHOT_VERSION = 1
SNAPSHOT_SCHEMA_FILE = "snapshot.schema.json"
#: the folder next to the contracts whose files :func:`unused_snapshots` accounts for
SNAPSHOT_DIR = "snapshots"
STATUSES = ("pass", "fail", "stale", "missing", "written")


# ------------------------------------------------------------------------------ identity

def weights_sha256(where: str | os.PathLike[str]) -> str | None:
    """The revision of a local model: the sha256 of its one weight file, or of the lines
    ``name<TAB>sha256`` of each (sorted by name) when there are several; ``None`` when ``where``
    is not a local file or directory (a hub id)."""
    files = weight_files(where)
    if not files:
        return None
    if len(files) == 1:
        return file_sha256(files[0])
    return hashlib.sha256("".join(f"{f.name}\t{file_sha256(f)}\n" for f in files).encode()).hexdigest()


def model_identity(contract: m.Contract) -> dict[str, Any]:
    """``{"ref": <the model statement's canonical text>, "weights_sha256": <revision or None>}``."""
    from scopecheck.engine.compile import contract_dir
    from scopecheck.spec.text import fmt_model

    ref = contract.model
    if ref is None:
        return {"ref": None, "weights_sha256": None}
    if ref.kind == "reference":
        from scopecheck.reference import REFERENCE_MODELS

        info = REFERENCE_MODELS.get(ref.name)
        where: Path | None = info.directory if info is not None else None
    elif ref.kind == "path":
        p = Path(ref.name).expanduser()
        base = contract_dir(contract)
        where = p if p.is_absolute() or base is None else base / p
    else:
        where = None
    return {"ref": fmt_model(ref), "weights_sha256": weights_sha256(where) if where is not None else None}


def hashed_text(contract: m.Contract) -> str:
    """What a snapshot's contract hash covers: the canonical text without the ``expect`` clauses."""
    from scopecheck.spec.text import format_document

    return format_document(dataclasses.replace(contract, expects=()))


def contract_sha256(contract: m.Contract) -> str:
    return hashlib.sha256(hashed_text(contract).encode("utf-8")).hexdigest()


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def method_record(result: AttributionResult) -> dict[str, Any]:
    return {"name": result.method, "params": _jsonable(dict(result.method_params)), "operator": result.operator}


def snapshot_document(contract: m.Contract, result: AttributionResult) -> dict[str, Any]:
    """The snapshot of ``result`` (the run of ``contract``) as a JSON-ready document."""
    from scopecheck.version import __version__

    text = hashed_text(contract)
    return {
        "format": SNAPSHOT_FORMAT, "version": SNAPSHOT_VERSION, "scopecheck": __version__,
        "contract": {"name": contract.name, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                     "text": text},
        "model": model_identity(contract),
        "method": method_record(result),
        "kind": result.kind, "dtype": result.dtype, "device": result.device, "seed": result.seed,
        "tokens": [{"position": t.position, "text": t.text, "role": t.role, "index": t.index,
                    "eligible": t.eligible, "score": float(t.score)} for t in result.tokens],
    }


# ------------------------------------------------------------------------------ files

def resolve_snapshot_path(spelled: str, base_dir: Path | None, span: Span, allow_outside: bool = False) -> Path:
    """The snapshot file, relative to the contract file's folder and inside its tree (the dataset
    files' rule, :func:`scopecheck.datasets.resolve_path`: every spelling, symlinks resolved); it
    need not exist yet. ``allow_outside`` is the caller's (``--allow-outside-data``)."""
    p = Path(spelled).expanduser()
    base = (base_dir or Path(".")).resolve()
    full = (p if p.is_absolute() else base / p).resolve()
    if not allow_outside and base not in full.parents:
        raise ContractValidationError(f"snapshot file {spelled!r} is outside the contract's folder ({full})", span,
                                      expected=f"a file inside {str(base)!r}, the folder of the contract file",
                                      hint="keep snapshots next to the contract (snapshots/<name>.json); a run may "
                                           "lift the rule with --allow-outside-data (a command-line choice, never "
                                           "a contract's)", rule="snapshot")
    if full.exists() and not full.is_file():
        raise ContractValidationError(f"snapshot path {str(full)!r} is not a regular file", span,
                                      expected="a .json snapshot file", rule="snapshot")
    return full


def snapshot_schema() -> dict[str, Any]:
    from importlib import resources

    return json.loads(resources.files("scopecheck.spec").joinpath(SNAPSHOT_SCHEMA_FILE).read_text("utf-8"))


def read_snapshot(path: Path, span: Span) -> dict[str, Any]:
    """Read and validate a snapshot file; a positioned error naming the file otherwise."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ContractValidationError(f"snapshot file {str(path)!r} is not UTF-8 text", span,
                                      rule="snapshot") from None
    except json.JSONDecodeError as exc:
        raise ContractValidationError(f"snapshot file {str(path)!r} is not JSON (line {exc.lineno}: {exc.msg})", span,
                                      expected="a snapshot written by --update-snapshots",
                                      hint="delete it and re-record it with --update-snapshots",
                                      rule="snapshot") from None
    except OSError as exc:
        raise ContractValidationError(f"snapshot file {str(path)!r} cannot be read ({exc.strerror})", span,
                                      rule="io") from None
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(snapshot_schema()).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(x) for x in e.path) or "(top level)"
        raise ContractValidationError(f"snapshot file {str(path)!r} is not a snapshot: at {where}: {e.message}", span,
                                      expected=f"a document of {SNAPSHOT_SCHEMA_FILE}",
                                      hint="delete it and re-record it with --update-snapshots", rule="snapshot")
    return doc


def write_snapshot(path: Path, doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` to ``path`` atomically (a temporary file beside it, then ``os.replace``, signals
    held back): an interrupted write leaves the old file, or none, and no temporary file."""
    from scopecheck.runtime.files import atomic_write_text

    return atomic_write_text(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n", make_parents=True)


# ------------------------------------------------------------------------------ comparison

def stale_reason(doc: Mapping[str, Any], contract: m.Contract, result: AttributionResult) -> str | None:
    """Why the snapshot ``doc`` was not made by this contract's run (None: it was)."""
    text = hashed_text(contract)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if doc["contract"]["sha256"] != sha:
        old = str(doc["contract"].get("text", "")).splitlines()
        diff = [ln for ln in difflib.unified_diff(old, text.splitlines(), "snapshot", "contract", n=0, lineterm="")
                if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
        shown = "; ".join(diff[:6]) + (f"; ... {len(diff) - 6} more" if len(diff) > 6 else "")
        return (f"the contract changed since the snapshot was written (sha256 {doc['contract']['sha256'][:12]} -> "
                f"{sha[:12]}" + (f": {shown}" if shown else "") + ")")
    ident = model_identity(contract)
    old_m = doc["model"]
    if old_m.get("ref") != ident["ref"]:
        return f"the model changed: {old_m.get('ref')} -> {ident['ref']}"
    if old_m.get("weights_sha256") != ident["weights_sha256"]:
        def short(s: Any) -> str:
            return "none" if s is None else str(s)[:12]
        return (f"the model's weights changed (revision sha256 {short(old_m.get('weights_sha256'))} -> "
                f"{short(ident['weights_sha256'])})")
    meth = json.loads(json.dumps(method_record(result)))
    if doc["method"] != meth:
        changed = [k for k in sorted(set(doc["method"].get("params", {})) | set(meth["params"]))
                   if doc["method"].get("params", {}).get(k) != meth["params"].get(k)]
        what = f"parameters {', '.join(changed)}" if changed else "name or operator"
        return f"the method's resolved {what} changed ({json.dumps(doc['method'])} -> {json.dumps(meth)})"
    old_t = [t["text"] for t in doc["tokens"]]
    new_t = [t.text for t in result.tokens]
    if old_t != new_t:
        return f"the tokenization changed ({len(old_t)} tokens {old_t[:8]} -> {len(new_t)} tokens {new_t[:8]})"
    if [t["eligible"] for t in doc["tokens"]] != [t.eligible for t in result.tokens]:
        return "the eligible set E changed"
    return None


def top_k_positions(positions: Sequence[int], scores: Sequence[float], k: int) -> list[int]:
    """The k highest-scored of ``positions`` (ties by position, as ``AttributionResult.ranking``)."""
    return [p for _, p in sorted(((-float(s), p) for p, s in zip(positions, scores)))][:k]


def spearman(a: Sequence[float], b: Sequence[float]) -> tuple[float, str]:
    """Spearman's rho of two maps on E (``scipy.stats.spearmanr``): 1 when both are constant (the
    same, all-tied ranking), NaN with a note when only one is or fewer than two features exist."""
    from scipy import stats

    if len(a) < 2:
        return float("nan"), "fewer than two eligible tokens: rank correlation undefined"
    ca, cb = len(set(a)) == 1, len(set(b)) == 1
    if ca and cb:
        return 1.0, ""
    if ca or cb:
        whose = "the run's" if ca else "the snapshot's"
        return float("nan"), f"{whose} map is constant on E: rank correlation undefined"
    return float(stats.spearmanr(a, b).statistic), ""


def compare_maps(old: Sequence[float], new: Sequence[float], eligible: Sequence[int], top_k: int
                 ) -> dict[str, Any]:
    """The criteria's numbers for maps ``old`` (the snapshot) and ``new`` (the run), one score per
    sequence position, over the eligible positions: the top-k sets (positions), the share of the
    snapshot's top k in the run's, Spearman on E and the largest absolute difference (anywhere)."""
    a = [float(old[p]) for p in eligible]
    b = [float(new[p]) for p in eligible]
    k = min(top_k, len(eligible))
    top_old = top_k_positions(eligible, a, k)
    top_new = top_k_positions(eligible, b, k)
    rho, note = spearman(a, b)
    diffs = [abs(float(x) - float(y)) for x, y in zip(old, new)]
    worst = max(range(len(diffs)), key=lambda i: diffs[i]) if diffs else None
    return {"k": k, "top_old": top_old, "top_new": top_new,
            "top_k_match": (len(set(top_old) & set(top_new)) / k) if k else 1.0, "spearman": rho,
            "max_abs": max(diffs) if diffs else 0.0, "worst": worst, "note": note}


def _make(fields: Mapping[str, float], config: dict[str, Any], passed: bool, note: str,
          extra: dict[str, Any]) -> CheckResult:
    from scopecheck.spec.check_registry import get_check

    e = get_check("snapshot")
    return CheckResult(name="snapshot", fields=dict(fields),
                       ranges={k: (f.low, f.high) for k, f in e.fields.items()},
                       better={k: f.better for k, f in e.fields.items()}, config=config, passed=passed, note=note,
                       extra=extra)


def _how_to_create(result: AttributionResult) -> str:
    where = result.path if str(result.path).endswith(".scope") else "<your contract file>"
    return (f"create it with `scopecheck run --update-snapshots {where}` or "
            f"`pytest --scope-snapshot-update {where}`")


def compare_snapshot(contract: m.Contract, result: AttributionResult, params: Mapping[str, object] | None = None,
                     *, span: Span | None = None, update: bool = False, allow_outside: bool = False) -> CheckResult:
    """Compare ``result`` (the run of ``contract``) with its snapshot, under the criteria of
    ``params`` (``path``, ``top_k``, ``spearman``, ``max_abs``; defaults from the registry entry),
    writing it when ``update`` and it is missing, stale or failing. ``extra["status"]`` is one of
    :data:`STATUSES`; ``extra["reason"]`` says why; ``passed`` is True for ``pass`` and ``written``."""
    from scopecheck.engine.compile import contract_dir

    span = span or contract.span
    prm = check_params("snapshot", params)
    spelled = prm.get("path")
    if not isinstance(spelled, str) or not spelled:
        raise ContractValidationError("snapshot(...) needs the snapshot file", span,
                                      expected='snapshot("snapshots/noir.json")', rule="snapshot")
    top_k = as_int("snapshot", "top_k", prm["top_k"], low=0)
    min_rho = as_float("snapshot", "spearman", prm["spearman"], low=-1.0)
    max_abs = as_float("snapshot", "max_abs", prm["max_abs"])
    path = resolve_snapshot_path(spelled, contract_dir(contract), span, allow_outside)
    config = {"path": str(path), "top_k": top_k, "spearman": min_rho, "max_abs": max_abs}
    nan = float("nan")

    def written(why: str) -> CheckResult:
        write_snapshot(path, snapshot_document(contract, result))
        return _make({"top_k_match": nan, "spearman": nan, "max_abs": nan}, config, True,
                     f"snapshot written to {path} ({why})", {"status": "written", "reason": why, "path": str(path)})

    if not path.exists():
        if update:
            return written("it did not exist")
        reason = f"snapshot file {path} does not exist; {_how_to_create(result)}"
        return _make({"top_k_match": nan, "spearman": nan, "max_abs": nan}, config, False, reason,
                     {"status": "missing", "reason": reason, "path": str(path)})
    doc = read_snapshot(path, span)
    stale = stale_reason(doc, contract, result)
    if stale is not None:
        if update:
            return written(f"it was stale: {stale}")
        reason = (f"{stale}; the snapshot is not compared; re-record it with `scopecheck run --update-snapshots` "
                  f"or `pytest --scope-snapshot-update`")
        return _make({"top_k_match": nan, "spearman": nan, "max_abs": nan}, config, False, reason,
                     {"status": "stale", "reason": reason, "path": str(path)})
    old = [float(t["score"]) for t in doc["tokens"]]
    new = [float(t.score) for t in result.tokens]
    eligible = [t.position for t in result.tokens if t.eligible]
    c = compare_maps(old, new, eligible, top_k)
    texts = {t.position: t.text.strip() for t in result.tokens}
    failed: list[str] = []
    held: list[str] = []
    if top_k > 0:
        same = set(c["top_old"]) == set(c["top_new"])
        line = (f"top-{c['k']} set {'equal' if same else 'differs'}: run {[texts[p] for p in c['top_new']]}, "
                f"snapshot {[texts[p] for p in c['top_old']]}")
        (held if same else failed).append(line)
    rho = c["spearman"]
    if min_rho > -1.0:                      # -1: not compared
        ok = math.isfinite(rho) and rho >= min_rho
        line = f"spearman {rho:.6g} {'>=' if ok else '<'} {min_rho:g}" + (f" ({c['note']})" if c["note"] else "")
        (held if ok else failed).append(line)
    worst = c["worst"]
    ok = c["max_abs"] <= max_abs
    at = "" if worst is None or c["max_abs"] == 0 else (
        f" (at position {worst} {texts[worst]!r}: {new[worst]:.6g} in the run, {old[worst]:.6g} in the snapshot)")
    (held if ok else failed).append(f"max_abs {c['max_abs']:.6g} {'<=' if ok else '>'} {max_abs:g}" + at)
    if failed and update:
        return written("it failed: " + "; ".join(failed))
    note = ("; ".join(failed) + ("; held: " + "; ".join(held) if held else "")) if failed else "; ".join(held)
    return _make({"top_k_match": c["top_k_match"], "spearman": rho, "max_abs": c["max_abs"]}, config, not failed,
                 note, {"status": "fail" if failed else "pass", "reason": note, "path": str(path),
                        "top_run": c["top_new"], "top_snapshot": c["top_old"]})


def snapshot(result: AttributionResult, params: Mapping[str, object] | None = None, *,
             ranking: Sequence[int] | None = None, seed: int = 0) -> CheckResult:
    """The registry's implementation (``run_check("snapshot", result, {"path": ...})``): compare,
    never write, the folder rule enforced, the contract read back from ``result.contract_text``."""
    from scopecheck.dsl.parser import parse_text

    docs = parse_text(result.contract_text, result.path)
    contract = next(d for d in docs if getattr(d, "name", None) == result.name)
    return compare_snapshot(contract, result, params)


# ------------------------------------------------------------------------------ references and unused files

def snapshot_calls(contract: m.Contract) -> list[m.Call]:
    """The ``snapshot(...)`` calls of a contract's expectations."""
    from scopecheck.spec import model as m

    return [side for ex in contract.expects for side in (ex.left, ex.right)
            if isinstance(side, m.Call) and side.name == "snapshot"]


def spelled_path(call: m.Call) -> str | None:
    """The snapshot file a call names (its first positional argument, or ``path = ...``)."""
    from scopecheck.spec import model as m

    for p in call.params:
        if p.key == "path" and isinstance(p.value, m.Text):
            return p.value.value
    if call.args and isinstance(call.args[0], m.Text):
        return call.args[0].value
    return None


def referenced_snapshots(paths: Iterable[str | os.PathLike[str]]) -> set[Path]:
    """The resolved snapshot files the contracts of these ``.scope`` files name."""
    from scopecheck.loader import check_file
    from scopecheck.spec import model as m

    out: set[Path] = set()
    for f in paths:
        sf = check_file(f)
        base = Path(f).resolve().parent
        for d in sf.documents:
            if isinstance(d, m.Contract):
                for call in snapshot_calls(d):
                    s = spelled_path(call)
                    if s:
                        p = Path(s).expanduser()
                        out.add((p if p.is_absolute() else base / p).resolve())
    return out


def unused_snapshots(scope_files: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The ``*.json`` files under the ``snapshots/`` folder next to each of ``scope_files`` that no
    contract of the ``.scope`` files in that folder (or of ``scope_files``) names, sorted."""
    files = [Path(f).resolve() for f in scope_files]
    folders = sorted({f.parent for f in files})
    used = referenced_snapshots(files)
    candidates: set[Path] = set()
    for folder in folders:
        used |= referenced_snapshots(sorted(set(folder.glob("*.scope")) - set(files)))
        snap = folder / SNAPSHOT_DIR
        if snap.is_dir():
            candidates |= {p.resolve() for p in snap.rglob("*.json") if p.is_file()}
    return sorted(candidates - used)


def unused_note(scope_files: Iterable[str | os.PathLike[str]]) -> str:
    """The run summary's note listing :func:`unused_snapshots` ("" when there are none)."""
    unused = unused_snapshots(scope_files)
    if not unused:
        return ""
    shown = ", ".join(str(p) for p in unused[:10]) + (f" and {len(unused) - 10} more" if len(unused) > 10 else "")
    return (f"{len(unused)} unused snapshot file{'s' if len(unused) > 1 else ''} (no contract names "
            f"{'them' if len(unused) > 1 else 'it'}): {shown}")


__all__ = ["SNAPSHOT_DIR", "SNAPSHOT_FORMAT", "SNAPSHOT_SCHEMA_FILE", "SNAPSHOT_VERSION", "STATUSES",
           "compare_maps", "compare_snapshot", "contract_sha256", "file_sha256", "hashed_text", "model_identity",
           "read_snapshot", "referenced_snapshots", "resolve_snapshot_path", "snapshot", "snapshot_calls",
           "snapshot_document", "snapshot_schema", "spearman", "spelled_path", "stale_reason", "top_k_positions",
           "unused_note", "unused_snapshots", "weights_sha256", "write_snapshot"]
