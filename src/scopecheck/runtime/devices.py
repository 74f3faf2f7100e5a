"""The devices' memory: free bytes, out-of-memory errors, how a family's gradients are taken."""

from __future__ import annotations

import torch

#: Device types on which the K gradients of a map family always come from one vmapped backward
#: (``is_grads_batched``). On the others (CPUs) only while the graph is smaller than
#: :data:`CPU_LOOP_MIN_TOKENS` positions (rows x sequence length); from there on, from K backwards
#: over the one retained graph. Measured on this project's 2-core CPU (float32, 8 targets,
#: the 124M GPT-2 shape and a 4-layer one, 40 positions): at 50 rows per graph the vmapped
#: backward took 1.6x the K backwards' time (42.8 s against 27.2 s for IG's 50 steps; 4 layers
#: 2.25 s against 1.42 s), at 10 rows 1.1-1.2x, at 5 rows the same, at 2 rows 0.8-0.9x, at one
#: row about 0.8x (gradient x input on 124M, separate runs: 0.78-0.85 s against 1.02 s). Small
#: graphs leave each backward streaming the weights for a few positions, which the vmap's K-fold
#: batch amortises; large ones are past that, and the vmap's batching rules then copy the
#: elementwise backward ops K-fold and hold K gradient buffers.
VMAPPED_BACKWARD: frozenset[str] = frozenset({"cuda", "mps", "xpu"})
CPU_LOOP_MIN_TOKENS = 256


def vmapped_backward(x: torch.Tensor) -> bool:
    """Whether a family's K gradients w.r.t. ``x`` (``(..., d)``, a graph of ``x.numel() / d``
    positions) are taken by one vmapped backward (see :data:`VMAPPED_BACKWARD`)."""
    if x.device.type in VMAPPED_BACKWARD:
        return True
    return x.numel() // max(1, x.shape[-1]) < CPU_LOOP_MIN_TOKENS


def is_out_of_memory(exc: BaseException) -> bool:
    """``torch.cuda.OutOfMemoryError``, ``MemoryError``, or a ``RuntimeError`` whose message says
    the device or the CPU allocator is out of memory."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        return "out of memory" in msg or "can't allocate memory" in msg or "cannot allocate memory" in msg
    return False


def release_memory(device: torch.device | None) -> None:
    """Return the allocator's cached blocks to the device (after an out-of-memory)."""
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device is not None and device.type == "mps" and hasattr(torch, "mps"):  # pragma: no cover
        torch.mps.empty_cache()


def free_memory(device: torch.device) -> int | None:
    """Bytes available to new tensors on ``device`` (``None`` when unknown)."""
    try:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
        if device.type == "cpu":
            avail = None
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
                        break
            for limit_f, used_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                    ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                     "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
                try:
                    with open(limit_f) as fl, open(used_f) as fu:
                        raw = fl.read().strip()
                        if raw != "max" and int(raw) < 1 << 60:
                            room = int(raw) - int(fu.read().strip())
                            avail = room if avail is None else min(avail, room)
                    break
                except (OSError, ValueError):
                    continue
            return avail
    except (OSError, ValueError, RuntimeError):
        return None
    return None


__all__ = ["CPU_LOOP_MIN_TOKENS", "VMAPPED_BACKWARD", "free_memory", "is_out_of_memory", "release_memory",
           "vmapped_backward"]
