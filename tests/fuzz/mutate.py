"""A seeded generator of mutated contract texts, and the oracle every text must satisfy.

Mutations (one to three per text, drawn with ``random.Random(seed)``): character flips,
token deletion / duplication / swap, huge and non-finite numbers, Unicode (wide and combining
characters, tabs, CRLF, a leading byte-order mark, the line separators Python's
``splitlines`` knows), and truncation. The corpus is the project's own contracts and golden
files.

The oracle (:func:`check_one`): the text is accepted, or rejected with
:class:`~scopecheck.errors.ContractError` s that each have a line and a column whose caret lies
inside that line; nothing else is raised; an accepted text survives
``fmt`` unchanged (it parses back to the same documents, spans aside) and ``fmt`` is idempotent.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_\-]*|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\S')
NUMBERS = ["0", "-1", "1e999", "-1e999", "99999999999999999999", "9" * 5000, "1e-400", "0.0", "18446744073709551616",
           "4294967296", "1.5", "nan", "inf", "-0", "000", "1_000", "0x10", "2147483648", "-99999999999999999999"]
UNICODE = ["é", "e\u0301", "漢字", "\U0001F600", "\t", "\r\n", "\r", "\f", "\v", "\x1c", "\x1d", "\x1e", "\x85",
           "\u2028", "\u2029", "\u00a0", "\u200b", "\ufeff", "\x00", "\\", '"', "{", "}", "(", ")", "[", "]", "@", ":",
           ",", "=", "|", ";", "#", "\n"]


def corpus() -> list[str]:
    files = sorted((ROOT / "contracts").rglob("*.scope")) + sorted((ROOT / "tests" / "dsl" / "golden").rglob("*.scope"))
    return [f.read_text(encoding="utf-8") for f in files]


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(8)
        toks = [(m.start(), m.end()) for m in TOKEN.finditer(text)]
        if kind == 0 and text:                                  # character flip
            i = rng.randrange(len(text))
            text = text[:i] + chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000)])) + text[i + 1:]
        elif kind == 1 and toks:                                # token deletion
            a, b = rng.choice(toks)
            text = text[:a] + text[b:]
        elif kind == 2 and toks:                                # token duplication
            a, b = rng.choice(toks)
            text = text[:b] + " " + text[a:b] + text[b:]
        elif kind == 3 and len(toks) > 1:                       # token swap
            (a, b), (c, d) = sorted(rng.sample(toks, 2))
            text = text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
        elif kind == 4:                                         # numbers
            nums = [(m.start(), m.end()) for m in re.finditer(r"-?\d+(?:\.\d+)?", text)]
            if nums:
                a, b = rng.choice(nums)
                text = text[:a] + rng.choice(NUMBERS) + text[b:]
        elif kind == 5 and toks:                                # Unicode and line breaks
            a, _ = rng.choice(toks)
            text = text[:a] + rng.choice(UNICODE) + text[a:]
        elif kind == 6:                                         # byte-order mark / CRLF
            text = rng.choice(["\ufeff" + text, text.replace("\n", "\r\n"), text.replace("    ", "\t")])
        elif kind == 7 and text:                                # truncation
            text = text[: rng.randrange(len(text))]
    return text


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    base = corpus()
    return [mutate(rng.choice(base), rng) for _ in range(n)]


@dataclass
class Outcome:
    accepted: bool
    problem: str | None        # None when the oracle holds
    seconds: float


def _lines(text: str) -> list[str]:
    from scopecheck.errors import source_lines

    return source_lines(text.removeprefix("\ufeff"))


def check_one(text: str) -> Outcome:
    from scopecheck.dsl.format import format_document
    from scopecheck.dsl.parser import parse_text
    from scopecheck.errors import ContractError
    from scopecheck.loader import check_text

    t0 = time.perf_counter()
    try:
        sf = check_text(text, "fuzz.scope")
    except Exception as exc:  # noqa: BLE001 - the oracle: nothing but ContractError may escape
        return Outcome(False, f"raised {type(exc).__name__}: {str(exc)[:200]}", time.perf_counter() - t0)
    problem = None
    for e in sf.errors:
        if not isinstance(e, ContractError):
            problem = f"non-ContractError {type(e).__name__}"
            break
        sp = e.span
        rendered = e.render()
        lines = rendered.splitlines()
        if sp.path != "fuzz.scope" or sp.line < 1 or sp.column < 1:
            problem = f"error without a position: {lines[0][:200]}"
            break
        src_lines = _lines(text)
        if sp.line > max(1, len(src_lines)) or (src_lines and sp.column > len(src_lines[sp.line - 1]) + 1):
            problem = f"caret outside its line: {lines[0][:200]}"
            break
    accepted = not sf.errors
    if accepted and problem is None:
        try:
            once = "\n\n".join(format_document(d) for d in sf.documents) + "\n"
            again = parse_text(once, "fmt.scope")
            if list(again) != list(sf.documents):
                problem = "fmt output parses to a different contract"
            elif "\n\n".join(format_document(d) for d in again) + "\n" != once:
                problem = "fmt is not idempotent"
        except ContractError as exc:
            problem = f"fmt output no longer parses: {exc.render().splitlines()[0][:200]}"
        except Exception as exc:  # noqa: BLE001
            problem = f"fmt raised {type(exc).__name__}: {str(exc)[:200]}"
    return Outcome(accepted, problem, time.perf_counter() - t0)   # the time is reported, not judged
