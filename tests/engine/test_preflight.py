"""Tokenizer-level checks before anything runs: `scopecheck check` and `run` find an operator the
model lacks and an ambiguous anchor in an expectation without loading weights or attributing."""

from __future__ import annotations

from pathlib import Path

import pytest

from scopecheck.cli import main

STORIES = Path(__file__).resolve().parents[3] / "shared" / "models" / "stories260k"
if not STORIES.is_dir():                      # a worktree under /work/wt: the models are in /work/shared
    STORIES = Path("/work/shared/models/stories260k")

TEXT = '''contract "bad op" {{
    model    "{m}"
    prompt   "Once upon a time a girl"
    output   "named Lily"
    use prompt_conditioned(target = "Lily")
    method integrated_gradients(baseline = pad)
}}
contract "ambiguous" {{
    model    "{m}"
    prompt   "a girl and a boy"
    output   "named Lily"
    use prompt_conditioned(target = "Lily")
    method occlusion
    expect rank(x["a"]) == 1
}}
contract "fine" {{
    model    "{m}"
    prompt   "Once upon a time a girl"
    output   "named Lily"
    use prompt_conditioned(target = "Lily")
    method occlusion
    expect mass(y) == 0
}}
'''


@pytest.fixture()
def scope_file(tmp_path):
    f = tmp_path / "pre.scope"
    f.write_text(TEXT.format(m=STORIES))
    return f


def test_check_finds_operator_and_anchor_errors_without_loading_weights(scope_file, monkeypatch, capsys):
    import scopecheck.engine.models as models

    def no_weights(*a, **k):
        raise AssertionError("check loaded model weights")

    monkeypatch.setattr(models, "_load_cached", no_weights)
    assert main(["check", str(scope_file)]) == 1
    err = capsys.readouterr().err
    assert f"{scope_file}:6:33: invalid contract[operator]: {STORIES} has no `pad` token" in err
    assert "expected: baseline = delete | mean | unk | zero" in err
    assert f"{scope_file}:14:17: invalid contract[text-anchor]: 'a' is ambiguous" in err
    assert 'hint: name one: "a"@1' in err and "2 errors in 1 file(s)" in err


def test_run_refuses_them_before_any_attribution_and_runs_the_rest(scope_file, monkeypatch, capsys):
    import scopecheck.engine.methods as methods

    ran = []
    real = methods.run_method
    monkeypatch.setattr(methods, "run_method", lambda name, *a, **k: ran.append(name) or real(name, *a, **k))
    assert main(["run", str(scope_file), "--device", "cpu", "--report", "-"]) == 1
    out = capsys.readouterr()
    assert ran == ["occlusion"]                      # only the valid contract attributed
    assert "3 contract(s): 1 expectation(s) passed, 0 failed, 2 did not run" in out.out + out.err
