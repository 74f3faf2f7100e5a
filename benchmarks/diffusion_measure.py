"""Figures of the masked-diffusion engine on the embedded reference denoisers (not a test).

    python benchmarks/diffusion_measure.py [--examples 30]
    python benchmarks/diffusion_measure.py --only batching [--contracts FILE ...]

Prints: the ground-truth rate of every method under a per-token prompt-to-output contract
(the causal prompt token of each French noun/adjective ranked first), the any-order
identity (chain over random orders vs the Monte Carlo ELBO), how often masking the adjective
and regenerating changes y, which stages commit the noun and the adjective with the effect
of each stage perturbation, and the capitals task's deciding-stage effect. CPU, float32, seed 0.

``--only batching``: the checks of the shipped diffusion contracts (regenerate, continue the
chain, run the chain) evaluated twice, each contract's method first computed once: with every
perturbed chain of a batch stepped together (the default) and with every chain run alone
(``CHAIN_BATCH["on"] = False``). Prints per contract the denoiser forwards and seconds of its
checks in both modes, their ratios, and whether every expectation's measured value is the same.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from scopecheck.engine.diffusion.estimators import elbo_with_error, order_reads, score_reads
from scopecheck.reference import generate
from scopecheck.reference.tasks import ADJECTIVES, NOUNS
from scopecheck.engine.run import run

TEMPLATE = '''contract "m" {{
    model {model}
    prompt "{prompt}"
    output {output}
{body}
    process masked_diffusion(sampler = {sampler}, steps = {steps})
    method {method}
    seed 0
}}'''

METHODS = ["occlusion(operator = mask)", "occlusion(operator = zero)", "integrated_gradients(steps = 64, baseline = mask)",
           "saliency", "gradient_x_input", "lime(samples = 256, operator = mask)",
           "kernel_shap(samples = 256, operator = mask)", "exact_shapley(operator = mask)",
           "context_cite(samples = 128, operator = mask)"]


def text(prompt: str, output: str, body: str, method: str, *, model: str = "reference:translate-mdlm",
         sampler: str = "confidence", steps: int = 8) -> str:
    return TEMPLATE.format(model=model, prompt=prompt, output=output, body=body, method=method, sampler=sampler,
                           steps=steps)


def ground_truth(n: int) -> None:
    fr = {w for x in NOUNS for w in (x[2], x[3])} | {w for a in ADJECTIVES for w in a[1:]}
    targets = [(e, j + 1, c) for e in generate("translate", n, split="heldout", seed=7)
               for j, (w, c) in enumerate(zip(e.output_tokens, e.causal)) if w in fr]
    body = "    score log p(y[{k}] | x) via chain\n    fixed nothing\n    explain y[{k}]\n    eligible x"
    print(f"ground truth, prompt-to-output per token, {len(targets)} French nouns/adjectives of {n} held-out examples:")
    from scopecheck.errors import ContractError

    for method in METHODS:
        t0 = time.perf_counter()
        hits = refused = 0
        for e, k, c in targets:
            try:
                r = run(text(e.prompt, f'"{e.output}"', body.format(k=k), method))
            except ContractError:             # e.g. exact Shapley refuses more than 10 features
                refused += 1
                continue
            hits += (r.ranking()[0].index - 1) in c
        ran = len(targets) - refused
        note = f", {refused} refused" if refused else ""
        print(f"  {method:52s} {hits}/{ran} = {hits / max(1, ran):.3f}{note}  ({time.perf_counter() - t0:.1f} s)")


def any_order() -> None:
    r = run(text("Translate to French: The dog is black.", '"Le chien est noir."',
                 "    use prompt_to_output", "occlusion(operator = mask)"))
    c = r.compiled
    ids = torch.tensor([list(c.chain.prompt_ids) + list(c.chain.output)])
    y = torch.tensor(c.chain.output)
    P, R = c.n_prompt, c.chain.R
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        emb = c.denoiser.embed(ids)
        vals = torch.stack([score_reads(c.denoiser, emb, P, order_reads(torch.randperm(R, generator=g).tolist()), y)[0]
                            for _ in range(1000)])
        elbo, se = elbo_with_error(c.denoiser, emb, P, y, 1024, 0)
    se_o = float(vals.std()) / math.sqrt(len(vals))
    print(f"any-order identity (Figure 1): chain over 1000 random orders {float(vals.mean()):.4f} ± {se_o:.4f}; "
          f"ELBO(1024) {float(elbo[0]):.4f} ± {float(se[0]):.4f}; gap {abs(float(vals.mean()) - float(elbo[0])):.4f}; "
          f"recorded chain {r.score_input:.4f}")


def regenerate_rate(n: int) -> None:
    changed = 0
    for e in generate("translate", n, split="heldout", seed=11):
        r = run(text(e.prompt, "generate(greedy)", "    use prompt_to_output", "occlusion(operator = mask)"))
        drop = torch.zeros(1, r.compiled.problem.length, dtype=torch.bool)
        drop[0, 1 + e.segments["adjective"][0]] = True
        emb, keep = r.compiled.problem.replace("mask", drop)
        obj = r.compiled.check_objective
        obj(emb, keep)
        changed += obj.changed[-1]
    print(f"prompt-to-output regeneration: masking the adjective changes y in {changed}/{n} held-out examples")


def stages() -> None:
    for sampler in ("confidence", "left_to_right"):
        for pert in ("noop", "schedule", "substitute"):
            r = run(text("Translate to French: The dog is black.", '"Le chien est noir."',
                         "    use denoising_stage(estimator = chain)", f"stage_perturbation(perturbation = {pert})",
                         sampler=sampler))
            row = "  ".join(f"{t.text.split(': ', 1)[1]}@{t.index}={t.score:+.2e}" for t in r.tokens)
            print(f"stages, translate, {sampler:13s} {pert:10s} {row}")
    r = run(text("Question: name a capital and its country. Answer:", "generate(greedy)",
                 "    use denoising_stage(estimator = chain)", "stage_perturbation(perturbation = noop)",
                 model="reference:capitals-mdlm", steps=5))
    row = "  ".join(f"{t.text.split(': ', 1)[1]}@{t.index}={t.score:+.3f}" for t in r.tokens)
    print(f"stages, capitals (open question), noop: {row}  (log 8 = {math.log(8):.3f})")


SHIPPED = ("contracts/standard/prompt_to_output.scope", "contracts/standard/state_level.scope",
           "contracts/standard/denoising_stage.scope")


def batching(paths: list[str]) -> None:
    from scopecheck.checks.rowcache import clear_score_cache
    from scopecheck.engine.diffusion import denoiser as dmod
    from scopecheck.engine.diffusion import problem as pm
    from scopecheck.loader import load_file
    from scopecheck.orchestration.runner import Runner

    calls = {"n": 0}
    logits = dmod.Denoiser.logits

    def counting(self, *a, **kw):                     # every denoiser forward, whichever Denoiser
        calls["n"] += 1
        return logits(self, *a, **kw)

    dmod.Denoiser.logits = counting                   # type: ignore[method-assign]
    print("diffusion checks, batched chains vs one chain at a time (CPU, float32; one run):")
    print(f"  {'contract':58s} {'calls batched':>13s} {'alone':>7s} {'ratio':>6s}  {'s batched':>9s} "
          f"{'alone':>7s} {'ratio':>6s}  same")
    tot = {"cb": 0, "ca": 0, "tb": 0.0, "ta": 0.0}
    try:
        for path in paths:
            for doc in load_file(path):
                for c in getattr(doc, "contracts", [doc]):
                    measured = []
                    for on in (True, False):
                        runner = Runner()
                        cr = runner.run(c)                # compile and the method: not counted
                        clear_score_cache()
                        pm.CHAIN_BATCH["on"] = on
                        calls["n"] = 0
                        t0 = time.perf_counter()
                        outs = [runner.evaluate(cr, ex) for ex in c.expects]
                        measured.append((calls["n"], time.perf_counter() - t0, [repr(o.left) for o in outs]))
                        pm.CHAIN_BATCH["on"] = True
                    (cb, tb, lb), (ca, ta, la) = measured
                    for k, v in (("cb", cb), ("ca", ca), ("tb", tb), ("ta", ta)):
                        tot[k] += v
                    ratios = (f"{ca / cb:5.1f}x", f"{ta / tb:5.1f}x") if cb else ("  n/a", "  n/a")  # no chain check
                    print(f"  {c.name[:58]:58s} {cb:13d} {ca:7d} {ratios[0]:>6s}  {tb:9.2f} {ta:7.2f} "
                          f"{ratios[1]:>6s}  {'yes' if lb == la else 'NO'}", flush=True)
    finally:
        dmod.Denoiser.logits = logits                 # type: ignore[method-assign]
    print(f"  {'all':58s} {tot['cb']:13d} {tot['ca']:7d} {tot['ca'] / max(1, tot['cb']):5.1f}x  "
          f"{tot['tb']:9.2f} {tot['ta']:7.2f} {tot['ta'] / max(1e-9, tot['tb']):5.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=30)
    ap.add_argument("--only", choices=("any_order", "stages", "regenerate", "ground_truth", "batching"), default=None)
    ap.add_argument("--contracts", nargs="*", default=list(SHIPPED), help="batching: these contract files")
    ap.add_argument("--methods", nargs="*", default=None, help="ground truth: these methods only")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.methods:
        METHODS[:] = args.methods
    steps = {"any_order": any_order, "stages": stages, "regenerate": lambda: regenerate_rate(20),
             "ground_truth": lambda: ground_truth(args.examples), "batching": lambda: batching(args.contracts)}
    for name, fn in steps.items():
        if args.only == name or (args.only is None and name != "batching"):   # batching: on request
            fn()


if __name__ == "__main__":
    main()
