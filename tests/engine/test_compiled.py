"""Both engines' compiled contracts implement :class:`CompiledContract`; consumers read it, never probe."""

from __future__ import annotations

import pytest

from scopecheck.engine.compile import Compiled
from scopecheck.engine.compiled import CompiledContract
from scopecheck.engine.diffusion.compile import DiffusionCompiled
from scopecheck.engine.run import run

AR = ('contract "t" {\n model reference:translate-ar\n prompt "Translate to French: The dog is black."\n'
      ' output "Le chien est noir."\n use local_next_token(target = "noir")\n method occlusion(operator = pad)\n seed 0\n}\n')
MDLM = ('contract "t" {\n model reference:translate-mdlm\n prompt "Translate to French: The dog is black."\n'
        ' output "Le chien est noir."\n score log p(y | x) via chain\n fixed nothing\n explain y\n eligible x\n'
        ' process masked_diffusion(sampler = confidence, steps = 8)\n method occlusion(operator = mask)\n seed 0\n}\n')
MEMBERS = [n for n in CompiledContract.__dict__ if not n.startswith("_")]


@pytest.fixture(scope="module")
def ar():
    return run(AR)


@pytest.fixture(scope="module")
def mdlm():
    return run(MDLM)


def test_protocol_declares_what_consumers_read():
    # the diffusion-only members are part of the interface, not probed with getattr
    assert {"chain", "check_objective", "stage_features", "info", "warnings", "positions", "with_model"} <= set(MEMBERS)


@pytest.mark.parametrize("which,cls", [("ar", Compiled), ("mdlm", DiffusionCompiled)])
def test_both_engines_implement_the_protocol(which, cls, request):
    compiled = request.getfixturevalue(which).compiled
    assert type(compiled) is cls
    assert isinstance(compiled, CompiledContract)
    missing = [n for n in MEMBERS if not hasattr(compiled, n)]
    assert missing == []


def test_autoregressive_side_has_no_chain(ar):
    c = ar.compiled
    assert c.chain is None and c.check_objective is None and c.stage_features is False and dict(c.info) == {}
    # positions through the protocol agree with the alignment's own resolution
    from scopecheck.dsl.parser import parse_text
    from scopecheck.engine.align import positions

    sel = parse_text('contract "s" { explain x["dog"] }')[0].scope.explain
    assert c.positions(sel) == positions(c.alignment, sel) == ar.positions('x["dog"]')
    assert len(c.positions(sel)) >= 1


def test_diffusion_side_has_its_chain(mdlm):
    c = mdlm.compiled
    assert c.chain is not None and c.check_objective is not None and c.stage_features is False
    assert mdlm.diffusion is not None and mdlm.diffusion["chain"]["steps"]
    assert c.warnings == ()


def test_with_model_rebuilds_the_same_problem_on_the_same_model(ar):
    # the autoregressive with_model (formerly the checks' own rebuild) reproduces the compiled score
    import torch

    c = ar.compiled
    pb = c.problem
    again = c.with_model(pb.objective.model)
    assert torch.equal(again.ids, pb.ids) and list(again.eligible) == list(pb.eligible)
    assert set(again.operators) == set(pb.operators)
    with torch.no_grad():
        assert torch.allclose(again.objective(again.embeds[None]), pb.objective(pb.embeds[None]), rtol=0, atol=1e-9)


def test_an_impossible_schedule_reaching_the_diffusion_compiler_is_a_positioned_error():
    # the validator refuses it first; the compiler's own guard must still raise a domain error
    # (it named InvalidSettings without importing it: a NameError instead)
    from types import SimpleNamespace

    from scopecheck.dsl.parser import parse_text
    from scopecheck.engine.diffusion.compile import sampler_settings
    from scopecheck.errors import ContractValidationError

    doc = parse_text(MDLM.replace("steps = 8)", "steps = 5, blocks = 2)"))[0]
    lm = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(), generation_config=None))
    with pytest.raises(ContractValidationError) as err:
        sampler_settings(doc, doc.scope.process, lm, None)
    assert err.value.rule == "params" and "multiple of blocks" in str(err.value)
    assert err.value.span.line == doc.scope.process.span.line
