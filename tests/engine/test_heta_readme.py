"""The HETA table on translate-ar (docs/performance.md) (Figure 1, 12 tokens), pinned against an independent
exact computation (issue 23: every number the README states about a shipped model).

The reference below never touches scopecheck's HETA, scoring or precision code: the 2-layer
Llama of ``reference:translate-ar`` is re-implemented in plain float64 torch from its
safetensors weights and config (RMSNorm, default rotary embedding, causal softmax attention,
SwiGLU MLP, tied head; checked against the transformers model), and from it

* the score ``S(x) = log p("noir" | x_<T)`` as a function of the input embeddings ``x`` ``(L, d)``;
* each eligible token's exact ``d x d`` Hessian block ``H_ii`` (``torch.func.hessian`` of S in
  ``x_i`` alone, the other rows fixed: forward-over-reverse, no Hessian-vector product code);
* the exact block sensitivity ``S_i = E_r ||H_ii r||_1`` (seed 004, eq. 3; ``r`` Rademacher):
  ``E_r ||H r||_1 = sum_k E_r |h_k . r|`` over the rows ``h_k`` of the block, and for a
  Rademacher sum ``E|a . r| = (2 / pi) int_0^inf (1 - prod_j cos(a_j t)) / t^2 dt`` (the
  characteristic-function formula for ``E|X|``), integrated numerically (halving the step and
  tripling the range moves the 12 S_i by < 1e-14 relative; checked here against brute-force
  enumeration of all ``2^20`` sign vectors), so no probe noise is left in the reference;
* the gate ``M_T`` (eq. 1: attention-value flow into the target row ``T``, rollout of the layers
  above with ``0.5 A + 0.5 I``, weighted by ``||V_i^{(l,h)} W_O^{(l,h)}||_1``, simplex-normalised)
  and ``KL_i`` (eq. 4: token ``i`` replaced by the ``<mask>`` embedding, the first of the
  ``mask, unk, pad, zero`` operators the model has);
* full HETA ``M_T[i] (0.5 S_i + 0.5 KL_i)`` (eq. 5, beta = gamma = 0.5).

Each README row's variant then runs through a contract (``scopecheck.run``, float64, seed 0),
and its max relative error of S_i (from the same variant with ``gamma = 0``: ``Attr / (0.5
M_T)``), its Spearman correlation with full HETA, its top-1 agreement and its Hessian-vector
product count are compared with the numbers read out of that README row. Every variant is
deterministic given the seed, so the stated 3 significant digits must be met. (Measured: the
README's first figures for the adaptive and 8-probe errors, 0.164 and 0.328, were against a
16,384-probe estimate of S_i, 0.5% noisy; exact, 0.161 and 0.326. Its HETA-LS Spearman figures
came from the benchmark's problem with the ``unk`` operator where a contract takes ``mask``.) The row's
seconds and speed-up are wall-clock figures and are not asserted; the stories260k rows are
benchmark output (``benchmarks/heta_measure.py``), too expensive for the suite.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

import scopecheck
from scopecheck.reference import reference_dir
from tests._docs import page_with, text as docs_text

ROOT = Path(__file__).resolve().parents[2]
PROMPT, OUTPUT, TARGET = "Translate to French: The dog is black.", "Le chien est noir", "noir"
CASE = "translate-ar, Figure 1 (12 tokens)"

#: README variant label -> the contract's method parameters (those of benchmarks/heta_measure.py)
VARIANTS: dict[str, str] = {
    "adaptive Hutchinson (rse 0.1, default)": "",
    "probes = 8 (old default)": "probes = 8",
    "lowrank, rank 16": "curvature = lowrank, rank = 16",
    "lowrank, rank 64": "curvature = lowrank, rank = 64",
    "window 8": "window = 8",
    "lowrank 64 + window 8": "curvature = lowrank, rank = 64, window = 8",
    "HETA-LS, top 1 layer of 2": "layers = 1",
    "HETA-LS, top 2 of 2 (every layer)": "layers = 2",
    "HETA-LS top 1 + lowrank 64": "layers = 1, curvature = lowrank, rank = 64",
}


# ------------------------------------------------------------------------------ the README rows


def readme_rows(case: str) -> dict[str, list[str]]:
    """The HETA table's rows of ``case`` (the row naming it and the rows below it with an empty
    case cell): variant label -> the cells after it (s, HVPs, speed-up, max rel. error, Spearman,
    same top-1)."""
    head = "| case | variant | s | HVPs | speed-up | max rel. error of S_i | Spearman with full | same top-1 |"
    text = page_with(head).read_text(encoding="utf-8")          # docs/performance.md
    assert text.count(head) == 1, "the HETA table header moved"
    lines = text[text.index(head):].splitlines()[2:]
    rows: dict[str, list[str]] = {}
    inside = False
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0]:
            inside = cells[0] == case
        if inside:
            rows[cells[1]] = cells[2:]
    assert rows, f"no README HETA rows for {case!r}"
    return rows


# ------------------------------------------------------------------------------ plain-torch model


@lru_cache(maxsize=1)
def _weights() -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    d = reference_dir("translate-ar")
    cfg = json.loads((d / "config.json").read_text())
    w = {k: v.to(torch.float64) for k, v in load_file(str(d / "model.safetensors")).items()}
    if "lm_head.weight" not in w:                                              # tied head
        w["lm_head.weight"] = w["model.embed_tokens.weight"]
    return cfg, w


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def forward(x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Logits ``(L, V)``, attention probabilities ``[(H, L, L)]`` and ``||V_i^{(l,h)}
    W_O^{(l,h)}||_1`` ``[(H, L)]`` per layer of the model at input embeddings ``x`` ``(L, d)``."""
    cfg, w = _weights()
    L, d = x.shape
    H, hd, eps = cfg["num_attention_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    theta = cfg["rope_parameters"]["rope_theta"]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)      # (hd/2,)
    ang = torch.arange(L, dtype=torch.float64)[:, None] * inv[None, :]          # (L, hd/2)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()  # (L, hd)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    atts, vnorms = [], []
    h = x
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        a = _rms(h, w[p + "input_layernorm.weight"], eps)
        q = (a @ w[p + "self_attn.q_proj.weight"].T).view(L, H, hd).transpose(0, 1)   # (H, L, hd)
        k = (a @ w[p + "self_attn.k_proj.weight"].T).view(L, H, hd).transpose(0, 1)
        v = (a @ w[p + "self_attn.v_proj.weight"].T).view(L, H, hd).transpose(0, 1)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        logits = (q @ k.transpose(1, 2)) / math.sqrt(hd)                          # (H, L, L)
        att = torch.softmax(logits.masked_fill(~causal, -math.inf), dim=-1)
        wo = w[p + "self_attn.o_proj.weight"]                                     # (d, H hd)
        h = h + (att @ v).transpose(0, 1).reshape(L, H * hd) @ wo.T
        atts.append(att)
        vnorms.append(torch.einsum("hlk,dhk->hld", v, wo.view(d, H, hd)).abs().sum(-1))  # (H, L)
        a = _rms(h, w[p + "post_attention_layernorm.weight"], eps)
        gate = a @ w[p + "mlp.gate_proj.weight"].T
        h = h + (torch.nn.functional.silu(gate) * (a @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    h = _rms(h, w["model.norm.weight"], eps)
    return h @ w["lm_head.weight"].T, atts, vnorms


# ------------------------------------------------------------------------------ exact E|a . r|


def rademacher_abs_mean(a: torch.Tensor, grid: int = 8_000, span: float = 40.0) -> torch.Tensor:
    """``E_r |a_k . r|`` for each row ``a_k`` of ``a`` ``(n, d)``, ``r`` uniform on ``{-1, 1}^d``.

    ``E|X| = (2 / pi) int_0^inf (1 - phi(t)) / t^2 dt`` with ``phi(t) = prod_j cos(a_j t)``; in
    ``u = ||a||_2 t`` it is ``||a||_2 (2 / pi) int_0^inf (1 - phi(u / ||a||_2)) / u^2 du``.
    Simpson on ``[0, span]`` (the integrand is ``1/2`` at 0, ``1 - phi`` by ``expm1`` of the
    summed ``log cos`` below ``u = 1`` where every cosine is positive), and ``1 / span`` for the
    rest, where ``phi`` has died out (the Rademacher sum is far from lattice-like)."""
    a = a.to(torch.float64)
    sigma = a.norm(dim=1, keepdim=True)                                          # (n, 1)
    c = a / sigma.clamp_min(1e-300)                                              # (n, d), ||c_k|| = 1
    u = torch.linspace(0.0, span, grid + 1, dtype=torch.float64)[1:]             # (N,), grid even
    vals = []
    for ck in c:
        x = u[:, None] * ck[None, :]                                             # (N, d)
        small = u < 1.0
        one_minus = torch.empty_like(u)
        s2 = torch.sin(0.5 * x[small]).pow(2)
        one_minus[small] = -torch.expm1(torch.log1p(-2.0 * s2).sum(-1))
        one_minus[~small] = 1.0 - torch.cos(x[~small]).prod(-1)
        f = torch.cat([torch.tensor([0.5], dtype=torch.float64), one_minus / u.pow(2)])  # (N + 1,)
        h = span / grid
        simpson = h / 3.0 * (f[0] + f[-1] + 4.0 * f[1:-1:2].sum() + 2.0 * f[2:-1:2].sum())
        vals.append(simpson + 1.0 / span)
    return sigma[:, 0] * (2.0 / math.pi) * torch.stack(vals)


def test_rademacher_abs_mean_matches_brute_force_enumeration():
    """Against all ``2^20`` sign vectors: Gaussian rows and rows shaped like the Figure-1 Hessian
    rows (one entry 0.95 of the row's norm, the rest spread thin). Below ~16 entries the sum is
    lattice-like and ``phi`` does not die out by ``span``; at 20 the tail left is ~1e-6."""
    g = torch.Generator().manual_seed(3)
    d = 20
    a = torch.randn(6, d, generator=g, dtype=torch.float64)
    for k in (0, 1, 2):                                                          # one dominant entry
        a[k, k] = 0.0
        a[k] *= math.sqrt(1 - 0.95 ** 2) / a[k].norm()
        a[k, k] = 0.95
    signs = ((torch.arange(1 << d)[:, None] >> torch.arange(d)) & 1).to(torch.float64) * 2 - 1  # (2^d, d)
    want = (a @ signs.T).abs().mean(1)                                           # (6,)
    torch.testing.assert_close(rademacher_abs_mean(a), want, rtol=1e-5, atol=0.0)


# ------------------------------------------------------------------------------ the reference


@lru_cache(maxsize=None)
def build_reference(operator: str = "mask") -> dict[str, object]:
    """Figure 1's problem and exact full HETA, from the plain-torch model only; ``KL_i`` with
    token ``i`` replaced by the ``operator`` token (``mask``: what a contract on this model uses)."""
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(str(reference_dir("translate-ar")))
    ids = ([tok.bos_token_id] + tok(PROMPT, add_special_tokens=False)["input_ids"]
           + tok(OUTPUT, add_special_tokens=False)["input_ids"])
    assert tok.decode(ids[-1:]).strip() == TARGET
    _, w = _weights()
    emb = w["model.embed_tokens.weight"]                                          # (V, d)
    x = emb[torch.tensor(ids)]                                                    # (L, d)
    L, d = x.shape
    T, target = L - 2, ids[-1]                                                    # row T predicts "noir"
    pos = list(range(1, L - 1))                                                   # prompt + "Le chien est"

    def score(z: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(forward(z)[0][T], -1)[target]

    blocks = []
    for i in pos:
        def s_i(xi: torch.Tensor, i: int = i) -> torch.Tensor:
            return score(torch.cat([x[:i], xi[None], x[i + 1:]]))
        blocks.append(torch.func.hessian(s_i)(x[i]))                              # (d, d): H_ii
    blocks_t = torch.stack(blocks)                                                # (M, d, d)
    sens = rademacher_abs_mean(blocks_t.reshape(-1, d)).view(len(pos), d).sum(1)  # (M,) E ||H_ii r||_1

    with torch.no_grad():
        logits, atts, vnorms = forward(x)
        # gate: flow into row T, rollout of the layers above (heads averaged, 0.5 A + 0.5 I)
        flow = torch.zeros(L, dtype=torch.float64)
        flow[T] = 1.0
        m = torch.zeros(L, dtype=torch.float64)
        for att, vn in zip(reversed(atts), reversed(vnorms)):
            m += (torch.einsum("j,hji->hi", flow, att) * vn).sum(0)
            flow = flow @ (0.5 * att.mean(0) + 0.5 * torch.eye(L, dtype=torch.float64))
        gate = (m / m.sum())[pos]                                                 # (M,)
        # KL of row T's next-token distribution when token i is replaced by <mask>
        lp0 = torch.log_softmax(logits[T], -1)
        kl = []
        for i in pos:
            xm = x.clone()
            xm[i] = emb[getattr(tok, f"{operator}_token_id")]
            lpm = torch.log_softmax(forward(xm)[0][T], -1)
            kl.append(float((lp0.exp() * (lp0 - lpm)).sum()))
    kl_t = torch.tensor(kl, dtype=torch.float64)
    return {"x": x, "pos": pos, "blocks": blocks_t, "S": sens, "gate": gate, "KL": kl_t,
            "full": gate * (0.5 * sens + 0.5 * kl_t), "hvps_exact": len(pos) * d}


@pytest.fixture(scope="module")
def reference() -> dict[str, object]:
    return build_reference("mask")


def test_plain_torch_model_is_the_shipped_model(reference):
    """The re-implementation gives the transformers model's logits (up to its float32 RMSNorm,
    rotary and softmax) and the same target log-prob."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(reference_dir("translate-ar")), dtype=torch.float64, attn_implementation="eager").eval()
    x = reference["x"]
    with torch.no_grad():
        hf = model(inputs_embeds=x[None]).logits[0]
    mine = forward(x)[0]
    assert float((hf - mine).abs().max()) < 1e-5
    assert int(mine[-2].argmax()) == int(hf[-2].argmax())


def test_reference_blocks_are_symmetric_and_the_mc_estimate_agrees(reference):
    blocks, sens = reference["blocks"], reference["S"]
    assert float((blocks - blocks.transpose(1, 2)).abs().max()) < 1e-10 * float(blocks.abs().max())
    # an independent Monte-Carlo estimate of E ||H_ii r||_1 (2^14 probes) within 4 standard errors
    R = (torch.randint(0, 2, (blocks.shape[-1], 1 << 14), generator=torch.Generator().manual_seed(7)) * 2 - 1)
    v = (blocks @ R.to(torch.float64)).abs().sum(1)                               # (M, probes)
    se = v.std(1) / math.sqrt(v.shape[1])
    assert bool(((v.mean(1) - sens).abs() <= 4 * se).all())


def _contract(params: str) -> str:
    method = f"heta({params})" if params else "heta"
    return (f'contract "README HETA row" {{\n model reference:translate-ar\n prompt {json.dumps(PROMPT)}\n'
            f' output {json.dumps(OUTPUT)}\n use local_next_token(target = {json.dumps(TARGET)})\n'
            f' method {method}\n seed 0\n}}\n')


def _run(params: str):
    return scopecheck.run(_contract(params), dtype="float64", device="cpu")


def _number(cell: str) -> float | None:
    return float(cell) if cell else None


def _token_windows(m: int, params: str) -> int:
    """Token-window pairs of ``m`` tokens: windows of ``W`` (``window = W``), ``W // 2`` apart,
    the last ending at ``m``; one window of ``m`` without ``window``."""
    found = re.search(r"window = (\d+)", params)
    if not found or int(found.group(1)) >= m:
        return m
    size = int(found.group(1))
    starts = sorted(set(range(0, m - size + 1, size // 2)) | {m - size})
    return size * len(starts)


def test_readme_exact_blocks_row(reference):
    row = readme_rows(CASE)["exact blocks"]
    assert len(reference["pos"]) == 12                                            # the case's "12 tokens"
    assert int(row[1]) == reference["hvps_exact"]                                 # d products per token
    assert (float(row[3]), float(row[4]), row[5]) == (0.0, 1.0, "yes")


@pytest.mark.parametrize("label", list(VARIANTS))
def test_readme_heta_row_against_the_exact_reference(reference, label):
    row = readme_rows(CASE)[label]
    hvps, err, rho, top = int(row[1]), _number(row[3]), _number(row[4]), row[5]
    pos = reference["pos"]
    params = VARIANTS[label]
    out = _run(params)
    attr = torch.tensor(out.scores, dtype=torch.float64)[pos]                     # (M,)
    assert [out.tokens[i].eligible for i in range(len(out.tokens))].count(True) == len(pos)
    got = {"hvps": int(out.info["hvps"]),
           "rho": float(spearmanr(attr.numpy(), reference["full"].numpy()).statistic),
           "top": "yes" if int(attr.argmax()) == int(reference["full"].argmax()) else "no"}
    if err is not None:
        only_s = _run(", ".join(p for p in (params, "gamma = 0.0") if p))
        s_var = torch.tensor(only_s.scores, dtype=torch.float64)[pos] / (0.5 * reference["gate"])
        got["err"] = float(((s_var - reference["S"]) / reference["S"]).abs().max())
    if "lowrank" in params:
        # the table counts the range finder's products; the error bound's check adds its
        # "N exact Hessian-vector products per token and window" (README) on top
        check = int(re.search(r"(\d+) exact Hessian-vector products per token and window",
                              docs_text()).group(1))
        hvps += check * _token_windows(len(pos), params)
    want = {"hvps": hvps, "rho": f"{rho:.3f}", "top": top}
    have = {"hvps": got["hvps"], "rho": f"{got['rho']:.3f}", "top": got["top"]}
    if err is not None:
        want["err"], have["err"] = f"{err:.3f}", f"{got['err']:.3f}"
    assert have == want, (label, got)
