"""No code from a model folder runs without ``--trust-remote-code``, and nothing ever asks.

The model folder is stories260k's weights and tokenizer behind ``auto_map`` entries (in
``config.json`` and ``tokenizer_config.json``) naming ``evil.py`` beside them, which writes a
marker file when it is imported. Each command runs in a subprocess whose stdin, stdout and
stderr are a pseudo-terminal that answers ``y`` over and over: transformers, left to decide
(``trust_remote_code=None``), asks ``Do you wish to run the custom code? [y/N]`` on a terminal
and imports the file on that ``y``. The marker must never appear, every command must end (each is
bounded by a timeout) with the refusal, and exit non-zero. The opt-in still works: with
``trust_remote_code=True`` the same folder loads, runs, and its code does run (the marker proves
the folder is a real trap).
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import scopecheck

STORIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "stories260k"
if not STORIES.is_dir():
    STORIES = Path("/work/shared/models/stories260k")
SRC = Path(scopecheck.__file__).resolve().parents[1]
REFUSAL = "asks to run its own code"

pytestmark = pytest.mark.skipif(not STORIES.is_dir(), reason="stories260k is not on this machine")

EVIL = '''"""Custom model code: importing it leaves a marker, so a test sees whether it ever ran."""
from pathlib import Path

Path({marker!r}).write_text("the model folder's code ran")

from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer


class EvilConfig(LlamaConfig):
    model_type = "scopecheck-evil"


class EvilForCausalLM(LlamaForCausalLM):
    config_class = EvilConfig


class EvilTokenizer(LlamaTokenizer):
    pass
'''


def remote_code_model(root: Path) -> tuple[Path, Path]:
    """``(model directory, marker path)`` under ``root``; the marker does not exist yet."""
    d = root / "evil-model"
    d.mkdir()
    marker = root / "MARKER"
    for name in ("model.safetensors", "tokenizer.json", "generation_config.json"):
        shutil.copy(STORIES / name, d / name)
    config = json.loads((STORIES / "config.json").read_text())
    config.update(model_type="scopecheck-evil", architectures=["EvilForCausalLM"],
                  auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"})
    (d / "config.json").write_text(json.dumps(config, indent=2))
    tok = json.loads((STORIES / "tokenizer_config.json").read_text())
    tok.update(tokenizer_class="EvilTokenizer",
               auto_map={"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]})
    (d / "tokenizer_config.json").write_text(json.dumps(tok, indent=2))
    (d / "evil.py").write_text(EVIL.format(marker=str(marker)))
    return d, marker


CONTRACT = '''contract "custom code" {{
    model    "{m}"
    prompt   "Once upon a time a girl"
    output   "named Lily"
    use prompt_conditioned(target = "Lily")
    method occlusion
    expect mass(y) == 0
}}
'''

CLAIM = '''claim "custom code" {{
    question prompt_level
    model    "{m}"
    prompt   "Once upon a time a girl"
    output   "named Lily"
    computed {{
        method   occlusion
        explain  y[t]
        eligible x, y[<t]
    }}
}}
'''


@pytest.fixture()
def trap(tmp_path):
    d, marker = remote_code_model(tmp_path)
    (tmp_path / "c.scope").write_text(CONTRACT.format(m=d))
    (tmp_path / "claim.scope").write_text(CLAIM.format(m=d))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "HF_", "TRANSFORMERS"))}
    env.update(PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TERM="dumb")
    return tmp_path, d, marker, env


def on_terminal(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    """Run ``args`` with a pseudo-terminal for stdin, stdout and stderr that types ``y`` and Enter
    every 0.3 s; (exit status, everything it printed). A command still running after ``timeout``
    seconds is killed and the test fails: a hang is a failure, not a pass."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                            start_new_session=True, close_fds=True)
    os.close(slave)
    os.set_blocking(master, False)
    out, last, deadline = bytearray(), 0.0, time.monotonic() + timeout
    try:
        while True:
            now = time.monotonic()
            if now - last > 0.3:
                try:
                    os.write(master, b"y\n")
                except (BlockingIOError, OSError):
                    pass
                last = now
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    out += os.read(master, 1 << 16)
                except (BlockingIOError, OSError):   # EIO once the child has closed the terminal
                    pass
            if proc.poll() is not None:
                while True:
                    try:
                        chunk = os.read(master, 1 << 16)
                    except (BlockingIOError, OSError):
                        break
                    if not chunk:
                        break
                    out += chunk
                break
            if now > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                pytest.fail(f"{args[-3:]} did not end within {timeout} s on a terminal:\n"
                            f"{out.decode(errors='replace')[-3000:]}")
    finally:
        os.close(master)
    return proc.returncode, out.decode(errors="replace")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from scopecheck.cli import main; sys.exit(main(sys.argv[1:]))", *args]


def _flat(text: str) -> str:
    return " ".join(text.replace("\r", "").split())


@pytest.mark.parametrize("command", ["check", "run", "pytest", "audit --dynamic"])
def test_no_command_runs_the_model_folders_code_even_answering_y_on_a_terminal(trap, command):
    tmp, d, marker, env = trap
    args = {
        "check": cli("check", "c.scope"),
        "run": cli("run", "c.scope", "--device", "cpu", "--report", "-", "--store", "-"),
        "pytest": [sys.executable, "-m", "pytest", "c.scope", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                   "--scope-device", "cpu", "--rootdir", str(tmp)],
        "audit --dynamic": cli("audit", "--dynamic", "--device", "cpu", "claim.scope"),
    }[command]
    rc, out = on_terminal(args, tmp, env)
    assert not marker.exists(), f"{command} ran the model folder's code:\n{out[-3000:]}"
    assert rc != 0, out[-3000:]
    assert REFUSAL in _flat(out), out[-3000:]
    assert "Do you wish to run the custom code" not in out


def test_check_names_the_code_and_points_at_the_model_statement(trap, capsys):
    from scopecheck.cli import main

    tmp, d, marker, _ = trap
    assert main(["check", str(tmp / "c.scope")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp / 'c.scope'}:2:14: invalid contract[model]: model {d} {REFUSAL}" in err
    assert "config.json: evil.EvilConfig" in err and "tokenizer_config.json: evil.EvilTokenizer" in err
    assert f'  2 |     model    "{d}"' in err and "^" * (len(str(d)) + 2) in err
    assert "hint: a model folder's code runs only with `scopecheck run --trust-remote-code`" in err
    assert not marker.exists()


def test_every_transformers_loader_call_in_src_states_trust_remote_code():
    """``from_pretrained`` left to its default (None) asks on a terminal: every call says False
    or passes the command line's opt-in by name."""
    import ast

    calls = []
    for f in sorted(SRC.joinpath("scopecheck").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("from_pretrained", "from_config", "pipeline"):
                kw = {k.arg: k.value for k in node.keywords if k.arg}
                ok = "trust_remote_code" in kw and (
                    (isinstance(kw["trust_remote_code"], ast.Constant) and kw["trust_remote_code"].value is False)
                    or (isinstance(kw["trust_remote_code"], ast.Name) and kw["trust_remote_code"].id ==
                        "trust_remote_code"))
                calls.append((f"{f.relative_to(SRC)}:{node.lineno}", ok))
    assert len(calls) >= 7                       # preflight 2, models 3, reference checks 4
    assert [c for c, ok in calls if not ok] == []


def test_the_opt_in_still_loads_and_runs_the_folders_code(trap):
    """``trust_remote_code=True`` (``scopecheck run --trust-remote-code``) is honoured: preflight
    reads the folder, the contract runs, and the folder's code ran (the marker)."""
    from scopecheck.engine.preflight import preflight
    from scopecheck.engine.run import run
    from scopecheck.loader import load_file

    tmp, d, marker, _ = trap
    contract = load_file(tmp / "c.scope")[0]
    refused = preflight(contract)
    assert [e.rule for e in refused] == ["model"] and REFUSAL in refused[0].message and not marker.exists()
    assert preflight(contract, trust_remote_code=True) == []
    assert marker.exists()
    # float64: in float32 the two runs' scores were seen to differ by up to 4.4e-4 when the loading
    # tests ran first in the same process (alone they agree to 1e-5; cause not pinned down, see the
    # closing note of 2026-12-03); in float64 they agree to rounding either way
    res = run(tmp / "c.scope", device="cpu", dtype="float64", trust_remote_code=True)
    plain = run(CONTRACT.format(m=STORIES), device="cpu", dtype="float64")   # the same weights, as plain Llama
    assert [t.text for t in res.tokens] == [t.text for t in plain.tokens]
    assert res.score_input == pytest.approx(plain.score_input, abs=1e-9)
    assert [t.score for t in res.tokens] == pytest.approx([t.score for t in plain.tokens], abs=1e-9)


def test_run_with_trust_remote_code_on_the_command_line_runs_the_folder(trap, capsys):
    """The command-line opt-in end to end: ``--trust-remote-code`` reaches the preflight and the
    loader, so the folder's code runs (the marker appears) and the expectation passes."""
    from scopecheck.cli import main

    tmp, d, marker, _ = trap
    rc = main(["run", str(tmp / "c.scope"), "--trust-remote-code", "--device", "cpu", "--report", "-",
               "--store", "-"])
    out = capsys.readouterr()
    assert marker.exists() and rc == 0, out.out + out.err
    assert "1 expectation(s) passed" in out.out + out.err


def test_check_with_trust_remote_code_reads_the_folder(trap, capsys):
    """``check`` refuses the folder by default and reads it (its code imported) when asked."""
    from scopecheck.cli import main

    tmp, d, marker, _ = trap
    assert main(["check", str(tmp / "c.scope")]) == 1 and not marker.exists()
    capsys.readouterr()
    rc = main(["check", str(tmp / "c.scope"), "--trust-remote-code"])
    out = capsys.readouterr()
    assert rc == 0 and marker.exists(), out.out + out.err
