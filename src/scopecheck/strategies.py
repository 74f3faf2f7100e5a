"""Hypothesis strategies for contracts, selectors and reference-task inputs.

``specs()`` draws arbitrary well-formed spec trees (for round-trip properties of the
language); ``contract_texts()`` draws contract source text; ``reference_examples()``
draws examples of the embedded reference tasks with their causal tokens.
"""

from __future__ import annotations

from hypothesis import strategies as st

from scopecheck.dsl.format import format_documents
from scopecheck.reference import generate
from scopecheck.spec import model as m

__all__ = ["contract_texts", "documents", "reference_examples", "selectors", "specs", "values"]

_KEYWORDS = {"x", "y", "z", "stage", "p", "log", "logit", "via", "pert", "nothing", "true", "false", "in",
             "contract", "claim", "model", "prompt", "output", "use", "score", "fixed", "explain", "process",
             "eligible", "method", "seed", "expect", "question", "source", "computed", "reported", "metric", "map",
             "toolkit", "generate", "reference", "hub", "chat", "dataset", "states",
             "mean", "median", "quantile", "rate", "paired"}

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(lambda s: s not in _KEYWORDS)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
nonempty_texts = texts.filter(bool)
numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=64))
refs = st.one_of(st.integers(0, 99), st.sampled_from(["T", "t", "K", "n"]).map(m.Symbol),
                 st.builds(m.TextRef, nonempty_texts, st.none() | st.integers(1, 9)))


@st.composite
def selectors(draw, spaces=m.SPACES) -> m.Selector:
    space = draw(st.sampled_from(spaces))
    op = draw(st.sampled_from(m.OPS))
    seg = draw(st.none() | names) if space == "x" else None
    a = draw(refs) if op != "all" else None
    b = draw(refs) if op == "range" else None
    return m.Selector(space, op, a, b, seg)


values = st.one_of(st.booleans(), numbers, st.builds(m.Text, texts), st.builds(m.Ident, names), selectors())


def _params(max_size: int = 3):
    return st.lists(st.tuples(names, values), max_size=max_size, unique_by=lambda kv: kv[0]).map(
        lambda kvs: tuple(m.Param(k, v) for k, v in kvs))


@st.composite
def scores(draw) -> m.Score:
    kind = draw(st.sampled_from(["logprob", "prob", "logit", "contrast", "stage_delta"]))
    target = draw(selectors(("y", "z")))
    given = () if kind == "logit" else tuple(draw(st.lists(selectors(), min_size=kind == "stage_delta",
                                                           max_size=3)))
    est = draw(st.none() | st.builds(m.Estimator, names, _params(1)))
    if kind == "contrast":
        return m.Score(kind, target, given, draw(texts), None, est)
    if kind == "stage_delta":
        return m.Score(kind, target, given, None, draw(selectors(("stage",))), est)
    return m.Score(kind, target, given, None, None, est)


feature_lists = st.none() | st.lists(selectors(), max_size=3).map(tuple)
scopes = st.builds(m.Scope, st.none() | scores(), feature_lists, st.none() | selectors(),
                   st.none() | st.builds(m.Process, names, _params()), feature_lists)
models = st.builds(m.ModelRef, st.sampled_from(["reference", "hub", "path"]), st.just("x")).flatmap(
    lambda r: st.builds(m.ModelRef, st.just(r.kind),
                        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,10}", fullmatch=True)
                        if r.kind == "reference" else texts))
prompts = st.one_of(
    st.builds(lambda t: m.Prompt((m.Segment(None, t),)), texts),
    st.lists(st.tuples(names, texts), min_size=1, max_size=3, unique_by=lambda kv: kv[0]).map(
        lambda kvs: m.Prompt(tuple(m.Segment(k, v) for k, v in kvs))),
    st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), texts), min_size=1, max_size=3,
             unique_by=lambda kv: kv[0]).map(lambda kvs: m.Prompt(tuple(m.Segment(k, v) for k, v in kvs), chat=True)))
datasets = st.one_of(
    st.builds(m.Dataset, st.just("path"), texts, _params()),
    st.builds(lambda a, b, ps: m.Dataset("reference", f"{a}/{b}", ps),
              st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,8}", fullmatch=True), names, _params()))
outputs = st.one_of(st.builds(lambda t: m.Output(text=t), texts),
                    st.builds(lambda r, p: m.Output(rule=r, params=p), names, _params()))
operands = st.one_of(numbers, st.builds(m.Text, texts), selectors(),
                     st.builds(m.Call, names, st.lists(values, max_size=2).map(tuple), _params(2),
                               st.lists(names, max_size=2).map(tuple), st.just(True)),
                     st.builds(m.Call, names, st.just(()), st.just(()), st.lists(names, max_size=2).map(tuple),
                               st.just(False)))
_calls = st.one_of(st.builds(m.Call, names, st.lists(values, max_size=2).map(tuple), _params(2),
                             st.lists(names, max_size=2).map(tuple), st.just(True)),
                   st.builds(m.Call, names, st.just(()), st.just(()), st.lists(names, max_size=2).map(tuple),
                             st.just(False)))
aggregates = st.builds(
    m.Aggregate, st.sampled_from(m.AGGREGATES),
    st.lists(_calls | st.builds(m.Comparison, _calls, st.sampled_from(m.COMPARATORS), operands), min_size=1,
             max_size=2).map(tuple), _params(1), st.lists(names, max_size=2).map(tuple))
operands = operands | aggregates
expectations = st.one_of(
    st.builds(m.Expectation, operands),
    st.builds(m.Expectation, operands, st.sampled_from(m.COMPARATORS), operands))


def _contract():
    return st.builds(
        m.Contract, nonempty_texts, st.none() | models, st.none() | prompts, st.none() | outputs,
        st.none() | st.builds(m.Use, names, _params()), scopes, st.none() | st.builds(m.Method, names, _params()),
        st.none() | st.integers(0, 2**31), st.lists(expectations, max_size=3).map(tuple),
        dataset=st.none() | datasets)


def _claim():
    computed = st.builds(m.Computed, st.none() | st.builds(m.Use, names, _params()), scopes,
                         st.none() | st.builds(m.Method, names, _params()), st.none() | names, st.none() | models)
    metrics = st.lists(st.tuples(names, numbers), max_size=3, unique_by=lambda kv: kv[0]).map(
        lambda kvs: tuple(m.Param(k, v) for k, v in kvs))
    the_map = st.none() | st.lists(st.tuples(texts, st.floats(allow_nan=False, allow_infinity=False)),
                                   max_size=4).map(tuple)
    filled = texts.filter(lambda t: bool(t.strip()))      # a source block's texts are not blank
    source = st.builds(m.Source, filled, filled, st.integers(1000, 9999), filled, st.none() | filled,
                       st.none() | filled.map(lambda t: "https://" + t))
    states = st.builds(m.Statement, st.sampled_from(m.STATEMENT_KINDS), filled)
    return st.builds(m.Claim, nonempty_texts, st.none() | names, st.none() | texts | source, st.none() | models,
                     st.none() | prompts, st.none() | outputs, computed,
                     st.builds(m.Reported, metrics, the_map), st.lists(expectations, max_size=2).map(tuple),
                     states=st.none() | states)


def specs() -> st.SearchStrategy[m.Document]:
    """Any syntactically expressible contract or claim (not necessarily valid)."""
    return st.one_of(_contract(), _claim())


def documents() -> st.SearchStrategy[list[m.Document]]:
    return st.lists(specs(), min_size=1, max_size=3)


def contract_texts() -> st.SearchStrategy[str]:
    """Source text of arbitrary documents, in canonical form."""
    return documents().map(format_documents)


def reference_examples(task: str = "translate", split: str = "heldout"):
    """Examples of an embedded reference task (with causal tokens known by construction)."""
    return st.integers(0, 2**16).map(lambda seed: generate(task, 1, split=split, seed=seed)[0])
