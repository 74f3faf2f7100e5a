"""AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers", ICML 2024) for Llama causal LMs, with scopecheck's own rules.

LXT (the authors' library) is not used: lxt 2.1's efficient mode imports
``transformers.modeling_attn_mask_utils``, which transformers 5 removed (``import lxt.efficient``
raises ``ModuleNotFoundError`` with transformers 5.24), so the rules are implemented here.

The efficient gradient x input form (one forward, one backward): every rule is a modified
gradient, and the relevance of a tensor ``t`` is ``t * grad(t)``; at the input embeddings that is
the map, summed over the embedding. :func:`attnlrp_rules` installs the rules as forward hooks on
the model's modules (the forward values are untouched, bit for bit; only the backward changes)
and removes them on exit:

* linear layers (``q/k/v/o_proj``, ``gate/up/down_proj``, ``lm_head``): epsilon-LRP with
  epsilon -> 0, which is gradient x input; a bias ``b`` absorbs ``b * grad`` (Llama's have none
  unless ``attention_bias`` / ``mlp_bias``; what biases absorb is recorded);
* ``*RMSNorm``: the identity rule, the normaliser ``rsqrt(mean(x^2) + eps)`` detached (exact);
* the SiLU gate: the identity rule, ``grad_x = grad * sigmoid(x)`` (exact);
* the products ``gate * up``, ``q k^T`` and ``A V``: the uniform rule, each factor half of the
  relevance (gradient halved at the ``down_proj`` input; at ``v_proj`` halved, at ``q_proj`` and
  ``k_proj`` quartered: half for ``A`` in ``A V``, half again for each of ``q``, ``k``; RoPE, the
  scaling, GQA's repetition and the residual sums are linear and conserve exactly);
* softmax: AttnLRP's rule ``R_in = x * (R_out - s * sum(R_out))``. With ``R_out = s * g`` that is
  ``x * s * (g - sum(s g))``, i.e. gradient x input through the unmodified softmax, so the
  softmax backward is left as it is. It is the one rule that does not conserve: its Taylor bias
  absorbs ``R_A - R_scores`` per attention layer, recorded by the hooks (``absorbed_softmax``).

The relevance starts at the target logits (the paper's and LXT's initialisation): the method
propagates ``sum_t z_t[y_t]`` (``contrastive``: ``z[y] - z[alt]``), the *logit* part of the
contract's score. Under ``logprob``/``prob`` scores the log-softmax normaliser
``sum_t logsumexp(z_t)`` is not propagated (``absorbed_log_softmax`` = conserved − log-prob).
Conservation over every input position (eligible and held fixed, before E masking):
``relevance_total + absorbed_softmax + absorbed_bias = conserved`` up to rounding.

Shapes: ``scores`` ``(L,)``, exactly 0 outside E.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping

import torch

from scopecheck.engine.methods._common import finalize, resolve_params
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused

Tensor = torch.Tensor

#: The architectures whose modules the rules below know (class name of the causal LM).
SUPPORTED: tuple[str, ...] = ("LlamaForCausalLM",)
#: ``config.hidden_act`` values the gate's identity rule implements.
ACTIVATIONS: tuple[str, ...] = ("silu",)
#: What the propagated relevance sums to, per contract score.
CONSERVED: dict[str, str] = {
    "logit": "sum of the target logits",
    "logprob": "sum of the target logits (the log-softmax normaliser is absorbed)",
    "prob": "sum of the target logits (the log-softmax normaliser and the exp are absorbed)",
    "contrastive": "target logit minus the alternative's logit",
}


class Ledger:
    """Relevance sums the hooks record during the backward (plain floats, float64)."""

    def __init__(self) -> None:
        self.qk = 0.0        # relevance entering q_proj/k_proj outputs (the softmax's input side)
        self.attn = 0.0      # relevance at the o_proj inputs (the attention outputs)
        self.bias = 0.0      # relevance absorbed by linear biases

    @property
    def absorbed_softmax(self) -> float:
        """``sum over layers of R_A - R_scores``: ``R_A`` is half the attention output's relevance
        (the uniform rule on ``A V``), ``R_scores`` what reached ``q`` and ``k``."""
        return 0.5 * self.attn - self.qk


class _Scale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``factor`` and records
    ``sum(x * grad_in)`` into ``ledger.<slot>`` (``slot`` ``None``: nothing recorded)."""

    @staticmethod
    def forward(ctx, x: Tensor, factor: float, ledger: Ledger | None,  # type: ignore[override]
                slot: str | None) -> Tensor:
        ctx.factor, ctx.ledger, ctx.slot = factor, ledger, slot
        if slot is not None:
            ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        gi = g * ctx.factor if ctx.factor != 1.0 else g
        if ctx.slot is not None:
            (x,) = ctx.saved_tensors
            setattr(ctx.ledger, ctx.slot, getattr(ctx.ledger, ctx.slot) + float((x.double() * gi.double()).sum()))
        return gi, None, None, None


class _BiasTap(torch.autograd.Function):
    """Identity forward on a linear layer's output; backward records ``sum(bias * grad)``."""

    @staticmethod
    def forward(ctx, out: Tensor, bias: Tensor, ledger: Ledger) -> Tensor:  # type: ignore[override]
        ctx.bias, ctx.ledger = bias.detach(), ledger
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        ctx.ledger.bias += float((g.double() * ctx.bias.double()).sum())
        return g, None, None


class _Replace(torch.autograd.Function):
    """Forward returns ``out`` (the module's own output, values untouched); backward sends
    ``grad * ratio`` to ``x`` and nothing through the module's own graph: the identity rule
    of an elementwise map ``out = ratio * x`` (``ratio`` detached)."""

    @staticmethod
    def forward(ctx, x: Tensor, out: Tensor, ratio: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(ratio)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (ratio,) = ctx.saved_tensors
        return (g * ratio).to(g.dtype), None, None


def _rms_ratio(mod: Any, x: Tensor) -> Tensor:
    """``weight * rsqrt(mean(x^2) + eps)`` (the RMSNorm's linear map with its normaliser held),
    computed in float32 or, for float64 input, float64 (as the forward runs) -> ``x``'s shape."""
    eps = float(getattr(mod, "variance_epsilon", getattr(mod, "eps", 0.0)))   # architecture() checked it has one
    h = x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    r = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (mod.weight.detach().to(h.dtype) * r).to(x.dtype).expand_as(x)


def _norm_hook(mod: Any, args: tuple, out: Tensor) -> Tensor:
    x = args[0]
    return _Replace.apply(x, out, _rms_ratio(mod, x))


def _silu_hook(_mod: torch.nn.Module, args: tuple, out: Tensor) -> Tensor:
    x = args[0]
    return _Replace.apply(x, out, torch.sigmoid(x.detach()))


def architecture(model: Any) -> list[Any]:
    """The model's decoder layers when the rules below cover every module on its path;
    :class:`MethodRefused` naming the supported architectures otherwise."""
    name = type(model).__name__
    supported = ", ".join(SUPPORTED)
    if name not in SUPPORTED:
        raise MethodRefused(f"attnlrp implements its rules for {supported} only, not {name}",
                            expected=f"a model of class {supported} (RMSNorm, RoPE, SiLU-gated MLP, softmax attention)")
    cfg = model.config
    act = str(getattr(cfg, "hidden_act", ""))
    if act not in ACTIVATIONS:
        raise MethodRefused(f"attnlrp implements the gate's identity rule for {', '.join(ACTIVATIONS)}, "
                            f"not hidden_act = {act!r}")
    inner = getattr(model, "model", None)
    layers = list(getattr(inner, "layers", []))
    head = model.get_output_embeddings()
    norms = [getattr(inner, "norm", None)] + [getattr(b, a, None) for b in layers
                                              for a in ("input_layernorm", "post_attention_layernorm")]
    lin = [getattr(getattr(b, part, None), p, None) for b in layers
           for part, ps in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                            ("mlp", ("gate_proj", "up_proj", "down_proj"))) for p in ps]
    acts = [getattr(getattr(b, "mlp", None), "act_fn", None) for b in layers]
    ok = (layers and type(head) is torch.nn.Linear and all(type(m) is torch.nn.Linear for m in lin)
          and all(n is not None and type(n).__name__.endswith("RMSNorm") and hasattr(n, "weight")
                  and (hasattr(n, "variance_epsilon") or hasattr(n, "eps")) for n in norms)
          and all(isinstance(a, torch.nn.Module) for a in acts)
          and float(getattr(cfg, "final_logit_softcapping", None) or 0.0) == 0.0)
    if not ok:
        raise MethodRefused(f"attnlrp: this {name} does not have the module structure its rules cover "
                            "(decoder layers with q/k/v/o_proj and gate/up/down_proj linear layers, RMSNorms, "
                            "an activation module, a linear LM head)", expected=f"a standard {supported}")
    return layers


@contextlib.contextmanager
def attnlrp_rules(model: Any, ledger: Ledger | None = None) -> Iterator[Ledger]:
    """The AttnLRP rules on ``model`` while the block lasts (forward hooks; removed on exit, so
    the model is exactly as before). The forward pass is unchanged; the backward of a score is
    the rules' modified gradient. Yields the :class:`Ledger` the backward fills."""
    layers = architecture(model)
    led = ledger if ledger is not None else Ledger()
    handles = []

    def scale(factor: float, slot: str | None):
        return lambda _m, _a, out: _Scale.apply(out, factor, led, slot)

    def pre_scale(factor: float, slot: str | None):
        return lambda _m, args: (_Scale.apply(args[0], factor, led, slot), *args[1:])

    def bias_tap(m: Any):
        return lambda _m, _a, out: _BiasTap.apply(out, m.bias, led)

    try:
        inner = model.model
        for n in (inner.norm, *(getattr(b, a) for b in layers
                                for a in ("input_layernorm", "post_attention_layernorm"))):
            handles.append(n.register_forward_hook(_norm_hook))
        for b in layers:
            att, mlp = b.self_attn, b.mlp
            linears = (att.q_proj, att.k_proj, att.v_proj, att.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
            for m in linears:                                   # before the rule hooks: bias * grad at the output
                if m.bias is not None:
                    handles.append(m.register_forward_hook(bias_tap(m)))
            handles.append(att.q_proj.register_forward_hook(scale(0.25, "qk")))
            handles.append(att.k_proj.register_forward_hook(scale(0.25, "qk")))
            handles.append(att.v_proj.register_forward_hook(scale(0.5, None)))
            handles.append(att.o_proj.register_forward_pre_hook(pre_scale(1.0, "attn")))
            handles.append(mlp.act_fn.register_forward_hook(_silu_hook))
            handles.append(mlp.down_proj.register_forward_pre_hook(pre_scale(0.5, None)))
        head = model.get_output_embeddings()
        if head.bias is not None:
            handles.append(head.register_forward_hook(bias_tap(head)))
        yield led
    finally:
        for h in handles:
            h.remove()


def _causal_objective(problem: AttributionProblem):
    obj = problem.objective
    needed = ("model", "forward", "rows", "target_ids", "score", "alternative", "terms", "combine")
    if not all(hasattr(obj, a) for a in needed):
        raise MethodRefused("attnlrp needs an autoregressive (causal LM) problem: it propagates relevance from the "
                            "target logits through the model's own modules",
                            expected="a local_next_token, prompt_conditioned or span_prompt contract")
    return obj


def relevance(problem: AttributionProblem) -> tuple[Tensor, dict[str, float | str]]:
    """AttnLRP relevance at every input position ``(L,)`` (nothing masked) and the figures of
    its conservation: ``conserved`` (what was propagated), ``relevance_total``, the absorbed parts,
    ``score_input`` (the contract's S, from the same forward)."""
    obj = _causal_objective(problem)
    model = obj.model
    x = problem.embeds.detach().unsqueeze(0).requires_grad_(True)                  # (1, L, d)
    rows = torch.as_tensor([list(obj.rows)], device=x.device)                      # (1, n)
    with attnlrp_rules(model) as led, torch.enable_grad():
        logits = obj.forward(x, None, rows)                                        # (1, n, V)
        tgt = obj.target_ids.to(logits.device).view(1, -1, 1)
        z = logits.gather(-1, tgt).squeeze(-1)                                     # (1, n)
        if obj.score == "contrastive":
            z = z - logits[:, :, int(obj.alternative)]
        conserved = z.sum()
        (g,) = torch.autograd.grad(conserved, x)
    with torch.no_grad():
        s = float(obj.combine(obj.terms(logits.detach().clone())))
    rel = (x.detach() * g)[0].sum(-1)                                              # (L,)
    total = float(rel.double().sum())
    c = float(conserved.detach())
    info: dict[str, float | str] = {
        "score_input": s, "conserved": c, "conserved_quantity": CONSERVED[obj.score],
        "relevance_total": total, "absorbed_softmax": led.absorbed_softmax, "absorbed_bias": led.bias,
        # conserved − log S for a probability score (its exp is not propagated either)
        "absorbed_log_softmax": c - (math.log(s) if obj.score == "prob" else s),
        "rules": "scopecheck's own AttnLRP rules (LXT's efficient mode needs transformers < 5)",
    }
    return rel, info


def attnlrp(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    resolve_params("attnlrp", params)
    rel, info = relevance(problem)
    return finalize(problem, rel, info)


__all__ = ["ACTIVATIONS", "CONSERVED", "Ledger", "SUPPORTED", "architecture", "attnlrp", "attnlrp_rules",
           "relevance"]
