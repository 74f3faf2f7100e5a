"""Fixtures for the check tests: a tiny seeded float64 Llama with the translate task's
word-level tokenizer, saved to a temporary directory and run through ``scopecheck.run``
(no downloads), plus the embedded reference model when its weights are present."""

from __future__ import annotations

import json

import pytest
import torch

import scopecheck

PROMPT = "Translate to French: The dog is black."
OUTPUT = "Le chien est noir."
IG = "integrated_gradients(steps = 64, baseline = pad)"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models on shared CPUs: intra-op threading only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from scopecheck.training.train import BOS, EOS, build_tokenizer, save_tokenizer

    out = tmp_path_factory.mktemp("tiny-translate")
    tok = build_tokenizer("translate")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok.get_vocab()), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=BOS,
        eos_token_id=EOS,
        # no pad_token_id in the config: Llama would zero that row (padding_idx) and a zero
        # baseline sits on RMSNorm's discontinuity; the tokenizer's pad id is passed explicitly
        pad_token_id=None, initializer_range=0.2, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).to(torch.float64).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    save_tokenizer(tok, out)
    return out


def contract_text(model: str, use: str, method: str = IG, prompt: str = PROMPT, output: str | None = OUTPUT) -> str:
    """One contract; ``output=None`` generates the output greedily (then frozen)."""
    out = json.dumps(output) if output is not None else "generate(greedy, max_new_tokens = 3)"
    return (f'contract "check test" {{\n  model {model}\n  prompt {json.dumps(prompt)}\n  output {out}\n'
            f'  use {use}\n  method {method}\n  seed 0\n}}\n')


@pytest.fixture(scope="session")
def run_tiny(tiny_dir):
    cache: dict = {}

    def run(use: str, method: str = IG, prompt: str = PROMPT, output: str | None = OUTPUT):
        key = (use, method, prompt, output)
        if key not in cache:
            cache[key] = scopecheck.run(contract_text(json.dumps(str(tiny_dir)), use, method, prompt, output),
                                        dtype="float64", device="cpu")
        return cache[key]

    return run


@pytest.fixture(scope="session")
def ig_pc(run_tiny):
    """IG (64 Gauss-Legendre steps, pad baseline) under prompt_conditioned(target = "noir"): E = 9 prompt tokens."""
    return run_tiny('prompt_conditioned(target = "noir")')


@pytest.fixture(scope="session")
def occ_span(run_tiny):
    """Occlusion (pad) under span_prompt: E = 9 prompt tokens, S = log p(y[1:T] | x)."""
    return run_tiny("span_prompt", "occlusion")


@pytest.fixture(scope="session")
def occ_short(run_tiny):
    """Occlusion under prompt_conditioned on a 5-token prompt (exact NAOPC bounds by brute force)."""
    return run_tiny('prompt_conditioned(target = "noir")', "occlusion", prompt="The dog is black.")


def reference_available(name: str = "translate-ar") -> bool:
    from scopecheck.reference import reference_dir

    d = reference_dir(name)
    return (d / "model.safetensors").is_file() and (d / "config.json").is_file()


@pytest.fixture(scope="session")
def reference_results():
    """(example, occlusion result) on the trained reference model for three translate examples,
    target = the French adjective (caused by the English adjective by construction).
    The weights ship with the package, so their absence is a failure."""
    assert reference_available(), "reference weights for translate-ar are missing from the package"
    from scopecheck.reference.tasks import figure1_example, translate_example

    out = []
    for ex in (figure1_example(), translate_example("cat", "white"), translate_example("horse", "green")):
        target = ex.output_tokens[3]
        text = contract_text("reference:translate-ar", f"prompt_conditioned(target = {json.dumps(target)})",
                             "occlusion", ex.prompt, ex.output)
        out.append((ex, scopecheck.run(text, dtype="float64", device="cpu")))
    return out


@pytest.fixture(scope="session")
def reference_ig():
    """IG (64 steps, pad) on the trained reference model, Figure 1 middle row."""
    assert reference_available(), "reference weights for translate-ar are missing from the package"
    text = contract_text("reference:translate-ar", 'prompt_conditioned(target = "noir")')
    return scopecheck.run(text, dtype="float64", device="cpu")
