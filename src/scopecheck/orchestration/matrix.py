"""Method–contract matrix over a dataset (seed 000: evaluate methods as method–contract pairs).

Every attribution method runs under every autoregressive standard contract as a *dataset
contract* (default: ``reference:translate/heldout``, the explained token the French noun y[2],
or the whole output for ``span_prompt``), through the same runner and result store as
``scopecheck run`` (so a matrix run resumes). Per pair: deletion AOPC under the contract's
protocol with its 95% bootstrap interval, the same on random rankings, the paired Wilcoxon
p-value of the difference, Soft-NC and Soft-NS, the ground-truth rate (the top-ranked token
is a causal token), and seconds per example.

Progress: one phase over the pairs, its total (the number of pairs) fixed before the first runs;
on a stream that is not a terminal a line at least every ``LOG_INTERVAL`` (10) seconds, naming
the pair running, even while one pair's examples take minutes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scopecheck.loader import load_text
from scopecheck.orchestration.settings import RunSettings
from scopecheck.runtime.progress import Progress, progress_enabled
from scopecheck.spec import model as m
from scopecheck.spec.registry import AUTOREGRESSIVE_KINDS, METHODS

if TYPE_CHECKING:
    from rich.table import Table

    from scopecheck.orchestration.stats import AggregateResult

#: cheaper settings so the matrix runs in minutes on a CPU
FAST_PARAMS = {"integrated_gradients": "(steps = 64, baseline = zero)", "occlusion": "(operator = zero)",
               "kernel_shap": "(samples = 256, operator = zero)", "lime": "(samples = 256, operator = zero)",
               "exact_shapley": "(operator = zero)", "context_cite": "(samples = 128, operator = zero)",
               "reagent": "(steps = 32)", "heta": "(probes = 4)"}
DEFAULT_DATASET = "reference:translate/heldout"

#: the level of the paired test a cell's "beats random" states (one-sided Wilcoxon over the examples)
ALPHA = 0.05

EXPECTS = ("mean(deletion(operator = zero).aopc) > mean(random.aopc)",
           f"paired(deletion(operator = zero).aopc, random.aopc, alternative = greater).p < {ALPHA}",
           "mean(soft_nc(operator = zero).value) > 0",
           "mean(soft_ns(operator = zero).value) > 0",
           "rate(top(1) in truth) >= 0")


@dataclass(frozen=True)
class Cell:
    method: str
    contract: str
    n: int
    aopc: float
    aopc_ci: tuple[float, float]
    random_aopc: float
    random_ci: tuple[float, float]
    p: float
    soft_nc: float
    soft_ns: float
    gt_top1: float
    gt_ci: tuple[float, float]
    seconds_per_example: float
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def beats_random(self) -> bool:
        """What the paired test says at :data:`ALPHA`: the map's deletion AOPC exceeds the random
        rankings' over the examples (p < ALPHA), not merely a higher mean (p = 0.12 at n = 3 is
        no evidence)."""
        return bool(self.p < ALPHA) and self.aopc > self.random_aopc

    def beats_random_text(self) -> str:
        verdict = "yes" if self.beats_random else "no"
        return f"{verdict} (p = {self.p:.2g}, n = {self.n})"


def pair_contract(meth: str, kind: str, n: int, dataset: str = DEFAULT_DATASET, seed: int = 7) -> str:
    use = "span_prompt" if kind == "span_prompt" else f"{kind}(target = 2)"
    ds = f"{dataset}(limit = {n}, seed = {seed})" if dataset.startswith("reference:") else \
        f'{json.dumps(dataset)}(limit = {n}, id = "id")'
    body = "\n".join(f"    expect {e}" for e in EXPECTS)
    return (f'contract "matrix: {meth} under {kind}" {{\n    model reference:translate-ar\n    dataset {ds}\n'
            f"    use {use}\n    method {meth}{FAST_PARAMS.get(meth, '')}\n    seed 0\n{body}\n}}\n")


def run_matrix(n_examples: int = 3, methods: list[str] | None = None, device: str = "auto", *,
               dataset: str = DEFAULT_DATASET, store: str | None = None, resume: bool = False,
               path: str = "matrix.scope", progress: bool | None = None, stream: Any = None) -> list[Cell]:
    """Every method under every autoregressive contract it supports; ``progress`` as for a run
    (``None``: ``$SCOPECHECK_PROGRESS``, else on outside pytest), written to ``stream`` (stderr)."""
    names = methods or [m for m, i in METHODS.items() if set(i.supports) & set(AUTOREGRESSIVE_KINDS)]
    pairs = [(meth, kind) for meth in names for kind in AUTOREGRESSIVE_KINDS if kind in METHODS[meth].supports]
    first = f"{pairs[0][0]} under {pairs[0][1]}" if pairs else ""
    bar = (Progress("matrix", total=len(pairs), unit="pair", stream=stream, label=first)
           if progress_enabled(progress) else None)
    try:
        return _run_pairs(pairs, n_examples, device, dataset, store, resume, path, bar)
    finally:
        if bar is not None:
            bar.close()


def _run_pairs(pairs: list[tuple[str, str]], n_examples: int, device: str, dataset: str, store: str | None,
               resume: bool, path: str, bar: Any) -> list[Cell]:
    from scopecheck.orchestration.dataset import aggregate  # lazy: imports numpy
    from scopecheck.orchestration.runner import Runner  # lazy: imports numpy

    # the dataset path comes from the command line, not a contract: outside data is allowed
    runner = Runner(RunSettings(device=device, store_dir=store, resume=resume, allow_outside_data=True))
    cells = []
    for meth, kind in pairs:
        if bar is not None:
            bar.label = f"{meth} under {kind}"
        try:
            (doc,) = load_text(pair_contract(meth, kind, n_examples, dataset), path)
            assert isinstance(doc, m.Contract)              # pair_contract writes a contract
            cr = runner.run(doc)
            ok = [e for e in cr.examples if e.error is None]
            if cr.kind != "dataset" or cr.error is not None or not ok:
                err = cr.error or next((e.error for e in cr.examples if e.error), "no example ran")
                nan = math.nan
                cells.append(Cell(meth, kind, 0, nan, (nan, nan), nan, (nan, nan), nan, nan, nan, nan, (nan, nan),
                                  nan, (err or "").splitlines()[0]))
                continue
            ex = doc.expects

            def agg(side: m.Operand | None, e: m.Expectation) -> AggregateResult:
                assert isinstance(side, m.Aggregate), side   # EXPECTS: every side an aggregate
                return aggregate(cr, side, e, 0)

            aopc, rnd = agg(ex[0].left, ex[0]), agg(ex[0].right, ex[0])
            p = agg(ex[1].left, ex[1])
            snc, sns = agg(ex[2].left, ex[2]), agg(ex[3].left, ex[3])
            gt = agg(ex[4].left, ex[4])
            secs = sum(e.seconds for e in cr.examples) / max(1, len(cr.examples))
            cells.append(Cell(meth, kind, aopc.n, aopc.value, aopc.ci, rnd.value, rnd.ci, p.value, snc.value,
                              sns.value, gt.value, gt.ci, secs, None,
                              {"resumed": (cr.dataset or {}).get("resumed", 0), "failed_examples":
                               len(cr.examples) - len(ok)}))
        finally:
            if bar is not None:
                bar.update(1)
    return cells


def matrix_table(cells: list[Cell], dataset: str = DEFAULT_DATASET) -> Table:
    from rich.table import Table

    t = Table(title=f"Method x contract ({dataset} on reference:translate-ar; deletion with the zero-embedding "
                    "operator under each contract's protocol; 95% bootstrap intervals)")
    for col in ("method", "contract", "n", "AOPC [95% CI]", "random AOPC", f"> random (p < {ALPHA})", "Soft-NC", "Soft-NS",
                "GT top-1 rate", "s/example"):
        t.add_column(col)
    for c in cells:
        if c.error:
            t.add_row(c.method, c.contract, "0", "-", "-", "-", "-", "-", "-", c.error[:60])
            continue
        t.add_row(c.method, c.contract, str(c.n), f"{c.aopc:.3f} [{c.aopc_ci[0]:.2f}, {c.aopc_ci[1]:.2f}]",
                  f"{c.random_aopc:.3f}", c.beats_random_text(), f"{c.soft_nc:.3f}",
                  f"{c.soft_ns:.3f}", f"{c.gt_top1:.2f} [{c.gt_ci[0]:.2f}, {c.gt_ci[1]:.2f}]",
                  f"{c.seconds_per_example:.2f}")
    return t


def matrix_html(cells: list[Cell], dataset: str = DEFAULT_DATASET) -> str:
    """A self-contained HTML page: the matrix as a heatmap of AOPC above random, and the table."""
    import base64
    import html
    import io

    import matplotlib
    from matplotlib.figure import Figure

    methods = sorted({c.method for c in cells})
    kinds = list(AUTOREGRESSIVE_KINDS)
    grid = [[math.nan] * len(kinds) for _ in methods]
    for c in cells:
        if not c.error:
            grid[methods.index(c.method)][kinds.index(c.contract)] = c.aopc - c.random_aopc
    with matplotlib.rc_context({"svg.hashsalt": "scopecheck", "svg.fonttype": "path"}):
        fig = Figure(figsize=(6, 0.45 * len(methods) + 1.5), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        peak = max((abs(v) for r in grid for v in r if not math.isnan(v)), default=1.0) or 1.0
        im = ax.imshow(grid, cmap="RdBu", aspect="auto", vmin=-peak, vmax=peak)
        ax.set_xticks(range(len(kinds)), kinds, fontsize=8)
        ax.set_yticks(range(len(methods)), methods, fontsize=8)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, "—" if math.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label="AOPC − random AOPC")
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    uri = "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    rows = "".join(
        f"<tr><td>{html.escape(c.method)}</td><td>{c.contract}</td><td>{c.n}</td><td>{c.aopc:.3f} "
        f"[{c.aopc_ci[0]:.2f}, {c.aopc_ci[1]:.2f}]</td><td>{c.random_aopc:.3f}</td><td>{c.p:.2g}</td>"
        f"<td>{c.soft_nc:.3f}</td><td>{c.soft_ns:.3f}</td><td>{c.gt_top1:.2f}</td>"
        f"<td>{c.seconds_per_example:.2f}</td><td>{html.escape(c.error or '')}</td></tr>" for c in cells)
    return (f"<!doctype html><meta charset='utf-8'><title>scopecheck matrix</title><h1>Method x contract</h1>"
            f"<p>{html.escape(dataset)} on reference:translate-ar; deletion with the zero operator under each "
            f"contract's protocol; 95% bootstrap intervals; paired Wilcoxon p.</p>"
            f"<img src='{uri}' alt='matrix heatmap of AOPC above random'><table border='1'><tr><th>method</th>"
            f"<th>contract</th><th>n</th><th>AOPC [95% CI]</th><th>random AOPC</th><th>p</th><th>Soft-NC</th>"
            f"<th>Soft-NS</th><th>GT top-1</th><th>s/example</th><th>error</th></tr>{rows}</table>\n")
