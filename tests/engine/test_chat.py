"""Chat prompts: messages rendered by the model's chat template; the template's tokens are held
fixed (never eligible, zero attribution) and listed as such in the result."""

from __future__ import annotations

import json
import shutil

import pytest

from scopecheck.reference import reference_dir
from scopecheck.engine.run import run

TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}assistant :{% endif %}")


@pytest.fixture()
def chat_model(tmp_path):
    d = tmp_path / "chat-model"
    shutil.copytree(reference_dir("translate-ar"), d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = TEMPLATE
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


def contract(model, prompt: str) -> str:
    return (f'contract "chat" {{\n model "{model}"\n prompt {prompt}\n output "Le chien est noir."\n'
            f' use prompt_conditioned(target = "noir")\n method occlusion(operator = zero)\n seed 0\n}}\n')


def test_template_tokens_are_held_fixed_and_listed(chat_model):
    r = run(contract(chat_model, 'chat { system: "Be brief." user: "Translate to French: The dog is black." }'))
    roles = [(t.text, t.role) for t in r.tokens if t.role != "output"]
    prompt = [t for t in r.tokens if t.role == "prompt"]
    assert [t.text for t in prompt] == ["Be", "brief", ".", "Translate", "to", "French", ":", "The", "dog", "is",
                                        "black", "."]
    assert [t.index for t in prompt] == list(range(1, 13))
    template = [t for t in r.tokens if t.role == "special"]
    assert [t.text for t in template] == ["<bos>", "system", ":", "user", ":", "assistant", ":"]
    assert r.special == tuple(t.text for t in template)                      # listed as held fixed
    assert all(t.fixed and not t.eligible and t.score == 0.0 for t in template)
    assert all(t.eligible for t in prompt) and any(t.score != 0 for t in prompt)
    assert r.positions('x["black"]') == [next(t.position for t in prompt if t.text == "black")]
    assert roles[0] == ("<bos>", "special")


def test_no_chat_template_is_a_positioned_error():
    from scopecheck.errors import ContractError

    with pytest.raises(ContractError, match="no chat template") as err:
        run(contract(reference_dir("translate-ar"), 'chat { user: "Translate to French: The dog is black." }'))
    assert err.value.span.line == 3


def test_chat_roles_are_checked():
    from scopecheck.errors import ContractError

    with pytest.raises(ContractError, match="named by their role"):
        run(contract(reference_dir("translate-ar"), 'chat { boss: "hi" }'))


def test_a_plain_prompt_for_a_model_with_a_chat_template_is_warned(chat_model):
    r = run(contract(chat_model, '"Translate to French: The dog is black."'))
    assert any("has a chat template but the prompt is plain text" in w and "prompt chat { user:" in w
               for w in r.warnings), r.warnings
    plain = run(contract(reference_dir("translate-ar"), '"Translate to French: The dog is black."'))
    assert not any("chat template" in w for w in plain.warnings)


def test_declared_special_tokens_written_in_a_prompt_are_held_fixed():
    """``<eos>`` typed into a plain prompt is the tokenizer's declared special token: held fixed,
    listed and exactly zero, and not counted as a prompt token x[i]."""
    r = run(contract(reference_dir("translate-ar"), '"Translate to French: <eos> The dog is black."'))
    eos = [t for t in r.tokens if t.text == "<eos>"]
    assert len(eos) == 1 and eos[0].role == "special" and eos[0].fixed and not eos[0].eligible
    assert eos[0].score == 0.0 and "<eos>" in r.special
    prompt = [t for t in r.tokens if t.role == "prompt"]
    assert [t.index for t in prompt] == list(range(1, len(prompt) + 1))
    assert "<eos>" not in [t.text for t in prompt] and all(t.eligible for t in prompt)
