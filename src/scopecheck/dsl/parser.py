"""Parse contract text into spec objects, with positioned errors.

The Lark parser is built once (LALR, contextual lexer, positions propagated) and
cached. The transformer keeps every node's source span (``v_args(meta=True)``), so
errors found later, in validation or in the engine, still point at the right column.
"""

from __future__ import annotations

import builtins
import functools
import json
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError
from lark.tree import Meta

from scopecheck.errors import ContractError, ContractSyntaxError, Span, did_you_mean
from scopecheck.spec import model as m

GRAMMAR_FILE = "scope.lark"

#: statement keywords, for "did you mean" hints on a misspelled statement
CONTRACT_KEYWORDS = ("model", "prompt", "output", "use", "score", "fixed", "explain", "process",
                     "eligible", "method", "seed", "expect", "dataset")
CLAIM_KEYWORDS = ("question", "source", "states", "model", "prompt", "output", "computed", "reported", "expect")
COMPUTED_KEYWORDS = ("use", "score", "fixed", "explain", "process", "eligible", "method", "toolkit", "model")

_TERMINAL_WORDS = {
    "NAME": "a name",
    "MODEL_NAME": "a model name",
    "METHOD_NAME": "a method name",
    "STRING": 'a "quoted string"',
    "INT": "an integer",
    "SIGNED_NUMBER": "a number",
    "NOTHING": "`nothing`",
    "$END": "end of file",
}


def grammar_text() -> str:
    return resources.files("scopecheck.dsl").joinpath(GRAMMAR_FILE).read_text(encoding="utf-8")


@functools.cache
def lark_parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


#: the tokens a layout parse records: comments (ignored by the grammar) and block openings
_LAYOUT_TOKENS = ("COMMENT", "LBRACE")
_layout_sink = threading.local()


def _record(tok: Token) -> Token:
    sink = getattr(_layout_sink, "tokens", None)
    if sink is not None:
        sink.append(tok)
    return tok


@functools.cache
def _layout_parser() -> Lark:
    """The same parser, with lexer callbacks that keep comments and `{` (Lark's way to keep comments)."""
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True,
                lexer_callbacks={name: _record for name in _LAYOUT_TOKENS})


# --------------------------------------------------------------------------- positions


def _tok_span(tok: Token, path: str) -> Span:
    return Span(path, tok.line or 1, tok.column or 1, tok.end_line or tok.line or 1,
                tok.end_column or (tok.column or 1) + len(str(tok)))


def _meta_span(meta: Any, path: str) -> Span:
    if getattr(meta, "empty", True):
        return Span(path)
    return Span(path, meta.line, meta.column, meta.end_line, meta.end_column)


def _unquote(tok: Token, path: str) -> str:
    try:
        value = json.loads(str(tok))
    except json.JSONDecodeError as exc:
        raise ContractSyntaxError(
            f"invalid escape in string: {exc.msg}",
            _tok_span(tok, path),
            expected='a string with JSON escapes only (\\" \\\\ \\n \\t \\uXXXX)',
            rule="string",
        ) from None
    return str(value)


#: Integer literals longer than this are refused (2**63 - 1, the largest seed, has 19 digits).
MAX_INT_DIGITS = 19


def _int(tok: Token, path: str) -> int:
    text = str(tok).lstrip("+-")
    if len(text.lstrip("0")) > MAX_INT_DIGITS:
        raise ContractSyntaxError(f"integer literal with {len(text)} digits is too large", _tok_span(tok, path),
                                  expected=f"at most {MAX_INT_DIGITS} digits", rule="number")
    return int(str(tok))


def _number(tok: Token, path: str = "<string>") -> int | float:
    text = str(tok)
    if any(c in text for c in ".eE"):
        value = float(text)
        if value != value or value in (float("inf"), float("-inf")):
            raise ContractSyntaxError(f"number {text} is not a finite float", _tok_span(tok, path),
                                      expected="a finite number (|x| < 1.8e308)", rule="number")
        return value
    return _int(tok, path)


# --------------------------------------------------------------------------- transformer


def fmt_field(value: str | int | float) -> str:
    """A source field's value as written (a text quoted)."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


class _Stmt:
    """A parsed statement before it is placed in its document."""

    __slots__ = ("key", "value", "span")

    def __init__(self, key: str, value: Any, span: Span) -> None:
        self.key, self.value, self.span = key, value, span


@v_args(meta=True)
class ToSpec(Transformer[Token, Any]):
    """Lark tree -> spec dataclasses. Raises ContractError with positions."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    # ---- helpers
    def _s(self, meta: Any) -> Span:
        return _meta_span(meta, self.path)

    def _str(self, tok: Token) -> str:
        return _unquote(tok, self.path)

    # ---- values
    def number(self, meta: Meta, ch: list[Token]) -> int | float:
        return _number(ch[0], self.path)

    def v_number(self, meta: Meta, ch: list[int | float]) -> int | float:
        return ch[0]

    def v_text(self, meta: Meta, ch: list[Token]) -> m.Text:
        return m.Text(self._str(ch[0]), self._s(meta))

    def v_text_at(self, meta: Meta, ch: list[Token]) -> m.Selector:
        # `target = "Lily"@2`: the second occurrence of the text, an output position
        return m.Selector("y", "at", m.TextRef(self._str(ch[0]), _int(ch[1], self.path)), None, None, self._s(meta))

    def bool(self, meta: Meta, ch: list[Token]) -> builtins.bool:
        return str(ch[0]) == "true"

    def v_bool(self, meta: Meta, ch: list[builtins.bool]) -> builtins.bool:
        return ch[0]

    def v_selector(self, meta: Meta, ch: list[m.Selector]) -> m.Selector:
        return ch[0]

    def v_ident(self, meta: Meta, ch: list[Token]) -> m.Ident:
        return m.Ident(str(ch[0]), self._s(meta))

    def param(self, meta: Meta, ch: list[Any]) -> m.Param:
        return m.Param(str(ch[0]), ch[1], self._s(meta))

    def params(self, meta: Meta, ch: list[m.Param | None]) -> m.Params:
        ps = tuple(c for c in ch if c is not None)
        seen: dict[str, m.Param] = {}
        for p in ps:
            if p.key in seen:
                raise ContractSyntaxError(f"parameter `{p.key}` given twice", p.span,
                                          expected="each parameter at most once", rule="duplicate")
            seen[p.key] = p
        return ps

    # ---- selectors
    def space(self, meta: Meta, ch: list[Token]) -> str:
        return str(ch[0])

    def rel(self, meta: Meta, ch: list[Token]) -> str:
        return str(ch[0])

    def ref_int(self, meta: Meta, ch: list[Token]) -> int:
        return _int(ch[0], self.path)

    def ref_text(self, meta: Meta, ch: list[Any]) -> m.TextRef:
        occ = _int(ch[1], self.path) if ch[1] is not None else None
        return m.TextRef(self._str(ch[0]), occ)

    def ref_symbol(self, meta: Meta, ch: list[Token]) -> m.Symbol:
        return m.Symbol(str(ch[0]))

    def sel_at(self, meta: Meta, ch: list[m.Ref]) -> tuple[str, m.Ref, None]:
        return ("at", ch[0], None)

    def sel_range(self, meta: Meta, ch: list[m.Ref]) -> tuple[str, m.Ref, m.Ref]:
        return ("range", ch[0], ch[1])

    def sel_rel(self, meta: Meta, ch: list[Any]) -> tuple[str, m.Ref, None]:
        return (m.REL_OPS[ch[0]], ch[1], None)

    def selector(self, meta: Meta, ch: list[Any]) -> m.Selector:
        space, seg, body = ch
        op, a, b = body if body is not None else ("all", None, None)
        segment = str(seg) if seg is not None else None
        if segment is not None and space != "x":
            raise ContractSyntaxError(
                f"only prompt tokens have named segments, not `{space}`", self._s(meta),
                expected="x.<segment>", rule="selector")
        return m.Selector(space, op, a, b, segment, self._s(meta))

    # ---- SCOPE elements
    def score_target(self, meta: Meta, ch: list[Token | m.Selector]) -> m.Text | m.Selector:
        tok = ch[0]
        return m.Text(self._str(tok), _tok_span(tok, self.path)) if isinstance(tok, Token) else tok

    def perturbation(self, meta: Meta, ch: list[m.Selector]) -> m.Selector:
        return ch[0]

    def condition(self, meta: Meta, ch: list[Any]) -> tuple[tuple[m.Selector, ...], m.Selector | None]:
        pert = ch[-1]
        return (tuple(ch[:-1]), pert)

    def _term(self, kind: str, meta: Meta, ch: list[Any]) -> dict[str, Any]:
        target = ch[0]
        given, pert = ch[1] if len(ch) > 1 and ch[1] is not None else ((), None)
        return {"kind": kind, "target": target, "given": given, "pert": pert, "span": self._s(meta)}

    def logp(self, meta: Meta, ch: list[Any]) -> dict[str, Any]:
        return self._term("logprob", meta, ch)

    def prob(self, meta: Meta, ch: list[Any]) -> dict[str, Any]:
        return self._term("prob", meta, ch)

    def logit(self, meta: Meta, ch: list[Any]) -> dict[str, Any]:
        return self._term("logit", meta, ch)

    def minus_term(self, meta: Meta, ch: list[dict[str, Any]]) -> dict[str, Any]:
        return ch[0]

    def estimator(self, meta: Meta, ch: list[Any]) -> m.Estimator:
        return m.Estimator(str(ch[0]), ch[1] or (), self._s(meta))

    def score_expr(self, meta: Meta, ch: list[Any]) -> m.Score:
        first, second, est = ch
        span = self._s(meta)

        def bad(msg: str, where: Span, expected: str) -> ContractSyntaxError:
            return ContractSyntaxError(msg, where, expected=expected, rule="score")

        if isinstance(first["target"], m.Text):
            raise bad("the attributed score must name an output selector (y[...] or z[...]), not a string",
                      first["target"].span, 'log p(y["noir"] | x, y[<"noir"])')
        if first["pert"] is not None:
            raise bad("pert(...) belongs in the subtracted term", first["span"],
                      "log p(y | x) - log p(y | x; pert(stage))")
        if second is None:
            return m.Score(first["kind"], first["target"], first["given"], None, None, est, span)
        if first["kind"] != "logprob" or second["kind"] != "logprob":
            raise bad("a difference of scores must subtract log-probabilities", second["span"],
                      'log p(y["noir"] | ...) - log p("noire" | ...)')
        if second["pert"] is not None:
            return m.Score("stage_delta", first["target"], first["given"], None, second["pert"], est, span)
        alt = second["target"]
        if not isinstance(alt, m.Text):
            raise bad("the subtracted term of a contrastive score names the alternative token as a string",
                      second["span"], 'log p(y["noir"] | x, y[<"noir"]) - log p("noire" | x, y[<"noir"])')
        if second["given"] != first["given"]:
            raise bad("both terms of a contrastive score must condition on the same context", second["span"],
                      "the same `| ...` list in both terms")
        return m.Score("contrast", first["target"], first["given"], alt.value, None, est, span)

    def score_stmt(self, meta: Meta, ch: list[m.Score]) -> _Stmt:
        return _Stmt("score", ch[0], self._s(meta))

    def fixed_stmt(self, meta: Meta, ch: list[Any]) -> _Stmt:
        return _Stmt("fixed", self._features(ch), self._s(meta))

    def eligible_stmt(self, meta: Meta, ch: list[Any]) -> _Stmt:
        return _Stmt("eligible", self._features(ch), self._s(meta))

    @staticmethod
    def _features(ch: list[Any]) -> tuple[m.Selector, ...]:
        if len(ch) == 1 and isinstance(ch[0], Token):
            return ()
        return tuple(ch)

    def explain_stmt(self, meta: Meta, ch: list[m.Selector]) -> _Stmt:
        return _Stmt("explain", ch[0], self._s(meta))

    def process_stmt(self, meta: Meta, ch: list[Any]) -> _Stmt:
        return _Stmt("process", m.Process(str(ch[0]), ch[1] or (), self._s(meta)), self._s(meta))

    # ---- common statements
    def model_reference(self, meta: Meta, ch: list[Token]) -> m.ModelRef:
        return m.ModelRef("reference", str(ch[0]), self._s(meta))

    def model_hub(self, meta: Meta, ch: list[Token]) -> m.ModelRef:
        return m.ModelRef("hub", self._str(ch[0]), self._s(meta))

    def model_path(self, meta: Meta, ch: list[Token]) -> m.ModelRef:
        return m.ModelRef("path", self._str(ch[0]), self._s(meta))

    def model_stmt(self, meta: Meta, ch: list[m.ModelRef]) -> _Stmt:
        return _Stmt("model", ch[0], self._s(meta))

    def segment(self, meta: Meta, ch: list[Token]) -> m.Segment:
        return m.Segment(str(ch[0]), self._str(ch[1]), self._s(meta))

    def segment_field(self, meta: Meta, ch: list[Token]) -> m.Segment:
        return m.Segment(str(ch[0]), "", self._s(meta), field=self._str(ch[1]))

    def prompt_text(self, meta: Meta, ch: list[Token]) -> _Stmt:
        seg = m.Segment(None, self._str(ch[0]), _tok_span(ch[0], self.path))
        return _Stmt("prompt", m.Prompt((seg,), self._s(meta)), self._s(meta))

    def prompt_segments(self, meta: Meta, ch: list[m.Segment]) -> _Stmt:
        names: set[str | None] = set()
        for seg in ch:
            if seg.name in names:
                raise ContractSyntaxError(f"prompt segment `{seg.name}` defined twice", seg.span,
                                          expected="distinct segment names", rule="duplicate")
            names.add(seg.name)
        return _Stmt("prompt", m.Prompt(tuple(ch), self._s(meta)), self._s(meta))

    def prompt_chat(self, meta: Meta, ch: list[m.Segment]) -> _Stmt:
        roles = ("system", "user", "assistant")
        for seg in ch:
            if seg.name not in roles:
                raise ContractSyntaxError(f"chat messages are named by their role, not `{seg.name}`", seg.span,
                                          expected=" | ".join(roles), rule="chat")
        return _Stmt("prompt", m.Prompt(tuple(ch), self._s(meta), chat=True), self._s(meta))

    def output_text(self, meta: Meta, ch: list[Token]) -> _Stmt:
        return _Stmt("output", m.Output(text=self._str(ch[0]), span=self._s(meta)), self._s(meta))

    def output_generate(self, meta: Meta, ch: list[Any]) -> _Stmt:
        rule, *params = ch
        ps = self.params(meta, params)
        return _Stmt("output", m.Output(rule=str(rule), params=ps, span=self._s(meta)), self._s(meta))

    def use_stmt(self, meta: Meta, ch: list[Any]) -> _Stmt:
        return _Stmt("use", m.Use(str(ch[0]), ch[1] or (), self._s(meta)), self._s(meta))

    def method_stmt(self, meta: Meta, ch: list[Any]) -> _Stmt:
        return _Stmt("method", m.Method(str(ch[0]), ch[1] or (), self._s(meta)), self._s(meta))

    def seed_stmt(self, meta: Meta, ch: list[Token]) -> _Stmt:
        return _Stmt("seed", _int(ch[0], self.path), self._s(meta))

    # ---- expectations
    def comparator(self, meta: Meta, ch: list[Token]) -> str:
        return str(ch[0])

    def call_args(self, meta: Meta, ch: list[m.Value | m.Param | None]) -> tuple[m.Value | m.Param, ...]:
        return tuple(c for c in ch if c is not None)

    def call(self, meta: Meta, ch: list[Any]) -> m.Call:
        name = str(ch[0])
        raw = ch[1]
        fields = tuple(str(t) for t in ch[2:])
        args = tuple(a for a in (raw or ()) if not isinstance(a, m.Param))
        params = self.params(meta, [a for a in (raw or ()) if isinstance(a, m.Param)])
        return m.Call(name, args, params, fields, raw is not None, self._s(meta))

    def op_number(self, meta: Meta, ch: list[int | float]) -> int | float:
        return ch[0]

    def op_text(self, meta: Meta, ch: list[Token]) -> m.Text:
        return m.Text(self._str(ch[0]), self._s(meta))

    def op_selector(self, meta: Meta, ch: list[m.Selector]) -> m.Selector:
        return ch[0]

    def op_call(self, meta: Meta, ch: list[m.Call]) -> m.Call:
        return ch[0]

    def op_aggregate(self, meta: Meta, ch: list[m.Aggregate]) -> m.Aggregate:
        return ch[0]

    def agg_compare(self, meta: Meta, ch: list[Any]) -> m.Comparison:
        left, op, right = ch
        return m.Comparison(left, op, right, self._s(meta))

    def aggregate(self, meta: Meta, ch: list[Any]) -> m.Aggregate:
        func = str(ch[0])
        args: list[m.Call | m.Comparison] = []
        params: list[m.Param | None] = []
        fields: list[str] = []
        for c in ch[1:]:
            if isinstance(c, m.Param):
                params.append(c)
            elif isinstance(c, Token):
                fields.append(str(c))
            else:
                args.append(c)
        return m.Aggregate(func, tuple(args), self.params(meta, params), tuple(fields), self._s(meta))

    def dataset_reference(self, meta: Meta, ch: list[Token]) -> tuple[str, str]:
        return ("reference", f"{ch[0]}/{ch[1]}")

    def dataset_path(self, meta: Meta, ch: list[Token]) -> tuple[str, str]:
        return ("path", self._str(ch[0]))

    def dataset_hf(self, meta: Meta, ch: list[Any]) -> tuple[str, str, tuple[m.Param, ...]]:
        return ("hf", self._str(ch[0]), self.params(meta, ch[1:]))

    def dataset_stmt(self, meta: Meta, ch: list[Any]) -> _Stmt:
        kind, name, *inner = ch[0]
        params = ch[1] or ()
        if kind == "hf":
            if params:
                raise ContractSyntaxError("the parameters of a Hugging Face dataset go inside hf(...)", params[0].span,
                                          expected=f'dataset hf("{name}", {params[0].key} = ...)', rule="dataset")
            params = inner[0]
        return _Stmt("dataset", m.Dataset(kind, name, params, self._s(meta)), self._s(meta))

    def expect_stmt(self, meta: Meta, ch: list[Any]) -> _Stmt:
        left, op, right = ch
        return _Stmt("expect", m.Expectation(left, op, right, self._s(meta)), self._s(meta))

    # ---- claims
    def question_stmt(self, meta: Meta, ch: list[Token]) -> _Stmt:
        return _Stmt("question", str(ch[0]), self._s(meta))

    def source_text(self, meta: Meta, ch: list[Token]) -> _Stmt:
        return _Stmt("source", self._str(ch[0]), self._s(meta))

    def source_field(self, meta: Meta, ch: list[Any]) -> tuple[Token, str | int | float, Span]:
        value = ch[1]
        return (ch[0], self._str(value) if isinstance(value, Token) else value, self._s(meta))

    def source_block(self, meta: Meta, ch: list[tuple[Token, str | int | float, Span]]) -> _Stmt:
        span = self._s(meta)
        fields: dict[str, tuple[str | int | float, Span]] = {}
        for name_tok, value, where in ch:
            name = str(name_tok)
            if name not in m.SOURCE_FIELDS:
                raise ContractSyntaxError(f"unknown source field `{name}`", _tok_span(name_tok, self.path),
                                          expected=" | ".join(m.SOURCE_FIELDS), rule="source",
                                          hint=did_you_mean(name, m.SOURCE_FIELDS))
            if name in fields:
                raise ContractSyntaxError(f"source field `{name}` given twice (first at line {fields[name][1].line})",
                                          where, expected="each source field at most once", rule="duplicate")
            if name == "year":
                if not isinstance(value, int) or not 1000 <= value <= 9999:
                    raise ContractSyntaxError(f"source year {fmt_field(value)} is not a 4-digit year", where,
                                              expected="year 2024", rule="source")
            elif not isinstance(value, str):
                raise ContractSyntaxError(f"source field `{name}` is a number, not a text", where,
                                          expected=f'{name} "..."', rule="source")
            elif not value.strip():
                raise ContractSyntaxError(f"source field `{name}` is empty", where,
                                          expected=f'{name} "..." (non-empty)', rule="source")
            fields[name] = (value, where)
        missing = [f for f in m.SOURCE_REQUIRED if f not in fields]
        if missing:
            # the caret goes on the block's closing brace, where the missing fields would go
            close = Span(self.path, span.end_line, max(span.end_column - 1, 1), span.end_line, span.end_column)
            raise ContractSyntaxError(
                f"the source block does not state {', '.join(f'`{f}`' for f in missing)}", close,
                expected=f"{', '.join(m.SOURCE_REQUIRED)} (venue and url are optional)", rule="source",
                hint="a citation that cannot name these can be given as text: source \"...\"")
        vals = {k: v for k, (v, _) in fields.items()}
        src = m.Source(authors=str(vals["authors"]), title=str(vals["title"]), year=int(vals["year"]),
                       locator=str(vals["locator"]),
                       venue=str(vals["venue"]) if "venue" in vals else None,
                       url=str(vals["url"]) if "url" in vals else None, span=span)
        return _Stmt("source", src, span)

    def states_stmt(self, meta: Meta, ch: list[Token]) -> _Stmt:
        kind = str(ch[0])
        if kind not in m.STATEMENT_KINDS:
            raise ContractSyntaxError(f"a claim states a `quote` or a `paraphrase`, not `{kind}`",
                                      _tok_span(ch[0], self.path), expected=" | ".join(m.STATEMENT_KINDS),
                                      rule="source", hint=did_you_mean(kind, m.STATEMENT_KINDS))
        text = self._str(ch[1])
        if not text.strip():
            raise ContractSyntaxError(f"the {kind} is empty", _tok_span(ch[1], self.path),
                                      expected=f'states {kind} "..." (non-empty)', rule="source")
        return _Stmt("states", m.Statement(kind, text, self._s(meta)), self._s(meta))

    def toolkit_stmt(self, meta: Meta, ch: list[Token]) -> _Stmt:
        return _Stmt("toolkit", str(ch[0]), self._s(meta))

    def metric_stmt(self, meta: Meta, ch: list[Any]) -> m.Param:
        return m.Param(str(ch[0]), ch[1], self._s(meta))

    def map_entry(self, meta: Meta, ch: list[Any]) -> tuple[str, float]:
        return (self._str(ch[0]), float(ch[1]))

    def map_stmt(self, meta: Meta, ch: list[Any]) -> tuple[str, tuple[tuple[str, float], ...], Span]:
        return ("map", tuple(c for c in ch if c is not None), self._s(meta))

    def reported_stmt(self, meta: Meta, ch: list[Any]) -> _Stmt:
        metrics: list[m.Param] = []
        the_map: tuple[tuple[str, float], ...] | None = None
        for item in ch:
            if isinstance(item, m.Param):
                if any(p.key == item.key for p in metrics):
                    raise ContractSyntaxError(f"metric `{item.key}` reported twice", item.span,
                                              expected="each metric once", rule="duplicate")
                metrics.append(item)
            else:
                if the_map is not None:
                    raise ContractSyntaxError("a claim reports at most one map", item[2],
                                              expected="one `map { ... }`", rule="duplicate")
                the_map = item[1]
        return _Stmt("reported", m.Reported(tuple(metrics), the_map, self._s(meta)), self._s(meta))

    def computed_stmt(self, meta: Meta, ch: list[Any]) -> _Stmt:
        fields, spans = _collect(ch, COMPUTED_KEYWORDS, "computed")
        scope = m.Scope(**{k: fields.pop(k) for k in m.Scope.ELEMENTS if k in fields})
        comp = m.Computed(scope=scope, span=self._s(meta), spans=spans, **fields)
        return _Stmt("computed", comp, self._s(meta))

    # ---- documents
    def contract(self, meta: Meta, ch: list[Any]) -> m.Contract:
        name_tok, *stmts = ch
        fields, spans = _collect(stmts, CONTRACT_KEYWORDS, "contract")
        scope = m.Scope(**{k: fields.pop(k) for k in m.Scope.ELEMENTS if k in fields})
        spans["name"] = _tok_span(name_tok, self.path)
        return m.Contract(name=self._str(name_tok), scope=scope, span=self._s(meta), spans=spans, **fields)

    def claim(self, meta: Meta, ch: list[Any]) -> m.Claim:
        name_tok, *stmts = ch
        fields, spans = _collect(stmts, CLAIM_KEYWORDS, "claim")
        spans["name"] = _tok_span(name_tok, self.path)
        return m.Claim(name=self._str(name_tok), span=self._s(meta), spans=spans, **fields)

    def start(self, meta: Meta, ch: list[m.Document]) -> list[m.Document]:
        return list(ch)


def _collect(stmts: list[_Stmt], allowed: tuple[str, ...], where: str) -> tuple[dict[str, Any], dict[str, Span]]:
    fields: dict[str, Any] = {}
    spans: dict[str, Span] = {}
    expects: list[m.Expectation] = []
    for st in stmts:
        if st.key == "expect":
            expects.append(st.value)
            continue
        if st.key in fields:
            first = spans[st.key]
            raise ContractSyntaxError(
                f"`{st.key}` stated twice in this {where} (first at line {first.line})", st.span,
                expected=f"each of {', '.join(allowed)} at most once", rule="duplicate")
        fields[st.key] = st.value
        spans[st.key] = st.span
    if "expect" in allowed:
        fields["expects"] = tuple(expects)
    return fields, spans


# --------------------------------------------------------------------------- errors


def _describe_terminals(names: set[str] | frozenset[str]) -> list[str]:
    parser = lark_parser()
    out: set[str] = set()
    for n in names:
        if n in _TERMINAL_WORDS:
            out.add(_TERMINAL_WORDS[n])
            continue
        try:
            term = parser.get_terminal(n)
        except KeyError:
            out.add(n)
            continue
        pat = term.pattern
        out.add(f"`{pat.value}`" if pat.type == "str" else n.lower())
    return sorted(out)


def _syntax_error(exc: UnexpectedInput, text: str, path: str) -> ContractSyntaxError:
    line, col = max(exc.line, 1), max(exc.column, 1)
    hint = None
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        found = "end of file"
        span = Span(path, line, col, line, col + 1)
    elif isinstance(exc, UnexpectedToken):
        tok = exc.token
        found = f"`{tok}`"
        span = _tok_span(tok, path)
        if tok.type in ("NAME", "MODEL_NAME", "METHOD_NAME"):
            names = set(exc.expected)
            if exc.interactive_parser is not None:
                try:
                    names = set(exc.interactive_parser.accepts())
                except Exception:  # noqa: BLE001
                    pass
            words = {w.strip("`") for w in _describe_terminals(names) if w.startswith("`")}
            hint = did_you_mean(str(tok), sorted(w for w in words if w.isidentifier()))
    elif isinstance(exc, UnexpectedCharacters):
        # lark infers pos_in_stream as None (its class default); UnexpectedCharacters sets the int position
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""  # type: ignore[index,operator]
        found = f"character {ch!r}"
        span = Span(path, line, col, line, col + 1)
        if ch == "'":
            hint = 'strings use double quotes: "..."'
    else:  # UnexpectedEOF
        found = "end of file"
        span = Span(path, line, col, line, col + 1)
    expected_names: set[str] = set()
    if isinstance(exc, UnexpectedToken) and exc.interactive_parser is not None:
        try:  # exact acceptable set (LALR lookaheads over-approximate across merged states)
            expected_names = set(exc.interactive_parser.accepts())
        except Exception:  # noqa: BLE001 - fall back to the parser's lookahead set
            expected_names = set()
    expected_names = expected_names or getattr(exc, "expected", None) or getattr(exc, "allowed", None) or set()
    expected = ", ".join(_describe_terminals(expected_names)) or None
    err = ContractSyntaxError(f"unexpected {found}", span, source=text, expected=expected, hint=hint, rule="syntax")
    return err


# --------------------------------------------------------------------------- API


def parse_text(text: str, path: str = "<string>") -> list[m.Document]:
    """Parse contract text into a list of :class:`Contract` and :class:`Claim` objects.

    Raises :class:`ContractSyntaxError` (positioned, with the source line) on bad input.
    Nothing is validated here beyond syntax; see :func:`scopecheck.spec.validate`.
    """
    text = text.removeprefix("\ufeff")        # a leading byte-order mark is accepted (editors hide it)
    try:
        tree = lark_parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, path) from None
    return _to_docs(tree, text, path)


class Layout:
    """A parse that keeps what the specs drop: the tree (statement order and positions),
    every comment token and every `{` token, in source order. For the formatter."""

    __slots__ = ("docs", "tree", "comments", "lbraces", "text")

    def __init__(self, docs: list[m.Document], tree: Tree[Token], comments: list[Token], lbraces: list[Token],
                 text: str) -> None:
        self.docs, self.tree, self.comments, self.lbraces, self.text = docs, tree, comments, lbraces, text


def parse_layout(text: str, path: str = "<string>") -> Layout:
    """Parse like :func:`parse_text`, keeping the tree, the comments and the `{` tokens."""
    text = text.removeprefix("\ufeff")
    tokens: list[Token] = []
    _layout_sink.tokens = tokens
    try:
        tree = _layout_parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, path) from None
    finally:
        _layout_sink.tokens = None
    seen: set[int | None] = set()
    unique = []
    # one entry per position, in source order (a lexer token always has its start_pos)
    for t in sorted(tokens, key=lambda t: t.start_pos or 0):
        if t.start_pos not in seen:
            seen.add(t.start_pos)
            unique.append(t)
    return Layout(_to_docs(tree, text, path), tree, [t for t in unique if t.type == "COMMENT"],
                  [t for t in unique if t.type == "LBRACE"], text)


def _to_docs(tree: Tree[Token], text: str, path: str) -> list[m.Document]:
    try:
        docs: list[m.Document] = ToSpec(path).transform(tree)
    except VisitError as exc:
        orig = exc.orig_exc
        if isinstance(orig, ContractError):
            raise orig.with_source(text) from None
        meta = getattr(exc.obj, "meta", None)
        raise ContractSyntaxError(f"cannot read this {exc.rule}: {orig}", _meta_span(meta, path), source=text,
                                  rule="syntax") from None
    return docs


def parse_file(path: str | Path) -> list[m.Document]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ContractSyntaxError(f"not UTF-8 text: {exc.reason}", Span(str(path)), rule="encoding") from None
    except OSError as exc:
        raise ContractError(f"cannot read file: {exc.strerror}", Span(str(path)), rule="io") from None
    return parse_text(text, str(path))
