"""The usual contract of published toolkits and methods (seed 000, section 6.2).

A claim that says "we used Inseq's IG" and states nothing else is read under the
contract that toolkit computes by default; the audit says that it filled them in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Toolkit:
    name: str
    contract: str          # standard contract name
    note: str


TOOLKITS: dict[str, Toolkit] = {
    t.name: t
    for t in (
        Toolkit("inseq", "local_next_token",
                "Inseq attributes each generated token's log-probability over prompt and generated prefix"),
        Toolkit("captum", "local_next_token",
                "Captum's LLMAttribution targets next-token log-probabilities over the whole input"),
        Toolkit("context_cite", "prompt_to_output",
                "ContextCite attributes the generation's joint probability to context sources"),
        Toolkit("cage", "prompt_to_output",
                "CAGE attributes the final generation to prompt tokens through inter-generational influence"),
        Toolkit("jacobian_scopes", "local_next_token",
                "Jacobian Scopes: one local next-token contract with three scores (logit, Fisher, temperature)"),
        Toolkit("reagent", "local_next_token", "ReAGent replaces context tokens to explain the next token"),
        Toolkit("heta", "local_next_token",
                "HETA attributes a target token over the preceding context (prompt and prefix)"),
    )
}
