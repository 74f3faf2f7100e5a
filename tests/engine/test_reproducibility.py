"""The reproducibility the README promises (issue 23, item 7): the same contract gives bitwise
equal maps when rerun at one thread count, and maps within ``ACROSS_THREADS`` of each other
(float64) at different counts (intra-op parallel reductions sum in another order; seeds and
sampled coalitions do not depend on the thread count)."""

from __future__ import annotations

import pytest
import torch

from scopecheck.engine.models import LoadOptions
from scopecheck.engine.run import execute
from scopecheck.loader import load_text

#: the README's bound across thread counts, float64 (measured up to 8.2e-15: saliency, Figure 1;
#: 2.7e-15 occlusion with delete, 8.9e-16 KernelSHAP)
ACROSS_THREADS = 1e-13

TEXT = '''contract "repro" {{
 model reference:translate-ar
 prompt "Translate to French: The dog is black."
 output "Le chien est noir."
 use {use}
 method {method}
 seed 0
}}
'''


def _map(use: str, method: str, threads: int) -> torch.Tensor:
    from scopecheck.engine import threads as policy

    before, was = torch.get_num_threads(), policy.policy()
    policy.set_policy("torch")                 # the plugin's auto policy would reset a tiny model to 1 thread
    torch.set_num_threads(threads)
    try:
        (contract,) = load_text(TEXT.format(use=use, method=method), "<repro>.scope")
        r = execute(contract, LoadOptions("cpu", "float64"))
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
        policy.set_policy(was)
    return torch.tensor([t.score for t in r.tokens], dtype=torch.float64)


@pytest.mark.parametrize("use, method", [
    ("span_prompt", "occlusion(operator = zero)"),
    ('prompt_conditioned(target = "noir")', "kernel_shap(operator = pad, samples = 64)"),
    ("span_prompt", "integrated_gradients(steps = 16, baseline = zero)"),
    ('prompt_conditioned(target = "noir")', "occlusion(operator = delete)"),
    ('prompt_conditioned(target = "noir")', "saliency"),
])
def test_bitwise_at_one_thread_count_and_within_the_bound_across_counts(use, method):
    one = _map(use, method, 1)
    assert torch.equal(one, _map(use, method, 1))               # rerun, same count: bitwise
    two = _map(use, method, 2)
    assert torch.equal(two, _map(use, method, 2))
    gap = float((one - two).abs().max())
    assert gap <= ACROSS_THREADS, gap
    print(f"{method}: max |1 thread - 2 threads| = {gap:.3g}")
