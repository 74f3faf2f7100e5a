"""The result of running a contract: a map over tokens that states its whole contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scopecheck.engine.compiled import CompiledContract


@dataclass(frozen=True)
class TokenScore:
    position: int
    text: str
    role: str            # special | prompt | output
    index: int           # x[i] / y[t] index; 0 for special tokens
    eligible: bool       # in E
    fixed: bool          # in C, or a special token (held fixed implicitly)
    target: bool         # in O
    score: float         # attribution; exactly 0.0 outside E


@dataclass(frozen=True)
class AttributionResult:
    name: str
    path: str
    line: int
    contract_text: str               # the contract in canonical form
    kind: str                        # the Table-1 setting
    scope: dict[str, str]            # element -> canonical text (S, C, O, P, E)
    origin: dict[str, str]           # element -> stated | use
    method: str
    method_params: dict[str, Any]    # every parameter, defaults included
    operator: str | None             # baseline / perturbation operator used
    tokens: tuple[TokenScore, ...]
    output_ids: tuple[int, ...]      # the frozen generation
    generated: bool                  # produced by a decoding rule (then frozen) rather than given
    score_input: float | None
    score_baseline: float | None
    info: dict[str, Any]
    model: str
    device: str
    dtype: str
    seed: int
    special: tuple[str, ...]         # special tokens held fixed implicitly
    compiled: CompiledContract | None = field(default=None, compare=False, repr=False)  # engine state for checks
    #: masked-diffusion contracts: sampler settings, estimator (samples, standard error), adapter
    #: and the recorded chain (``chain.steps``: stage, committed slots, tokens, log-probs)
    diffusion: dict[str, Any] | None = None
    #: ``aggregate`` of the method (tokens | words); with ``words``, the word-level map
    #: (:class:`scopecheck.engine.words.WordScore`: each word's score the sum of its tokens')
    aggregate: str = "tokens"
    words: tuple[Any, ...] | None = None
    #: what the user should know about this result (a tokenization that changes when joined, an
    #: IG integral that has not converged, a default operator replaced by another)
    warnings: tuple[str, ...] = ()
    #: the precision the forward ran in (float64 states whether transformers' float32 internals were patched)
    precision: str | None = None
    #: a quantized checkpoint's quantization (``Q4_1``, ``Q8_0``, ``F32`` for a .gguf), dequantized to ``dtype``
    quantization: str | None = None
    #: the model's identity (:func:`scopecheck.runtime.provenance.model_facts`: location, revision,
    #: weights' sha256, tokenizer special tokens, chat template's sha256)
    model_facts: dict[str, Any] | None = field(default=None, compare=False)
    #: wall seconds of the phases that produced this result: ``load`` (the model; ~0 when cached),
    #: ``compile`` (the contract on its tokens) and ``attribution`` (the method; a family's shared run)
    phases: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def scores(self) -> list[float]:
        return [t.score for t in self.tokens]

    def positions(self, selector: Any) -> list[int]:
        """Positions of a selector (a spec Selector or selector text such as 'x["black"]')."""
        if self.compiled is None:
            raise ValueError("selector positions need the run's compiled contract (result.compiled)")
        return self.compiled.positions(_selector(selector))   # diffusion: states and stages resolve through the chain

    def mass(self, selector: Any) -> float:
        """Share of absolute attribution mass on the selected tokens, in [0, 1]."""
        total = sum(abs(t.score) for t in self.tokens)
        if total == 0:
            return 0.0
        pos = set(self.positions(selector))
        return sum(abs(t.score) for t in self.tokens if t.position in pos) / total

    def attribution(self, selector: Any) -> float:
        pos = set(self.positions(selector))
        return sum(t.score for t in self.tokens if t.position in pos)

    def ranking(self) -> list[TokenScore]:
        """Eligible tokens, highest attribution first (ties by position)."""
        return sorted((t for t in self.tokens if t.eligible), key=lambda t: (-t.score, t.position))

    def top(self, k: int = 1) -> list[str]:
        return [t.text.strip() for t in self.ranking()[:k]]

    def rank(self, selector: Any) -> int:
        """Rank (1 = highest) of the best-ranked selected eligible token; 0 if none is eligible."""
        pos = set(self.positions(selector))
        for r, t in enumerate(self.ranking(), 1):
            if t.position in pos:
                return r
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "source": {"path": self.path, "line": self.line},
            "contract": self.contract_text, "kind": self.kind, "scope": self.scope, "origin": self.origin,
            "method": {"name": self.method, "params": self.method_params, "operator": self.operator},
            "model": self.model, "device": self.device, "dtype": self.dtype, "seed": self.seed,
            "output_ids": list(self.output_ids), "generated": self.generated, "special_held_fixed": list(self.special),
            "score_input": self.score_input, "score_baseline": self.score_baseline,
            "info": {k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool)) or v is None},
            "tokens": [t.__dict__ for t in self.tokens],
            **({"diffusion": self.diffusion} if self.diffusion is not None else {}),
            "aggregate": self.aggregate,
            **({"words": [w.to_json() for w in self.words]} if self.words is not None else {}),
        }


def _selector(sel: Any):
    from scopecheck.spec import model as m

    if isinstance(sel, m.Selector):
        return sel
    from scopecheck.dsl.parser import parse_text

    doc = parse_text(f'contract "s" {{ explain {sel} }}')[0]
    return doc.scope.explain
