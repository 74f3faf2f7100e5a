"""The main job, quiet and on a busy machine (not a test): ``scopecheck run contracts/`` alone,
then beside two CPU-bound burner processes on the same cores, which this script starts and stops.

    python benchmarks/main_job_measure.py [paths ...] [--burners 2] [--threads N] [--json out.json]

Each run is the CLI in a subprocess (``--json`` to a temporary file, no HTML report, no store),
timed from outside. It prints the two wall times and their ratio (the fair share with two
burners on the machine's cores is ``(cores + burners) / cores`` when the job could use every
core, 2x on 2 cores), then, per check of the quiet run, the work each recorded in its result
(``extra['work']``): planned rows, distinct rows, rows the model scored, model calls and seconds,
beside the busy run's seconds. ``--threads``: ``OMP_NUM_THREADS`` for the job (default: unset,
torch's own choice). The burners are plain ``while True`` loops in child processes; they are
stopped (by their own process ids) however the measurement ends.

Run it on an otherwise idle machine for the figures the README records; with other work on the
machine pass a reduced set of contracts (paths) to show the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_job(paths: list[str], threads: int | None) -> tuple[float, dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["SCOPECHECK_PROGRESS"] = "0"
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        cmd = [sys.executable, "-m", "scopecheck.cli", "run", *paths, "--json", str(out), "--report", "-",
               "--store", "-"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if not out.is_file():
            raise SystemExit(f"the job wrote no results (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return wall, json.loads(out.read_text(encoding="utf-8"))


def start_burners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_burners(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def check_rows(results: dict) -> dict[tuple[str, str], dict]:
    out = {}
    for r in results.get("runs", []):
        checks = r.get("checks", [])
        own = {c["call"]: c for c in checks if not c["random"]}
        for c in checks:
            key = (r["name"], ("random:" if c["random"] else "") + c["call"])
            out[key] = dict(c.get("extra", {}).get("work") or {})
            if out[key]:
                out[key]["minimum_rows"] = minimum_rows(c, own.get(c["call"]))
    return out


def minimum_rows(c: dict, own: dict | None) -> int | None:
    """The fewest distinct perturbation rows check ``c``'s protocol needs, from its definition and
    the rankings it reports, not from the planner: a curve (deletion, insertion, aopc) needs the
    top-k set of every ranking at every grid point ``k`` (the random baseline's rankings and the
    map's own, whose curve it is compared with); comprehensiveness the empty set and the top-n
    set, sufficiency the empty set and everything but the top n; infidelity, Soft-NC and Soft-NS
    each distinct sampled mask (the masks they report), Soft-NC/NS also every feature dropped
    (``S(x)`` is one value per contract, not a check's row). ``None``: no formula here (the
    sampled checks' random baselines, whose masks are not reported, and curves whose NAOPC bounds
    were asked for)."""
    name = c["call"].split("(")[0]
    ex = c.get("extra", {})
    mine = (own or {}).get("extra", {}) if c["random"] else ex
    rankings = ([mine["ranking"]] if "ranking" in mine else []) + (ex.get("rankings") or [] if c["random"] else [])
    if name in ("deletion", "insertion", "aopc"):
        ks = mine.get("k")
        if not rankings or ks is None or "naopc" in c.get("fields", {}):
            return None
        return len({frozenset(r[:k]) for r in rankings for k in ks})
    if name in ("comprehensiveness", "sufficiency"):
        top = mine.get("top")
        if top is None:
            return None
        if not c["random"]:
            return 2                                           # the input and the one perturbed set
        rankings = (ex.get("rankings") or []) + [list(top)]    # and the map's own top n
        n, full = len(top), set((ex.get("rankings") or [top])[0])
        sets = {frozenset()} | {frozenset(r[:n]) if name == "comprehensiveness" else frozenset(full - set(r[:n]))
                                for r in rankings}
        return len(sets)
    if not c["random"] and name == "infidelity" and "masks" in ex:
        # every sampled mask's perturbed set (S(x) is one value per contract, shared by every
        # check that reads it, not one of a check's rows)
        return len({frozenset(i for i, m in enumerate(row) if m) for row in ex["masks"]})
    if not c["random"] and name in ("soft_nc", "soft_ns") and "masks_kept" in ex:
        # every sampled mask's dropped set and every feature dropped (S(x_∅)); S(x) as for infidelity
        E = len(ex["masks_kept"][0]) if ex["masks_kept"] else 0
        drops = {frozenset(i for i, kept in enumerate(row) if not kept) for row in ex["masks_kept"]}
        return len(drops | {frozenset(range(E))})
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", default=["contracts/"])
    ap.add_argument("--burners", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    quiet, res_q = run_job(args.paths, args.threads)
    burners = start_burners(args.burners)
    try:
        time.sleep(0.5)                                   # the burners are spinning
        busy, res_b = run_job(args.paths, args.threads)
    finally:
        stop_burners(burners)

    cores = os.cpu_count() or 1
    print(f"main job: {' '.join(args.paths)} (OMP_NUM_THREADS={args.threads or 'unset'}, {cores} cores)")
    print(f"  quiet                      {quiet:8.1f} s")
    print(f"  beside {args.burners} CPU-bound burners   {busy:8.1f} s   ratio {busy / quiet:.2f}x "
          f"(fair share {(cores + args.burners) / cores:.2f}x)")
    exp_q = res_q.get("summary", {}).get("expectations", {})
    exp_b = res_b.get("summary", {}).get("expectations", {})
    print(f"  expectations passed: quiet {exp_q.get('passed')}/{exp_q.get('total')}, "
          f"busy {exp_b.get('passed')}/{exp_b.get('total')}")
    rows_q, rows_b = check_rows(res_q), check_rows(res_b)
    print(f"\n{'contract':44} {'check':40} {'planned':>7} {'distinct':>8} {'minimum':>7} {'scored':>6} "
          f"{'calls':>5} {'quiet s':>8} {'busy s':>7}")
    above = []
    for key in sorted(rows_q, key=lambda k: -float(rows_q[k].get("seconds", 0.0))):
        w, wb = rows_q[key], rows_b.get(key, {})
        if not w:
            continue
        m = w.get("minimum_rows")
        if m is not None and m != w["distinct_rows"]:
            above.append(key)
        print(f"{key[0][:44]:44} {key[1][:40]:40} {w['planned_rows']:7d} {w['distinct_rows']:8d} "
              f"{'—' if m is None else m:>7} {w['scored_rows']:6d} {w['model_calls']:5d} {w['seconds']:8.2f} "
              f"{float(wb.get('seconds', 0)):7.2f}")
    slowest = max((float(w.get("seconds", 0.0)), k) for k, w in rows_q.items() if w) if rows_q else (0.0, ("", ""))
    with_min = sum(1 for w in rows_q.values() if w.get("minimum_rows") is not None)
    print(f"\nslowest check quiet: {slowest[0]:.2f} s ({slowest[1][1]} in {slowest[1][0]!r}); distinct rows equal "
          f"the protocol's minimum for {with_min - len(above)} of the {with_min} checks with a formula"
          + (f"; above it: {above}" if above else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"paths": args.paths, "threads": args.threads, "quiet_s": quiet,
                                               "busy_s": busy, "burners": args.burners, "cores": cores,
                                               "checks": {" | ".join(k): v for k, v in rows_q.items()},
                                               "checks_busy": {" | ".join(k): v for k, v in rows_b.items()}},
                                              indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
