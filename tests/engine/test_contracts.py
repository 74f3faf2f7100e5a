"""Autoregressive contracts computed on the reference models: axioms, the contract's own
guarantees, Figure 1 of seed 000, and ground truth known by construction."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import scopecheck
from scopecheck.engine.catalog import AUTOREGRESSIVE_KINDS, METHODS
from scopecheck.reference import generate
from tests._docs import text as docs_text


def _readme_counts(pattern: str) -> list[int]:
    """The counts a documentation passage states (``{n}`` marks each; docs/reference/reference-models.md),
    so the engine's ground-truth rates below are the documentation's (tests/test_readme_numbers.py
    recomputes them in plain torch)."""
    text = docs_text()
    (m,) = re.findall(pattern.replace("{n}", r"(\d+)"), text)
    return [int(g) for g in m]

ROOT = Path(__file__).parents[2]
FIG1 = ROOT / "contracts" / "figure1.scope"
PROMPT = "Translate to French: The dog is black."
OUTPUT = "Le chien est noir."


def _contract(kind: str, method: str, *, target: str | None = '"noir"', prompt: str = PROMPT, output: str = OUTPUT,
              params: str = "", model: str = "reference:translate-ar") -> str:
    use = kind if kind == "span_prompt" or target is None else f"{kind}(target = {target})"
    return (f'contract "{kind} x {method}" {{\n model {model}\n prompt {json.dumps(prompt)}\n'
            f' output {json.dumps(output)}\n use {use}\n method {method}{params}\n seed 0\n}}\n')


@pytest.mark.parametrize("kind", AUTOREGRESSIVE_KINDS)
def test_ig_completeness_in_float64_for_each_autoregressive_standard_contract(kind: str) -> None:
    r = scopecheck.run(_contract(kind, "integrated_gradients", target="T", params="(steps = 64, baseline = pad)"),
                       dtype="float64", device="cpu")
    gap = sum(r.scores) - (r.score_input - r.score_baseline)
    assert abs(gap) < 1e-3, (kind, gap)


@pytest.mark.parametrize("kind", AUTOREGRESSIVE_KINDS)
def test_ig_completeness_on_the_figure1_target_needs_more_steps_and_gets_there(kind: str) -> None:
    # Measured: at 64 steps the zero-baseline path to "noir" has gaps up to 0.13 (a sharp
    # transition along the path); 256 steps close it. The test pins both facts.
    gaps = {}
    for steps in (64, 256):
        r = scopecheck.run(_contract(kind, "integrated_gradients", params=f"(steps = {steps}, baseline = zero)"),
                           dtype="float64", device="cpu")
        gaps[steps] = abs(sum(r.scores) - (r.score_input - r.score_baseline))
    assert gaps[256] < 1e-3, gaps
    assert gaps[256] <= gaps[64]


@pytest.mark.parametrize("kind", AUTOREGRESSIVE_KINDS)
@pytest.mark.parametrize("method", sorted(m for m, info in METHODS.items()
                                          if set(info.supports) & set(AUTOREGRESSIVE_KINDS)
                                          and m != "external"))   # its map is a file: tests/engine/test_external.py
def test_zero_mass_outside_eligible_for_every_method_and_contract(kind: str, method: str) -> None:
    from scopecheck.spec.adapters import BY_NAME, toolkit_version

    if method in BY_NAME and toolkit_version(BY_NAME[method].toolkit) is None:
        pytest.skip(f"{BY_NAME[method].toolkit} is not installed (pip install 'scopecheck[{BY_NAME[method].toolkit}]')")
    if kind not in METHODS[method].supports:
        with pytest.raises(scopecheck.ContractErrors) as exc:
            scopecheck.run(_contract(kind, method), device="cpu")
        assert "method-contract" in str(exc.value) and "a method for" in str(exc.value)
        return
    params = {"kernel_shap": "(samples = 64)", "lime": "(samples = 64)", "context_cite": "(samples = 64)",
              "reagent": "(steps = 8)", "integrated_gradients": "(steps = 16)", "heta": "(probes = 2)"}.get(method, "")
    if method == "exact_shapley" and kind == "local_next_token":  # 12 eligible tokens > 10
        with pytest.raises(scopecheck.ContractValidationError, match="at most 10 eligible features"):
            scopecheck.run(_contract(kind, method, params=params), device="cpu")
        return
    r = scopecheck.run(_contract(kind, method, params=params), device="cpu")
    outside = [t for t in r.tokens if not t.eligible]
    assert outside and all(t.score == 0.0 for t in outside)
    assert any(t.score != 0.0 for t in r.tokens if t.eligible)


def _fig1(name: str):
    return scopecheck.run(FIG1, name=name, dtype="float64", device="cpu")


def test_figure1_prompt_conditioned_black_first_and_prefix_exactly_zero() -> None:
    r = _fig1("figure 1, middle: prompt-conditioned")
    assert r.top(1) == ["black"]
    assert all(t.score == 0.0 for t in r.tokens if t.role == "output")
    assert r.scope["fixed"] == 'y[<"noir"]'


def test_figure1_span_level_mass_on_prompt_only() -> None:
    r = _fig1("figure 1, bottom: span-level prompt")
    assert r.mass("x") == pytest.approx(1.0)
    assert all(t.score == 0.0 for t in r.tokens if t.role != "prompt")


# Measured (not tuned): under local next-token IG on the reference model, the share of the
# absolute mass on the generated prefix "Le chien est". Seed 000 says the prefix dominates;
# on this model it does (0.618 of the mass, prompt 0.382). Recorded value and tolerance:
LOCAL_PREFIX_SHARE = 0.618  # measured with IG, zero baseline, 256 steps, float64


def test_figure1_local_next_token_prefix_vs_prompt_split_is_as_measured() -> None:
    r = _fig1("figure 1, top: local next-token")
    prefix = r.mass('y[<"noir"]')
    prompt = r.mass("x")
    assert prefix + prompt == pytest.approx(1.0)
    print(f"local next-token IG: prefix share {prefix:.4f}, prompt share {prompt:.4f}")
    assert prefix == pytest.approx(LOCAL_PREFIX_SHARE, abs=0.01)


def _targets(ex) -> list[int]:
    """Content tokens: the French noun and the adjectives (0-based output indices).

    Their identity comes from the prompt alone. Function tokens are left out: under a
    prompt-conditioned contract the held-fixed prefix already fixes the verb's number, and
    the first token (the article) is also driven by where the source sentence ends.
    """
    return [1] + [j for j, t in enumerate(ex.output_tokens) if j >= 3 and t not in (".", "!", "très", "et")]


# zero embedding: on the reference models the untrained pad/mask rows are themselves surprising
# tokens (measured: pad/mask IG put the constant "The" first for 11 of 25 nouns)
@pytest.mark.parametrize("method,params", [("integrated_gradients", "(steps = 32, baseline = zero)"),
                                           ("occlusion", "(operator = zero)")])
def test_ground_truth_prompt_conditioned_puts_a_causal_token_first(method: str, params: str) -> None:
    hits = total = 0
    for ex in generate("translate", 30, split="heldout", seed=11):
        for j in _targets(ex):
            target = f"{j + 1}"
            r = scopecheck.run(_contract("prompt_conditioned", method, target=target, prompt=ex.prompt,
                                         output=ex.output, params=params), device="cpu")
            best = r.ranking()[0]
            hits += (best.index - 1) in ex.causal[j]
            total += 1
    rate = hits / total
    print(f"{method}: causal token ranked first in {hits}/{total} = {rate:.3f}")
    assert [hits, total] == _readme_counts(r"a causal token ranked first in {n}/{n} for IG and for occlusion")


@pytest.mark.parametrize("method,params", [("integrated_gradients", "(steps = 32, baseline = zero)"),
                                           ("occlusion", "(operator = zero)")])
def test_ground_truth_evidence_segment_outranks_distractor(method: str, params: str) -> None:
    wins = total = 0
    for ex in generate("retrieval", 30, split="heldout", seed=5):
        r = scopecheck.run(_contract("span_prompt", method, prompt=ex.prompt, output=ex.output, params=params,
                                     model="reference:retrieval-ar"), device="cpu")
        prompt = {t.index - 1: abs(t.score) for t in r.tokens if t.role == "prompt"}
        ev = sum(v for i, v in prompt.items() if ex.segments["evidence"][0] <= i < ex.segments["evidence"][1])
        di = sum(v for i, v in prompt.items() if ex.segments["distractor"][0] <= i < ex.segments["distractor"][1])
        wins += ev > di
        total += 1
    print(f"{method}: evidence mass > distractor mass in {wins}/{total} = {wins / total:.3f}")
    stated = _readme_counts(r"the evidence segment outweighs the distractor in {n}/{n} \(IG\) and {n}/{n} \(occlusion\)")
    assert [wins, total] == (stated[:2] if method == "integrated_gradients" else stated[2:])
