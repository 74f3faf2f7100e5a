"""A method's or check's parameter, declared once: :class:`ParamSpec` (kind, range or allowed
values, default, help) and its short constructors (``I``, ``F``, ``C``, ``B``, ``batch``,
``samples``, ``operator``).

Below the method and check registries (:mod:`scopecheck.spec.registry`,
:mod:`scopecheck.spec.check_registry`) and anything that declares entries for them (the toolkit
adapters of :mod:`scopecheck.spec.adapters`), so none of those imports another to declare a
parameter. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scopecheck.spec import model as m
from scopecheck.spec import vocabulary as vocab

PARAM_KINDS: tuple[str, ...] = ("int", "float", "bool", "choice", "count_or_fraction", "selector", "any")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: ``kind`` is ``int`` | ``float`` | ``bool`` | ``choice`` |
    ``count_or_fraction`` | ``selector`` | ``any``. Numeric bounds are inclusive unless
    ``open_low`` (``low < x``). ``default`` is the value used when the contract states none;
    ``None`` means the engine chooses (``default_text`` says how, e.g. ``adaptive``)."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    open_low: bool = False
    default: object = None
    help: str = ""
    default_text: str | None = None

    def describe(self) -> str:
        """The allowed values, as an error's ``expected`` line shows them."""
        if self.kind == "choice":
            return " | ".join(self.choices)
        if self.kind == "bool":
            return "true | false"
        if self.kind == "selector":
            return 'a selector, e.g. x["black"]'
        if self.kind == "count_or_fraction":
            return f"a fraction in (0, 1] or a count 1..{int(self.high or 0)}"
        if self.kind in ("int", "float"):
            lo = "(" if self.open_low else "["
            hi = "]"
            num = "an integer" if self.kind == "int" else "a finite number"
            return f"{num} in {lo}{_n(self.low)}, {_n(self.high)}{hi}"
        return "a value"

    def shown_default(self) -> str:
        """The default as a contract would write it, or how the engine chooses it."""
        if self.default_text is not None:
            return self.default_text
        return show_value(self.default)

    def summary(self) -> str:
        """``values: help (default X)``: one line of ``scopecheck list`` and the audit."""
        values = self.describe() if self.kind in ("choice", "bool") else self.kind
        body = f"{values}: {self.help}" if self.help else values
        return f"{body} (default {self.shown_default()})"

    @property
    def type_name(self) -> str:
        """The Python type a value is coerced to (``int``, ``float``, ``bool``, ``str``)."""
        return {"choice": "str"}.get(self.kind, self.kind)


def _n(x: float | None) -> str:
    if x is None:
        return "∞"
    return str(int(x)) if float(x).is_integer() else str(x)


def fits(spec: ParamSpec, v: object) -> bool:
    """Whether ``v`` fits ``spec``: the one rule for a registry entry's Python default (``str``,
    number, ``bool``) and for a contract's DSL value (:data:`scopecheck.spec.model.Value`: a name
    is an ``Ident`` or ``Text``, a selector a ``Selector`` or ``Text``; checked by
    :mod:`scopecheck.spec.params`). Numbers must be finite; ``bool`` is not a number."""
    k = spec.kind
    if k == "any":
        return True
    if k == "bool":
        return isinstance(v, bool)
    if k == "choice":
        name = v.name if isinstance(v, m.Ident) else v.value if isinstance(v, m.Text) else v
        return isinstance(name, str) and name in spec.choices
    if k == "selector":
        return isinstance(v, (str, m.Selector, m.Text))
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    x = float(v)
    if not math.isfinite(x):
        return False
    if k == "int" and not isinstance(v, int):
        return False
    if k == "count_or_fraction":
        return 1 <= v <= (spec.high or math.inf) if isinstance(v, int) else 0.0 < x <= 1.0
    lo_ok = spec.low is None or (x > spec.low if spec.open_low else x >= spec.low)
    hi_ok = spec.high is None or x <= spec.high
    return lo_ok and hi_ok


def show_value(v: object) -> str:
    """A Python default as the DSL writes it: ``true``, ``0.75``, ``5e-05``, ``pad``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)


def I(low: int, high: int, default: int | None = None, help: str = "",  # noqa: E743 - short constructors keep
      default_text: str | None = None) -> ParamSpec:                     # the table readable
    return ParamSpec("int", low, high, default=default, help=help, default_text=default_text)


def F(low: float, high: float | None = None, open_low: bool = False, default: float | None = None,
      help: str = "") -> ParamSpec:
    return ParamSpec("float", low, high, open_low=open_low, default=default, help=help)


def C(*choices: str, default: str | None = None, help: str = "") -> ParamSpec:
    return ParamSpec("choice", choices=choices, default=default, help=help)


def B(default: bool, help: str = "") -> ParamSpec:
    return ParamSpec("bool", default=default, help=help)


BATCH_HELP = "model evaluations per forward batch"
FROM_MEMORY = "as many as the free memory allows"


def batch(help: str = BATCH_HELP) -> ParamSpec:
    """``batch_size``: an engine setting; when not given it is chosen from the free memory
    (halving on out-of-memory), so its default is no number."""
    return I(1, 65_536, help=help, default_text=FROM_MEMORY)


SAMPLES_MAX = 1_000_000


def samples(default: int, help: str = "") -> ParamSpec:
    return I(1, SAMPLES_MAX, default, help)


def operator(default: str, help: str = "the replacement of a perturbed token") -> ParamSpec:
    return C(*vocab.OPERATORS, default=default, help=help)


__all__ = ["B", "BATCH_HELP", "C", "F", "FROM_MEMORY", "I", "PARAM_KINDS", "ParamSpec", "SAMPLES_MAX", "batch", "fits", "operator", "samples",
           "show_value"]
