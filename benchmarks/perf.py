"""Performance benchmark: scopecheck against Captum 0.9, Inseq 0.7 and a minimum-work loop.

    pip install -e ".[bench]"
    python benchmarks/perf.py --quick        # a few minutes on 2 cores: gpt2-4l, P=32, T=8, W2 curve to 512
    python benchmarks/perf.py                # + the 124M GPT-2 shape and the reference models,
                                             #   3 repeats, W2 curve to 1,024 tokens
    python benchmarks/perf.py --repeats 1 --with-engine-workloads   # the README's full table

Workloads (``benchmarks/peers.py`` defines each peer's exact quantity):

* **W1** IG, 50 steps (midpoint rule), one map per generated token, prompt-conditioned
  (scopecheck: a ``target = each`` map family);
* **W2** occlusion of every prompt token, target ``log p(y[1:T] | x)`` (scopecheck: a
  ``span_prompt`` contract; the token replaced by id 0);
* **W3** gradient x input, one map per generated token.

Models: random-weight GPT-2 shapes built here (``gpt2-4l``: 4 layers, d 256; ``gpt2-small``:
124M) and the autoregressive reference models scopecheck ships (``ref:translate-ar``,
``ref:retrieval-ar``: trained 2-layer Llamas, prompt and targets drawn from their vocabulary),
float32 for timings. Each (peer, workload) runs in a fresh subprocess (peak RSS is
per process), ``--repeats`` times; the table gives the median seconds, model calls and rows
of the first repeat (counted by a forward pre-hook), peak RSS increase (MiB), and
``peer / scopecheck`` time ratios. Before timing, every peer's map is verified against the
minimum-work reference in float64 (max abs difference). The dataset and diffusion workloads
are ``benchmarks/dataset_measure.py`` and ``benchmarks/diffusion_measure.py`` (run with
``--with-engine-workloads``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402

WORKLOADS = {"W1": "ig_per_token", "W2": "occlusion_span", "W3": "gxi_per_token"}
PEER_SETS = {
    "ig_per_token": ["scopecheck", "minimal", "captum", "captum_embeds", "inseq"],
    "occlusion_span": ["scopecheck", "minimal", "captum_best", "captum_nocache", "captum", "inseq"],
    "gxi_per_token": ["scopecheck", "minimal", "captum", "inseq"],
}


#: W2 curve: short prompts take a median of three runs (a single sub-second run in a fresh
#: process is dominated by first-call costs: 1.91x cold against 2.94-3.27x in three reruns at
#: 32 tokens); long ones, minutes each, run once.
CURVE_SHORT, CURVE_SHORT_REPEATS = 128, 3


def verify() -> dict[tuple[str, str], float]:
    model = peers.build_model("gpt2-4l", 0, torch.float64)
    x, y = peers.make_ids(model, 32, 8, 0)
    return peers.verify(model, x, y)


def timed(name: str, workload: str, kind: str, P: int, T: int, repeats: int) -> dict:
    return peers.run_peer_isolated(name, workload, kind=kind, P=P, T=T, dtype="float32", repeats=repeats,
                                   threads=torch.get_num_threads(), timeout=3600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="gpt2-4l only, one repeat, W2 curve to 512 tokens")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    ap.add_argument("--models", default=None,
                    help="comma-separated model kinds (gpt2-4l, gpt2-small, ref:translate-ar, ref:retrieval-ar)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated table workloads (W1, W2, W3)")
    ap.add_argument("--lengths", default=None, help="comma-separated prompt lengths of the W2 curve")
    ap.add_argument("--only", choices=("table", "curve"), default=None, help="run only the table or only the curve")
    ap.add_argument("--with-engine-workloads", action="store_true",
                    help="also run the dataset and diffusion measurement scripts")
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    kinds = ["gpt2-4l"] if args.quick else ["gpt2-4l", "gpt2-small", "ref:translate-ar", "ref:retrieval-ar"]
    if args.models:
        kinds = args.models.split(",")
    workloads = args.workloads.split(",")
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        ap.error(f"--workloads: unknown {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    lengths = [32, 128, 512] if args.quick else [32, 128, 512, 1024]
    if args.lengths:
        lengths = [int(v) for v in args.lengths.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; device cpu; float32 timings, float64 verification")
    out: dict = {"verification": {}, "table": [], "curve": []}

    if args.only != "curve":                  # (the curve's maps are the W2 table's quantity)
        print("\nverification (gpt2-4l, float64, P=32, T=8): max |map - minimum-work reference|, same quantity")
        for (w, n), d in verify().items():
            out["verification"][f"{w}/{n}"] = d
            print(f"  {w:<16} {n:<16} {d:.2e}")

    print(f"\n{'model':<16} {'work':<4} {'peer':<15} {'median s':>9} {'calls':>6} {'rows':>6} {'RSS MiB':>8} "
          f"{'x scopecheck':>12}")
    for kind in (kinds if args.only != "curve" else []):
        for label, workload in WORKLOADS.items():
            if label not in workloads:
                continue
            base = None
            for name in PEER_SETS[workload]:
                r = timed(name, workload, kind, 32, 8, repeats)
                row = {"model": kind, "workload": label, "peer": name, **r}
                out["table"].append(row)
                if "error" in r:
                    print(f"{kind:<16} {label:<4} {name:<15} error: {r['error'][:70]}")
                    continue
                if name == "scopecheck":
                    base = r["median_s"]
                ratio = f"{r['median_s'] / base:>11.2f}x" if base else ""
                print(f"{kind:<16} {label:<4} {name:<15} {r['median_s']:>9.2f} {r['calls']:>6} {r['rows']:>6} "
                      f"{r['peak_rss_delta_mib']:>8.0f} {ratio:>12}", flush=True)

    print("\nW2 scaling (gpt2-4l-2k: gpt2-4l with 2,048 positions, T=8): seconds by prompt length "
          f"(median of {CURVE_SHORT_REPEATS} up to {CURVE_SHORT} tokens, one run beyond)")
    print(f"{'P':>6} {'scopecheck':>11} {'captum_best':>12} {'ratio':>7} {'sc rows':>8} {'captum rows':>12}")
    for P in (lengths if args.only != "table" else []):
        reps = CURVE_SHORT_REPEATS if P <= CURVE_SHORT else 1
        sc = timed("scopecheck", "occlusion_span", "gpt2-4l-2k", P, 8, reps)
        cb = timed("captum_best", "occlusion_span", "gpt2-4l-2k", P, 8, reps)
        out["curve"].append({"P": P, "scopecheck": sc, "captum_best": cb})
        if "error" in sc or "error" in cb:
            print(f"{P:>6} error: {sc.get('error') or cb.get('error')}")
            continue
        print(f"{P:>6} {sc['median_s']:>11.2f} {cb['median_s']:>12.2f} {cb['median_s'] / sc['median_s']:>6.2f}x "
              f"{sc['rows']:>8} {cb['rows']:>12}", flush=True)

    if args.with_engine_workloads:
        here = os.path.dirname(os.path.abspath(__file__))
        for script, extra in (("dataset_measure.py", ["--examples", "100"]), ("diffusion_measure.py", [])):
            t0 = time.perf_counter()
            print(f"\n{script} {' '.join(extra)}", flush=True)
            subprocess.run([sys.executable, os.path.join(here, script), *extra], check=False)
            print(f"{script}: {time.perf_counter() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    with np.errstate(all="ignore"):
        main()
