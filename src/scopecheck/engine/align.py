"""Token alignment: prompt and output text -> token positions, selectors -> positions.

The sequence is ``[special..., x[1..n], y[1..T]]``: the prompt and the output are
tokenized separately (no special tokens) and concatenated after the tokenizer's BOS
token when it adds one. Special tokens are held fixed implicitly and listed as such.
Text selectors resolve to every token whose character span overlaps the text; an
absent or ambiguous text is a positioned error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from scopecheck.errors import ContractValidationError, Span
from scopecheck.spec import model as m
from scopecheck.spec.anchors import anchor


@dataclass(frozen=True)
class Token:
    position: int                 # index in the full sequence
    id: int
    text: str                     # the token's surface text
    role: str                     # special | prompt | output
    index: int                    # 1-based index within its role (x[i], y[t]); 0 for special
    start: int                    # char offsets within the prompt / output text
    end: int


@dataclass(frozen=True)
class Alignment:
    tokens: tuple[Token, ...]
    prompt_text: str
    output_text: str
    segments: dict[str, tuple[int, int]]   # name -> char range in the prompt
    #: encoder–decoder models: the first decoder position (the decoder start token); ``None`` for
    #: a single stack (:func:`align_seq2seq`)
    split: int | None = None

    @property
    def ids(self) -> list[int]:
        return [t.id for t in self.tokens]

    def role(self, role: str) -> list[Token]:
        return [t for t in self.tokens if t.role == role]


def encode_text(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    if not text:
        return [], []
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def special_prefix(tokenizer) -> list[int]:
    """Special tokens the tokenizer puts before text (e.g. BOS), found by encoding a probe."""
    with_sp = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    n = len(with_sp) - len(without)
    if n > 0 and with_sp[n:] == without:
        return list(with_sp[:n])
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        return [tokenizer.bos_token_id]
    return []


def render_chat(tokenizer, prompt: m.Prompt) -> tuple[str, list[tuple[int, int, int]]]:
    """The chat template applied to the prompt's messages (with the generation prompt), and for
    each message ``(start, end)`` of its text in the rendering and its offset in ``prompt.text``."""
    if not getattr(tokenizer, "chat_template", None):
        raise ContractValidationError("the model's tokenizer has no chat template", prompt.span, rule="chat",
                                      expected="a model whose tokenizer_config.json has a chat_template",
                                      hint="write the prompt as plain text instead")
    msgs = [{"role": s.name, "content": s.text} for s in prompt.segments]
    try:
        rendered = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # noqa: BLE001 - a template that refuses these messages (jinja raise_exception)
        raise ContractValidationError(f"the chat template refuses these messages: {exc}", prompt.span,
                                      rule="chat") from None
    spans, cursor, pos = [], 0, 0
    for seg in prompt.segments:
        j = rendered.find(seg.text, cursor)
        if j < 0:
            raise ContractValidationError(f"the chat template does not contain the {seg.name} message verbatim",
                                          seg.span, rule="chat", expected="a template that inserts message text as is")
        spans.append((j, j + len(seg.text), pos))
        cursor, pos = j + len(seg.text), pos + len(seg.text) + 1
    return rendered, spans


def _chat_tokens(tokenizer, prompt: m.Prompt) -> list[Token]:
    """Template tokens (role ``special``: held fixed, listed) and message tokens (role ``prompt``)."""
    rendered, spans = render_chat(tokenizer, prompt)
    enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    toks: list[Token] = []
    n = 0
    for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
        hit = next(((j, e, pos) for j, e, pos in spans if a < e and j < b), None)
        if hit is None:
            toks.append(Token(len(toks), tid, rendered[a:b] or tokenizer.convert_ids_to_tokens(tid), "special", 0, 0, 0))
        else:
            j, e, pos = hit
            n += 1
            start, end = pos + max(a, j) - j, pos + min(b, e) - j
            toks.append(Token(len(toks), tid, rendered[max(a, j):min(b, e)], "prompt", n, start, end))
    return toks


def prompt_ids(tokenizer, prompt: m.Prompt) -> list[int]:
    """The ids the model reads before the output: BOS/special prefix and the prompt, or the
    rendered chat template."""
    if prompt.chat:
        return [t.id for t in _chat_tokens(tokenizer, prompt)]
    return special_prefix(tokenizer) + encode_text(tokenizer, prompt.text)[0]


def align(tokenizer, prompt: m.Prompt, output_text: str, output_ids: list[int] | None = None) -> Alignment:
    segs: dict[str, tuple[int, int]] = {}
    pos = 0
    for s in prompt.segments:
        if s.name:
            segs[s.name] = (pos, pos + len(s.text))
        pos += len(s.text) + 1
    ptext = prompt.text
    p_ids, p_off = ([], []) if prompt.chat else encode_text(tokenizer, ptext)
    if output_ids is None:
        o_ids, o_off = encode_text(tokenizer, output_text)
    else:  # a frozen generation: offsets recovered token by token
        o_ids, o_off, cursor = list(output_ids), [], 0
        for tid in o_ids:
            piece = tokenizer.decode([tid], skip_special_tokens=False)
            j = output_text.find(piece.strip(), cursor) if piece.strip() else cursor
            j = cursor if j < 0 else j
            o_off.append((j, j + len(piece.strip())))
            cursor = j + len(piece.strip())
    toks: list[Token] = []
    if prompt.chat:
        toks = _chat_tokens(tokenizer, prompt)
    else:
        for tid in special_prefix(tokenizer):
            toks.append(Token(len(toks), tid, tokenizer.convert_ids_to_tokens(tid), "special", 0, 0, 0))
        declared = set(getattr(tokenizer, "all_special_ids", ()) or ())
        i = 0
        for tid, (a, b) in zip(p_ids, p_off):
            if tid in declared and ptext[a:b] == tokenizer.convert_ids_to_tokens(tid):
                # a tokenizer-declared special token written out in the prompt (``<|im_start|>``,
                # ``</s>``): template syntax, held fixed like the template's own tokens
                toks.append(Token(len(toks), tid, ptext[a:b], "special", 0, a, b))
                continue
            i += 1
            toks.append(Token(len(toks), tid, ptext[a:b] or tokenizer.convert_ids_to_tokens(tid), "prompt", i, a, b))
    for i, (tid, (a, b)) in enumerate(zip(o_ids, o_off), 1):
        toks.append(Token(len(toks), tid, output_text[a:b] or tokenizer.convert_ids_to_tokens(tid), "output", i,
                          a, b))
    return Alignment(tuple(toks), ptext, output_text, segs)


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """Special tokens the tokenizer puts before and after a text (T5 and Marian append ``</s>``),
    found by encoding a probe."""
    with_sp = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    without = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    for i in range(len(with_sp) - len(without) + 1):
        if with_sp[i:i + len(without)] == without:
            return with_sp[:i], with_sp[i + len(without):]
    return special_prefix(tokenizer), []


def encoder_ids(tokenizer, prompt: m.Prompt) -> list[int]:
    """The ids an encoder reads: the tokenizer's special prefix, the prompt, its special suffix."""
    pre, post = special_affixes(tokenizer)
    return pre + encode_text(tokenizer, prompt.text)[0] + post


def align_seq2seq(tokenizer, prompt: m.Prompt, output_text: str, output_ids: list[int] | None,
                  start_id: int) -> Alignment:
    """The alignment of an encoder–decoder: ``[enc_special..., x..., enc_special...]`` (what the
    encoder reads: the tokenizer's own special tokens around the prompt, held fixed) followed by
    the decoder input ``[start, y...]`` (the start token held fixed). ``split`` is the start's
    position. Selectors, roles and indices mean what they mean in :func:`align`."""
    if prompt.chat:
        raise ContractValidationError("a chat prompt needs a decoder-only model: an encoder–decoder reads the "
                                      "prompt as one source text", prompt.span, rule="chat",
                                      expected="a plain-text prompt")
    single = align(tokenizer, prompt, output_text, output_ids)
    pre, post = special_affixes(tokenizer)
    body = single.tokens[len(special_prefix(tokenizer)):]

    def special(tid: int) -> Token:
        return Token(0, tid, str(tokenizer.convert_ids_to_tokens(tid)), "special", 0, 0, 0)

    enc = [special(t) for t in pre] + [t for t in body if t.role != "output"] + [special(t) for t in post]
    seq = enc + [special(start_id)] + [t for t in body if t.role == "output"]
    toks = tuple(dataclasses.replace(t, position=i) for i, t in enumerate(seq))
    return Alignment(toks, single.prompt_text, single.output_text, single.segments, split=len(enc))


def _pieces(tokenizer, ids: list[int]) -> list[str]:
    return [str(p) for p in tokenizer.convert_ids_to_tokens(ids)]


def join_warning(tokenizer, prompt_text: str, output_text: str) -> str | None:
    """A warning when the tokens the model reads for ``prompt + output`` (each tokenized on its
    own, then concatenated) are not how the tokenizer reads the joined text.

    The joined text is the prompt followed by the output, directly or with one space between
    (SentencePiece tokenizers start every text at a word boundary, so ``"The dog is"`` +
    ``"black"`` reads as ``"The dog is black"``; both joins are accepted). A lone word-boundary
    token at the start of the output (SentencePiece's ``▁`` before a piece that has no
    ``▁``-prefixed form, as in ``"girl nam"`` + ``"ed Lily"``) is always reported: it is a token
    the joined text would not contain.
    """
    p_ids = encode_text(tokenizer, prompt_text)[0]
    o_ids = encode_text(tokenizer, output_text)[0]
    if not p_ids or not o_ids:
        return None
    ran = p_ids + o_ids
    first = _pieces(tokenizer, o_ids[:1])[0]
    lone = first in ("\u2581", "\u0120") and not output_text[:1].isspace()
    if not lone:
        for sep in ("", " "):
            if encode_text(tokenizer, prompt_text + sep + output_text)[0] == ran:
                return None
    joined = prompt_text + output_text
    canonical = encode_text(tokenizer, joined)[0]
    k = len(p_ids) - 1                                   # show from the prompt's last token
    return (f"the output's tokens change when joined to the prompt: the model reads "
            f"{_pieces(tokenizer, ran[k:])} (prompt and output tokenized separately), while the joined text "
            f"{joined[-40:]!r} tokenizes as {_pieces(tokenizer, canonical[k:])}; split the "
            "output at a word boundary, or write the whole text as the prompt")


def anchor_span(al: Alignment, space: str, ref: m.TextRef, span: Span) -> tuple[int, int]:
    """The character span of a text anchor in the prompt (``x``) or output text (see
    :func:`scopecheck.spec.anchors.anchor`)."""
    return anchor(al.prompt_text if space == "x" else al.output_text, space, ref, span)


def _ref_indices(al: Alignment, sel: m.Selector, ref: m.Ref, pool: list[Token]) -> list[int]:
    """1-based role indices the reference names (several for a multi-token text)."""
    n = len(pool)
    if isinstance(ref, bool):
        raise ContractValidationError("an index must be a number or a text", sel.span, rule="selector")
    if isinstance(ref, int):
        if not 1 <= ref <= n:
            raise ContractValidationError(f"index {ref} is out of range: {sel.space} has {n} tokens", sel.span,
                                          expected=f"1..{n}", rule="selector")
        return [ref]
    if isinstance(ref, m.Symbol):
        if (ref.name, sel.space) in (("T", "y"), ("n", "x")):
            return [n]
        if ref.name == "K":
            raise ContractValidationError("`K` indexes diffusion states and stages, not tokens", sel.span,
                                          expected="T (the last generated token) or n (the last prompt token)",
                                          rule="symbolic")
        raise ContractValidationError(f"symbolic index `{ref.name}` cannot be resolved", sel.span,
                                      expected="a text, an index or T", rule="symbolic")
    a, b = anchor_span(al, sel.space, ref, sel.span)
    hit = [t.index for t in pool if t.start < b and a < t.end]
    if not hit:
        raise ContractValidationError(f"{ref.text!r} covers no token", sel.span, rule="text-anchor")
    return hit


def positions(al: Alignment, sel: m.Selector) -> list[int]:
    """Sequence positions a selector names (prompt or output tokens)."""
    if sel.space not in ("x", "y"):
        raise ContractValidationError(f"{sel.space} selectors need a diffusion process", sel.span,
                                      rule="process-features")
    role = "prompt" if sel.space == "x" else "output"
    pool = al.role(role)
    if sel.segment is not None:
        if sel.segment not in al.segments:
            raise ContractValidationError(f"the prompt has no segment `{sel.segment}`", sel.span,
                                          expected=", ".join(al.segments) or "named segments", rule="unknown-name")
        a, b = al.segments[sel.segment]
        pool = [t for t in pool if t.start < b and a < t.end]
        if sel.op == "all":
            return [t.position for t in pool]
    if sel.op == "all":
        return [t.position for t in pool]
    by_index = {t.index: t for t in pool}
    idx = sorted(by_index)
    ia = _ref_indices(al, sel, sel.a, al.role(role))
    if sel.op == "at":
        chosen = ia
    elif sel.op == "range":
        ib = _ref_indices(al, sel, sel.b, al.role(role))
        if min(ia) > max(ib):
            raise ContractValidationError(f"the range runs backwards: {sel.space}[{min(ia)}:{max(ib)}] after "
                                          "tokenization", sel.span, expected="a:b with a <= b", rule="selector")
        chosen = [i for i in idx if min(ia) <= i <= max(ib)]
    elif sel.op == "lt":
        chosen = [i for i in idx if i < min(ia)]
    elif sel.op == "le":
        chosen = [i for i in idx if i <= max(ia)]
    elif sel.op == "gt":
        chosen = [i for i in idx if i > max(ia)]
    else:
        chosen = [i for i in idx if i >= min(ia)]
    return [by_index[i].position for i in chosen if i in by_index]
