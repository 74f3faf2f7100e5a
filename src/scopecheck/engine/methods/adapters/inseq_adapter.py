"""Inseq as methods: ``inseq.integrated_gradients``, ``inseq.occlusion``.

What the contract passes (Inseq 0.7, ``inseq/attr/feat/feature_attribution.py`` and
``inseq/data/attribution.py``):

* the sequence: a pre-tokenized ``inseq.data.BatchEncoding`` of the contract's ids up to the
  target (``ids[:t + 1]``, as scopecheck aligned them; Inseq's ``get_batch_from_inputs`` takes a
  ``BatchEncoding`` as it is), attributed at the one step ``attr_pos_start = t``;
* the baseline: its ``baseline_ids``: the contract's baseline/operator token at the eligible
  positions (Inseq's default is ``unk`` everywhere but EOS, the BOS included) and the actual id at
  every other position, so that what the contract holds fixed (special tokens; the prefix
  ``y[<t]`` under ``prompt_conditioned``) never moves along the path and is never occluded;
* the score: Inseq's ``attributed_fn``: ``probability`` (its default: the contract's ``p(...)``),
  ``probability`` with ``logprob = True`` (``log p``) or ``logit``.

Inseq attributes one generated token per step and has no sequence score: ``span_prompt`` is
refused by the validator. Its step attributions come per embedding dimension and are summed over
it (the IG map; Inseq's own ``aggregate()`` would take a norm, which is unsigned).

It is called through ``attribution_model.attribution_method.prepare_and_attribute`` (what
``AttributionModel.attribute`` runs after turning text into a batch), because ``attribute``
accepts text only and would re-tokenize it.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from scopecheck.engine.methods._common import resolve_params
from scopecheck.engine.methods.adapters import Frame, finish, frame, require, token_id, tokenizer_for
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused

Tensor = torch.Tensor

RULES = {"gauss_legendre": "gausslegendre", "riemann": "riemann_middle"}
#: scopecheck score -> Inseq ``attributed_fn`` and its arguments
SCORES: dict[str, tuple[str, dict[str, object]]] = {
    "prob": ("probability", {}),
    "logprob": ("probability", {"logprob": True}),
    "logit": ("logit", {}),
}


def _batch(inseq: Any, f: Frame, tokenizer: Any, baseline_id: int) -> Any:
    ids = f.ids[: f.last + 1].to("cpu").unsqueeze(0)                            # (1, t + 1)
    base = ids.clone()
    base[0, list(f.eligible)] = int(baseline_id)
    return inseq.data.BatchEncoding(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    input_tokens=[tokenizer.convert_ids_to_tokens(ids[0].tolist())],
                                    baseline_ids=base)


def _run(method: str, problem: AttributionProblem, params: Mapping[str, object], kind: str) -> MethodOutput:
    p = resolve_params(method, params)
    inseq, version = require(method)
    f = frame(problem, method)
    if f.span:
        raise MethodRefused(f"{method}: Inseq attributes one generated token per step and has no sequence score",
                            expected="a single-target contract: local_next_token, prompt_conditioned")
    tokenizer = tokenizer_for(f.model, method)
    op_key = "baseline" if kind == "integrated_gradients" else "operator"
    op = str(p[op_key])
    bid = token_id(problem, op, method)
    device = str(next(f.model.parameters()).device)
    was_training = f.model.training
    am = inseq.load_model(f.model, kind, tokenizer=tokenizer, device=device)
    fn, fn_args = SCORES[f.score]
    args: dict[str, object] = {}
    if kind == "integrated_gradients":
        args = {"n_steps": int(p["steps"]), "method": RULES[str(p["rule"])]}  # type: ignore[call-overload]
    else:
        d = int(problem.embeds.shape[-1])
        args = {"sliding_window_shapes": (1, d)}
    batch = _batch(inseq, f, tokenizer, bid)
    t = f.first
    try:
        out = am.attribution_method.prepare_and_attribute(
            "", batch, attr_pos_start=t, attr_pos_end=t + 1, show_progress=False, attributed_fn=fn,
            attribution_args=args, attributed_fn_args=fn_args)
    finally:
        f.model.train(was_training)
    if isinstance(out, list):                                                   # one output per batch
        out = inseq.merge_attributions(out)
    seq = out.sequence_attributions[0]
    attr = seq.target_attributions                                              # (t + 1, 1[, d])
    if attr.dim() == 3:
        attr = attr.sum(-1)
    column = attr[:, 0].to(torch.float64)                                       # (t + 1,)
    values = column[list(f.eligible)]
    if not bool(torch.isfinite(values).all()):
        raise MethodRefused(f"{method}: Inseq returned non-finite attributions at eligible positions")
    fn_text = f'"{fn}"' + "".join(f", attributed_fn_args={{{k!r}: {v!r}}}" for k, v in fn_args.items())
    shown = ", ".join(f"{k!r}: {v!r}" for k, v in args.items())
    call = (f'inseq.load_model(model, "{kind}", tokenizer=tokenizer).attribution_method.prepare_and_attribute('
            f'"", BatchEncoding(ids[0:{t + 1}], baseline_ids = {op} id {bid} at positions {list(f.eligible)}, the '
            f"actual ids elsewhere), attr_pos_start={t}, attr_pos_end={t + 1}, attributed_fn={fn_text}, "
            f"attribution_args={{{shown}}}) -> target_attributions[:, 0]" + (".sum(-1)" if kind ==
                                                                            "integrated_gradients" else ""))
    return finish(problem, f, values, version, call, baseline=op, path=kind == "integrated_gradients",
                  info={op_key: op, **({"steps": int(args["n_steps"]), "rule": str(args["method"])}  # type: ignore
                                       if kind == "integrated_gradients" else {})})


def integrated_gradients(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    return _run("inseq.integrated_gradients", problem, params, "integrated_gradients")


def occlusion(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    return _run("inseq.occlusion", problem, params, "occlusion")


__all__ = ["RULES", "SCORES", "integrated_gradients", "occlusion"]
