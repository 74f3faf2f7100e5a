"""The SCOPE data model: frozen dataclasses for contracts, claims and their parts.

Every node keeps its source :class:`~scopecheck.errors.Span` (excluded from equality,
so a spec printed by ``fmt`` and parsed again compares equal to the original).

Indexing follows seed 000: prompt tokens ``x[1..n]``, generated tokens ``y[1..T]``,
diffusion states ``z[K] -> ... -> z[0] = y`` (higher index = earlier), stages ``1..K``.
Ranges ``a:b`` are inclusive at both ends, as in ``y[1:T]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from scopecheck.errors import Span

NOSPAN = Span()


def _span() -> Span:
    return field(default=NOSPAN, compare=False, repr=False)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Text:
    """A string literal (as opposed to an identifier), e.g. ``"noir"``."""

    value: str
    span: Span = _span()


@dataclass(frozen=True)
class Ident:
    """A bare identifier used as a value, e.g. ``pad`` in ``baseline = pad``."""

    name: str
    span: Span = _span()


@dataclass(frozen=True)
class Symbol:
    """A symbolic index: ``T`` (last generated token), ``t``, ``n``, ``K`` (claims only, except T/K)."""

    name: str


@dataclass(frozen=True)
class TextRef:
    """A position named by its text: ``"noir"``, or the k-th occurrence ``"the"@2``."""

    text: str
    occurrence: int | None = None


Ref = Union[int, Symbol, TextRef]

SPACES = ("x", "y", "z", "stage")
OPS = ("all", "at", "range", "lt", "le", "gt", "ge")
REL_OPS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


@dataclass(frozen=True)
class Selector:
    """A set of features or outputs.

    ``space``: ``x`` prompt tokens, ``y`` generated tokens, ``z`` diffusion states,
    ``stage`` denoising stages. ``segment`` names a prompt segment (``x.source``).
    ``op``: ``all`` | ``at`` (``a``) | ``range`` (``a:b``) | ``lt``/``le``/``gt``/``ge`` (``[<a]``...).
    """

    space: str
    op: str = "all"
    a: Ref | None = None
    b: Ref | None = None
    segment: str | None = None
    span: Span = _span()

    @property
    def is_single(self) -> bool:
        """Names one position (a token, a state, a stage): ``y["noir"]``, ``z[3]``."""
        return self.op == "at" and not (isinstance(self.a, TextRef) and " " in self.a.text.strip())


Value = Union[int, float, bool, Text, Ident, Selector]


@dataclass(frozen=True)
class Param:
    key: str
    value: Value
    span: Span = _span()


Params = tuple[Param, ...]


def param_dict(params: Params) -> dict[str, Value]:
    return {p.key: p.value for p in params}


def py_value(v: Value) -> object:
    """A parameter value as plain Python: identifiers and strings become ``str``; numbers,
    booleans and selectors stay as they are."""
    if isinstance(v, Ident):
        return v.name
    if isinstance(v, Text):
        return v.value
    return v


# --------------------------------------------------------------------------- contract parts


@dataclass(frozen=True)
class ModelRef:
    """``reference:<name>`` | ``hub:"org/name"`` | ``"local/dir"`` (relative to the contract file)."""

    kind: str  # reference | hub | path
    name: str
    span: Span = _span()


@dataclass(frozen=True)
class Segment:
    """A prompt segment: its text, or in a dataset contract ``name: field("column")``, the text of
    that field of each row (``field`` set, ``text`` empty until an example fills it)."""

    name: str | None
    text: str
    span: Span = _span()
    field: str | None = None


@dataclass(frozen=True)
class Prompt:
    """The prompt text; named segments are joined with a single space.

    ``chat``: the segments are chat messages (the name is the role: system, user, assistant),
    rendered by the model's chat template; the template's own tokens are held fixed and listed."""

    segments: tuple[Segment, ...]
    span: Span = _span()
    chat: bool = False

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)


@dataclass(frozen=True)
class Output:
    """A fixed generation: given text, or produced once by a decoding rule and frozen."""

    text: str | None = None
    rule: str | None = None  # greedy | sample (when generated)
    params: Params = ()
    span: Span = _span()


@dataclass(frozen=True)
class Estimator:
    """Diffusion score estimator: ``chain``, ``pll``, ``elbo(samples = k)``."""

    name: str
    params: Params = ()
    span: Span = _span()


@dataclass(frozen=True)
class Score:
    """The attributed scalar S.

    ``kind``: ``logprob`` (``log p(O | given)``), ``prob``, ``logit``, ``contrast``
    (``log p(O | ·) - log p("alt" | ·)``) or ``stage_delta``
    (``log p(y | x) - log p(y | x; pert(stage))``).
    """

    kind: str
    target: Selector
    given: tuple[Selector, ...] = ()
    alternative: str | None = None
    perturbed: Selector | None = None
    estimator: Estimator | None = None
    span: Span = _span()


@dataclass(frozen=True)
class Process:
    """``autoregressive`` | ``masked_diffusion(sampler = ..., steps = ...)`` | ``classifier``."""

    kind: str
    params: Params = ()
    span: Span = _span()


@dataclass(frozen=True)
class Use:
    """``use <standard contract>(params)``: fills the SCOPE elements by name."""

    name: str
    params: Params = ()
    span: Span = _span()


@dataclass(frozen=True)
class Method:
    name: str
    params: Params = ()
    span: Span = _span()


# --------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Call:
    """``name(args).field.field`` e.g. ``deletion(operator = pad).aopc``, ``mass(x["black"])``."""

    name: str
    args: tuple[Value, ...] = ()
    params: Params = ()
    fields: tuple[str, ...] = ()
    called: bool = True  # False for a bare dotted name: ``random.aopc``, ``verdict``
    span: Span = _span()


@dataclass(frozen=True)
class Comparison:
    """``left op right`` inside an aggregate, e.g. ``top(1) in truth`` in ``rate(top(1) in truth)``."""

    left: "Operand"
    op: str
    right: "Operand"
    span: Span = _span()


AGGREGATES = ("mean", "median", "quantile", "rate", "paired")


@dataclass(frozen=True)
class Aggregate:
    """An aggregate over a dataset contract's examples: ``mean(deletion(operator = pad).aopc)``,
    ``rate(top(1) in truth)``, ``quantile(soft_nc.value, q = 0.1)``, ``paired(a, b).p``."""

    func: str
    args: tuple[Union[Call, Comparison], ...]
    params: "Params" = ()
    fields: tuple[str, ...] = ()
    span: Span = _span()


Operand = Union[int, float, Text, Call, Selector, Aggregate]

COMPARATORS = ("==", "!=", "<", "<=", ">", ">=", "in")


@dataclass(frozen=True)
class Expectation:
    left: Operand
    op: str | None = None
    right: Operand | None = None
    span: Span = _span()


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class Scope:
    """The five elements; ``None`` means not stated (``fixed nothing`` is ``()``)."""

    score: Score | None = None
    fixed: tuple[Selector, ...] | None = None
    explain: Selector | None = None
    process: Process | None = None
    eligible: tuple[Selector, ...] | None = None

    ELEMENTS = ("score", "fixed", "explain", "process", "eligible")

    def missing(self) -> list[str]:
        return [e for e in self.ELEMENTS if getattr(self, e) is None]


@dataclass(frozen=True)
class Dataset:
    """``dataset "file.jsonl"(prompt = "question", output = "answer", truth = "cause", limit = 50,
    shuffle = 1)``, ``dataset hf("data/squad", split = "validation", prompt = "question")`` or
    ``dataset reference:translate/heldout(limit = 30, seed = 0)``.

    ``kind``: ``path`` (JSON Lines or CSV, relative to the contract file) | ``hf`` (a Hugging Face
    dataset: a local dataset folder or Parquet/Arrow/JSON/CSV file, or a hub id; the parameters
    written inside ``hf(...)``) | ``reference`` (``name`` = ``task/split``)."""

    kind: str
    name: str
    params: Params = ()
    span: Span = _span()


@dataclass(frozen=True)
class Contract:
    name: str
    model: ModelRef | None = None
    prompt: Prompt | None = None
    output: Output | None = None
    use: Use | None = None
    scope: Scope = Scope()
    method: Method | None = None
    seed: int | None = None
    expects: tuple[Expectation, ...] = ()
    span: Span = _span()
    #: span of each stated statement keyword, for error positions (not compared)
    spans: dict[str, Span] = field(default_factory=dict, compare=False, repr=False, hash=False)
    dataset: Dataset | None = None


@dataclass(frozen=True)
class Reported:
    metrics: tuple[Param, ...] = ()  # name = number
    map: tuple[tuple[str, float], ...] | None = None
    span: Span = _span()


@dataclass(frozen=True)
class Computed:
    """What a claim's source says was computed; every part may be missing."""

    use: Use | None = None
    scope: Scope = Scope()
    method: Method | None = None
    toolkit: str | None = None
    model: ModelRef | None = None
    span: Span = _span()
    spans: dict[str, Span] = field(default_factory=dict, compare=False, repr=False, hash=False)


QUESTIONS = ("prompt_level", "next_token", "span", "state", "stage", "output")

#: the fields of a claim's `source { ... }` block, in canonical order, and those it must state
SOURCE_FIELDS = ("authors", "title", "venue", "year", "locator", "url")
SOURCE_REQUIRED = ("authors", "title", "year", "locator")
#: how a claim gives what its source says: the source's words, or a paraphrase marked as one
STATEMENT_KINDS = ("quote", "paraphrase")


@dataclass(frozen=True)
class Source:
    """A published source, as a claim's `source { ... }` block cites it."""

    authors: str
    title: str
    year: int
    locator: str                 # where in the source: "Section 4, Figure 3"
    venue: str | None = None
    url: str | None = None
    span: Span = _span()

    def citation(self) -> str:
        """The short citation: "Authors (year), title, locator"."""
        return f"{self.authors} ({self.year}), {self.title}, {self.locator}"


@dataclass(frozen=True)
class Statement:
    """What the source states: its exact words (``quote``) or a faithful ``paraphrase``."""

    kind: str                    # one of STATEMENT_KINDS
    text: str
    span: Span = _span()


@dataclass(frozen=True)
class Claim:
    name: str
    question: str | None = None
    #: a free-text citation (`source "..."`) or a structured one (`source { ... }`)
    source: str | Source | None = None
    model: ModelRef | None = None
    prompt: Prompt | None = None
    output: Output | None = None
    computed: Computed = Computed()
    reported: Reported = Reported()
    expects: tuple[Expectation, ...] = ()
    span: Span = _span()
    spans: dict[str, Span] = field(default_factory=dict, compare=False, repr=False, hash=False)
    states: Statement | None = None


Document = Union[Contract, Claim]
