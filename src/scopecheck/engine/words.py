"""Word-level attribution maps (``method ...(aggregate = words)``): the tokens of a map grouped into
words, each word's score the sum of its tokens' scores. Plain functions, torch-free.

**What a word is.** A maximal run of consecutive prompt tokens (or output tokens) with no whitespace
between them in the text they were cut from: ``" g" "ir" "l"`` is ``girl``, and ``" Lily" "."`` is
``Lily.`` (punctuation written against a word belongs to it, as with SentencePiece ``▁`` and
byte-level BPE ``Ġ`` word markers: a piece without the marker continues the word before it).
Boundaries are read from the tokenizer:

1. the tokens' character offsets into the prompt / output text (the offset mapping of a fast
   tokenizer, which the alignment records): whitespace between two tokens, or at the start of a
   token, starts a new word;
2. the tokenizer piece, for a token without a usable offset (e.g. a lone SentencePiece ``▁`` of a
   generated output): a piece beginning with ``▁`` (SentencePiece / llama), ``Ġ`` (byte-level BPE)
   or whitespace starts a new word.

A token that is only whitespace (a lone ``▁``, a newline) joins the word after it, so every word
but a trailing run of whitespace has visible text. The tokenizer's own ``word_ids()`` are not used:
pre-tokenizers disagree on what a word is (llama's has no word split at all, GPT-2's splits
punctuation off), while whitespace in the text is the same for every tokenizer.

Special tokens (BOS, chat-template tokens), masked-diffusion stages and padding slots are each a
group of their own, and a word never spans two roles or a special token.

**Scores.** A word's score is ``math.fsum`` of its tokens' scores: the exact sum, rounded once.
Tokens outside E have score exactly 0, so they contribute 0. A word mixing eligible and
non-eligible tokens is ``partial``: its score is the sum over its eligible tokens only (the rest of
the word was held fixed or excluded by the contract, not attributed), and every report marks it so
it is not read as the attribution of the whole word.

Shapes: ``L`` tokens in the map (positions ``0..L-1``), ``W`` words; a grouping is a tuple of ``W``
position tuples that partition ``range(L)`` in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from scopecheck.spec.vocabulary import AGGREGATIONS, DEFAULT_AGGREGATION

if TYPE_CHECKING:
    from scopecheck.engine.result import AttributionResult

#: Piece prefixes that mark the start of a word: SentencePiece (llama, T5) and byte-level BPE (GPT-2).
WORD_MARKERS = ("▁", "Ġ")
#: Roles whose tokens are cut from a text and can join into words; every other role is one group per token.
TEXT_ROLES = ("prompt", "output")

Grouping = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class WordScore:
    text: str                    # the word as written (no surrounding whitespace); a special token's text
    role: str                    # prompt | output | special | stage | pad
    positions: tuple[int, ...]   # its tokens' positions in the map, consecutive
    score: float                 # fsum of its tokens' scores (tokens outside E contribute exactly 0)
    eligible: str                # all | partial | none: how many of its tokens are in E
    target: bool                 # some token of it is in O
    start: int | None            # char offsets of ``text`` in the prompt / output text; None without offsets
    end: int | None

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "role": self.role, "positions": list(self.positions), "score": self.score,
                "eligible": self.eligible, "target": self.target, "start": self.start, "end": self.end}


def _usable(span: tuple[int, int], text: str | None) -> bool:
    a, b = span
    return text is not None and 0 <= a < b <= len(text)


def _blank(piece: str) -> bool:
    """A piece that is only whitespace or word markers (``▁``, ``Ġ``, ``Ċ`` newline of byte-level BPE)."""
    return piece.strip("".join(WORD_MARKERS) + "Ċ \t\r\n") == ""


def word_groups(roles: Sequence[str], spans: Sequence[tuple[int, int]], texts: Mapping[str, str],
                pieces: Sequence[str]) -> Grouping:
    """Group positions into words.

    roles (L,): each token's role; spans (L,): ``(start, end)`` char offsets into ``texts[role]``
    (an empty or out-of-range span is "no offset"); texts: role -> the text its tokens were cut
    from; pieces (L,): the tokenizer's piece of each token (``▁upon``, ``Ġupon``, ``upon``)
    -> groups (W,) of positions partitioning ``range(L)`` in order."""
    L = len(roles)
    if not (len(spans) == len(pieces) == L):
        raise ValueError(f"word_groups: {L} roles, {len(spans)} spans and {len(pieces)} pieces")
    groups: list[tuple[int, ...]] = []
    cur: list[int] = []
    cur_role: str | None = None
    cur_blank = True          # every token of the current word so far is whitespace
    prev_end: int | None = None  # end offset of the current word's last token with an offset
    for i in range(L):
        role = roles[i]
        if role not in TEXT_ROLES:
            if cur:
                groups.append(tuple(cur))
            groups.append((i,))
            cur, cur_role, cur_blank, prev_end = [], None, True, None
            continue
        text = texts.get(role)
        usable = _usable(spans[i], text)
        own = text[spans[i][0]:spans[i][1]] if usable else ""  # type: ignore[index]
        piece = pieces[i] or ""
        blank = own.strip() == "" if usable else _blank(piece)
        if cur and role == cur_role:
            gap = text[prev_end:spans[i][0]] if usable and prev_end is not None and prev_end <= spans[i][0] else ""
            leading = (any(c.isspace() for c in gap) or own[:1].isspace() or piece[:1] in WORD_MARKERS
                       or piece[:1].isspace())
            new = leading and not cur_blank
        else:
            new = True
        if new:
            if cur:
                groups.append(tuple(cur))
            cur, cur_role, cur_blank, prev_end = [], role, True, None
        cur.append(i)
        cur_blank = cur_blank and blank
        if usable:
            prev_end = max(prev_end or 0, spans[i][1])
    if cur:
        groups.append(tuple(cur))
    return tuple(groups)


def aggregate(scores: Sequence[float], groups: Grouping) -> list[float]:
    """scores (L,), groups (W,) -> word scores (W,): each the exact sum of its tokens' scores, rounded once."""
    return [math.fsum(float(scores[p]) for p in g) for g in groups]


def check_partition(groups: Grouping, length: int) -> None:
    """Raise ``ValueError`` unless ``groups`` are non-empty runs of consecutive positions covering
    ``range(length)`` exactly once, in order."""
    flat = [p for g in groups for p in g]
    if flat != list(range(length)) or any(not g for g in groups):
        raise ValueError(f"a word grouping must partition positions 0..{length - 1} into consecutive runs")


def word_text(positions: Sequence[int], spans: Sequence[tuple[int, int]], text: str | None,
              pieces: Sequence[str]) -> tuple[str, int | None, int | None]:
    """One word's text and its char offsets in ``text``: the text its tokens cover, whitespace
    trimmed; from the pieces (markers read as spaces) when none of its tokens has an offset."""
    own = [spans[p] for p in positions if _usable(spans[p], text)]
    if own and text is not None:
        a, b = min(s for s, _ in own), max(e for _, e in own)
        raw = text[a:b]
        stripped = raw.strip()
        if not stripped:
            return raw, a, b
        a += len(raw) - len(raw.lstrip())
        return stripped, a, a + len(stripped)
    joined = "".join(pieces[p] for p in positions)
    for mark in WORD_MARKERS:
        joined = joined.replace(mark, " ")
    return (joined.strip() or joined), None, None


def word_map(roles: Sequence[str], spans: Sequence[tuple[int, int]], texts: Mapping[str, str],
             pieces: Sequence[str], scores: Sequence[float], eligible: Sequence[bool],
             targets: Sequence[bool]) -> tuple[WordScore, ...]:
    """The word-level map. roles, spans, pieces, scores, eligible, targets: (L,) per token;
    texts: role -> text -> (W,) words in order, ``sum(w.score) == sum(scores)`` up to rounding."""
    groups = word_groups(roles, spans, texts, pieces)
    check_partition(groups, len(roles))
    sums = aggregate(scores, groups)
    out = []
    for g, s in zip(groups, sums):
        role = roles[g[0]]
        if role in TEXT_ROLES:
            text, a, b = word_text(g, spans, texts.get(role), pieces)
        else:
            text, a, b = pieces[g[0]], None, None
        n_e = sum(bool(eligible[p]) for p in g)
        out.append(WordScore(text, role, tuple(g), s, "all" if n_e == len(g) else "partial" if n_e else "none",
                             any(bool(targets[p]) for p in g), a, b))
    return tuple(out)


def alignment_inputs(alignment: Any, pieces: Sequence[str] | None = None
                     ) -> tuple[list[str], list[tuple[int, int]], dict[str, str], list[str]]:
    """roles (L,), spans (L,), texts and pieces (L,) of an engine alignment; without ``pieces``
    each token's surface text stands for its piece."""
    toks = alignment.tokens
    roles = [t.role for t in toks]
    spans = [(int(t.start), int(t.end)) for t in toks]
    texts = {"prompt": alignment.prompt_text, "output": alignment.output_text}
    return roles, spans, texts, list(pieces) if pieces is not None else [t.text for t in toks]


def words_of(result: AttributionResult, pieces: Sequence[str] | None = None) -> tuple[WordScore, ...]:
    """The word-level map of an :class:`~scopecheck.engine.result.AttributionResult` (its alignment
    gives the offsets; ``pieces``: the tokenizer's pieces of its tokens, when at hand)."""
    compiled = result.compiled
    if compiled is None:
        raise ValueError("word aggregation needs the run's token alignment (result.compiled)")
    roles, spans, texts, pcs = alignment_inputs(compiled.alignment, pieces)
    if len(roles) != len(result.tokens):
        raise ValueError(f"the alignment has {len(roles)} tokens, the map {len(result.tokens)}")
    toks = result.tokens
    return word_map(roles, spans, texts, pcs, [t.score for t in toks], [t.eligible for t in toks],
                    [t.target for t in toks])
