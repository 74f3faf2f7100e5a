"""Checks plan before they compute, compute only what is asked, and their progress tells the truth.

* Planned rows: each check's plan for small cases has the size of its formula (stated in each
  test), and the planned, batched, cached computation equals an independent brute-force loop
  that scores every perturbation separately (one input per forward, float64, 1e-12).
* Only what is asked: a contract reading no NAOPC field never runs the bound search; its model
  evaluations are exactly the distinct rows of the curves.
* Progress: a check's total is fixed before its first row is scored and the bar ends at it.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import torch

from scopecheck.checks import context, curves, rowcache
from scopecheck.checks.registry import random_baseline, run_check
from scopecheck.runtime import batching, progress
from scopecheck.runtime.progress import Progress
from scopecheck.engine.precision import float64_forward

TOL = 1e-12
SEEDS = (0, 1, 2)


@pytest.fixture(autouse=True)
def _fresh(request, monkeypatch):
    """Nothing shared between tests; the objective's shared-prefix key/value reuse off (with it
    on, a row's S depends on which rows share its forward by ~1e-7: the objective's concern)."""
    for name in ("ig_pc", "occ_short"):
        fwd = getattr(request.getfixturevalue(name).compiled.problem.objective, "forward", None)
        if fwd is not None and hasattr(fwd, "reuse_prefix"):
            monkeypatch.setattr(fwd, "reuse_prefix", False)
    rowcache.clear_score_cache()
    batching.forget_learned_batches()
    yield
    rowcache.clear_score_cache()


class Forwards:
    """Counts the model's forwards and the rows they score."""

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


# --------------------------------------------------------------------------- brute force


def brute_S(result, drop) -> float:
    """S with the positions ``drop`` replaced by the check's operator (pad here), one input per forward."""
    pb = result.compiled.problem
    e = pb.embeds.clone()
    drop = list(drop)
    with torch.no_grad(), float64_forward(pb.objective.model):
        if drop:
            e[drop] = pb.operators["pad"][drop]
        return float(pb.objective(e.unsqueeze(0))[0])


def perms(result, seeds):
    feats = context.setup("deletion", result, None).features
    return [[feats[i] for i in np.random.default_rng(s).permutation(len(feats))] for s in seeds]


def brute_deletion(result, ranking):
    """(curve, aopc) of the deletion curve at every k = 0..E, each point its own forward."""
    curve = [brute_S(result, ranking[:k]) for k in range(len(ranking) + 1)]
    return curve, float(np.mean([curve[0] - c for c in curve]))


def rows(res) -> dict:
    return res.extra["work"]


# --------------------------------------------------------------------------- planned-row formulas


@pytest.mark.parametrize("fixture", ["occ_short", "ig_pc"])          # E = 5, E = 9
def test_deletion_plan_size_is_its_formula(request, fixture):
    """deletion with E features on the full grid (k = E + 1 fractions 0, 1/E, ..., 1) asking only
    aopc: the map's check plans k rows; its random baseline with r rankings plans (r + 1) k
    (every ranking's curve and the map's own, which the compared check reads), distinct
    (r + 1)(k - 2) + 2 at most (x and x_∅ are every curve's ends)."""
    result = request.getfixturevalue(fixture)
    E = len(context.setup("deletion", result, None).features)
    k = E + 1
    own = run_check("deletion", result, fields=("aopc",))
    assert rows(own)["planned_rows"] == k and rows(own)["distinct_rows"] == k and rows(own)["scored_rows"] == k
    rowcache.clear_score_cache()
    r = len(SEEDS)
    rnd = random_baseline("deletion", result, seeds=SEEDS, fields=("aopc",))
    w = rows(rnd)
    assert w["planned_rows"] == (r + 1) * k
    assert w["distinct_rows"] <= (r + 1) * (k - 2) + 2 and w["scored_rows"] == w["distinct_rows"]
    # distinct = the number of different prefixes of the r + 1 rankings, counted here directly
    ranks = [context.setup("deletion", result, None).ranking, *perms(result, SEEDS)]
    assert w["distinct_rows"] == len({frozenset(p[:j]) for p in ranks for j in range(k)})
    assert w["model_calls"] == 1                                       # one batched call


def test_deletion_plan_with_exact_naopc_adds_the_subset_lattice_once(occ_short):
    """E = 5 <= EXHAUSTIVE_MAX with naopc asked: the exact bounds need all 2^E subsets, searched
    once for the map and every ranking: planned (r + 1)(E + 1) + 2^E, distinct 2^E (every curve
    row is a subset)."""
    E, r = 5, len(SEEDS)
    rnd = random_baseline("deletion", occ_short, seeds=SEEDS)            # every field, naopc included
    assert rows(rnd)["planned_rows"] == (r + 1) * (E + 1) + 2 ** E
    assert rows(rnd)["distinct_rows"] == 2 ** E
    assert rnd.config["naopc_bounds"] == "exact"


@pytest.mark.parametrize("name,params,per_run", [
    ("comprehensiveness", {"k": 0.4}, lambda p: 2),                    # x and x \\ top-k
    ("sufficiency", {"k": 2}, lambda p: 2),                            # x and x \\ (F - top-k)
    ("soft_nc", {"samples": 6}, lambda p: 6 + 1),                      # samples masks and x_∅
    ("soft_ns", {"samples": 5}, lambda p: 5 + 1),
])
def test_plan_sizes_of_the_other_ranking_checks(occ_short, name, params, per_run):
    r = len(SEEDS)
    own = run_check(name, occ_short, params)
    assert rows(own)["planned_rows"] == per_run(params)
    rowcache.clear_score_cache()
    rnd = random_baseline(name, occ_short, params, seeds=SEEDS)
    assert rows(rnd)["planned_rows"] == (r + 1) * per_run(params)
    assert rows(rnd)["scored_rows"] == rows(rnd)["distinct_rows"] <= rows(rnd)["planned_rows"]


def test_infidelity_plans_its_samples(occ_short):
    """infidelity with ``samples`` = m plans m rows (and S(x) in one more model call)."""
    res = run_check("infidelity", occ_short, {"samples": 7})
    assert rows(res)["planned_rows"] == 7
    assert rows(res)["model_calls"] == 2


# --------------------------------------------------------------------------- planned == brute force


def test_planned_deletion_and_random_baseline_equal_a_brute_force_loop(occ_short):
    assert occ_short.compiled.problem.embeds.dtype == torch.float64
    rnd = random_baseline("deletion", occ_short, seeds=SEEDS, fields=("aopc",))
    own = run_check("deletion", occ_short, fields=("aopc",))
    for p, val, rk in zip(perms(occ_short, SEEDS), rnd.extra["per_seed"]["aopc"], rnd.extra["rankings"]):
        assert rk == p
        curve, aopc = brute_deletion(occ_short, p)
        assert val == pytest.approx(aopc, rel=0, abs=TOL)
    curve, aopc = brute_deletion(occ_short, own.extra["ranking"])
    assert own.fields["aopc"] == pytest.approx(aopc, rel=0, abs=TOL)
    assert list(own.curve) == pytest.approx(curve, rel=0, abs=TOL)
    assert "naopc" not in own.fields and "naopc" not in rnd.fields


def test_planned_other_checks_equal_a_brute_force_loop(occ_short):
    s_x = brute_S(occ_short, [])
    comp = run_check("comprehensiveness", occ_short, {"k": 0.4})
    top = comp.extra["top"]
    assert len(top) == 2                                               # ceil(0.4 * 5)
    assert comp.fields["value"] == pytest.approx(s_x - brute_S(occ_short, top), rel=0, abs=TOL)
    suff = run_check("sufficiency", occ_short, {"k": 2})
    rest = [q for q in comp.extra["ranking"] if q not in suff.extra["top"]] if "ranking" in comp.extra else None
    feats = context.setup("sufficiency", occ_short, None).features
    rest = [q for q in feats if q not in suff.extra["top"]]
    assert suff.fields["value"] == pytest.approx(s_x - brute_S(occ_short, rest), rel=0, abs=TOL)
    snc = run_check("soft_nc", occ_short, {"samples": 6})
    s_empty = brute_S(occ_short, feats)
    d = [max(0.0, s_x - brute_S(occ_short, [q for q, kept in zip(feats, m) if not kept]))
         for m in snc.extra["masks_kept"]]
    assert snc.fields["value"] == pytest.approx(np.mean(d) / max(0.0, s_x - s_empty), rel=0, abs=TOL)
    inf = run_check("infidelity", occ_short, {"samples": 5})
    a = [float(occ_short.scores[q]) for q in feats]
    errs = [(sum(ai for ai, m in zip(a, mask) if m) - (s_x - brute_S(occ_short, [q for q, m in zip(feats, mask) if m])))
            ** 2 for mask in inf.extra["masks"]]
    assert inf.fields["value"] == pytest.approx(np.mean(errs), rel=0, abs=TOL)


# --------------------------------------------------------------------------- only what is asked


def _contract(tiny_dir, expects: str) -> str:
    return (f'contract "asked" {{\n  model {json.dumps(str(tiny_dir))}\n'
            '  prompt "Translate to French: The dog is black."\n  output "Le chien est noir."\n'
            '  use prompt_conditioned(target = "noir")\n  method occlusion\n  seed 0\n'
            f'  expect {expects}\n}}\n')


def _run(tiny_dir, expects):
    from scopecheck.loader import load_text
    from scopecheck.orchestration.runner import Runner

    (doc,) = load_text(_contract(tiny_dir, expects), "asked.scope")
    runner = Runner(device="cpu", dtype="float64")
    cr = runner.run(doc)
    assert cr.error is None, cr.error
    return runner, cr, doc


def test_a_contract_not_asking_for_naopc_never_runs_the_bound_search(tiny_dir, monkeypatch):
    calls = []
    real = curves.aopc_bounds
    monkeypatch.setattr(curves, "aopc_bounds", lambda *a, **k: calls.append(1) or real(*a, **k))
    runner, cr, doc = _run(tiny_dir, "deletion.aopc > random.aopc")
    with Forwards(cr.result) as fw:
        out = runner.evaluate(cr, doc.expects[0])
    assert out.left is not None and calls == []
    E = cr.result.compiled.problem.eligible.sum().item()
    # model rows: the distinct prefixes of the map's ranking and the 5 random rankings, nothing else
    own = cr.checks["deletion()"]
    rnd = cr.checks["random:deletion()"]
    ranks = [own.extra["ranking"], *rnd.extra["rankings"]]
    sets = {frozenset(p[:j]) for p in ranks for j in range(E + 1)}
    assert len(sets) == rnd.extra["work"]["distinct_rows"]
    # occlusion already scored the input, every single-token row and the all-dropped row: the checks
    # start from them
    elig = list(cr.result.compiled.eligible)
    method_rows = {frozenset(), frozenset(elig)} | {frozenset([q]) for q in elig}
    new = sets - method_rows
    assert len(new) < len(sets)
    assert sum(fw.calls) == len(new)
    # the baseline runs first (it plans the map's own rows too) and scores every row the method did
    # not; the map's check beside it then reads all of its E + 1 rows from the row cache
    assert rnd.extra["work"]["scored_rows"] == len(new)
    assert own.extra["work"]["scored_rows"] == 0 and own.extra["work"]["planned_rows"] == E + 1
    assert "naopc" not in own.fields and own.config["naopc_bounds"].startswith("not computed")
    # asking for it runs the search once for the map and every ranking
    runner2, cr2, doc2 = _run(tiny_dir, "deletion.naopc > random.naopc")
    runner2.evaluate(cr2, doc2.expects[0])
    assert len(calls) == 1 and "naopc" in cr2.checks["deletion()"].fields


def test_asked_fields_of_a_contract(tiny_dir):
    from scopecheck.loader import load_text
    from scopecheck.orchestration.expect import asked_fields

    text = _contract(tiny_dir, "deletion(operator = pad).aopc > random.auc\n  expect comprehensiveness > 0.1"
                               "\n  expect completeness")
    (doc,) = load_text(text, "asked.scope")
    assert asked_fields(doc, "deletion(operator = pad)") == ("aopc",)
    assert asked_fields(doc, "random:deletion(operator = pad)") == ("auc",)
    assert asked_fields(doc, "comprehensiveness()") == ("value",)
    assert asked_fields(doc, "completeness()") is None                   # the whole result
    assert asked_fields(doc, "insertion()") is None                      # not asked: everything


# --------------------------------------------------------------------------- progress


class Events:
    """Every (total, done) a Progress shows, from construction to close."""

    def __init__(self, monkeypatch):
        self.seen: list[tuple[str, int | None, int]] = []
        self.closed: list[tuple[str, int | None, int]] = []
        real_update, real_close = Progress.update, Progress.close
        events = self

        def update(self, n):
            real_update(self, n)
            events.seen.append((self.desc, self.total, self.done))

        def close(self):
            events.closed.append((self.desc, self.total, self.done))
            real_close(self)

        monkeypatch.setattr(Progress, "update", update)
        monkeypatch.setattr(Progress, "close", close)


@pytest.mark.parametrize("fixture", ["occ_short", "ig_pc"])          # exact bounds; beam-searched bounds
def test_progress_totals_never_change_during_a_check(request, fixture, monkeypatch):
    result = request.getfixturevalue(fixture)
    ev = Events(monkeypatch)
    run_check("deletion", result, progress=True)                       # naopc asked: bounds in the plan
    random_baseline("insertion", result, seeds=SEEDS, progress=True)
    run_check("soft_nc", result, {"samples": 4}, progress=True)
    for desc in {d for d, _, _ in ev.closed}:
        totals = {t for d, t, _ in ev.seen if d == desc}
        assert len(totals) == 1 and None not in totals, (desc, totals)    # one fixed denominator
        dones = [x for d, _, x in ev.seen if d == desc]
        assert dones == sorted(dones)
        (closing,) = [(t, x) for d, t, x in ev.closed if d == desc]
        assert closing[0] == closing[1] == totals.pop()                   # and it ends there


def test_heartbeat_writes_a_line_while_nothing_updates():
    out = io.StringIO()
    p = Progress("matrix", total=4, unit="cell", stream=out, interval=0.05)
    time.sleep(0.4)                                                    # one long step, no update
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and all(ln.startswith("scopecheck: matrix: 0/4 cells (") for ln in lines)


def test_unplanned_phase_shows_no_moving_denominator():
    out = io.StringIO()
    p = Progress("check agreement", stream=out, interval=0.0)
    p.grow(10)
    p.update(3)
    p.grow(20)
    p.update(4)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(": 3 evaluations so far (0 s)") and "/" not in lines[1].split(": ", 2)[2]


def test_matrix_writes_a_line_at_least_every_interval_with_a_fixed_total(monkeypatch):
    """``scopecheck matrix``: one phase over the pairs, its total fixed; while one pair runs for
    several intervals the heartbeat still writes, naming the pair."""
    import scopecheck.orchestration.matrix as mx
    from scopecheck.engine.catalog import AUTOREGRESSIVE_KINDS, METHODS
    from scopecheck.orchestration.records import ContractRun
    from scopecheck.orchestration.runner import Runner

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.05)

    def slow(self, doc):
        time.sleep(0.3)                                               # six intervals, no update
        return ContractRun(doc, error="not run here")

    monkeypatch.setattr(Runner, "run", slow)
    out = io.StringIO()
    cells = mx.run_matrix(1, ["occlusion"], "cpu", progress=True, stream=out)
    n = len([k for k in AUTOREGRESSIVE_KINDS if k in METHODS["occlusion"].supports])
    assert len(cells) == n
    lines = out.getvalue().splitlines()
    body = [ln for ln in lines if "done," not in ln]
    assert len(body) >= 2 * n and all(f"/{n} pairs (" in ln and "occlusion under " in ln for ln in body)
    assert lines[-1].startswith(f"scopecheck: matrix: done, {n} pairs in ")
