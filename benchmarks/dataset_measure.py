"""Figures of dataset contracts (not a test): serial vs Ray wall time on the same dataset,
examples per second, resume overhead, and the aggregates of the shipped dataset contracts.

    python benchmarks/dataset_measure.py [--examples 40]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from scopecheck.loader import load_file
from scopecheck.orchestration.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "contracts" / "datasets" / "standard.scope"


def timed(contract, store: str | None, executor: str = "serial", resume: bool = False):
    r = Runner(device="cpu", store_dir=store, resume=resume, executor=executor, workers=2)
    t0 = time.perf_counter()
    cr = r.run(contract)
    return r, cr, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=40)
    args = ap.parse_args()
    docs = load_file(SHIPPED)
    import dataclasses

    from scopecheck.spec import model as m

    # the checks-heavy first contract (occlusion, top-1 rate, comprehensiveness against random, a
    # paired test), over the generated reference split (the shipped JSONL files hold 40 rows)
    first, generated = docs[0], docs[3]
    ds = dataclasses.replace(generated.dataset, params=tuple(
        m.Param(p.key, args.examples if p.key == "limit" else p.value, p.span) for p in generated.dataset.params))
    big = dataclasses.replace(first, dataset=ds)
    tmp = Path(tempfile.mkdtemp())
    try:
        _, cr, t_serial = timed(big, str(tmp / "serial"))
        n = len(cr.examples)
        print(f"serial: {n} examples in {t_serial:.1f} s ({n / t_serial:.2f} examples/s)")
        _, cr, t_resume = timed(big, str(tmp / "serial"), resume=True)
        print(f"resume with every example stored: {t_resume:.2f} s (re-reads the store, recomputes one example "
              f"for the report)")
        try:
            _, cr, t_ray = timed(big, str(tmp / "ray"), executor="ray")
            print(f"ray (local, 2 workers, includes starting Ray): {t_ray:.1f} s ({n / t_ray:.2f} examples/s)")
        except RuntimeError as exc:
            print(f"ray: not measured ({exc})")
        for doc in docs:
            r, cr, secs = timed(doc, None)
            print(f"\n{doc.name}  ({len(cr.examples)} examples, {secs:.1f} s)")
            for e in doc.expects:
                print("  " + r.evaluate(cr, e).explanation)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
