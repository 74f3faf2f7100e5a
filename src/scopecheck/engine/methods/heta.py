"""HETA (seed 004, Algorithm 1 without windowing / low rank): Hessian-Enhanced Token Attribution.

    Attr(x_i -> x_T) = M_T[i] * (beta * S_i + gamma * KL_i)                          (5)

* Gate ``M_T`` (target-conditioned attention-value rollout). For layer ``l`` and head ``h``,
  ``Phi^{(l,h)}(i -> T) = sum_j R_{>l}[T, j] A^{(l,h)}[j, i]``: the flow that enters through
  head ``h`` of layer ``l`` at token ``i`` and reaches the target row ``T`` through the
  rollout ``R_{>l}`` of the layers above (heads averaged, ``0.5 A + 0.5 I`` residual, causal,
  row-normalised; identity above the top layer). It is weighted by
  ``||V_i^{(l,h)} W_O^{(l,h)}||_1`` and normalised to sum to one over all positions (eq. 1).
  ``T`` is the row whose next-token distribution produces the target. When the model's
  attention modules expose no ``v_proj``/``o_proj`` the value norms are taken as 1 (a pure
  rollout gate; ``info['gate']`` says which).
* Curvature ``S_i = 1/m sum_k ||Pi_i H_T (Pi_i r_k)||_1`` (eq. 3), ``H_T`` the Hessian of
  the problem's S (log p(x_T | x_<T) for a ``logprob`` score) w.r.t. the input embeddings,
  ``r_k`` Rademacher on token ``i``'s block, ``m = probes``; the standard error of each
  ``S_i`` over the probes is reported (``info['S_se@i']``, and the largest relative one as
  ``info['S_rse_max']``; the result warns to raise ``probes`` above 10%). Hessian-vector products by
  double backward (Pearlmutter) under eager attention; if the backend cannot
  differentiate twice, a central difference of gradients is used (``info['hvp']``).
* Information ``KL_i = KL(P_orig(. | x_<T) || P_masked^{(i)}(. | x_<T))`` (eq. 4) with token
  ``i`` replaced by the first available of the ``mask``, ``unk``, ``pad``, ``zero`` operators.

Single target only (the contracts HETA supports explain one next token).
"""

from __future__ import annotations

import contextlib
from typing import Mapping

import torch

from scopecheck.engine.methods._common import INTERNAL_BATCH, batches, finalize, generator, positions, resolve_params
from scopecheck.engine.methods.rollout import layer_transition
from scopecheck.engine.problem import AttributionProblem, MethodOutput

Tensor = torch.Tensor

MASK_PREFERENCE = ("mask", "unk", "pad", "zero")


def target_gate(atts: list[Tensor], value_norms: list[Tensor] | None, T: int) -> Tensor:
    """``M_T`` ``(L,)``: attention-value flow ending at row ``T``, simplex-normalised."""
    L = atts[0].shape[-1]
    r = torch.zeros(L, dtype=atts[0].dtype, device=atts[0].device)
    r[T] = 1.0                                                               # flow vector above the top layer
    m = torch.zeros_like(r)
    for l in range(len(atts) - 1, -1, -1):                                   # top layer down
        phi = torch.einsum("j,hji->hi", r, atts[l])                          # (H, L): Phi^{(l,h)}(i -> T)
        vn = value_norms[l].to(phi) if value_norms is not None else torch.ones_like(phi)
        m = m + (phi * vn).sum(0)
        r = r @ layer_transition(atts[l], residual=True)                     # R_{>l-1}[T, :]
    return m / m.sum().clamp_min(torch.finfo(m.dtype).tiny)


def _hvp_double_backward(problem: AttributionProblem, x: Tensor, vecs: Tensor) -> Tensor:
    """``H v`` for each ``v`` in ``vecs`` ``(b, L, d)`` at ``x`` ``(L, d)`` -> ``(b, L, d)``."""
    e = x.unsqueeze(0).repeat(vecs.shape[0], 1, 1).requires_grad_(True)
    with torch.enable_grad():
        s = problem.objective(e)
        (g,) = torch.autograd.grad(s.sum(), e, create_graph=True)
        (hv,) = torch.autograd.grad((g * vecs).sum(), e)
    return hv


def _hvp_finite_difference(problem: AttributionProblem, x: Tensor, vecs: Tensor) -> Tensor:
    # step sized for float32 round-off at least: some models normalise in float32 internally
    # even when run in float64 (transformers' Llama RMSNorm), which would swamp a smaller step
    unit = max(float(torch.finfo(x.dtype).eps), float(torch.finfo(torch.float32).eps))
    scale = float(x.pow(2).mean().sqrt()) or 1.0                              # typical embedding entry
    eps = unit ** (1.0 / 3.0) * scale
    e = torch.cat([x + eps * vecs, x - eps * vecs]).detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(problem.objective(e).sum(), e)
    b = vecs.shape[0]
    return (g[:b] - g[b:]) / (2.0 * eps)


def heta(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    p = resolve_params("heta", params)
    beta, gamma, probes = float(p["beta"]), float(p["gamma"]), int(p["probes"])  # type: ignore[arg-type]
    if beta < 0 or gamma < 0:
        raise ValueError(f"heta: beta and gamma must be >= 0, got beta={beta}, gamma={gamma}")
    if len(problem.target_rows) != 1:
        raise ValueError(f"heta explains a single next token; this problem has {len(problem.target_rows)} targets")
    if problem.attentions is None or problem.logprobs is None:
        raise ValueError("heta needs attention probabilities and target log-probs")
    T = problem.target_rows[0]
    x = problem.embeds                                                        # (L, d)
    L, d = x.shape
    pos = positions(problem)
    M = int(pos.numel())
    progress = bool(p["_progress"])

    # (1) gate
    with_norms = getattr(problem.attentions, "with_value_norms", None)
    if with_norms is not None:
        atts, vnorms = with_norms(x)
    else:
        atts, vnorms = problem.attentions(x), None
    gate = target_gate(atts, vnorms, T)                                       # (L,)

    # (2) curvature, Hutchinson with Rademacher probes on each eligible block
    g = generator(p["_seed"])
    sens = torch.zeros(M, dtype=torch.float64)
    sens_se = torch.zeros(M, dtype=torch.float64)
    hvp_mode = "double_backward"
    if beta > 0 and M > 0:
        owners = pos.repeat_interleave(probes)                                # (M * probes,) token of each probe
        signs = torch.randint(0, 2, (M * probes, d), generator=g).to(x) * 2 - 1  # (M * probes, d)
        ctx = getattr(problem.objective, "eager_attention", None)
        norms = []
        with (ctx() if callable(ctx) else contextlib.nullcontext()):
            for sl in batches(M * probes, INTERNAL_BATCH, progress, "heta hvp"):
                b = sl.stop - sl.start
                vecs = torch.zeros(b, L, d, dtype=x.dtype, device=x.device)
                vecs[torch.arange(b, device=x.device), owners[sl]] = signs[sl]                 # Pi_i r_k
                if hvp_mode == "double_backward":
                    try:
                        hv = _hvp_double_backward(problem, x, vecs)
                    except (RuntimeError, NotImplementedError):
                        hvp_mode = "central_difference"
                if hvp_mode == "central_difference":
                    hv = _hvp_finite_difference(problem, x, vecs)
                block = hv[torch.arange(b, device=x.device), owners[sl]]                        # (b, d): Pi_i H Pi_i r
                norms.append(block.abs().sum(-1).double().cpu())
        per_probe = torch.cat(norms).view(M, probes)                          # (M, probes)
        sens = per_probe.mean(1)                                              # (M,)
        # Hutchinson's standard error of each S_i (sample std over probes / sqrt(m))
        sens_se = (per_probe.std(1, unbiased=True) / probes ** 0.5 if probes > 1
                   else torch.full((M,), float("nan"), dtype=torch.float64))    # (M,)

    # (3) information: KL of the target distribution when token i is masked
    kl = torch.zeros(M, dtype=torch.float64)
    op = next((o for o in MASK_PREFERENCE if o in problem.operators), None)
    if gamma > 0 and M > 0:
        if op is None:
            raise ValueError("heta: no masking operator available (mask, unk, pad or zero)")
        with torch.no_grad():
            lp0 = problem.logprobs(x.unsqueeze(0))[0, 0].double()             # (V,)
            drop = torch.zeros(M, L, dtype=torch.bool, device=x.device)
            drop[torch.arange(M, device=x.device), pos] = True
            out = []
            for sl in batches(M, INTERNAL_BATCH, progress, "heta kl"):
                e, keep = problem.replace(op, drop[sl])
                lpm = problem.logprobs(e, keep)[:, 0].double()                # (b, V)
                out.append((lp0.exp() * (lp0 - lpm)).sum(-1).cpu())
            kl = torch.cat(out)

    gate_e = gate[pos].double().cpu()
    attr = gate_e * (beta * sens + gamma * kl)                                 # (M,)
    scores = torch.zeros(L, dtype=x.dtype, device=x.device)
    scores[pos] = attr.to(scores)
    with torch.no_grad():
        s_in = float(problem.objective(x.unsqueeze(0))[0])
    rse = sens_se / sens.clamp_min(1e-300)                                    # (M,) relative standard errors
    curvature_se = {f"S_se@{int(i)}": float(v) for i, v in zip(pos.tolist(), sens_se)} if beta > 0 else {}
    return finalize(problem, scores, {
        **curvature_se,
        "S_rse_max": float(rse.max()) if beta > 0 and M > 0 else 0.0,
        "score_input": s_in, "beta": beta, "gamma": gamma, "probes": probes, "hvp": hvp_mode,
        "gate": "attention-value rollout" if vnorms is not None else "attention rollout (value norms unavailable)",
        "gate_mass_eligible": float(gate_e.sum()), "kl_operator": op or "none",
        "target_row": T,
    })
