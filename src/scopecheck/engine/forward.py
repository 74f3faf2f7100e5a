"""Running a causal LM on input embeddings: :class:`Forward`, with shared-prefix reuse.

``Forward(model, clean)(embeds, keep, rows)`` -> logits ``(B, n, V)`` at the scoring rows of
every batch element, with an optional keep mask (deletion). Batches evaluated without
gradients that agree with the clean input on a prefix reuse that prefix's key/value cache
(see :class:`Forward`). The objectives of :mod:`scopecheck.engine.scoring` and the
next-token readers build on it; its call counts feed the benchmarks and reports.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Mapping

import torch

Tensor = torch.Tensor

__all__ = ["CallCounter", "Forward", "cache_argument", "pick_rows", "returned_cache"]


def _read_only_update(keys: Tensor, values: Tensor, key_states: Tensor, value_states: Tensor, *args: object,
                      **kwargs: object) -> tuple[Tensor, Tensor]:
    """A cache layer's ``update`` (bound to its stored ``(1, H, a, hd)`` ``keys`` and ``values``
    with :func:`functools.partial`) returning them broadcast to the batch of the new
    ``(B, H, q, hd)`` states and followed by them, storing nothing
    (:meth:`Forward._prefix_state`)."""
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


class CallCounter:
    """The work a forward has done: ``calls`` (model calls), ``rows_run`` (batch rows) and
    ``positions_run`` (token positions), for the benchmarks and the ``-v`` work table; shared by
    :class:`Forward` and the encoder–decoder's :class:`~scopecheck.engine.seq2seq.Seq2SeqForward`."""

    def __init__(self) -> None:
        self.calls = 0
        self.rows_run = 0
        self.positions_run = 0

    def count_call(self, rows: int, positions: int) -> None:
        """Record one model call over ``rows`` sequences and ``positions`` token positions."""
        self.calls += 1
        self.rows_run += rows
        self.positions_run += positions

    @property
    def counts(self) -> dict[str, int]:
        """Model calls, batch rows and token positions run so far (for benchmarks)."""
        return {"calls": self.calls, "rows": self.rows_run, "positions": self.positions_run}


class Forward(CallCounter):
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
        super().__init__()
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

    def call_cached(self, past: object, **kwargs: object) -> Any:
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

        cache = self.prefix_cache()
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
    def prefix_cache(self, rows: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Per layer, the clean input's keys and values ``(1, H, L, hd)``, from one forward over
        it. When that forward runs now and ``rows`` (scoring rows, any shape) is given, it also
        keeps the clean input's logits at those rows: a batch of unperturbed rows scored there is
        answered with them (they are the full forward's) until the cache has been verified on a
        perturbed batch (:meth:`_clean_reference`), so scoring ``S(x)`` costs no second call."""
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
            self.count_call(1, int(self.clean.shape[0]))
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
        return logits[torch.searchsorted(union, rows.contiguous())].to(embeds.dtype)  # (B, n, V)

    def _suffix(self, embeds: Tensor, rows: Tensor, starts: Tensor) -> Tensor:
        B = embeds.shape[0]
        a = int(starts.min())
        past = self._prefix_state(a)
        union, inverse = torch.unique(rows, sorted=True, return_inverse=True)   # (U,), (B, n)
        logits = self.call_cached(past, inputs_embeds=embeds[:, a:],
                                   logits_to_keep=union - a).logits             # (B, U, V)
        self.count_call(B, B * (embeds.shape[1] - a))
        return pick_rows(logits, inverse)                                      # (B, n, V)

    def __call__(self, embeds: Tensor, keep: Tensor | None, rows: Tensor) -> Tensor:
        cut = int(rows.max()) + 1
        if cut < embeds.shape[1]:                                               # causal: later positions unread
            embeds = embeds[:, :cut]                                            # (B, cut, d)
            keep = None if keep is None else keep[:, :cut]
        starts = self._shared_prefix(embeds, keep, rows)
        if starts is None:
            return self.full(embeds, keep, rows)
        a = int(starts.min())
        # rows that share less than the whole batch's prefix: pack each row's own suffix instead
        # when that saves a fifth of the positions
        packed = self.pack and 5 * int((cut - starts).sum()) < 4 * embeds.shape[0] * (cut - a)
        try:
            self.prefix_cache(rows)
            if not self._verified:
                clean = self._clean_reference(embeds, rows)
                if clean is not None:       # unperturbed rows the clean forward just scored: its own logits
                    return clean
            cached = (self._packed if packed else self._suffix)(embeds, rows, starts)
        except (TypeError, ValueError, AttributeError, RuntimeError, LookupError) as exc:  # no usable cache
            self._lose(packed, f"the model's cache API refused it ({type(exc).__name__}: {exc})")
            return self.full(embeds, keep, rows)
        if self._pack_verified if packed else self._verified:
            return cached
        # the first use of each kind is checked against the full forward; off for good if it disagrees
        # (unperturbed rows the clean forward scored were answered with its logits above)
        full = self.full(embeds, keep, rows)
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
            logits = self.call_cached(past, inputs_embeds=packed.unsqueeze(0), position_ids=posq.unsqueeze(0),
                                       attention_mask=mask[None, None], logits_to_keep=union).logits[0]  # (U, V)
            self.count_call(b1 - b0, int(seg.numel()))
            part = logits[inverse]                                              # (G, n, V)
            if out is None:
                out = part.new_empty((B, *part.shape[1:]))
            out[b0:b1] = part
            b0 = b1
        assert out is not None
        return out

    def full(self, embeds: Tensor, keep: Tensor | None, rows: Tensor) -> Tensor:
        kwargs: dict[str, object] = {"inputs_embeds": embeds, "use_cache": False}
        if keep is not None:
            keep_l = keep.to(device=embeds.device, dtype=torch.long)          # (B, L)
            kwargs["attention_mask"] = keep_l
            # later tokens shift left over deleted ones; deleted rows are never read
            kwargs["position_ids"] = (keep_l.cumsum(-1) - 1).clamp_min(0)     # (B, L)
        union, inverse = torch.unique(rows, sorted=True, return_inverse=True)  # (U,), (B, n)
        self.count_call(int(embeds.shape[0]), int(embeds.shape[0] * embeds.shape[1]))
        if self.slices_logits:
            kwargs["logits_to_keep"] = union                                    # 1-D: same rows for all
            logits = self.model(**kwargs).logits                                # (B, U, V)
            index = inverse
        else:
            logits = self.model(**kwargs).logits                                # (B, L, V)
            index = rows
        # (B, n, V)
        return pick_rows(logits, index)


def pick_rows(logits: Tensor, index: Tensor) -> Tensor:
    """``logits[b, index[b, j]]``: ``(B, U, V)``, ``(B, n)`` -> ``(B, n, V)``.

    Returns ``logits`` itself when the index is ``0..n-1`` in every batch row (no deletion: the
    forward already kept exactly the scored rows); else row indexing, which never builds a
    ``(B, n, V)`` index tensor as ``take_along_dim`` would (twice the logits' memory)."""
    B, n = index.shape
    if n == logits.shape[1] and bool((index == torch.arange(n, device=index.device)).all()):
        return logits
    return logits[torch.arange(B, device=index.device).unsqueeze(-1), index]   # (B, n, V)
