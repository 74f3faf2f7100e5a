"""Normalized JSON for specs, validated against the published JSON Schema.

``to_json(doc)`` returns the normalized form (every SCOPE element filled, each with its
origin, and the derived contract kind) together with a map from JSON paths to source
spans, so a schema violation is reported at the source position of the offending node.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from scopecheck.errors import ContractError, SchemaError, Span, cap_errors
from scopecheck.spec import model as m
from scopecheck.spec.text import fmt_expectation, fmt_score, fmt_selector
from scopecheck.spec.validate import resolve
from scopecheck.version import __version__

SCHEMA_FILE = "contract.schema.json"
Path_ = tuple[Any, ...]


CHECK_SCHEMA_FILE = "check.schema.json"


@functools.cache
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files("scopecheck.spec").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
    return data


def check_schema() -> dict[str, Any]:
    """The schema of ``scopecheck check --json`` (one document holding the normalized documents)."""
    data: dict[str, Any] = json.loads(
        resources.files("scopecheck.spec").joinpath(CHECK_SCHEMA_FILE).read_text(encoding="utf-8"))
    return data


def check_output(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The one JSON document ``scopecheck check --json`` prints."""
    return {"scopecheck": __version__, "documents": documents}


def check_output_validator() -> Any:
    """A validator of :func:`check_output` documents, resolving its reference to the contract
    schema from the package (nothing is fetched)."""
    import jsonschema
    from referencing import Registry, Resource

    contract = schema()
    registry = Registry().with_resource(contract["$id"], Resource.from_contents(contract))
    return jsonschema.Draft202012Validator(check_schema(), registry=registry)


def _ref(r: m.Ref | None) -> Any:
    if r is None:
        return None
    if isinstance(r, int):
        return r
    if isinstance(r, m.Symbol):
        return {"symbol": r.name}
    out: dict[str, Any] = {"text": r.text}
    if r.occurrence is not None:
        out["occurrence"] = r.occurrence
    return out


class _Writer:
    def __init__(self) -> None:
        self.spans: dict[Path_, Span] = {}

    def mark(self, path: Path_, span: Span | None) -> None:
        if span is not None and span != m.NOSPAN:
            self.spans[path] = span

    def selector(self, s: m.Selector, path: Path_) -> dict[str, Any]:
        self.mark(path, s.span)
        out: dict[str, Any] = {"space": s.space, "op": s.op, "text": fmt_selector(s)}
        if s.segment is not None:
            out["segment"] = s.segment
        if s.a is not None:
            out["a"] = _ref(s.a)
        if s.b is not None:
            out["b"] = _ref(s.b)
        return out

    def value(self, v: m.Value, path: Path_) -> Any:
        if isinstance(v, (bool, int, float)):
            return v
        if isinstance(v, m.Text):
            self.mark(path, v.span)
            return {"string": v.value}
        if isinstance(v, m.Ident):
            self.mark(path, v.span)
            return {"name": v.name}
        return {"selector": self.selector(v, path)}

    def params(self, ps: m.Params, path: Path_) -> dict[str, Any]:
        out = {}
        for p in ps:
            self.mark((*path, p.key), p.span)
            out[p.key] = self.value(p.value, (*path, p.key))
        return out

    def sels(self, sels: tuple[m.Selector, ...] | None, path: Path_) -> Any:
        if sels is None:
            return None
        return [self.selector(s, (*path, i)) for i, s in enumerate(sels)]

    def score(self, s: m.Score | None, path: Path_) -> Any:
        if s is None:
            return None
        self.mark(path, s.span)
        out: dict[str, Any] = {"kind": s.kind, "text": fmt_score(s), "target": self.selector(s.target, (*path, "target")),
                               "given": self.sels(s.given, (*path, "given"))}
        if s.alternative is not None:
            out["alternative"] = s.alternative
        if s.perturbed is not None:
            out["perturbed"] = self.selector(s.perturbed, (*path, "perturbed"))
        if s.estimator is not None:
            self.mark((*path, "estimator"), s.estimator.span)
            out["estimator"] = {"name": s.estimator.name,
                                "params": self.params(s.estimator.params, (*path, "estimator", "params"))}
        return out

    def scope(self, sc: m.Scope, origin: dict[str, str] | None, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for e in m.Scope.ELEMENTS:
            v = getattr(sc, e)
            p = (*path, e)
            if v is None:
                out[e] = None
                continue
            if e == "score":
                val = self.score(v, (*p, "value"))
            elif e == "process":
                self.mark((*p, "value"), v.span)
                val = {"kind": v.kind, "params": self.params(v.params, (*p, "value", "params"))}
            elif e == "explain":
                val = self.selector(v, (*p, "value"))
            else:
                val = self.sels(v, (*p, "value"))
            out[e] = {"value": val, "origin": (origin or {}).get(e, "stated")}
        return out

    def model(self, r: m.ModelRef | None, path: Path_) -> Any:
        if r is None:
            return None
        self.mark(path, r.span)
        return {"kind": r.kind, "name": r.name}

    def prompt(self, p: m.Prompt | None, path: Path_) -> Any:
        if p is None:
            return None
        self.mark(path, p.span)
        out: dict[str, Any] = {"text": p.text,
                               "segments": [{"name": s.name, "text": s.text, **({"field": s.field} if s.field else {})}
                                            for s in p.segments]}
        if p.chat:
            out["chat"] = True
        return out

    def output(self, o: m.Output | None, path: Path_) -> Any:
        if o is None:
            return None
        self.mark(path, o.span)
        if o.text is not None:
            return {"text": o.text}
        return {"generate": {"rule": o.rule, "params": self.params(o.params, (*path, "generate", "params"))}}

    def named(self, x: m.Use | m.Method | None, path: Path_) -> Any:
        if x is None:
            return None
        self.mark(path, x.span)
        return {"name": x.name, "params": self.params(x.params, (*path, "params"))}

    def expects(self, exps: tuple[m.Expectation, ...], path: Path_) -> list[Any]:
        out = []
        for i, e in enumerate(exps):
            self.mark((*path, i), e.span)
            out.append({"text": fmt_expectation(e), "line": e.span.line, "op": e.op})
        return out


def to_json(doc: m.Document) -> tuple[dict[str, Any], dict[Path_, Span]]:
    """Normalized JSON and the source span of each node (by JSON path)."""
    w = _Writer()
    w.mark((), doc.span)
    w.mark(("name",), doc.spans.get("name"))
    src = {"path": doc.span.path, "line": doc.span.line, "column": doc.span.column}
    if isinstance(doc, m.Contract):
        res = resolve(doc)
        out = {
            "kind": "contract", "name": doc.name, "source": src,
            "model": w.model(doc.model, ("model",)), "prompt": w.prompt(doc.prompt, ("prompt",)),
            "output": w.output(doc.output, ("output",)), "use": w.named(doc.use, ("use",)),
            "contract_kind": res.kind, "scope": w.scope(res.scope, res.origin, ("scope",)),
            "method": w.named(doc.method, ("method",)), "seed": doc.seed,
            "expects": w.expects(doc.expects, ("expects",)),
        }
        if doc.dataset is not None:
            w.mark(("dataset",), doc.dataset.span)
            out["dataset"] = {"kind": doc.dataset.kind, "name": doc.dataset.name,
                              "params": w.params(doc.dataset.params, ("dataset", "params"))}
        return out, w.spans
    c = doc.computed
    computed = {
        "use": w.named(c.use, ("computed", "use")), "method": w.named(c.method, ("computed", "method")),
        "toolkit": c.toolkit, "model": w.model(c.model, ("computed", "model")),
        "scope": w.scope(c.scope, None, ("computed", "scope")),
    }
    rep = doc.reported
    reported: dict[str, Any] = {"metrics": {}, "map": None}
    for p in rep.metrics:
        w.mark(("reported", "metrics", p.key), p.span)
        reported["metrics"][p.key] = p.value
    if rep.map is not None:
        reported["map"] = [[k, v] for k, v in rep.map]
    cited = doc.source
    publication = None
    if isinstance(cited, m.Source):
        w.mark(("publication",), cited.span)
        publication = {"authors": cited.authors, "title": cited.title, "venue": cited.venue, "year": cited.year,
                       "locator": cited.locator, "url": cited.url}
    states = None
    if doc.states is not None:
        w.mark(("states",), doc.states.span)
        states = {"kind": doc.states.kind, "text": doc.states.text}
    out = {
        "kind": "claim", "name": doc.name, "source": src, "question": doc.question,
        "citation": cited.citation() if isinstance(cited, m.Source) else cited,
        "publication": publication, "states": states,
        "model": w.model(doc.model, ("model",)), "prompt": w.prompt(doc.prompt, ("prompt",)),
        "output": w.output(doc.output, ("output",)), "computed": computed, "reported": reported,
        "expects": w.expects(doc.expects, ("expects",)),
    }
    return out, w.spans


def schema_errors(doc: m.Document) -> list[ContractError]:
    """Validate the normalized JSON of ``doc``; each violation positioned at its source node."""
    import jsonschema

    data, spans = to_json(doc)
    full = schema()
    part = "contract" if isinstance(doc, m.Contract) else "claim"
    validator = jsonschema.Draft202012Validator({"$ref": f"#/$defs/{part}", "$defs": full["$defs"]})
    out: list[ContractError] = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(err.absolute_path)
        span = None
        while span is None:
            span = spans.get(path)
            if not path:
                break
            path = path[:-1]
        where = "/".join(map(str, err.absolute_path)) or "(document)"
        message = err.message if len(err.message) < 200 else err.message[:200] + "..."
        out.append(SchemaError(f"{where}: {message}", span or doc.span,
                               expected=str(err.schema.get("description", "")) or None, rule="schema"))
    return cap_errors(out)
