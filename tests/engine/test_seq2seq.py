"""Encoder–decoder models (tiny random T5 and Marian, built and saved here, loaded through the real
loading path) run as the autoregressive process: x on the encoder side, y on the decoder side.

Every property is checked against an independent computation: the model's own ``forward(labels=...)``
loss and a manual gather of its token-id forward, IG's completeness, brute-force rescoring with a
token replaced or cut from the text, and ``model.generate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import scopecheck
from scopecheck.engine.models import LoadOptions, load
from scopecheck.engine.precision import float64_forward
from scopecheck.engine.seq2seq import ENCODER_DECODER
from scopecheck.errors import Span
from scopecheck.spec import model as m
from tiny_seq2seq import EOS, PAD, build

KINDS = ("t5", "marian", "marian_split", "bart")
PROMPT = "The dog is black ."
OUTPUT = "Le chien est noir ."


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seq2seq")
    return {k: build(k, root / k) for k in KINDS}


def _lm(folder: Path):
    return load(m.ModelRef("path", str(folder), Span()), LoadOptions(device="cpu", dtype="float64"))


def _contract(folder: Path, use: str, method: str, output: str | None = OUTPUT, expects: str = "") -> str:
    out = f"output {json.dumps(output)}" if output is not None else "output generate(greedy, max_new_tokens = 6)"
    name = json.dumps(f"seq2seq {use.split('(')[0]} x {method.split('(')[0]}")
    return (f"contract {name} {{\n model {json.dumps(str(folder))}\n prompt {json.dumps(PROMPT)}\n"
            f" {out}\n use {use}\n method {method}\n seed 0\n{expects}}}\n")


def _run(folder: Path, use: str, method: str, **kw):
    return scopecheck.run(_contract(folder, use, method, **kw), device="cpu", dtype="float64")


def _manual_logprobs(model, enc: list[int], y: list[int]) -> torch.Tensor:
    """log p(y[t] | x, y[<t]) per t from the model's token-id forward, gathered by hand (T,)."""
    start = model.config.decoder_start_token_id
    with torch.no_grad(), float64_forward(model):
        logits = model(input_ids=torch.tensor([enc]), decoder_input_ids=torch.tensor([[start, *y[:-1]]])).logits[0]
    return torch.log_softmax(logits.double(), -1)[torch.arange(len(y)), torch.tensor(y)]


@pytest.mark.parametrize("kind", KINDS)
def test_loads_as_seq2seq_and_the_span_score_is_the_models_own_loss(folders, kind) -> None:
    lm = _lm(folders[kind])
    assert lm.model.config.is_encoder_decoder and lm.family == "autoregressive"
    r = _run(folders[kind], "span_prompt", "gradient_x_input")
    tok = lm.tokenizer
    enc = tok(PROMPT)["input_ids"]
    y = tok(OUTPUT, add_special_tokens=False)["input_ids"]
    assert enc[-1] == EOS and [t.role for t in r.tokens][len(enc)] == "special"     # </s>, then the start token
    assert [t.text for t in r.tokens if t.role == "output"] == OUTPUT.split()
    with torch.no_grad(), float64_forward(lm.model):     # T5's layer norm in float64, as the run computes it
        loss = lm.model(input_ids=torch.tensor([enc]), labels=torch.tensor([y])).loss   # mean NLL over y
    assert r.score_input == pytest.approx(-float(loss) * len(y), rel=1e-10, abs=1e-10)
    assert r.score_input == pytest.approx(float(_manual_logprobs(lm.model, enc, y).sum()), rel=1e-10, abs=1e-10)
    if kind == "t5":                              # T5's RMSNorm (T5LayerNorm) computed in float64, and said so
        assert "T5LayerNorm" in r.precision


@pytest.mark.parametrize("kind", KINDS)
def test_token_score_under_local_next_token_is_the_gathered_logprob(folders, kind) -> None:
    lm = _lm(folders[kind])
    r = _run(folders[kind], 'local_next_token(target = "noir")', "saliency")
    enc = lm.tokenizer(PROMPT)["input_ids"]
    y = lm.tokenizer(OUTPUT, add_special_tokens=False)["input_ids"]
    assert r.score_input == pytest.approx(float(_manual_logprobs(lm.model, enc, y)[3]), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("use", ['prompt_conditioned(target = "noir")', 'local_next_token(target = "noir")',
                                 "span_prompt"])
def test_ig_is_complete_and_zero_outside_E(folders, kind, use) -> None:
    r = _run(folders[kind], use, "integrated_gradients(steps = 64, baseline = pad)")
    gap = sum(r.scores) - (r.score_input - r.score_baseline)
    assert abs(gap) < 1e-8, gap
    outside = [t for t in r.tokens if not t.eligible]
    assert all(t.score == 0.0 for t in outside)
    prefix = [t for t in r.tokens if t.role == "output" and t.text in ("Le", "chien", "est")]
    if use.startswith("local"):                   # y[<t] are decoder-input features, eligible and attributed
        assert all(t.eligible for t in prefix) and any(t.score != 0.0 for t in prefix)
    else:                                         # held fixed on the decoder side: exactly zero
        assert all(not t.eligible and t.score == 0.0 for t in prefix)
    assert any(t.score != 0.0 for t in r.tokens if t.role == "prompt")


def _problem(folder: Path, use: str, output: str | None = OUTPUT):
    from scopecheck.engine.compile import compile_contract
    from scopecheck.loader import load_text
    from scopecheck.spec.validate import resolve

    (contract,) = [d for d in load_text(_contract(folder, use, "occlusion", output=output))
                   if isinstance(d, m.Contract)]
    return compile_contract(contract, resolve(contract), _lm(folder))


def _rescore(model, enc: list[int], y: list[int], t: int) -> float:
    """log p(y[t] | enc, y[<t]) (0-based t) from the model's token-id forward."""
    return float(_manual_logprobs(model, enc, y)[t])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("operator", ["pad", "unk", "delete"])
def test_occlusion_equals_brute_force_rescoring(folders, kind, operator) -> None:
    lm = _lm(folders[kind])
    c = _problem(folders[kind], 'local_next_token(target = "noir")')
    from scopecheck.engine.methods import run_method

    with float64_forward(lm.model):
        out = run_method("occlusion", c.problem, {"operator": operator})
    al = c.alignment
    assert al.split is not None and c.problem.architecture == ENCODER_DECODER
    enc = [t.id for t in al.tokens[: al.split]]
    y = [t.id for t in al.tokens if t.role == "output"]
    t = 3                                                     # "noir"
    full = _rescore(lm.model, enc, y, t)
    sub = {"pad": PAD, "unk": lm.tokenizer.unk_token_id}.get(operator)
    for tok in al.tokens:
        p = tok.position
        if not bool(c.problem.eligible[p]):
            assert float(out.scores[p]) == 0.0
            continue
        if tok.role == "prompt":
            e = list(enc)
            if sub is None:
                del e[p]
            else:
                e[p] = sub
            brute = full - _rescore(lm.model, e, y, t)
        else:                                                 # a decoder-input feature y[j], j < t
            j = tok.index - 1
            yy = list(y)
            if sub is None:
                del yy[j]
                brute = full - _rescore(lm.model, enc, yy, t - 1)
            else:
                yy[j] = sub
                brute = full - _rescore(lm.model, enc, yy, t)
        assert float(out.scores[p]) == pytest.approx(brute, rel=1e-9, abs=1e-10), (tok.text, operator)


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_output_is_model_generate_greedy(folders, kind) -> None:
    lm = _lm(folders[kind])
    c = _problem(folders[kind], "span_prompt", output=None)
    assert c.generated
    enc = lm.tokenizer(PROMPT)["input_ids"]
    with torch.no_grad():
        gen = lm.model.generate(input_ids=torch.tensor([enc]), max_new_tokens=6, do_sample=False)[0].tolist()
    assert gen[0] == lm.model.config.decoder_start_token_id
    want = gen[1:]
    if EOS in want:
        want = want[: want.index(EOS)]
    assert want and [t.id for t in c.alignment.tokens if t.role == "output"] == want


def _sweep_cases() -> list[tuple[str, str]]:
    from scopecheck.engine.catalog import AUTOREGRESSIVE_KINDS, METHODS

    return [(meth, kind) for meth, info in sorted(METHODS.items()) for kind in AUTOREGRESSIVE_KINDS
            if kind in info.supports and meth != "external"]      # external's map is a file: below


SWEEP_PARAMS = {"kernel_shap": "(samples = 32)", "lime": "(samples = 32)", "context_cite": "(samples = 32)",
                "reagent": "(steps = 4)", "integrated_gradients": "(steps = 8)", "heta": "(probes = 2)",
                "captum.integrated_gradients": "(steps = 8)", "inseq.integrated_gradients": "(steps = 8)"}


@pytest.mark.parametrize("method,kind", _sweep_cases())
def test_every_method_runs_on_an_encoder_decoder_or_is_refused_by_the_registry(folders, method, kind) -> None:
    from scopecheck.spec.adapters import BY_NAME, toolkit_version
    from scopecheck.spec.registry import get_method

    if method in BY_NAME and toolkit_version(BY_NAME[method].toolkit) is None \
            and get_method(method).refusal(ENCODER_DECODER) is None:
        pytest.skip(f"{BY_NAME[method].toolkit} is not installed")
    use = kind if kind == "span_prompt" else f'{kind}(target = "noir")'
    why = get_method(method).refusal(ENCODER_DECODER)
    contract = _contract(folders["marian"], use, method + SWEEP_PARAMS.get(method, ""))
    if why is not None:
        with pytest.raises(scopecheck.ContractValidationError) as exc:
            scopecheck.run(contract, device="cpu", dtype="float64")
        assert exc.value.rule == "method" and why in str(exc.value)   # the registry's reason, on the method line
        assert exc.value.span.line == 6
        return
    r = scopecheck.run(contract, device="cpu", dtype="float64")
    assert all(t.score == 0.0 for t in r.tokens if not t.eligible)
    assert any(t.score != 0.0 for t in r.tokens if t.eligible)
    E = {t.role for t in r.tokens if t.eligible}
    assert E == ({"prompt", "output"} if kind == "local_next_token" else {"prompt"})


# one expectation per check of the registry (snapshot compares with a stored file: tests/checks); thresholds no
# model could miss, so the run passes exactly when every check ran on the encoder–decoder
CHECK_EXPECTS = {
    "deletion": "deletion(operator = pad).aopc > -1000000", "insertion": "insertion(operator = pad).aopc > -1000000",
    "comprehensiveness": "comprehensiveness(operator = pad, k = 0.2).value > -1000000",
    "sufficiency": "sufficiency(operator = pad, k = 0.2).value > -1000000",
    "aopc": "aopc(operator = pad).aopc > -1000000", "soft_nc": "soft_nc(operator = pad).changed_rate >= 0",
    "soft_ns": "soft_ns(operator = pad).changed_rate >= 0", "infidelity": "infidelity(operator = pad) < 1000000",
    "max_sensitivity": "max_sensitivity(samples = 2) < 1000000", "randomization": "randomization.spearman < 2",
    "completeness": "completeness(tolerance = 0.000001)", "eligibility": "eligibility",
    "ground_truth": 'ground_truth(causal = "black").precision >= 0',
    "dsa": 'dsa(evidence = x["black"], distractor = x["dog"]) > -2',
    "agreement": "agreement(contract = span_prompt).spearman > -2",
}


def test_a_scope_file_on_a_saved_encoder_decoder_runs_every_check_through_the_cli(folders, tmp_path) -> None:
    import jsonschema

    from scopecheck.cli import main
    from scopecheck.report.jsonout import schema_path
    from scopecheck.spec.check_registry import CHECKS

    assert set(CHECK_EXPECTS) == set(CHECKS) - {"snapshot", "conservation"}
    expects = "".join(f" expect {e}\n" for e in CHECK_EXPECTS.values()) + " expect mass(y) == 0\n"
    f = tmp_path / "marian.scope"
    f.write_text(_contract(folders["marian"], 'prompt_conditioned(target = "noir")',
                           "integrated_gradients(steps = 32, baseline = pad)", expects=expects), encoding="utf-8")
    out = tmp_path / "r.json"
    assert main(["run", str(f), "--device", "cpu", "--dtype", "float64", "--json", str(out), "--report", "-"]) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(json.loads(Path(schema_path()).read_text())).validate(doc)
    (run,) = doc["runs"]
    assert all(e["passed"] for e in run["expectations"])
    # the deletion curve, recomputed by brute force: the top-k prompt tokens (the map's order) replaced by
    # pad in the encoder's input, "noir" rescored by the model's token-id forward
    lm = _lm(folders["marian"])
    tokens = run["tokens"]
    split = next(t["position"] for t in tokens if t["role"] == "output") - 1
    enc = lm.tokenizer(PROMPT)["input_ids"]
    assert len(enc) == split
    y = lm.tokenizer(OUTPUT, add_special_tokens=False)["input_ids"]
    order = sorted((t for t in tokens if t["eligible"]), key=lambda t: -t["score"])
    (deletion,) = [c for c in run["checks"] if c["name"] == "deletion" and not c["random"]]
    brute = []
    for k in range(len(order) + 1):
        e = list(enc)
        for t in order[:k]:
            e[t["position"]] = PAD
        brute.append(_rescore(lm.model, e, y, 3))
    assert deletion["curve"] == pytest.approx(brute, rel=1e-9, abs=1e-10)


def test_attnlrp_is_refused_on_an_encoder_decoder_with_the_registrys_reason(folders) -> None:
    with pytest.raises(scopecheck.ContractValidationError, match="Llama-family decoder-only"):
        _run(folders["t5"], 'prompt_conditioned(target = "noir")', "attnlrp")


def test_check_accepts_an_encoder_decoder_from_its_config_and_tokenizer(folders, tmp_path) -> None:
    """Before: preflight refused T5 ("has no causal-LM head transformers can load")."""
    from scopecheck.cli import main
    from scopecheck.engine.preflight import preflight
    from scopecheck.loader import load_text

    text = _contract(folders["t5"], 'local_next_token(target = "noir")', "occlusion")
    (contract,) = [d for d in load_text(text) if isinstance(d, m.Contract)]
    assert preflight(contract) == []
    good = tmp_path / "good.scope"
    good.write_text(text, encoding="utf-8")
    assert main(["check", str(good)]) == 0


def test_a_chat_prompt_on_an_encoder_decoder_is_a_positioned_error(folders) -> None:
    text = (f'contract "chat" {{\n model {json.dumps(str(folders["marian"]))}\n prompt chat {{ user: "The dog is black ." }}\n'
            f' output "Le chien est noir ."\n use span_prompt\n method occlusion\n}}\n')
    with pytest.raises(scopecheck.ContractValidationError) as exc:
        scopecheck.run(text, device="cpu")
    assert exc.value.span.line == 3 and "encoder–decoder" in exc.value.message


def test_a_map_family_on_an_encoder_decoder_is_the_single_target_contracts(folders) -> None:
    """`target = each`: one map per output token, each the contract with `target = k` (computed member by
    member: the shared-forward family path is for one causal stack)."""
    from scopecheck.engine.run import execute, execute_family
    from scopecheck.loader import load_text

    def contract(target: str):
        text = _contract(folders["t5"], f"local_next_token(target = {target})", "gradient_x_input")
        (c,) = [d for d in load_text(text) if isinstance(d, m.Contract)]
        return c

    opts = LoadOptions(device="cpu", dtype="float64")
    members, results = execute_family(contract("each"), opts)
    assert len(results) == len(OUTPUT.split())
    for k, r in enumerate(results, 1):
        single = execute(contract(str(k)), opts)
        assert [t.score for t in r.tokens] == pytest.approx([t.score for t in single.tokens], rel=1e-12, abs=1e-14)
        assert "computed on its own" in r.info["family"]


@pytest.mark.parametrize("change, message", [
    ({"score": "entropy"}, "unknown score"),
    ({"ids": "float"}, "1-D integer tensor"),
    ({"eligible": "int"}, "bool tensor"),
    ({"targets": []}, "at least one target"),
    ({"targets": "twice"}, "duplicate target positions"),
    ({"targets": "encoder"}, "must be an output token, in"),
    ({"targets": "eligible"}, "also eligible"),
    ({"score": "contrastive", "targets": "one"}, "needs an alternative"),
    ({"score": "contrastive", "alternative": 3, "targets": "two"}, "exactly one target"),
    ({"alternative": 3}, "only meaningful for score 'contrastive'"),
    ({"split": 0}, "split 0 must lie in"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_the_encoder_decoder_builder_checks_its_arguments_as_the_causal_one(folders, change, message) -> None:
    """One argument check (``scoring.problem_arguments``) serves both builders: every malformed
    call of ``seq2seq_problem`` is refused, the output range said in decoder positions."""
    from scopecheck.engine.seq2seq import seq2seq_problem

    lm = _lm(folders["t5"])
    ids = torch.tensor([5, 6, 7, 8, 1, 9, 10, 11])                              # encoder [0, 4), decoder [4, 8)
    split, L = 4, 8
    eligible = torch.arange(L) < split
    targets = [6, 7]
    args = {"score": "logprob", "alternative": None}
    args.update({k: v for k, v in change.items() if k in ("score", "alternative", "split")})
    if change.get("ids") == "float":
        ids = ids.double()
    if change.get("eligible") == "int":
        eligible = eligible.long()
    t = change.get("targets", targets)
    targets = {"twice": [6, 6], "encoder": [2], "eligible": [6], "one": [6], "two": [6, 7]}.get(t, t) if isinstance(t, str) else t
    if change.get("targets") == "eligible":
        eligible = eligible.clone()
        eligible[6] = True
    with pytest.raises(ValueError, match=message):
        seq2seq_problem(lm.model, ids, args.pop("split", split), eligible, targets, **args)
    seq2seq_problem(lm.model, torch.tensor([5, 6, 7, 8, 1, 9, 10, 11]), split, torch.arange(L) < split, [6, 7])
