"""Peer implementations of the benchmark workloads: Captum 0.9, Inseq 0.7.1 and a minimal PyTorch reference.

Every workload function takes ``(model, prompt_ids, target_ids)`` -- a causal LM (a
``transformers`` GPT-2 here), the prompt ``x`` as a LongTensor ``(P,)`` and the generated
tokens ``y`` as a LongTensor ``(T,)`` -- and returns a :class:`PeerResult`: the map as a
float64 numpy array, the number of model forward calls and the number of rows (batch rows
summed over those calls), both counted with a forward pre-hook on ``model``.

Workloads (``y`` is always teacher-forced as given; nothing is generated):

* **W1 ``*_ig_per_token``** -- Integrated Gradients, one map per generated token over the
  prompt tokens, shape ``(T, P)``. Prompt-conditioned: the score is ``log p(y_t | x, y_<t)``;
  only the prompt token embeddings are interpolated, ``y_<t`` is held at its embedding.
  Attribution of prompt token ``i`` = ``sum_d (e_i - b)_d * sum_k w_k dS/de_i(b + a_k (e - b))_d``.
  The quadrature is a parameter: ``method="riemann_middle"`` (midpoint, ``a_k = (k + 1/2)/steps``,
  ``w_k = 1/steps``; the default everywhere here) or ``"gausslegendre"`` (Captum's default:
  Gauss-Legendre nodes mapped to [0, 1]).
* **W2 ``*_occlusion_span``** -- occlusion of each prompt token, sequence score
  ``S = sum_t log p(y_t | x, y_<t)`` (= ``log p(y[1:T] | x)``), map ``(P,)``:
  ``S(x) - S(x with x_i replaced)``.
* **W3 ``*_gxi_per_token``** -- gradient x input per generated token over the prompt tokens,
  ``(T, P)``: ``sum_d e_i,d * dlog p(y_t | x, y_<t)/de_i,d`` at the input point.

Baselines. The ``minimal_*`` references take ``baseline``: ``"zero"`` (the zero embedding
vector) or an int (the embedding of that token id, i.e. "replace the id"). Captum's
LLM wrappers work on token ids, so their baseline is a token id (``BASELINE_ID = 0``,
Captum's default ``TextTokenInput(baselines=0)``); Inseq uses its tokenizer's ``unk`` token,
set to the same id 0 by :func:`id_tokenizer`. Each peer is compared with ``minimal_*`` under
the *same* baseline (see :func:`verify`). ``captum_ig_embeds_per_token`` uses Captum's
lower-level ``IntegratedGradients`` on prompt embeddings and so can use the zero-embedding
baseline of the reference benchmark quantity.

Tokenizers. Captum's ``TextTokenInput`` and Inseq both take text, not ids. :func:`id_tokenizer`
builds, offline, a word-level ``PreTrainedTokenizerFast`` whose token ``i`` is the string
``"t<i>"`` (whitespace pre-tokenizer, no special tokens added), so ``" ".join(f"t{i}")`` round-trips
to exactly the given ids; ``unk`` = ``t0`` (id 0, the baseline), ``eos``/``pad`` = ``t<V-1>``.

Process isolation: :func:`run_peer` runs one workload in-process (timing + call counts);
:func:`run_peer_isolated` runs it in a fresh Python subprocess that rebuilds the model from
a spec and reports wall time and its peak RSS increase over the workload (:class:`RSSPeak`:
resident memory sampled every 2 ms by a thread, minus the level before the workload).

Run ``python benchmarks/peers.py`` for the smoke run: verification on the 4-layer model in
float64 and a timing table (prompt 32, target 8, median of 3).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

BASELINE_ID = 0
STEPS = 50
METHOD = "riemann_middle"


# --------------------------------------------------------------------------- plumbing


@dataclass
class PeerResult:
    map: np.ndarray            # float64: (T, P) for per-token workloads, (P,) for the span workload
    calls: int                 # model forward calls
    rows: int                  # batch rows summed over calls
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class ForwardCounter:
    """Counts model forward calls and batch rows with a forward pre-hook (kwargs included).

    The hook sits on the transformer body (``model.base_model``, GPT-2's ``model.transformer``), not
    on the LM head model: Captum's ``LLMAttribution`` calls ``model.forward(...)`` directly, which
    bypasses hooks on ``model`` itself; every head-model forward calls the body exactly once."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = getattr(model, "base_model", model)
        self.calls, self.rows, self._h = 0, 0, None

    def _hook(self, module, args, kwargs):
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        self.calls += 1
        self.rows += int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() >= 2 else 1

    def __enter__(self) -> "ForwardCounter":
        self._h = self.model.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._h.remove()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def quadrature(steps: int, method: str) -> tuple[list[float], list[float]]:
    """(alphas, weights) on [0, 1]: ``riemann_middle`` or ``gausslegendre`` (as Captum builds them)."""
    if method == "riemann_middle":
        return [(k + 0.5) / steps for k in range(steps)], [1.0 / steps] * steps
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return list(0.5 * (1 + x)), list(0.5 * w)
    raise ValueError(f"unknown quadrature {method!r}")


def _wte(model) -> torch.nn.Embedding:
    return model.get_input_embeddings()


def _base_vec(model, baseline: str | int, like: torch.Tensor) -> torch.Tensor:
    if baseline == "zero":
        return torch.zeros_like(like)
    return _wte(model).weight[int(baseline)].detach().to(like.dtype).expand_as(like)


def _target_logprobs(logits: torch.Tensor, P: int, target_ids: torch.Tensor) -> torch.Tensor:
    """(rows, T): log p(y_t | context) from logits whose last T positions are P-1 .. P+T-2 (full or ``logits_to_keep=T``)."""
    T = target_ids.shape[0]
    lp = torch.log_softmax(logits[:, -T:], dim=-1)      # positions P-1 .. P+T-2 are the last T
    idx = target_ids.to(lp.device).view(1, T, 1).expand(lp.shape[0], T, 1)
    return lp.gather(-1, idx).squeeze(-1)


def id_tokenizer(vocab_size: int):
    """A word-level fast tokenizer over ``t0 .. t<V-1>`` that round-trips given ids (module doc)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=f"t{BASELINE_ID}"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with spaces
    last = f"t{vocab_size - 1}"
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token=f"t{BASELINE_ID}", eos_token=last,
                                   pad_token=last, bos_token=last)


def ids_text(ids: torch.Tensor) -> str:
    return " ".join(f"t{int(i)}" for i in ids)


_TOKENIZERS: dict[int, Any] = {}


def _tok(model):
    V = _wte(model).weight.shape[0]
    if V not in _TOKENIZERS:
        _TOKENIZERS[V] = id_tokenizer(V)
    return _TOKENIZERS[V]


# --------------------------------------------------------------------------- minimal reference


def minimal_ig_per_token(model, prompt_ids, target_ids, steps: int = STEPS, method: str = METHOD,
                         baseline: str | int = "zero", interpolate_prefix: bool = False) -> PeerResult:
    """Minimum-work IG reference, maps (T, P).

    Quantity: ``A[t, i] = sum_d (e_i - b)_d * sum_k w_k d/de_i log p(y_t | x(a_k), y_<t)`` with
    ``x(a) = b + a (e_x - b)`` over the prompt rows only (prompt-conditioned; ``y_<t`` held at its
    embedding). ``interpolate_prefix=True`` also interpolates the ``y_<t`` rows (local next-token
    contract, Inseq's decoder-only behaviour); the returned map is still the prompt columns.
    Work: ONE forward of ``steps`` rows over ``x ++ y[:-1]`` (the causal mask gives all T scores at
    once) and ONE backward batched over the T targets (``is_grads_batched``).
    """
    P, T = prompt_ids.shape[0], target_ids.shape[0]
    alphas, weights = quadrature(steps, method)
    with ForwardCounter(model) as fc:
        ids = torch.cat([prompt_ids, target_ids[:-1]]).to(_wte(model).weight.device)
        e = _wte(model)(ids).detach()                                   # (L, D)
        n = ids.shape[0] if interpolate_prefix else P
        b = _base_vec(model, baseline, e[:n])
        a = torch.tensor(alphas, dtype=e.dtype, device=e.device).view(-1, 1, 1)
        moving = (b + a * (e[:n] - b)).requires_grad_(True)             # (S, n, D), the leaf
        rest = e[n:].unsqueeze(0).expand(steps, -1, -1)
        logits = model(inputs_embeds=torch.cat([moving, rest], 1), logits_to_keep=T).logits
        lp = _target_logprobs(logits, P, target_ids)                    # (S, T)
        w = torch.tensor(weights, dtype=lp.dtype, device=lp.device)
        F = (w[:, None] * lp).sum(0)                                    # (T,)
        (g,) = torch.autograd.grad(F, moving, torch.eye(T, dtype=F.dtype, device=F.device),
                                   is_grads_batched=True)               # (T, S, n, D)
        attr = (g.sum(1) * (e[:n] - b)).sum(-1)[:, :P]
    return PeerResult(_np(attr), fc.calls, fc.rows)


def minimal_gxi_per_token(model, prompt_ids, target_ids) -> PeerResult:
    """Gradient x input reference, maps (T, P): ``sum_d e_i,d * d log p(y_t | x, y_<t) / de_i,d``.

    ONE forward of one row, ONE backward batched over the T targets."""
    P, T = prompt_ids.shape[0], target_ids.shape[0]
    with ForwardCounter(model) as fc:
        ids = torch.cat([prompt_ids, target_ids[:-1]]).to(_wte(model).weight.device)
        e = _wte(model)(ids).detach().unsqueeze(0).requires_grad_(True)
        lp = _target_logprobs(model(inputs_embeds=e, logits_to_keep=T).logits, P, target_ids)[0]
        (g,) = torch.autograd.grad(lp, e, torch.eye(T, dtype=lp.dtype, device=lp.device), is_grads_batched=True)
        attr = (g[:, 0, :P] * e[0, :P]).sum(-1)
    return PeerResult(_np(attr), fc.calls, fc.rows)


def minimal_occlusion_span(model, prompt_ids, target_ids, baseline: str | int = BASELINE_ID) -> PeerResult:
    """Occlusion reference, map (P,): ``S(x) - S(x with x_i -> baseline)``, ``S = sum_t log p(y_t | x, y_<t)``.

    ``baseline``: a token id (the id is replaced) or ``"zero"`` (the embedding row is zeroed).
    ONE forward of P + 1 rows (the input and the P occlusions), no backward."""
    P = prompt_ids.shape[0]
    with torch.no_grad(), ForwardCounter(model) as fc:
        ids = torch.cat([prompt_ids, target_ids[:-1]]).to(_wte(model).weight.device)
        e = _wte(model)(ids).unsqueeze(0).repeat(P + 1, 1, 1)
        r = torch.arange(P, device=e.device)
        e[r + 1, r] = _base_vec(model, baseline, e[0, :P])
        S = _target_logprobs(model(inputs_embeds=e, logits_to_keep=target_ids.shape[0]).logits, P, target_ids).sum(-1)
        attr = S[0] - S[1:]
    return PeerResult(_np(attr), fc.calls, fc.rows)


# --------------------------------------------------------------------------- Captum 0.9


def _captum_input(model, prompt_ids):
    from captum.attr import TextTokenInput

    return TextTokenInput(ids_text(prompt_ids), _tok(model), baselines=BASELINE_ID)


def captum_ig_per_token(model, prompt_ids, target_ids, steps: int = STEPS, method: str = METHOD) -> PeerResult:
    """Captum 0.9 ``LLMGradientAttribution(LayerIntegratedGradients(model, model.transformer.wte), tok)``.

    ``attribute(TextTokenInput(ids, tok, baselines=0), target=target_ids, n_steps=steps, method=method)``;
    ``token_attr``, (T, P). Quantity: per target t, LayerIG on the ``wte`` output for the input
    ``x ++ y_<t`` against the same sequence with the prompt ids replaced by id 0; the ``y_<t``
    rows coincide in input and baseline, so only the prompt rows are interpolated
    (prompt-conditioned); score ``log p(y_t | x, y_<t)``; summed over embedding dims. Equals
    ``minimal_ig_per_token(baseline=0)``. Work: T ``attribute`` calls, each 2 forwards of one row
    (input and baseline layer activations) + 1 forward of ``steps`` rows + 1 backward.
    """
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution

    llm = LLMGradientAttribution(LayerIntegratedGradients(model, _wte(model)), _tok(model))
    inp = _captum_input(model, prompt_ids)
    with ForwardCounter(model) as fc:
        res = llm.attribute(inp, target=target_ids, n_steps=steps, method=method)
    return PeerResult(_np(res.token_attr), fc.calls, fc.rows)


def captum_ig_embeds_per_token(model, prompt_ids, target_ids, steps: int = STEPS,
                               method: str = METHOD) -> PeerResult:
    """Captum 0.9 lower-level API: ``IntegratedGradients`` on the prompt embeddings, zero baseline.

    Forward: ``inputs_embeds = [prompt rows ; wte(y[:-1])]`` -> (rows, T) target log-probs; one
    ``attribute(e_x, baselines=0, target=t, n_steps, method)`` per target t. Quantity = the
    reference ``minimal_ig_per_token(baseline="zero")`` (prompt-conditioned). Work: T calls of
    ``steps`` rows, each with its own backward.
    """
    from captum.attr import IntegratedGradients

    P = prompt_ids.shape[0]
    ids = torch.cat([prompt_ids, target_ids[:-1]])
    e = _wte(model)(ids).detach()
    rest = e[P:]

    def f(xp: torch.Tensor) -> torch.Tensor:
        emb = torch.cat([xp, rest.unsqueeze(0).expand(xp.shape[0], -1, -1)], 1)
        return _target_logprobs(model(inputs_embeds=emb, logits_to_keep=target_ids.shape[0]).logits, P, target_ids)

    ig = IntegratedGradients(f)
    with ForwardCounter(model) as fc:
        maps = [ig.attribute(e[:P].unsqueeze(0), baselines=0.0, target=t, n_steps=steps, method=method)[0].sum(-1)
                for t in range(target_ids.shape[0])]
    return PeerResult(_np(torch.stack(maps)), fc.calls, fc.rows)


def captum_gxi_per_token(model, prompt_ids, target_ids) -> PeerResult:
    """Captum 0.9 ``LLMGradientAttribution(LayerGradientXActivation(model, wte), tok)``, token_attr (T, P).

    Quantity: per target t, ``wte`` output x d log p(y_t | x, y_<t)/d(wte output), prompt rows,
    summed over embedding dims (= ``minimal_gxi_per_token``). Work: T forward+backward passes of one row.
    """
    from captum.attr import LayerGradientXActivation, LLMGradientAttribution

    llm = LLMGradientAttribution(LayerGradientXActivation(model, _wte(model)), _tok(model))
    inp = _captum_input(model, prompt_ids)
    with ForwardCounter(model) as fc:
        res = llm.attribute(inp, target=target_ids)
    return PeerResult(_np(res.token_attr), fc.calls, fc.rows)


def _captum_fa(model, prompt_ids, target_ids, forward_in_tokens: bool, perturbations_per_eval: int,
               use_cached_outputs: bool = True):
    from captum.attr import FeatureAblation, LLMAttribution

    llm = LLMAttribution(FeatureAblation(model), _tok(model))
    inp = _captum_input(model, prompt_ids)
    with ForwardCounter(model) as fc:
        res = llm.attribute(inp, target=target_ids, forward_in_tokens=forward_in_tokens,
                            use_cached_outputs=use_cached_outputs, perturbations_per_eval=perturbations_per_eval)
    return PeerResult(_np(res.seq_attr), fc.calls, fc.rows,
                      info={"token_attr": _np(res.token_attr)})


def captum_occlusion_span(model, prompt_ids, target_ids) -> PeerResult:
    """Captum 0.9 default: ``LLMAttribution(FeatureAblation(model), tok).attribute(inp, target=y)``.

    ``seq_attr`` (P,): ``S(x) - S(x with x_i -> id 0)``, S = summed target log-prob (``attr_target=
    "log_prob"``); ``token_attr`` has the per-token variant. Defaults: ``forward_in_tokens=True``
    (the target is re-fed token by token with the KV cache: T forward calls per evaluation),
    ``use_cached_outputs=True``, ``perturbations_per_eval=1``. Meant to equal
    ``minimal_occlusion_span(baseline=0)``, but on transformers 5.23 it does not: the KV-cache path
    (``cache_position`` / ``_update_model_kwargs_for_generation`` on a reused kwargs dict) lets the
    position ids keep growing across evaluations (up to 283 for P=32, T=8, against a true length of
    39), so the scores are wrong, and it raises IndexError once they pass ``n_positions``.
    """
    return _captum_fa(model, prompt_ids, target_ids, True, 1, True)


def captum_occlusion_span_nocache(model, prompt_ids, target_ids) -> PeerResult:
    """Captum 0.9 default with ``use_cached_outputs=False``: still token by token (T forwards of growing
    length, P + 1 evaluations), without the broken cache path. Equals ``minimal_occlusion_span(baseline=0)``."""
    return _captum_fa(model, prompt_ids, target_ids, True, 1, False)


def captum_occlusion_span_best(model, prompt_ids, target_ids) -> PeerResult:
    """Captum 0.9 best configuration: as :func:`captum_occlusion_span` with ``forward_in_tokens=False``
    (one forward over ``x ++ y`` per evaluation) and ``perturbations_per_eval=1``: Captum 0.9's
    ``_forward_func_by_seq`` concatenates the target as a (1, T) row and reads batch row 0 only,
    so ``perturbations_per_eval > 1`` fails (a cat size mismatch); see :data:`NOTES`.
    """
    return _captum_fa(model, prompt_ids, target_ids, False, 1)


# --------------------------------------------------------------------------- Inseq 0.7.1


_INSEQ: dict[tuple[int, str], Any] = {}


def _inseq_model(model, method: str):
    import inseq

    key = (id(model), method)
    if key not in _INSEQ:
        _INSEQ[key] = inseq.load_model(model, method, tokenizer=_tok(model))
    return _INSEQ[key]


def _inseq_attr(model, inseq_method: str, prompt_ids, target_ids, **kw):
    m = _inseq_model(model, inseq_method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = m.attribute(ids_text(prompt_ids), ids_text(torch.cat([prompt_ids, target_ids])),
                          show_progress=False, **kw)
    return out.sequence_attributions[0]


def _logprob_fn(args) -> torch.Tensor:
    """Inseq step function: log p(target | context) at the step (Inseq's ``probability`` with logprob)."""
    logits = args.attribution_model.output2logits(args.forward_output)
    return logits.log_softmax(-1).gather(-1, args.target_ids.reshape(logits.shape[0], 1)).squeeze(-1)


def inseq_ig_per_token(model, prompt_ids, target_ids, steps: int = STEPS, method: str = "gausslegendre") -> PeerResult:
    """Inseq 0.7.1 ``load_model(model, "integrated_gradients", tokenizer=tok).attribute(x_text, x_text + y_text,
    n_steps=steps, attributed_fn=<log p>, attribute_target=False)``.

    Quadrature: Captum's default ``gausslegendre`` -- ``attribute(method=...)`` names the Inseq
    attribution method, so Captum's ``method`` cannot be passed through Inseq's ``attribute``.

    Inseq's decoder-only IG (Captum ``IntegratedGradients`` on the input embeddings) interpolates the
    WHOLE context embedding ``x ++ y_<t`` from the unk-token embeddings (id 0): the local next-token
    contract, prefix eligible; ``attribute_target`` is ignored for decoder-only models. Score: the
    custom step function log p(y_t | ...) (Inseq's default ``attributed_fn`` is ``probability``).
    The raw granular ``target_attributions`` (context, T, D) are summed over D and the prompt columns
    returned, (T, P) (Inseq's own default aggregation is the L2 norm over D, then normalisation).
    Equals ``minimal_ig_per_token(baseline=0, interpolate_prefix=True, method="gausslegendre")``.
    """
    if method != "gausslegendre":
        raise ValueError("Inseq 0.7.1 runs Captum IG with its default gausslegendre quadrature only")
    P = prompt_ids.shape[0]
    with ForwardCounter(model) as fc:
        sa = _inseq_attr(model, "integrated_gradients", prompt_ids, target_ids, n_steps=steps,
                         attribute_target=False, attributed_fn=_logprob_fn)
    ta = sa.target_attributions                                          # (P + T, T, D), nan where not eligible
    attr = torch.nan_to_num(ta.double()).sum(-1)[:P].T
    return PeerResult(_np(attr), fc.calls, fc.rows)


def inseq_gxi_per_token(model, prompt_ids, target_ids) -> PeerResult:
    """Inseq 0.7.1 ``input_x_gradient`` with the log-prob step function; raw granular map summed over D,
    prompt columns, (T, P). The prefix is eligible (local next-token), but at the input point that
    does not change the prompt columns, so this equals ``minimal_gxi_per_token``.
    Work: T forward+backward passes, one row each."""
    P = prompt_ids.shape[0]
    with ForwardCounter(model) as fc:
        sa = _inseq_attr(model, "input_x_gradient", prompt_ids, target_ids, attributed_fn=_logprob_fn)
    attr = torch.nan_to_num(sa.target_attributions.double()).sum(-1)[:P].T
    return PeerResult(_np(attr), fc.calls, fc.rows)


def _seq_logprob_fn(args) -> torch.Tensor:
    """Inseq step function for the last step: ``sum_t log p(y_t | x, y_<t)`` over the generated tokens.

    ``args.forward_output.logits`` covers every context position; the generated tokens are the last
    T-1 context tokens plus the step target (``_SEQ_T`` is set by :func:`inseq_occlusion_span`)."""
    logits = args.forward_output.logits                                 # (rows, context, V)
    T = _SEQ_T[0]
    ids = torch.cat([args.decoder_input_ids[:, -(T - 1):], args.target_ids.reshape(-1, 1)], 1) if T > 1 \
        else args.target_ids.reshape(-1, 1)
    lp = logits[:, -T:].log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return lp.sum(-1)


_SEQ_T = [1]


def inseq_occlusion_span(model, prompt_ids, target_ids) -> PeerResult:
    """Inseq 0.7.1 ``occlusion`` (Captum ``Occlusion`` on the context embeddings, window one token x D,
    baseline = unk embedding, id 0), made sequence-level: only the LAST step is attributed
    (``attr_pos_start = P + T - 1``) with a custom step function returning
    ``sum_t log p(y_t | x, y_<t)`` from the step's full forward output. Inseq has no sequence-level
    target of its own (its attribution loop is per generated token). The map (P,) is the prompt
    columns (Inseq keeps one value per token: Captum's Occlusion gives each of a token's D dims the
    same delta). Inseq also occludes the T-1 prefix tokens (wasted work here).

    NOT equal to ``minimal_occlusion_span(baseline=0)``: Inseq's ``OcclusionAttribution.attribute_step``
    returns ``|delta|`` (``[:, :, 0].abs()``), and on the 4-layer model even the absolute values do not
    match the reference under this step function (max abs diff 1.8 at P=32, T=8); unresolved -- treat
    this peer as a work/timing peer only, not as a verified quantity.
    """
    P, T = prompt_ids.shape[0], target_ids.shape[0]
    _SEQ_T[0] = T
    with ForwardCounter(model) as fc:
        sa = _inseq_attr(model, "occlusion", prompt_ids, target_ids, attributed_fn=_seq_logprob_fn,
                         attr_pos_start=P + T - 1)
    ta = sa.target_attributions                                          # (P + T, 1): one step
    attr = torch.nan_to_num(ta.double())[:P, -1]
    return PeerResult(_np(attr), fc.calls, fc.rows)


# --------------------------------------------------------------------------- registry and runner


# --------------------------------------------------------------------------- scopecheck


def _sc_problems(model, prompt_ids, target_ids, per_token: bool, pad_id: int | None = None):
    """scopecheck's compiled problems for the workloads: E = the prompt; per token, one
    prompt-conditioned problem per target (the family's members); else one span problem."""
    from scopecheck.engine.scoring import causal_lm_problem

    ids = torch.cat([prompt_ids, target_ids])
    P, L = prompt_ids.shape[0], ids.shape[0]
    e = torch.zeros(L, dtype=torch.bool)
    e[:P] = True
    if per_token:
        return [causal_lm_problem(model, ids, e, [t], pad_id=pad_id) for t in range(P, L)]
    return causal_lm_problem(model, ids, e, list(range(P, L)), pad_id=pad_id)


def scopecheck_ig_per_token(model, prompt_ids, target_ids, steps: int = STEPS, method: str = METHOD) -> PeerResult:
    """scopecheck's map family (``use prompt_conditioned(target = each)``) with IG, zero baseline:
    the engine call a family contract makes (:func:`scopecheck.engine.family.run_family`)."""
    from scopecheck.engine.family import run_family

    P = prompt_ids.shape[0]
    rule = {"riemann_middle": "riemann", "gausslegendre": "gauss_legendre"}[method]
    with ForwardCounter(model) as fc:
        probs = _sc_problems(model, prompt_ids, target_ids, True)
        outs, shared = run_family("integrated_gradients", probs, {"steps": steps, "rule": rule, "baseline": "zero"})
        assert shared
        attr = torch.stack([o.scores[:P] for o in outs])
    return PeerResult(_np(attr), fc.calls, fc.rows)


def scopecheck_gxi_per_token(model, prompt_ids, target_ids) -> PeerResult:
    """scopecheck's map family with gradient x input (one forward, one batched backward)."""
    from scopecheck.engine.family import run_family

    P = prompt_ids.shape[0]
    with ForwardCounter(model) as fc:
        outs, shared = run_family("gradient_x_input", _sc_problems(model, prompt_ids, target_ids, True), {})
        assert shared
        attr = torch.stack([o.scores[:P] for o in outs])
    return PeerResult(_np(attr), fc.calls, fc.rows)


def scopecheck_occlusion_span(model, prompt_ids, target_ids, batch_size: int | None = None) -> PeerResult:
    """scopecheck's span contract (``use span_prompt``) with occlusion, the token replaced by id 0
    (operator ``pad`` with pad id 0): perturbed forwards reuse the clean prefix's KV cache. The
    batch size is the engine's automatic one (what a contract without ``batch_size`` gets)."""
    from scopecheck.engine.methods import run_method

    P = prompt_ids.shape[0]
    with ForwardCounter(model) as fc:
        pb = _sc_problems(model, prompt_ids, target_ids, False, pad_id=BASELINE_ID)
        params: dict[str, Any] = {"operator": "pad"}
        if batch_size is not None:
            params["batch_size"] = batch_size
        out = run_method("occlusion", pb, params)
        attr = out.scores[:P]
    return PeerResult(_np(attr), fc.calls, fc.rows)


PEERS: dict[str, dict[str, Callable[..., PeerResult]]] = {
    "ig_per_token": {
        "minimal": minimal_ig_per_token,
        "scopecheck": scopecheck_ig_per_token,
        "captum": captum_ig_per_token,
        "captum_embeds": captum_ig_embeds_per_token,
        "inseq": inseq_ig_per_token,
    },
    "occlusion_span": {
        "minimal": minimal_occlusion_span,
        "scopecheck": scopecheck_occlusion_span,
        "captum": captum_occlusion_span,
        "captum_nocache": captum_occlusion_span_nocache,
        "captum_best": captum_occlusion_span_best,
        "inseq": inseq_occlusion_span,
    },
    "gxi_per_token": {
        "minimal": minimal_gxi_per_token,
        "scopecheck": scopecheck_gxi_per_token,
        "captum": captum_gxi_per_token,
        "inseq": inseq_gxi_per_token,
    },
}

#: The minimal reference call each peer must match (same baseline, same contract).
REFERENCE: dict[tuple[str, str], dict[str, Any]] = {
    ("ig_per_token", "scopecheck"): {"baseline": "zero"},
    ("occlusion_span", "scopecheck"): {"baseline": BASELINE_ID},
    ("gxi_per_token", "scopecheck"): {},
    ("ig_per_token", "captum"): {"baseline": BASELINE_ID},
    ("ig_per_token", "captum_embeds"): {"baseline": "zero"},
    ("ig_per_token", "inseq"): {"baseline": BASELINE_ID, "interpolate_prefix": True, "method": "gausslegendre"},
    ("occlusion_span", "captum"): {"baseline": BASELINE_ID},
    ("occlusion_span", "captum_nocache"): {"baseline": BASELINE_ID},
    ("occlusion_span", "captum_best"): {"baseline": BASELINE_ID},
    ("occlusion_span", "inseq"): {"baseline": BASELINE_ID},
    ("gxi_per_token", "captum"): {},
    ("gxi_per_token", "inseq"): {},
}

NOTES = {
    "captum_ppe": "Captum 0.9 LLMAttribution(forward_in_tokens=False) supports perturbations_per_eval=1 only",
}


def run_peer(name: str, workload: str, model, prompt_ids, target_ids, **kw) -> PeerResult:
    """Run peer ``name`` on ``workload`` in this process; sets ``seconds`` (wall time)."""
    fn = PEERS[workload][name]
    t0 = time.perf_counter()
    r = fn(model, prompt_ids, target_ids, **kw)
    r.seconds = time.perf_counter() - t0
    return r


def build_model(kind: str = "gpt2-4l", seed: int = 0, dtype: torch.dtype = torch.float64):
    """Random-weight GPT-2: ``gpt2-4l`` (4 layers, 4 heads, d 256) or ``gpt2-small`` (124M shape);
    or ``ref:<name>``, an autoregressive reference model shipped with scopecheck (its trained
    weights, loaded from the package with ``from_pretrained``, eager attention)."""
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    if kind.startswith("ref:"):
        from scopecheck.reference import REFERENCE_MODELS

        model = AutoModelForCausalLM.from_pretrained(str(REFERENCE_MODELS[kind[4:]].directory), dtype=dtype,
                                                     attn_implementation="eager").eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model
    torch.manual_seed(seed)
    if kind == "gpt2-4l":
        cfg = GPT2Config(n_layer=4, n_head=4, n_embd=256)
    elif kind == "gpt2-4l-2k":                       # the same with 2,048 positions (the W2 curve to 1,024 + T)
        cfg = GPT2Config(n_layer=4, n_head=4, n_embd=256, n_positions=2048)
    elif kind == "gpt2-small":
        cfg = GPT2Config()
    else:
        raise ValueError(kind)
    cfg.attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg).to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_ids(model, P: int, T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompt/target ids in [1, V-2] (avoids the baseline id 0 and the eos id V-1)."""
    g = torch.Generator().manual_seed(seed + 1)
    V = _wte(model).weight.shape[0]
    ids = torch.randint(1, V - 1, (P + T,), generator=g)
    return ids[:P], ids[P:]


def run_peer_isolated(name: str, workload: str, kind: str = "gpt2-4l", P: int = 32, T: int = 8, seed: int = 0,
                      dtype: str = "float64", repeats: int = 3, threads: int | None = None,
                      timeout: float = 1200) -> dict[str, Any]:
    """Run a workload in a fresh subprocess: seconds (each repeat), calls, rows, peak RSS increase (MiB).

    The first repeat in the child sets the RSS peak; calls/rows are from the first repeat."""
    spec = dict(name=name, workload=workload, kind=kind, P=P, T=T, seed=seed, dtype=dtype, repeats=repeats,
                threads=threads)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


class RSSPeak:
    """Peak resident memory above the level at entry, sampled every 2 ms by a thread
    (``ru_maxrss`` cannot be used: it is monotone, and building the model already sets it)."""

    def __init__(self, interval: float = 0.002) -> None:
        import threading

        self.interval, self._stop, self.delta_mib = interval, threading.Event(), 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.delta_mib = max(self.delta_mib, self._rss_mib() - self.base)
            self._stop.wait(self.interval)

    def __enter__(self) -> "RSSPeak":
        self.base = self._rss_mib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.delta_mib = max(self.delta_mib, self._rss_mib() - self.base)


def _import_peer(name: str) -> None:
    """Import the modules peer ``name`` runs (first imports are seconds, not workload)."""
    if name.startswith("scopecheck"):
        import scopecheck.engine.family  # noqa: F401
        import scopecheck.engine.methods  # noqa: F401
        from transformers import DynamicCache  # noqa: F401
    elif name.startswith("captum"):
        import captum.attr  # noqa: F401


def _child(spec: dict[str, Any]) -> None:
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    model = build_model(spec["kind"], spec["seed"], getattr(torch, spec["dtype"]))
    x, y = make_ids(model, spec["P"], spec["T"], spec["seed"])
    if spec["name"] != "minimal":
        _tok(model)                          # tokenizer construction is not part of the workload
        if spec["name"] == "inseq":
            _inseq_model(model, {"ig_per_token": "integrated_gradients", "occlusion_span": "occlusion",
                                 "gxi_per_token": "input_x_gradient"}[spec["workload"]])
    _import_peer(spec["name"])               # importing a library is not part of the workload
    secs, first = [], None
    with RSSPeak() as peak:
        for _ in range(spec["repeats"]):
            r = run_peer(spec["name"], spec["workload"], model, x, y)
            secs.append(r.seconds)
            first = first or r
    print(json.dumps({"seconds": secs, "median_s": statistics.median(secs), "calls": first.calls,
                      "rows": first.rows, "peak_rss_delta_mib": peak.delta_mib}))


# --------------------------------------------------------------------------- verification and smoke run


def verify(model, prompt_ids, target_ids) -> dict[tuple[str, str], float]:
    """Max |peer - minimal| for every peer, the reference computed with the peer's baseline/contract."""
    out = {}
    for workload, peers in PEERS.items():
        for name in peers:
            if name == "minimal":
                continue
            try:
                ref = PEERS[workload]["minimal"](model, prompt_ids, target_ids, **REFERENCE[(workload, name)]).map
                got = run_peer(name, workload, model, prompt_ids, target_ids).map
                out[(workload, name)] = float(np.max(np.abs(got - ref)))
            except Exception as exc:  # a peer that does not run is reported, not fatal
                out[(workload, name)] = float("nan")
                print(f"  {workload}/{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return out


def main() -> None:
    with contextlib.suppress(Exception):
        import transformers

        transformers.logging.set_verbosity_error()
    model = build_model("gpt2-4l", 0, torch.float64)
    x, y = make_ids(model, 32, 8, 0)
    print("verification on gpt2-4l, float64, P=32, T=8 (max abs diff vs minimal, same baseline/contract):")
    diffs = verify(model, x, y)
    for (w, n), d in diffs.items():
        print(f"  {w:<16} {n:<14} {d:.3e}  ref {REFERENCE[(w, n)]}")
    print("\ntimings (fresh subprocess each; median of 3; calls/rows per run):")
    print(f"  {'workload':<16} {'peer':<14} {'median s':>9} {'calls':>6} {'rows':>6} {'peak RSS +MiB':>14}")
    for w, peers in PEERS.items():
        for n in peers:
            r = run_peer_isolated(n, w, "gpt2-4l", 32, 8)
            if "error" in r:
                print(f"  {w:<16} {n:<14} error: {r['error']}")
                continue
            print(f"  {w:<16} {n:<14} {r['median_s']:>9.3f} {r['calls']:>6} {r['rows']:>6} "
                  f"{r['peak_rss_delta_mib']:>14.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        with contextlib.suppress(Exception):
            import transformers

            transformers.logging.set_verbosity_error()
        warnings.simplefilter("ignore")
        _child(json.loads(sys.argv[2]))
    else:
        main()
