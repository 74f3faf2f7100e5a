"""Embedded reference tasks and models with causal ground truth.

The tasks (:mod:`.tasks`) are synthetic generators whose examples record, for every
output token, the prompt tokens that cause it by construction. The reference models are
small ``LlamaForCausalLM`` checkpoints trained on them by :mod:`scopecheck.training` and shipped under
``weights/<name>/`` (config, float32 safetensors, word-level tokenizer, model card); load
one with ``AutoModelForCausalLM.from_pretrained(reference_dir(name))``.

Torch-free at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scopecheck.spec.references import MODELS

from .tasks import TASKS, Example, TaskInfo, figure1_example, generate, split_of, vocabulary

__all__ = [
    "Example",
    "TaskInfo",
    "TASKS",
    "generate",
    "vocabulary",
    "split_of",
    "figure1_example",
    "ReferenceInfo",
    "REFERENCE_MODELS",
    "WEIGHTS_DIR",
    "reference_dir",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ReferenceInfo:
    name: str
    task: str
    directory: Path
    summary: str
    family: str = "autoregressive"   # autoregressive | masked_diffusion


#: The reference models with their weights directories; names, tasks, families and summaries are
#: :data:`scopecheck.spec.references.MODELS` (what a contract may name).
REFERENCE_MODELS: dict[str, ReferenceInfo] = {
    r.name: ReferenceInfo(r.name, r.task, WEIGHTS_DIR / r.name, r.summary, r.family) for r in MODELS.values()
}


def reference_dir(name: str) -> Path:
    """The weights directory of reference model ``name`` (loadable with ``from_pretrained``)."""
    try:
        return REFERENCE_MODELS[name].directory
    except KeyError:
        known = ", ".join(sorted(REFERENCE_MODELS))
        raise KeyError(f"unknown reference model {name!r}; known: {known}") from None
