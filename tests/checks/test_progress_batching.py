"""Progress of checks and random baselines, and the batched random baseline.

* Progress: off inside pytest unless asked for; on a stream that is not a terminal a phase
  writes rate-limited lines naming the check (one closing line when it is short); on a
  terminal it is a tqdm bar.
* A random baseline scores its rankings' perturbed inputs (and the map's own) in one batched
  call and shares every score with the check it baselines; the numbers are those of running
  each ranking on its own, unbatched and uncached (float64, 1e-9).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from scopecheck.checks import catalog, context, rowcache
from scopecheck.checks.registry import random_baseline, run_check
from scopecheck.runtime import batching, progress
from scopecheck.runtime.progress import Progress, phase, progress_enabled


class Forwards:
    """Counts the model's forwards and the rows they score (a hook on the tiny model)."""

    def __init__(self, result):
        self.model = result.compiled.problem.objective.model
        self.calls: list[int] = []

    def __enter__(self):
        def hook(module, args, kwargs):
            x = kwargs.get("inputs_embeds", kwargs.get("input_ids"))
            self.calls.append(int((x if x is not None else args[0]).shape[0]))
        self.handle = self.model.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    @property
    def rows(self) -> int:
        return sum(self.calls)


@pytest.fixture(autouse=True)
def _fresh_scores(request, monkeypatch):
    """Nothing shared between tests; and the objective's shared-prefix key/value reuse off, so
    that a row's S does not depend on which rows share its forward (with it on, rows batched
    differently differ by up to ~1e-7 in float64: the objective's concern, not the batching's)."""
    for name in ("ig_pc", "occ_short"):
        fwd = getattr(request.getfixturevalue(name).compiled.problem.objective, "forward", None)
        if fwd is not None and hasattr(fwd, "reuse_prefix"):
            monkeypatch.setattr(fwd, "reuse_prefix", False)
    rowcache.clear_score_cache()
    batching.forget_learned_batches()
    yield
    rowcache.clear_score_cache()


# --------------------------------------------------------------------------- progress


def test_progress_is_off_inside_pytest_unless_asked(monkeypatch, occ_short, capsys):
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    assert progress_enabled(None) is False                       # PYTEST_CURRENT_TEST is set
    assert progress_enabled(True) is True
    monkeypatch.setenv(progress.PROGRESS_ENV, "1")
    assert progress_enabled(None) is True
    monkeypatch.setenv(progress.PROGRESS_ENV, "off")
    assert progress_enabled(None) is False
    monkeypatch.delenv(progress.PROGRESS_ENV)
    capsys.readouterr()
    run_check("deletion", occ_short)
    random_baseline("deletion", occ_short, seeds=(0, 1))
    assert capsys.readouterr().err == ""


def test_check_progress_on_a_non_tty_stream_names_the_check(occ_short, capsys):
    capsys.readouterr()
    run_check("deletion", occ_short, progress=True)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("scopecheck: check deletion: ") for ln in lines)
    assert len(lines) == 1 and "done" in lines[0] and "rows" in lines[0]     # a short phase: one line
    # a phase served by the shared rows still completes its planned total: 4 runs x 2 rows
    random_baseline("comprehensiveness", occ_short, seeds=(0, 1, 2), progress=True)
    assert capsys.readouterr().err.strip().endswith(tuple(f"done, 8 rows in {t:.1f} s" for t in (0.0, 0.1, 0.2)))
    rowcache.clear_score_cache()
    random_baseline("comprehensiveness", occ_short, seeds=(0, 1, 2), progress=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scopecheck: check comprehensiveness (random baseline, 3 rankings): ")


def test_non_tty_lines_are_rate_limited(monkeypatch):
    clock = iter(float(t) for t in range(0, 1000, 3))             # every call 3 s later
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    p = Progress("check deletion", total=40, stream=out)           # at t = 0
    for _ in range(40):
        p.update(1)                                                # t = 3, 6, ..., 120
    p.close()
    lines = out.getvalue().splitlines()
    # 120 s of work: a line at most every LOG_INTERVAL (10 s) -> at most 12 updates, one closing line
    assert 2 <= len(lines) <= 120 / progress.LOG_INTERVAL + 1
    assert all(ln.startswith("scopecheck: check deletion: ") for ln in lines)
    assert lines[0].endswith("/40 evaluations (12 s)") and lines[-1].startswith("scopecheck: check deletion: done, 40")


def test_tty_stream_gets_a_bar_not_lines(occ_short):
    class TTY(io.StringIO):
        def isatty(self):
            return True

    out = TTY()
    with phase("check deletion", True, stream=out, total=3) as bar:
        assert bar is not None and bar.bar is not None             # a tqdm bar
        ctx = context.setup("deletion", occ_short, None)
        a, b = ctx.features[:2]
        ctx.score_sets([[a], [b], [a, b]])
        assert bar.done == 3 and bar.total == 3 and bar.bar.total == 3
    assert "check deletion" in out.getvalue() and "scopecheck: " not in out.getvalue()


def test_method_progress_inside_a_check_phase_counts_on_it(occ_short):
    out = io.StringIO()
    with phase("check agreement", True, stream=out) as bar:
        run_check("agreement", occ_short, {"method": "occlusion"})  # runs occlusion: its rows count here
    assert bar.done > 0 and out.getvalue().count("\n") == 1


# --------------------------------------------------------------------------- the batched random baseline


RANKING_CHECKS = [("deletion", None), ("insertion", None), ("aopc", None), ("comprehensiveness", {"k": 0.4}),
                  ("sufficiency", {"k": 2}), ("soft_nc", {"samples": 6}), ("soft_ns", {"samples": 6})]


def _unbatched(name, result, params, seeds):
    """Each ranking on its own, nothing shared (the path before batching)."""
    rowcache.SCORE_CACHE = False
    try:
        ctx = context.setup(name, result, params)
        perms = [[ctx.features[i] for i in np.random.default_rng(s).permutation(ctx.E)] for s in seeds]
        return perms, [run_check(name, result, params, ranking=p, seed=s) for p, s in zip(perms, seeds)]
    finally:
        rowcache.SCORE_CACHE = True


@pytest.mark.parametrize("fixture", ["ig_pc", "occ_short"])        # E = 9 (beam bounds), E = 5 (exact)
@pytest.mark.parametrize("name,params", RANKING_CHECKS)
def test_random_baseline_equals_the_unbatched_path(request, fixture, name, params):
    result = request.getfixturevalue(fixture)
    assert result.compiled.problem.embeds.dtype == torch.float64
    seeds = (0, 1, 2, 3, 4)
    perms, alone = _unbatched(name, result, params, seeds)
    rowcache.clear_score_cache()
    rnd = random_baseline(name, result, params, seeds=seeds)
    assert rnd.extra["rankings"] == perms
    for field, vals in rnd.extra["per_seed"].items():
        assert vals == pytest.approx([r.fields[field] for r in alone], rel=0, abs=1e-9, nan_ok=True), field
    curves = np.asarray([r.curve for r in alone])
    assert rnd.curve == pytest.approx(list(curves.mean(axis=0)), rel=0, abs=1e-9)
    # the map's own check, after the baseline, reads shared scores: same numbers as on its own
    rowcache.SCORE_CACHE = False
    try:
        solo = run_check(name, result, params, seed=result.seed)
    finally:
        rowcache.SCORE_CACHE = True
    shared = run_check(name, result, params, seed=result.seed)
    for field in solo.fields:
        assert shared.fields[field] == pytest.approx(solo.fields[field], rel=0, abs=1e-9, nan_ok=True)
    if "aopc_lower" in solo.extra:
        for key in ("aopc_lower", "aopc_upper"):
            assert shared.extra[key] == pytest.approx(solo.extra[key], rel=0, abs=1e-9)


def test_random_baseline_is_one_batched_call_sharing_the_checks_forwards(ig_pc):
    """deletion on E = 9 (beam-searched NAOPC bounds): unbatched, each ranking re-runs its curve and
    the bound search; batched, the five curves are one forward and the bounds are shared."""
    params = {"batch_size": 64}
    with Forwards(ig_pc) as before:
        _unbatched("deletion", ig_pc, params, (0, 1, 2, 3, 4))
    with Forwards(ig_pc) as own:
        mine = run_check("deletion", ig_pc, params)                     # curve + bounds, now shared
    with Forwards(ig_pc) as rnd:
        random_baseline("deletion", ig_pc, params)
    # one call over the stacked curves of the five rankings: new distinct inputs only, one forward
    E = mine.config["features"]
    assert len(rnd.calls) == 1 and 0 < rnd.rows <= 5 * (E - 1)
    assert len(before.calls) >= 5 * len(own.calls) and before.rows > 5 * rnd.rows
    with Forwards(ig_pc) as again:                                     # everything is shared now
        assert run_check("deletion", ig_pc, params).fields == mine.fields
        random_baseline("deletion", ig_pc, params)
    assert again.calls == []


def test_rows_are_cached_per_protocol_and_operator(occ_short, monkeypatch):
    """The row cache is keyed by the mask's content under one protocol and operator: the same mask
    regenerated (a diffusion protocol) or under another operator is another row."""
    ctx = context.setup("deletion", occ_short, None)
    assert ctx.row_cache() is rowcache.score_cache(occ_short.compiled.problem)
    drop = ctx.drop_rows([ctx.features[:2]])
    rescore = ctx.row_keys(drop)
    assert rescore == ctx.row_keys(drop.clone())                   # content, not identity
    monkeypatch.setattr(ctx, "protocol", catalog.Protocol("x", ("prompt",), "regenerate", "m"))
    assert ctx.row_keys(drop) != rescore
    monkeypatch.undo()
    monkeypatch.setattr(ctx, "operator", "unk" if ctx.operator != "unk" else "pad")
    assert ctx.row_keys(drop) != rescore


def test_automatic_and_user_batch_sizes_give_the_same_numbers(ig_pc):
    auto = run_check("deletion", ig_pc)
    rowcache.clear_score_cache()
    with Forwards(ig_pc) as fw:
        fixed = run_check("deletion", ig_pc, {"batch_size": 3})
    assert max(fw.calls) <= 3
    assert auto.config["batch_size"] == "auto" and fixed.config["batch_size"] == 3
    assert fixed.curve == pytest.approx(auto.curve, rel=0, abs=1e-9)
    assert fixed.fields == pytest.approx(auto.fields, rel=0, abs=1e-9)
