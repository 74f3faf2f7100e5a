"""The embedded reference tasks and models as the language names them: what a contract may write
after ``reference:`` (``model reference:<name>``, ``dataset reference:<task>/<split>``), each
model's task and family, and the static check of a ``dataset`` statement.

The validator reads these facts here; the data layer (``scopecheck.reference``: the task
generators, the shipped weights) and ``scopecheck.datasets`` build on them, so the names are
spelled once. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from scopecheck.errors import ContractValidationError
from scopecheck.spec import model as m

#: The reference tasks, in the order shown to users (the generators are
#: ``scopecheck.reference.tasks.TASKS``, keyed by these names).
TASK_NAMES: tuple[str, ...] = ("translate", "retrieval", "capitals")
#: The splits of every reference task.
SPLITS: tuple[str, ...] = ("train", "heldout")


@dataclass(frozen=True)
class ReferenceModel:
    """One embedded reference model, as a contract names it (its weights live with the data layer)."""

    name: str
    task: str
    summary: str
    family: str = "autoregressive"   # autoregressive | masked_diffusion


#: The embedded reference models by name, in the order shown to users.
MODELS: dict[str, ReferenceModel] = {
    r.name: r
    for r in (
        ReferenceModel(
            "translate-ar", "translate",
            "2-layer Llama causal LM for toy English->French translation with gender/number "
            "agreement; reproduces seed 000 Figure 1 ('The dog is black.' -> 'Le chien est noir.')",
        ),
        ReferenceModel(
            "retrieval-ar", "retrieval",
            "2-layer Llama causal LM for distractor/evidence/question retrieval (seed 004 "
            "curated-set style); the answer is caused by the evidence segment's color token only",
        ),
        ReferenceModel(
            "translate-mdlm", "translate",
            "3-layer bidirectional BERT masked LM trained as a masked-diffusion denoiser (LLaDA/MDLM "
            "objective) on the translate task: the diffusion contracts' reference model",
            family="masked_diffusion",
        ),
        ReferenceModel(
            "capitals-mdlm", "capitals",
            "2-layer BERT masked-diffusion denoiser for 'City, Country.' answers; the open question has "
            "eight equally likely answers, so the stage that first commits the city or the country "
            "decides the pair (a task where denoising stages matter)",
            family="masked_diffusion",
        ),
    )
}

#: Parameters of ``dataset "<file>"(...)``, of ``dataset hf("<name>", ...)`` and of ``dataset
#: reference:<task>/<split>(...)``.
PATH_PARAMS = ("prompt", "output", "truth", "id", "limit", "shuffle")
HF_PARAMS = ("split", "config") + PATH_PARAMS
REFERENCE_PARAMS = ("limit", "seed")
MAX_LIMIT = 1_000_000


def dataset_errors(ds: m.Dataset) -> list[ContractValidationError]:
    """Static checks of the ``dataset`` statement (names, types, ranges)."""
    allowed = {"reference": REFERENCE_PARAMS, "hf": HF_PARAMS}.get(ds.kind, PATH_PARAMS)
    errs = []
    for p in ds.params:
        if p.key not in allowed:
            errs.append(ContractValidationError(f"dataset has no parameter `{p.key}`", p.span,
                                                expected=", ".join(allowed), rule="params"))
        elif p.key in ("prompt", "output", "truth", "id") and not isinstance(p.value, m.Text):
            errs.append(ContractValidationError(f"`{p.key}` names a field, as a string", p.span,
                                                expected=f'{p.key} = "{p.key}"', rule="params"))
        elif p.key in ("split", "config") and not (isinstance(p.value, m.Text) and p.value.value):
            example = "train" if p.key == "split" else "..."
            errs.append(ContractValidationError(f"`{p.key}` names the dataset's {p.key}, as a non-empty string",
                                                p.span, expected=f'{p.key} = "{example}"', rule="params"))
        elif p.key in ("limit", "shuffle", "seed"):
            v = p.value
            lo = 1 if p.key == "limit" else 0
            hi = MAX_LIMIT if p.key == "limit" else 2 ** 63 - 1
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                errs.append(ContractValidationError(f"dataset: `{p.key} = {v}` is out of range", p.span,
                                                    expected=f"{p.key} = an integer in [{lo}, {hi}]", rule="params"))
    if ds.kind == "reference":
        task, _, split = ds.name.partition("/")
        if task not in TASK_NAMES or split not in SPLITS:
            errs.append(ContractValidationError(f"no reference dataset `{ds.name}`", ds.span,
                                                expected=", ".join(f"reference:{t}/{s}" for t in TASK_NAMES
                                                                   for s in SPLITS),
                                                rule="unknown-name"))
    return errs


__all__ = ["HF_PARAMS", "MAX_LIMIT", "MODELS", "PATH_PARAMS", "REFERENCE_PARAMS", "ReferenceModel", "SPLITS",
           "TASK_NAMES", "dataset_errors"]
