"""The real run the report tests render: stories260k (the shared pretrained checkpoint beside
this checkout, as CI has it), prompt-conditioned IG over a greedy continuation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

STORIES = Path(__file__).resolve().parents[3] / "shared" / "models" / "stories260k"


def stories_contract(seed: int | None = None, model_dir: Path | str = STORIES) -> str:
    seed_line = f"    seed {seed}\n" if seed is not None else ""
    return (f'contract "stories" {{\n    model {json.dumps(str(model_dir))}\n'
            '    prompt "Once upon a time, there was a little girl named Lily."\n'
            '    output generate(greedy, max_new_tokens = 8)\n'
            '    use prompt_conditioned(target = T)\n'
            '    method integrated_gradients(steps = 8)\n'
            f'{seed_line}'
            '    expect mass(x["Lily"]) < 0.9\n'
            '    expect top(1) == "Lily"\n}\n')


def run_contract(text: str, *, require_success: bool = True):
    """A ContractRun with its expectations evaluated, as `scopecheck run` makes it."""
    from scopecheck.loader import load_text
    from scopecheck.orchestration.runner import Runner

    contract = load_text(text)[0]
    runner = Runner(device="cpu")
    cr = runner.run(contract)
    if require_success:
        assert cr.error is None, cr.error
    cr.outcomes = [runner.evaluate(cr, ex) for ex in contract.expects]
    return cr


def run_stories(seed: int | None = None):
    if not (STORIES / "config.json").is_file():
        pytest.skip(f"the shared checkpoint {STORIES} is not beside this checkout")
    return run_contract(stories_contract(seed))
