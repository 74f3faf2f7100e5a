"""Errors raised on purpose and caught precisely: a method's refusal (:class:`MethodRefused`)
is reported on the contract's ``method`` line as "`name` cannot run this contract"; anything
else a method raises is a bug, reported as an internal error (``--debug`` re-raises it), never
relabelled as a refusal."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scopecheck.engine.methods import run_method
from scopecheck.engine.models import LoadOptions
from scopecheck.engine.run import _method_call, execute
from scopecheck.errors import (
    ContractValidationError, InternalError, InvalidSettings, MethodRefused, Unavailable,
)
from scopecheck.loader import load_text
from scopecheck.spec import registry

SRC = Path(__file__).resolve().parents[2] / "src" / "scopecheck"

CONTRACT = """contract "refusal" {{
    model reference:translate-ar
    prompt "Translate to French: The dog is black."
    output "Le chien est noir."
    use local_next_token(target = 4)
    method {method}
    seed 0
}}
"""


def buggy_method(problem, params):
    """A registered method with a bug: a lookup that fails (not a refusal)."""
    return {}["no such key"]


def refusing_method(problem, params):
    """A registered method that refuses on purpose."""
    raise MethodRefused("needs a problem this one is not", hint="try another contract")


@pytest.fixture
def registered():
    names = []

    def register(name: str, fn) -> str:
        registry.register_method(name, family="gradient", supports=("local_next_token",),
                                 impl=f"{__name__}:{fn.__name__}")
        names.append(name)
        return name

    yield register
    for name in names:
        registry.unregister_method(name)


def _contract(method: str):
    (c,) = load_text(CONTRACT.format(method=method), "<refusal>.scope")
    return c


def test_a_bug_in_a_method_is_an_internal_error_not_a_refusal(registered):
    """A bare KeyError inside a method used to be caught with the refusals and shown as
    "`buggy` cannot run this contract: 'no such key'"; it is a bug and says so."""
    from scopecheck.orchestration.runner import Runner

    c = _contract(registered("buggy", buggy_method))
    with pytest.raises(InternalError) as err:
        execute(c, LoadOptions("cpu"))
    assert isinstance(err.value.__cause__, KeyError) and err.value.method == "buggy"
    assert not isinstance(err.value, (ValueError, KeyError))       # no broad except relabels it again
    msg = str(err.value)
    assert "internal error in method `buggy`: KeyError: 'no such key'" in msg and "rerun with --debug" in msg
    assert "cannot run this contract" not in msg

    shown = Runner(device="cpu").execute(c).error                   # the runner's contract isolation
    assert shown is not None and "internal error in method `buggy`" in shown and "--debug" in shown
    assert "InternalError:" not in shown                      # said once, not prefixed by its type name
    assert "cannot run this contract" not in shown
    assert shown.startswith(f"<refusal>.scope:{c.spans.get('name', c.span).line}:")
    with pytest.raises(InternalError):                              # --debug re-raises it
        Runner(device="cpu", debug=True).execute(c)


def test_a_registered_methods_refusal_is_positioned_on_the_method(registered):
    c = _contract(registered("refuser", refusing_method))
    with pytest.raises(ContractValidationError) as err:
        execute(c, LoadOptions("cpu"))
    e = err.value
    assert not isinstance(e, MethodRefused) and e.rule == "method"
    assert e.message == "`refuser` cannot run this contract: needs a problem this one is not"
    assert e.span == c.method.span and e.hint == "try another contract"
    text = e.with_source(CONTRACT.format(method="refuser")).render()
    assert text.startswith(f"<refusal>.scope:{c.method.span.line}:{c.method.span.column}: invalid contract[method]:")
    assert "    method refuser" in text and "^" in text


def test_exact_shapley_refusal_through_a_contract():
    """A real refusal path end to end: exact_shapley on more eligible features than it enumerates."""
    from scopecheck.engine.methods.perturbation import MAX_EXACT_FEATURES

    text = CONTRACT.format(method="exact_shapley(operator = zero)").replace(
        '"Translate to French: The dog is black."', '"Translate to French: The dog is black and the cat is white."')
    (c,) = load_text(text, "<refusal>.scope")
    with pytest.raises(ContractValidationError) as err:
        execute(c, LoadOptions("cpu"))
    e = err.value
    assert e.rule == "method" and e.span == c.method.span
    assert e.message.startswith("`exact_shapley` cannot run this contract: exact_shapley enumerates 2**M coalitions "
                                f"and accepts at most {MAX_EXACT_FEATURES} eligible features")


REFUSALS = [
    # (method, params, the refusal class, a phrase of its message)
    ("exact_shapley", {"operator": "zero"}, MethodRefused, "at most"),
    ("stage_perturbation", {}, Unavailable, "needs a denoising-stage problem"),
    ("integrated_gradients", {"baseline": "mask"}, Unavailable, "not available for this model"),
    ("occlusion", {"operator": "mask"}, Unavailable, "unavailable perturbation operator 'mask'"),
    ("heta", {}, MethodRefused, "single next token"),
    ("probabilistic_as", {"prune": 0.9}, MethodRefused, "prune must lie in"),
    ("reagent", {"ratio": 1.5}, MethodRefused, "ratio must lie in"),
    ("integrated_gradients", {"n_steps": 8}, MethodRefused, "unknown parameter(s) n_steps"),
    ("occlusion", {"batch_size": "many"}, MethodRefused, "must be int"),
    ("occlusion", {"_seed": 1}, MethodRefused, "reserved"),
]


@pytest.mark.parametrize("method,params,cls,phrase", REFUSALS, ids=lambda v: v if isinstance(v, str) else None)
def test_each_refusal_is_raised_on_purpose_and_positioned(problems, monkeypatch, method, params, cls, phrase):
    """Every converted refusal is a MethodRefused (Unavailable ones are KeyErrors too, as before)
    and reaches the user positioned on the method line, with its own message."""
    from scopecheck.engine.methods import perturbation

    pb = problems["span_prompt"]
    monkeypatch.setattr(perturbation, "MAX_EXACT_FEATURES", int(pb.eligible.sum()) - 1)   # one too many
    with pytest.raises(cls) as err:
        run_method(method, pb, params)
    assert isinstance(err.value, ValueError) and (cls is not Unavailable or isinstance(err.value, KeyError))
    assert phrase in err.value.message
    assert str(err.value).startswith("method refused: ")            # no made-up <string>:1:1 position
    c = _contract("saliency")                                        # only its method line is read
    with pytest.raises(ContractValidationError) as placed:
        _method_call(method, c, lambda: run_method(method, pb, params))
    assert placed.value.span == c.method.span and placed.value.rule == "method"
    assert placed.value.message == f"`{method}` cannot run this contract: {err.value.message}"


def test_invalid_diffusion_settings_are_named_and_positioned_by_the_compiler():
    from scopecheck.engine.diffusion.chain import SamplerSettings, check_settings

    with pytest.raises(InvalidSettings, match="multiple of blocks") as err:
        check_settings(SamplerSettings(steps=3, length=4, sampler="confidence", blocks=2, temperature=0.0, seed=0,
                                       forced=True))
    assert isinstance(err.value, ValueError) and err.value.rule == "params"


def test_the_engine_catches_refusals_by_name():
    """No ``except (ValueError, KeyError)`` around a method call is left in the engine: the run
    module catches MethodRefused by name."""
    tree = ast.parse((SRC / "engine" / "run.py").read_text(encoding="utf-8"))
    caught = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            caught += [t.id for t in types if isinstance(t, ast.Name)]
    assert "MethodRefused" in caught
    assert "ValueError" not in caught and "KeyError" not in caught


def test_method_implementations_raise_no_bare_builtin_errors():
    """A method implementation that declines raises MethodRefused (or Unavailable); a bare
    ValueError/KeyError/RuntimeError inside one would now be reported as an internal error.
    (The one KeyError left is the Mapping protocol of ``METHOD_IMPLS``.)"""
    bare = []
    for path in sorted((SRC / "engine" / "methods").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name) \
                    and node.exc.func.id in ("ValueError", "KeyError", "RuntimeError"):
                bare.append(f"{path.name}:{node.lineno} {ast.unparse(node.exc)[:60]}")
    assert [b.split(" ", 1)[1] for b in bare] == ["KeyError(name)"], bare
