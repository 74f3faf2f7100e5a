"""Every number the README states about a shipped model, recomputed here (issue 23, last item).

Each test finds its README passage by a unique phrase, reads the number out of it and
recomputes that number independently of the code under test: the reference models are
called directly (``model(input_ids=...)`` / ``inputs_embeds=...``), and integrated gradients,
occlusion, greedy decoding and the masked-diffusion sampler are re-implemented below in plain
torch, so a README sentence, the shipped weights and this recomputation cannot drift apart.
Numbers pinned elsewhere are listed in the module's neighbours' docstrings (ELBO figures:
``tests/engine/test_estimators_exact.py``; AS bounds: ``tests/engine/test_as_reference.py``;
reproducibility: ``tests/engine/test_reproducibility.py``; the engine's own ground-truth
counts: ``tests/engine/test_contracts.py``).
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from scopecheck.engine.reference import REFERENCE_MODELS, generate, reference_dir
from scopecheck.engine.reference.tasks import CAPITALS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NUM = r"(−?[\d,]*\d(?:\.\d+)?)"


# ------------------------------------------------------------------------------ README passages


@lru_cache(maxsize=1)
def _readme() -> str:
    return " ".join(README.read_text(encoding="utf-8").split())      # line breaks do not matter


def readme_numbers(pattern: str) -> list[float]:
    """The numbers a README passage states: ``pattern`` (a regex with ``{n}`` where a number
    stands) must match exactly once; returns the numbers in order (``1,000`` is 1000)."""
    rx = pattern.replace("{n}", NUM)
    found = re.findall(rx, _readme())
    assert len(found) == 1, f"README passage {pattern!r} found {len(found)} times (the README moved?)"
    groups = found[0] if isinstance(found[0], tuple) else (found[0],)
    return [float(g.replace(",", "").replace("−", "-")) for g in groups]


def test_readme_numbers_helper_reads_the_passage():
    assert readme_numbers(r"Held-out greedy exact match: {n} on {n} examples each") == [1.0, 1000.0]
    with pytest.raises(AssertionError, match="found 0 times"):
        readme_numbers(r"a sentence the README does not contain {n}")


# ------------------------------------------------------------------------------ models, plain torch


@lru_cache(maxsize=None)
def _load(name: str, dtype: torch.dtype = torch.float32):
    import transformers

    torch.set_num_threads(1)
    d = str(reference_dir(name))
    cls = (transformers.AutoModelForCausalLM if REFERENCE_MODELS[name].family == "autoregressive"
           else transformers.AutoModelForMaskedLM)
    model = cls.from_pretrained(d, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, transformers.AutoTokenizer.from_pretrained(d)


def _n_params(name: str) -> tuple[int, int]:
    """(parameters, layers) read from the safetensors file and config.json (tied tensors once)."""
    from safetensors import safe_open

    d = reference_dir(name)
    with safe_open(str(d / "model.safetensors"), framework="pt") as fh:
        n = sum(math.prod(fh.get_slice(k).get_shape()) for k in fh.keys())
    cfg = json.loads((d / "config.json").read_text())
    return n, cfg["num_hidden_layers"]


def test_reference_model_sizes():
    """"2-layer Llama models (≈140k parameters ...)", "3-layer BERT masked LM, 365k parameters",
    "(2-layer, 111k)", and the vocabularies and width the AS and Performance passages state."""
    (ar_k,) = readme_numbers(r"are {n}-layer Llama models \(≈\d+k parameters")
    (ar_n,) = readme_numbers(r"Llama models \(≈{n}k parameters, word-level tokenizers\)")
    for name in ("translate-ar", "retrieval-ar"):
        n, layers = _n_params(name)
        assert layers == ar_k and abs(n / 1000 - ar_n) / ar_n < 0.05, (name, n, layers)   # "≈": within 5%
    tl, tn = readme_numbers(r"`reference:translate-mdlm` \({n}-layer BERT masked LM, {n}k parameters\)")
    n, layers = _n_params("translate-mdlm")
    assert (layers, round(n / 1000)) == (tl, tn), (n, layers)
    cl, cn = readme_numbers(r"`reference:capitals-mdlm` \({n}-layer, {n}k\)")
    n, layers = _n_params("capitals-mdlm")
    assert (layers, round(n / 1000)) == (cl, cn), (n, layers)
    vt, vr = readme_numbers(r"\(vocabularies of {n} and {n} tokens, nearly flat posteriors\)")
    pv, pvr, pw = readme_numbers(r"On the reference models \(vocabularies {n} and {n}, width {n}\)")
    for name, v in (("translate-ar", vt), ("retrieval-ar", vr)):
        cfg = json.loads((reference_dir(name) / "config.json").read_text())
        assert cfg["vocab_size"] == v and cfg["hidden_size"] == pw, (name, cfg["vocab_size"], cfg["hidden_size"])
    assert (pv, pvr) == (vt, vr)


def test_capitals_open_question_has_eight_equally_likely_pairs():
    """"... with one of eight equally likely pairs": the open question's answers, counted."""
    words = {"one": 1, "two": 2, "four": 4, "eight": 8, "ten": 10}
    m = re.search(r"with one of (\w+) equally likely pairs", _readme())
    assert m, "the README's capitals passage moved"
    k = words[m.group(1)]
    assert len(CAPITALS) == k
    answers = [e.output_tokens for e in generate("capitals", 4000, seed=7) if "name" in e.prompt_tokens]
    counts = {pair: sum(a[0] == pair[1] and a[2] == pair[0] for a in answers) for pair in CAPITALS}
    n = len(answers)
    # each pair's share within 4 binomial standard deviations of 1/k
    sd = math.sqrt(n * (1 / k) * (1 - 1 / k))
    assert all(abs(c - n / k) < 4 * sd for c in counts.values()), counts
    assert sum(counts.values()) == n


# ------------------------------------------------------------------------------ greedy decoding


def _greedy_plain(model, tok, prompts: list[str], max_new: int) -> list[tuple[str, ...]]:
    """Greedy decoding by hand: a forward over the prompt, then one token at a time over the
    key/value cache, argmax of the last row, until every row has produced ``<eos>``."""
    out: list[tuple[str, ...]] = [()] * len(prompts)
    groups: dict[int, list[int]] = {}
    enc = [tok(p)["input_ids"] for p in prompts]
    for i, ids in enumerate(enc):
        groups.setdefault(len(ids), []).append(i)
    eos = tok.eos_token_id
    import inspect

    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        for idx in groups.values():
            ids = torch.tensor([enc[i] for i in idx])
            o = model(input_ids=ids, use_cache=True)
            gen = []
            for _ in range(max_new):
                nxt = o.logits[:, -1].argmax(-1, keepdim=True)                       # (B, 1)
                gen.append(nxt)
                if bool((torch.cat(gen, 1) == eos).any(-1).all()):
                    break
                o = model(input_ids=nxt, use_cache=True, **{cache_kw: o.past_key_values})
            for i, row in zip(idx, torch.cat(gen, 1).tolist()):
                out[i] = tuple(tok.convert_ids_to_tokens(row[: row.index(eos)])) if eos in row else ("<no eos>",)
    return out


@pytest.mark.parametrize("name", ["translate-ar", "retrieval-ar"])
def test_heldout_greedy_exact_match(name):
    """"Held-out greedy exact match: 1.000 on 1,000 examples each" (the model cards' held-out
    draw, ``seed = 12345``)."""
    em, n = readme_numbers(r"Held-out greedy exact match: {n} on {n} examples each")
    model, tok = _load(name)
    task = REFERENCE_MODELS[name].task
    examples = generate(task, int(n), split="heldout", seed=12345)
    got = _greedy_plain(model, tok, [e.prompt for e in examples], 12)       # longest output: 7 + <eos>
    ok = sum(g == e.output_tokens for g, e in zip(got, examples))
    assert round(ok / n, 3) == em, (name, ok, n)


# ------------------------------------------------------------------------------ the diffusion sampler


def _chain(model, prompt: list[int], R: int, K: int, *, sampler: str = "confidence", force: list[int] | None = None,
           perturb: tuple[int, str] | None = None, gen: torch.Generator | None = None):
    """The masked-diffusion sampler by hand for a batch of one prompt length: ``(B, P)`` prompts.

    Stage ``s = K .. 1`` commits ``ceil(m / s)`` masked slots (``m`` still masked): the most
    confident proposals (argmax, or the forced token), random ones, ...; a stage left masked
    slots to a completion step. ``perturb = (stage, "noop" | "substitute")``. Returns the final
    tokens ``(B, R)``, the chain score of ``force`` (its log-prob at each slot's commit) and, for
    row 0, the slots each stage committed."""
    P = prompt.shape[1]
    B = prompt.shape[0]
    mask_id = model.config.mask_token_id
    tokens = torch.full((B, R), mask_id, dtype=torch.long)
    masked = torch.ones(B, R, dtype=torch.bool)
    score = torch.zeros(B, dtype=torch.float64)
    commits: dict[int, list[int]] = {}
    tt = torch.cat([torch.zeros(B, P, dtype=torch.long), torch.ones(B, R, dtype=torch.long)], 1)
    for s in list(range(K, 0, -1)) + [0]:
        m = masked.sum(-1)
        if s == 0 and int(m.sum()) == 0:
            break
        n = (m + max(s, 1) - 1) // max(s, 1)
        if perturb is not None and perturb == (s, "noop"):
            continue
        with torch.no_grad():
            lp = model(input_ids=torch.cat([prompt, tokens], 1), token_type_ids=tt).logits[:, P:].double().log_softmax(-1)
        cand = torch.tensor(force).expand(B, R) if force is not None else lp.argmax(-1)
        if sampler == "confidence":
            conf = lp.gather(-1, cand.unsqueeze(-1)).squeeze(-1)
        else:
            conf = torch.rand(B, R, generator=gen, dtype=torch.float64)
        if perturb == (s, "substitute"):
            cand = lp.scatter(-1, cand.unsqueeze(-1), float("-inf")).argmax(-1)
        conf = conf.masked_fill(~masked, float("-inf"))
        order = torch.sort(conf, dim=-1, descending=True, stable=True).indices           # ties: leftmost first
        chosen = torch.zeros(B, R, dtype=torch.bool)
        chosen.scatter_(-1, order, torch.arange(R).expand(B, R) < n.unsqueeze(-1))    # the n best per row
        chosen &= masked
        commits[s] = torch.nonzero(chosen[0]).flatten().tolist()
        tokens = torch.where(chosen, cand, tokens)
        masked &= ~chosen
        if force is not None:
            score += (lp.gather(-1, torch.tensor(force).view(1, R, 1).expand(B, R, 1)).squeeze(-1) * chosen).sum(-1)
    return tokens, score, commits


def _diffusion_em(name: str, steps: int, sampler: str, n: int) -> float:
    model, tok = _load(name)
    task = REFERENCE_MODELS[name].task
    R = int(model.config.diffusion_length)
    inv = {i: t for t, i in tok.get_vocab().items()}
    examples = generate(task, n, split="heldout", seed=12345)
    groups: dict[tuple, list] = {}
    for e in examples:
        groups.setdefault(tuple(tok(e.prompt)["input_ids"]), []).append(e)
    ok = 0
    gen = torch.Generator().manual_seed(0)
    by_len: dict[int, list[tuple]] = {}
    for ids in groups:
        by_len.setdefault(len(ids), []).append(ids)
    for prompts in by_len.values():
        out, _, _ = _chain(model, torch.tensor(prompts), R, steps, sampler=sampler, gen=gen)
        for ids, row in zip(prompts, out.tolist()):
            row = row[: row.index(3)] if 3 in row else row                 # <eos> = 3
            toks = tuple(inv[i] for i in row)
            for e in groups[ids]:
                if task == "capitals" and "name" in e.prompt_tokens:
                    ok += len(toks) == 4 and toks[1::2] == (",", ".") and (toks[2], toks[0]) in CAPITALS
                else:
                    ok += toks == e.output_tokens
    return ok / n


def test_diffusion_heldout_exact_match():
    """"Held-out exact match with scopecheck's sampler: 1.000 (translate, 1,000 examples,
    confidence / 8 stages, 4 stages, random remasking); capitals 1.000 at 5 stages and 0.525 at 2
    stages" -- with the sampler written out above (random remasking with its own seed)."""
    em, n, k1, k2 = readme_numbers(r"Held-out exact match with scopecheck's sampler: {n} \(translate, {n} examples, "
                                   r"confidence / {n} stages, {n} stages, random remasking\)")
    c_hi, c_k, c_lo, c_k2 = readme_numbers(r"capitals {n} at {n} stages and {n} at {n} stages, where city and country")
    n = int(n)
    for steps, sampler in ((int(k1), "confidence"), (int(k2), "confidence"), (int(k1), "random")):
        assert round(_diffusion_em("translate-mdlm", steps, sampler, n), 3) == em, (steps, sampler)
    assert round(_diffusion_em("capitals-mdlm", int(c_k), "confidence", n), 3) == c_hi
    assert round(_diffusion_em("capitals-mdlm", int(c_k2), "confidence", n), 3) == c_lo
    assert round(_diffusion_em("capitals-mdlm", int(c_k), "random", n), 3) == c_hi     # the model card's row


def test_stage_effects():
    """"skipping a stage moves the chain score of y by at most 0.003 nats, while substituting the
    article's stage (stage 8, "Le") costs 2.76 nats"; on capitals' open question "skipping the
    stage that committed "Paris" costs 1.98 nats (log 8 = 2.08 ...); skipping a punctuation stage
    costs under 0.01" -- the teacher-forced chain by hand, confidence order, one slot per stage."""
    (noop_max, sub_stage, sub_cost) = readme_numbers(
        r"skipping a stage moves the chain score of `y` by at most {n} nats, while substituting the article's stage "
        r"\(stage {n}, \"Le\"\) costs {n} nats")
    paris, log8, punct = readme_numbers(r"skipping the stage that committed \"Paris\" costs {n} nats \(log 8 = {n}: "
                                        r"city and country are then guessed in parallel\); skipping a punctuation "
                                        r"stage costs under {n}")
    assert round(math.log(8), 2) == log8

    model, tok = _load("translate-mdlm", torch.float64)
    R = int(model.config.diffusion_length)
    x = torch.tensor([tok("Translate to French: The dog is black.")["input_ids"]])
    y = tok("Le chien est noir.", add_special_tokens=False)["input_ids"]
    y = y + [3] * (R - len(y))                                  # <eos> padding to R slots
    tokens, base, commits = _chain(model, x, R, R, force=y)
    assert tokens[0].tolist() == y and commits[int(sub_stage)] == [0]      # stage 8 commits "Le"
    noop = [float(base - _chain(model, x, R, R, force=y, perturb=(s, "noop"))[1]) for s in range(1, R + 1)]
    assert max(abs(v) for v in noop) <= noop_max, noop
    sub = float(base - _chain(model, x, R, R, force=y, perturb=(int(sub_stage), "substitute"))[1])
    assert round(sub, 2) == sub_cost, sub

    model, tok = _load("capitals-mdlm", torch.float64)
    R = int(model.config.diffusion_length)
    x = torch.tensor([tok("Question: name a capital and its country. Answer:")["input_ids"]])
    free, _, _ = _chain(model, x, R, R)                         # output generate(greedy)
    y = free[0].tolist()
    inv = {i: t for t, i in tok.get_vocab().items()}
    _, base, commits = _chain(model, x, R, R, force=y)
    word = {s: inv[y[c[0]]] for s, c in commits.items() if s > 0}
    cost = {s: float(base - _chain(model, x, R, R, force=y, perturb=(s, "noop"))[1]) for s in word}
    (s_paris,) = [s for s, w in word.items() if w == "Paris"]
    assert round(cost[s_paris], 2) == paris, (cost, word)
    puncts = [s for s, w in word.items() if w in (",", ".")]
    assert len(puncts) == 2 and all(abs(cost[s]) < punct for s in puncts), (cost, word)
