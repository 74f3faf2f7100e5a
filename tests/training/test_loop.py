"""The training loop both reference recipes share (`scopecheck.training.loop`): the steps, batches,
clipping and logging of `fit`, the prompt-length batching of the held-out evaluation, and a tiny
recipe of each kind trained twice to the same bytes through `save` / `finish` / `check_saved`."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from scopecheck.reference.tasks import generate
from scopecheck.training import loop, train as ar, train_diffusion as td


def test_fit_walks_consecutive_batches_clips_steps_and_logs_the_mean_loss(capsys):
    recipe = SimpleNamespace(name="toy", steps=5, batch_size=3)
    data = list(range(15))                                  # stand-ins for examples: only sliced
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=10.0)      # large steps: clipping matters
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    x = torch.tensor([[3.0, -4.0]])
    seen, losses = [], []

    def loss_of(batch):
        seen.append(list(batch))
        loss = (model(x * len(seen)) ** 2).sum()
        losses.append(float(loss.detach()))
        return loss

    # the same five steps by hand, on a copy
    torch.manual_seed(0)
    ref = torch.nn.Linear(2, 1)
    for i in range(5):
        ref.zero_grad()
        (ref(x * (i + 1)) ** 2).sum().backward()
        grads = [p.grad for p in ref.parameters()]
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        scale = min(1.0, 1.0 / (float(norm) + 1e-6))
        with torch.no_grad():
            for p in ref.parameters():
                p -= 10.0 / (i + 1) * scale * p.grad

    seconds = loop.fit(recipe, model, data, opt, sched, 0.0, loss_of, log_every=2, quiet=False)
    assert seen == [data[i * 3: i * 3 + 3] for i in range(5)]
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)
    logged = [float(m) for m in re.findall(r"loss (\d+\.\d+)", capsys.readouterr().out)]
    assert logged == pytest.approx([round((losses[0] + losses[1]) / 2, 4), round((losses[2] + losses[3]) / 2, 4)],
                                   abs=1e-4)
    assert seconds > 0 and model.training


def test_fit_quiet_prints_nothing(capsys):
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    loop.fit(SimpleNamespace(name="toy", steps=4, batch_size=1), model, [0] * 4, opt, sched, 0.0,
             lambda b: model(torch.ones(1, 1)).sum(), log_every=1, quiet=True)
    assert capsys.readouterr().out == ""


def test_prompt_length_batches_partition_by_length_in_order():
    examples = generate("translate", 40, split="train", seed=3)
    chunks = list(loop.prompt_length_batches(examples, 4))
    assert sorted(map(id, (e for c in chunks for e in c))) == sorted(map(id, examples))
    lengths = [len(c[0].prompt_tokens) for c in chunks]
    assert lengths == sorted(lengths)
    for c in chunks:
        assert 1 <= len(c) <= 4 and len({len(e.prompt_tokens) for e in c}) == 1
        same = [e for e in examples if len(e.prompt_tokens) == len(c[0].prompt_tokens)]
        i = [j for j, e in enumerate(same) if e is c[0]][0]
        assert [id(e) for e in same[i: i + len(c)]] == [id(e) for e in c]


TINY_AR = ar.Recipe("tiny-ar", "translate", hidden_size=16, intermediate_size=32, num_heads=2, steps=4,
                    batch_size=8, warmup=2, eval_examples=12)
TINY_MDLM = td.DiffusionRecipe("tiny-mdlm", "capitals", hidden_size=16, intermediate_size=32, num_layers=1,
                               num_heads=2, steps=4, batch_size=8, warmup=2, response_max=6, default_length=5,
                               eval_examples=12)


@pytest.mark.parametrize("module, recipe, auto, evaluate", [
    (ar, TINY_AR, "AutoModelForCausalLM", lambda m, t, ex: ar.greedy_exact_match(m, t, ex)),
    (td, TINY_MDLM, "AutoModelForMaskedLM", lambda m, t, ex: td.exact_match(m, t, ex, length=5)),
], ids=["autoregressive", "diffusion"])
def test_tiny_recipe_trains_deterministically_and_checks_back(tmp_path: Path, module, recipe, auto, evaluate, capsys):
    results = [module.train(recipe, tmp_path / str(i), quiet=True) for i in range(2)]
    for i, r in enumerate(results):
        weights = (tmp_path / str(i) / "model.safetensors").read_bytes()
        assert r["weights_sha256"] == hashlib.sha256(weights).hexdigest() and r["weights_bytes"] == len(weights)
        assert r["weights_sha256"] in (tmp_path / str(i) / "MODEL_CARD.md").read_text()
        assert list(r)[-4:] == ["train_seconds", "weights_bytes", "weights_sha256", "vocab_size"]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert "WARNING: held-out exact match" in capsys.readouterr().err    # 4 steps learn nothing
    em = loop.check_saved(recipe.name, recipe, tmp_path / "0", 12, auto, evaluate)
    assert em == results[0]["heldout_exact_match"]
    assert f"[{recipe.name}] held-out exact match {em:.4f} on 12 examples" in capsys.readouterr().out
