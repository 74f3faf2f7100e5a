"""Memory-aware batching: rows per forward chosen from the free memory, halved on out-of-memory
and remembered per model; a batch size the user set is never lowered silently."""

from __future__ import annotations

import weakref
from typing import Any, Callable, Iterator, Protocol, TypeVar

import torch

from scopecheck.errors import MethodRefused
from scopecheck.runtime import devices
from scopecheck.runtime.progress import Progress, current_phase

#: Batch size for methods whose registry entry declares no ``batch_size`` parameter (and the
#: automatic batch where the free memory is unknown).
INTERNAL_BATCH = 32


class Batched(Protocol):
    """What batching reads of a problem (an engine's ``AttributionProblem``): its length ``L``,
    its embeddings ``(L, d)`` (their device and dtype), the vocabulary's embeddings and the
    objective (its ``model``'s config and scored ``rows``, where it has them)."""

    length: int
    embeds: torch.Tensor
    vocab_embeds: torch.Tensor | None
    objective: Any


def batches(n: int, size: int, progress: bool = False, desc: str = "") -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``size``; with ``progress`` a bar on a TTY,
    rate-limited lines otherwise (:class:`Progress`); without it, rows go to the active phase."""
    bar = Progress(desc, total=n, unit="row") if progress else current_phase()
    if bar is not None and not progress:
        if bar.fixed:               # a planned phase: its planner advances it
            bar = None
        else:
            bar.grow(n)
    try:
        for s in range(0, n, size):
            sl = slice(s, min(n, s + size))
            yield sl
            if bar is not None:
                bar.update(sl.stop - sl.start)
    finally:
        if progress and bar is not None:
            bar.close()


T = TypeVar("T")

#: Share of the free memory the first (automatic) batch may take: accelerators, and the CPU
#: (where running out means the kernel's OOM killer, not an exception, so much less).
GPU_MEMORY_SHARE = 0.5
CPU_MEMORY_SHARE = 0.2
#: Largest automatic batch (rows per forward). On CPUs throughput stops improving long before
#: memory runs out (benchmarks/checks_measure.py), so the cap there is lower.
GPU_MAX_ROWS = 1024
CPU_MAX_ROWS = 256
#: On CPUs the automatic batch is also held to this working set (by :func:`row_bytes`), per kind.
#: Forward only: rows per forward beyond a few buy no throughput there (``benchmarks/perf.py``,
#: gpt2-4l: occlusion at 8 rows per forward is as fast as at 64) but every row costs memory, so
#: the peak stays near a single unbatched pass's. Forward and backward: on a CPU a map family's
#: K backwards over a large graph run one after the other
#: (:data:`~scopecheck.runtime.devices.VMAPPED_BACKWARD`), each
#: streaming the weights once, so rows per call matter (124M shape, IG 50 steps, 8 targets: 50 s
#: at 3 rows per call, 28-30 s at 25-26, 0.6-1.4 GiB resident; this budget gives it 26).
CPU_BATCH_BYTES = 64 * 2 ** 20
CPU_BACKWARD_BATCH_BYTES = 2 * 2 ** 30


class BatchSizeError(RuntimeError):
    """A batch size the user set ran out of memory (it is never lowered silently)."""


def row_bytes(problem: Batched, kind: str = "forward", members: int = 1) -> int:
    """A generous estimate of the memory one scored row takes at the peak of a forward
    (``kind="forward"``, no graph) or of a forward and backward (``"backward"``, every layer's
    activations kept): the largest per-layer buffers, the attention scores and the logits
    (with their float32 log-softmax copies), from the model's config when the objective exposes
    its model, else from the embedding width assuming a deep model. A causal-LM objective
    computes logits at its target rows only; ``members`` map-family members share the forward
    (their target rows add up) and, backward, each takes its own gradient buffers where their
    gradients are taken at once (:data:`~scopecheck.runtime.devices.VMAPPED_BACKWARD`; one at a time
    elsewhere)."""
    L, d = problem.length, int(problem.embeds.shape[-1])
    size = problem.embeds.element_size()
    cfg = getattr(getattr(problem.objective, "model", None), "config", None)
    get = (lambda *names, default: next((int(getattr(cfg, n)) for n in names
                                         if isinstance(getattr(cfg, n, None), int)), default))
    H = get("hidden_size", "d_model", "n_embd", default=d)
    inter = get("intermediate_size", "ffn_dim", "n_inner", default=4 * H)
    heads = get("num_attention_heads", "n_head", "num_heads", default=max(1, H // 64))
    layers = get("num_hidden_layers", "n_layer", "num_layers", default=32)
    V = get("vocab_size", default=int(problem.vocab_embeds.shape[0]) if problem.vocab_embeds is not None else 50_000)
    scored = getattr(problem.objective, "rows", None)
    n = min(L, len(scored) * max(1, members)) if kind in ("forward", "backward") and scored else L
    layer = L * (6 * H + 3 * inter) + 2 * heads * L * L
    logits = n * V * (size + 2 * 4)
    if kind == "backward":
        # (a CPU graph under CPU_LOOP_MIN_TOKENS positions is vmapped too: small enough for the spare)
        grads = max(1, members) if problem.embeds.device.type in devices.VMAPPED_BACKWARD else 1
        total = (layers + grads) * layer * size + 2 * logits + L * d * size * 4
    else:
        total = 2 * layer * size + logits + L * d * size * 2
    return int(2 * total)                                                 # and a factor 2 to spare


def auto_batch(problem: Batched, kind: str = "forward", members: int = 1) -> int:
    """First automatic batch size: a share of the free memory over ``row_bytes``, capped (on
    CPUs also by :data:`CPU_BATCH_BYTES`)."""
    device = problem.embeds.device
    cap = CPU_MAX_ROWS if device.type == "cpu" else GPU_MAX_ROWS
    free = devices.free_memory(device)
    if free is None:
        return min(cap, INTERNAL_BATCH)
    share = CPU_MEMORY_SHARE if device.type == "cpu" else GPU_MEMORY_SHARE
    budget = int(free * share)
    if device.type == "cpu":
        budget = min(budget, CPU_BACKWARD_BATCH_BYTES if kind == "backward" else CPU_BATCH_BYTES)
    return max(1, min(cap, budget // max(1, row_bytes(problem, kind, members))))


#: Working sizes learned by halving, as tokens per forward (rows x sequence length), per model
#: (or objective) and kind: later batches, of this or another problem on the same model,
#: start from there instead of running out of memory again.
_LEARNED: "weakref.WeakKeyDictionary[Any, dict[tuple[str, str], int]]" = weakref.WeakKeyDictionary()
_LEARNED_BY_ID: dict[tuple[int, str, str], int] = {}


def _owner(problem: Batched | None) -> Any:
    if problem is None:
        return None
    return getattr(problem.objective, "model", None) or problem.objective


def learned_rows(problem: Batched | None, kind: str) -> int | None:
    owner = _owner(problem)
    if owner is None or problem is None:
        return None
    dev = str(problem.embeds.device)
    try:
        tokens = _LEARNED.get(owner, {}).get((kind, dev))
    except TypeError:
        tokens = _LEARNED_BY_ID.get((id(owner), kind, dev))
    return None if tokens is None else max(1, tokens // max(1, problem.length))


def _learn(problem: Batched | None, kind: str, rows: int) -> None:
    owner = _owner(problem)
    if owner is None or problem is None:
        return
    dev, tokens = str(problem.embeds.device), rows * max(1, problem.length)
    try:
        _LEARNED.setdefault(owner, {})[(kind, dev)] = tokens
    except TypeError:
        _LEARNED_BY_ID[(id(owner), kind, dev)] = tokens


def forget_learned_batches() -> None:
    """Drop every learned working size (tests; a process that freed memory)."""
    _LEARNED.clear()
    _LEARNED_BY_ID.clear()


def map_batches(fn: Callable[[slice], T], n: int, batch_size: int | None, *,
                problem: Batched | None = None, kind: str = "forward", start: int | None = None,
                progress: bool = False, desc: str = "", param: str = "batch_size", members: int = 1) -> list[T]:
    """``[fn(slice) for consecutive slices covering range(n)]``, the slices as large as memory allows.

    ``batch_size`` set (the user's): fixed slices of that size; running out of memory raises
    :class:`BatchSizeError` telling to lower ``param`` (it is never changed silently).
    ``batch_size=None`` (automatic): the first slice has the size learned earlier for this model
    and ``kind``, else ``start``, else ``auto_batch(problem, kind, members)`` (``n`` without a problem),
    at most ``n``; on out-of-memory (:func:`~scopecheck.runtime.devices.is_out_of_memory`) the slice
    is halved and retried, and the size that works is remembered for the rest of the run. ``fn``
    must be a pure function of its slice (a retried slice is recomputed from scratch). The results
    are those of any fixed slicing: only which rows share a forward changes.

    Progress: with ``progress`` a :class:`Progress` named ``desc`` over the ``n`` rows; without,
    the rows count on the active :func:`~scopecheck.runtime.progress.phase`, if any.
    """
    if n <= 0:
        return []
    fixed = batch_size is not None
    if fixed:
        size = int(batch_size)  # type: ignore[arg-type]
        if size < 1:
            raise MethodRefused(f"{param} must be >= 1, got {size}")
    else:
        size = (learned_rows(problem, kind) or start
                or (auto_batch(problem, kind, members) if problem is not None else n))
    size = max(1, min(n, size))
    device = problem.embeds.device if problem is not None else None
    own = Progress(desc, total=n, unit="row") if progress else None
    bar = own if own is not None else current_phase()
    if bar is not None and own is None:
        if bar.fixed:               # a planned phase (a check): its planner advances it
            bar = None
        else:
            bar.grow(n)
    out: list[T] = []
    s = 0
    try:
        while s < n:
            sl = slice(s, min(n, s + size))
            failure = None
            try:
                out.append(fn(sl))
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not devices.is_out_of_memory(exc):
                    raise
                failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if failure is None:                 # (the exception and its frames are released by now)
                s = sl.stop
                if bar is not None:
                    bar.update(sl.stop - sl.start)
                continue
            devices.release_memory(device)
            rows = sl.stop - sl.start
            what = f"{desc}: " if desc else ""
            if fixed:
                raise BatchSizeError(
                    f"{what}out of memory scoring {rows} row(s) per forward with {param} = {size} ({failure}); "
                    f"lower {param} (e.g. {param} = {max(1, size // 2)}), or leave it out to let scopecheck "
                    f"choose the batch size from the free memory")
            if rows <= 1:
                raise BatchSizeError(f"{what}out of memory scoring a single row ({failure}); the model does not "
                                     f"fit this input on {device if device is not None else 'this device'}")
            size = max(1, rows // 2)
            _learn(problem, kind, size)
    finally:
        if own is not None:
            own.close()
    return out


__all__ = ["INTERNAL_BATCH", "BatchSizeError", "Batched", "auto_batch", "batches", "forget_learned_batches",
           "learned_rows", "map_batches", "row_bytes"]
