"""The usual contract of published toolkits and methods (seed 000, section 6.2).

A claim that says "we used Inseq's IG" and states nothing else is read under the
contract that toolkit computes by default; the audit says that it filled them in.

Each toolkit has two score variants where it offers both:

* ``per_token``: one map per generated token ``y[t]`` (the score is ``log p(y[t] | ...)``);
* ``sequence``: one map for the generated sequence or span (the score is the summed
  log-probability ``log p(y[1:T] | x)``); ``None`` when the toolkit has no sequence score,
  in which case the per-token contract is its usual contract for every claim.

``source`` says where the contract was read from (package version and file) or, for the
toolkits not read here, that it follows the seed's description.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Toolkit:
    name: str
    contract: str                 # standard contract of the per-token score (the usual one)
    note: str
    sequence: str | None = None   # standard contract of the sequence (summed) score, if the toolkit has one
    source: str = "seed 000, section 6.2 (not read from the toolkit's source here)"

    @property
    def per_token(self) -> str:
        return self.contract

    def contract_for(self, per_token: bool) -> str:
        """The usual contract for a per-token claim, or for a sequence/span claim."""
        if per_token or self.sequence is None:
            return self.contract
        return self.sequence


TOOLKITS: dict[str, Toolkit] = {
    t.name: t
    for t in (
        Toolkit("inseq", "local_next_token",
                "Inseq attributes each generated token over the prompt and the generated prefix: for decoder-only "
                "models the whole context x, y[<t] is attributed (the `attribute_target` flag, default False, "
                "is ignored there), baseline the unk-token embedding, default score the next-token probability; "
                "it has no sequence-level score",
                sequence=None,
                source="inseq 0.7.1, inseq/attr/feat/feature_attribution.py (attribute: attribute_target=False, "
                       "per-step loop) and inseq/models/decoder_only.py (format_attribution_args)"),
        Toolkit("captum", "prompt_conditioned",
                "Captum's LLMAttribution / LLMGradientAttribution perturb (or interpolate) only the input prompt "
                "and append the target teacher-forced and unperturbed: per target token the score is "
                "log p(y[t] | x, y[<t]) with y[<t] held fixed (token_attr); the sequence score is the sum, "
                "log p(y | x) (seq_attr)",
                sequence="span_prompt",
                source="captum 0.9.0, captum/attr/_core/llm_attr.py (LLMAttribution._forward_func_by_seq / "
                       "_forward_func_by_tokens, LLMGradientAttribution.attribute, GradientForwardFunc.forward)"),
        Toolkit("context_cite", "prompt_to_output",
                "ContextCite attributes the generation's joint probability to context sources",
                sequence="prompt_to_output"),
        Toolkit("cage", "prompt_to_output",
                "CAGE attributes the final generation to prompt tokens through inter-generational influence",
                sequence="prompt_to_output"),
        Toolkit("jacobian_scopes", "local_next_token",
                "Jacobian Scopes: one local next-token contract with three scores (logit, Fisher, temperature)"),
        Toolkit("reagent", "local_next_token", "ReAGent replaces context tokens to explain the next token"),
        Toolkit("heta", "local_next_token",
                "HETA attributes a target token over the preceding context (prompt and prefix)"),
    )
}
