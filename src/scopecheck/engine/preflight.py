"""Checks that need the model's tokenizer, made before any weights load or attribution runs.

``scopecheck check`` and ``scopecheck run`` call :func:`preflight` on every valid contract:
with the tokenizer and config alone (no weights) it checks

* that a perturbation operator a method states (``baseline = pad``) names a token the model
  has (``zero``, ``mean`` and ``delete`` always exist; autoregressive contracts: a diffusion
  stage perturbation is checked by the run);
* that every text anchor in the contract and its expectations (``x["a"]``, ``y["Lily"]``,
  ``"Lily"@2``) names exactly the tokens it should: an absent or ambiguous anchor is the same
  positioned error the run would raise, now before anything runs.

Outputs produced by a decoding rule are not known before the model runs: their ``y[...]``
anchors are checked by the run itself. Models that cannot be read locally (a hub id, a file
the loader will refuse) are left to the loader, which reports them with a position.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Iterator

from scopecheck.errors import ContractError, ContractValidationError
from scopecheck.spec import model as m

#: operators every model has (``engine.scoring.embedding_operators``), and the token-backed ones
ALWAYS = ("zero", "mean", "delete", "noop")
TOKEN_OPERATORS = ("pad", "mask", "unk")


@functools.lru_cache(maxsize=8)
def _tokenizer(where: str) -> tuple[Any, Any] | None:
    """``(tokenizer, config)`` of a local Hugging Face model directory, or None."""
    d = Path(where)
    if not d.is_dir() or not (d / "config.json").is_file():
        return None
    from transformers import AutoConfig, AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(where), AutoConfig.from_pretrained(where)
    except Exception:  # noqa: BLE001 - the loader reports unreadable models with a position
        return None


def operators(tokenizer: Any, config: Any) -> set[str]:
    """The perturbation operators the model has, as ``compile_contract`` builds them."""
    vocab = getattr(config, "vocab_size", None)
    out = set(ALWAYS)
    for name in TOKEN_OPERATORS:
        tid = getattr(tokenizer, f"{name}_token_id", None)
        if tid is None:
            tid = getattr(config, f"{name}_token_id", None)
        if isinstance(tid, (list, tuple)):
            tid = tid[0] if tid else None
        if tid is not None and (vocab is None or 0 <= int(tid) < vocab):
            out.add(name)
    return out


def _selectors(obj: Any) -> Iterator[m.Selector]:
    if isinstance(obj, m.Selector):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _selectors(o)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _selectors(getattr(obj, f.name))


def preflight(contract: m.Contract) -> list[ContractError]:
    """Positioned errors the model's tokenizer reveals in a (statically valid) contract."""
    from scopecheck.engine.align import align, positions
    from scopecheck.engine.compile import contract_dir
    from scopecheck.engine.models import model_location
    from scopecheck.spec.validate import resolve

    if contract.model is None or contract.prompt is None or contract.dataset is not None:
        return []
    try:
        where, _ = model_location(contract.model, contract_dir(contract))
    except ContractError:
        return []                                   # the loader says why, with its position
    loaded = _tokenizer(where)
    if loaded is None:
        return []
    tok, config = loaded
    errors: list[ContractError] = []
    scope = resolve(contract).scope
    diffusion = scope.process is not None and scope.process.kind == "masked_diffusion"
    if contract.method is not None and not diffusion:   # a stage perturbation is not a token operator
        from scopecheck.engine.run import OPERATOR_PARAMS

        have = operators(tok, config)
        for p in contract.method.params:
            value = p.value.name if isinstance(p.value, m.Ident) else None
            if p.key in OPERATOR_PARAMS and value is not None and value not in have:
                errors.append(ContractValidationError(
                    f"{contract.model.name} has no `{value}` token", p.span,
                    expected=f"{p.key} = " + " | ".join(sorted(have - {"noop"})), rule="operator"))
    out = contract.output
    if out is None or out.text is None:
        return errors                               # a generated output is known only once the model runs
    try:
        al = align(tok, contract.prompt, out.text)
    except ContractError as exc:
        return errors + [exc]
    reported: set[str] = set()
    for sel in [*_selectors(scope), *_selectors(contract.expects)]:
        if sel.space not in ("x", "y"):
            continue
        try:
            positions(al, sel)
        except ContractError as exc:
            if exc.render() not in reported:
                reported.add(exc.render())
                errors.append(exc)
    return errors


__all__ = ["operators", "preflight"]
