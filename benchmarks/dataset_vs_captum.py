"""A checks-heavy dataset contract, scopecheck against the script a user would otherwise write
(not a test): serial times and their ratio, results verified equal, and Ray with 2 workers
against serial at several dataset sizes.

    python benchmarks/dataset_vs_captum.py [--examples 100] [--stories 32] [--ray-sizes 20,50,100,200]
                                           [--threads 1,default] [--repeats 3] [--workers 2]
                                           [--profile] [--skip-ray] [--json out.json]

``--threads``: a comma list of configurations, each timing both sides: ``1`` (one thread for
scopecheck and for the script) and ``default`` (out of the box: the script at torch's default
thread count, scopecheck under its automatic thread policy). ``--repeats``: runs per side,
interleaved (scopecheck, plain script, batched script, again), medians reported. Ray runs under
the one-thread configuration.

The workload, per example (the contract below, once over ``--examples`` generated reference
examples on ``reference:translate-ar`` and once over ``--stories`` story prompts on
``/work/shared/models/stories260k`` with their greedy continuations, written once to a JSONL
file beside the contract before anything is timed):

* occlusion of every prompt token (operator ``zero``: its input embedding set to 0), target
  ``S = log p(y[2] | x, y[1])`` (``prompt_conditioned(target = 2)``);
* the deletion curve of the map's ranking over every prompt token, ``aopc = mean_{k=0..E}
  [S(x) - S(x \\ top-k)]``, and the same for five random rankings (``random.aopc``);
* comprehensiveness ``S(x) - S(x \\ top-ceil(0.2 E))`` for the map and the five random rankings.

scopecheck runs it as a dataset contract (``Runner.run``, serial executor, no store). The
hand-written script (:func:`user_example`) is what a user without scopecheck would write with
Captum 0.9: ``FeatureAblation`` per example over the prompt embeddings, and a plain loop for
the deletion curves and comprehensiveness, with the random rankings drawn as scopecheck draws
them (``numpy.random.default_rng(s).permutation(E)``, ``s = 0..4``), so the quantities are the
same numbers. It runs in two configurations: ``plain`` (Captum's defaults, one perturbed input
per forward; one forward per curve point), and ``batched`` (Captum's ``perturbations_per_eval =
E``, every curve point of every ranking in one forward): the script as most users write it, and
the same script tuned by hand.

Both sides run in this process after a warm-up (the models loaded, one example each), so the
times are the dataset loop, not model loading or imports. Verification: for every example, the
occlusion map, the four values and the ranking's top token agree within ``TOL`` (float32; the
two sides run the same model and tokenizer on the same ids, scopecheck through its prefix cache
and stopped forwards, so their float32 sums differ in the last bits). ``--profile`` prints the
cProfile top of scopecheck's serial translate run. Ray: for each size, ``Runner(executor =
"ray", workers = 2)`` against serial, Ray's start-up included (a fresh local Ray per run, as
``scopecheck run --executor ray`` does), and every example's values compared for equality.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STORIES = ROOT.parent.parent / "shared" / "models" / "stories260k"
if not STORIES.exists():
    STORIES = Path("/work/shared/models/stories260k")
#: absolute tolerance of the verification (float32 log-probabilities of order 1-10)
TOL = 1e-4
SEEDS = (0, 1, 2, 3, 4)
K = 0.2
TARGET = 2

#: story openings for stories260k (its training data is TinyStories-like)
STORY_PROMPTS = [
    "Once upon a time, there was a little girl named Lily.",
    "One day, a boy named Tom went to the park with his mom.",
    "Once upon a time, there was a big dog named Max.",
    "Sara had a red ball. She liked to play with it every day.",
    "The sun was shining and the birds were singing. Ben wanted to go outside.",
    "Once upon a time, in a small house, lived a happy cat.",
    "Lily and her brother went to the beach. They saw a big shell.",
    "There was a little bird who could not fly.",
    "Tim wanted a new toy. He asked his dad for a car.",
    "Once upon a time, there was a kind old man who lived in the woods.",
    "Mia found a shiny stone in the garden.",
    "The little fish swam in the blue sea. It was looking for food.",
    "One morning, Anna woke up and saw snow outside.",
    "Once upon a time, there was a small frog who loved to jump.",
    "Jack had a big box of crayons. He drew a picture of the sun.",
    "The bunny was hungry. It hopped to the garden to find a carrot.",
    "Once upon a time, a little girl named Sue lost her doll.",
    "Max and his friend played with a ball in the yard.",
    "There was a tall tree in the park. Many birds lived in it.",
    "Once upon a time, there was a bear who liked honey.",
    "Lucy went to the store with her mom to buy some milk.",
    "The boy saw a big truck on the road.",
    "Once upon a time, there was a princess who lived in a castle.",
    "Sam was sad because it was raining and he could not play outside.",
    "A little mouse lived in a hole in the wall.",
    "Once upon a time, there was a girl who loved to dance.",
    "Tom and Sue made a cake for their mom.",
    "The duck went for a swim in the pond.",
    "Once upon a time, a boy found a lost puppy in the rain.",
    "Emma had a pretty dress. She wore it to the party.",
    "The kids went to the zoo and saw a big lion.",
    "Once upon a time, there was a little car that could talk.",
    "Ben liked to read books about the stars.",
    "The girl gave her friend a hug.",
    "Once upon a time, there was a happy sheep on a farm.",
    "Lily saw a butterfly in the garden and wanted to catch it.",
]


def contract_text(name: str, model: str, dataset: str) -> str:
    return f'''contract "{name}" {{
    model    {model}
    dataset  {dataset}

    use prompt_conditioned(target = {TARGET})

    method occlusion(operator = zero)
    seed 0

    expect mean(deletion(operator = zero).aopc) > mean(random.aopc)
    expect mean(comprehensiveness(operator = zero, k = {K}).value) > mean(random.value)
}}
'''


DEL = "deletion(operator = zero).aopc"
RDEL = "random:deletion(operator = zero).aopc"
COMP = f"comprehensiveness(operator = zero, k = {K}).value"
RCOMP = f"random:comprehensiveness(operator = zero, k = {K}).value"


# --------------------------------------------------------------------------- workloads


def translate_contract(tmp: Path, n: int) -> Any:
    from scopecheck.loader import load_text

    path = tmp / f"translate_{n}.scope"
    text = contract_text(f"translate, {n} examples", "reference:translate-ar",
                         f"reference:translate/heldout(limit = {n}, seed = 7)")
    path.write_text(text, encoding="utf-8")
    return load_text(text, str(path))[0]


def stories_rows(n: int, new_tokens: int = 6) -> list[dict[str, str]]:
    """``n`` story prompts with their greedy continuations (``new_tokens`` tokens, decoded)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(STORIES)
    model = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    rows = []
    for i, p in enumerate(STORY_PROMPTS[:n]):
        ids = tok(p, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        rows.append({"id": f"s{i:02d}", "prompt": p, "output": " " + text.strip()})
    return rows


def stories_contract(tmp: Path, rows: list[dict[str, str]]) -> Any:
    from scopecheck.loader import load_text

    data = tmp / f"stories_{len(rows)}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = tmp / f"stories_{len(rows)}.scope"
    text = contract_text(f"stories260k, {len(rows)} prompts", json.dumps(str(STORIES)),
                         f'"{data.name}"(id = "id")')
    path.write_text(text, encoding="utf-8")
    return load_text(text, str(path))[0]


def examples_of(contract: Any) -> list[Any]:
    from scopecheck.datasets import load_examples
    from scopecheck.engine.compile import contract_dir

    return list(load_examples(contract.dataset, contract_dir(contract)).examples)


# --------------------------------------------------------------------------- scopecheck


def run_scopecheck(contract: Any, executor: str = "serial", workers: int = 2,
                   profile: cProfile.Profile | None = None) -> tuple[float, Any, Any]:
    from scopecheck.orchestration.runner import Runner

    if TORCH_DEFAULT:
        use_threads("scopecheck")

    r = Runner(device="cpu", executor=executor, workers=workers, store_dir=None)
    t0 = time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        cr = r.run(contract)
    finally:
        if profile is not None:
            profile.disable()
    secs = time.perf_counter() - t0
    if cr.error:
        raise SystemExit(f"scopecheck run failed: {cr.error}")
    return secs, cr, r


# --------------------------------------------------------------------------- the user's script


class UserModel:
    """The model and tokenizer as the user's script loads them (``from_pretrained``)."""

    def __init__(self, where: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(where)
        self.model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.embed = self.model.get_input_embeddings()


def user_example(um: UserModel, prompt: str, output: str, batched: bool) -> dict[str, Any]:
    """The hand-written per-example script: Captum ``FeatureAblation`` and plain loops.

    ``ids = tokenizer(prompt) + tokenizer(output, no special tokens)``; the score is
    ``log_softmax(logits[row])[y_2]`` at the row before the second output token; features are
    the prompt tokens (not BOS), each its embedding set to 0 when ablated."""
    import numpy as np
    import torch
    from captum.attr import FeatureAblation

    tok, model = um.tok, um.model
    x = tok(prompt)["input_ids"]
    y = tok(output, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([x + y])
    n_special = len(tok("a")["input_ids"]) - len(tok("a", add_special_tokens=False)["input_ids"])
    P = len(x) - n_special                                  # prompt tokens: the features
    tpos = len(x) + TARGET - 1                              # position of y[TARGET]
    row, tgt = tpos - 1, int(ids[0, tpos])
    with torch.no_grad():
        emb = um.embed(ids)                                 # (1, L, d)
    head, tail = emb[:, :n_special], emb[:, n_special + P:]

    def score(prompt_emb: torch.Tensor) -> torch.Tensor:    # (B, P, d) -> (B,)
        B = prompt_emb.shape[0]
        full = torch.cat([head.expand(B, -1, -1), prompt_emb, tail.expand(B, -1, -1)], dim=1)
        logits = model(inputs_embeds=full).logits[:, row]
        return torch.log_softmax(logits, dim=-1)[:, tgt]

    xp = emb[:, n_special:n_special + P]                    # (1, P, d)
    mask = torch.arange(P).view(1, P, 1).expand_as(xp)
    with torch.no_grad():
        fa = FeatureAblation(score)
        attr = fa.attribute(xp, baselines=0.0, feature_mask=mask, perturbations_per_eval=P if batched else 1)
        occ = attr[0, :, 0].double()                        # (P,)
        order = torch.argsort(-occ, stable=True).tolist()   # highest first, ties by position
        rankings = [order] + [np.random.default_rng(s).permutation(P).tolist() for s in SEEDS]
        s_x = float(score(xp)[0])

        def removed(sets: list[list[int]]) -> list[float]:
            """S with each set of prompt tokens zeroed."""
            rows = []
            for s in sets:
                e = xp.clone()
                e[0, s] = 0.0
                rows.append(e)
            if batched:
                return score(torch.cat(rows)).double().tolist()
            return [float(score(r)[0]) for r in rows]

        n = max(1, min(P, math.ceil(K * P - 1e-9)))
        if batched:                                         # every ranking's curve and top-n in one forward
            sets = [r[:k] for r in rankings for k in range(P + 1)] + [r[:n] for r in rankings]
            flat = removed(sets)
            curves = [flat[i * (P + 1):(i + 1) * (P + 1)] for i in range(len(rankings))]
            tops = flat[len(rankings) * (P + 1):]
        else:
            curves = [removed([r[:k] for k in range(P + 1)]) for r in rankings]
            tops = [removed([r[:n]])[0] for r in rankings]
    aopcs = [float(np.mean([c[0] - v for v in c])) for c in curves]
    comps = [s_x - t for t in tops]
    return {"ids": ids[0].tolist(), "map": occ.tolist(), "top": n_special + order[0],
            DEL: aopcs[0], RDEL: float(np.mean(aopcs[1:])), COMP: comps[0], RCOMP: float(np.mean(comps[1:]))}


def run_user(um: UserModel, examples: list[Any], batched: bool) -> tuple[float, list[dict[str, Any]]]:
    if TORCH_DEFAULT:
        use_threads("script")
    t0 = time.perf_counter()
    out = [user_example(um, ex.prompt, ex.output, batched) for ex in examples]
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------- verification


def verify(contract: Any, runner: Any, cr: Any, examples: list[Any], user: list[dict[str, Any]]) -> dict[str, Any]:
    """Max |difference| per quantity between scopecheck's per-example values (and its maps,
    recomputed here outside the timing) and the script's; examples whose ids or top token differ."""
    from scopecheck.datasets import example_contract

    worst = {"map": 0.0, DEL: 0.0, RDEL: 0.0, COMP: 0.0, RCOMP: 0.0}
    bad_ids, bad_top = [], []
    by_id = {e.id: e for e in cr.examples}
    for ex, u in zip(examples, user):
        sub = runner.execute(example_contract(contract, ex))
        res = sub.result
        pb = res.compiled.problem
        if pb.ids.tolist() != u["ids"]:
            bad_ids.append(ex.id)
            continue
        elig = list(res.compiled.eligible)
        sc_map = [float(res.scores[p]) for p in elig]
        worst["map"] = max(worst["map"], max(abs(a - b) for a, b in zip(sc_map, u["map"])))
        if res.ranking()[0].position != u["top"]:
            bad_top.append(ex.id)
        vals = by_id[ex.id].values
        for k in (DEL, RDEL, COMP, RCOMP):
            worst[k] = max(worst[k], abs(float(vals[k]) - u[k]))
    return {"max_abs_diff": worst, "ids_differ": bad_ids, "top_differs": bad_top,
            "equal": not bad_ids and not bad_top and all(v <= TOL for v in worst.values())}


# --------------------------------------------------------------------------- main


def workload(name: str, contract: Any, um: UserModel, warm: Any, profile: bool, repeats: int = 1) -> dict[str, Any]:
    examples = examples_of(contract)
    run_scopecheck(warm)                                     # warm-up: model loaded, first-call costs paid
    run_user(um, examples[:1], False)
    run_user(um, examples[:1], True)
    prof = cProfile.Profile() if profile else None
    t_sc, cr, runner = run_scopecheck(contract, profile=prof)
    t_plain, user_plain = run_user(um, examples, batched=False)
    t_batched, user_batched = run_user(um, examples, batched=True)
    runs = {"scopecheck": [t_sc], "plain": [t_plain], "batched": [t_batched]}
    for _ in range(repeats - 1):                             # interleaved, so drift hits every side alike
        runs["scopecheck"].append(run_scopecheck(contract)[0])
        runs["plain"].append(run_user(um, examples, batched=False)[0])
        runs["batched"].append(run_user(um, examples, batched=True)[0])
    t_sc, t_plain, t_batched = (statistics.median(runs[k]) for k in ("scopecheck", "plain", "batched"))
    n = len(examples)
    per_ex = statistics.median(e.seconds for e in cr.examples)
    print(f"\n{name}: {n} examples (serial, float32, {threads_label()}; median of {repeats} interleaved run(s))")
    print(f"  scopecheck                      {t_sc:7.2f} s   ({n / t_sc:6.1f} examples/s; median example "
          f"{per_ex * 1e3:.1f} ms)")
    print(f"  Captum + loop, plain            {t_plain:7.2f} s   ratio {t_plain / t_sc:5.2f}x")
    print(f"  Captum + loop, batched by hand  {t_batched:7.2f} s   ratio {t_batched / t_sc:5.2f}x")
    v_plain = verify(contract, runner, cr, examples, user_plain)
    v_batched = verify(contract, runner, cr, examples, user_batched)
    for label, v in (("plain", v_plain), ("batched", v_batched)):
        d = v["max_abs_diff"]
        print(f"  verified against {label:7s}: {'EQUAL' if v['equal'] else 'DIFFERENT'} within {TOL:g}: max |diff| "
              f"map {d['map']:.2e}, aopc {d[DEL]:.2e}, random.aopc {d[RDEL]:.2e}, comprehensiveness {d[COMP]:.2e}, "
              f"random comprehensiveness {d[RCOMP]:.2e}"
              + (f"; ids differ on {v['ids_differ']}" if v["ids_differ"] else "")
              + (f"; top token differs on {v['top_differs']}" if v["top_differs"] else ""))
    for e in cr.contract.expects:
        print("  " + runner.evaluate(cr, e).explanation)
    work = {k: v for k, v in (cr.checks or {}).items()}
    for key, res in work.items():
        w = res.extra.get("work") if hasattr(res, "extra") else None
        how = res.config.get("naopc_bounds") if hasattr(res, "config") else None
        if w:
            print(f"  first example, {key}: {w['planned_rows']} planned / {w['distinct_rows']} distinct / "
                  f"{w['scored_rows']} scored rows, {w['model_calls']} calls"
                  + (f"; naopc bounds: {how}" if how else ""))
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(30)
        print(s.getvalue())
    return {"examples": n, "threads": threads_label(), "repeats": runs, "scopecheck_s": t_sc, "plain_s": t_plain,
            "batched_s": t_batched,
            "ratio_plain": t_plain / t_sc, "ratio_batched": t_batched / t_sc,
            "verify_plain": v_plain, "verify_batched": v_batched}


def ray_sizes(tmp: Path, sizes: list[int], workers: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not sizes:
        return out
    print(f"\nRay ({workers} local workers, start-up included) vs serial, translate-ar:")
    print("  examples   serial s   ray s   ray/serial   per-example values identical")
    for n in sizes:
        c = translate_contract(tmp, n)
        t_s, cr_s, _ = run_scopecheck(c)
        try:
            t_r, cr_r, _ = run_scopecheck(c, executor="ray", workers=workers)
        except (RuntimeError, ImportError) as exc:
            print(f"  {n:8d}   {t_s:8.2f}   ray not measured ({exc})")
            break
        a = {e.id: (e.values, e.error) for e in cr_s.examples}
        b = {e.id: (e.values, e.error) for e in cr_r.examples}
        same = a == b
        print(f"  {n:8d}   {t_s:8.2f}   {t_r:5.2f}   {t_r / t_s:10.2f}   {'yes' if same else 'NO'}")
        out.append({"examples": n, "serial_s": t_s, "ray_s": t_r, "identical": same})
    faster = [r["examples"] for r in out if r["ray_s"] < r["serial_s"]]
    print("  crossover: " + (f"Ray faster from {faster[0]} examples on" if faster else
                             f"none up to {sizes[-1]} examples on this machine"))
    return out


#: the thread configuration now measured: a number (both sides run with that many torch threads) or
#: ``default`` (each side as it runs out of the box: the script with torch's default thread count,
#: scopecheck under the command line's ``auto`` policy, which picks one thread for a small model)
CONFIG = "1"
TORCH_DEFAULT = 0


def threads_label() -> str:
    if CONFIG == "default":
        return (f"out-of-the-box threads: script {TORCH_DEFAULT} (torch's default), scopecheck policy auto "
                f"(1 for these models)")
    return f"{CONFIG} thread(s) both sides"


def use_threads(side: str) -> None:
    """Put torch's thread settings where configuration ``CONFIG`` wants them for ``side``
    (``scopecheck`` or ``script``) before that side runs."""
    import torch
    from scopecheck.engine import threads

    if CONFIG == "default":
        torch.set_num_threads(TORCH_DEFAULT)            # auto decides from here for scopecheck's models
        threads.set_policy("auto" if side == "scopecheck" else "torch")
    else:
        torch.set_num_threads(int(CONFIG))
        threads.set_policy("torch")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--stories", type=int, default=32)
    ap.add_argument("--ray-sizes", default="20,50,100,200")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", default="1,default",
                    help="comma-separated thread configurations: a number (both sides), or default (each side "
                         "out of the box: the script at torch's default, scopecheck under the auto policy)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per side; medians are reported")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile scopecheck's serial runs")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    global CONFIG, TORCH_DEFAULT
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):     # the configurations set the threads themselves
        os.environ.pop(var, None)
    os.environ.setdefault("SCOPECHECK_PROGRESS", "0")
    import torch

    TORCH_DEFAULT = torch.get_num_threads()
    from scopecheck.reference import reference_dir

    tmp = Path(tempfile.mkdtemp())
    figures: dict[str, Any] = {}
    try:
        um = UserModel(str(reference_dir("translate-ar")))
        rows = stories_rows(min(args.stories, len(STORY_PROMPTS))) if args.stories and STORIES.is_dir() else []
        if args.stories and not rows:
            print(f"\nstories260k: not measured ({STORIES} is missing)")
        su = UserModel(str(STORIES)) if rows else None
        for cfg in [c.strip() for c in args.threads.split(",") if c.strip()]:
            CONFIG = cfg
            fig = figures.setdefault(cfg, {})
            fig["translate"] = workload("translate-ar", translate_contract(tmp, args.examples), um,
                                        translate_contract(tmp, 1), args.profile, args.repeats)
            if rows and su is not None:
                fig["stories"] = workload("stories260k", stories_contract(tmp, rows), su,
                                          stories_contract(tmp, rows[:1]), args.profile, args.repeats)
        CONFIG = "1" if "1" in args.threads.split(",") else CONFIG
        if not args.skip_ray:
            figures["ray"] = ray_sizes(tmp, [int(s) for s in args.ray_sizes.split(",") if s], args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
