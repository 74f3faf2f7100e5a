"""Limits of validation (issue 28): error lists are bounded and cheap however pathological the
contract; what the diffusion engine would refuse at run time and the text already decides
(a schedule that cannot be split into blocks, a state or stage beyond the chain) is refused by
`check`, positioned; a lone surrogate in a string is a positioned error, never a crash."""

from __future__ import annotations

import random
import re

import pytest

from scopecheck.errors import ERROR_LIMIT, ContractError, ContractErrors, MoreErrors, Span, cap_errors
from scopecheck.loader import check_text
from scopecheck.spec.validate import validate_contract
from tests._cost import growth, python_calls

AR = '''contract "c" {{
    model    reference:translate-ar
    prompt   {prompt}
    output   "Le chien est noir."
    score    log p(y["noir"] | x, y[<"noir"])
    fixed    {fixed}
    explain  y["noir"]
    process  autoregressive
    eligible {eligible}
    method   occlusion(operator = zero)
    seed     0
{expect}
}}
'''

MDLM = '''contract "d" {{
    model    reference:translate-mdlm
    prompt   "Translate to French: The dog is black."
    output   {output}
    use {use}
    process  masked_diffusion(sampler = confidence{process})
    method   occlusion(operator = mask)
    seed     0
{expect}
}}
'''

STAGES = '''contract "s" {{
    model    reference:translate-mdlm
    prompt   "Translate to French: The dog is black."
    output   "Le chien est noir."
    use denoising_stage(estimator = {estimator})
    process  masked_diffusion(sampler = confidence{process})
    method   stage_perturbation(perturbation = noop)
    seed     0
{expect}
}}
'''


def ar(fixed: str, eligible: str, prompt: str = '"Translate to French: The dog is black."', expect: str = "") -> str:
    return AR.format(prompt=prompt, fixed=fixed, eligible=eligible, expect=expect)


def mdlm(use: str = "state_level(step = 1)", process: str = ", steps = 8", output: str = '"Le chien est noir."',
         expect: str = "") -> str:
    return MDLM.format(use=use, process=process, output=output, expect=expect)


def errors_of(text: str) -> list[ContractError]:
    return list(check_text(text, "c.scope").errors)


def at(text: str, err: ContractError) -> str:
    """The source from the error's caret on."""
    return text.split("\n")[err.span.line - 1][err.span.column - 1:]


def checked(text: str) -> tuple[list[ContractError], str]:
    errs = errors_of(text)
    return errs, "\n".join(e.render() for e in errs)


def checked_calls(text: str) -> int:
    """Python calls that checking and rendering ``text`` makes (deterministic; see tests/_cost.py)."""
    return python_calls(lambda: checked(text))[1]


def shown_and_total(errs: list[ContractError], rule: str) -> tuple[int, int]:
    shown = [e for e in errs if e.rule == rule and not isinstance(e, MoreErrors)]
    more = sum(e.count for e in errs if e.rule == rule and isinstance(e, MoreErrors))
    return len(shown), len(shown) + more


# ---------------------------------------------------------------------------- no error floods


def overlapping(n: int) -> str:
    ranges = ", ".join(f"x[{i}:{i + 40}]" for i in range(1, n + 1))
    points = ", ".join(f"x[{i}]" for i in range(1, n + 1))
    return ar(ranges, points)   # about 40 n overlapping pairs


def segments(n: int) -> str:
    prompt = "{\n" + "\n".join(f'        s{i}: "w{i}"' for i in range(n)) + "\n    }"
    eligible = ", ".join(f"x.s{i}" for i in range(n))
    fixed = ", ".join(f"x.s{i}" for i in range(0, n, 2)) + ", x.nope, y[<\"noir\"]"
    return ar(fixed, eligible, prompt=prompt)


def expectations(n: int) -> str:
    expect = "\n".join(f'    expect top(0) == "w{i}"' for i in range(n))
    return ar('y[<"noir"]', "x", expect=expect + '\n    expect mass(x) >= 0.5\n    expect rank(x) <= "a"')


@pytest.mark.parametrize("shape", [overlapping, segments, expectations], ids=lambda f: f.__name__)
def test_checking_cost_grows_linearly_with_the_contract(shape):
    """Four times the selectors, segments or expectations cost at most five times the Python calls
    (n log n gives a little over 4; the pairwise overlap check it replaced gave about 16). A call
    count is deterministic, unlike a time bound (a loaded CI runner failed a 2-second one)."""
    checked_calls(shape(50))   # the parser is built and cached outside the measurement
    assert growth(lambda n: checked_calls(shape(n)), 400) < 5.0


def test_five_thousand_overlapping_selectors_are_capped():
    n = 5000
    errs, rendered = checked(overlapping(n))
    shown, total = shown_and_total(errs, "disjoint")
    assert len([e for e in errs if not isinstance(e, MoreErrors)]) <= ERROR_LIMIT
    assert 0 < shown <= ERROR_LIMIT
    # each fixed selector is named once, and each eligible one not yet named (never 5000^2 pairs)
    assert n <= total <= 2 * n
    assert rendered.count("more errors of the same kind") == 1
    assert len(rendered) < 2_000_000


def test_five_thousand_segments_are_capped():
    n = 5000
    text = segments(n)
    errs, rendered = checked(text)
    assert len([e for e in errs if not isinstance(e, MoreErrors)]) <= ERROR_LIMIT
    # every even segment is in both E and C: n/2 fixed selectors named, and their eligible twins
    assert n // 2 <= shown_and_total(errs, "disjoint")[1] <= n
    (unknown,) = [e for e in errs if e.rule == "unknown-name"]   # the one unknown segment, shown
    assert at(text, unknown).startswith("x.nope")


def test_five_thousand_expectations_are_capped():
    n = 5000
    text = expectations(n)
    errs, rendered = checked(text)
    assert len([e for e in errs if not isinstance(e, MoreErrors)]) <= ERROR_LIMIT
    assert shown_and_total(errs, "expect")[1] == n + 1
    first = min((e for e in errs if e.rule == "expect"), key=lambda e: (e.span.line, e.span.column))
    assert at(text, first).startswith('top(0) == "w0"')
    assert rendered.count("more errors of the same kind") == 1


def test_fuzz_style_mutations_of_a_huge_contract_stay_cheap():
    """Mutations in the style of tests/fuzz/mutate.py of a contract with thousands of selectors:
    each costs at most three times the Python calls of the unmutated contract, with a bounded
    error list of ContractErrors only."""
    from tests.fuzz.mutate import mutate

    rng = random.Random(28)
    sels = ", ".join(f'x[{rng.randint(1, 60)}:{rng.randint(1, 60)}]' for _ in range(3000))
    base = ar(sels, sels, expect="\n".join("    expect rank(x[\"dog\"]) <= 2" for _ in range(2000)))
    base_calls = checked_calls(base)
    for _ in range(6):
        text = mutate(base, rng)
        (errs, _), calls = python_calls(lambda: checked(text))
        assert calls < 3 * base_calls, (calls, base_calls)
        assert all(isinstance(e, ContractError) for e in errs)
        assert len([e for e in errs if not isinstance(e, MoreErrors)]) <= ERROR_LIMIT


def _tok_set(sel: str, n: int) -> set[int]:
    """Brute force: the 1-based prompt token indices a selector names (n tokens at most)."""
    if sel == "x":
        return set(range(1, n + 1))
    body = sel[2:-1]
    if ":" in body:
        a, b = map(int, body.split(":"))
        return set(range(a, b + 1))
    for op, f in (("<=", lambda k: range(1, k + 1)), (">=", lambda k: range(k, n + 1)),
                  ("<", lambda k: range(1, k)), (">", lambda k: range(k + 1, n + 1))):
        if body.startswith(op):
            return set(f(int(body[len(op):])))
    return {int(body)}


@pytest.mark.parametrize("seed", range(12))
def test_overlap_sweep_agrees_with_brute_force(seed):
    """Every reported pair overlaps, and every selector that overlaps one of the other side is
    named by some error: against sets of token indices, pair by pair (no cap: validate_contract)."""
    from scopecheck.dsl.parser import parse_text

    rng = random.Random(seed)
    n = 40   # beyond every index drawn, standing for "the rest of the prompt"

    def draw() -> str:
        k = rng.randrange(7)
        a, b = rng.randint(1, 30), rng.randint(1, 30)
        return ["x", f"x[{a}]", f"x[{min(a, b)}:{max(a, b)}]", f"x[<{a}]", f"x[<={a}]", f"x[>{a}]", f"x[>={a}]"][k] \
            if k or rng.random() < 0.15 else f"x[{a}]"

    E = list(dict.fromkeys(draw() for _ in range(rng.randint(1, 12))))
    C = list(dict.fromkeys(draw() for _ in range(rng.randint(1, 12))))
    doc = parse_text(ar(", ".join(C) + ', y[<"noir"]', ", ".join(E)), "c.scope")[0]
    errs = [e for e in validate_contract(doc)[0] if e.rule == "disjoint"]
    truth = {(e, c) for e in E for c in C if _tok_set(e, n) & _tok_set(c, n)}
    pairs = set()
    for err in errs:
        mt = re.fullmatch(r"(.*) is both eligible and held fixed \(overlaps (.*)\)", err.message)
        assert mt, err.message
        pairs.add((mt.group(1), mt.group(2)))
    assert pairs <= truth
    assert {e for e, _ in truth} == {e for e, _ in pairs}
    assert {c for _, c in truth} == {c for _, c in pairs}
    assert len(errs) <= len(E) + len(C)


def test_cap_shares_the_limit_among_rules():
    """1000 errors of one rule, 3 and 10 of two others: the small kinds are shown whole, the large
    one fills the rest, and one line counts what was left out (by hand: 50 - 3 - 10 = 37 shown)."""
    def e(rule: str, line: int) -> ContractError:
        return ContractError(f"{rule} {line}", Span("c.scope", line, 1, line, 2), rule=rule)

    errs = [e("a", i) for i in range(1, 1001)] + [e("b", 2000 + i) for i in range(3)] + \
        [e("c", 3000 + i) for i in range(10)]
    random.Random(0).shuffle(errs)
    out = cap_errors(errs)
    real = [x for x in out if not isinstance(x, MoreErrors)]
    more = [x for x in out if isinstance(x, MoreErrors)]
    assert len(real) == 50
    assert [x.message for x in real if x.rule == "a"] == [f"a {i}" for i in range(1, 38)]
    assert len([x for x in real if x.rule == "b"]) == 3 and len([x for x in real if x.rule == "c"]) == 10
    assert [(x.rule, x.count, x.span.line) for x in more] == [("a", 963, 38)]
    assert "and 963 more errors of the same kind" in more[0].render()
    assert len(more[0].render().splitlines()) == 1
    # many kinds: each still shows its first error
    many = [e(f"r{k}", 100 * k + i) for k in range(30) for i in range(20)]
    out = cap_errors(many)
    assert {x.rule for x in out if not isinstance(x, MoreErrors)} == {f"r{k}" for k in range(30)}
    assert len([x for x in out if not isinstance(x, MoreErrors)]) == 50
    assert sum(x.count for x in out if isinstance(x, MoreErrors)) == 600 - 50
    # the summary of a capped list counts every error, not the lines shown
    assert ContractErrors(out).render().endswith("\n600 errors")


# ---------------------------------------------------------------------------- the diffusion schedule


def _engine_refuses(steps: int, blocks: int, length: int) -> bool:
    from scopecheck.engine.diffusion.chain import SamplerSettings, check_settings

    try:
        check_settings(SamplerSettings(steps=steps, length=length, blocks=blocks))
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("steps,blocks,length", [
    (8, 3, 16), (8, 4, 16), (2, 4, 16), (4, 4, 16), (6, 4, 16), (12, 5, 12), (8, 8, 4), (8, 2, 1), (1, 1, 1),
    (None, 3, 16), (None, 4, 16), (None, 5, 3), (7, 7, None), (7, 2, None),
])
def test_schedule_refused_by_check_exactly_when_the_engine_would(steps, blocks, length):
    """The oracle is the engine's own check_settings (steps default to the length)."""
    process = (f", steps = {steps}" if steps else "") + f", blocks = {blocks}" + (f", length = {length}" if length else "")
    text = mdlm(use="prompt_to_output(estimator = chain)", process=process)
    errs = [e for e in errors_of(text) if e.rule == "params"]
    K = steps or length
    if length is None:
        # the response length is the model's or the output's: only steps and blocks are known
        expect = K % blocks != 0
    else:
        expect = _engine_refuses(K, blocks, length)
    assert bool(errs) == expect, [e.render() for e in errs]
    if errs:
        assert at(text, errs[0]).startswith(f"blocks = {blocks}")
        assert "^" in errs[0].render() and errs[0].expected


def test_schedule_length_from_max_new_tokens():
    text = mdlm(use="prompt_to_output(estimator = chain)", process=", blocks = 3",
                output="generate(greedy, max_new_tokens = 8)")
    errs = errors_of(text)
    assert [e.rule for e in errs] == ["params"] and "blocks dividing 8: 1, 2, 4, 8" in errs[0].render()
    assert not errors_of(text.replace("blocks = 3", "blocks = 4"))


def test_the_issue_schedule_steps_8_blocks_3():
    text = mdlm(process=", steps = 8, blocks = 3")
    (err,) = errors_of(text)
    assert err.rule == "params" and at(text, err).startswith("blocks = 3")
    assert "hint: or steps = 9" in err.render()


# ---------------------------------------------------------------------------- states and stages


@pytest.mark.parametrize("step", range(0, 11))
def test_state_level_step_beyond_the_chain(step):
    """With steps = 4 the chain has states z[4] (all masked) .. z[0]; a state-level contract
    explains z[t] for t in 0..3 (the engine refuses z[4] and anything past it)."""
    text = mdlm(use=f"state_level(step = {step})", process=", steps = 4")
    errs = errors_of(text)
    if step <= 3:
        assert errs == []
    else:
        assert [e.rule for e in errs] == ["selector"], [e.render() for e in errs]
        assert at(text, errs[0]).startswith(f"step = {step}")
        assert "z[0..3]" in errs[0].render()


def test_state_unknown_without_steps_or_length_is_left_to_the_engine():
    text = mdlm(use="state_level(step = 9)", process="")
    assert errors_of(text) == []


@pytest.mark.parametrize("expect,bad", [
    ("expect mass(z[<=1]) == 0", False),
    ("expect mass(z[<=4]) == 0", False),
    ("expect mass(z[<=5]) == 0", True),
    ("expect rank(z[9]) == 1", True),
    ('expect mass(z["chien"]) == 0', True),
])
def test_states_named_in_expectations(expect, bad):
    text = mdlm(use="state_level(step = 1)", process=", steps = 4", expect="    " + expect)
    errs = errors_of(text)
    assert bool(errs) == bad, [e.render() for e in errs]
    if bad:
        assert errs[0].rule == "selector" and at(text, errs[0]).startswith("z[")


@pytest.mark.parametrize("expect,bad", [
    ("expect rank(stage[8]) == 1", False),
    ("expect rank(stage[1]) == 1", False),
    ("expect rank(stage[9]) == 1", True),
    ("expect rank(stage[0]) == 1", True),
    ("expect attribution(stage[2:9]) > 0", True),
    ("expect mass(x) == 0", True),
])
def test_stages_in_a_denoising_stage_contract(expect, bad):
    text = STAGES.format(estimator="chain", process=", steps = 8", expect="    " + expect)
    errs = errors_of(text)
    assert bool(errs) == bad, [e.render() for e in errs]
    if bad:
        assert at(text, errs[0]).startswith(expect.split("(", 1)[1].split(")")[0])


def test_a_stage_score_reads_the_chain():
    text = STAGES.format(estimator="pll", process=", steps = 8", expect="")
    (err,) = errors_of(text)
    assert err.rule == "score-output" and at(text, err).startswith("estimator = pll")
    assert not errors_of(STAGES.format(estimator="chain", process=", steps = 8", expect=""))


# ---------------------------------------------------------------------------- lone surrogates


@pytest.mark.parametrize("where", ["output", "prompt", "segment", "name", "use", "expect"])
def test_lone_surrogate_is_a_positioned_error(where, tmp_path, capsys):
    lone = "\\ud800"
    text = ar("nothing", 'x, y[<"noir"]')
    if where == "output":
        text = text.replace('"Le chien est noir."', f'"Le chien {lone} noir."')
    elif where == "prompt":
        text = text.replace('"Translate to French: The dog is black."', f'"Translate {lone}: The dog is black."')
    elif where == "segment":
        text = text.replace('"Translate to French: The dog is black."',
                            f'{{\n        a: "Translate {lone}:"\n        b: "The dog is black."\n    }}')
    elif where == "name":
        text = text.replace('contract "c"', f'contract "c{lone}"')
    elif where == "use":
        text = mdlm(use="state_level(step = 1)", expect=f'    expect top(1) == "{lone}"').replace(
            "use state_level(step = 1)", f'use prompt_conditioned(target = "a{lone}")')
    else:
        text = text.replace("}\n", f'    expect top(1) == "{lone}"\n}}\n')
    errs = errors_of(text)
    strings = [e for e in errs if e.rule == "string"]
    assert strings, [e.render() for e in errs]
    err = strings[0]
    assert lone in at(text, err) or at(text, err).startswith(("output", "contract")), err.render()
    rendered = err.render()
    rendered.encode("utf-8")   # no raw surrogate reaches the terminal
    assert "\\ud800" in rendered and "^" in rendered
    # and `check` answers with the positioned error (exit 1), not a crash (exit 2)
    from scopecheck.cli import main

    f = tmp_path / "c.scope"
    f.write_text(text, encoding="utf-8")
    assert main(["check", str(f)]) == 1
    assert "[string]" in capsys.readouterr().err


def test_rendering_text_with_surrogates_never_crashes():
    err = ContractError("bad \ud800 text", Span("p\udcff.scope", 1, 3, 1, 6), source="a \ud800bc\n",
                        expected="e \udc00", hint="h \ud83d")
    out = err.render()
    out.encode("utf-8")
    assert "\\ud800" in out and "\\udcff" in out
    more = cap_errors([ContractError("x", Span(line=i), rule="r") for i in range(1, 60)])
    "\n".join(e.render() for e in more).encode("utf-8")


def test_check_counts_the_errors_a_more_line_stands_for(tmp_path, capsys):
    """`check`'s summary counts every error, including those a "N more" line summarises (it once
    counted that line as one error): the total equals an uncapped validation's count."""
    from scopecheck.cli import main
    from scopecheck.dsl.parser import parse_text

    f = tmp_path / "c.scope"
    f.write_text(overlapping(300))
    (doc,) = parse_text(f.read_text(), str(f))
    uncapped = len(validate_contract(doc)[0])
    assert main(["check", str(f)]) == 1
    err = capsys.readouterr().err
    (summary,) = [ln for ln in err.splitlines() if "in 1 file(s)" in ln]
    more = int(re.search(r"and (\d+) more errors", err).group(1))
    assert int(summary.split()[0]) == uncapped == ERROR_LIMIT + more
