"""The compiled-contract interface every consumer reads (runner, checks, report).

Two engines compile a contract: the autoregressive one
(:class:`~scopecheck.engine.compile.Compiled`) and the masked-diffusion one
(:class:`~scopecheck.engine.diffusion.compile.DiffusionCompiled`). Both implement
:class:`CompiledContract`; what only a diffusion contract has (the recorded chain, the check
protocol's chain objective, stage features) is declared here too and is ``None`` / empty /
``False`` on the autoregressive side, so a consumer asks ``compiled.chain is not None``
instead of probing attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from scopecheck.engine.align import Alignment
    from scopecheck.engine.diffusion.chain import Chain
    from scopecheck.engine.problem import AttributionProblem
    from scopecheck.spec import model as m
    from scopecheck.spec.validate import Resolved

__all__ = ["CompiledContract"]


@runtime_checkable
class CompiledContract(Protocol):
    """A contract compiled to a computation: token alignment, E/C/O positions and the problem."""

    @property
    def contract(self) -> m.Contract: ...
    @property
    def resolved(self) -> Resolved: ...
    @property
    def alignment(self) -> Alignment: ...
    @property
    def problem(self) -> AttributionProblem: ...
    @property
    def eligible(self) -> tuple[int, ...]: ...          # positions (or stage features) in E
    @property
    def fixed(self) -> tuple[int, ...]: ...             # positions in C (stated)
    @property
    def special(self) -> tuple[int, ...]: ...           # special/template positions, held fixed implicitly
    @property
    def targets(self) -> tuple[int, ...]: ...           # positions of O
    @property
    def generated(self) -> bool: ...                    # the output was produced by a decoding rule, then frozen
    @property
    def score_kind(self) -> str: ...
    @property
    def warnings(self) -> tuple[str, ...]: ...          # what the user should know (reported)

    # ---- what a diffusion contract adds (None / empty / False when autoregressive)
    @property
    def chain(self) -> Chain | None: ...                # the recorded denoising chain
    @property
    def check_objective(self) -> Any | None: ...        # the score the diffusion check protocols measure with
    @property
    def stage_features(self) -> bool: ...               # the features are denoising stages
    @property
    def info(self) -> Mapping[str, Any]: ...            # sampler settings, estimator, adapter (reported)

    def positions(self, sel: m.Selector) -> list[int]:
        """Sequence positions (or stage features) a selector names."""
        ...

    def with_model(self, model: torch.nn.Module) -> AttributionProblem:
        """The same problem (ids, E, targets, score; a diffusion contract's recorded chain) on
        another model, e.g. a re-initialised copy for the randomization check."""
        ...
