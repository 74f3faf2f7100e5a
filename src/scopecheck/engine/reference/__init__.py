"""Embedded reference tasks and models with causal ground truth.

The tasks (:mod:`.tasks`) are synthetic generators whose examples record, for every
output token, the prompt tokens that cause it by construction. The reference models are
small ``LlamaForCausalLM`` checkpoints trained on them by :mod:`.train` and shipped under
``weights/<name>/`` (config, float32 safetensors, word-level tokenizer, model card); load
one with ``AutoModelForCausalLM.from_pretrained(reference_dir(name))``.

Torch-free at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


REFERENCE_MODELS: dict[str, ReferenceInfo] = {
    r.name: r
    for r in (
        ReferenceInfo(
            "translate-ar", "translate", WEIGHTS_DIR / "translate-ar",
            "2-layer Llama causal LM for toy English->French translation with gender/number "
            "agreement; reproduces seed 000 Figure 1 ('The dog is black.' -> 'Le chien est noir.')",
        ),
        ReferenceInfo(
            "retrieval-ar", "retrieval", WEIGHTS_DIR / "retrieval-ar",
            "2-layer Llama causal LM for distractor/evidence/question retrieval (seed 004 "
            "curated-set style); the answer is caused by the evidence segment's color token only",
        ),
        ReferenceInfo(
            "translate-mdlm", "translate", WEIGHTS_DIR / "translate-mdlm",
            "3-layer bidirectional BERT masked LM trained as a masked-diffusion denoiser (LLaDA/MDLM "
            "objective) on the translate task: the diffusion contracts' reference model",
            family="masked_diffusion",
        ),
        ReferenceInfo(
            "capitals-mdlm", "capitals", WEIGHTS_DIR / "capitals-mdlm",
            "2-layer BERT masked-diffusion denoiser for 'City, Country.' answers; the open question has "
            "eight equally likely answers, so the stage that first commits the city or the country "
            "decides the pair (a task where denoising stages matter)",
            family="masked_diffusion",
        ),
    )
}


def reference_dir(name: str) -> Path:
    """The weights directory of reference model ``name`` (loadable with ``from_pretrained``)."""
    try:
        return REFERENCE_MODELS[name].directory
    except KeyError:
        known = ", ".join(sorted(REFERENCE_MODELS))
        raise KeyError(f"unknown reference model {name!r}; known: {known}") from None
