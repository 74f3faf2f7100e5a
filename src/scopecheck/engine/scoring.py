"""The attributed score S of a Hugging Face causal LM, compiled to an :class:`AttributionProblem`.

:func:`causal_lm_problem` turns a model, a frozen token sequence ``ids`` (prompt and the
generation it is rescored on), the eligible positions E and the target positions O into
the tensors every attribution method consumes.

Teacher forcing: a target at position ``p`` is scored by the logits at the row that
predicts it, ``p - 1`` (or, when positions are deleted, the last kept position before
``p``). Targets are always read at the original, frozen ids: a perturbed input is
*rescored*, never regenerated.

Scores (``score=``):

* ``logprob``      ``sum_t log p(ids[t] | ids[<t])`` over the targets: a token log-prob for
                   one target, the (teacher-forced) span log-prob for several; one forward
                   (and one backward) covers the whole span.
* ``prob``         ``exp`` of the logprob sum.
* ``logit``        sum of the target logits (pre-softmax).
* ``contrastive``  ``log p(target) - log p(alternative)`` at the same row (single target).

Deletion: the objective takes a keep mask ``(B, L)``; a deleted position gets
``attention_mask = 0`` (no query attends to it) and ``position_ids = cumsum(keep) - 1``
so every later token shifts left, exactly as if the token had been cut from the text
(rotary/learned position embeddings see the shortened sequence).

Precision: everything runs in the model's own dtype (float32, float64, ...); nothing is
cast silently.

Beyond the :class:`AttributionProblem` fields, the two callables built here carry extra
entry points that some methods use when present (and degrade without):

* ``problem.logprobs.at_rows(embeds, keep, rows)`` -> ``(B, len(rows), V)``: log-probs of
  the next token at arbitrary rows (needed by ``probabilistic_as`` for ``p(x_i | x_<i)``
  and by ``reagent`` for its replacement proposals).
* ``problem.attentions.with_value_norms(embeds)`` -> ``(attentions, value_norms)`` with
  ``value_norms[l]`` ``(heads, L)`` = ``||V_i^{(l,h)} W_O^{(l,h)}||_1`` (HETA's gate), for
  architectures with ``v_proj``/``o_proj`` attention projections (Llama family).
* ``problem.objective.eager_attention()``: a context manager that switches the model to
  eager attention (double backward through SDPA is not implemented on every backend;
  HETA's Hessian-vector products need it).
* ``problem.objective.from_layer(layer, embeds)`` -> ``(h, fn)``: the residual stream entering
  a decoder block and S as a function of it, the blocks below held fixed (HETA-LS).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch

from scopecheck.engine.embeddings import embedding_operators
from scopecheck.engine.forward import Forward, cache_argument, returned_cache
from scopecheck.engine.problem import AttributionProblem
from scopecheck.engine.vjp import batched_grads, vjps
from scopecheck.errors import MethodRefused

Tensor = torch.Tensor

SCORES: tuple[str, ...] = ("logprob", "prob", "logit", "contrastive")


__all__ = [
    "SCORES",
    "CausalLMAttentions",
    "CausalLMLogProbs",
    "CausalLMFamilyObjective",
    "CausalLMObjective",
    "cache_argument",
    "causal_lm_problem",
    "decoder_blocks",
    "eager_attention",
    "fast_path_notes",
    "problem_arguments",
    "returned_cache",
]


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Temporarily run ``model`` with eager attention (attention probabilities available,
    twice differentiable), restoring the previous implementation afterwards.

    Uses ``model.set_attn_implementation`` where this transformers version offers it
    (>= 4.48 / 5.x read the implementation from the config at call time); otherwise sets
    ``config._attn_implementation`` (older versions fall back to eager by themselves when
    ``output_attentions=True``).
    """
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if config is None or current in (None, "eager"):
        yield
        return
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter("eager")
        try:
            yield
        finally:
            setter(current)
    else:  # pragma: no cover - old transformers
        config._attn_implementation = "eager"
        try:
            yield
        finally:
            config._attn_implementation = current


def _logsumexp_(x: Tensor) -> Tensor:
    """``logsumexp`` over the last dim, overwriting ``x`` (no second vocabulary-sized buffer)."""
    top = x.amax(dim=-1, keepdim=True)                                         # (..., 1)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return x.sub_(top).exp_().sum(-1).log_() + top.squeeze(-1)


def _scoring_rows(rows: Sequence[int], keep: Tensor | None, batch: int, device: torch.device) -> Tensor:
    """Row that produces the next-token distribution after each of ``rows``, per batch.

    Without deletion that is the row itself; when it is deleted, the last kept position at
    or before it (the token that precedes the target in the shortened text). ``(B, n)``.
    """
    r = torch.as_tensor(list(rows), dtype=torch.long, device=device)          # (n,)
    if keep is None:
        return r.unsqueeze(0).expand(batch, -1)
    L = keep.shape[-1]
    pos = torch.arange(L, device=device).unsqueeze(0)                         # (1, L)
    last_kept = torch.where(keep.to(device), pos, torch.full_like(pos, -1)).cummax(dim=-1).values  # (B, L)
    out = last_kept[:, r]                                                       # (B, n)
    if bool((out < 0).any()):
        raise MethodRefused("every position before a target was deleted: the target has no context to be scored from")
    return out


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's stack of decoder blocks, bottom first: the ``ModuleList`` of one block class
    whose length is the configured layer count (``transformer.h`` in GPT-2, ``model.layers`` in
    Llama); ``None`` when there is no such list."""
    cfg = getattr(model, "config", None)
    n = next((getattr(cfg, a) for a in ("num_hidden_layers", "n_layer", "num_layers")
              if isinstance(getattr(cfg, a, None), int)), None)
    for mod in model.modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0 and (n is None or len(mod) == n) \
                and len({type(b) for b in mod}) == 1:
            return mod
    return None


@contextlib.contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """No parameter of ``model`` requires a gradient while the context lasts (restored after)."""
    was = [(q, q.requires_grad) for q in model.parameters()]
    for q, _ in was:
        q.requires_grad_(False)
    try:
        yield
    finally:
        for q, flag in was:
            q.requires_grad_(flag)


# --------------------------------------------------------------------------- callables


class CausalLMObjective:
    """The score S: ``(B, L, d) embeds, (B, L) keep | None -> (B,)`` (differentiable).

    ``clean`` ``(L, d)``: the unperturbed input embeddings, which enables shared-prefix reuse
    for evaluations without gradients (see :class:`~scopecheck.engine.forward.Forward`).
    """

    def __init__(self, model: torch.nn.Module, ids: Tensor, targets: Sequence[int], score: str,
                 alternative: int | None, clean: Tensor | None = None, forward: Any = None) -> None:
        self.model = model
        self.ids = ids                                                          # (L,)
        self.targets = tuple(int(t) for t in targets)                           # target positions
        self.rows = tuple(t - 1 for t in self.targets)                          # rows predicting them
        self.target_ids = ids[list(self.targets)]                               # (n,)
        self.score = score
        self.alternative = alternative
        #: how the model is run: a causal LM's :class:`Forward` unless another architecture's is given
        #: (:class:`scopecheck.engine.seq2seq.Seq2SeqForward`, same interface)
        self.forward = Forward(model, clean) if forward is None else forward

    @property
    def forward_counts(self) -> dict[str, int]:
        """Model calls, batch rows and token positions run so far (for benchmarks)."""
        return self.forward.counts

    def eager_attention(self) -> contextlib.AbstractContextManager[None]:
        return eager_attention(self.model)

    def target_scores(self, embeds: Tensor, keep: Tensor | None = None) -> Tensor:
        """Per-target terms ``(B, n)`` whose sum over targets is the logprob/logit score."""
        if embeds.dim() != 3:
            raise ValueError(f"objective expects embeds of shape (B, L, d), got {tuple(embeds.shape)}")
        B = embeds.shape[0]
        if keep is not None and not bool(keep[:, list(self.targets)].all()):
            raise ValueError("a target position cannot be deleted: targets are rescored at their frozen ids")
        rows = _scoring_rows(self.rows, keep, B, embeds.device)                 # (B, n)
        return self.terms(self.forward(embeds, keep, rows))

    def terms(self, logits: Tensor) -> Tensor:
        """Per-target terms ``(B, n)`` from the logits ``(B, n, V)`` at the scoring rows (without a
        graph the logits are overwritten: the log-softmax normaliser is formed in place)."""
        B = logits.shape[0]
        tgt = self.target_ids.to(logits.device).view(1, -1, 1).expand(B, -1, 1)  # (B, n, 1)
        picked = logits.gather(-1, tgt).squeeze(-1)                             # (B, n)
        if self.score == "logit":
            return picked
        if self.score == "contrastive":                                         # single target
            return picked - logits[:, :, int(self.alternative)]                 # (B, 1), the lse cancels
        if logits.requires_grad:
            return picked - torch.logsumexp(logits, dim=-1)                     # (B, n)
        return picked - _logsumexp_(logits)                                     # no graph: in place

    def combine(self, terms: Tensor) -> Tensor:
        """``(B, n)`` per-target terms (or a subset's) -> the score ``(B,)``."""
        total = terms.sum(-1)
        return total.exp() if self.score == "prob" else total

    def __call__(self, embeds: Tensor, keep: Tensor | None = None) -> Tensor:
        return self.combine(self.target_scores(embeds, keep))

    def from_layer(self, layer: int, embeds: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """S as a function of the residual stream entering decoder block ``layer`` (0 = bottom).

        Returns ``h`` ``(L', d)``, that stream for the input ``embeds`` ``(L, d)`` (cut after the
        last scoring row, ``L' <= L``), and ``fn``: ``(B, L', d) -> (B,)``, S with the stream
        entering block ``layer`` replaced by its argument and everything below held at
        ``embeds`` (no gradient flows into the lower blocks: parameters are frozen during the
        call and the input does not require one). ``fn(h[None])`` is S at ``embeds``. Used by
        HETA-LS (curvature in the top layers only)."""
        blocks = decoder_blocks(self.model)
        if blocks is None:
            raise MethodRefused("this model exposes no stack of decoder blocks (a ModuleList of the configured "
                                "layer count): the score cannot be read from an inner layer")
        if not 0 <= layer < len(blocks):
            raise MethodRefused(f"layer {layer} is outside the model's {len(blocks)} decoder blocks")
        block = blocks[layer]
        rows = torch.tensor([list(self.rows)], device=embeds.device)          # (1, n)
        cut = int(rows.max()) + 1
        stream: list[Tensor] = []

        def capture(_m: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            stream.append((args[0] if args else kwargs["hidden_states"]).detach())

        def run(hook: Callable[..., object], batch: int) -> Tensor:
            e = embeds[:cut].detach().unsqueeze(0).expand(batch, -1, -1)        # (B, L', d)
            handle = block.register_forward_pre_hook(hook, with_kwargs=True)
            try:
                with _frozen(self.model):
                    logits = self.forward.full(e, None, rows.expand(batch, -1))  # (B, n, V); never cached
            finally:
                handle.remove()
            return self.combine(self.terms(logits))                             # (B,)

        def fn(h: Tensor) -> Tensor:                                             # (B, L', d) -> (B,)
            def substitute(_m: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                if args:
                    return (h, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": h}

            return run(substitute, int(h.shape[0]))

        with torch.no_grad():
            run(capture, 1)
        return stream[0][0], fn


class CausalLMFamilyObjective:
    """A family of scores from one forward: ``(B, L, d), keep -> (B, K)``.

    Member ``k`` scores the targets ``members[k]`` exactly as a :class:`CausalLMObjective` over
    those targets would (same score kind): one forward reads every member's rows (the causal
    mask makes later rows no concern of earlier targets), so K maps share their forwards.
    """

    def __init__(self, model: torch.nn.Module, ids: Tensor, members: Sequence[Sequence[int]], score: str,
                 alternative: int | None, clean: Tensor | None = None) -> None:
        self.members = tuple(tuple(int(t) for t in mem) for mem in members)
        union = sorted({t for mem in self.members for t in mem})
        self.inner = CausalLMObjective(model, ids, union, score, alternative, clean)
        where = {t: i for i, t in enumerate(union)}
        self.index = [torch.tensor([where[t] for t in mem], dtype=torch.long) for mem in self.members]

    @property
    def forward_counts(self) -> dict[str, int]:
        return self.inner.forward_counts

    def __len__(self) -> int:
        return len(self.members)

    def __call__(self, embeds: Tensor, keep: Tensor | None = None) -> Tensor:
        return self.combine(self.inner.target_scores(embeds, keep))

    def combine(self, terms: Tensor) -> Tensor:
        """Per-target terms ``(B, n)`` of the union -> every member's score ``(B, K)``."""
        cols = [self.inner.combine(terms[:, idx.to(terms.device)]) for idx in self.index]
        return torch.stack(cols, dim=-1)                                        # (B, K)

    # ------------------------------------------------------------------ gradients
    _head_ok: bool | None = None        # None: not yet seen; False: logits are not exactly head(h)

    def _head(self) -> torch.nn.Linear | None:
        """The model's LM head when it is a plain linear layer and the score is closed-form."""
        model = self.inner.model
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if type(head) is not torch.nn.Linear or self.inner.score not in ("logprob", "logit"):
            return None
        return head

    def grads(self, embeds: Tensor) -> tuple[Tensor, Tensor]:
        """Scores ``(B, K)`` and their gradients w.r.t. ``embeds`` ``(B, L, d)`` -> ``(K, B, L, d)``.

        The vocabulary-sized part is done in closed form: for ``S = log p(y | h)`` at the hidden
        state ``h`` a linear head ``W`` reads, ``dS/dh = W[y] - softmax(W h) W`` (``W[y]`` for a
        logit score), so the backward (:func:`~scopecheck.engine.vjp.vjps` of the K cotangents
        at ``h``) starts at ``h`` and never touches the vocabulary
        (backpropagating K one-hot cotangents through ``log_softmax`` over V is most of the
        work otherwise). ``h`` and ``W h`` are captured by a hook on the head during the one
        model forward; the closed form is used only when the model returns exactly that head
        output as its logits (a scaled or soft-capped head does not), else the plain batched
        backward runs over the same forward. ``softmax(W h)`` is formed in place of the logits
        buffer, so the vocabulary-sized memory is one ``(B, n, V)`` tensor.
        """
        inner = self.inner
        fwd = inner.forward
        x = embeds.detach().requires_grad_(True)
        head = self._head() if self._head_ok is not False else None
        if head is None:
            with torch.enable_grad():
                s = self(x)
                return s.detach(), batched_grads(s, x).detach()
        B = x.shape[0]
        rows = torch.as_tensor(inner.rows, device=x.device)                      # (n,) sorted, distinct
        seen: dict[str, Tensor] = {}

        def capture(_mod: torch.nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            seen["h"], seen["z"] = args[0], out

        cut = int(rows.max()) + 1                                                 # causal: later positions unread
        kwargs: dict[str, object] = {"inputs_embeds": x[:, :cut], "use_cache": False}
        if fwd.slices_logits:
            kwargs["logits_to_keep"] = rows
        handle = head.register_forward_hook(capture)
        try:
            with torch.enable_grad():
                logits = inner.model(**kwargs).logits                            # (B, n, V) or (B, cut, V)
        finally:
            handle.remove()
        fwd.count_call(B, B * cut)
        h, z = seen.get("h"), seen.get("z")
        exact = z is not None and h is not None and (z is logits or (
            z.shape == logits.shape and bool(torch.equal(z.detach().to(logits.dtype), logits.detach()))))
        sliced = logits.shape[1] != cut                                         # logits_to_keep applied
        if not exact:
            self._head_ok = False
            with torch.enable_grad():
                s = self.combine(inner.terms(logits if sliced else logits[:, rows]))  # (B, K)
                return s.detach(), batched_grads(s, x).detach()
        self._head_ok = True
        assert h is not None and z is not None
        tgt = inner.target_ids.to(x.device)                                       # (n,)
        del logits, seen
        with torch.enable_grad():
            hr = h if sliced else h[:, rows]                                      # (B, n, d) in the graph
        with torch.no_grad():
            zr = z.detach() if sliced else z.detach()[:, rows]                    # (B, n, V)
            del z
            W = head.weight                                                       # (V, d)
            zy = zr.gather(-1, tgt.view(1, -1, 1).expand(B, -1, 1)).squeeze(-1)   # (B, n)
            if inner.score == "logit":
                terms = zy
                dh = W[tgt].to(hr.dtype).unsqueeze(0).expand(B, -1, -1)           # (B, n, d)
            else:
                lse = torch.logsumexp(zr, dim=-1)                                 # (B, n)
                terms = zy - lse
                probs = zr.sub_(lse.unsqueeze(-1)).exp_()                         # (B, n, V), in place
                dh = (W[tgt].unsqueeze(0) - probs @ W).to(hr.dtype)              # (B, n, d)
                del probs, zr
            member = torch.zeros(len(self.members), rows.numel(), dtype=hr.dtype, device=hr.device)  # (K, n)
            for k, idx in enumerate(self.index):
                member[k, idx.to(hr.device)] = 1
            cot = member.view(-1, 1, rows.numel(), 1) * dh.unsqueeze(0)          # (K, B, n, d)
            scores = self.combine(terms)                                          # (B, K)
        g = vjps(hr, x, cot)                                                      # (K, B, L, d)
        return scores, g.detach()


class CausalLMLogProbs:
    """Full-vocabulary log-probs at the target rows: ``(B, L, d), keep -> (B, n_targets, V)``."""

    def __init__(self, model: torch.nn.Module, target_rows: Sequence[int], clean: Tensor | None = None,
                 forward: Any = None) -> None:
        self.target_rows = tuple(int(r) for r in target_rows)
        self.forward = Forward(model, clean) if forward is None else forward

    def __call__(self, embeds: Tensor, keep: Tensor | None = None) -> Tensor:
        return self.at_rows(embeds, keep, self.target_rows)

    @property
    def forward_counts(self) -> dict[str, int]:
        """Model calls, batch rows and token positions run so far."""
        return self.forward.counts

    def at_rows(self, embeds: Tensor, keep: Tensor | None, rows: Sequence[int]) -> Tensor:
        """Log-probs ``(B, len(rows), V)`` of the token following each of ``rows``."""
        B = embeds.shape[0]
        r = _scoring_rows(rows, keep, B, embeds.device)                         # (B, n)
        return torch.log_softmax(self.forward(embeds, keep, r), dim=-1)

    def state_bytes(self) -> int | None:
        """Bytes of key/value state per sequence and position (``None``: :meth:`read_on` unusable)."""
        fwd = self.forward
        if not fwd.cache_verified:
            return None
        return sum((k[0, ..., :1, :].numel() * k.element_size()) * 2 for k, _ in fwd.prefix_cache())

    @torch.no_grad()
    def read_on(self, embeds: Tensor, start: int, state: list[tuple[Tensor, Tensor]] | None = None
                ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]] | None:
        """Continue ``B`` sequences by ``m`` positions without re-running what they have read.

        ``embeds`` ``(B, m, d)`` are positions ``start..start+m-1``; the positions before ``start``
        are the clean input (``state`` ``None``: its verified prefix cache) or what an earlier
        call returned (``state``: per layer ``(B, H, start, hd)`` keys and values, batch-aligned,
        rows may be selected). Returns the log-probs ``(B, m, V)`` of the tokens after each
        position and the state up to ``start + m``; ``None`` when the model's cache cannot be
        used (the caller then runs :meth:`at_rows`)."""
        from transformers import DynamicCache

        fwd = self.forward
        if not fwd.cache_verified:
            return None
        B, m, _ = embeds.shape
        if state is None:
            state = [(k[..., :start, :].expand(B, -1, -1, -1), v[..., :start, :].expand(B, -1, -1, -1))
                     for k, v in fwd.prefix_cache()]                           # (B, H, start, hd) views
        out = fwd.call_cached(DynamicCache(ddp_cache_data=state), inputs_embeds=embeds)
        fwd.count_call(B, B * m)
        new = [(layer.keys, layer.values) for layer in returned_cache(out).layers]
        return torch.log_softmax(out.logits, dim=-1), new                        # (B, m, V)


class CausalLMAttentions:
    """Per-layer attention probabilities: ``(L, d) embeds -> [(heads, L, L)] * layers``.

    Runs the model with eager attention for the call, whatever it was loaded with.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __call__(self, embeds: Tensor) -> list[Tensor]:
        return self._run(embeds, want_values=False)[0]

    def with_value_norms(self, embeds: Tensor) -> tuple[list[Tensor], list[Tensor] | None]:
        """Attentions and ``||V_i^{(l,h)} W_O^{(l,h)}||_1`` per layer ``(heads, L)`` (or ``None``
        when the attention modules do not expose ``v_proj``/``o_proj``)."""
        return self._run(embeds, want_values=True)

    def _attention_modules(self) -> list[torch.nn.Module]:
        mods = []
        for m in self.model.modules():
            if type(m).__name__.endswith("Attention") and hasattr(m, "v_proj") and hasattr(m, "o_proj"):
                mods.append(m)
        return mods

    def _run(self, embeds: Tensor, want_values: bool) -> tuple[list[Tensor], list[Tensor] | None]:
        if embeds.dim() != 2:
            raise ValueError(f"attentions expects embeds of shape (L, d), got {tuple(embeds.shape)}")
        captured: list[Tensor] = []
        handles = []
        mods = self._attention_modules() if want_values else []
        for m in mods:
            handles.append(m.v_proj.register_forward_hook(lambda _m, _i, out: captured.append(out.detach())))
        try:
            with torch.no_grad(), eager_attention(self.model):
                out = self.model(inputs_embeds=embeds.unsqueeze(0), output_attentions=True, use_cache=False)
        finally:
            for h in handles:
                h.remove()
        atts = [a[0].detach() for a in (out.attentions or ())]                 # each (H, L, L)
        if not atts or any(a is None for a in atts):
            raise MethodRefused("the model returned no attention probabilities, even with eager attention")
        if not want_values:
            return atts, None
        if len(captured) != len(atts) or not mods:
            return atts, None
        norms = []
        for m, v, a in zip(mods, captured, atts):
            H = a.shape[0]
            w_o = m.o_proj.weight                                               # (d, H * hd)
            hd = w_o.shape[1] // H
            v = v[0].view(v.shape[1], -1, hd)                                   # (L, H_kv, hd)
            if v.shape[1] != H:                                                 # grouped-query attention
                v = v.repeat_interleave(H // v.shape[1], dim=1)                 # (L, H, hd)
            w = w_o.detach().view(w_o.shape[0], H, hd)                          # (d, H, hd)
            vw = torch.einsum("lhk,dhk->hld", v, w)                             # (H, L, d)
            norms.append(vw.abs().sum(-1))                                      # (H, L)
        return atts, norms


# --------------------------------------------------------------------------- builder


def problem_arguments(ids: Tensor, eligible: Tensor, targets: Sequence[int], score: str, alternative: int | None,
                      first: int = 1, outputs: str = "lie in", why: str = " (position 0 has no preceding row)",
                      ) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """The arguments every problem builder checks (causal LM, encoder–decoder): ``ids`` ``(L,)``
    integer, ``eligible`` ``(L,)`` bool, ``targets`` distinct positions in ``first..L-1`` (the
    range said as ``outputs`` and ``why`` in the error), none eligible, and ``score`` /
    ``alternative`` consistent; a ``ValueError`` says which does not hold. Returns ``(ids,
    eligible, targets)`` as tensors and a tuple of ints."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; known: {', '.join(SCORES)}")
    ids = torch.as_tensor(ids)
    eligible = torch.as_tensor(eligible)
    if ids.dim() != 1 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"ids must be a 1-D integer tensor, got {tuple(ids.shape)} {ids.dtype}")
    L = int(ids.shape[0])
    if eligible.shape != (L,) or eligible.dtype != torch.bool:
        raise ValueError(f"eligible must be a bool tensor of shape ({L},), got {tuple(eligible.shape)} {eligible.dtype}")
    targets = tuple(int(t) for t in targets)
    if not targets:
        raise ValueError("at least one target position is required")
    if len(set(targets)) != len(targets):
        raise ValueError(f"duplicate target positions: {targets}")
    for t in targets:
        if not first <= t < L:
            raise ValueError(f"target position {t} must {outputs} {first}..{L - 1}{why}")
        if bool(eligible[t]):
            raise ValueError(f"target position {t} is also eligible: an output cannot explain itself")
    if score == "contrastive":
        if len(targets) != 1:
            raise ValueError("score 'contrastive' needs exactly one target")
        if alternative is None:
            raise ValueError("score 'contrastive' needs an alternative token id")
    elif alternative is not None:
        raise ValueError(f"alternative is only meaningful for score 'contrastive', not {score!r}")
    return ids, eligible, targets


def causal_lm_problem(
    model: torch.nn.Module,
    ids: Tensor,
    eligible: Tensor,
    targets: Sequence[int],
    score: str = "logprob",
    alternative: int | None = None,
    pad_id: int | None = None,
    mask_id: int | None = None,
    unk_id: int | None = None,
) -> AttributionProblem:
    """Build the :class:`AttributionProblem` for a causal LM (teacher-forced rescoring).

    ``ids`` ``(L,)`` token ids (BOS/template, prompt, generation); ``eligible`` ``(L,)`` bool
    (E); ``targets`` positions in ``ids`` whose score is attributed (O). Operators:
    ``zero`` and ``mean`` (mean row of the vocabulary embedding matrix) always; ``pad``,
    ``mask``, ``unk`` the embedding of that token, taken from the explicit ``*_id`` argument
    or else from ``model.config.{pad,mask,unk}_token_id``. Where neither gives a token
    (e.g. Llama has no pad or mask token) the operator is *omitted*: no token is invented
    (EOS is not substituted for pad), and a method asking for it gets an error that lists
    the operators that exist.

    The model is put in eval mode (dropout off) so that scores are deterministic.
    """
    ids, eligible, targets = problem_arguments(ids, eligible, targets, score, alternative)
    L = int(ids.shape[0])

    if model.training:
        model.eval()
    emb_module = model.get_input_embeddings()
    weight = emb_module.weight                                                   # (V, d)
    device = weight.device
    V = int(weight.shape[0])
    ids = ids.to(device=device, dtype=torch.long)
    eligible = eligible.to(device)
    if int(ids.max()) >= V or int(ids.min()) < 0:
        raise ValueError(f"token ids must lie in 0..{V - 1}")
    if alternative is not None and not 0 <= int(alternative) < V:
        raise ValueError(f"alternative token id {alternative} is outside the vocabulary (size {V})")

    vocab_embeds, operators = embedding_operators(model, L, pad_id, mask_id, unk_id)
    embeds = vocab_embeds[ids].clone()                                           # (L, d)

    target_rows = tuple(t - 1 for t in targets)
    objective = CausalLMObjective(model, ids, targets, score, alternative, clean=embeds)
    return AttributionProblem(
        ids=ids,
        embeds=embeds,
        eligible=eligible,
        objective=objective,
        operators=operators,
        target_rows=target_rows,
        attentions=CausalLMAttentions(model),
        logprobs=CausalLMLogProbs(model, target_rows, clean=embeds),
        vocab_embeds=vocab_embeds,
    )


def fast_path_notes(problem: AttributionProblem) -> list[str]:
    """One warning per forward of ``problem`` (its objective, its log-prob reader) whose
    shared-prefix fast path was lost, saying which and why (never a silent fallback)."""
    notes: list[str] = []
    for reader in (problem.objective, problem.logprobs):
        fwd = getattr(reader, "forward", None)
        note = fwd.fast_path_note if isinstance(fwd, Forward) else None
        if note and note not in notes:
            notes.append(note)
    return notes
