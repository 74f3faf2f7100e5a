"""Output destinations are checked before any computation (issue 28): a FIFO, a device, a symbolic
link (even to a regular file) or a missing parent folder given as ``--json``, ``--report``,
``--store``, a matrix output, ``audit --out`` or a pytest ``--scope-*`` option is refused with one
line naming the option, the path and what was expected, exit 1, the target untouched and no model
loaded; writes are atomic replaces of regular files with a plain file's mode."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from scopecheck.cli import main
from scopecheck.runtime import files as _io

ROOT = Path(__file__).parents[2]
CONTRACT = str(ROOT / "contracts" / "standard" / "prompt_conditioned.scope")


# ----------------------------------------------------------------------------- targets


class Fifo:
    """A FIFO with a reader already open (non-blocking), so a writer would not block."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def received(self) -> bytes:
        try:
            return os.read(self.fd, 1 << 16)
        except BlockingIOError:    # a writer still has it open and wrote nothing
            return b""

    def intact(self) -> bool:
        try:
            return stat.S_ISFIFO(os.lstat(self.path).st_mode) and self.received() == b""
        finally:
            os.close(self.fd)


class Link:
    """A symbolic link to a regular file holding known bytes."""

    def __init__(self, path: Path) -> None:
        self.target = path.parent / f"{path.name}.target"
        self.target.write_bytes(b"previous\n")
        path.symlink_to(self.target)
        self.path = path

    def intact(self) -> bool:
        return self.path.is_symlink() and os.readlink(self.path) == str(self.target) \
            and self.target.read_bytes() == b"previous\n"


class Device:
    """A character device node (the null device's numbers) made in the test's folder."""

    def __init__(self, path: Path) -> None:
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except (OSError, AttributeError) as exc:
            pytest.skip(f"cannot make a device node here: {exc}")
        self.path = path

    def intact(self) -> bool:
        st = os.lstat(self.path)
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


class Missing:
    """A name in a folder that does not exist."""

    def __init__(self, path: Path) -> None:
        self.path = path.parent / "no-such-folder" / path.name

    def intact(self) -> bool:
        return not self.path.parent.exists()


KINDS = {"fifo": (Fifo, "is a FIFO"), "symlink": (Link, "is a symbolic link"),
         "device": (Device, "is a character device"), "missing parent": (Missing, "does not exist")}


@pytest.fixture
def nothing_computed(monkeypatch):
    """Fail the test if a contract run or a matrix starts (no model may load)."""
    import scopecheck.orchestration.matrix
    import scopecheck.orchestration.runner

    started = []

    def refuse(*a, **k):
        started.append(a)
        raise AssertionError("computation started before the destinations were checked")

    monkeypatch.setattr(scopecheck.orchestration.runner.Runner, "__init__", refuse)
    monkeypatch.setattr(scopecheck.orchestration.matrix, "run_matrix", refuse)
    return started


# option -> (argv before the target, argv after it)
COMMANDS = {
    "run --json": (["run", CONTRACT, "--report", "-", "--store", "-", "--json"], []),
    "run --report": (["run", CONTRACT, "--store", "-", "--report"], []),
    "run --store": (["run", CONTRACT, "--report", "-", "--store"], []),
    "matrix --json": (["matrix", "--store", "-", "--json"], []),
    "matrix --html": (["matrix", "--store", "-", "--html"], []),
    "matrix --store": (["matrix", "--store"], []),
    "audit --out": (["audit", str(ROOT / "contracts" / "audits"), "--out"], []),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_non_regular_destination_is_refused_before_anything_runs(command, kind, tmp_path, capsys,
                                                                 nothing_computed):
    make, words = KINDS[kind]
    target = make(tmp_path / "dest")
    before, after = COMMANDS[command]
    option = command.split()[1]
    assert main([*before, str(target.path), *after]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"scopecheck: {option} {target.path}: ") and words in lines[0], lines[0]
    assert "expected a" in lines[0] and "Traceback" not in err
    assert target.intact()
    assert nothing_computed == []
    assert not list(tmp_path.rglob(".*.tmp")) and not list(tmp_path.rglob(".scopecheck-probe-*"))


def test_report_folder_holding_a_non_regular_index_is_refused(tmp_path, capsys, nothing_computed):
    rep = tmp_path / "rep"
    rep.mkdir()
    link = Link(rep / "index.html")
    assert main(["run", CONTRACT, "--store", "-", "--report", str(rep)]) == 1
    err = capsys.readouterr().err
    assert f"--report {rep}: index.html in it is a symbolic link" in err
    assert link.intact()


def test_a_folder_and_a_link_to_a_folder(tmp_path):
    # a folder given as a file is refused; a symbolic link to a folder is a usable folder (nothing replaces it)
    with pytest.raises(_io.DestinationError, match="is a folder"):
        _io.check_file(tmp_path, "--json")
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    _io.check_folder(tmp_path / "alias", "--report", files=("index.html",))
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(_io.DestinationError, match="symbolic link to nothing"):
        _io.check_folder(tmp_path / "dangling", "--store")
    with pytest.raises(_io.DestinationError, match="symbolic link"):
        _io.check_file(tmp_path / "dangling", "--json")
    # new names in existing folders, and existing regular files, pass
    _io.check_file(tmp_path / "new.json", "--json")
    (tmp_path / "old.json").write_text("{}")
    _io.check_file(tmp_path / "old.json", "--json")
    _io.check_folder(tmp_path / "new-folder", "--report")


def test_socket_is_refused(tmp_path):
    import socket

    path = tmp_path / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        with pytest.raises(_io.DestinationError, match="is a socket"):
            _io.check_file(path, "--json")
    finally:
        sock.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_the_writer_itself_refuses_non_regular_targets(tmp_path):
    fifo, link = Fifo(tmp_path / "f"), Link(tmp_path / "l")
    for target in (fifo, link):
        with pytest.raises(_io.DestinationError):
            _io.atomic_write_many([(tmp_path / "ok.json", "{}"), (target.path, "new")])
        assert target.intact() if target is link else stat.S_ISFIFO(os.lstat(target.path).st_mode)
    assert fifo.intact()
    assert not (tmp_path / "ok.json").exists()            # all replaced together or none
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(_io.DestinationError, match="does not exist"):
        _io.atomic_write_text(tmp_path / "a" / "b.json", "{}")
    assert not (tmp_path / "a").exists()
    assert _io.atomic_write_text(tmp_path / "a" / "b.json", "{}", make_parents=True).read_text() == "{}"


def test_written_files_get_a_plain_files_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        p = _io.atomic_write_text(tmp_path / "new.html", "<p>")
        assert p.stat().st_mode & 0o777 == 0o644           # mkstemp alone gives 0600
        os.chmod(p, 0o640)
        _io.atomic_write_text(p, "<p>again")
        assert p.stat().st_mode & 0o777 == 0o640           # an existing file keeps its mode
        assert stat.S_ISREG(os.lstat(p).st_mode)
    finally:
        os.umask(mask)


def test_matrix_html_and_json_are_written_with_a_plain_files_mode(tmp_path, monkeypatch, capsys):
    import math

    import scopecheck.orchestration.matrix as mx

    cell = mx.Cell("occlusion", "prompt_conditioned", 3, 0.5, (0.4, 0.6), 0.1, (0.0, 0.2), 0.01, 0.3, 0.2,
                   1.0, (0.5, 1.0), 0.1)
    monkeypatch.setattr(mx, "run_matrix", lambda *a, **k: [cell])
    monkeypatch.setattr(mx, "matrix_html", lambda cells, dataset: f"<p>{len(cells)} cell</p>\n")
    mask = os.umask(0o022)
    try:
        html, js = tmp_path / "matrix.html", tmp_path / "matrix.json"
        assert main(["matrix", "--store", "-", "--html", str(html), "--json", str(js)]) == 0
    finally:
        os.umask(mask)
    capsys.readouterr()
    assert html.stat().st_mode & 0o777 == 0o644 and js.stat().st_mode & 0o777 == 0o644
    rec = json.loads(js.read_text())[0]
    assert rec["method"] == "occlusion" and math.isclose(rec["aopc"], 0.5)


def test_stdout_dash_still_passes_the_check(tmp_path, capsys):
    from scopecheck.cli.run import output_problems

    assert output_problems("-", "-", "-") == []
    assert output_problems(str(tmp_path / "rep"), str(tmp_path / "r.json"), str(tmp_path / "store")) == []


def test_refused_destination_imports_no_torch(tmp_path):
    """The real command, in a fresh interpreter: refused with torch (let alone a model) never
    imported."""
    fifo = Fifo(tmp_path / "pipe")
    code = ("import sys; from scopecheck.cli._common import destination_problems; from scopecheck.cli import main; "
            f"rc = main(['run', {CONTRACT!r}, '--json', {str(fifo.path)!r}]); "
            "print('torch' in sys.modules, 'transformers' in sys.modules); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1, out.stderr
    assert out.stdout.split() == ["False", "False"]
    assert "is a FIFO" in out.stderr and "Traceback" not in out.stderr
    assert fifo.intact()


@pytest.mark.parametrize("option", ["--scope-json", "--scope-report", "--scope-store"])
@pytest.mark.parametrize("kind", ["fifo", "symlink", "missing parent"])
def test_pytest_plugin_refuses_destinations_before_collection(option, kind, pytester, tmp_path):
    make, words = KINDS[kind]
    target = make(tmp_path / "dest")
    pytester.makefile(".scope", good='contract "a" {\n    model reference:translate-ar\n    prompt "The dog"\n'
                                    '    output " is"\n    use prompt_conditioned(target = 1)\n'
                                    '    method occlusion(operator = zero)\n    expect mass(y) == 0\n}\n')
    res = pytester.runpytest_subprocess(option, str(target.path), "-p", "no:randomly")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    err = res.stderr.str()
    assert f"{option} {target.path}: " in err and words in err and "expected a" in err
    assert "collected" not in res.stdout.str()
    assert target.intact()


def test_matrix_json_is_strict_json_when_a_cell_failed(tmp_path, monkeypatch, capsys):
    """A cell that could not run carries NaN fields; `matrix --json` writes them as "nan" strings
    (as `run --json` does), so a strict parser reads the file (a bare NaN is not JSON)."""
    import scopecheck.orchestration.matrix as mx

    import math

    nan = math.nan
    failed = mx.Cell("lime", "span_prompt", 0, nan, (nan, nan), nan, (nan, nan), nan, nan, nan, nan, (nan, nan),
                     nan, "lime cannot run this contract")
    monkeypatch.setattr(mx, "run_matrix", lambda *a, **k: [failed])
    js = tmp_path / "matrix.json"
    assert main(["matrix", "--store", "-", "--json", str(js)]) == 0
    capsys.readouterr()

    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    (rec,) = json.loads(js.read_text(), parse_constant=refuse)
    assert rec["aopc"] == "nan" and rec["aopc_ci"] == ["nan", "nan"] and rec["error"] == "lime cannot run this contract"
