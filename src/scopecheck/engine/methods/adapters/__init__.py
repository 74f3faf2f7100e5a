"""The peer toolkits' methods (entries in :mod:`scopecheck.spec.adapters`): the contract decides what
is passed, the toolkit computes, the map comes back in the contract's frame.

Shared here: the :class:`Frame` a contract's problem gives an adapter (the token ids, the eligible
positions, the target positions and score, the operator's token id), the tokenizer of the
problem's model (:func:`tokenizer_for`), the toolkit import with its install hint
(:func:`require`) and :func:`finish`, which puts the toolkit's scores on the eligible positions
(exactly zero elsewhere, as for every method), adds scopecheck's own ``score_input`` /
``score_baseline`` of the same quantity (so ``completeness`` checks the toolkit's map) and states
the toolkit, its version and the exact call.

Shapes: ``ids`` ``(L,)`` int64; a toolkit's scores ``(|E|,)``, in the order of the eligible positions.
"""

from __future__ import annotations

import functools
import importlib
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from scopecheck.engine.methods._common import finalize, score_input
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused, Unavailable
from scopecheck.spec.adapters import BY_NAME, toolkit_version

Tensor = torch.Tensor

_TOKENIZERS: "weakref.WeakKeyDictionary[torch.nn.Module, Any]" = weakref.WeakKeyDictionary()


def bind_tokenizer(model: torch.nn.Module, tokenizer: Any) -> None:
    """Tell the adapters which tokenizer goes with ``model`` (a model not loaded from a folder)."""
    _TOKENIZERS[model] = tokenizer


@functools.lru_cache(maxsize=8)
def _tokenizer_at(where: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(where, trust_remote_code=False, local_files_only=True)


def tokenizer_for(model: torch.nn.Module, method: str) -> Any:
    """The tokenizer of ``model``: the one bound by :func:`bind_tokenizer`, else the one in the
    folder the model was loaded from (``config._name_or_path``; never remote code, never the
    network), which is the tokenizer scopecheck loaded with it (a re-initialised copy of the model,
    as the randomization check makes, keeps that folder)."""
    tok = _TOKENIZERS.get(model)
    if tok is not None:
        return tok
    where = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if where:
        try:
            return _tokenizer_at(str(where))
        except Exception as exc:  # noqa: BLE001 - any loader failure: this adapter cannot run
            raise Unavailable(f"{method}: the tokenizer of the model cannot be loaded from {where} ({exc})",
                              hint="bind it: scopecheck.engine.methods.adapters.bind_tokenizer(model, tokenizer)") \
                from None
    raise Unavailable(f"{method}: the toolkit needs the model's tokenizer and the model names no folder",
                      hint="bind it: scopecheck.engine.methods.adapters.bind_tokenizer(model, tokenizer)")


def require(method: str) -> tuple[Any, str]:
    """The toolkit's module and its version; :class:`Unavailable` with the extra to install."""
    toolkit = BY_NAME[method].toolkit
    try:
        mod = importlib.import_module(toolkit)
    except ImportError as exc:
        raise Unavailable(f"{method} runs {toolkit}, which is not installed ({exc})",
                          expected=f'pip install "scopecheck[{toolkit}]"', hint=f"or use scopecheck's own "
                          f"`{BY_NAME[method].method}`") from None
    return mod, toolkit_version(toolkit) or getattr(mod, "__version__", "unknown")


@dataclass(frozen=True)
class Frame:
    """What the contract passes to a toolkit. ``targets`` are contiguous positions
    ``first .. last`` of O; ``eligible`` the positions of E (all before ``first``)."""

    method: str
    ids: Tensor                       # (L,) int64, the contract's tokens as scopecheck aligned them
    eligible: tuple[int, ...]
    targets: tuple[int, ...]
    score: str                        # logprob | prob | logit | contrastive
    model: torch.nn.Module

    @property
    def first(self) -> int:
        return self.targets[0]

    @property
    def last(self) -> int:
        return self.targets[-1]

    @property
    def span(self) -> bool:
        return len(self.targets) > 1


def frame(problem: AttributionProblem, method: str) -> Frame:
    """The frame of ``problem`` for adapter ``method``, refusing (naming what the toolkit can) a
    score it cannot express or a problem that is not a causal LM's teacher-forced score."""
    a = BY_NAME[method]
    obj = problem.objective
    model, targets, score = getattr(obj, "model", None), getattr(obj, "targets", None), getattr(obj, "score", None)
    if model is None or targets is None or score is None:
        raise MethodRefused(f"{method} runs on a causal LM's teacher-forced score (contracts: "
                            f"{', '.join(a.supports)})")
    targets = tuple(sorted(int(t) for t in targets))
    if targets != tuple(range(targets[0], targets[-1] + 1)):
        raise MethodRefused(f"{method}: {a.toolkit} attributes one target sequence, and these targets are not "
                            "contiguous", expected=f"a contract of: {', '.join(a.supports)}")
    late = [p for p in problem.eligible_positions if p >= targets[0]]
    if late and "local_next_token" not in a.supports:
        raise MethodRefused(f"{method}: {a.toolkit} attributes the input before the target and appends the target "
                            f"held fixed, so the eligible position {late[0]} at or after the first target cannot be "
                            "attributed", expected=f"a contract of: {', '.join(a.supports)}")
    if score not in a.scores:
        raise MethodRefused(f"{method}: {a.toolkit} cannot attribute a {score} score",
                            expected=f"a score of: {', '.join(a.scores)}",
                            hint=f"use scopecheck's own `{a.method}` for this score")
    return Frame(method, problem.ids, tuple(problem.eligible_positions), targets, str(score), model)


def token_id(problem: AttributionProblem, name: str, method: str) -> int:
    """The vocabulary id whose embedding the operator ``name`` substitutes (pad/unk/mask)."""
    tid = _row_token(problem, name)
    if tid is None:
        raise Unavailable(f"{method}: the model has no `{name}` token", expected="a token the model has: "
                          + ", ".join(n for n in ("pad", "unk", "mask") if _row_token(problem, n) is not None))
    return tid


def _row_token(problem: AttributionProblem, name: str) -> int | None:
    """The first vocabulary id whose embedding row is the operator's replacement row, ``None`` when
    the operator is absent or substitutes no token's row."""
    rows, vocab = problem.operators.get(name), problem.vocab_embeds
    if rows is None or vocab is None:
        return None
    hit = torch.nonzero((vocab == rows[0].unsqueeze(0)).all(dim=-1)).flatten()
    return int(hit[0]) if len(hit) else None


def finish(problem: AttributionProblem, f: Frame, values: Tensor, version: str, call: str,
           baseline: str | None = None, info: Mapping[str, object] | None = None,
           path: bool = False) -> MethodOutput:
    """The toolkit's ``values`` ``(|E|,)`` placed on E (zeros elsewhere), with the run's statement:
    ``toolkit`` (name and version), ``call`` and, where the method has a baseline, scopecheck's own
    S at the input and at that baseline (every eligible row replaced); a path method (``path``: IG)
    also reports ``delta``, the map's sum minus ``S(input) − S(baseline)``, which ``completeness`` checks."""
    values = values.detach().to(problem.embeds.device, problem.embeds.dtype).flatten()
    if values.numel() != len(f.eligible):
        raise MethodRefused(f"{f.method}: the toolkit returned {values.numel()} scores for {len(f.eligible)} eligible "
                            "tokens")
    scores = torch.zeros(problem.length, dtype=problem.embeds.dtype, device=problem.embeds.device)
    scores[list(f.eligible)] = values
    toolkit = BY_NAME[f.method].toolkit
    out: dict[str, object] = {"toolkit": f"{toolkit} {version}", "call": call, **(info or {})}
    s_in = score_input(problem)
    out["score_input"] = s_in
    if baseline is not None:
        with torch.no_grad():
            embeds, _ = problem.replace(baseline, problem.eligible.unsqueeze(0))
            s_base = float(problem.objective(embeds).item())
        out["score_baseline"] = s_base
        out["baseline"] = baseline
    if baseline is not None and path:
        out["delta"] = float(values.double().sum()) - (s_in - s_base)
    return finalize(problem, scores, out)


Impl = Callable[[AttributionProblem, Mapping[str, object]], MethodOutput]

__all__ = ["Frame", "bind_tokenizer", "finish", "frame", "require", "token_id", "tokenizer_for"]
