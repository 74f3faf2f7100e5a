"""Memory-aware batching (``runtime.batching.map_batches``): out-of-memory halves an automatic batch and
the run completes with the numbers of an unconstrained run; a batch size the user set is never
lowered silently but fails with an error that says to lower it.

Out-of-memory is simulated: the objective raises the exception a device raises when one forward
gets more rows than a limit.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from scopecheck.engine.methods import run_method
from scopecheck.engine.methods._common import score_drops
from scopecheck.runtime import batching, devices
from scopecheck.runtime.batching import (
    BatchSizeError,
    auto_batch,
    forget_learned_batches,
    learned_rows,
    map_batches,
    row_bytes,
)
from scopecheck.runtime.devices import is_out_of_memory

OOMS = {
    "cuda": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "cuda-runtime": lambda: RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.15 GiB total)"),
    "cpu": lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                                "memory: you tried to allocate 8589934592 bytes. Error code 12"),
}


@pytest.fixture(autouse=True)
def _fresh():
    forget_learned_batches()
    yield
    forget_learned_batches()


class Limited:
    """``problem.objective`` that runs out of memory above ``limit`` rows per forward."""

    def __init__(self, objective, limit: int, oom=OOMS["cuda"]):
        self.objective, self.limit, self.oom = objective, limit, oom
        self.sizes: list[int] = []       # rows of every forward tried, failed ones included
        self.failed = 0

    def __call__(self, embeds, keep=None):
        self.sizes.append(int(embeds.shape[0]))
        if embeds.shape[0] > self.limit:
            self.failed += 1
            raise self.oom()
        return self.objective(embeds, keep)


def limited(problem, limit, oom=OOMS["cuda"]):
    lim = Limited(problem.objective, limit, oom)
    return dataclasses.replace(problem, objective=lim), lim


def test_out_of_memory_is_recognised():
    for make in OOMS.values():
        assert is_out_of_memory(make())
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))       # only the exceptions devices raise


def test_map_batches_halves_and_remembers(problems):
    pb = problems["span_prompt"]
    seen: list[int] = []

    def fn(sl):
        seen.append(sl.stop - sl.start)
        if sl.stop - sl.start > 30:
            raise OOMS["cuda"]()
        return list(range(sl.start, sl.stop))

    out = map_batches(fn, 100, None, problem=pb, start=100)
    assert [x for part in out for x in part] == list(range(100))     # every row once, in order
    assert seen[:3] == [100, 50, 25] and set(seen[2:]) == {25}
    assert learned_rows(pb, "forward") == 25
    seen.clear()                                                      # later calls start at the working size
    map_batches(fn, 100, None, problem=pb, start=100)
    assert seen == [25, 25, 25, 25]
    assert learned_rows(pb, "backward") is None                       # per kind


def test_lime_and_kernel_shap_halve_on_oom_with_identical_results(problems):
    pb = problems["span_prompt"]
    for method, params in (("lime", {"samples": 120, "operator": "unk"}),
                           ("kernel_shap", {"samples": 100, "operator": "zero"})):
        for kind, oom in OOMS.items():
            forget_learned_batches()
            free = run_method(method, pb, params, seed=4)
            forget_learned_batches()
            small, lim = limited(pb, 7, oom)
            got = run_method(method, small, params, seed=4)
            assert lim.failed >= 1, (method, kind)
            ok = [s for s in lim.sizes if s <= 7]
            assert ok and max(ok) <= 7
            assert torch.allclose(got.scores, free.scores, rtol=0, atol=1e-9), (method, kind)
            # the working size is remembered: a second run never runs out of memory again
            lim.sizes.clear()
            failed = lim.failed
            again = run_method(method, small, params, seed=4)
            assert lim.failed == failed and max(lim.sizes) <= 7
            assert torch.equal(again.scores, got.scores)


def test_user_batch_size_is_never_lowered_silently(problems):
    pb, lim = limited(problems["span_prompt"], 7, OOMS["cuda-runtime"])
    with pytest.raises(BatchSizeError, match=r"batch_size = 16.*lower batch_size"):
        run_method("lime", pb, {"samples": 40, "operator": "unk", "batch_size": 16})
    assert lim.sizes == [16]                                          # tried once, as given, never retried smaller
    out = run_method("lime", pb, {"samples": 40, "operator": "unk", "batch_size": 7})
    assert max(lim.sizes[1:]) == 7 and torch.isfinite(out.scores).all()


def test_other_errors_are_not_swallowed(problems):
    pb = problems["span_prompt"]
    lim = Limited(pb.objective, 0, lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    bad = dataclasses.replace(pb, objective=lim)
    drop = torch.eye(pb.length, dtype=torch.bool)[pb.eligible_positions]        # 5 distinct masks
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        score_drops(bad, "zero", drop)
    assert lim.sizes == [5]                                           # raised as it came, not retried


def test_one_row_that_does_not_fit_is_a_clear_error(problems):
    pb, _ = limited(problems["span_prompt"], 0)
    with pytest.raises(BatchSizeError, match="single row"):
        score_drops(pb, "zero", torch.ones(4, pb.length, dtype=torch.bool))


def test_gradient_path_through_map_batches(problems):
    """How IG's path loop uses the helper (``kind="backward"``): the summed gradient of an
    automatic batch that halved equals the one of a single unconstrained pass."""
    from scopecheck.engine.methods.gradients import _grad_at

    pb = problems["span_prompt"]
    steps = 24
    a = torch.linspace(0.05, 0.95, steps, dtype=pb.embeds.dtype)
    x0 = torch.zeros_like(pb.embeds)

    def total(problem, batch):
        def chunk(sl):
            path = x0.unsqueeze(0) + a[sl].view(-1, 1, 1) * (pb.embeds - x0).unsqueeze(0)
            return _grad_at(problem, path)[1].sum(0)
        return sum(map_batches(chunk, steps, batch, problem=problem, kind="backward"))

    want = total(pb, None)
    small, lim = limited(pb, 5)
    got = total(small, None)
    assert lim.failed >= 1 and torch.allclose(got, want, rtol=0, atol=1e-9)
    assert learned_rows(small, "backward") <= 5 and learned_rows(small, "forward") is None


def test_automatic_first_batch_fits_the_estimate(problems, monkeypatch):
    pb = problems["span_prompt"]
    assert row_bytes(pb, "backward") > row_bytes(pb, "forward") > 0
    assert 1 <= auto_batch(pb) <= batching.CPU_MAX_ROWS
    # little free memory: the first batch shrinks with it
    monkeypatch.setattr(devices, "free_memory", lambda device: 3 * row_bytes(pb) * 5)
    assert auto_batch(pb) == int(3 * row_bytes(pb) * 5 * batching.CPU_MEMORY_SHARE) // row_bytes(pb)
    # plenty of free memory: on the CPU the working set is still held to CPU_BATCH_BYTES
    monkeypatch.setattr(devices, "free_memory", lambda device: 1 << 40)
    monkeypatch.setattr(batching, "CPU_BACKWARD_BATCH_BYTES", 7 * row_bytes(pb, "backward", 4))
    assert auto_batch(pb, "backward", 4) == 7
    # members add their target rows' logits; their gradient buffers only where all K gradients
    # are taken at once (one vmapped backward), not on the CPU (one backward at a time)
    cpu_members = row_bytes(pb, "backward", 4)
    assert cpu_members > row_bytes(pb, "backward")
    monkeypatch.setattr(devices, "VMAPPED_BACKWARD", frozenset({"cpu"}))
    assert row_bytes(pb, "backward", 4) > cpu_members
    monkeypatch.setattr(devices, "free_memory", lambda device: None)
    assert auto_batch(pb) == batching.INTERNAL_BATCH


def test_surrogates_batched_equal_one_row_per_forward(problems):
    """LIME and KernelSHAP score all their coalitions in one ``score_drops`` call (each distinct
    coalition once, as many per forward as allowed): the same numbers as one row per forward."""
    pb = problems["span_prompt"]
    for method, params in (("lime", {"samples": 150, "operator": "unk"}),
                           ("kernel_shap", {"samples": 64, "operator": "zero"}),
                           ("kernel_shap", {"samples": 40, "operator": "zero"})):
        lim = Limited(pb.objective, 10 ** 9)
        counted = dataclasses.replace(pb, objective=lim)
        auto = run_method(method, counted, params, seed=2)
        one = run_method(method, pb, {**params, "batch_size": 1}, seed=2)
        assert torch.allclose(auto.scores, one.scores, rtol=0, atol=1e-9), method
        assert auto.info.keys() == one.info.keys()
        for key, value in one.info.items():           # float sums may differ in the last bit
            assert auto.info[key] == (pytest.approx(value, rel=1e-12, abs=1e-12)
                                      if isinstance(value, float) else value), key
        assert len(lim.sizes) == 1                                   # every coalition in one forward
        assert lim.sizes[0] <= params["samples"] + 2


def test_score_drops_scores_each_distinct_mask_once(problems):
    pb = problems["span_prompt"]
    pos = pb.eligible_positions
    drop = torch.zeros(7, pb.length, dtype=torch.bool)
    drop[1, pos[0]] = drop[3, pos[0]] = True                          # rows 1 and 3 equal
    drop[2, pos[:3]] = drop[5, pos[:3]] = True                        # rows 2 and 5 equal
    drop[4, pos] = True
    drop[6, 0] = True                                                 # outside E: the same input as row 0
    lim = Limited(pb.objective, 10 ** 9)
    got = score_drops(dataclasses.replace(pb, objective=lim), "zero", drop)
    assert lim.sizes == [4]
    with torch.no_grad():
        want = torch.cat([pb.objective(*pb.replace("zero", drop[i:i + 1])) for i in range(7)])
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    assert got[1] == got[3] and got[2] == got[5] and got[0] == got[6]
