"""The engine reads the closed vocabularies and the operator fallback order from
``scopecheck.spec.vocabulary`` (issue 24): one definition, the same objects."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from scopecheck.spec import model as m
from scopecheck.spec import vocabulary as vocab


def test_diffusion_vocabularies_are_the_shared_tables():
    from scopecheck.engine.diffusion import chain, denoiser, estimators

    assert chain.SAMPLERS is vocab.SAMPLERS and chain.SAMPLER_ALIASES is vocab.SAMPLER_ALIASES
    assert chain.PERTURBATIONS is vocab.PERTURBATIONS
    assert denoiser.ADAPTERS is vocab.ADAPTERS and estimators.ESTIMATORS is vocab.ESTIMATORS
    from scopecheck.engine import preflight, words

    assert preflight.TOKEN_OPERATORS is vocab.TOKEN_OPERATORS and words.AGGREGATIONS is vocab.AGGREGATIONS


def _compiled(operators):
    return SimpleNamespace(problem=SimpleNamespace(operators=dict.fromkeys(operators)), contract=None)


#: the operator sets problems can have: any of the token-backed ones with zero and mean
#: (``embedding_operators``), or the stage perturbations (``stage_problem``)
PROBLEM_OPERATORS = [*(set(c) | {"zero", "mean"}
                       for r in range(4) for c in itertools.combinations(vocab.TOKEN_OPERATORS, r)),
                     set(vocab.PERTURBATIONS)]


@pytest.mark.parametrize("ops", PROBLEM_OPERATORS, ids=lambda s: "+".join(sorted(s)))
def test_unstated_operator_is_the_default_or_the_first_of_the_fallback_order(ops):
    """``method_params`` makes the operator explicit: the entry's default where the model has it,
    else the first operator of the shared order that it has (computed here by hand)."""
    from scopecheck.engine.run import method_params
    from scopecheck.spec.registry import METHODS

    for name, e in METHODS.items():
        keys = [k for k in vocab.OPERATOR_PARAMS if k in e.params]
        if not keys:
            continue
        _, params, op = method_params(_compiled(ops), m.Method(name))
        default = e.params[keys[0]].default
        first = next(o for o in ("pad", "unk", "mask", "zero", "mean", "delete", "noop") if o in ops)
        assert op == params[keys[0]] == (default if default in ops | {"delete"} else first), (name, ops)


def test_checks_use_the_shared_fallback_order():
    """The checks pick an operator with ``vocabulary.fallback_operator`` (the order was spelled a
    second time in ``checks/faithfulness.py``, whose operator choice is now ``checks/context.py``'s): no
    module but the vocabulary defines an order."""
    import scopecheck.checks.context as f

    assert f.fallback_operator is vocab.fallback_operator
    assert not hasattr(f, "OPERATOR_FALLBACK")
