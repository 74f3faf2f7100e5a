"""GGUF checkpoints: the real stories260k Llama (SentencePiece vocabulary of 512) written as F32 and
Q8_0 GGUF files here, loaded through scopecheck's loader (transformers' ``gguf_file=``), run under
a real contract and compared with the safetensors original; broken files are positioned errors."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from packaging.version import Version

import scopecheck
from scopecheck.engine import gguf as sg
from scopecheck.engine.models import LoadOptions, load
from scopecheck.errors import ContractError, ContractValidationError
from scopecheck.spec import model as m

gguf = pytest.importorskip("gguf", reason="the gguf package (scopecheck[gguf], in the test extra) is not installed")
pytest.importorskip("accelerate", reason="accelerate (scopecheck[gguf], in the test extra) is not installed")

STORIES = Path(__file__).parents[3] / "shared" / "models" / "stories260k"
pytestmark = pytest.mark.skipif(not (STORIES / "model.safetensors").exists(),
                                reason="the shared stories260k checkpoint is not beside this checkout")
#: below this transformers the loader refuses GGUF (tested on every version by
#: test_transformers_older_than_the_gguf_fix_is_refused); the tests that load a GGUF file need it
OLD_TRANSFORMERS = pytest.mark.skipif(
    Version(transformers.__version__) < Version(sg.GGUF_MIN_TRANSFORMERS),
    reason=f"transformers < {sg.GGUF_MIN_TRANSFORMERS} is refused for GGUF checkpoints")

Q = gguf.GGMLQuantizationType
FILE_TYPE = {Q.F32: gguf.LlamaFileType.ALL_F32, Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0}
LEAF = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _permute(w: np.ndarray, n_head: int, n_kv: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf Q/K row order (rotary halves interleaved per head); the
    loader undoes it, so a wrong permutation here would show up as a different map."""
    if n_head != n_kv:
        n_head = n_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, qtype: "gguf.GGMLQuantizationType") -> Path:
    """stories260k as a llama GGUF file, as llama.cpp's converter writes it: hyperparameters,
    the SentencePiece vocabulary (tokens, scores, types, special ids), ``blk.N.*`` tensors with
    Q/K permuted, the tied output left out; 2-D weights in ``qtype``, norms in F32, and (as
    llama.cpp falls back) F32 for ffn_down, whose rows of 172 are not whole Q8_0 blocks of 32."""
    import sentencepiece as spm
    from safetensors.torch import load_file

    cfg = json.loads((STORIES / "config.json").read_text())
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("stories260k")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(FILE_TYPE[qtype])
    sp = spm.SentencePieceProcessor(model_file=str(STORIES / "tokenizer.model"))
    types = []
    for i in range(sp.vocab_size()):
        t = (gguf.TokenType.UNKNOWN if sp.is_unknown(i) else gguf.TokenType.CONTROL if sp.is_control(i)
             else gguf.TokenType.UNUSED if sp.is_unused(i) else gguf.TokenType.BYTE if sp.is_byte(i)
             else gguf.TokenType.NORMAL)
        types.append(int(t))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([sp.id_to_piece(i) for i in range(sp.vocab_size())])
    w.add_token_scores([sp.get_score(i) for i in range(sp.vocab_size())])
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    for key, t in load_file(str(STORIES / "model.safetensors")).items():
        a = t.float().numpy()
        if key == "lm_head.weight":        # tied to the embedding: llama.cpp writes no output.weight
            continue
        if key == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif key == "model.norm.weight":
            name = "output_norm.weight"
        else:
            _, _, layer, *rest = key.split(".")
            module = ".".join(rest[:-1])
            name = f"blk.{layer}.{LEAF[module]}.weight"
            if module == "self_attn.q_proj":
                a = _permute(a, heads, heads)
            elif module == "self_attn.k_proj":
                a = _permute(a, heads, kv)
        if qtype != Q.F32 and a.ndim == 2 and a.shape[1] % 32 == 0:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gguf")
    return {"F32": write_gguf(d / "stories260k-f32.gguf", Q.F32),
            "Q8_0": write_gguf(d / "stories260k-q8_0.gguf", Q.Q8_0)}


def contract(model: str, method: str = "integrated_gradients(steps = 8)") -> str:
    return (f'contract "gguf" {{\n model {json.dumps(model)}\n prompt "Once upon a time"\n'
            f' output " there was a little"\n use prompt_conditioned(target = "little")\n method {method}\n}}\n')


@pytest.fixture(scope="module")
def original():
    return scopecheck.run(contract(str(STORIES)), device="cpu")


def _json_run(r) -> dict:
    import jsonschema

    from scopecheck.report.jsonout import results_json, schema

    doc = results_json([r])
    jsonschema.Draft202012Validator(schema()).validate(doc)
    return doc["runs"][0]


def _cosine(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(torch.tensor(a, dtype=torch.float64),
                                                       torch.tensor(b, dtype=torch.float64), dim=0))


def test_header_tables_match_the_gguf_package() -> None:
    """The block sizes that decide truncation, and the names reports carry, are llama.cpp's."""
    for qt, (per_block, nbytes) in gguf.GGML_QUANT_SIZES.items():
        assert sg.GGML_TYPES[int(qt)] == (qt.name, per_block, nbytes)
    for ft in gguf.LlamaFileType:
        if ft.name != "GUESSED":
            assert sg.FILE_TYPES[int(ft)] == ft.name.split("_", 1)[1]


@OLD_TRANSFORMERS
def test_f32_gguf_file_gives_the_safetensors_map(files, original) -> None:
    path = files["F32"]
    r = scopecheck.run(contract(str(path)), device="cpu")     # no allow_pickle: GGUF is not pickle
    assert r.model == str(path) and r.dtype == "float32" and r.special == ("<s>",)
    assert [(t.text, t.role, t.eligible) for t in r.tokens] == [(t.text, t.role, t.eligible) for t in original.tokens]
    assert r.output_ids == original.output_ids
    assert max(abs(a - b) for a, b in zip(r.scores, original.scores)) <= 1e-5
    assert max(abs(s) for s in r.scores) > 1e-3                # a real map, not zeros on both sides
    assert _json_run(r)["quantization"] == "F32"
    assert _json_run(original)["quantization"] is None


@OLD_TRANSFORMERS
def test_q8_0_gguf_is_dequantized_and_close_to_the_original(files, original) -> None:
    """Q8_0 stores each block of 32 weights as int8 times one fp16 scale (absmax / 127), so every
    weight moves by about half a step, ~0.4% of its block's largest weight; through five layers
    that perturbs the map by a few percent, not the ranking. Measured on this contract: cosine
    0.9994 with the original map, max difference 0.016 on scores up to 0.35, the same top three.
    Asserted: cosine > 0.99 (ten times the measured distance), the same top-ranked prompt token,
    and a map that differs from the original (the quantized weights were used)."""
    path = files["Q8_0"]
    lm = load(m.ModelRef("path", str(path)), LoadOptions("cpu", "float32"))
    assert lm.quantization == "Q8_0" and lm.dtype == "float32"
    ref = load(m.ModelRef("path", str(STORIES)), LoadOptions("cpu", "float32"))
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                 "model.layers.4.self_attn.k_proj.weight", "model.layers.2.mlp.up_proj.weight"):
        got, want = lm.model.get_parameter(name), ref.model.get_parameter(name)
        assert got.dtype == torch.float32 and got.shape == want.shape
        # rows in blocks of 32: half a step, plus up to 127 steps times the fp16 scale's relative
        # rounding (2^-11); measured at most 0.546 steps. A wrong Q/K row order is tens of steps off.
        step = want.detach().reshape(-1, 32).abs().amax(dim=1, keepdim=True) / 127
        err = (got - want).detach().reshape(-1, 32).abs()
        assert bool((err <= (0.5 + 127 * 2 ** -11) * step + 1e-7).all()), name
        assert float(err.max()) > 0, name
    assert torch.equal(lm.model.get_parameter("model.layers.2.mlp.down_proj.weight"),
                       ref.model.get_parameter("model.layers.2.mlp.down_proj.weight"))   # stored as F32
    r = scopecheck.run(contract(str(path)), device="cpu")
    assert r.output_ids == original.output_ids
    assert _cosine(r.scores, original.scores) > 0.99
    assert r.top(1) == original.top(1)
    assert r.scores != original.scores
    assert _json_run(r)["quantization"] == "Q8_0"


@OLD_TRANSFORMERS
def test_float64_dequantizes_to_float64(files) -> None:
    lm = load(m.ModelRef("path", str(files["Q8_0"])), LoadOptions("cpu", "float64"))
    assert {p.dtype for p in lm.model.parameters()} == {torch.float64}


@OLD_TRANSFORMERS
def test_directory_with_one_gguf_runs_from_the_command_line_without_allow_pickle(files, tmp_path, capsys) -> None:
    from scopecheck.cli import main

    d = tmp_path / "stories-q8"
    d.mkdir()
    shutil.copyfile(files["Q8_0"], d / "model.gguf")
    src = tmp_path / "c.scope"
    src.write_text(contract("./stories-q8", "saliency"), encoding="utf-8")
    out = tmp_path / "r.json"
    assert main(["run", str(src), "--device", "cpu", "--report", "-", "--store", "-", "--json", str(out)]) == 0
    rec = json.loads(out.read_text(encoding="utf-8"))["runs"][0]
    assert rec["status"] == "ran" and rec["error"] is None
    assert rec["model"] == str(d) and rec["quantization"] == "Q8_0" and rec["dtype"] == "float32"
    assert rec["special_held_fixed"] == ["<s>"]
    assert all(math.isfinite(t["score"]) for t in rec["tokens"]) and any(t["score"] != 0 for t in rec["tokens"])


def _scope_file(tmp_path: Path, model: str) -> Path:
    src = tmp_path / "broken.scope"
    src.write_text(contract(model, "saliency"), encoding="utf-8")
    return src


def _error(src: Path) -> ContractError:
    with pytest.raises(ContractError) as exc:
        scopecheck.run(src, device="cpu")
    return exc.value


@pytest.mark.parametrize("case", ["empty", "magic", "truncated", "truncated header", "garbage counts"])
def test_broken_gguf_files_are_positioned_errors(files, tmp_path, case) -> None:
    data = files["F32"].read_bytes()
    body = {"empty": b"", "magic": b"PK\x03\x04" + data[4:], "truncated": data[: len(data) * 2 // 3],
            "truncated header": data[:3000], "garbage counts": data[:8] + b"\xff" * 200}[case]
    (tmp_path / "bad.gguf").write_bytes(body)
    err = _error(_scope_file(tmp_path, "./bad.gguf"))
    assert isinstance(err, ContractValidationError)
    text = str(err)
    assert f"{tmp_path / 'broken.scope'}:2:" in text            # the model statement: file:line:col
    assert err.span.line == 2
    assert {"empty": "bad.gguf is empty (0 bytes)", "magic": "not a GGUF file: it starts with b'PK\\x03\\x04'",
            "truncated": "is truncated: tensor", "truncated header": "is truncated: the file ends at byte 3000 inside",
            "garbage counts": "is truncated or corrupt: the header claims"}[case] \
        in text, text
    assert "allow-pickle" not in text
    # the same file alone in a directory is the same error
    d = tmp_path / "dir"
    d.mkdir()
    shutil.copyfile(tmp_path / "bad.gguf", d / "model.gguf")
    assert "model.gguf is" in str(_error(_scope_file(tmp_path, "./dir")))


def test_directory_and_file_errors(files, tmp_path) -> None:
    err = _error(_scope_file(tmp_path, "./nope.gguf"))
    assert "model file" in str(err) and "does not exist" in str(err) and err.span.line == 2
    d = tmp_path / "two"
    d.mkdir()
    shutil.copyfile(files["F32"], d / "a.gguf")
    shutil.copyfile(files["Q8_0"], d / "b.gguf")
    err = _error(_scope_file(tmp_path, "./two"))
    assert "2 .gguf files (a.gguf, b.gguf)" in str(err) and "name the file" in str(err) and err.span.line == 2
    shutil.copyfile(STORIES / "model.safetensors", d / "model.safetensors")   # safetensors win: no gguf here
    assert "no config.json" in str(_error(_scope_file(tmp_path, "./two")))


def test_missing_gguf_package_is_a_clean_error_naming_the_extra(files, tmp_path, monkeypatch) -> None:
    path = tmp_path / "fresh.gguf"                 # a path no earlier test loaded (loads are cached)
    shutil.copyfile(files["F32"], path)
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    err = _error(_scope_file(tmp_path, "./fresh.gguf"))
    assert "needs the 'gguf' package" in str(err) and "pip install 'scopecheck[gguf]'" in str(err)
    assert err.span.line == 2


def test_transformers_older_than_the_gguf_fix_is_refused(files, tmp_path, monkeypatch) -> None:
    """Before 5.23 transformers builds a GGUF tokenizer that splits words unlike the original (see
    ``GGUF_MIN_TRANSFORMERS``): such a version is a positioned error naming the fix, never a map
    over other tokens."""
    path = tmp_path / "old.gguf"
    shutil.copyfile(files["F32"], path)
    # the module as the loader will import it (some tests re-import transformers, so the one this
    # file imported at collection may no longer be the one in sys.modules)
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "5.22.0")
    err = _error(_scope_file(tmp_path, "./old.gguf"))
    assert "transformers 5.22.0 converts GGUF tokenizers" in str(err) and err.span.line == 2
    assert f"transformers>={sg.GGUF_MIN_TRANSFORMERS}" in str(err)
