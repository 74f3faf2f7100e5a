"""HETA (seed 004, Algorithm 1, with its low-rank, windowed and layer-sampled variants):
Hessian-Enhanced Token Attribution.

    Attr(x_i -> x_T) = M_T[i] * (beta * S_i + gamma * KL_i)                          (5)

* Gate ``M_T`` (target-conditioned attention-value rollout). For layer ``l`` and head ``h``,
  ``Phi^{(l,h)}(i -> T) = sum_j R_{>l}[T, j] A^{(l,h)}[j, i]``: the flow that enters through
  head ``h`` of layer ``l`` at token ``i`` and reaches the target row ``T`` through the
  rollout ``R_{>l}`` of the layers above (heads averaged, ``0.5 A + 0.5 I`` residual, causal,
  row-normalised; identity above the top layer). It is weighted by
  ``||V_i^{(l,h)} W_O^{(l,h)}||_1`` and normalised to sum to one over all positions (eq. 1).
  ``T`` is the row whose next-token distribution produces the target. When the model's
  attention modules expose no ``v_proj``/``o_proj`` the value norms are taken as 1 (a pure
  rollout gate; ``info['gate']`` says which).
* Curvature ``S_i = E_r ||Pi_i H_T (Pi_i r)||_1`` (eq. 3), ``H_T`` the Hessian of the problem's
  S (log p(x_T | x_<T) for a ``logprob`` score) w.r.t. the input embeddings, ``r`` Rademacher
  on token ``i``'s block. Two estimators (``curvature =``):

  - ``hutchinson`` (default): ``1/m sum_k ||Pi_i H_T (Pi_i r_k)||_1`` with one Hessian-vector
    product per probe. Without a ``probes`` value the count is *adaptive*: 8 probes per
    block, then more for every block whose relative standard error is above ``rse``
    (default 0.10; the count each needs is predicted from ``1/sqrt(m)``), up to ``max_probes``
    (default 256). A block whose S_i is below ``1e-6`` of the largest counts as converged
    (its relative error is meaningless and it cannot move the map). ``probes = m`` fixes the
    count. The standard error of each ``S_i`` is reported (``info['S_se@i']``, the largest
    relative one as ``info['S_rse_max']``, the counts as ``probes_min``/``probes_max``); the
    result warns above 10%.
  - ``lowrank`` (HETA-LR): a randomized range finder (Halko, Martinsson & Tropp 2011) on the
    Hessian restricted to the eligible blocks (of a window, when windowed): ``k = rank``
    Gaussian probes ``Omega``, ``Q = orth(H Omega)``, ``B = Q^T H Q``, so ``H ~ Q B Q^T`` from
    ``2k`` Hessian-vector products whatever the number of blocks; each block ``Q_i B Q_i^T``
    (``d x d``) then gives ``S_i`` by 1,024 Rademacher probes at no model cost. Exact when
    ``rank`` reaches the restricted dimension (tested); otherwise the error is the neglected
    spectrum. ``info['lowrank_residual']`` (``||H Q - Q B||_F / ||H Q||_F`` on the second pass's
    products) measures how much of ``H Q`` leaves the subspace, not the error of S_i (0.0085
    while S_i was 86.5% off: the range finder captures the dominant directions, the per-token
    blocks are what it misses). The error of the reported S_i is bounded instead: for any probe
    ``r``, ``| ||H_ii r||_1 - ||Ĥ_ii r||_1 | <= ||(H_ii - Ĥ_ii) r||_1`` (triangle inequality), so

        |Ŝ_i - S_i| / S_i <= E_r ||(H_ii - Ĥ_ii) r||_1 / E_r ||H_ii r||_1,

    which ``CHECK_PROBES`` Rademacher probes per block, each one exact Hessian-vector product on
    token ``i``'s block, estimate (``info['lowrank_error@i']``, the largest as
    ``info['lowrank_error_max']``; ``CHECK_PROBES`` more products per eligible token and
    window). The result warns when it exceeds 10%.

  Hessian-vector products by double backward (Pearlmutter) under eager attention; if the
  backend cannot differentiate twice, a central difference of gradients (``info['hvp']``).
* Information ``KL_i = KL(P_orig(. | x_<T) || P_masked^{(i)}(. | x_<T))`` (eq. 4) with token
  ``i`` replaced by the first available of the ``mask``, ``unk``, ``pad``, ``zero`` operators.
* Windows (HETA-WIN, ``window = W``, ``stride = s``, default ``W // 2``: 50% overlap): the
  eligible positions are cut into overlapping windows of ``W`` tokens; in each, the gate is
  renormalised to sum to one over the window and, with ``lowrank``, the range finder runs on
  that window's Hessian block; per token the window values are averaged (Algorithm 1, step 4).
  The model always reads the whole input: S_i and KL_i remain the contract's quantities, so
  with ``hutchinson`` a window changes only the gate's normalisation.

* Layer sampling (HETA-LS, ``layers = k``; 0, the default, is every layer): the gate sums
  ``Phi^{(l,h)}`` over the top ``k`` layers only (the rollout starts at ``T`` above the top
  layer and runs down through them), and the curvature is the Hessian of S w.r.t. the residual
  stream entering the lowest of them, token ``i``'s ``d``-block of it, with everything below
  held at the input (``objective.from_layer``): Hessian-vector products differentiate through
  the top ``k`` layers only. The paper does not say which curvature its layer subset keeps;
  this is the reading that saves the work it reports. ``layers = n`` (every layer) reads the
  stream entering the bottom block, a translate of the embeddings, so it is full HETA
  (tested); below ``n`` the S_i are curvatures of a different input and
  ``info['curvature_wrt']`` names it. Combines with both estimators and with windows.

Single target only (the contracts HETA supports explain one next token).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from scopecheck.engine.methods._common import finalize, generator, positions, resolve_params
from scopecheck.runtime.batching import INTERNAL_BATCH, batches
from scopecheck.engine.methods.rollout import layer_transition
from scopecheck.engine.problem import AttributionProblem, MethodOutput
from scopecheck.errors import MethodRefused

Tensor = torch.Tensor
Objective = Callable[[Tensor], Tensor]                                      # (B, L, d) -> (B,)

MASK_PREFERENCE = ("mask", "unk", "pad", "zero")
CURVATURES = ("hutchinson", "lowrank")
#: First round of the adaptive Hutchinson count, and the S_i below which (relative to the largest)
#: a block counts as converged whatever its relative error.
START_PROBES = 8
NEGLIGIBLE = 1e-6
#: Rademacher probes that turn a reconstructed d x d block into S_i (no model calls).
BLOCK_PROBES = 1024
#: Exact block probes per token that estimate the low-rank S_i's error bound (one HVP each).
CHECK_PROBES = 4

def target_gate(atts: list[Tensor], value_norms: list[Tensor] | None, T: int) -> Tensor:
    """``M_T`` ``(L,)``: attention-value flow ending at row ``T``, simplex-normalised."""
    L = atts[0].shape[-1]
    r = torch.zeros(L, dtype=atts[0].dtype, device=atts[0].device)
    r[T] = 1.0                                                               # flow vector above the top layer
    m = torch.zeros_like(r)
    for l in range(len(atts) - 1, -1, -1):                                   # top layer down
        phi = torch.einsum("j,hji->hi", r, atts[l])                          # (H, L): Phi^{(l,h)}(i -> T)
        vn = value_norms[l].to(phi) if value_norms is not None else torch.ones_like(phi)
        m = m + (phi * vn).sum(0)
        r = r @ layer_transition(atts[l], residual=True)                     # R_{>l-1}[T, :]
    return m / m.sum().clamp_min(torch.finfo(m.dtype).tiny)


def _hvp_double_backward(fn: Objective, x: Tensor, vecs: Tensor) -> Tensor:
    """``H v`` of ``fn`` for each ``v`` in ``vecs`` ``(b, L, d)`` at ``x`` ``(L, d)`` -> ``(b, L, d)``."""
    e = x.unsqueeze(0).repeat(vecs.shape[0], 1, 1).requires_grad_(True)
    with torch.enable_grad():
        s = fn(e)
        (g,) = torch.autograd.grad(s.sum(), e, create_graph=True)
        (hv,) = torch.autograd.grad((g * vecs).sum(), e)
    return hv


def _hvp_finite_difference(fn: Objective, x: Tensor, vecs: Tensor) -> Tensor:
    # step sized for float32 round-off at least: some models normalise in float32 internally
    # even when run in float64 (transformers' Llama RMSNorm), which would swamp a smaller step
    unit = max(float(torch.finfo(x.dtype).eps), float(torch.finfo(torch.float32).eps))
    scale = float(x.pow(2).mean().sqrt()) or 1.0                              # typical embedding entry
    eps = unit ** (1.0 / 3.0) * scale
    e = torch.cat([x + eps * vecs, x - eps * vecs]).detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(fn(e).sum(), e)
    b = vecs.shape[0]
    return (g[:b] - g[b:]) / (2.0 * eps)


@dataclass
class _HVP:
    """Hessian-vector products of ``fn`` (S as a function of ``(B, L, d)`` inputs -> ``(B,)``: the
    problem's objective, or S from an inner layer's stream) at ``x`` ``(L, d)``, counted, batched,
    with the central-difference fallback: ``(b, L, d)`` directions -> ``(b, L, d)``."""

    fn: Objective
    x: Tensor
    progress: bool = False
    mode: str = "double_backward"
    count: int = 0

    def __call__(self, vecs: Tensor, desc: str = "heta hvp") -> Tensor:
        out = []
        for sl in batches(vecs.shape[0], INTERNAL_BATCH, self.progress, desc):
            v = vecs[sl]
            if self.mode == "double_backward":
                try:
                    out.append(_hvp_double_backward(self.fn, self.x, v))
                except (RuntimeError, NotImplementedError):
                    self.mode = "central_difference"
            if self.mode == "central_difference":
                out.append(_hvp_finite_difference(self.fn, self.x, v))
            self.count += v.shape[0]
        return torch.cat(out)


def _block_probe_norms(hvp: _HVP, owners: Tensor, g: torch.Generator) -> Tensor:
    """``||Pi_i H (Pi_i r)||_1`` for one fresh Rademacher probe per entry of ``owners`` (positions)."""
    x = hvp.x
    b, (L, d) = int(owners.numel()), x.shape
    signs = torch.randint(0, 2, (b, d), generator=g).to(x) * 2 - 1                # (b, d)
    vecs = torch.zeros(b, L, d, dtype=x.dtype, device=x.device)
    rows = torch.arange(b, device=x.device)
    vecs[rows, owners] = signs                                                     # Pi_i r_k
    hv = hvp(vecs)
    return hv[rows, owners].abs().sum(-1).double().cpu()                           # (b,)


def _moments(samples: list[list[float]]) -> tuple[Tensor, Tensor]:
    """Mean and standard error of the mean of each sample list ``(M,)``, ``(M,)`` (nan below 2)."""
    mean = torch.tensor([sum(s) / len(s) for s in samples], dtype=torch.float64)
    se = torch.tensor([float(torch.tensor(s, dtype=torch.float64).std(unbiased=True)) / math.sqrt(len(s))
                       if len(s) > 1 else math.nan for s in samples], dtype=torch.float64)
    return mean, se


def hutchinson_sensitivity(hvp: _HVP, pos: Tensor, g: torch.Generator, probes: int | None, rse: float,
                           max_probes: int) -> tuple[Tensor, Tensor, Tensor]:
    """``S_i``, its standard error and the probe count of every position in ``pos`` ``(M,)``.

    ``probes`` fixed, or ``None``: adaptive (see the module docstring)."""
    M = int(pos.numel())
    first = probes if probes is not None else min(START_PROBES, max_probes)
    samples: list[list[float]] = [[] for _ in range(M)]
    todo = {i: first for i in range(M)}
    while todo:
        idx = torch.tensor([i for i, n in todo.items() for _ in range(n)], dtype=torch.long)
        for i, v in zip(idx.tolist(), _block_probe_norms(hvp, pos[idx], g).tolist()):
            samples[i].append(v)
        if probes is not None:
            break
        mean, se = _moments(samples)
        floor = NEGLIGIBLE * float(mean.max()) if M else 0.0
        todo = {}
        for i, s in enumerate(samples):
            m, mu, err = len(s), float(mean[i]), float(se[i])
            if m >= max_probes or mu <= floor or err <= rse * mu:
                continue
            # the 1/sqrt(m) law, 20% to spare (a single probe has no error yet: double it)
            need = 2 * m if math.isnan(err) else math.ceil(1.2 * m * (err / (rse * mu)) ** 2)
            todo[i] = max(1, min(max_probes, max(need, 2 * m)) - m)
    mean, se = _moments(samples)
    return mean, se, torch.tensor([len(s) for s in samples], dtype=torch.long)


def lowrank_blocks(hvp: _HVP, pos: Tensor, rank: int, g: torch.Generator) -> tuple[Tensor, float]:
    """Rank-``rank`` reconstruction of the Hessian restricted to the blocks of ``pos`` ``(m,)``:
    the diagonal blocks ``(m, d, d)`` of ``Q B Q^T`` and the residual ``||HQ - QB|| / ||HQ||``.

    Two passes of ``k = min(rank, m d)`` products: ``Y = H Omega`` (Gaussian ``Omega``), ``Q =
    orth(Y)``, then ``H Q`` and ``B = Q^T H Q`` (symmetrised). Everything is read on the ``pos``
    blocks only, so this is the range finder of that principal submatrix."""
    x = hvp.x
    (L, d), m = x.shape, int(pos.numel())
    n = m * d
    k = min(int(rank), n)

    def products(cols: Tensor) -> Tensor:                                       # (n, k) -> (n, k)
        vecs = torch.zeros(cols.shape[1], L, d, dtype=x.dtype, device=x.device)
        vecs[:, pos] = cols.T.reshape(-1, m, d)
        return hvp(vecs, "heta low-rank hvp")[:, pos].reshape(-1, n).T

    omega = torch.randn(n, k, generator=g, dtype=torch.float64).to(x)            # (n, k)
    Y = products(omega)                                                          # (n, k)
    Q, _ = torch.linalg.qr(Y.double())                                           # (n, k) orthonormal
    Q = Q.to(x)
    HQ = products(Q)                                                             # (n, k)
    B = Q.T @ HQ                                                                 # (k, k)
    B = 0.5 * (B + B.T)
    resid = float((HQ - Q @ B).norm() / HQ.norm().clamp_min(torch.finfo(HQ.dtype).tiny))
    Qb = Q.reshape(m, d, k)                                                      # (m, d, k): Q_i
    blocks = Qb @ B @ Qb.transpose(1, 2)                                         # (m, d, d): Q_i B Q_i^T
    return blocks, resid


def block_sensitivity(blocks: Tensor, g: torch.Generator, probes: int = BLOCK_PROBES) -> tuple[Tensor, Tensor]:
    """``E_r ||H_ii r||_1`` and its standard error from explicit blocks ``(m, d, d)``: Rademacher
    probes, no model calls -> ``(m,)``, ``(m,)``."""
    d = blocks.shape[-1]
    R = (torch.randint(0, 2, (d, probes), generator=g) * 2 - 1).to(torch.float64)  # (d, probes)
    v = (blocks.double().cpu() @ R).abs().sum(1)                                 # (m, probes)
    return v.mean(1), v.std(1, unbiased=True) / math.sqrt(probes)


def lowrank_error(hvp: _HVP, pos: Tensor, blocks: Tensor, g: torch.Generator,
                  probes: int = CHECK_PROBES) -> tuple[Tensor, Tensor]:
    """The error bound of the S_i that ``blocks`` ``(m, d, d)`` (approximate ``H_ii`` of the
    positions ``pos`` ``(m,)``) give: per block, ``probes`` Rademacher probes ``r`` with one exact
    product ``Pi_i H (Pi_i r)`` each. Returns the sample means of ``||(H_ii - Ĥ_ii) r||_1`` and of
    ``||H_ii r||_1`` ``(m,)``, ``(m,)``; their ratio bounds ``|Ŝ_i - S_i| / S_i`` in expectation."""
    x = hvp.x
    (L, d), m = x.shape, int(pos.numel())
    owners = torch.arange(m).repeat_interleave(probes)                             # (m p,) block of each probe
    signs = (torch.randint(0, 2, (m * probes, d), generator=g) * 2 - 1).to(torch.float64)  # (m p, d)
    vecs = torch.zeros(m * probes, L, d, dtype=x.dtype, device=x.device)
    rows = torch.arange(m * probes, device=x.device)
    vecs[rows, pos[owners].to(x.device)] = signs.to(x)
    exact = hvp(vecs, "heta low-rank check")[rows, pos[owners].to(x.device)].double().cpu()   # (m p, d)
    approx = torch.einsum("bij,bj->bi", blocks.double().cpu()[owners], signs)     # (m p, d)
    err = (exact - approx).abs().sum(-1).view(m, probes).mean(1)                 # (m,)
    size = exact.abs().sum(-1).view(m, probes).mean(1)                           # (m,)
    return err, size


def windows(m: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Overlapping ``[a, b)`` windows of ``size`` covering ``range(m)``, ``stride`` apart (the last
    one ends at ``m``); one window when ``size`` is 0 or covers everything."""
    if size <= 0 or size >= m:
        return [(0, m)]
    starts = list(range(0, m - size + 1, max(1, stride)))
    if starts[-1] + size < m:
        starts.append(m - size)
    return [(a, a + size) for a in starts]


def heta(problem: AttributionProblem, params: Mapping[str, object]) -> MethodOutput:
    p = resolve_params("heta", params)
    beta, gamma = float(p["beta"]), float(p["gamma"])                          # type: ignore[arg-type]
    probes = None if p["probes"] is None else int(p["probes"])                  # type: ignore[call-overload]
    rse, max_probes = float(p["rse"]), int(p["max_probes"])                    # type: ignore[arg-type]
    curvature, rank = str(p["curvature"]), int(p["rank"])                       # type: ignore[arg-type]
    size = int(p["window"])                                                      # type: ignore[arg-type]
    top = int(p["layers"])                                                       # type: ignore[arg-type]
    stride = int(p["stride"]) or max(1, size // 2)                               # type: ignore[arg-type]
    if beta < 0 or gamma < 0:
        raise MethodRefused(f"heta: beta and gamma must be >= 0, got beta={beta}, gamma={gamma}")
    if curvature not in CURVATURES:
        raise MethodRefused(f"heta: curvature must be one of {', '.join(CURVATURES)}, got {curvature!r}")
    if not 0 < rse < 1 or max_probes < 2 or rank < 1 or size < 0 or stride < 0 or top < 0:
        raise MethodRefused(f"heta: need 0 < rse < 1, max_probes >= 2, rank >= 1, window >= 0, stride >= 0, "
                            f"layers >= 0 (got rse={rse}, max_probes={max_probes}, rank={rank}, window={size}, "
                            f"stride={stride}, layers={top})")
    if len(problem.target_rows) != 1:
        raise MethodRefused(f"heta explains a single next token; this problem has {len(problem.target_rows)} targets")
    if problem.attentions is None or problem.logprobs is None:
        raise MethodRefused("heta needs attention probabilities and target log-probs")
    T = problem.target_rows[0]
    x = problem.embeds                                                        # (L, d)
    L, d = x.shape
    pos = positions(problem)                                                  # (M,) eligible, ascending
    M = int(pos.numel())
    progress = bool(p["_progress"])
    wins = windows(M, size, stride)

    # (1) gate, renormalised per window and averaged over the windows holding each token
    with_norms = getattr(problem.attentions, "with_value_norms", None)
    if with_norms is not None:
        atts, vnorms = with_norms(x)
    else:
        atts, vnorms = problem.attentions(x), None
    n_layers = len(atts)
    if top > n_layers:
        raise MethodRefused(f"heta: layers = {top} exceeds the model's {n_layers} layers")
    low = n_layers - top if top else 0                                         # first layer in L_sub
    gate = target_gate(atts[low:], vnorms[low:] if vnorms is not None else None, T)  # (L,)
    gate_e = gate[pos].double().cpu()                                         # (M,)
    covered = torch.zeros(M, dtype=torch.float64)                             # (M,) windows holding each token
    for a, b in wins:
        covered[a:b] += 1
    if len(wins) > 1:
        acc = torch.zeros(M, dtype=torch.float64)
        for a, b in wins:
            acc[a:b] += gate_e[a:b] / gate_e[a:b].sum().clamp_min(1e-300)
        gate_e = acc / covered

    # (2) curvature
    g = generator(p["_seed"])
    sens = torch.zeros(M, dtype=torch.float64)
    sens_se = torch.zeros(M, dtype=torch.float64)
    counts = torch.zeros(M, dtype=torch.long)
    hvp = _HVP(problem.objective, x, progress)
    resid = 0.0
    lr_err = torch.zeros(M, dtype=torch.float64)
    if beta > 0 and M > 0:
        ctx = getattr(problem.objective, "eager_attention", None)
        with (ctx() if callable(ctx) else contextlib.nullcontext()):
            if top:                                                            # HETA-LS: S from block `low`'s stream
                from_layer = getattr(problem.objective, "from_layer", None)
                if from_layer is None:
                    raise MethodRefused("heta: layers needs an objective that reads S from an inner layer "
                                        "(objective.from_layer); build the problem with causal_lm_problem")
                h, fn = from_layer(low, x)                                     # (L', d), (B, L', d) -> (B,)
                hvp = _HVP(fn, h.to(x), progress)
            if curvature == "hutchinson":
                sens, sens_se, counts = hutchinson_sensitivity(hvp, pos, g, probes, rse, max_probes)
            else:
                acc_s = torch.zeros(M, dtype=torch.float64)
                acc_se = torch.zeros(M, dtype=torch.float64)
                err = torch.zeros(M, dtype=torch.float64)                      # E ||(H_ii - Ĥ_ii) r||_1
                size_h = torch.zeros(M, dtype=torch.float64)                   # E ||H_ii r||_1
                for a, b in wins:
                    blocks, r = lowrank_blocks(hvp, pos[a:b], rank, g)
                    s_w, se_w = block_sensitivity(blocks, g)
                    e_w, h_w = lowrank_error(hvp, pos[a:b], blocks, g)
                    acc_s[a:b] += s_w
                    acc_se[a:b] += se_w
                    err[a:b] += e_w
                    size_h[a:b] += h_w
                    resid = max(resid, r)
                sens, sens_se = acc_s / covered, acc_se / covered
                # the averaged S_i is off by at most the average of the windows' errors
                lr_err = err / size_h.clamp_min(1e-300)                        # (M,)
                lr_err = torch.where(size_h <= NEGLIGIBLE * float(size_h.max()), torch.zeros_like(lr_err), lr_err)

    # (3) information: KL of the target distribution when token i is masked
    kl = torch.zeros(M, dtype=torch.float64)
    op = next((o for o in MASK_PREFERENCE if o in problem.operators), None)
    if gamma > 0 and M > 0:
        if op is None:
            raise MethodRefused("heta: no masking operator available (mask, unk, pad or zero)")
        with torch.no_grad():
            lp0 = problem.logprobs(x.unsqueeze(0))[0, 0].double()             # (V,)
            drop = torch.zeros(M, L, dtype=torch.bool, device=x.device)
            drop[torch.arange(M, device=x.device), pos] = True
            out = []
            for sl in batches(M, INTERNAL_BATCH, progress, "heta kl"):
                e, keep = problem.replace(op, drop[sl])
                lpm = problem.logprobs(e, keep)[:, 0].double()                # (b, V)
                out.append((lp0.exp() * (lp0 - lpm)).sum(-1).cpu())
            kl = torch.cat(out)

    attr = gate_e * (beta * sens + gamma * kl)                                 # (M,)
    scores = torch.zeros(L, dtype=x.dtype, device=x.device)
    scores[pos] = attr.to(scores)
    with torch.no_grad():
        s_in = float(problem.objective(x.unsqueeze(0))[0])
    info: dict[str, object] = {
        "score_input": s_in, "beta": beta, "gamma": gamma, "curvature": curvature, "hvp": hvp.mode,
        "hvps": hvp.count, "window": size if len(wins) > 1 else 0, "windows": len(wins),
        "layers": f"top {top} of {n_layers}" if top else f"all {n_layers}",
        "curvature_wrt": f"residual stream entering layer {low}" if top else "input embeddings",
        "gate": "attention-value rollout" if vnorms is not None else "attention rollout (value norms unavailable)",
        "gate_mass_eligible": float(gate[pos].double().sum()), "kl_operator": op or "none", "target_row": T,
    }
    if len(wins) > 1:
        info["stride"] = stride
    if beta > 0 and M > 0:
        rel = sens_se / sens.clamp_min(1e-300)                                 # (M,) relative standard errors
        if curvature == "hutchinson":
            floor = NEGLIGIBLE * float(sens.max())
            rel = torch.where(sens <= floor, torch.zeros_like(rel), rel)
            info.update({f"S_se@{int(i)}": float(v) for i, v in zip(pos.tolist(), sens_se)})
            info.update({"probes": probes if probes is not None else "auto", "probes_min": int(counts.min()),
                         "probes_max": int(counts.max()), "rse_target": rse if probes is None else None})
            info["S_rse_max"] = float(torch.nan_to_num(rel, nan=math.inf).max())
        else:
            info.update({"rank": rank, "lowrank_residual": resid, "S_rse_max": float(rel.max()),
                         "lowrank_error_max": float(lr_err.max()), "lowrank_check_probes": CHECK_PROBES})
            info.update({f"lowrank_error@{int(i)}": float(v) for i, v in zip(pos.tolist(), lr_err)})
    else:
        info["S_rse_max"] = 0.0
    return finalize(problem, scores, {k: v for k, v in info.items() if v is not None})
