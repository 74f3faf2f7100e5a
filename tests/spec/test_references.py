"""The torch-free facts the validator reads (reference models and tasks, text anchors, aggregate
fields) agree with the layers that compute them, and the anchor search is an exact substring
search."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scopecheck.errors import ContractValidationError, Span
from scopecheck.spec import model as m
from scopecheck.spec import references, vocabulary
from scopecheck.spec.anchors import anchor, occurrences


def test_reference_task_names_are_the_generators_keys_in_order():
    from scopecheck.reference import tasks

    assert references.TASK_NAMES == tuple(tasks.TASKS)
    assert tasks.SPLITS == references.SPLITS
    for name in references.TASK_NAMES:
        for split in references.SPLITS:
            assert tasks.generate(name, 2, split=split, seed=0)      # every named task/split generates


def test_reference_models_have_weights_and_a_known_task():
    from scopecheck.reference import REFERENCE_MODELS

    assert list(REFERENCE_MODELS) == list(references.MODELS)
    for name, info in REFERENCE_MODELS.items():
        fact = references.MODELS[name]
        assert (info.name, info.task, info.summary, info.family) == (fact.name, fact.task, fact.summary, fact.family)
        assert info.task in references.TASK_NAMES
        assert info.family in ("autoregressive", "masked_diffusion")
        assert (info.directory / "config.json").is_file()


def test_aggregate_fields_are_the_fields_the_statistics_fill():
    from scopecheck.orchestration.stats import aggregate, paired

    agg = aggregate("mean", [0.1, 0.4, 0.2, 0.9], seed=0)
    for f in vocabulary.AGG_FIELDS:
        assert isinstance(agg.field_value(f), float)
    pr = paired([0.1, 0.4, 0.2, 0.9, 0.5], [0.0, 0.3, 0.3, 0.1, 0.2], seed=0)
    assert set(pr.fields) == set(vocabulary.PAIRED_FIELDS)


@given(st.text("ab", max_size=12), st.text("ab", max_size=3))
def test_occurrences_is_every_start_by_brute_force(text, needle):
    brute = [i for i in range(len(text)) if needle and text[i:i + len(needle)] == needle]
    assert occurrences(text, needle) == brute


def test_anchor_picks_the_named_occurrence_and_refuses_the_rest():
    text = "the dog saw the cat"
    assert anchor(text, "x", m.TextRef("dog"), Span()) == (4, 7)
    assert anchor(text, "x", m.TextRef("the", 2), Span()) == (12, 15)
    for ref, says in ((m.TextRef("the"), "ambiguous"), (m.TextRef("the", 3), "occurs 2 time(s), not 3"),
                      (m.TextRef("cow"), "does not occur in the prompt text")):
        with pytest.raises(ContractValidationError) as exc:
            anchor(text, "x", ref, Span())
        assert says in exc.value.message and exc.value.rule == "text-anchor"


def test_dataset_errors_name_every_reference_dataset():
    ds = m.Dataset("reference", "translate/nosuchsplit", (), Span())
    (err,) = references.dataset_errors(ds)
    assert err.rule == "unknown-name"
    assert err.expected == ", ".join(f"reference:{t}/{s}" for t in references.TASK_NAMES for s in references.SPLITS)
    assert references.dataset_errors(m.Dataset("reference", "capitals/heldout", (), Span())) == []
