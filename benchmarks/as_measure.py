"""AS (seed 003) with truncation: error against the exact full-vocabulary AS, and the forward
work it saves, on the shipped stories260k checkpoint and the reference models.

    python benchmarks/as_measure.py [--stories PATH] [--settings 0.9999:0 0.9999:1e-4 ...]

Each setting is ``top_p:prune``. For each model and prompt, AS is computed exactly (``top_p = 1``,
``prune = 0``: every vocabulary token at every eligible position, its whole chain) and with each
setting; the table gives the largest absolute difference over positions (worst over prompts),
the candidates per position (nucleus) and those summed after pruning, and the forward work
counted on the model: sequences (batch rows) and token positions run (a cached prefix is not
run). "saved" is exact's positions over the setting's. float64, CPU, 2 threads, seed 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from scopecheck.engine.methods import run_method
from scopecheck.engine.models import LoadOptions, load
from scopecheck.engine.scoring import causal_lm_problem
from scopecheck.spec import model as m

HERE = Path(__file__).resolve().parent
STORIES = HERE.parents[1] / "shared" / "models" / "stories260k"

CASES = {
    "stories260k": [
        ("Once upon a time, there was a little girl named Lily. She loved to play", " outside"),
        ("One day, a boy named Tim went to the park with his mom. He saw a big", " tree."),
        ("The cat was sad because it lost its ball. Then the dog came and said", ", \"I will help you.\""),
        ("Sue had a red hat. She wore it every day. One day, the wind blew the hat", " away."),
        ("Once upon a time, there was a little bird named Sam. Sam lived in a tall tree near a big lake. "
         "Every morning, Sam sang a happy song for his friends. One day, a strong wind came and shook the "
         "tree. Sam was scared, but his friend the frog said, \"Do not be afraid. The wind will go away.\" "
         "Sam waited, and soon the sun came", " out."),
    ],
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


def parse_setting(text: str) -> tuple[float, float]:
    top_p, _, prune = text.partition(":")
    return float(top_p), float(prune or 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stories", default=str(STORIES))
    ap.add_argument("--settings", nargs="+", type=parse_setting,
                    default=[parse_setting(t) for t in ("0.9999:0", "0.999:0", "1:1e-4", "1:5e-5", "1:1e-5",
                                                         "0.999999:1e-5", "0.999999:3e-5", "0.999999:5e-5", "0.999999:1e-4", "0.99999:1e-4", "0.9999:1e-4")])
    ap.add_argument("--exact-cache", default=None,
                    help="JSON file keeping exact AS per model and prompt (scores, work, seconds): read when "
                         "present, written otherwise, so that trying new settings does not rerun exact AS")
    args = ap.parse_args()
    cache: dict[str, dict] = {}
    if args.exact_cache and Path(args.exact_cache).is_file():
        cache = json.loads(Path(args.exact_cache).read_text())
    torch.set_num_threads(2)
    print(f"{'model':<24} {'top_p':>7} {'prune':>7} {'max |AS - exact|':>17} {'cand/pos':>9} {'summed':>7} "
          f"{'rows':>7} {'positions':>10} {'saved':>7} {'s':>7}")
    for name, cases in CASES.items():
        ref = m.ModelRef("path", args.stories) if name == "stories260k" else m.ModelRef("reference", name.split(":")[1])
        lm = load(ref, LoadOptions("cpu", "float64"), None)
        work = {"rows": 0, "positions": 0}

        def count(_m, a, kw):
            e = kw.get("inputs_embeds") if kw.get("inputs_embeds") is not None else a[0]
            work["rows"] += int(e.shape[0])
            work["positions"] += int(e.shape[0] * e.shape[1])

        hook = lm.model.register_forward_pre_hook(count, with_kwargs=True)
        try:
            table: dict[tuple[float, float], list] = {}
            for prompt, output in cases:
                key = f"{name}|{prompt}|{output}"
                if key in cache:                               # exact AS from an earlier run
                    c = cache[key]
                    table.setdefault((1.0, 0.0), []).append(
                        (SimpleNamespace(scores=torch.tensor(c["scores"], dtype=torch.float64), info=c["info"]),
                         c["work"], c["s"]))
                for setting in ([] if key in cache else [(1.0, 0.0)]) + list(args.settings):
                    work.update(rows=0, positions=0)
                    t0 = time.perf_counter()
                    out = run_method("probabilistic_as", problem(lm, prompt, output),
                                     {"top_p": setting[0], "prune": setting[1]})
                    table.setdefault(setting, []).append((out, dict(work), time.perf_counter() - t0))
                    if setting == (1.0, 0.0):
                        o, w, t = table[setting][-1]
                        info = {k: o.info[k] for k in ("candidates_per_position", "summed_per_position")}
                        cache[key] = {"scores": o.scores.double().tolist(), "info": info, "work": w, "s": t}
        finally:
            hook.remove()
        if args.exact_cache:
            Path(args.exact_cache).write_text(json.dumps(cache))
        exact = table[(1.0, 0.0)]
        for setting, runs in table.items():
            err = max(float((o.scores - e[0].scores).abs().max()) for (o, _, _), e in zip(runs, exact))
            cand = sum(o.info["candidates_per_position"] for o, _, _ in runs) / len(runs)
            summed = sum(o.info["summed_per_position"] for o, _, _ in runs) / len(runs)
            rows = sum(w["rows"] for _, w, _ in runs)
            posn = sum(w["positions"] for _, w, _ in runs)
            exact_pos = sum(w["positions"] for _, w, _ in exact)
            secs = sum(t for _, _, t in runs)
            print(f"{name:<24} {setting[0]:>7} {setting[1]:>7} {err:>17.3e} {cand:>9.1f} {summed:>7.1f} "
                  f"{rows:>7} {posn:>10} {exact_pos / max(1, posn):>6.1f}x {secs:>7.2f}")
            if len(runs) > 1:                                  # per prompt: error and positions saved
                per = [f"{float((o.scores - e[0].scores).abs().max()):.1e}/{e[1]['positions'] / max(1, w['positions']):.1f}x"
                       for (o, w, _), e in zip(runs, exact)]
                print(f"{'':<24} {'per prompt (error/saved):':>33} {'  '.join(per)}")


if __name__ == "__main__":
    main()
