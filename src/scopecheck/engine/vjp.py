"""Batched vector-Jacobian products: the K gradients of a family's scores over one graph.

A family of maps (:mod:`scopecheck.engine.family`) scores K targets with one forward; its
gradients are the K vector-Jacobian products of that forward's output. The causal-LM family
objective (:class:`~scopecheck.engine.scoring.CausalLMFamilyObjective`) starts them at the head's
hidden state, the family methods at the scores; both use these two functions.
"""

from __future__ import annotations

import torch

from scopecheck.runtime.devices import vmapped_backward

Tensor = torch.Tensor


def vjps(out: Tensor, x: Tensor, cot: Tensor) -> Tensor:
    """The K vector-Jacobian products ``cot[k] . d out / d x``: ``cot`` ``(K, *out.shape)`` ->
    ``(K, *x.shape)``, over one graph (left to be freed).

    One vmapped backward where :func:`~scopecheck.runtime.devices.vmapped_backward` says
    so (accelerators; small graphs on a CPU), falling back to K backwards where the vmap has no
    batching rule for some operator; K backwards over the retained graph otherwise. Same numbers
    either way (tests compare them).
    """
    K = cot.shape[0]
    if vmapped_backward(x):
        try:
            (g,) = torch.autograd.grad(out, x, grad_outputs=cot, is_grads_batched=True, retain_graph=True)
            return g
        except RuntimeError:
            pass
    g = torch.empty((K, *x.shape), dtype=x.dtype, device=x.device)              # (K, *x.shape)
    for k in range(K):
        (g[k],) = torch.autograd.grad(out, x, grad_outputs=cot[k], retain_graph=k < K - 1)
    return g


def batched_grads(scores: Tensor, x: Tensor) -> Tensor:
    """d scores[:, k] / d x for every k: ``scores`` ``(B, K)``, ``x`` ``(B, L, d)`` -> ``(K, B, L, d)``
    (:func:`vjps` of the K one-hot cotangents)."""
    K = scores.shape[1]
    eye = torch.eye(K, dtype=scores.dtype, device=scores.device)                 # (K, K)
    return vjps(scores, x, eye.unsqueeze(1).expand(K, scores.shape[0], K))     # cot (K, B, K)


__all__ = ["batched_grads", "vjps"]
