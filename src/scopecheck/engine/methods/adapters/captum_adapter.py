"""Captum's LLM API as methods: ``captum.integrated_gradients``, ``captum.gradient_x_input``,
``captum.occlusion``.

What the contract passes (Captum's ``captum/attr/_core/llm_attr.py``, 0.9):

* the input: a ``TextTokenInput`` holding the contract's token ids before the first target
  (``ids[:first]``, as scopecheck aligned them, not re-tokenized from text), its interpretable
  mask the eligible positions E (special tokens and anything held fixed before the target are in
  the input but not interpretable, so Captum never perturbs or interpolates them), its
  ``baselines`` the token id of the contract's baseline/operator (``pad``, ``unk``, ``mask``;
  Captum's default is id 0);
* the target: the contract's target tokens ``ids[first:last + 1]``, which Captum appends
  teacher-forced and never perturbs: per target token its score is ``log p(y[t] | x, y[<t])``
  with ``y[<t]`` held fixed (``token_attr``: ``prompt_conditioned``), and summed over the target
  (``seq_attr``: ``span_prompt``). A single-target contract reads ``token_attr[0]``, a span
  ``seq_attr``;
* the score: Captum's gradient attributions target the log-probability only; ``LLMAttribution``
  takes ``attr_target = "log_prob" | "prob"``.

``LLMAttribution.attribute`` is called with ``forward_in_tokens = False`` (one forward of the
prompt and the whole target per perturbation): its default token-by-token decode with
``use_cached_outputs = True`` returns wrong log-probabilities under transformers 5 (measured on
``reference:translate-ar``: ``log p("Le" | x)`` -5.71 instead of -0.257, the uncached value), and
without the cache it is the same quantity as the one-forward path.

Precision: Captum builds its quadrature nodes with ``torch.linspace`` in float32 and scales the
gradients by float32 step sizes (``IntegratedGradients._attribute``), and ``LLMAttribution``
accumulates its result in a float32 buffer, so on a float64 model its maps agree with scopecheck's
to about 1e-7, not to float64 rounding.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from scopecheck.engine.methods._common import resolve_params
from scopecheck.engine.methods.adapters import Frame, finish, frame, require, token_id, tokenizer_for
from scopecheck.engine.problem import AttributionProblem, MethodOutput

Tensor = torch.Tensor

#: scopecheck's quadrature rule names -> Captum's ``method``.
RULES = {"gauss_legendre": "gausslegendre", "riemann": "riemann_middle"}


def _input(captum: Any, f: Frame, tokenizer: Any, baseline_id: int) -> Any:
    """A ``TextTokenInput`` over the contract's ids before the first target, its interpretable
    features the eligible positions (Captum's ``skip_tokens`` mask, set by position)."""

    class ContractTokens(captum.attr.TextTokenInput):  # type: ignore[misc, name-defined]
        """Captum's TextTokenInput on given ids (its constructor tokenizes text)."""

        def __init__(self) -> None:
            ids = f.ids[: f.first].to("cpu").unsqueeze(0)                       # (1, first)
            mask = torch.zeros_like(ids, dtype=torch.bool)
            mask[0, list(f.eligible)] = True
            self.inp_tensor = ids
            self.itp_mask = mask
            self.itp_tensor = ids[mask].unsqueeze(0)                            # (1, |E|)
            self.skip_tokens = None
            self.values = tokenizer.convert_ids_to_tokens(self.itp_tensor[0].tolist())
            self.tokenizer = tokenizer
            self.n_itp_features = len(self.values)
            self.baselines = int(baseline_id)

    return ContractTokens()


def _read(result: Any, f: Frame) -> Tensor:
    """Captum's result for the contract: ``token_attr[0]`` for one target, ``seq_attr`` for a span."""
    return result.seq_attr if f.span else result.token_attr[0]


def _describe(f: Frame, tokenizer: Any, baseline: str, baseline_id: int) -> tuple[str, str]:
    inp = (f"TextTokenInput(ids[0:{f.first}], baselines={baseline_id} ({baseline} {tokenizer.convert_ids_to_tokens(baseline_id)!r}), "
           f"interpretable = positions {list(f.eligible)})")
    read = "seq_attr" if f.span else "token_attr[0]"
    return inp, read


def _run(method: str, problem: AttributionProblem, params: Mapping[str, object], kind: str) -> MethodOutput:
    p = resolve_params(method, params)
    captum, version = require(method)
    import captum.attr  # noqa: F401 - the attr submodule

    f = frame(problem, method)
    tokenizer = tokenizer_for(f.model, method)
    model = f.model
    emb = "model.get_input_embeddings()"
    target = f.ids[f.first: f.last + 1].to("cpu")
    if kind == "occlusion":
        op = str(p["operator"])
        bid = token_id(problem, op, method)
        inp = _input(captum, f, tokenizer, bid)
        attr_target = "log_prob" if f.score == "logprob" else "prob"
        llm = captum.attr.LLMAttribution(captum.attr.FeatureAblation(model), tokenizer, attr_target=attr_target)
        with torch.no_grad():
            res = llm.attribute(inp, target=target, forward_in_tokens=False)
        shown, read = _describe(f, tokenizer, op, bid)
        call = (f'captum.attr.LLMAttribution(FeatureAblation(model), tokenizer, attr_target="{attr_target}")'
                f".attribute({shown}, target=ids[{f.first}:{f.last + 1}], forward_in_tokens=False) -> {read}")
        return finish(problem, f, _read(res, f), version, call, baseline=op, info={"operator": op})
    if kind == "gradient_x_input":
        inp = _input(captum, f, tokenizer, 0)
        llm = captum.attr.LLMGradientAttribution(captum.attr.LayerGradientXActivation(
            model, model.get_input_embeddings()), tokenizer)
        res = llm.attribute(inp, target=target)
        read = "seq_attr" if f.span else "token_attr[0]"
        shown = f"TextTokenInput(ids[0:{f.first}], interpretable = positions {list(f.eligible)})"
        call = (f"captum.attr.LLMGradientAttribution(LayerGradientXActivation(model, {emb}), tokenizer)"
                f".attribute({shown}, target=ids[{f.first}:{f.last + 1}]) -> {read}")
        return finish(problem, f, _read(res, f), version, call)
    base = str(p["baseline"])
    bid = token_id(problem, base, method)
    steps, rule = int(p["steps"]), RULES[str(p["rule"])]  # type: ignore[call-overload]
    inp = _input(captum, f, tokenizer, bid)
    llm = captum.attr.LLMGradientAttribution(captum.attr.LayerIntegratedGradients(
        model, model.get_input_embeddings()), tokenizer)
    res = llm.attribute(inp, target=target, n_steps=steps, method=rule)
    shown, read = _describe(f, tokenizer, base, bid)
    call = (f"captum.attr.LLMGradientAttribution(LayerIntegratedGradients(model, {emb}), tokenizer)"
            f'.attribute({shown}, target=ids[{f.first}:{f.last + 1}], n_steps={steps}, method="{rule}") -> {read}')
    return finish(problem, f, _read(res, f), version, call, baseline=base, path=True,
                  info={"steps": steps, "rule": rule})


def integrated_gradients(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    return _run("captum.integrated_gradients", problem, params, "integrated_gradients")


def gradient_x_input(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    return _run("captum.gradient_x_input", problem, params, "gradient_x_input")


def occlusion(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    return _run("captum.occlusion", problem, params, "occlusion")


__all__ = ["RULES", "gradient_x_input", "integrated_gradients", "occlusion"]
