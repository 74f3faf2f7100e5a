"""Terminal token heatmap of one attribution map, headed by its whole contract.

``heatmap_text(result)`` states the contract name and kind, the five SCOPE elements
(S, C, O, P, E, with their origin), the method and every parameter, the operator, the
model, device, dtype and seed, then every token in order with its attribution (and, for
``aggregate = words``, every word with the sum of its tokens' attributions). With
color, eligible tokens are shaded by sign and magnitude (red positive, blue negative);
without color (``color=False``, or output that is not a terminal) the same facts are
plain text -- a table of ``token  score  bar`` -- with no escape codes.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from rich import box
from rich.color import Color
from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from scopecheck.errors import visible

if TYPE_CHECKING:
    from scopecheck.engine.result import AttributionResult

ELEMENTS = (("S", "score"), ("C", "fixed"), ("O", "explain"), ("P", "process"), ("E", "eligible"))
BAR_WIDTH = 20
POS_RGB = (220, 38, 38)
NEG_RGB = (37, 99, 235)


def _result(obj: Any) -> Any:
    r = getattr(obj, "result", obj) if hasattr(obj, "outcomes") else obj
    if r is None:
        raise ValueError(f"no attribution map to show: {getattr(obj, 'error', None) or 'the contract did not run'}")
    return r


def color_default(stream: Any = None) -> bool:
    """Color only for a terminal, and never when NO_COLOR is set."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def shown(text: str) -> str:
    """A token's text made visible and unambiguous (quoted, escapes for control characters)."""
    return json.dumps(text, ensure_ascii=False)


def scale(result: AttributionResult) -> float:
    """The largest |score| over eligible tokens (0 if none)."""
    vals = [abs(t.score) for t in result.tokens if t.eligible and math.isfinite(t.score)]
    return max(vals, default=0.0)


def fmt_score(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return " 0"
    return f"{v:+.3e}"


def bar(score: float, peak: float, width: int = BAR_WIDTH) -> str:
    """A signed bar: ``+`` repeated for positive, ``-`` for negative, length ∝ |score|/peak."""
    if peak <= 0 or not math.isfinite(score) or score == 0:
        return ""
    n = max(1, round(abs(score) / peak * width))
    return ("+" if score > 0 else "-") * n


def marks(t: Any) -> str:
    out = []
    if t.role == "special":
        out.append("[special]")
    if t.fixed:
        out.append("[fixed]")
    if t.target:
        out.append("[target]")
    if not t.eligible and not t.fixed and not t.target and t.role != "special":
        out.append("[not in E]")
    return " ".join(out)


def ref(t: Any) -> str:
    if t.role == "prompt":
        return f"x[{t.index}]"
    if t.role == "output":
        return f"y[{t.index}]"
    return "—"


def _bg(score: float, peak: float) -> Style:
    a = 0.0 if peak <= 0 or not math.isfinite(score) else min(1.0, abs(score) / peak)
    rgb = POS_RGB if score >= 0 else NEG_RGB
    mix = tuple(round(255 + (c - 255) * a) for c in rgb)
    fg = "white" if a > 0.55 else "black"
    return Style(color=fg, bgcolor=Color.from_rgb(*mix))


def header(result: AttributionResult, color: bool = True) -> Table:
    r = result
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold" if color else "", no_wrap=True)
    t.add_column(overflow="fold")
    for letter, el in ELEMENTS:
        cell = Text(str(r.scope.get(el) if r.scope.get(el) is not None else "—"))
        cell.append(f"   ({r.origin.get(el, '?')})", style="dim" if color else "")
        t.add_row(f"{letter}  {el}", cell)
    params = ", ".join(f"{k} = {v}" for k, v in r.method_params.items())
    t.add_row("method", f"{r.method}({params})")
    if r.info.get("toolkit"):       # a peer toolkit's adapter: which toolkit computed, with the exact call
        t.add_row("toolkit", f"{r.info['toolkit']}: {r.info.get('call', '')}")
    t.add_row("operator", str(r.operator) if r.operator is not None else "none (the method uses no baseline)")
    if getattr(r, "words", None) is not None:
        t.add_row("aggregate", "words: each word's score is the sum of its tokens' scores (the token map is kept)")
    q = getattr(r, "quantization", None)
    t.add_row("model", str(r.model) + (f"   ({q} checkpoint, dequantized to {r.dtype})" if q else ""))
    t.add_row("device", f"{r.device}   dtype {r.dtype}   seed {r.seed}")
    if getattr(r, "precision", None) and r.dtype == "float64":
        t.add_row("precision", str(r.precision))
    for w in getattr(r, "warnings", ()):
        t.add_row("warning", Text(visible(w), style="bold yellow" if color else ""))
    how = "generated by the decoding rule, then frozen" if r.generated else "given"
    t.add_row("output", f"{len(r.output_ids)} token(s), {how}; ids {list(r.output_ids)}")
    if r.special:
        t.add_row("special", ", ".join(shown(s) for s in r.special) + " (held fixed implicitly)")
    if r.score_input is not None or r.score_baseline is not None:
        si = "—" if r.score_input is None else f"{r.score_input:.6g}"
        sb = "—" if r.score_baseline is None else f"{r.score_baseline:.6g}"
        t.add_row("S values", f"S(input) = {si}   S(baseline) = {sb}   sum of map = {sum(r.scores):.6g}")
    return t


def inline_map(result: AttributionResult, color: bool) -> Text:
    """The tokens in reading order; shading (color) or markers (plain) for fixed/target/special."""
    peak = scale(result)
    text = Text()
    for i, t in enumerate(result.tokens):
        piece = t.text.replace("\n", "⏎").replace("\t", "⇥")
        if i and not t.text[:1].isspace():
            text.append(" ")  # token boundaries stay visible (word-level tokenizers carry no spaces)
        if color:
            if t.eligible:
                style = _bg(t.score, peak)
            elif t.target:
                style = Style(bold=True, underline=True, color="magenta")
            elif t.role == "special":
                style = Style(dim=True, italic=True)
            elif t.fixed:
                style = Style(dim=True, color="grey50")
            else:
                style = Style(dim=True)
            if t.target and t.eligible:
                style = style + Style(bold=True, underline=True)
            text.append(piece, style=style)
        else:
            if t.target:
                piece = f"«{piece}»"
            elif t.role == "special":
                piece = f"⟨{piece}⟩"
            elif t.fixed:
                piece = f"[{piece}]"
            text.append(piece)
    return text


def _map_table(first: tuple[tuple[str, dict[str, Any]], ...], label: str) -> Table:
    """A map table: ``first`` columns (name, options), then the text, score, bar and marks columns."""
    tab = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name, opts in first:
        tab.add_column(name, no_wrap=True, **opts)
    tab.add_column(label, no_wrap=True, overflow="ellipsis", max_width=28)
    tab.add_column("score", justify="right", no_wrap=True)
    tab.add_column("bar", no_wrap=True, min_width=BAR_WIDTH)
    tab.add_column("marks", no_wrap=True)
    return tab


def _cells(text: str, score: float, peak: float, shaded: bool, color: bool) -> tuple[Text, str, Text]:
    """The text (shaded by |score| / peak when ``shaded``, dim otherwise), score and bar cells."""
    b = bar(score, peak)
    if color:
        tok = Text(shown(text), style=_bg(score, peak) if shaded else Style(dim=True))
        bt = Text(b.replace("+", "█").replace("-", "█"), style="red" if score > 0 else "blue")
    else:
        tok, bt = Text(shown(text)), Text(b)
    return tok, fmt_score(score), bt


def token_table(result: AttributionResult, color: bool) -> Table:
    peak = scale(result)
    tab = _map_table((("pos", {"justify": "right"}), ("role", {}), ("ref", {})), "token")
    for t in result.tokens:
        tab.add_row(str(t.position), t.role, ref(t), *_cells(t.text, t.score, peak, t.eligible, color), marks(t))
    return tab


def word_marks(w: Any) -> str:
    out = []
    if w.role == "special":
        out.append("[special]")
    if w.target:
        out.append("[target]")
    if w.eligible == "partial":
        out.append("[partial: eligible tokens only]")
    elif w.eligible == "none" and w.role != "special":
        out.append("[not in E]")
    return " ".join(out)


def word_peak(words: Any) -> float:
    vals = [abs(w.score) for w in words if w.eligible != "none" and math.isfinite(w.score)]
    return max(vals, default=0.0)


def inline_words(words: Any, color: bool) -> Text:
    """The words in reading order, shaded like the token map (plain: ``word(+1.2e-03)``)."""
    peak = word_peak(words)
    text = Text()
    for i, w in enumerate(words):
        if i:
            text.append(" ")
        piece = shown(w.text)[1:-1] if w.text.strip() else shown(w.text)
        if color:
            style = _bg(w.score, peak) if w.eligible != "none" else Style(dim=True)
            if w.target:
                style = style + Style(bold=True, underline=True)
            text.append(piece, style=style)
        elif w.target:
            text.append(f"«{piece}»")
        elif w.role == "special":
            text.append(f"⟨{piece}⟩")
        else:
            text.append(piece)
    return text


def word_table(words: Any, color: bool) -> Table:
    """One row per word: its tokens' positions, its score (the sum of theirs), a bar and marks."""
    peak = word_peak(words)
    tab = _map_table((("positions", {"justify": "right"}), ("role", {})), "word")
    for w in words:
        pos = str(w.positions[0]) if len(w.positions) == 1 else f"{w.positions[0]}-{w.positions[-1]}"
        tab.add_row(pos, w.role, *_cells(w.text, w.score, peak, w.eligible != "none", color), word_marks(w))
    return tab


def legend(result: AttributionResult) -> str:
    peak = scale(result)
    return (f"scores: + supports S, − opposes it; bar/shade ∝ |score| / max|score over E| = {peak:.3e}.  "
            "[fixed] held fixed (C, or special), [target] in O, [special] special token, "
            "[not in E] not eligible; scores outside E are 0 by contract.")


def heatmap_text(result: AttributionResult, color: bool | None = None, width: int = 110) -> str:
    """The whole contract and the token heatmap of ``result`` (an AttributionResult or a
    ContractRun), as a string. ``color=None``: color only when stdout is a terminal."""
    r = _result(result)
    if color is None:
        color = color_default()
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=bool(color), color_system="truecolor" if color else None,
                      no_color=not color, highlight=False, emoji=False, markup=False, legacy_windows=False,
                      force_jupyter=False, soft_wrap=False)
    title = Text(f"contract {shown(r.name)}", style="bold" if color else "")
    title.append(f"  kind {r.kind}")
    if r.path:
        title.append(f"  ({r.path}:{r.line})", style="dim" if color else "")
    console.print(title)
    console.print(header(r, bool(color)))
    console.print()
    d = getattr(r, "diffusion", None)
    if d:
        console.print(Text(
            f"chain: sampler {d['sampler']}, {d['steps']} stages, {d['length']} slots, blocks {d['blocks']}, "
            f"temperature {d['temperature']}, seed {d['sampler_seed']}, {d['chain_mode']}; estimator {d['estimator']}"
            + (f" (samples {d['samples']}, s.e. {d.get('elbo_standard_error', float('nan')):.3g})" if d.get("samples")
               else "") + f"; adapter {d['adapter']}", style="bold" if color else ""))
        for st in d["chain"]["steps"]:
            words = " ".join(shown(w) for w in st["texts"]) or "(nothing)"
            slots = ",".join(str(p) for p in st["positions"]) or "-"
            console.print(f"  stage {st['stage']:>2}: slots {slots:<8} {words}")
        console.print()
    console.print(Text("map: ", style="bold" if color else "") + inline_map(r, color))
    console.print()
    console.print(token_table(r, color))
    console.print(Text(legend(r), style="dim" if color else ""))
    words = getattr(r, "words", None)
    if words is not None:
        console.print()
        console.print(Text("words: ", style="bold" if color else "") + inline_words(words, color))
        console.print()
        console.print(word_table(words, color))
        console.print(Text(f"word scores: the sum of the word's token scores (tokens outside E contribute 0); "
                           f"{len(words)} word(s) from {len(r.tokens)} token(s); [partial: eligible tokens only] "
                           "a word only partly in E, scored over its eligible tokens.", style="dim" if color else ""))
    out = buf.getvalue()
    if not color:
        out = "\n".join(line.rstrip() for line in out.splitlines()) + "\n"
    return out


def print_heatmap(result: AttributionResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(Text.from_ansi(heatmap_text(result, color=console.is_terminal and not console.no_color,
                                              width=console.width)))


__all__ = ["heatmap_text", "print_heatmap"]
