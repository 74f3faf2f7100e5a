"""The canonical text of spec nodes: each node of :mod:`scopecheck.spec.model` printed as the DSL
spells it, and a whole document as one canonical contract.

``format_document(d)`` prints a spec: one statement per line, SCOPE elements in S, C, O, P, E
order, four-space indent, strings JSON-escaped; the parser (``scopecheck.dsl``) reads it back to
``d``. The validator, the JSON reader and the engine quote nodes in messages and ids with these
functions; ``scopecheck.dsl.format`` re-uses them for the file formatter (``scopecheck fmt``).
Depends on the model only (no parser, no lark).
"""

from __future__ import annotations

import json

from scopecheck.spec import model as m


def quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def fmt_number(v: int | float) -> str:
    return repr(v)


def fmt_ref(r: m.Ref) -> str:
    if isinstance(r, bool):
        raise TypeError("a bool is not an index")
    if isinstance(r, int):
        return str(r)
    if isinstance(r, m.Symbol):
        return r.name
    return quote(r.text) + (f"@{r.occurrence}" if r.occurrence is not None else "")


def fmt_selector(s: m.Selector) -> str:
    head = s.space + (f".{s.segment}" if s.segment else "")
    if s.op == "all":
        return head
    assert s.a is not None, s  # every op but `all` has its first bound (the parser sets it)
    if s.op == "at":
        return f"{head}[{fmt_ref(s.a)}]"
    if s.op == "range":
        assert s.b is not None, s
        return f"{head}[{fmt_ref(s.a)}:{fmt_ref(s.b)}]"
    rel = {v: k for k, v in m.REL_OPS.items()}[s.op]
    return f"{head}[{rel}{fmt_ref(s.a)}]"


def fmt_value(v: m.Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return fmt_number(v)
    if isinstance(v, m.Text):
        return quote(v.value)
    if isinstance(v, m.Ident):
        return v.name
    return fmt_selector(v)


def fmt_dataset(d: m.Dataset) -> str:
    """What follows ``dataset``: ``reference:t/s(...)``, ``"file"(...)`` or ``hf("name", ...)``."""
    if d.kind == "hf":
        return "hf(" + ", ".join([quote(d.name)] + [f"{p.key} = {fmt_value(p.value)}" for p in d.params]) + ")"
    ref = f"reference:{d.name}" if d.kind == "reference" else quote(d.name)
    return ref + fmt_params(d.params)


def fmt_params(ps: m.Params, always: bool = False) -> str:
    if not ps and not always:
        return ""
    return "(" + ", ".join(f"{p.key} = {fmt_value(p.value)}" for p in ps) + ")"


def _term(kind: str, target: str, given: tuple[m.Selector, ...], pert: m.Selector | None = None) -> str:
    cond = ""
    if given or pert is not None:
        cond = " | " + ", ".join(fmt_selector(g) for g in given)
        if pert is not None:
            cond += f"; pert({fmt_selector(pert)})"
    if kind == "logit":
        return f"logit({target})"
    prefix = "log p" if kind == "logprob" else "p"
    return f"{prefix}({target}{cond})"


def fmt_score(s: m.Score) -> str:
    target = fmt_selector(s.target)
    if s.kind in ("logprob", "prob", "logit"):
        out = _term(s.kind, target, s.given)
    elif s.kind == "contrast":
        out = _term("logprob", target, s.given) + " - " + _term("logprob", quote(s.alternative or ""), s.given)
    else:  # stage_delta
        out = _term("logprob", target, s.given) + " - " + _term("logprob", target, s.given, s.perturbed)
    if s.estimator is not None:
        out += f" via {s.estimator.name}{fmt_params(s.estimator.params)}"
    return out


def fmt_features(sels: tuple[m.Selector, ...]) -> str:
    return ", ".join(fmt_selector(s) for s in sels) if sels else "nothing"


def fmt_operand(o: m.Operand | m.Comparison) -> str:
    if isinstance(o, (int, float)) and not isinstance(o, bool):
        return fmt_number(o)
    if isinstance(o, m.Comparison):
        return f"{fmt_operand(o.left)} {o.op} {fmt_operand(o.right)}"
    if isinstance(o, m.Aggregate):
        args = [fmt_operand(a) for a in o.args] + [f"{p.key} = {fmt_value(p.value)}" for p in o.params]
        return f"{o.func}({', '.join(args)})" + "".join(f".{f}" for f in o.fields)
    if isinstance(o, m.Text):
        return quote(o.value)
    if isinstance(o, m.Selector):
        return fmt_selector(o)
    assert isinstance(o, m.Call), o  # what is left of Operand (no bool: the grammar has no boolean operand)
    args = [fmt_value(a) for a in o.args] + [f"{p.key} = {fmt_value(p.value)}" for p in o.params]
    call = f"{o.name}({', '.join(args)})" if o.called else o.name
    return call + "".join(f".{f}" for f in o.fields)


def fmt_expectation(e: m.Expectation) -> str:
    out = f"expect {fmt_operand(e.left)}"
    if e.op is not None and e.right is not None:
        out += f" {e.op} {fmt_operand(e.right)}"
    return out


def fmt_model(r: m.ModelRef) -> str:
    if r.kind == "reference":
        return f"reference:{r.name}"
    if r.kind == "hub":
        return f"hub:{quote(r.name)}"
    return quote(r.name)


def prompt_lines(p: m.Prompt, ind: str) -> list[str]:
    if len(p.segments) == 1 and p.segments[0].name is None:
        return [f"{ind}prompt   {quote(p.segments[0].text)}"]
    lines = [f"{ind}prompt chat {{" if p.chat else f"{ind}prompt {{"]
    lines += [f"{ind}    {s.name}: " + (f"field({quote(s.field)})" if s.field is not None else quote(s.text))
              for s in p.segments]
    lines.append(f"{ind}}}")
    return lines


def output_line(o: m.Output, ind: str) -> str:
    if o.text is not None:
        return f"{ind}output   {quote(o.text)}"
    rest = "".join(f", {p.key} = {fmt_value(p.value)}" for p in o.params)
    return f"{ind}output   generate({o.rule}{rest})"


def scope_lines(sc: m.Scope, ind: str = "") -> list[str]:
    """The stated SCOPE elements as canonical statements, S C O P E order."""
    out = []
    if sc.score is not None:
        out.append(f"{ind}score    {fmt_score(sc.score)}")
    if sc.fixed is not None:
        out.append(f"{ind}fixed    {fmt_features(sc.fixed)}")
    if sc.explain is not None:
        out.append(f"{ind}explain  {fmt_selector(sc.explain)}")
    if sc.process is not None:
        out.append(f"{ind}process  {sc.process.kind}{fmt_params(sc.process.params)}")
    if sc.eligible is not None:
        out.append(f"{ind}eligible {fmt_features(sc.eligible)}")
    return out


def resolved_scope_lines(doc: m.Contract, scope: m.Scope, origin: dict[str, str]) -> list[str]:
    """The complete SCOPE of a contract, one ``#`` comment line per element with where it comes
    from: ``stated`` (written in the contract, with its line) or the ``use`` statement that
    filled it; a missing element says so. Comments, so the printed contract still parses."""
    use = f"use {doc.use.name}{fmt_params(doc.use.params)}" if doc.use is not None else None
    width = max(len(ln) for ln in scope_lines(scope)) if scope_lines(scope) else 0
    out = [f"# resolved SCOPE ({'stated elements over ' + use if use else 'every element stated'}):"]
    for el, line in zip([e for e in m.Scope.ELEMENTS if getattr(scope, e) is not None], scope_lines(scope)):
        where = origin.get(el)
        span = doc.spans.get(el) if where == "stated" else None
        said = (f"stated, line {span.line}" if span is not None else "stated") if where == "stated" else f"from {use}"
        out.append(f"#   {line.ljust(width)}   <- {said}")
    for el in m.Scope.ELEMENTS:
        if getattr(scope, el) is None:
            out.append(f"#   {el}: not stated and not filled in")
    return out


def source_field_line(name: str, value: str | int) -> str:
    """One field of a `source { ... }` block: `title   "..."` (names padded to one column)."""
    return f"{name:<8}{value if isinstance(value, int) else quote(value)}"


def source_lines(src: str | m.Source | None, ind: str) -> list[str]:
    """A claim's `source` statement: one line for a text citation, a block for a structured one."""
    if src is None:
        return []
    if isinstance(src, str):
        return [f"{ind}source   {quote(src)}"]
    inner = [f"{ind * 2}{source_field_line(k, v)}" for k in m.SOURCE_FIELDS
             if (v := getattr(src, k)) is not None]
    return [f"{ind}source {{", *inner, f"{ind}}}"]


def states_line(st: m.Statement) -> str:
    return f"states {st.kind} {quote(st.text)}"


def _common(doc: m.Contract | m.Claim, ind: str) -> list[str]:
    out = []
    if doc.model is not None:
        out.append(f"{ind}model    {fmt_model(doc.model)}")
    if doc.prompt is not None:
        out += prompt_lines(doc.prompt, ind)
    if doc.output is not None:
        out.append(output_line(doc.output, ind))
    return out


def format_document(doc: m.Document) -> str:
    ind = "    "
    if isinstance(doc, m.Contract):
        lines = [f"contract {quote(doc.name)} {{"] + _common(doc, ind)
        if doc.dataset is not None:
            lines.append(f"{ind}dataset  {fmt_dataset(doc.dataset)}")
        body: list[str] = []
        if doc.use is not None:
            body.append(f"{ind}use {doc.use.name}{fmt_params(doc.use.params)}")
        body += scope_lines(doc.scope, ind)
        if body:
            lines += [""] + body
        tail: list[str] = []
        if doc.method is not None:
            tail.append(f"{ind}method {doc.method.name}{fmt_params(doc.method.params)}")
        if doc.seed is not None:
            tail.append(f"{ind}seed {doc.seed}")
        if tail:
            lines += [""] + tail
        if doc.expects:
            lines += [""] + [ind + fmt_expectation(e) for e in doc.expects]
        return "\n".join(lines + ["}"]) + "\n"
    lines = [f"claim {quote(doc.name)} {{"]
    lines += source_lines(doc.source, ind)
    if doc.states is not None:
        lines.append(f"{ind}{states_line(doc.states)}")
    if doc.question is not None:
        lines.append(f"{ind}question {doc.question}")
    lines += _common(doc, ind)
    c = doc.computed
    inner: list[str] = []
    if c.model is not None:
        inner.append(f"{ind * 2}model    {fmt_model(c.model)}")
    if c.toolkit is not None:
        inner.append(f"{ind * 2}toolkit  {c.toolkit}")
    if c.use is not None:
        inner.append(f"{ind * 2}use {c.use.name}{fmt_params(c.use.params)}")
    if c.method is not None:
        inner.append(f"{ind * 2}method   {c.method.name}{fmt_params(c.method.params)}")
    inner += scope_lines(c.scope, ind * 2)
    lines += [f"{ind}computed {{", *inner, f"{ind}}}"]
    r = doc.reported
    rep = [f"{ind * 2}metric {p.key} = {fmt_value(p.value)}" for p in r.metrics]
    if r.map is not None:
        entries = ", ".join(f"{quote(k)}: {fmt_number(v)}" for k, v in r.map)
        rep.append(f"{ind * 2}map {{ {entries} }}")
    lines += [f"{ind}reported {{", *rep, f"{ind}}}"]
    lines += [ind + fmt_expectation(e) for e in doc.expects]
    return "\n".join(lines + ["}"]) + "\n"


def format_documents(docs: list[m.Document]) -> str:
    return "\n".join(format_document(d) for d in docs)


__all__ = ["fmt_dataset", "fmt_expectation", "fmt_features", "fmt_model", "fmt_number", "fmt_operand", "fmt_params",
           "fmt_ref", "fmt_score", "fmt_selector", "fmt_value", "format_document", "format_documents", "output_line",
           "prompt_lines", "quote", "scope_lines", "source_field_line", "source_lines", "states_line"]
