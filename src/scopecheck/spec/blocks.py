"""How a masked-diffusion chain splits its response slots and stages into blocks, defined once
(the validator and the sampler both read it). Torch-free.

Two block structures, never together:

* ``blocks = B`` -- *semi-autoregressive* blocks (LLaDA): ``B`` contiguous, near-equal slot
  ranges (the first ones one longer), each run with ``K / B`` stages, one after the other. The
  denoiser still attends bidirectionally over the whole response: a later block's (masked or
  committed) slots are visible to an earlier block's predictions.
* ``block = S`` -- a *block-causal* denoiser (BD3-LM, Arriola et al. 2025; Steerling): blocks of
  ``S`` slots (the last one shorter when ``S`` does not divide ``R``), generated one after the
  other; attention is bidirectional within a block and causal across blocks (a slot of block
  ``b`` attends to the prompt and blocks ``<= b``; the prompt belongs to block 0, so with one
  block the denoiser is the bidirectional one exactly). Stages: with
  ``K = R`` one slot per stage (block ``b`` gets as many stages as it has slots); otherwise
  ``K / n`` stages per block, ``K`` a multiple of the ``n = ceil(R / S)`` blocks.

Stage indices are global in both: stage ``K`` runs first, block ``b``'s stages are a contiguous
run of them, and the chain records the block of every step.

A layout is a tuple of ``(start, stop, stages)`` per block: slots ``[start, stop)``, 0-based.
"""

from __future__ import annotations

Layout = tuple[tuple[int, int, int], ...]


def n_causal_blocks(R: int, block: int) -> int:
    """``ceil(R / S)``: the blocks of a block-causal chain of ``R`` slots."""
    return -(-R // block)


def layout_error(R: int, K: int, *, blocks: int = 1, block: int | None = None) -> str | None:
    """Why ``R`` slots and ``K`` stages cannot be split this way (one sentence), or ``None``."""
    if K < 1 or R < 1:
        return "a chain needs at least one stage and one response slot"
    if block is not None:
        if blocks != 1:
            return ("`block` (block-causal attention, slots per block) and `blocks` (semi-autoregressive "
                    "blocks over bidirectional attention) cannot both be given")
        if block < 1:
            return f"block must be at least 1 slot, got {block}"
        n = n_causal_blocks(R, block)
        if K != R and K % n:
            return (f"steps ({K}) must be the length ({R}, one slot per stage) or a multiple of the "
                    f"{n} blocks of {block} slots")
        return None
    if blocks < 1 or K % blocks:
        return f"steps ({K}) must be a multiple of blocks ({blocks})"
    if blocks > R:
        return f"blocks ({blocks}) cannot exceed the response length ({R})"
    return None


def block_layout(R: int, K: int, *, blocks: int = 1, block: int | None = None) -> Layout:
    """The ``(start, stop, stages)`` of every block, in generation order; ``ValueError`` (the
    sentence of :func:`layout_error`) when the split is impossible."""
    err = layout_error(R, K, blocks=blocks, block=block)
    if err is not None:
        raise ValueError(err)
    if block is not None:
        n = n_causal_blocks(R, block)
        spans = [(b * block, min(R, (b + 1) * block)) for b in range(n)]
        if K == R:
            return tuple((a, z, z - a) for a, z in spans)
        return tuple((a, z, K // n) for a, z in spans)
    base, extra = divmod(R, blocks)
    out, start = [], 0
    for b in range(blocks):
        n_b = base + (1 if b < extra else 0)
        out.append((start, start + n_b, K // blocks))
        start += n_b
    return tuple(out)


__all__ = ["Layout", "block_layout", "layout_error", "n_causal_blocks"]
