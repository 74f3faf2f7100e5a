"""`scopecheck check` refuses, at the model statement, what the tokenizer and config reveal about
the model without loading weights: a missing path, a process the config cannot serve, and the
token-level coverage of E, C and O. A text target the tokenizer splits is accepted as its span,
with the score summed over its tokens (checked here against a direct transformers computation)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scopecheck.cli import main

STORIES = Path(__file__).resolve().parents[3] / "shared" / "models" / "stories260k"
if not STORIES.is_dir():
    STORIES = Path("/work/shared/models/stories260k")

pytestmark = pytest.mark.skipif(not STORIES.is_dir(), reason="stories260k is not on this machine")

PROMPT = "Once upon a time a girl went to the"


@pytest.fixture()
def no_weights(monkeypatch):
    """Fail the test if anything loads model weights."""
    import scopecheck.engine.models as models

    def refuse(*a, **k):
        raise AssertionError("check loaded model weights")

    monkeypatch.setattr(models, "_load_cached", refuse)


def check(tmp_path: Path, text: str, capsys) -> tuple[int, str, Path]:
    f = tmp_path / "c.scope"
    f.write_text(text)
    rc = main(["check", "-q", str(f)])
    return rc, capsys.readouterr().err, f


def contract(model: str, body: str, prompt: str = PROMPT, output: str = "park") -> str:
    return (f'contract "c" {{\n    model    {model}\n    prompt   "{prompt}"\n    output   "{output}"\n'
            f'{body}\n    method occlusion\n}}\n')


def test_a_missing_model_path_is_refused_at_the_model_statement(tmp_path, capsys, no_weights):
    rc, err, f = check(tmp_path, contract('"models/nowhere"', '    use prompt_conditioned(target = "park")'), capsys)
    assert rc == 1
    where = tmp_path / "models" / "nowhere"
    assert f"{f}:2:14: invalid contract[model]: model directory '{where}' does not exist" in err
    assert '  2 |     model    "models/nowhere"' in err and "    |              " + "^" * 16 in err
    assert f"hint: a relative path is read from the contract file's folder ({tmp_path})" in err


def test_an_autoregressive_contract_on_a_masked_lm_is_refused(tmp_path, capsys, no_weights):
    text = contract("reference:translate-mdlm", "    use span_prompt", prompt="Translate to French: The dog is black.",
                    output="Le chien est noir.")
    rc, err, f = check(tmp_path, text, capsys)
    assert rc == 1
    assert (f"{f}:2:14: invalid contract[model]: reference:translate-mdlm (BertForMaskedLM) is not a causal LM; "
            "autoregressive contracts need one") in err
    assert "^" * len("reference:translate-mdlm") in err and "hint: a masked LM runs diffusion contracts" in err


def test_a_diffusion_contract_on_a_causal_lm_is_refused(tmp_path, capsys, no_weights):
    body = ("    score log p(y | x) via chain\n    fixed nothing\n    explain y\n    eligible x\n"
            "    process masked_diffusion(sampler = confidence, steps = 4)")
    rc, err, f = check(tmp_path, contract(f'"{STORIES}"', body), capsys)
    assert rc == 1
    assert (f"{f}:2:14: invalid contract[model]: {STORIES} (LlamaForCausalLM) is not a masked language model; "
            "a masked_diffusion process needs a denoiser") in err
    assert "hint: on a causal LM use an autoregressive contract" in err


def test_the_same_models_under_the_process_they_serve_pass_check(tmp_path, capsys, no_weights):
    rc, err, _ = check(tmp_path, contract(f'"{STORIES}"', '    use prompt_conditioned(target = "park")'), capsys)
    assert rc == 0, err
    body = ("    score log p(y | x) via chain\n    fixed nothing\n    explain y\n    eligible x\n"
            "    process masked_diffusion(sampler = confidence, steps = 4)")
    text = contract("reference:translate-mdlm", body, prompt="Translate to French: The dog is black.",
                    output="Le chien est noir.")
    rc, err, _ = check(tmp_path, text, capsys)
    assert rc == 0, err


def test_check_refuses_a_token_level_overlap_as_the_run_would(tmp_path, capsys, no_weights):
    """``fixed x[<="gi"]`` and ``eligible x[>="rl"]`` are disjoint as text, but "girl" is ' g', 'ir',
    'l': both name 'ir'. The run's token-level error, now from check (which used to print ok: only
    the tokenizer can see it)."""
    rc, err, f = check(tmp_path, contract(f'"{STORIES}"', '    use prompt_conditioned(target = "park")\n'
                                                          '    fixed    x[<="gi"], y[<"park"]\n'
                                                          '    eligible x[>="rl"]'), capsys)
    assert rc == 1
    assert f"{f}:6:14: invalid contract[disjoint]: tokens 'ir' are both eligible and held fixed" in err
    assert '  6 |     fixed    x[<="gi"], y[<"park"]' in err and "expected: E and C disjoint" in err


def test_a_span_named_by_indices_still_states_its_fixed_set(tmp_path, capsys, no_weights):
    """Only a text target is read as a span whose earlier tokens are held fixed; ``y[1:2]`` with
    ``fixed nothing`` leaves y[1], an input to y[2], uncovered."""
    body = ("    score log p(y[1:2] | x)\n    fixed nothing\n    explain y[1:2]\n    eligible x\n"
            "    process autoregressive")
    rc, err, f = check(tmp_path, contract(f'"{STORIES}"', body), capsys)
    assert rc == 1 and "invalid contract[coverage]: input tokens 'p' are neither eligible nor held fixed" in err


def test_a_multi_token_text_target_is_its_span_with_the_score_summed(tmp_path):
    """``target = "park"`` on stories260k is 'p', 'ar', 'k': all three are O, 'p' and 'ar' are held
    fixed, and S is the sum of the three teacher-forced log-probabilities (computed here directly)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scopecheck.engine.run import run

    res = run(contract(f'"{STORIES}"', '    use prompt_conditioned(target = "park")'), device="cpu")
    tok = AutoTokenizer.from_pretrained(str(STORIES), trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(str(STORIES), trust_remote_code=False, dtype=torch.float32).eval()
    p_ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
    o_ids = tok("park", add_special_tokens=False)["input_ids"]
    assert len(o_ids) == 3                                  # the premise: the tokenizer splits the word
    ids = [tok.bos_token_id] + p_ids + o_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    first = 1 + len(p_ids)
    expected = sum(float(logp[q - 1, ids[q]]) for q in range(first, first + 3))
    assert res.score_input == pytest.approx(expected, abs=1e-4)
    out = [t for t in res.tokens if t.role == "output"]
    assert [t.target for t in out] == [True, True, True]
    assert [t.fixed for t in out] == [True, True, False]
    assert all(t.score == 0 for t in out)                   # not eligible: no attribution
    assert any(re.search(r"the target 'park' is 3 tokens \('p', 'ar', 'k'\): the score is summed", w)
               for w in res.warnings)


def test_attribute_accepts_the_span_and_names_the_callers_keyword_on_an_error():
    """Errors of a contract built by ``scopecheck.attribute`` point at the caller's call and name
    its keyword argument, not a line of the generated contract text."""
    from scopecheck import attribute
    from scopecheck.errors import ContractError

    res = attribute(model=str(STORIES), prompt=PROMPT, output="park", target="park", method="occlusion",
                    device="cpu")
    assert sum(t.target for t in res.tokens) == 3
    line = None
    with pytest.raises(ContractError) as info:
        line = _line() + 1
        attribute(model=str(STORIES), prompt=PROMPT, output="park", target="dog", method="occlusion", device="cpu")
    text = info.value.render()
    assert "<string>" not in text
    assert text.startswith(f"{__file__}:{line}:")
    assert ("attribute(contract='prompt_conditioned', target='dog'): 'dog' does not occur in the output text"
            in text)
    assert "target=\"dog\"" in text.splitlines()[1]         # the caller's source line, shown
    assert "^" * len("target") in text


def _line() -> int:
    import inspect

    return inspect.currentframe().f_back.f_lineno
