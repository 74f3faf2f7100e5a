"""Conservation: does the relevance sum to the quantity the method propagated?

For a method that claims conservation (it reports ``conserved`` and ``relevance_total`` in its
info: ``attnlrp``), with ``R`` the relevance summed over *every* input position (eligible and
held fixed, before the E masking) and ``C`` the propagated quantity (AttnLRP: the sum of the
target logits, ``z[y] - z[alt]`` under a contrastive score; the contract's log-prob differs by
the log-softmax normaliser, reported as ``absorbed_log_softmax``):

* ``gap = R - C`` (signed) and ``raw_gap = |R - C| / |C|``: what the map alone leaves unexplained;
* ``relative_gap = |R + A - C| / |C|`` (the default field) with ``A`` what the rules state they
  absorb (AttnLRP: the softmax rule's Taylor bias per attention layer and any linear biases):
  conservation up to the stated absorption, ~1e-16 in float64 and ~1e-7 in float32 when the
  stated absorption is the only leak; ``absorbed = false`` sets ``A = 0`` (then it is the raw gap);
* ``passed`` iff ``relative_gap <= tolerance``.

A method that claims no conservation (every other method; IG's sum is ``completeness``) is
refused with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from scopecheck.checks.context import setup
from scopecheck.checks.params import as_float
from scopecheck.checks.result import CheckResult
from scopecheck.errors import ContractValidationError

if TYPE_CHECKING:
    from scopecheck.engine.result import AttributionResult

#: Methods whose maps claim conservation (they report ``conserved`` and ``relevance_total``).
CONSERVING: tuple[str, ...] = ("attnlrp",)
#: Info keys of what the rules state they absorb.
ABSORBED: tuple[str, ...] = ("absorbed_softmax", "absorbed_bias")


def refuse(result: AttributionResult) -> None:
    """A :class:`ContractValidationError` unless the result's method claims conservation."""
    info = getattr(result, "info", None) or {}
    if "conserved" in info and "relevance_total" in info:
        return
    raise ContractValidationError(
        f"check `conservation` cannot run on method `{result.method}`: it claims no conservation (no relevance "
        "that sums to a stated quantity)", rule="expect",
        expected=f"a conserving method: {', '.join(CONSERVING)}",
        hint="for integrated gradients' sum against S(input) − S(baseline) use `completeness`")


def conservation(result: AttributionResult, params: Mapping[str, object] | None = None, *,
                 ranking: Sequence[int] | None = None, seed: int = 0) -> CheckResult:
    """Relative conservation gap ``|R - C| / |C|`` of a conserving method's relevance (``R`` over
    every input position) against the quantity it propagated (``C``); passed within ``tolerance``."""
    refuse(result)
    ctx = setup("conservation", result, params, ranking=ranking, seed=seed)
    tol = as_float("conservation", "tolerance", ctx.params["tolerance"])
    count = bool(ctx.params["absorbed"])
    info = result.info
    R, C = float(info["relevance_total"]), float(info["conserved"])
    stated = sum(float(info.get(k, 0.0)) for k in ABSORBED)
    A = stated if count else 0.0
    denom = abs(C)

    def rel(v: float) -> float:
        return abs(v) / denom if denom > 0 else (float("inf") if v else 0.0)

    gap = R - C
    value = rel(R + A - C)
    ok = value <= tol
    what = str(info.get("conserved_quantity", "the propagated quantity"))
    note = "" if ok else (f"relevance sums to {R:.6g}{f' (+ {A:.6g} stated absorbed)' if count else ''}, "
                          f"{what} is {C:.6g}: relative gap {value:.3g} exceeds the tolerance {tol:g}")
    extra = {"relevance_total": R, "conserved": C, "conserved_quantity": what, "absorbed": stated,
             **{k: float(info[k]) for k in (*ABSORBED, "absorbed_log_softmax") if k in info}}
    if result.score_input is not None:
        extra["score_input"] = float(result.score_input)
    return ctx.make({"relative_gap": value, "raw_gap": rel(gap), "gap": gap}, curve=(R, C, stated), passed=ok,
                    note=note, extra=extra, operator=None, tolerance=tol, absorbed=count)


__all__ = ["ABSORBED", "CONSERVING", "conservation", "refuse"]
