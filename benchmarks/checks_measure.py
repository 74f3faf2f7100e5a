"""Wall time and model work of the slow phases on stories260k (not a test): LIME, KernelSHAP,
the deletion check, and ``expect deletion.aopc > random.aopc`` (the check and its five random
rankings), on one prompt of ~50 tokens.

    python benchmarks/checks_measure.py [--json out.json] [--threads N]

For each phase it prints the wall seconds, the model forwards (calls of the causal LM) and the
rows they scored (the batch dimension summed over forwards). The expectation phase runs on a
fresh contract run (nothing shared with the deletion phase before it); the last phase runs the
random baseline alone with nothing shared at all. Use ``--threads 1`` on a shared or small
machine: with several busy processes, torch's intra-op threads make every forward many times
slower (measured here: a 2048x64x172 matmul 1.6 ms on one thread, 53 ms on two). The checkpoint is the shared
``stories260k`` beside this checkout (as the tests find it); the run is on the CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STORIES = ROOT.parent / "shared" / "models" / "stories260k"
PROMPT = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park "
          "with her friends. One day, she saw a big red ball near the tall tree.")


def contract(method: str, expects: str = "") -> str:
    return (f'contract "measure {method}" {{\n    model {json.dumps(str(STORIES))}\n'
            f'    prompt {json.dumps(PROMPT)}\n'
            '    output generate(greedy, max_new_tokens = 8)\n'
            '    use prompt_conditioned(target = T)\n'
            f'    method {method}\n    seed 0\n{expects}}}\n')


class Counter:
    """Forwards and rows of every causal-LM call: a global forward pre-hook notices each causal
    LM the first time it runs (the warm-up) and attaches a keyword-aware pre-hook to it."""

    def __init__(self) -> None:
        self.forwards = self.rows = 0
        self._seen: set[int] = set()
        self._hooks = [torch.nn.modules.module.register_module_forward_pre_hook(self._notice)]

    def _notice(self, module, args):  # noqa: ANN001
        if type(module).__name__.endswith("ForCausalLM") and id(module) not in self._seen:
            self._seen.add(id(module))
            self._hooks.append(module.register_forward_pre_hook(self._count, with_kwargs=True))

    def _count(self, module, args, kwargs):  # noqa: ANN001
        x = kwargs.get("inputs_embeds", kwargs.get("input_ids"))
        if x is None and args:
            x = args[0]
        self.forwards += 1
        self.rows += int(x.shape[0]) if isinstance(x, torch.Tensor) else 1

    def reset(self) -> tuple[int, int]:
        out = (self.forwards, self.rows)
        self.forwards = self.rows = 0
        return out

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--only", nargs="*", default=None, help="phases to run: lime kernel_shap deletion random")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (STORIES / "config.json").is_file():
        raise SystemExit(f"the shared checkpoint {STORIES} is not beside this checkout")
    from scopecheck.checks.registry import random_baseline, run_check
    from scopecheck.loader import load_text
    from scopecheck.orchestration.runner import Runner

    counter = Counter()
    runner = Runner(device="cpu")
    rows: list[dict] = []

    def record(phase: str, t0: float, extra: str = "") -> None:
        secs = time.perf_counter() - t0
        fw, n = counter.reset()
        rows.append({"phase": phase, "seconds": round(secs, 3), "forwards": fw, "rows": n, "detail": extra})
        print(f"{phase:<34} {secs:8.2f} s  {fw:7d} forwards  {n:8d} rows  {extra}", flush=True)

    want = set(args.only or ["lime", "kernel_shap", "deletion", "random"])
    # warm-up: load the model and tokenizer once (not measured)
    base = runner.execute(load_text(contract("occlusion"))[0])
    assert base.error is None, base.error
    res = base.result
    E = len(res.compiled.eligible)
    print(f"stories260k, prompt of {sum(t.role == 'prompt' for t in res.tokens)} tokens, {E} eligible features, "
          f"L = {res.compiled.problem.length}, torch threads {torch.get_num_threads()}")
    counter.reset()
    for method in ("lime", "kernel_shap"):
        if method not in want:
            continue
        t0 = time.perf_counter()
        cr = runner.execute(load_text(contract(method))[0])
        assert cr.error is None, cr.error
        record(f"method {method}", t0, f"samples {cr.result.info.get('samples')}")
    if "deletion" in want:
        t0 = time.perf_counter()
        d = run_check("deletion", res, {}, seed=0)
        record("check deletion", t0, f"aopc {d.fields['aopc']:.6f} naopc {d.fields['naopc']:.6f} "
                                     f"bounds {d.config.get('naopc_bounds')}")
    if "random" in want:
        text = contract("occlusion", "    expect deletion.aopc > random.aopc\n")
        c = load_text(text)[0]
        cr = runner.execute(c)
        counter.reset()
        t0 = time.perf_counter()
        out = runner.evaluate(cr, c.expects[0])
        record("expect deletion.aopc > random.aopc", t0, out.explanation[:80])
        try:
            from scopecheck.checks import rowcache as cache
        except ImportError:                              # before the split the cache was faithfulness's
            from scopecheck.checks import faithfulness as cache

        if hasattr(cache, "clear_score_cache"):          # nothing shared with the checks above
            cache.clear_score_cache()
        t0 = time.perf_counter()
        rb = random_baseline("deletion", res, {})
        record("random baseline alone, cold (5 seeds)", t0, f"random aopc {rb.fields['aopc']:.6f}")
    counter.close()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
