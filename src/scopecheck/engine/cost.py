"""How much model work a method will do, estimated before it runs.

``rows(method, params, E, L, V)`` is the number of sequence evaluations (forward rows, a
backward counted as two) the method asks for on a problem with ``E`` eligible features, ``L``
positions and a vocabulary of ``V``; ``rows * L`` token-positions is compared with a budget
(``--max-evaluations``, default :data:`DEFAULT_MAX_EVALUATIONS`) so that a contract that would
run for hours is refused up front with its estimate, instead of started. Torch-free.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

from scopecheck.spec.registry import METHODS

#: token-positions (rows x sequence length) one contract's method may evaluate by default
DEFAULT_MAX_EVALUATIONS = 50_000_000


def rows(method: str, params: Mapping[str, object], E: int, L: int, V: int, K: int = 1) -> float:
    """Estimated forward rows (a backward counts as two); ``K`` reads per evaluation (diffusion)."""
    p = dict(params)

    def i(key: str, default: int) -> int:
        v = p.get(key, default)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    table = {
        "saliency": 3, "gradient_x_input": 3,
        "integrated_gradients": 3 * i("steps", _default("integrated_gradients", "steps")),
        "occlusion": E + 1,
        "lime": i("samples", _default("lime", "samples")) + 1,
        "kernel_shap": i("samples", _default("kernel_shap", "samples")) + 2,
        "exact_shapley": 2.0 ** min(E, 60),
        "attention_rollout": 1,
        "reagent": i("steps", _default("reagent", "steps")) * 2,
        "context_cite": i("samples", _default("context_cite", "samples")) + 1,
        "probabilistic_as": E * V * float(p.get("top_p", 1.0) or 1.0) + L,   # (an upper bound for top_p < 1)
        "heta": _heta_rows(p, i, E),
        "stage_perturbation": K + 1,
    }
    return float(table.get(method, E + 1)) * K


def _default(method: str, key: str) -> int:
    """The registry's default of an integer parameter (the count a method runs when none is stated)."""
    entry = METHODS.get(method)
    v = entry.params[key].default if entry is not None and key in entry.params else None
    return int(v) if isinstance(v, int) else 0


#: HETA's first adaptive round of Hutchinson probes per token (``heta.START_PROBES``; the
#: registry's ``probes`` default is ``None``, adaptive).
HETA_START_PROBES = 8


def _heta_rows(p: Mapping[str, object], i: Callable[[str, int], int], E: int) -> float:
    """HETA: 6 rows per Hessian-vector product (double backward), plus the KL forwards. Adaptive
    Hutchinson is estimated at its first round (8 probes per token; more where S_i is noisy);
    ``lowrank`` costs 2 * rank products per window."""
    if p.get("curvature") == "lowrank":
        size, stride = i("window", _default("heta", "window")), i("stride", _default("heta", "stride"))
        wins = 1 if size <= 0 or size >= E else math.ceil((E - size) / (stride or max(1, size // 2))) + 1
        hvps = 2 * i("rank", _default("heta", "rank")) * wins   # (at most; rank is capped by m * d)
    else:
        hvps = i("probes", HETA_START_PROBES) * E
    return 6 * hvps + 2 * E + 3


def check_budget(method: str, params: Mapping[str, object], E: int, L: int, V: int, K: int,
                 budget: int | None) -> str | None:
    """``None`` when the estimate fits ``budget`` token-positions; otherwise the reason."""
    limit = DEFAULT_MAX_EVALUATIONS if budget is None else budget
    r = rows(method, params, E, L, V, K)
    cost = r * L
    if math.isfinite(cost) and cost <= limit:
        return None
    return (f"`{method}` would evaluate the model on about {r:.3g} rows of {L} positions ({cost:.3g} token-positions), "
            f"above the budget of {limit:.3g}")
