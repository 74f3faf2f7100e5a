"""The method registry (issue 24): one entry per method that validation, defaults, the catalog,
``scopecheck list``, the README table and the schema read; registration from outside the
package; the closed vocabularies defined once. Torch-free (except where a test says)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scopecheck.errors import ContractError
from scopecheck.loader import check_text
from scopecheck.spec import registry, vocabulary
from scopecheck.spec.registry import (
    CONTRACT_KINDS, METHOD_ALIASES, METHODS, ParamSpec, RegistryError, UnknownMethodError, fits, get_method,
    register_method, show_value, unregister_method,
)
from tests._docs import page_with

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_registry_and_vocabulary_import_without_torch():
    loaded = _run("import sys, scopecheck.spec.registry, scopecheck.spec.vocabulary, scopecheck.engine.catalog; "
                  "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    assert loaded == "[]"


def test_register_method_is_public():
    import scopecheck

    assert "register_method" in scopecheck.__all__ and scopecheck.register_method is register_method


def test_every_entry_is_well_formed():
    kinds = set(CONTRACT_KINDS)
    for name, e in METHODS.items():
        assert e.name == name and e.family in registry.FAMILIES and set(e.supports) <= kinds, name
        mod, _, attr = e.impl.partition(":")
        assert mod.startswith("scopecheck.engine.methods.") and attr, name
        for key, p in e.params.items():
            assert p.kind in registry.PARAM_KINDS, (name, key)
            if p.default is None:
                assert p.default_text, (name, key)       # the engine chooses, and the entry says how
            else:
                assert fits(p, p.default), (name, key)
    for alias, target in METHOD_ALIASES.items():
        assert target in METHODS and alias in METHODS[target].aliases and alias not in METHODS


def _method_contract(text: str) -> str:
    return f'contract "r" {{\n  model reference:translate-ar\n  prompt "The dog is black."\n' \
           f'  output "Le chien est noir."\n  use span_prompt\n  method {text}\n}}\n'


def _errors(method_text: str) -> list[ContractError]:
    return list(check_text(_method_contract(method_text), "r.scope").errors)


def _dsl(v: object) -> str:
    return show_value(v) if not isinstance(v, float) else repr(v)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_validator_accepts_each_default_and_refuses_outside_values(name):
    """The validator reads the entry: every declared default, written in a contract, validates;
    a value outside a choice or a numeric range is a positioned `params` error whose expected
    line is the entry's own description."""
    e = METHODS[name]
    kind = "span_prompt" if "span_prompt" in e.supports else None
    for key, p in e.params.items():
        if kind is None:
            break
        if p.default is not None:
            errs = _errors(f"{name}({key} = {_dsl(p.default)})")
            assert not [x for x in errs if x.rule == "params"], (key, [x.render() for x in errs])
        bad = "no_such_value" if p.kind == "choice" else (p.high + 1 if p.high is not None else None) \
            if p.kind in ("int", "float") else None
        if bad is None:
            continue
        errs = [x for x in _errors(f"{name}({key} = {bad})") if x.rule == "params"]
        assert errs and errs[0].expected == f"{key} = {p.describe()}", (key, [x.render() for x in errs])
    errs = [x for x in _errors(f"{name}(not_a_parameter = 1)") if x.rule == "params"]
    assert errs and errs[0].expected == ", ".join([*e.params, *registry.COMMON_METHOD_PARAMS])


def test_ig_baseline_choices_are_the_embedding_operators():
    """Drift case of issue 24: the validator and the catalog now list one set, the operators
    with a replacement embedding (the engine's `embedding_operators`, tested in
    tests/engine/test_methods.py to be exactly the rows IG can start from); `mean` validates
    and `delete` (no embedding) does not."""
    spec = METHODS["integrated_gradients"].params["baseline"]
    assert spec.choices == vocabulary.EMBEDDING_OPERATORS and "mean" in spec.choices
    assert not _errors("integrated_gradients(baseline = mean)")
    errs = _errors("integrated_gradients(baseline = delete)")
    assert [x.rule for x in errs] == ["params"] and "mean" in errs[0].expected


def test_unknown_method_lists_what_exists():
    with pytest.raises(UnknownMethodError) as err:
        get_method("integrated_gradient")
    msg = str(err.value)
    assert all(n in msg for n in METHODS) and "ig -> integrated_gradients" in msg
    assert "did you mean `integrated_gradients`" in msg
    assert isinstance(err.value, KeyError)
    errs = _errors("integrated_gradient")
    assert errs[0].rule == "unknown-name" and errs[0].hint == "did you mean `integrated_gradients`?"


@pytest.fixture
def outside():
    """A method registered from outside the package (its module need not exist to validate)."""
    entry = register_method("toolkit_occlusion", family="perturbation", summary="a peer toolkit's occlusion",
                            supports=("span_prompt", "prompt_conditioned"), impl="peer_toolkit.methods:occlusion",
                            params={"window": registry.I(1, 8, 1, "tokens occluded together"),
                                    "operator": registry.operator("zero")},
                            aliases=("peer_occlusion",))
    yield entry
    unregister_method("toolkit_occlusion")


def test_a_registered_method_validates_lists_and_resolves(outside, capsys):
    assert get_method("peer_occlusion") is outside and outside.defaults() == {"window": 1, "operator": "zero"}
    assert not _errors("toolkit_occlusion(window = 3, operator = mask)")
    errs = _errors("peer_occlusion(window = 9)")
    assert [x.rule for x in errs] == ["params"] and errs[0].expected == "window = an integer in [1, 8]"
    from scopecheck.cli import main

    assert main(["list", "--width", "300"]) == 0
    out = capsys.readouterr().out
    assert "toolkit_occlusion" in out and "tokens occluded together" in out
    from scopecheck.engine.catalog import METHODS as catalog_methods, supported_methods

    assert catalog_methods["toolkit_occlusion"] is outside and "toolkit_occlusion" in supported_methods("span_prompt")
    with pytest.raises(RegistryError, match="cannot be imported"):
        outside.load()                                  # the lazy reference is resolved only now


def test_registration_refuses_clashes_and_bad_declarations(outside):
    with pytest.raises(RegistryError, match="already registered"):
        register_method("toolkit_occlusion", family="perturbation", supports=("span_prompt",), impl="a:b")
    with pytest.raises(RegistryError, match="already registered"):
        register_method("other", family="perturbation", supports=("span_prompt",), impl="a:b", aliases=("ig",))
    with pytest.raises(RegistryError, match="unknown contract kind"):
        register_method("other", family="perturbation", supports=("sentiment",), impl="a:b")
    with pytest.raises(RegistryError, match="module:attr"):
        register_method("other", family="perturbation", supports=("span_prompt",), impl="a.b")
    with pytest.raises(RegistryError, match="outside"):
        register_method("other", family="perturbation", supports=("span_prompt",), impl="a:b",
                        params={"k": registry.I(1, 4, 9)})
    with pytest.raises(RegistryError, match="no default"):
        register_method("other", family="perturbation", supports=("span_prompt",), impl="a:b",
                        params={"k": ParamSpec("int", 1, 4)})
    with pytest.raises(RegistryError, match="reserved"):
        register_method("other", family="perturbation", supports=("span_prompt",), impl="a:b",
                        params={"aggregate": registry.C("x", default="x")})
    assert "other" not in METHODS
    replaced = register_method("toolkit_occlusion", family="perturbation", supports=("span_prompt",), impl="a:b",
                               replace=True)
    assert METHODS["toolkit_occlusion"] is replaced and "peer_occlusion" not in METHOD_ALIASES


def test_docs_method_table_is_the_registry():
    """The documentation's method table is generated from the registry (`python -m scopecheck.spec.registry`
    prints it); this keeps the two identical."""
    begin, end = "<!-- methods: generated by `python -m scopecheck.spec.registry` -->\n", "<!-- /methods -->"
    text = page_with(begin).read_text(encoding="utf-8")      # its docs/reference page
    assert begin in text and end in text
    shown = text.split(begin, 1)[1].split(end, 1)[0]
    assert shown == registry.method_table()
    for name, e in METHODS.items():
        row = next(ln for ln in shown.splitlines() if ln.startswith(f"| `{name}`"))
        assert all(f"`{k}`" in row for k in e.params) and e.family in row
    assert _run("import runpy; runpy.run_module('scopecheck.spec.registry', run_name='__main__')") + "\n" \
        == registry.method_table().rstrip("\n") + "\n"


def test_schema_contract_kind_enum_is_the_registry():
    schema = json.loads((SRC / "scopecheck" / "spec" / "contract.schema.json").read_text(encoding="utf-8"))
    enum = schema["$defs"]["contract"]["properties"]["contract_kind"]["enum"]
    assert enum == [None, *CONTRACT_KINDS]


def test_validator_vocabularies_come_from_the_vocabulary_module():
    import importlib

    validate = importlib.import_module("scopecheck.spec.validate")    # (scopecheck.spec.validate is also a function)
    assert validate.SAMPLERS == (*vocabulary.SAMPLERS, *vocabulary.SAMPLER_ALIASES)
    assert validate.ESTIMATORS is vocabulary.ESTIMATOR_PARAMS
    for adapter in vocabulary.ADAPTERS:
        assert adapter in validate.PROCESSES["masked_diffusion"]["adapter"]
    assert METHODS["stage_perturbation"].params["perturbation"].choices == tuple(vocabulary.PERTURBATIONS)
    assert registry.COMMON_METHOD_PARAMS["aggregate"].choices == vocabulary.AGGREGATIONS


@pytest.mark.parametrize("available, expected", [
    ({"zero", "mean"}, "zero"),
    ({"pad", "zero", "mean", "unk"}, "pad"),
    ({"mask", "unk", "zero", "mean"}, "unk"),
    ({"mask", "zero", "mean"}, "mask"),
    ({"noop", "schedule", "substitute"}, "noop"),
    ({"noop", "schedule", "substitute", "delete"}, "delete"),
])
def test_fallback_operator_order(available, expected):
    assert vocabulary.fallback_operator(available) == expected


def test_fallback_operator_with_nothing_available_names_the_order():
    with pytest.raises(LookupError, match="pad, unk, mask"):
        vocabulary.fallback_operator(set())
