"""Shared plumbing for the attribution methods: parameters, batching, masking, RNG."""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time
import weakref
from typing import Any, Callable, Iterator, Mapping, TypeVar

import numpy as np
import torch

from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused, Unavailable
from scopecheck.spec.registry import ParamSpec, get_method

Tensor = torch.Tensor

#: Batch size for methods whose registry entry declares no ``batch_size`` parameter.
INTERNAL_BATCH = 32

#: Keys ``run_method`` adds to the parameter mapping (never user parameters).
RESERVED = ("_seed", "_progress", "_batch_auto", "_given")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(method: str, key: str, value: object, spec: ParamSpec) -> object:
    """``value`` as the Python type of ``spec`` (a string spelling of it accepted); ``ValueError``
    naming the parameter and what it must be otherwise. Ranges are the validator's."""
    bad = MethodRefused(f"{method}: parameter {key}={value!r} must be {spec.type_name} ({spec.summary()})")
    if value is None and spec.default is None:
        return None      # "the engine chooses" (a resolved mapping resolved again keeps it)
    kind = spec.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise bad
    if kind == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if kind == "float":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if kind == "choice":
        if not isinstance(value, str):
            raise bad
        return value
    return value   # any | selector | count_or_fraction: passed as given


def resolve_params(method: str, params: Mapping[str, object] | None) -> dict[str, object]:
    """The registry's defaults overridden by ``params``; unknown names raise ``ValueError``.
    A default of ``None`` means the method chooses (heta's adaptive ``probes``, a memory-aware
    ``batch_size``)."""
    params = dict(params or {})
    declared = get_method(method).params
    unknown = sorted(k for k in params if k not in declared and k not in RESERVED)
    if unknown:
        listed = ", ".join(f"{k} ({v.summary()})" for k, v in declared.items()) or "none"
        raise MethodRefused(f"unknown parameter(s) {', '.join(unknown)} for method {method!r}; "
                            f"declared parameters: {listed}")
    out: dict[str, object] = {k: spec.default for k, spec in declared.items()}
    for key, value in params.items():
        if key in RESERVED:
            out[key] = value
        else:
            out[key] = _coerce(method, key, value, declared[key])
    out.setdefault("_seed", 0)
    out.setdefault("_progress", False)
    # a batch_size the caller did not give is chosen from free memory (``batch_param``)
    out.setdefault("_batch_auto", "batch_size" in declared and "batch_size" not in params)
    # the names the caller gave (a method may adapt what was left to it, e.g. heta's probe count)
    out.setdefault("_given", tuple(sorted(k for k in params if k not in RESERVED)))
    for key in ("steps", "samples", "batch_size", "probes"):
        if key in out and out[key] is not None and int(out[key]) < 1:  # type: ignore[call-overload]
            raise MethodRefused(f"{method}: parameter {key} must be >= 1, got {out[key]}")
    return out


def generator(seed: object) -> torch.Generator:
    """A CPU generator (results do not depend on the device the model runs on)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))  # type: ignore[arg-type]
    return g


def batch_param(p: Mapping[str, object]) -> int | None:
    """The method's ``batch_size``: the user's value, or ``None`` (memory-aware) when not given."""
    if p.get("_batch_auto") or "batch_size" not in p:
        return None
    return int(p["batch_size"])  # type: ignore[arg-type]


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


# ------------------------------------------------------------------------------ progress

#: Environment switch for progress when the caller does not say: 1/true/on or 0/false/off.
PROGRESS_ENV = "SCOPECHECK_PROGRESS"
#: Seconds between two progress lines of one phase when the stream is not a terminal.
LOG_INTERVAL = 10.0

_PHASE: contextvars.ContextVar["Progress | None"] = contextvars.ContextVar("scopecheck_phase", default=None)


def progress_enabled(requested: bool | None = None) -> bool:
    """Whether a long phase reports progress: ``requested`` when given; else ``$SCOPECHECK_PROGRESS``
    when set; else off inside pytest (``PYTEST_CURRENT_TEST``, inherited by subprocesses) and on
    elsewhere (a bar on a terminal, a line per ``LOG_INTERVAL`` seconds otherwise)."""
    if requested is not None:
        return bool(requested)
    env = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if env in _TRUE:
        return True
    if env in _FALSE:
        return False
    return "PYTEST_CURRENT_TEST" not in os.environ


class Progress:
    """Progress of one long phase (a method's scoring, a check, a random baseline).

    On a terminal it is a tqdm bar (removed when done); on any other stream (CI logs, files)
    it writes ``scopecheck: <desc>: <done>/<total> <unit>s (<seconds> s)`` at most once per
    ``LOG_INTERVAL`` seconds and one closing line with the totals, so a phase shorter than the
    interval writes exactly one line. A phase that runs longer than the interval without an
    update (one long forward, a slow chain) still gets a line every ``LOG_INTERVAL`` seconds from
    a heartbeat thread, so a log never goes quiet for longer than that.

    ``total`` given (``fixed``): the planned work, never changed afterwards (a check plans its
    perturbation rows before it scores them; ``grow`` is then a no-op and ``map_batches`` leaves
    the bar to the planner). ``total=None``: work whose size is not known in advance; ``grow``
    counts what was scheduled and lines show the count done, never a denominator that moves.
    """

    def __init__(self, desc: str, total: int | None = None, *, unit: str = "evaluation",
                 stream: Any = None, interval: float | None = None, label: str = "") -> None:
        self.desc, self.unit = desc, unit
        self.fixed = total is not None
        self.total, self.done = total, 0
        self.scheduled = 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = LOG_INTERVAL if interval is None else float(interval)
        self.t0 = self._last = time.monotonic()
        self._pc0 = self._last_pc = time.perf_counter()
        self.closed = False
        self.label = label              # what runs now (the matrix's pair), shown in the lines
        self.bar: Any = None
        self._stop: Any = None
        isatty = getattr(self.stream, "isatty", None)
        if callable(isatty) and isatty():
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream,
                                dynamic_ncols=True)
            except ImportError:  # pragma: no cover - tqdm ships with transformers
                self.bar = None
        if self.bar is None and self.interval > 0:
            self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        import threading

        self._stop = threading.Event()

        def beat() -> None:
            while not self._stop.wait(self.interval):
                if self.closed:
                    return
                if time.perf_counter() - self._last_pc >= self.interval:
                    self._last_pc = time.perf_counter()
                    self._line(self._status(time.perf_counter() - self._pc0))

        threading.Thread(target=beat, name=f"scopecheck-progress:{self.desc}", daemon=True).start()

    def _status(self, seconds: float) -> str:
        now = f"; {self.label}" if self.label else ""
        if self.fixed:
            return f"{self.done}/{self.total} {self.unit}s ({seconds:.0f} s{now})"
        return f"{self.done} {self.unit}s so far ({seconds:.0f} s{now})"

    def grow(self, n: int) -> None:
        """``n`` more units of work were scheduled (ignored on a planned, ``fixed`` total)."""
        if self.fixed:
            return
        self.scheduled += int(n)

    def update(self, n: int) -> None:
        self.done += int(n)
        if self.bar is not None:
            self.bar.update(int(n))
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._last_pc = time.perf_counter()
            self._line(self._status(now - self.t0))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._stop is not None:
            self._stop.set()
        if self.bar is not None:
            self.bar.close()
        elif self.done:
            self._line(f"done, {self.done} {self.unit}s in {time.monotonic() - self.t0:.1f} s")

    def _line(self, text: str) -> None:
        try:
            self.stream.write(f"scopecheck: {self.desc}: {text}\n")
            self.stream.flush()
        except (OSError, ValueError):  # pragma: no cover - a closed stream never stops a run
            pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def current_phase() -> Progress | None:
    """The progress of the phase running now (``phase``), if any reports."""
    return _PHASE.get()


@contextlib.contextmanager
def phase(desc: str, progress: bool | None = None, *, unit: str = "evaluation",
          stream: Any = None, total: int | None = None) -> Iterator[Progress | None]:
    """Run a long phase: when progress is enabled (``progress_enabled``), every evaluation scored
    inside it (``map_batches``, ``batches``) is counted on one :class:`Progress` named ``desc``.
    A phase inside a reporting phase reports into the outer one (one bar, one line per check).
    ``total``: the planned units (a fixed denominator; the planner, not ``map_batches``, then
    advances the bar)."""
    outer = _PHASE.get()
    if outer is not None or not progress_enabled(progress):
        yield outer
        return
    bar = Progress(desc, total, unit=unit, stream=stream)
    token = _PHASE.set(bar)
    try:
        yield bar
    finally:
        _PHASE.reset(token)
        bar.close()


# ------------------------------------------------------------------------------ memory-aware batching

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
#: K backwards over a large graph run one after the other (:data:`VMAPPED_BACKWARD`), each
#: streaming the weights once, so rows per call matter (124M shape, IG 50 steps, 8 targets: 50 s
#: at 3 rows per call, 28-30 s at 25-26, 0.6-1.4 GiB resident; this budget gives it 26).
CPU_BATCH_BYTES = 64 * 2 ** 20
CPU_BACKWARD_BATCH_BYTES = 2 * 2 ** 30

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


class BatchSizeError(RuntimeError):
    """A batch size the user set ran out of memory (it is never lowered silently)."""


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


def _release_memory(device: torch.device | None) -> None:
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


def row_bytes(problem: AttributionProblem, kind: str = "forward", members: int = 1) -> int:
    """A generous estimate of the memory one scored row takes at the peak of a forward
    (``kind="forward"``, no graph) or of a forward and backward (``"backward"``, every layer's
    activations kept): the largest per-layer buffers, the attention scores and the logits
    (with their float32 log-softmax copies), from the model's config when the objective exposes
    its model, else from the embedding width assuming a deep model. A causal-LM objective
    computes logits at its target rows only; ``members`` map-family members share the forward
    (their target rows add up) and, backward, each takes its own gradient buffers where their
    gradients are taken at once (:data:`VMAPPED_BACKWARD`; one at a time elsewhere)."""
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
        grads = max(1, members) if problem.embeds.device.type in VMAPPED_BACKWARD else 1
        total = (layers + grads) * layer * size + 2 * logits + L * d * size * 4
    else:
        total = 2 * layer * size + logits + L * d * size * 2
    return int(2 * total)                                                 # and a factor 2 to spare


def auto_batch(problem: AttributionProblem, kind: str = "forward", members: int = 1) -> int:
    """First automatic batch size: a share of the free memory over ``row_bytes``, capped (on
    CPUs also by :data:`CPU_BATCH_BYTES`)."""
    device = problem.embeds.device
    cap = CPU_MAX_ROWS if device.type == "cpu" else GPU_MAX_ROWS
    free = free_memory(device)
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


def _owner(problem: AttributionProblem | None) -> Any:
    if problem is None:
        return None
    return getattr(problem.objective, "model", None) or problem.objective


def learned_rows(problem: AttributionProblem | None, kind: str) -> int | None:
    owner = _owner(problem)
    if owner is None or problem is None:
        return None
    dev = str(problem.embeds.device)
    try:
        tokens = _LEARNED.get(owner, {}).get((kind, dev))
    except TypeError:
        tokens = _LEARNED_BY_ID.get((id(owner), kind, dev))
    return None if tokens is None else max(1, tokens // max(1, problem.length))


def _learn(problem: AttributionProblem | None, kind: str, rows: int) -> None:
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
                problem: AttributionProblem | None = None, kind: str = "forward", start: int | None = None,
                progress: bool = False, desc: str = "", param: str = "batch_size", members: int = 1) -> list[T]:
    """``[fn(slice) for consecutive slices covering range(n)]``, the slices as large as memory allows.

    ``batch_size`` set (the user's): fixed slices of that size; running out of memory raises
    :class:`BatchSizeError` telling to lower ``param`` (it is never changed silently).
    ``batch_size=None`` (automatic): the first slice has the size learned earlier for this model
    and ``kind``, else ``start``, else ``auto_batch(problem, kind, members)`` (``n`` without a problem),
    at most ``n``; on out-of-memory (:func:`is_out_of_memory`) the slice is halved and retried,
    and the size that works is remembered for the rest of the run. ``fn`` must be a pure
    function of its slice (a retried slice is recomputed from scratch). The results are those of
    any fixed slicing: only which rows share a forward changes.

    Progress: with ``progress`` a :class:`Progress` named ``desc`` over the ``n`` rows; without,
    the rows count on the active :func:`phase`, if any.
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
                if not is_out_of_memory(exc):
                    raise
                failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if failure is None:                 # (the exception and its frames are released by now)
                s = sl.stop
                if bar is not None:
                    bar.update(sl.stop - sl.start)
                continue
            _release_memory(device)
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


def finalize(problem: AttributionProblem, scores: Tensor, info: Mapping[str, object]) -> MethodOutput:
    """Exact zeros outside E; info values as plain floats / ints / strings."""
    scores = scores.detach().to(problem.embeds.dtype)
    zero = torch.zeros_like(scores)
    scores = torch.where(problem.eligible.to(scores.device), scores, zero)
    clean: dict[str, float | int | str] = {}
    for k, v in info.items():
        if isinstance(v, Tensor):
            v = v.item()
        if isinstance(v, bool):
            v = int(v)
        clean[k] = v  # type: ignore[assignment]
    return MethodOutput(scores=scores, info=clean)


def positions(problem: AttributionProblem) -> Tensor:
    """Eligible positions ``(M,)`` int64."""
    return torch.nonzero(problem.eligible).flatten()


def coalitions_to_drop(problem: AttributionProblem, present: Tensor) -> Tensor:
    """Coalitions over eligible features ``(N, M)`` bool (True = kept at its actual value)
    -> drop masks ``(N, L)`` bool (True = perturbed)."""
    pos = positions(problem).to(present.device)
    drop = torch.zeros(present.shape[0], problem.length, dtype=torch.bool, device=present.device)
    drop[:, pos] = ~present
    return drop


def check_operator(problem: AttributionProblem, operator: object) -> str:
    op = str(operator)
    if op != "delete" and op not in problem.operators:
        known = ", ".join(sorted([*problem.operators, "delete"]))
        raise Unavailable(f"unknown or unavailable perturbation operator {op!r}; available for this model: {known}")
    return op


def distinct_rows(drop: Tensor) -> tuple[Tensor, Tensor]:
    """``(first, inverse)`` for a bool matrix ``(N, L)``: the index of each distinct row's first
    occurrence, in order of appearance ``(U,)``, and for every row the index of its distinct row
    ``(N,)``, so ``drop[first][inverse] == drop``."""
    packed = np.packbits(drop.to("cpu", torch.bool).numpy(), axis=1)
    rows = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return torch.as_tensor(first[order], dtype=torch.long), torch.as_tensor(rank[inverse.ravel()], dtype=torch.long)


def score_drops(problem: AttributionProblem, operator: str, drop: Tensor, batch_size: int | None = None,
                progress: bool = False, desc: str = "") -> Tensor:
    """S for each drop mask ``(N, L)`` -> ``(N,)``; never perturbs outside E. Each distinct mask
    (restricted to E) is scored once; batched by :func:`map_batches`: ``batch_size`` rows per
    forward when given, else as many as memory allows."""
    if drop.shape[0] == 0:
        return torch.zeros(0, dtype=problem.embeds.dtype, device=problem.embeds.device)
    drop = drop.to(problem.embeds.device) & problem.eligible.to(problem.embeds.device).unsqueeze(0)
    first, inverse = distinct_rows(drop)
    todo = drop[first.to(drop.device)] if first.numel() < drop.shape[0] else drop

    @torch.no_grad()
    def chunk(sl: slice) -> Tensor:
        embeds, keep = problem.replace(operator, todo[sl])
        return problem.objective(embeds, keep).detach()

    out = torch.cat(map_batches(chunk, int(todo.shape[0]), batch_size, problem=problem, kind="forward",
                                progress=progress, desc=desc))
    return out if todo is drop else out[inverse.to(out.device)]


@torch.no_grad()
def score_input(problem: AttributionProblem) -> float:
    return float(problem.objective(problem.embeds.unsqueeze(0)).item())


def score_all_dropped(problem: AttributionProblem, operator: str) -> float:
    drop = problem.eligible.unsqueeze(0).clone()
    return float(score_drops(problem, operator, drop, 1).item())
