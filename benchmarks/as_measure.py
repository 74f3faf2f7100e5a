"""AS (seed 003) with nucleus truncation: error against the exact full-vocabulary AS, and the
forwards it saves, on the shipped stories260k checkpoint and the reference models.

    python benchmarks/as_measure.py [--stories PATH] [--top-p 1.0 0.9999 0.999 0.99 0.95]

For each model and prompt, AS is computed exactly (``top_p = 1``: every vocabulary token at
every eligible position) and with each truncation; the table gives the largest absolute
difference over positions, the candidates per position and the forward rows run (counted
on the model). float64, CPU, seed 0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from scopecheck.engine.methods import run_method
from scopecheck.engine.models import LoadOptions, load
from scopecheck.engine.scoring import causal_lm_problem
from scopecheck.spec import model as m

HERE = Path(__file__).resolve().parent
STORIES = HERE.parents[1] / "shared" / "models" / "stories260k"

CASES = {
    "stories260k": [("Once upon a time, there was a little girl named Lily. She loved to play", " outside")],
    "reference:translate-ar": [("Translate to French: The dogs are black.", "Les chiens sont noirs.")],
    "reference:retrieval-ar": [("Key: A7. Value of A7?", "A7")],
}


def problem(lm, prompt: str, output: str):
    tok = lm.tokenizer
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    o = tok(output, add_special_tokens=False)["input_ids"]
    ids = torch.tensor(bos + p + o)
    e = torch.zeros(len(ids), dtype=torch.bool)
    e[len(bos) + 1: len(bos) + len(p)] = True        # position 0 of the prompt has no p(x_0 | x_<0)
    targets = list(range(len(bos) + len(p), len(ids)))
    return causal_lm_problem(lm.model, ids, e, targets, pad_id=tok.pad_token_id, unk_id=tok.unk_token_id)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stories", default=str(STORIES))
    ap.add_argument("--top-p", type=float, nargs="+", default=[0.9999, 0.999, 0.99, 0.95, 0.9])
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"{'model':<24} {'top_p':>7} {'max |AS - exact|':>17} {'cand/pos':>9} {'rows':>8} {'saved':>7} {'s':>6}")
    for name, cases in CASES.items():
        ref = m.ModelRef("path", args.stories) if name == "stories260k" else m.ModelRef("reference", name.split(":")[1])
        lm = load(ref, LoadOptions("cpu", "float64"), None)
        for prompt, output in cases:
            rows = []
            hook = lm.model.register_forward_pre_hook(
                lambda _m, a, kw: rows.append(int((kw.get("inputs_embeds") if kw.get("inputs_embeds") is not None
                                                    else a[0]).shape[0])), with_kwargs=True)
            try:
                results = {}
                for top_p in [1.0, *args.top_p]:
                    rows.clear()
                    t0 = time.perf_counter()
                    out = run_method("probabilistic_as", problem(lm, prompt, output), {"top_p": top_p})
                    results[top_p] = (out, sum(rows), time.perf_counter() - t0)
            finally:
                hook.remove()
            exact, exact_rows, _ = results[1.0]
            for top_p, (out, n_rows, secs) in results.items():
                err = float((out.scores - exact.scores).abs().max())
                print(f"{name:<24} {top_p:>7} {err:>17.3e} {out.info['candidates_per_position']:>9.1f} "
                      f"{n_rows:>8} {exact_rows / max(1, n_rows):>6.1f}x {secs:>6.2f}")


if __name__ == "__main__":
    main()
