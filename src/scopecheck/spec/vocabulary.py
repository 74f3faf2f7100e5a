"""The closed vocabularies of the language, defined once: diffusion samplers, estimators and
denoiser adapters, stage perturbations, perturbation operators and their fallback order, and
the map aggregations and the fields of a dataset aggregate.

Each is a name -> one-line meaning table (the order is the order shown to users). The
validator (``scopecheck.spec.validate``, ``scopecheck.spec.registry``) and the engine
(``scopecheck.engine.run``, ``scopecheck.engine.diffusion``) import these tables instead of
spelling the names again. Torch-free.
"""

from __future__ import annotations

from typing import Iterable

#: Masked-diffusion samplers: which masked slots a stage commits.
SAMPLERS: dict[str, str] = {
    "confidence": "commit the most confident proposals first (low-confidence remasking; LLaDA, MDLM)",
    "random": "commit uniformly random masked slots (LLaDA's random remasking)",
    "left_to_right": "commit the leftmost masked slots first",
}
#: Other spellings a contract may use for a sampler.
SAMPLER_ALIASES: dict[str, str] = {"low_confidence": "confidence"}
#: The sampler a ``masked_diffusion`` process uses when it names none.
DEFAULT_SAMPLER = "confidence"

#: Output-score estimators of a masked-diffusion model (``log p(y | x) via NAME``).
ESTIMATORS: dict[str, str] = {
    "chain": "teacher-forced log-prob of committing y along the recorded unmasking order",
    "pll": "pseudo-log-likelihood: each slot masked in turn, the rest visible (not a likelihood)",
    "elbo": "Monte Carlo masked-diffusion ELBO (a lower bound): the mean of k draws, stratified t ~ U(0,1), "
            "weight E[1/t | mask pattern] = (R + 1) / |masked|",
}
#: The parameters each estimator accepts (``via elbo(samples = 8)``).
ESTIMATOR_PARAMS: dict[str, tuple[str, ...]] = {"chain": (), "pll": (), "elbo": ("samples",)}

#: How a denoiser's logits line up with the slots they predict.
ADAPTERS: dict[str, str] = {
    "plain": "logits at position i predict token i (LLaDA, MDLM, BERT-style masked LMs)",
    "shift": "logits at position i - 1 predict token i (Dream)",
}

#: What a perturbed denoising stage does instead of its recorded update.
PERTURBATIONS: dict[str, str] = {
    "noop": "the stage commits nothing (its update replaced by the identity); later stages re-balance",
    "schedule": "the stage commits `shift` more (or fewer) slots than scheduled; later stages re-balance",
    "substitute": "the stage commits an alternative step: the best other token (second_best) or a resample "
                  "with another seed (resample)",
}

#: Perturbation operators on token features: the replacement of a perturbed position.
OPERATORS: dict[str, str] = {
    "pad": "the pad token's embedding",
    "mask": "the mask token's embedding",
    "unk": "the unknown token's embedding",
    "zero": "the zero vector",
    "mean": "the mean of the vocabulary embeddings",
    "delete": "the position removed from the sequence (attention mask; no embedding)",
}
#: Operators that exist only where the model names the token (``config.<name>_token_id``);
#: ``zero`` and ``mean`` exist for every model, ``delete`` needs no embedding.
TOKEN_OPERATORS: tuple[str, ...] = ("pad", "mask", "unk")
#: Operators with a replacement embedding (what integrated gradients can start its path from).
EMBEDDING_OPERATORS: tuple[str, ...] = ("pad", "zero", "mask", "unk", "mean")
#: The order in which an operator is chosen when nobody states one (nor the method's default
#: exists for the model): the first one the problem has. Token problems always have ``zero``;
#: denoising-stage problems have the stage perturbations, of which ``noop`` comes first
#: (``delete``, a keep mask, means ``noop`` there).
OPERATOR_FALLBACK: tuple[str, ...] = ("pad", "unk", "mask", "zero", "mean", "delete", "noop")
#: Method parameters whose value names an operator (or a stage perturbation).
OPERATOR_PARAMS: tuple[str, ...] = ("baseline", "operator", "perturbation")

#: How a map is reported: per token, or also per word (each word the sum of its tokens).
AGGREGATIONS: tuple[str, ...] = ("tokens", "words")
DEFAULT_AGGREGATION = "tokens"

#: The fields of a dataset aggregate (``mean(deletion.aopc).low``) and of ``paired(a, b)``.
AGG_FIELDS: tuple[str, ...] = ("value", "n", "low", "high")
PAIRED_FIELDS: tuple[str, ...] = ("p", "statistic", "n", "median_diff", "low", "high")


def fallback_operator(available: Iterable[str]) -> str:
    """The first operator of :data:`OPERATOR_FALLBACK` in ``available``; ``LookupError`` (naming
    both) when there is none."""
    have = set(available)
    for name in OPERATOR_FALLBACK:
        if name in have:
            return name
    raise LookupError(f"no perturbation operator available (have: {', '.join(sorted(have)) or 'none'}; "
                      f"known: {', '.join(OPERATOR_FALLBACK)})")


def choices(table: Iterable[str]) -> str:
    """``a | b | c``: how a vocabulary is shown in an error's ``expected`` line."""
    return " | ".join(table)


def vocabulary_tables() -> str:
    """The documentation's tables of the closed vocabularies (Markdown), generated from the
    tables above: perturbation operators (which need the model's token, which can be an
    integrated-gradients baseline, the fallback order), stage perturbations, samplers,
    estimators, denoiser adapters and map aggregations."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    def yes(flag: bool) -> str:
        return "yes" if flag else "-"

    out = ["## Perturbation operators", "",
           "The replacement of a perturbed token position (`operator = ...` of the perturbation methods "
           "and checks, `baseline = ...` of integrated gradients).", "",
           "| operator | replaces a position by | needs the model's token | IG baseline |", "|---|---|---|---|"]
    out += [f"| `{k}` | {cell(v)} | {yes(k in TOKEN_OPERATORS)} | {yes(k in EMBEDDING_OPERATORS)} |"
            for k, v in OPERATORS.items()]
    out += ["", "When nobody states an operator (nor the method's default exists for the model), the first "
            "one the problem has of " + ", ".join(f"`{k}`" for k in OPERATOR_FALLBACK) + " is used.", ""]
    sections = (("Stage perturbations", "perturbation", "what the perturbed stage does", PERTURBATIONS),
                ("Diffusion samplers", "sampler", "which masked slots a stage commits", SAMPLERS),
                ("Output-score estimators", "estimator", "meaning", ESTIMATORS),
                ("Denoiser adapters", "adapter", "how the logits line up with the slots", ADAPTERS))
    for title, col, what, table in sections:
        out += [f"## {title}", "", f"| {col} | {what} |", "|---|---|"]
        for k, v in table.items():
            params = ESTIMATOR_PARAMS.get(k, ()) if table is ESTIMATORS else ()
            name = f"`{k}`" + (f" (`{', '.join(params)}`)" if params else "")
            out.append(f"| {name} | {cell(v)} |")
        if table is SAMPLERS:
            out += ["", f"Default `{DEFAULT_SAMPLER}`; also spelled " +
                    ", ".join(f"`{a}` (`{b}`)" for a, b in SAMPLER_ALIASES.items()) + "."]
        out.append("")
    out += ["## Aggregations and aggregate fields", "",
            "Map aggregations (`aggregate = ...`, every method): " + ", ".join(f"`{a}`" for a in AGGREGATIONS)
            + f" (default `{DEFAULT_AGGREGATION}`). Fields of a dataset aggregate: "
            + ", ".join(f"`.{f}`" for f in AGG_FIELDS) + "; of `paired(a, b)`: "
            + ", ".join(f"`.{f}`" for f in PAIRED_FIELDS) + "."]
    return "\n".join(out) + "\n"


__all__ = ["ADAPTERS", "AGGREGATIONS", "AGG_FIELDS", "DEFAULT_AGGREGATION", "DEFAULT_SAMPLER",
           "EMBEDDING_OPERATORS", "ESTIMATORS", "ESTIMATOR_PARAMS", "OPERATORS", "OPERATOR_FALLBACK", "OPERATOR_PARAMS",
           "PAIRED_FIELDS", "PERTURBATIONS", "SAMPLERS", "SAMPLER_ALIASES", "TOKEN_OPERATORS", "choices",
           "fallback_operator", "vocabulary_tables"]


if __name__ == "__main__":  # python -m scopecheck.spec.vocabulary: the documentation's tables
    print(vocabulary_tables(), end="")
