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
import functools
import inspect
import weakref
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

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


def _read_only_update(keys: Tensor, values: Tensor, key_states: Tensor, value_states: Tensor, *args: object,
                      **kwargs: object) -> tuple[Tensor, Tensor]:
    """A cache layer's ``update`` (bound to its stored ``(1, H, a, hd)`` ``keys`` and ``values``
    with :func:`functools.partial`) returning them broadcast to the batch of the new
    ``(B, H, q, hd)`` states and followed by them, storing nothing
    (:meth:`_Forward._prefix_state`)."""
    B = key_states.shape[0]
    return (torch.cat([keys.expand(B, -1, -1, -1), key_states], dim=-2),
            torch.cat([values.expand(B, -1, -1, -1), value_states], dim=-2))


def cache_argument(params: Mapping[str, object]) -> str | None:
    """The name under which a causal LM's ``forward`` takes a key/value cache: ``cache``
    (transformers >= 5.20), ``past_key_values`` (earlier releases; deprecated since), or
    ``None`` when it takes neither."""
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def returned_cache(out: Any) -> Any:
    """The key/value cache a forward with ``use_cache=True`` returned, under either name."""
    for name in ("cache", "past_key_values"):
        if name in out.keys():
            return out[name]
    raise LookupError("the model returned no key/value cache")


class _Forward:
    """Runs the LM on embeddings with an optional keep mask, returning logits at rows.

    ``embeds`` ``(B, L, d)``; ``keep`` ``(B, L)`` bool or ``None``; ``rows`` ``(B, n)`` int64
    (row indices per batch element) -> logits ``(B, n, V)``.

    Shared-prefix reuse (the AttriBoT idea): when ``clean`` ``(L, d)`` (the unperturbed input) is
    given, a batch evaluated without gradients whose rows all agree with ``clean`` on positions
    ``[0, a)`` (and whose scoring rows are all ``>= a``) reuses the key/value cache of that
    prefix, computed once, and runs the model on positions ``a..L-1`` only. Occluding late
    prompt tokens then costs only the suffix. The first reuse is verified against the full
    forward (it is switched off for good, silently equal, if an architecture's cache disagrees);
    ``reuse_prefix = False`` turns it off. ``calls``/``rows_run``/``positions_run`` count work.

    Positions after the last scoring row are never run: in a causal LM they cannot change the
    logits at earlier rows, so the sequence is cut after ``rows.max()`` (exact; a chain of
    next-token reads may pass a prefix of the sequence, ``(B, L' <= L, d)``, and still reuse the
    clean prefix's cache).
    """

    #: shortest shared prefix worth a cached run
    MIN_PREFIX = 2
    #: most query tokens in one packed suffix forward (attention over a pack is quadratic in it)
    PACK_TOKENS = 512

    def __init__(self, model: torch.nn.Module, clean: Tensor | None = None) -> None:
        self.model = model
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover
            params = {}
        self.slices_logits = "logits_to_keep" in params
        self.clean = clean                                                      # (L, d) or None
        self.cache_arg = cache_argument(params)
        self.reuse_prefix = clean is not None and self.slices_logits and self.cache_arg is not None
        #: why shared-prefix reuse was wanted and could not be used (``None``: in use, or not wanted);
        #: every result of this forward says so (:attr:`fast_path_note`)
        self.lost: str | None = None
        if clean is not None and not self.reuse_prefix:
            missing = [a for a, ok in (("logits_to_keep", self.slices_logits),
                                       ("cache / past_key_values", self.cache_arg is not None)) if not ok]
            self.lost = f"{type(model).__name__}.forward takes no {' or '.join(missing)} argument"
        self._verified = False
        self.pack = self.reuse_prefix                                           # packed suffixes (see _packed)
        self._pack_verified = False
        self._cache: list[tuple[Tensor, Tensor]] | None = None                  # per layer (1, H, L, hd) k, v
        self._cache_precision: object = None                                    # the float64 patch it was made under
        self._clean_logits: tuple[Tensor, Tensor] | None = None                 # clean rows (U,), logits (U, V)
        self.calls = 0
        self.rows_run = 0
        self.positions_run = 0

    def _count(self, rows: int, positions: int) -> None:
        """Record one model call over ``rows`` sequences and ``positions`` token positions."""
        self.calls += 1
        self.rows_run += rows
        self.positions_run += positions

    @property
    def counts(self) -> dict[str, int]:
        """Model calls, batch rows and token positions run so far (for benchmarks)."""
        return {"calls": self.calls, "rows": self.rows_run, "positions": self.positions_run}

    @property
    def cache_verified(self) -> bool:
        """The clean prefix's cache is in use and agreed with the full forward."""
        return self.reuse_prefix and self._verified

    @property
    def fast_path_note(self) -> str | None:
        """A sentence for the result's warnings when the shared-prefix fast path was lost."""
        if self.lost is None:
            return None
        return (f"shared-prefix reuse is off: {self.lost}; every perturbed input was run in full "
                f"(the values are exact, only slower)")

    def _lose(self, packed: bool, why: str) -> None:
        """Switch a cached path off for good, recording why."""
        if packed:
            self.pack = False
            self.lost = self.lost or f"packed suffixes: {why}"
        else:
            self.reuse_prefix = self.pack = False
            self.lost = f"prefix cache: {why}"

    def _call_cached(self, past: object, **kwargs: object) -> Any:
        """The model's forward over a read-only prefix cache, under the cache argument it takes."""
        assert self.cache_arg is not None
        return self.model(**{self.cache_arg: past}, use_cache=True, **kwargs)

    def _prefix_state(self, a: int) -> object:
        """A read-only ``DynamicCache`` of the clean prefix's keys and values over positions
        ``[0, a)``, ``(1, H, a, hd)`` per layer, that any batch of suffixes reads.

        Read-only: each layer returns the prefix (broadcast to the batch) followed by the suffix's
        new keys and values, keeping neither, so a suffix forward holds one layer's
        ``(B, H, L, hd)`` concatenation at a time, not every layer's until it returns."""
        from transformers import DynamicCache

        cache = self._prefix_cache()
        # built empty, then given views of the cached prefix: the constructor would copy it
        past = DynamicCache(ddp_cache_data=[(k[..., :0, :], v[..., :0, :]) for k, v in cache])
        for layer, (k, v) in zip(past.layers, cache, strict=True):
            layer.keys, layer.values = k[..., :a, :], v[..., :a, :]             # (1, H, a, hd) views
            # bound to the tensors, not to the layer: a method bound to the layer and stored on
            # it would be a reference cycle, holding the layer until a garbage collection
            layer.update = functools.partial(_read_only_update, layer.keys, layer.values)
        return past

    def _shared_prefix(self, embeds: Tensor, keep: Tensor | None, rows: Tensor) -> Tensor | None:
        """Per batch row, how many leading positions equal ``clean`` and precede every scoring row
        ``(B,)``; ``None`` when no row may reuse the cache."""
        if not self.reuse_prefix or keep is not None or self.clean is None:
            return None
        if torch.is_grad_enabled() and embeds.requires_grad:
            return None
        L = int(embeds.shape[1])
        if L > self.clean.shape[0] or embeds.shape[2] != self.clean.shape[1]:
            return None
        clean = self.clean[:L].to(device=embeds.device, dtype=embeds.dtype)    # (L, d)
        differs = (embeds != clean.unsqueeze(0)).any(-1)                       # (B, L)
        pos = torch.arange(L, device=embeds.device).expand_as(differs)
        first = torch.where(differs, pos, torch.full_like(pos, L)).amin(-1)     # (B,) first perturbed position
        starts = torch.minimum(first, rows.amin(-1))                            # (B,)
        return starts if int(starts.min()) >= self.MIN_PREFIX else None

    @torch.no_grad()
    def _prefix_cache(self, rows: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Per layer, the clean input's keys and values ``(1, H, L, hd)``, from one forward over
        it. When that forward runs now and ``rows`` (scoring rows, any shape) is given, it also
        keeps the clean input's logits at those rows: the full-forward reference against which
        the first cached run of an unperturbed row is checked (:meth:`_clean_reference`)."""
        # computed again when the model's float64 patch (engine.precision) was entered or left since
        precision = getattr(self.model, "__dict__", {}).get("_scopecheck_float64")
        if self._cache is not None and self._cache_precision is not precision:
            self._cache = self._clean_logits = None
        if self._cache is None:
            self._cache_precision = precision
            assert self.clean is not None
            union = torch.unique(rows) if rows is not None else None                # (U,)
            out = self.model(inputs_embeds=self.clean.unsqueeze(0), use_cache=True,
                             logits_to_keep=union if union is not None else 1)
            self._count(1, int(self.clean.shape[0]))
            if union is not None and not self._verified:
                self._clean_logits = (union, out.logits[0])                         # (U,), (U, V)
            cache = returned_cache(out)
            self._cache = [(layer.keys, layer.values) for layer in cache.layers]
        return self._cache

    def _clean_reference(self, embeds: Tensor, rows: Tensor) -> Tensor | None:
        """The full forward's logits ``(B, n, V)`` for a batch of unperturbed rows whose scoring
        rows the clean forward kept, else ``None``."""
        if self._clean_logits is None or self.clean is None:
            return None
        union, logits = self._clean_logits
        clean = self.clean[: embeds.shape[1]].to(device=embeds.device, dtype=embeds.dtype)
        if not bool((embeds == clean.unsqueeze(0)).all()) or not bool(torch.isin(rows, union).all()):
            return None
        return logits[torch.searchsorted(union, rows)].to(embeds.dtype)          # (B, n, V)

    def _suffix(self, embeds: Tensor, rows: Tensor, starts: Tensor) -> Tensor:
        B = embeds.shape[0]
        a = int(starts.min())
        past = self._prefix_state(a)
        union, inverse = torch.unique(rows, sorted=True, return_inverse=True)   # (U,), (B, n)
        logits = self._call_cached(past, inputs_embeds=embeds[:, a:],
                                   logits_to_keep=union - a).logits             # (B, U, V)
        self._count(B, B * (embeds.shape[1] - a))
        return _pick_rows(logits, inverse)                                      # (B, n, V)

    def __call__(self, embeds: Tensor, keep: Tensor | None, rows: Tensor) -> Tensor:
        cut = int(rows.max()) + 1
        if cut < embeds.shape[1]:                                               # causal: later positions unread
            embeds = embeds[:, :cut]                                            # (B, cut, d)
            keep = None if keep is None else keep[:, :cut]
        starts = self._shared_prefix(embeds, keep, rows)
        if starts is None:
            return self._full(embeds, keep, rows)
        a = int(starts.min())
        # rows that share less than the whole batch's prefix: pack each row's own suffix instead
        # when that saves a fifth of the positions
        packed = self.pack and 5 * int((cut - starts).sum()) < 4 * embeds.shape[0] * (cut - a)
        try:
            self._prefix_cache(rows)
            cached = (self._packed if packed else self._suffix)(embeds, rows, starts)
        except (TypeError, ValueError, AttributeError, RuntimeError, LookupError) as exc:  # no usable cache
            self._lose(packed, f"the model's cache API refused it ({type(exc).__name__}: {exc})")
            return self._full(embeds, keep, rows)
        if self._pack_verified if packed else self._verified:
            return cached
        # the first use of each kind is checked against the full forward (for unperturbed rows the
        # clean forward that built the cache is that forward); off for good if it disagrees
        full = None if packed else self._clean_reference(embeds, rows)
        if full is None:
            full = self._full(embeds, keep, rows)
        tol = 1e-9 if embeds.dtype == torch.float64 else 1e-3
        ok = bool(torch.allclose(cached, full, rtol=tol, atol=tol))
        if not ok:
            gap = float((cached.to(torch.float64) - full.to(torch.float64)).abs().max())
            self._lose(packed, f"its first use disagreed with the full forward by {gap:.3g} (tolerance {tol:g})")
        elif packed:
            self._pack_verified = True
        else:
            self._verified = True
            self._clean_logits = None
        return full

    def _packed(self, embeds: Tensor, rows: Tensor, starts: Tensor) -> Tensor:
        """Each row's own suffix ``embeds[b, starts[b]:]``, packed end to end into single-sequence
        forwards of at most ``PACK_TOKENS`` queries over the clean prefix's cache, with explicit
        positions and a block mask: a query sees the cached clean positions before its row's start
        and the earlier positions of its own segment, exactly the keys its unpacked row would see
        (the other keys are masked, adding exact zeros). ``(B, L, d), (B, n), (B,) -> (B, n, V)``."""
        B, L, _ = embeds.shape
        dev = embeds.device
        out: Tensor | None = None
        b0 = 0
        while b0 < B:                                                           # consecutive rows per pack
            b1, total = b0, 0
            while b1 < B and (b1 == b0 or total + L - int(starts[b1]) <= self.PACK_TOKENS):
                total += L - int(starts[b1])
                b1 += 1
            st = starts[b0:b1]                                                  # (G,)
            lens = L - st                                                       # (G,)
            seg = torch.repeat_interleave(torch.arange(b1 - b0, device=dev), lens)  # (Q,) segment of each query
            offs = torch.cumsum(lens, 0) - lens                                  # (G,) first query of a segment
            posq = st[seg] + torch.arange(seg.numel(), device=dev) - offs[seg]   # (Q,) position in its row
            P = int(st.max())                                                   # cached positions any row needs
            see_cache = torch.arange(P, device=dev).unsqueeze(0) < st[seg].unsqueeze(1)              # (Q, P)
            see_own = (seg.unsqueeze(0) == seg.unsqueeze(1)) & (posq.unsqueeze(0) <= posq.unsqueeze(1))  # (Q, Q)
            allowed = torch.cat([see_cache, see_own], dim=1)                    # (Q, P + Q)
            mask = torch.zeros(allowed.shape, dtype=embeds.dtype, device=dev)
            mask.masked_fill_(~allowed, torch.finfo(embeds.dtype).min)
            packed = torch.cat([embeds[b, int(starts[b]):] for b in range(b0, b1)], dim=0)  # (Q, d)
            keep_q = offs.unsqueeze(1) + rows[b0:b1] - st.unsqueeze(1)          # (G, n) query of each scored row
            union, inverse = torch.unique(keep_q, sorted=True, return_inverse=True)  # (U,), (G, n)
            past = self._prefix_state(P)
            logits = self._call_cached(past, inputs_embeds=packed.unsqueeze(0), position_ids=posq.unsqueeze(0),
                                       attention_mask=mask[None, None], logits_to_keep=union).logits[0]  # (U, V)
            self._count(b1 - b0, int(seg.numel()))
            part = logits[inverse]                                              # (G, n, V)
            if out is None:
                out = part.new_empty((B, *part.shape[1:]))
            out[b0:b1] = part
            b0 = b1
        assert out is not None
        return out

    def _full(self, embeds: Tensor, keep: Tensor | None, rows: Tensor) -> Tensor:
        kwargs: dict[str, object] = {"inputs_embeds": embeds, "use_cache": False}
        if keep is not None:
            keep_l = keep.to(device=embeds.device, dtype=torch.long)          # (B, L)
            kwargs["attention_mask"] = keep_l
            # later tokens shift left over deleted ones; deleted rows are never read
            kwargs["position_ids"] = (keep_l.cumsum(-1) - 1).clamp_min(0)     # (B, L)
        union, inverse = torch.unique(rows, sorted=True, return_inverse=True)  # (U,), (B, n)
        self._count(int(embeds.shape[0]), int(embeds.shape[0] * embeds.shape[1]))
        if self.slices_logits:
            kwargs["logits_to_keep"] = union                                    # 1-D: same rows for all
            logits = self.model(**kwargs).logits                                # (B, U, V)
            index = inverse
        else:
            logits = self.model(**kwargs).logits                                # (B, L, V)
            index = rows
        # (B, n, V)
        return _pick_rows(logits, index)


def _logsumexp_(x: Tensor) -> Tensor:
    """``logsumexp`` over the last dim, overwriting ``x`` (no second vocabulary-sized buffer)."""
    top = x.amax(dim=-1, keepdim=True)                                         # (..., 1)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return x.sub_(top).exp_().sum(-1).log_() + top.squeeze(-1)


def _pick_rows(logits: Tensor, index: Tensor) -> Tensor:
    """``logits[b, index[b, j]]``: ``(B, U, V)``, ``(B, n)`` -> ``(B, n, V)``.

    Returns ``logits`` itself when the index is ``0..n-1`` in every batch row (no deletion: the
    forward already kept exactly the scored rows); else row indexing, which never builds a
    ``(B, n, V)`` index tensor as ``take_along_dim`` would (twice the logits' memory)."""
    B, n = index.shape
    if n == logits.shape[1] and bool((index == torch.arange(n, device=index.device)).all()):
        return logits
    return logits[torch.arange(B, device=index.device).unsqueeze(-1), index]   # (B, n, V)


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
    for evaluations without gradients (see :class:`_Forward`).
    """

    def __init__(self, model: torch.nn.Module, ids: Tensor, targets: Sequence[int], score: str,
                 alternative: int | None, clean: Tensor | None = None) -> None:
        self.model = model
        self.ids = ids                                                          # (L,)
        self.targets = tuple(int(t) for t in targets)                           # target positions
        self.rows = tuple(t - 1 for t in self.targets)                          # rows predicting them
        self.target_ids = ids[list(self.targets)]                               # (n,)
        self.score = score
        self.alternative = alternative
        self._forward = _Forward(model, clean)

    @property
    def forward_counts(self) -> dict[str, int]:
        """Model calls, batch rows and token positions run so far (for benchmarks)."""
        return self._forward.counts

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
        return self.terms(self._forward(embeds, keep, rows))

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
                    logits = self._forward._full(e, None, rows.expand(batch, -1))  # (B, n, V); never cached
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
        fwd = inner._forward
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
        fwd._count(B, B * cut)
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

    def __init__(self, model: torch.nn.Module, target_rows: Sequence[int], clean: Tensor | None = None) -> None:
        self.target_rows = tuple(int(r) for r in target_rows)
        self._forward = _Forward(model, clean)

    def __call__(self, embeds: Tensor, keep: Tensor | None = None) -> Tensor:
        return self.at_rows(embeds, keep, self.target_rows)

    @property
    def forward_counts(self) -> dict[str, int]:
        """Model calls, batch rows and token positions run so far."""
        return self._forward.counts

    def at_rows(self, embeds: Tensor, keep: Tensor | None, rows: Sequence[int]) -> Tensor:
        """Log-probs ``(B, len(rows), V)`` of the token following each of ``rows``."""
        B = embeds.shape[0]
        r = _scoring_rows(rows, keep, B, embeds.device)                         # (B, n)
        return torch.log_softmax(self._forward(embeds, keep, r), dim=-1)

    def state_bytes(self) -> int | None:
        """Bytes of key/value state per sequence and position (``None``: :meth:`read_on` unusable)."""
        fwd = self._forward
        if not fwd.cache_verified:
            return None
        return sum((k[0, ..., :1, :].numel() * k.element_size()) * 2 for k, _ in fwd._prefix_cache())

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

        fwd = self._forward
        if not fwd.cache_verified:
            return None
        B, m, _ = embeds.shape
        if state is None:
            state = [(k[..., :start, :].expand(B, -1, -1, -1), v[..., :start, :].expand(B, -1, -1, -1))
                     for k, v in fwd._prefix_cache()]                           # (B, H, start, hd) views
        out = fwd._call_cached(DynamicCache(ddp_cache_data=state), inputs_embeds=embeds)
        fwd._count(B, B * m)
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


def _token_id(explicit: int | None, config: object, attr: str, vocab: int, name: str) -> int | None:
    tid = explicit if explicit is not None else getattr(config, attr, None)
    if isinstance(tid, (list, tuple)):                                          # some configs list several
        tid = tid[0] if tid else None
    if tid is None:
        return None
    tid = int(tid)
    if not 0 <= tid < vocab:
        if explicit is not None:
            raise ValueError(f"{name}_id={tid} is outside the vocabulary (size {vocab})")
        return None
    return tid


#: Mean vocabulary embedding per embedding module, with the identity and version counter of its
#: weight: a family of K problems (or a dataset of many) over one model computes the mean once.
_VOCAB_MEAN: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, int, Tensor]]" = weakref.WeakKeyDictionary()


def _vocab_mean(vocab_embeds: Tensor, module: torch.nn.Module | None) -> Tensor:
    """``vocab_embeds.mean(0, keepdim=True)`` ``(1, d)``, cached per plain ``nn.Embedding``
    ``module`` (whose weight ``vocab_embeds`` is) while that weight is unchanged."""
    if module is None:
        return vocab_embeds.mean(0, keepdim=True)
    weight = module.weight
    hit = _VOCAB_MEAN.get(module)
    if hit is not None and hit[0] == id(weight) and hit[1] == weight._version:
        return hit[2]
    mean = vocab_embeds.mean(0, keepdim=True)                                     # (1, d)
    _VOCAB_MEAN[module] = (id(weight), weight._version, mean)
    return mean


def embedding_operators(model: torch.nn.Module, L: int, pad_id: int | None = None, mask_id: int | None = None,
                        unk_id: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The vocabulary embedding rows ``(V, d)`` and the replacement rows ``(L, d)`` of every
    perturbation operator the model has: ``zero`` and ``mean`` always; ``pad``, ``mask``,
    ``unk`` where the explicit id or ``model.config.{pad,mask,unk}_token_id`` names a token
    (none is invented)."""
    emb_module = model.get_input_embeddings()
    weight = emb_module.weight                                                   # (V, d)
    device = weight.device
    V = int(weight.shape[0])
    with torch.no_grad():
        if type(emb_module) is torch.nn.Embedding:
            vocab_embeds = weight.detach()                                       # (V, d), shares storage
        else:  # scaled / custom embedding modules: rows exactly as inputs_embeds expects them
            vocab_embeds = emb_module(torch.arange(V, device=device)).detach()
    d = int(vocab_embeds.shape[1])
    config = getattr(model, "config", None)
    operators: dict[str, Tensor] = {
        "zero": torch.zeros(L, d, dtype=vocab_embeds.dtype, device=device),     # (L, d)
        "mean": _vocab_mean(vocab_embeds, emb_module if type(emb_module) is torch.nn.Embedding else None)
                .expand(L, d).clone(),                                           # (L, d)
    }
    for name, explicit in (("pad", pad_id), ("mask", mask_id), ("unk", unk_id)):
        tid = _token_id(explicit, config, f"{name}_token_id", V, name)
        if tid is not None:
            operators[name] = vocab_embeds[tid].unsqueeze(0).expand(L, d).clone()  # (L, d)
    return vocab_embeds, operators


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
        if not 1 <= t < L:
            raise ValueError(f"target position {t} must lie in 1..{L - 1} (position 0 has no preceding row)")
        if bool(eligible[t]):
            raise ValueError(f"target position {t} is also eligible: an output cannot explain itself")
    if score == "contrastive":
        if len(targets) != 1:
            raise ValueError("score 'contrastive' needs exactly one target")
        if alternative is None:
            raise ValueError("score 'contrastive' needs an alternative token id")
    elif alternative is not None:
        raise ValueError(f"alternative is only meaningful for score 'contrastive', not {score!r}")

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
        fwd = getattr(reader, "_forward", None)
        note = fwd.fast_path_note if isinstance(fwd, _Forward) else None
        if note and note not in notes:
            notes.append(note)
    return notes
