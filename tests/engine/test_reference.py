"""The embedded reference tasks and autoregressive reference models."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from scopecheck.reference import (
    REFERENCE_MODELS,
    TASKS,
    Example,
    generate,
    reference_dir,
)
from scopecheck.reference.tasks import figure1_example, split_of, vocabulary

import torch
import transformers

MODELS = sorted(n for n, r in REFERENCE_MODELS.items() if r.family == "autoregressive")  # denoisers: test_diffusion
N_HELDOUT = 300
SPECIALS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>",
            "eos_token": "<eos>", "mask_token": "<mask>"}


@pytest.fixture(scope="module")
def loaded():
    torch.set_num_threads(1)
    cache = {}

    def get(name):
        if name not in cache:
            d = reference_dir(name)
            model = transformers.AutoModelForCausalLM.from_pretrained(str(d))
            model.eval()
            tok = transformers.AutoTokenizer.from_pretrained(str(d))
            cache[name] = (model, tok)
        return cache[name]

    return get


def _greedy(model, tok, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Batched greedy decoding through ``generate``; prompts grouped by length (no padding)."""
    enc = [tok(p)["input_ids"] for p in prompts]
    groups = defaultdict(list)
    for i, ids in enumerate(enc):
        groups[len(ids)].append(i)
    out = [""] * len(prompts)
    with torch.no_grad():
        for _, idx in sorted(groups.items()):
            ids = torch.tensor([enc[i] for i in idx])
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            for i, row in zip(idx, gen[:, ids.shape[1]:].tolist()):
                if tok.eos_token_id not in row:
                    out[i] = "<no eos> " + tok.decode(row)
                else:
                    out[i] = tok.decode(row[: row.index(tok.eos_token_id)])
    return out


# ----------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_heldout_exact_match(name, loaded):
    model, tok = loaded(name)
    task = REFERENCE_MODELS[name].task
    examples = generate(task, N_HELDOUT, split="heldout", seed=2024)
    assert all(split_of(e) == "heldout" for e in examples)
    got = _greedy(model, tok, [e.prompt for e in examples], TASKS[task].max_output_tokens + 2)
    wrong = [(e.prompt, e.output, g) for e, g in zip(examples, got) if g != e.output]
    em = 1 - len(wrong) / len(examples)
    assert em >= 0.99, f"{name}: held-out exact match {em:.3f}; e.g. {wrong[:5]}"


def test_figure1_reproduced(loaded):
    model, tok = loaded("translate-ar")
    prompt = "Translate to French: The dog is black."
    enc = tok(prompt, return_tensors="pt")
    assert enc["input_ids"][0, 0].item() == tok.bos_token_id
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=10, do_sample=False)
    text = tok.decode(gen[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text == "Le chien est noir."
    assert gen[0, -1].item() == tok.eos_token_id


@pytest.mark.parametrize("name", MODELS)
def test_model_files(name, loaded):
    from safetensors import safe_open

    d = reference_dir(name)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "MODEL_CARD.md"):
        assert (d / f).is_file(), f"{name}: missing {f}"
    assert (d / "model.safetensors").stat().st_size < 5_000_000
    with safe_open(str(d / "model.safetensors"), framework="pt") as fh:
        assert all(fh.get_tensor(k).dtype == torch.float32 for k in fh.keys())
    card = (d / "MODEL_CARD.md").read_text()
    assert f"python -m scopecheck.training.train --model {name}" in card
    assert "held-out exact match" in card
    model, tok = loaded(name)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)


# ----------------------------------------------------------------------------------------
# tokenizers
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_tokenizer_special_tokens(name, loaded):
    _, tok = loaded(name)
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    for attr, value in SPECIALS.items():
        assert getattr(tok, attr) == value
    assert [tok.convert_tokens_to_ids(v) for v in SPECIALS.values()] == [0, 1, 2, 3, 4]
    words = vocabulary(REFERENCE_MODELS[name].task)
    assert tok.unk_token_id not in tok.convert_tokens_to_ids(list(words))
    with_bos = tok("Fact: the", add_special_tokens=True, return_offsets_mapping=True)
    without = tok("Fact: the", add_special_tokens=False, return_offsets_mapping=True)
    assert with_bos["input_ids"][0] == tok.bos_token_id
    assert with_bos["input_ids"][1:] == without["input_ids"]
    assert tuple(with_bos["offset_mapping"][0]) == (0, 0)
    assert tok.convert_ids_to_tokens(tok("black.", add_special_tokens=False)["input_ids"])[-1] == "."


@pytest.mark.parametrize("name", MODELS)
def test_tokenizer_alignment(name, loaded):
    _, tok = loaded(name)
    task = REFERENCE_MODELS[name].task
    examples = generate(task, 100, seed=5) + generate(task, 100, split="heldout", seed=5)
    for ex in examples:
        for text, tokens in ((ex.prompt, ex.prompt_tokens), (ex.output, ex.output_tokens)):
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            assert tuple(tok.convert_ids_to_tokens(enc["input_ids"])) == tokens
            assert [text[s:e] for s, e in enc["offset_mapping"]] == list(tokens)
            assert tok.decode(enc["input_ids"]) == text


# ----------------------------------------------------------------------------------------
# tasks
# ----------------------------------------------------------------------------------------

def test_figure1_causal_truth():
    ex = figure1_example()
    assert ex.prompt == "Translate to French: The dog is black."
    assert ex.output == "Le chien est noir."
    assert ex.output_tokens == ("Le", "chien", "est", "noir", ".")
    words = [{ex.prompt_tokens[i] for i in c} for c in ex.causal]
    assert words == [{"dog", "is"}, {"dog", "is"}, {"is", "dog"}, {"black", "dog", "is"}, {"."}]
    assert ex.prompt_tokens[slice(*ex.segments["instruction"])] == ("Translate", "to", "French", ":")
    assert split_of(ex) == "train"
    from scopecheck.reference.tasks import _translate_keys

    assert ("dog", False, False, "black", None) in _translate_keys()["train"]["single"]


def test_translate_agreement_examples():
    from scopecheck.reference.tasks import translate_example

    assert translate_example("dog", "black", plural=True).output == "Les chiens sont noirs."
    assert translate_example("house", "black").output == "La maison est noire."
    assert translate_example("house", "white", plural=True, punct="!").output == "Les maisons sont blanches!"
    ex = translate_example("horse", "old", very=True)
    assert ex.output == "Le cheval est très vieux."
    assert [ex.prompt_tokens[i] for i in ex.causal[3]] == ["very"]
    ex = translate_example("car", "big", adjective2="green")
    assert ex.output == "La voiture est grande et verte."
    assert [sorted(ex.prompt_tokens[i] for i in c) for c in ex.causal] == [
        ["car", "is"], ["car", "is"], ["car", "is"], ["big", "car", "is"], ["and"], ["car", "green", "is"], ["."]]


CONTENT_TASKS = sorted(t for t in TASKS if t != "capitals")   # capitals: test_capitals_task


@pytest.mark.parametrize("task", CONTENT_TASKS)
def test_causal_indices_and_segments(task):
    for ex in generate(task, 300, seed=11) + generate(task, 300, split="heldout", seed=11):
        assert isinstance(ex, Example) and ex.task == task
        n = len(ex.prompt_tokens)
        assert len(ex.causal) == len(ex.output_tokens) >= 1
        assert all(c and all(0 <= i < n for i in c) for c in ex.causal)
        for a, b in ex.segments.values():
            assert 0 <= a < b <= n
        if task == "translate":
            noun = ex.segments["noun"][0]
            assert all(ex.prompt_tokens[i] not in ("Translate", "to", "French", ":", "The")
                       for c in ex.causal for i in c)
            assert ex.causal[0] == ex.causal[1] == (noun, ex.segments["verb"][0])
            assert ex.prompt_tokens[ex.causal[2][0]] in ("is", "are")
            adj = ex.segments["adjective"][0]
            assert ex.causal[3 + ("very" in ex.segments)] == (adj, noun, ex.segments["verb"][0])
            assert ex.prompt_tokens[ex.causal[-1][0]] == ex.output_tokens[-1] in (".", "!")
        else:
            d0, d1 = ex.segments["distractor"]
            e0, e1 = ex.segments["evidence"]
            q0, q1 = ex.segments["question"]
            assert (d0, d1, e1, q1) == (0, e0, q0, n)
            (c,) = ex.causal
            assert c == (ex.segments["fact_color"][0],) and e0 <= c[0] < e1
            assert ex.prompt_tokens[c[0]] == ex.output == ex.output_tokens[0]
            obj = ex.prompt_tokens[ex.segments["query_object"][0]]
            assert obj == ex.prompt_tokens[ex.segments["fact_object"][0]]
            assert obj not in ex.prompt_tokens[d0:d1]
            assert ex.prompt_tokens[q1 - 2:] == ("Answer", ":")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_generation_deterministic(task):
    a = generate(task, 200, split="train", seed=3)
    assert a == generate(task, 200, split="train", seed=3)
    assert a != generate(task, 200, split="train", seed=4)
    assert generate(task, 50, split="heldout", seed=3) == generate(task, 50, split="heldout", seed=3)


@pytest.mark.parametrize("task", CONTENT_TASKS)
def test_train_heldout_disjoint(task):
    train = generate(task, 3000, split="train", seed=1)
    held = generate(task, 1000, split="heldout", seed=1)
    assert {split_of(e) for e in train} == {"train"}
    assert {split_of(e) for e in held} == {"heldout"}
    assert not {e.prompt for e in train} & {e.prompt for e in held}
    if task == "translate":
        # every held-out content is a new (noun, adjective) combination, yet every noun and
        # adjective (with both genders and numbers) is seen in training
        assert {e.prompt_tokens[5] for e in train} == {e.prompt_tokens[5] for e in train + held}
        forms = {ex.output_tokens[3 + ("very" in ex.segments)] for ex in train}
        assert forms >= {ex.output_tokens[3 + ("very" in ex.segments)] for ex in held}


def test_capitals_task():
    """Specific questions: city and country caused by the prompt's country; the open question:
    no prompt token causes which of the eight pairs (the chain chooses), and the pair agrees."""
    from scopecheck.reference.tasks import CAPITALS

    pairs = {(k, c) for c, k in CAPITALS}
    seen_open = seen_specific = 0
    for ex in generate("capitals", 400, seed=3):
        city, comma, country, dot = ex.output_tokens
        assert (city, country) in pairs and (comma, dot) == (",", ".")
        if "name" in ex.prompt_tokens:
            seen_open += 1
            assert ex.causal == ((), (), (), ())
        else:
            seen_specific += 1
            i = ex.segments["country"][0]
            assert ex.prompt_tokens[i] == country and ex.causal == ((i,), (), (i,), ())
    assert seen_open > 100 and seen_specific > 100
    assert {e.output_tokens[0] for e in generate("capitals", 400, seed=3) if "name" in e.prompt_tokens} == \
        {k for _, k in CAPITALS}


def test_unknown_names():
    with pytest.raises(ValueError, match="translate"):
        generate("nope", 1, seed=0)
    with pytest.raises(ValueError, match="heldout"):
        generate("translate", 1, split="test", seed=0)
    with pytest.raises(KeyError, match="translate-ar"):
        reference_dir("nope")


def test_reference_modules_torch_free():
    import scopecheck.reference as ref

    root = Path(ref.__file__).parent
    for f in ("__init__.py", "tasks.py"):
        tree = ast.parse((root / f).read_text())
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("torch", "transformers") for n in names), f
