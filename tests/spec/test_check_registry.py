"""The check registry (issue 24): one entry per check that validation, defaults, the catalog
view, ``scopecheck list`` and the README's check table read; registration from outside the
package; the drift between the three old tables (catalog help strings, the validator's
``CHECK_PARAMS``, the checks' ``DEFAULTS``/``EXTRA_PARAMS``) fixed. No model runs here (the
checks run on one in tests/checks/test_check_registry.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scopecheck.errors import ContractError
from scopecheck.loader import check_text
from scopecheck.spec import check_registry as creg
from scopecheck.spec import registry, vocabulary
from scopecheck.spec.check_registry import (
    CHECKS, COMMON_CHECK_PARAMS, PROTOCOL_PARAMS, PROTOCOLS, Field, UnknownCheckError, get_check, register_check,
    unregister_check,
)
from scopecheck.spec.registry import CONTRACT_KINDS, EXTRA_KINDS, ParamSpec, RegistryError, fits, show_value
from tests._docs import page_with

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_check_registry_and_catalog_import_without_torch():
    loaded = _run("import sys, scopecheck.spec.check_registry, scopecheck.spec.registry, scopecheck.checks.catalog; "
                  "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    assert loaded == "[]"


def test_register_check_is_public_and_the_catalog_is_the_registry():
    import scopecheck
    from scopecheck.checks import catalog

    assert "register_check" in scopecheck.__all__ and scopecheck.register_check is register_check
    assert "CheckEntry" in scopecheck.__all__
    assert catalog.CHECKS is CHECKS and catalog.PROTOCOLS is PROTOCOLS and catalog.CheckInfo is creg.CheckEntry


def test_every_entry_is_well_formed():
    kinds = {*CONTRACT_KINDS, *EXTRA_KINDS}
    for name, e in CHECKS.items():
        assert e.name == name and e.family in creg.CHECK_FAMILIES and set(e.supports) <= kinds, name
        assert e.default_field in e.fields and all(f.better in creg.BETTER for f in e.fields.values()), name
        mod, _, attr = e.impl.partition(":")
        assert mod.startswith("scopecheck.checks.") and attr == name, name
        # the protocol parameters belong to exactly the protocol checks, first, as declared once
        assert e.protocol == ("protocol" in e.params), name
        if e.protocol:
            assert list(e.params)[:3] == list(PROTOCOL_PARAMS) and all(
                e.params[k] is PROTOCOL_PARAMS[k] for k in PROTOCOL_PARAMS), name
        assert not set(e.params) & set(COMMON_CHECK_PARAMS), name
        for key, p in e.declared().items():
            assert p.kind in registry.PARAM_KINDS, (name, key)
            if p.default is None:
                assert p.default_text, (name, key)
            else:
                assert fits(p, p.default), (name, key)
    assert set(creg.PROTOCOL_CHOICES) == set(creg.PROTOCOL_OWNER) == {p.then for p in PROTOCOLS.values()}
    assert set(creg.PERTURB_GROUPS) == set(creg.PERTURB_OWNER) == {g for p in PROTOCOLS.values() for g in p.perturb}


def _contract(expect: str, use: str = "span_prompt") -> str:
    return f'contract "r" {{\n  model reference:translate-ar\n  prompt "The dog is black."\n' \
           f'  output "Le chien est noir."\n  use {use}\n  method occlusion\n  expect {expect}\n}}\n'


def _errors(expect: str) -> list[ContractError]:
    return list(check_text(_contract(expect), "r.scope").errors)


def _valid(p: ParamSpec) -> str | None:
    """A DSL value that fits ``p`` (``None``: no literal does, e.g. an `any` parameter)."""
    if p.default is not None:
        return show_value(p.default) if not isinstance(p.default, float) else repr(p.default)
    if p.kind == "choice":
        return p.choices[0]
    if p.kind == "int":
        return str(int(p.low or 1))
    if p.kind == "selector":
        return 'x["dog"]'
    return None


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_validator_accepts_every_declared_parameter_and_refuses_outside_values(name):
    """The validator reads the entry: every parameter the check's runtime accepts
    (``faithfulness.check_params`` reads the same ``declared()``), written with a fitting value,
    validates; a value outside a choice or a range is a positioned `params` error whose
    expected line is the entry's own description; an undeclared name lists the declared ones."""
    e = CHECKS[name]
    field = e.default_field
    for key, p in e.declared().items():
        v = _valid(p)
        if v is not None:
            errs = [x for x in _errors(f"{name}({key} = {v}).{field} > 0") if x.rule == "params"]
            assert not errs, (key, [x.render() for x in errs])
        bad = "no_such_value" if p.kind == "choice" else (p.high + 1 if p.high is not None else None) \
            if p.kind in ("int", "float") else None
        if bad is None:
            continue
        errs = [x for x in _errors(f"{name}({key} = {bad}).{field} > 0") if x.rule == "params"]
        assert errs and errs[0].expected == f"{key} = {p.describe()}", (key, [x.render() for x in errs])
    errs = [x for x in _errors(f"{name}(not_a_parameter = 1).{field} > 0") if x.rule == "params"]
    assert errs and errs[0].expected == ", ".join(e.declared())


def test_batch_size_validates_on_every_check():
    """Drift case: the checks' runtime took `batch_size` (faithfulness.EXTRA_PARAMS) and the
    validator range-checked it (spec/params.CHECK_PARAMS), but the validator's name check read
    the catalog, which lacked it, so `deletion(batch_size = 4)` was refused as "no parameter
    `batch_size`" although the README says a stated batch_size is never changed."""
    for name, e in CHECKS.items():
        errs = _errors(f"{name}(batch_size = 4).{e.default_field} > 0")
        assert not [x for x in errs if x.rule == "params"], (name, [x.render() for x in errs])
    errs = [x for x in _errors("deletion(batch_size = 0).aopc > 0") if x.rule == "params"]
    assert errs and errs[0].expected == "batch_size = an integer in [1, 65536]"


def test_check_operator_lists_the_stage_perturbations_and_no_fixed_default():
    """Drift case: the catalog's help said `operator: pad | mask | unk | zero | mean | delete
    (default pad)`, while the validator accepts the stage perturbations too (the shipped
    denoising_stage contract uses `deletion(operator = substitute)`) and the check's operator,
    unstated, is the method's own or the shared fallback order (faithfulness._operator), not pad."""
    spec = PROTOCOL_PARAMS["operator"]
    assert spec.choices == (*vocabulary.OPERATORS, *vocabulary.PERTURBATIONS)
    assert spec.default is None and "method's operator" in spec.shown_default()
    assert ", ".join(vocabulary.OPERATOR_FALLBACK) in spec.shown_default()
    text = (ROOT / "contracts" / "standard" / "denoising_stage.scope").read_text(encoding="utf-8")
    assert "deletion(operator = substitute)" in text and not check_text(text, "d.scope").errors


def test_max_sensitivity_on_a_denoising_stage_contract_is_refused_by_the_validator():
    """Drift case: max_sensitivity refused denoising-stage contracts only when it ran (stages
    have no embeddings), while `scopecheck check` passed them; the entry's supported contracts
    now say so, and the validator reads them."""
    assert "denoising_stage" not in CHECKS["max_sensitivity"].supports
    text = (ROOT / "contracts" / "standard" / "denoising_stage.scope").read_text(encoding="utf-8")
    one = text.split('contract "denoising-stage: skipping', 1)[0]
    assert not check_text(one, "d.scope").errors
    bad = one.replace("expect eligibility", "expect max_sensitivity.value < 1")
    errs = list(check_text(bad, "d.scope").errors)
    assert [x.rule for x in errs] == ["protocol"] and "max_sensitivity" in errs[0].message
    assert "max_sensitivity" not in errs[0].expected and "deletion" in errs[0].expected


def test_unknown_check_lists_what_exists():
    with pytest.raises(UnknownCheckError) as err:
        get_check("delition")
    msg = str(err.value)
    assert isinstance(err.value, KeyError) and all(n in msg for n in CHECKS)
    assert "did you mean `deletion`" in msg
    errs = _errors("delition.aopc > 0")
    assert errs[0].rule == "unknown-name" and "deletion" in errs[0].hint


def test_unknown_parameter_is_a_domain_error_listing_the_declared_ones():
    err = creg.unknown_params("comprehensiveness", ["kk"])
    assert isinstance(err, ContractError) and isinstance(err, ValueError) and err.rule == "params"
    msg = str(err)
    assert all(f"{k}:" in msg for k in CHECKS["comprehensiveness"].declared()) and "(default 0.2)" in msg
    assert "did you mean `k`" in msg
    assert creg.unknown_params("comprehensiveness", ["k", "batch_size"]) is None


@pytest.fixture
def outside():
    """A check registered from outside the package (its module need not exist to validate)."""
    entry = register_check("peer_flip", family="faithfulness", summary="a peer toolkit's flip test",
                           fields={"value": Field(0.0, 1.0, "higher")}, default_field="value",
                           params={"flips": registry.I(1, 8, 2, "tokens flipped")}, protocol=True, ranking=True,
                           impl="peer_toolkit.checks:flip", supports=("span_prompt", "prompt_conditioned"))
    yield entry
    unregister_check("peer_flip")


def test_a_registered_check_validates_lists_and_resolves(outside, capsys):
    assert get_check("peer_flip") is outside and list(outside.params) == [*PROTOCOL_PARAMS, "flips"]
    assert outside.defaults() == {"flips": 2}
    assert not _errors("peer_flip(flips = 3, operator = pad).value > random.value")
    errs = _errors("peer_flip(flips = 9).value > 0")
    assert [x.rule for x in errs] == ["params"] and errs[0].expected == "flips = an integer in [1, 8]"
    errs = _errors("peer_flip.nope > 0")
    assert [x.rule for x in errs] == ["expect"] and errs[0].expected == "value"
    errs = list(check_text(_contract("peer_flip.value > 0", use='local_next_token(target = "noir")'),
                           "r.scope").errors)
    assert [x.rule for x in errs] == ["protocol"]               # not among its supported contracts
    from scopecheck.cli import main

    assert main(["list", "--width", "300"]) == 0
    out = capsys.readouterr().out
    assert "peer_flip" in out and "tokens flipped" in out
    from scopecheck.checks.registry import CHECK_IMPLS

    assert "peer_flip" in CHECK_IMPLS and "peer_flip" in list(CHECK_IMPLS)     # listed, not yet imported
    with pytest.raises(RegistryError, match="cannot be imported"):
        outside.load()                                  # the lazy reference is resolved only now


def test_registration_refuses_clashes_and_bad_declarations(outside):
    base = dict(family="sanity", fields={"v": Field(0.0, 1.0, "lower")}, default_field="v", impl="a:b")
    with pytest.raises(RegistryError, match="already registered"):
        register_check("peer_flip", **base)
    for change, match in (({"family": "vibes"}, "unknown family"), ({"supports": ("sentiment",)}, "contract kind"),
                          ({"impl": "a.b"}, "module:attr"), ({"default_field": "w"}, "default field"),
                          ({"fields": {"v": Field(1.0, 0.0, "lower")}}, "Field"),
                          ({"params": {"k": registry.I(1, 4, 9)}}, "outside"),
                          ({"params": {"k": ParamSpec("int", 1, 4)}}, "no default"),
                          ({"params": {"batch_size": registry.I(1, 4, 1)}}, "reserved"),
                          ({"params": {"operator": registry.C("pad", default="pad")}}, "reserved")):
        with pytest.raises(RegistryError, match=match):
            register_check("other", **{**base, **change})
    assert "other" not in CHECKS
    replaced = register_check("peer_flip", **base, replace=True)
    assert CHECKS["peer_flip"] is replaced and replaced.family == "sanity"


def test_docs_check_table_is_the_registry():
    """The documentation's check table is generated from the registry (`python -m
    scopecheck.spec.check_registry` prints it); this keeps the two identical."""
    begin, end = "<!-- checks: generated by `python -m scopecheck.spec.check_registry` -->\n", "<!-- /checks -->"
    text = page_with(begin).read_text(encoding="utf-8")      # its docs/reference page
    assert begin in text and end in text
    shown = text.split(begin, 1)[1].split(end, 1)[0]
    assert shown == creg.check_table()
    for name, e in CHECKS.items():
        row = next(ln for ln in shown.splitlines() if ln.startswith(f"| `{name}` |"))
        assert e.family in row and f"**`{e.default_field}`**" in row and all(f"`{f}`" in row for f in e.fields)
        assert all(f"`{k}`" in row for k in e.params if k not in PROTOCOL_PARAMS)
    assert _run("import runpy; runpy.run_module('scopecheck.spec.check_registry', run_name='__main__')") + "\n" \
        == creg.check_table().rstrip("\n") + "\n"


def test_metric_ranges_agree_with_the_check_fields():
    """A metric a claim may report is named after a check (its default field's range) or after a
    field (that field's range in every check that has it): the static audit's ranges and the
    checks' own cannot drift apart."""
    from scopecheck.spec.check_registry import METRIC_RANGES

    for metric, rng in METRIC_RANGES.items():
        if metric in CHECKS:
            f = CHECKS[metric].fields[CHECKS[metric].default_field]
            assert (f.low, f.high) == rng, metric
        for name, e in CHECKS.items():
            if metric in e.fields:
                assert (e.fields[metric].low, e.fields[metric].high) == rng, (metric, name)
