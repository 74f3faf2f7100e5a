"""Two results documents side by side (``scopecheck compare A.json B.json``).

:func:`read_results` reads one document written by ``scopecheck run --json`` (or ``pytest
--scope-json``) and validates it against ``results.schema.json``; a file that is missing, not
JSON or not a results document is a :class:`~scopecheck.errors.ContractError` naming the file
(rule ``io`` or ``encoding`` when it cannot be read as text, ``results`` when it is not a results
document).

:func:`compare` pairs the runs of A and B by contract name (the n-th run of a name with the n-th)
and states, first, the provenance that differs: the software (scopecheck, its git revision,
python, torch, transformers, tokenizers, devices, dtypes) and per contract its model (identity,
revision, weights' sha256, quantization, tokenizer special tokens, chat template's sha256), the
contract text's sha256, the dataset fingerprint and n requested / effective, device, dtype,
precision, seed and method. Wall times are shown, never compared. Then, per contract, the results:

* the map, over the tokens (compared only when both runs have the same positions and token texts):
  every token whose scores differ by more than the tolerance, the largest absolute difference
  and its position, Spearman's rank correlation of the eligible tokens' scores (average ranks
  for ties; None when either side is constant) and the top-k overlap, ``|top_k(A) & top_k(B)| / k``
  over the eligible tokens ranked as ``top(k)`` ranks them (highest first, ties by position);
* every check field that differs by more than the tolerance, and checks present in one run only;
* every expectation whose verdict or measured value changed;
* a dataset contract's per-example values that changed.

The runs are *equal* when every contract is in both, with the same status, and none of the
result differences above exists: numbers agree within ``tolerance`` (absolute, default
:data:`TOLERANCE`), everything else exactly. Provenance differences are reported but do not make
two runs unequal (a library upgrade that leaves every number within the tolerance is equal).
:func:`render` prints the comparison as text, :func:`comparison_json` as a JSON document.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scopecheck.errors import ContractError, Span

#: the default absolute tolerance for numbers (map scores, check fields, measured values)
TOLERANCE = 1e-6
#: the default k of the top-k overlap
TOP_K = 5
#: the top-level provenance facts compared (the software)
ENV_KEYS = ("scopecheck", "git_revision", "python", "torch", "transformers", "tokenizers", "devices", "dtypes")

Fact = tuple[str, Any, Any]          # (what, value in A, value in B)


def _fail(path: str, message: str, span: Span | None = None, source: str | None = None,
          hint: str | None = None, rule: str = "results") -> ContractError:
    return ContractError(message, span or Span(path=path), rule=rule, source=source,
                         expected="a results JSON written by `scopecheck run --json` or `pytest --scope-json`",
                         hint=hint)


def read_results(path: str | Path) -> dict[str, Any]:
    """The results document at ``path``; a :class:`ContractError` naming the file when it is not one."""
    from scopecheck.report.jsonout import ResultsSchemaError, validate_results

    p = str(path)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(p, f"no such results file: {p}", rule="io") from None
    except IsADirectoryError:
        raise _fail(p, f"{p} is a folder, not a results file", rule="io") from None
    except UnicodeDecodeError:
        raise _fail(p, f"{p} is not a results file: not UTF-8 text", rule="encoding") from None
    except OSError as exc:
        raise _fail(p, f"cannot read the results file {p}: {exc.strerror or exc}", rule="io") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(p, f"{p} is not a results file: not JSON ({exc.msg})",
                    Span(p, exc.lineno, exc.colno, exc.lineno, exc.colno + 1), source=text) from None
    generator = doc.get("generator") if isinstance(doc, dict) else None
    if not isinstance(generator, dict) or generator.get("name") != "scopecheck":
        raise _fail(p, f"{p} is not a scopecheck results file: no generator \"scopecheck\"",
                    hint="`scopecheck run --json FILE` writes one")
    try:
        validate_results(doc)
    except ResultsSchemaError as exc:
        raise _fail(p, f"{p} is not a valid results file: {exc.errors[0] if exc.errors else exc}",
                    hint="it violates results.schema.json (`scopecheck run --json FILE` writes a valid one)") from None
    return doc


# --------------------------------------------------------------------------- numbers


def _float(v: Any) -> float | None:
    """A score as a float (``"inf"``, ``"-inf"``, ``"nan"`` included); None for anything else."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if v in ("inf", "-inf", "nan"):
        return float(v)
    return None


def _score(v: Any) -> float:
    """A token's score (the schema's float: a number, ``"inf"``, ``"-inf"`` or ``"nan"``)."""
    f = _float(v)
    return math.nan if f is None else f


def _close(a: Any, b: Any, tol: float) -> bool:
    """``a`` and ``b`` agree: numbers within ``tol`` (equal infinities, both NaN), lists and
    dicts item by item, anything else exactly."""
    fa, fb = _float(a), _float(b)
    if fa is not None and fb is not None:
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        if math.isinf(fa) or math.isinf(fb):
            return fa == fb
        return abs(fa - fb) <= tol
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    return a == b


def _ranks(xs: list[float]) -> list[float]:
    """1-based ranks, ties given their average rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson's of the average ranks); None when it is undefined
    (fewer than two values, a constant side, a non-finite value)."""
    if len(xs) != len(ys) or len(xs) < 2 or not all(math.isfinite(v) for v in xs + ys):
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def top_positions(tokens: list[dict[str, Any]], k: int) -> list[int]:
    """The positions of the ``k`` highest-scored eligible tokens (ties by position), as ``top(k)``."""
    def key(t: dict[str, Any]) -> tuple[float, int]:
        s = _float(t["score"])
        return (math.inf if s is None or math.isnan(s) else -s, t["position"])     # NaN ranks last

    return [t["position"] for t in sorted((t for t in tokens if t.get("eligible")), key=key)[:k]]


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class TokenDiff:
    position: int
    text: str
    a: float
    b: float

    @property
    def diff(self) -> float:
        """B's score minus A's."""
        return self.b - self.a


@dataclass(frozen=True)
class MapComparison:
    """The two maps of one contract. ``same_tokens`` None: a map is missing (a failed run)."""

    same_tokens: bool | None
    tokens: tuple[TokenDiff, ...] = ()         # the tokens whose scores differ by more than the tolerance
    max_abs_diff: float | None = None
    at_position: int | None = None
    spearman: float | None = None
    k: int = 0
    top_a: tuple[int, ...] = ()
    top_b: tuple[int, ...] = ()

    @property
    def top_k_overlap(self) -> float | None:
        return len(set(self.top_a) & set(self.top_b)) / self.k if self.k else None


@dataclass(frozen=True)
class RunComparison:
    """One contract (a run name, its n-th occurrence) in A and B."""

    name: str
    in_a: bool
    in_b: bool
    provenance: tuple[Fact, ...] = ()
    seconds: tuple[Any, Any] = (None, None)
    status: tuple[Any, Any] = (None, None)
    map: MapComparison | None = None
    checks: tuple[Fact, ...] = ()               # ("<check call> <field>" or "<check call>", A's, B's)
    expectations: tuple[Fact, ...] = ()         # (expectation text, A's, B's) that changed
    examples: tuple[Fact, ...] = ()             # ("<example id> <item>", A's, B's) that changed

    @property
    def equal(self) -> bool:
        if not (self.in_a and self.in_b) or self.status[0] != self.status[1]:
            return False
        if self.map is not None and (self.map.same_tokens is False or self.map.tokens):
            return False
        return not (self.checks or self.expectations or self.examples)


@dataclass(frozen=True)
class Comparison:
    environment: tuple[Fact, ...]
    runs: tuple[RunComparison, ...] = field(default_factory=tuple)
    tolerance: float = TOLERANCE
    top_k: int = TOP_K

    @property
    def equal(self) -> bool:
        return all(r.equal for r in self.runs)


def _keyed(runs: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    seen: dict[str, int] = {}
    out = {}
    for r in runs:
        k = seen.get(r["name"], 0)
        seen[r["name"]] = k + 1
        out[(r["name"], k)] = r
    return out


def _run_facts(r: dict[str, Any]) -> dict[str, Any]:
    prov = r.get("provenance") or {}
    model = prov.get("model") or {}
    tok = model.get("tokenizer") or {}
    ds = prov.get("dataset") or {}
    return {
        "model": r.get("model"), "model location": model.get("location"), "model revision": model.get("revision"),
        "model weights sha256": {w["file"]: w["sha256"] for w in model.get("weights") or []} or None,
        "quantization": r.get("quantization"), "tokenizer": tok.get("class"),
        "tokenizer special tokens": tok.get("special_tokens"),
        "chat template sha256": tok.get("chat_template_sha256"),
        "contract sha256": prov.get("contract_sha256"),
        "dataset fingerprint": ds.get("fingerprint"), "n requested": ds.get("n_requested"),
        "n effective": ds.get("n_effective"),
        "device": r.get("device"), "dtype": r.get("dtype"), "precision": r.get("precision"), "seed": r.get("seed"),
        "method": (r.get("method") or {}).get("name"), "method params": (r.get("method") or {}).get("params"),
    }


def _map(ra: dict[str, Any], rb: dict[str, Any], tol: float, top_k: int) -> MapComparison:
    ta, tb = ra.get("tokens") or [], rb.get("tokens") or []
    if not ta or not tb:
        return MapComparison(None)
    if [(t["position"], t["text"]) for t in ta] != [(t["position"], t["text"]) for t in tb]:
        return MapComparison(False)
    diffs, best, where = [], 0.0, None
    for x, y in zip(ta, tb):
        sa, sb = _score(x["score"]), _score(y["score"])
        if not _close(sa, sb, tol):
            diffs.append(TokenDiff(x["position"], x["text"], sa, sb))
        d = abs(sa - sb) if math.isfinite(sa) and math.isfinite(sb) else (0.0 if sa == sb else math.inf)
        if where is None or d > best or math.isnan(d):
            best, where = d, x["position"]
    both = [(_score(x["score"]), _score(y["score"])) for x, y in zip(ta, tb) if x.get("eligible") and y.get("eligible")]
    rho = spearman([p[0] for p in both], [p[1] for p in both])
    k = min(top_k, sum(bool(t.get("eligible")) for t in ta), sum(bool(t.get("eligible")) for t in tb))
    return MapComparison(True, tuple(diffs), best, where, rho, k, tuple(top_positions(ta, k)),
                         tuple(top_positions(tb, k)))


def _checks(ra: dict[str, Any], rb: dict[str, Any], tol: float) -> tuple[Fact, ...]:
    def key(c: dict[str, Any]) -> str:
        return ("random " if c.get("random") else "") + c["call"]

    ca, cb = {key(c): c for c in ra.get("checks") or []}, {key(c): c for c in rb.get("checks") or []}
    out: list[Fact] = []
    for name in list(ca) + [n for n in cb if n not in ca]:
        x, y = ca.get(name), cb.get(name)
        if x is None or y is None:
            out.append((name, "ran" if x else "absent", "ran" if y else "absent"))
            continue
        for f in list(x["fields"]) + [f for f in y["fields"] if f not in x["fields"]]:
            if not _close(x["fields"].get(f), y["fields"].get(f), tol):
                out.append((f"{name} {f}", x["fields"].get(f), y["fields"].get(f)))
        if x.get("passed") != y.get("passed"):
            out.append((f"{name} passed", x.get("passed"), y.get("passed")))
    return tuple(out)


def _verdict(e: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if e is None else {"passed": e.get("passed"), "measured": e.get("measured")}


def _expectations(ra: dict[str, Any], rb: dict[str, Any], tol: float) -> tuple[Fact, ...]:
    ea = {e["text"]: e for e in ra.get("expectations") or []}
    eb = {e["text"]: e for e in rb.get("expectations") or []}
    out: list[Fact] = []
    for t in list(ea) + [t for t in eb if t not in ea]:
        x, y = _verdict(ea.get(t)), _verdict(eb.get(t))
        if x is None or y is None or x["passed"] != y["passed"] or not _close(x["measured"], y["measured"], tol):
            out.append((t, x, y))
    return tuple(out)


def _examples(ra: dict[str, Any], rb: dict[str, Any], tol: float) -> tuple[Fact, ...]:
    pa = {e["id"]: e for e in (ra.get("dataset") or {}).get("per_example") or []}
    pb = {e["id"]: e for e in (rb.get("dataset") or {}).get("per_example") or []}
    out: list[Fact] = []
    for i in list(pa) + [i for i in pb if i not in pa]:
        x, y = pa.get(i), pb.get(i)
        if x is None or y is None:
            out.append((f"example {i}", "present" if x else "absent", "present" if y else "absent"))
            continue
        if x.get("error") != y.get("error"):
            out.append((f"example {i} error", x.get("error"), y.get("error")))
        vx, vy = x.get("values") or {}, y.get("values") or {}
        for k in list(vx) + [k for k in vy if k not in vx]:
            if not _close(vx.get(k), vy.get(k), tol):
                out.append((f"example {i} {k}", vx.get(k), vy.get(k)))
    return tuple(out)


def compare(a: dict[str, Any], b: dict[str, Any], tolerance: float = TOLERANCE, top_k: int = TOP_K) -> Comparison:
    """What differs between results documents ``a`` and ``b`` (see the module docstring)."""
    pa, pb = a.get("provenance") or {}, b.get("provenance") or {}
    env = tuple((k, pa.get(k), pb.get(k)) for k in ENV_KEYS if pa.get(k) != pb.get(k))
    ka, kb = _keyed(a["runs"]), _keyed(b["runs"])
    out = []
    for key in list(ka) + [k for k in kb if k not in ka]:
        ra, rb = ka.get(key), kb.get(key)
        name = key[0] if key[1] == 0 else f"{key[0]} (#{key[1] + 1})"
        if ra is None or rb is None:
            out.append(RunComparison(name, ra is not None, rb is not None))
            continue
        fa, fb = _run_facts(ra), _run_facts(rb)
        out.append(RunComparison(
            name, True, True, tuple((k, fa[k], fb[k]) for k in fa if fa[k] != fb[k]),
            (ra.get("seconds"), rb.get("seconds")), (ra.get("status"), rb.get("status")),
            _map(ra, rb, tolerance, top_k), _checks(ra, rb, tolerance), _expectations(ra, rb, tolerance),
            _examples(ra, rb, tolerance)))
    return Comparison(env, tuple(out), tolerance, top_k)


# --------------------------------------------------------------------------- output


def _jnum(v: float | None) -> Any:
    if v is None or math.isfinite(v):
        return v
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def _facts_json(facts: tuple[Fact, ...]) -> list[dict[str, Any]]:
    return [{"what": k, "a": x, "b": y} for k, x, y in facts]


def comparison_json(c: Comparison, name_a: str = "A", name_b: str = "B") -> dict[str, Any]:
    """The comparison as plain JSON data (``scopecheck compare --json``)."""
    runs = []
    for r in c.runs:
        rec: dict[str, Any] = {"name": r.name, "in_a": r.in_a, "in_b": r.in_b, "equal": r.equal,
                               "status": {"a": r.status[0], "b": r.status[1]},
                               "seconds": {"a": r.seconds[0], "b": r.seconds[1]},
                               "provenance": _facts_json(r.provenance), "map": None,
                               "checks": _facts_json(r.checks), "expectations": _facts_json(r.expectations),
                               "examples": _facts_json(r.examples)}
        mp = r.map
        if mp is not None:
            rec["map"] = {"same_tokens": mp.same_tokens, "max_abs_diff": _jnum(mp.max_abs_diff),
                          "at_position": mp.at_position, "spearman": mp.spearman,
                          "top_k": {"k": mp.k, "overlap": mp.top_k_overlap, "a": list(mp.top_a), "b": list(mp.top_b)},
                          "tokens": [{"position": t.position, "text": t.text, "a": _jnum(t.a), "b": _jnum(t.b),
                                      "diff": _jnum(t.diff)} for t in mp.tokens]}
        runs.append(rec)
    return {"a": name_a, "b": name_b, "tolerance": c.tolerance, "top_k": c.top_k, "equal": c.equal,
            "environment": _facts_json(c.environment), "runs": runs}


def _shown(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def _verdict_text(v: Any) -> str:
    if v is None:
        return "absent"
    if not isinstance(v, dict):
        return _shown(v)
    return f"{'PASS' if v['passed'] else 'FAIL'} (measured {_shown(v['measured'])})"


def render(c: Comparison, name_a: str = "A", name_b: str = "B", show: int = 20) -> str:
    """The comparison as text: the software's provenance, then one block per contract
    (provenance first, then the map, the checks, the expectations and the examples);
    ``show``: at most this many differing tokens per map, largest differences first."""
    lines = [f"A: {name_a}", f"B: {name_b}",
             f"tolerance {c.tolerance:g} (absolute), top-k overlap at k = {c.top_k}", ""]
    if c.environment:
        lines.append("software (provenance) differs:")
        lines.extend(f"  {k}: A {_shown(x)} | B {_shown(y)}" for k, x, y in c.environment)
    else:
        lines.append("software (provenance): the same")
    for r in c.runs:
        lines.append("")
        lines.append(f"contract {r.name!r}: " + ("equal" if r.equal else "DIFFERS"))
        if not (r.in_a and r.in_b):
            lines.append(f"  only in {'A' if r.in_a else 'B'}")
            continue
        lines.append(f"  status: A {r.status[0]} | B {r.status[1]};  seconds: A {_shown(r.seconds[0])} | "
                     f"B {_shown(r.seconds[1])}")
        if r.provenance:
            lines.append("  provenance differs:")
            lines.extend(f"    {k}: A {_shown(x)} | B {_shown(y)}" for k, x, y in r.provenance)
        else:
            lines.append("  provenance: the same")
        mp = r.map
        if mp is None or mp.same_tokens is None:
            lines.append("  map: not in both (a run without a map)")
        elif not mp.same_tokens:
            lines.append("  map: the tokens differ (positions or texts); scores not compared")
        else:
            rho = "undefined" if mp.spearman is None else f"{mp.spearman:.4f}"
            overlap = "-" if mp.top_k_overlap is None else f"{mp.top_k_overlap:.2f}"
            where = f" at position {mp.at_position}" if mp.max_abs_diff else ""
            lines.append(f"  map: max |B - A| = {_shown(mp.max_abs_diff)}{where}; "
                         f"Spearman {rho}; top-{mp.k} overlap {overlap}")
            if mp.tokens:
                lines.append(f"    {len(mp.tokens)} token(s) differ by more than {c.tolerance:g}:")
                lines.append(f"    {'pos':>5}  {'token':<16} {'A':>12} {'B':>12} {'B - A':>12}")
                ranked = sorted(mp.tokens, key=lambda t: (-abs(t.diff) if not math.isnan(t.diff) else -math.inf,
                                                          t.position))
                for t in ranked[:show]:
                    lines.append(f"    {t.position:>5}  {t.text!r:<16} {t.a:>12.6g} {t.b:>12.6g} {t.diff:>12.6g}")
                if len(ranked) > show:
                    lines.append(f"    ... and {len(ranked) - show} more (--show N, or --json for all)")
        for title, facts, fmt in (("checks", r.checks, _shown), ("expectations", r.expectations, _verdict_text),
                                  ("examples", r.examples, _shown)):
            if facts:
                lines.append(f"  {title} that changed:")
                lines.extend(f"    {k}: A {fmt(x)} | B {fmt(y)}" for k, x, y in facts)
            elif title != "examples":
                lines.append(f"  {title}: no change")
    lines.append("")
    lines.append("equal within the tolerance" if c.equal else "the runs differ")
    return "\n".join(lines) + "\n"


__all__ = ["Comparison", "MapComparison", "RunComparison", "TOLERANCE", "TOP_K", "TokenDiff", "compare",
           "comparison_json", "read_results", "render", "spearman", "top_positions"]
