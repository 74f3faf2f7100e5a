"""Fixtures for the engine tests: a tiny randomly initialised Llama (float64, eager) and GPT-2, no downloads."""

from __future__ import annotations

import pytest
import torch

from scopecheck.engine.scoring import causal_lm_problem

VOCAB = 40
PAD, BOS, EOS, UNK = 0, 1, 2, 3


def make_tiny_llama(seed: int = 0, attn: str = "eager"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        # no pad_token_id in the config: Llama would zero that embedding row (padding_idx), and a
        # zero baseline row sits on RMSNorm's discontinuity at 0; problems pass pad_id explicitly
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=None, attn_implementation=attn,
        # the default 0.02 gives a near-uniform, context-blind model; 0.2 makes context matter
        initializer_range=0.2,
    )
    return LlamaForCausalLM(cfg).to(torch.float64).eval()


def make_tiny_gpt2(seed: int = 0):
    """A tiny randomly initialised GPT-2 (learned position embeddings added to the input), float64."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=32, bos_token_id=BOS,
                     eos_token_id=EOS, initializer_range=0.2)
    return GPT2LMHeadModel(cfg).to(torch.float64).eval()


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models on shared CPUs: intra-op threading only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture(scope="session")
def seq():
    """[BOS, p1..p5, y1, y2, y3]: prompt at 1..5, generation at 6..8."""
    return torch.tensor([BOS, 7, 12, 25, 9, 31, 18, 4, 22])


PROMPT = list(range(1, 6))
GEN = [6, 7, 8]


def eligible_mask(length: int, positions) -> torch.Tensor:
    m = torch.zeros(length, dtype=torch.bool)
    m[list(positions)] = True
    return m


@pytest.fixture(scope="session")
def problems(tiny_llama, seq):
    """The three autoregressive contracts of seed 000, Table 1, on the same sequence."""
    L = len(seq)
    return {
        # log p(y3 | x, y1, y2), everything but BOS eligible
        "local_next_token": causal_lm_problem(tiny_llama, seq, eligible_mask(L, range(1, 8)), [8], pad_id=PAD, unk_id=UNK),
        # same score, prefix y1 y2 held fixed
        "prompt_conditioned": causal_lm_problem(tiny_llama, seq, eligible_mask(L, PROMPT), [8], pad_id=PAD, unk_id=UNK),
        # span log-prob of y1..y3 given x, prompt eligible
        "span_prompt": causal_lm_problem(tiny_llama, seq, eligible_mask(L, PROMPT), GEN, pad_id=PAD, unk_id=UNK),
    }
