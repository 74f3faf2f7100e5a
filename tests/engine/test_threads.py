"""The CPU thread policy (engine/threads.py): what each policy chooses, that a user's own setting
is respected, and that loading a tiny model under ``auto`` makes torch single-threaded."""

from __future__ import annotations

import pytest
import torch

from scopecheck.engine import threads
from scopecheck.errors import ContractError


@pytest.fixture
def restore(monkeypatch):
    before, policy = torch.get_num_threads(), threads.policy()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    yield
    threads.set_policy(policy)
    torch.set_num_threads(before)


def test_policies_choose_by_model_size(restore, monkeypatch):
    assert threads.chosen(1_000, "torch") is None and threads.chosen(10**9, "torch") is None
    assert threads.chosen(1_000, "3") == 3 and threads.chosen(10**9, "3") == 3
    assert threads.chosen(threads.SMALL_MODEL - 1, "auto") == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")                 # the user chose: nothing changes
    assert threads.chosen(1_000, "auto") is None


@pytest.mark.parametrize("bad", ["fast", "0", "-1", "1.5", ""])
def test_unknown_policies_are_usage_errors(bad):
    with pytest.raises(ContractError, match="unknown thread policy") as err:
        threads.parse_policy(bad)
    assert "torch, auto or a positive number" in err.value.expected


def test_loading_a_tiny_model_under_auto_runs_it_single_threaded(restore):
    from scopecheck.engine.models import LoadOptions, load
    from scopecheck.spec import model as m

    torch.set_num_threads(2)
    threads.set_policy("torch")
    load(m.ModelRef("reference", "translate-ar"), LoadOptions("cpu"))
    assert torch.get_num_threads() == 2                       # the library default leaves torch alone
    threads.set_policy("auto")
    lm = load(m.ModelRef("reference", "translate-ar"), LoadOptions("cpu"))
    assert sum(p.numel() for p in lm.model.parameters()) < threads.SMALL_MODEL
    assert torch.get_num_threads() == 1


def test_the_command_line_refuses_an_unknown_policy(capsys):
    from scopecheck.cli import main

    contracts = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "contracts")
    assert main(["--threads", "many", "check", contracts]) == 1
    assert "unknown thread policy 'many'" in capsys.readouterr().err
