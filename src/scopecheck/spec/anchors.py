"""Text anchors: where a selector's text (``x["dog"]``, ``y["noir"]@2``) lies in the prompt or
output text, by exact substring search.

``occurrences`` lists every start of a text; ``anchor`` picks the one a reference names and
raises a positioned ``text-anchor`` error when the text is absent, ambiguous or the occurrence
out of range. The engine's token alignment and the dataset reader (a truth item is matched like
``x["..."]``) use the same search. Torch-free.
"""

from __future__ import annotations

from scopecheck.errors import ContractValidationError, Span
from scopecheck.spec import model as m


def occurrences(text: str, needle: str) -> list[int]:
    """Every start offset of ``needle`` in ``text`` (overlapping ones included); none for ``""``."""
    hits, i = [], text.find(needle)
    while i >= 0 and needle:
        hits.append(i)
        i = text.find(needle, i + 1)
    return hits


def anchor(text: str, space: str, ref: m.TextRef, span: Span) -> tuple[int, int]:
    """The character range ``[start, end)`` of ``ref`` in ``text``, the prompt (``space == "x"``)
    or the output text."""
    where = "prompt" if space == "x" else "output"
    hits = occurrences(text, ref.text)
    if not hits:
        raise ContractValidationError(f"{ref.text!r} does not occur in the {where} text", span,
                                      expected=f"a substring of the {where}: {text!r}", rule="text-anchor")
    if ref.occurrence is not None:
        if not 1 <= ref.occurrence <= len(hits):
            raise ContractValidationError(f"{ref.text!r} occurs {len(hits)} time(s), not {ref.occurrence}", span,
                                          expected=f"@1..@{len(hits)}", rule="text-anchor")
        s = hits[ref.occurrence - 1]
    elif len(hits) > 1:
        raise ContractValidationError(f"{ref.text!r} is ambiguous: it occurs {len(hits)} times in the {where}", span,
                                      expected="one occurrence", hint=f'name one: "{ref.text}"@1', rule="text-anchor")
    else:
        s = hits[0]
    return s, s + len(ref.text)


__all__ = ["anchor", "occurrences"]
