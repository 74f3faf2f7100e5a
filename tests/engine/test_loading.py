"""Model loading and token alignment, on the real stories260k checkpoint and local directories."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import scopecheck
from scopecheck.engine.align import align, positions
from scopecheck.engine.models import LoadOptions, load
from scopecheck.errors import ContractError, ContractValidationError
from scopecheck.spec import model as m

STORIES = Path(__file__).parents[3] / "shared" / "models" / "stories260k"
needs_stories = pytest.mark.skipif(not (STORIES / "model.safetensors").exists(),
                                   reason="the shared stories260k checkpoint is not beside this checkout")


def contract(body: str, model: str = f'"{STORIES}"') -> str:
    return f'contract "c" {{\n model {model}\n {body}\n}}\n'


@needs_stories
def test_stories260k_loads_with_bos_and_sentencepiece_alignment() -> None:
    lm = load(m.ModelRef("path", str(STORIES)), LoadOptions("cpu", "float32"))
    assert lm.family == "autoregressive" and lm.dtype == "float32"
    assert next(lm.model.parameters()).dtype == torch.float32
    al = align(lm.tokenizer, m.Prompt((m.Segment(None, "Once upon a time"),)), " there was a girl")
    assert al.tokens[0].role == "special" and al.tokens[0].id == lm.tokenizer.bos_token_id
    assert [t.text.strip() for t in al.role("prompt")] == ["Once", "upon", "a", "time"]
    sel = m.Selector("x", "at", m.TextRef("time"))
    assert [al.tokens[p].text.strip() for p in positions(al, sel)] == ["time"]
    girl = positions(al, m.Selector("y", "at", m.TextRef("girl")))
    assert len(girl) >= 2  # 'girl' is several SentencePiece tokens: the selector takes them all


@needs_stories
def test_float64_is_available_for_verification() -> None:
    r = scopecheck.run(contract('prompt "Once upon a time"\n output " there was"\n use span_prompt\n'
                                ' method saliency'), dtype="float64", device="cpu")
    assert r.dtype == "float64" and r.device == "cpu"
    assert r.special == ("<s>",)
    assert all(t.fixed for t in r.tokens if t.role == "special")


@needs_stories
def test_greedy_generation_is_frozen_and_reported() -> None:
    r = scopecheck.run(contract('prompt "Once upon a time"\n output generate(greedy, max_new_tokens = 6)\n'
                                ' use prompt_conditioned\n method occlusion'), device="cpu")
    assert r.generated and len(r.output_ids) == 6
    assert "there was a little" in r.compiled.alignment.output_text


@needs_stories
def test_sampling_with_a_seed_is_reproducible() -> None:
    body = ('prompt "Once upon a time"\n output generate(sample, seed = 3, max_new_tokens = 6)\n'
            ' use prompt_conditioned\n method saliency')
    a = scopecheck.run(contract(body), device="cpu")
    b = scopecheck.run(contract(body), device="cpu")
    assert a.output_ids == b.output_ids


@needs_stories
def test_text_selector_absent_from_a_generated_output_is_a_positioned_error() -> None:
    body = ('prompt "Once upon a time"\n output generate(greedy, max_new_tokens = 4)\n'
            ' use prompt_conditioned(target = "dragon")\n method occlusion')
    with pytest.raises(ContractValidationError) as exc:
        scopecheck.run(contract(body), device="cpu")
    assert "'dragon' does not occur in the output text" in str(exc.value)
    assert exc.value.span.line == 5


def test_pickle_checkpoints_are_refused_without_the_command_line_flag(tmp_path: Path) -> None:
    from scopecheck.reference import REFERENCE_MODELS

    src = REFERENCE_MODELS["translate-ar"].directory
    assert (src / "model.safetensors").exists()
    d = tmp_path / "pickled"
    shutil.copytree(src, d)
    (d / "model.safetensors").unlink()
    torch.save({}, d / "pytorch_model.bin")
    with pytest.raises(ContractValidationError) as exc:
        load(m.ModelRef("path", str(d)), LoadOptions("cpu"))
    assert "pickle checkpoints are refused" in str(exc.value)
    assert "--allow-pickle" in str(exc.value)


def test_missing_directory_and_unreachable_hub_are_clear_errors(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ContractValidationError, match="does not exist"):
        load(m.ModelRef("path", str(tmp_path / "nope")), LoadOptions("cpu"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ContractValidationError, match="cannot load model hub:org/definitely-not-here"):
        load(m.ModelRef("hub", "org/definitely-not-here"), LoadOptions("cpu"))


def test_cuda_request_without_cuda_is_an_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ContractError, match="CUDA is not available"):
        load(m.ModelRef("reference", "translate-ar"), LoadOptions("cuda"))


def test_contract_files_cannot_enable_remote_code_or_pickles() -> None:
    from scopecheck.dsl.parser import grammar_text

    g = grammar_text()
    assert "trust_remote_code" not in g and "pickle" not in g
    assert LoadOptions().allow_pickle is False and LoadOptions().trust_remote_code is False


STORIES_PARAMS = {"kernel_shap": "(samples = 64)", "lime": "(samples = 64)", "context_cite": "(samples = 64)",
                  "reagent": "(steps = 8)", "integrated_gradients": "(steps = 16)", "heta": "(probes = 2)"}


@needs_stories
@pytest.mark.parametrize("kind", ["local_next_token", "prompt_conditioned", "span_prompt"])
def test_stories260k_runs_every_method_under_every_autoregressive_standard_contract(kind: str) -> None:
    from scopecheck.engine.catalog import METHODS
    from scopecheck.spec.adapters import BY_NAME, toolkit_version

    use = kind if kind == "span_prompt" else f"{kind}(target = T)"
    ran = []
    for method, info in METHODS.items():
        if kind not in info.supports or method == "external":   # external reads a map file (test_external.py)
            continue
        if method in BY_NAME and toolkit_version(BY_NAME[method].toolkit) is None:   # an extra not installed
            continue
        r = scopecheck.run(contract(f'prompt "Once upon a time"\n output " there was a"\n use {use}\n'
                                    f' method {method}{STORIES_PARAMS.get(method, "")}'), device="cpu")
        scores = torch.tensor(r.scores)
        assert torch.isfinite(scores).all(), method
        assert all(t.score == 0.0 for t in r.tokens if not t.eligible), method
        assert r.model == str(STORIES) and r.special == ("<s>",)
        ran.append(method)
    assert len(ran) >= 10, ran
