"""``process masked_diffusion(block = S)``: the block layout arithmetic (against a brute-force
enumeration) and the positioned validation errors for bad block values. Torch-free."""

from __future__ import annotations

import pytest

from scopecheck.loader import check_text
from scopecheck.spec.blocks import block_layout, layout_error, n_causal_blocks

TEXT = '''contract "b" {{
    model   reference:translate-mdlm
    prompt  "Translate to French: The dog is black."
    output  "Le chien est noir."
    use prompt_to_output
    process masked_diffusion({process})
    method occlusion(operator = mask)
}}
'''


def col(process: str, what: str) -> int:
    """1-based column of ``what`` on the process line."""
    line = TEXT.format(process=process).splitlines()[5]
    return line.index(what) + 1


def errors(process: str) -> list[str]:
    text = TEXT.format(process=process)
    return [e.render() for e in check_text(text, "b.scope").errors]


@pytest.mark.parametrize("R", range(1, 13))
@pytest.mark.parametrize("S", range(1, 14))
def test_causal_layout_against_brute_force(R, S):
    """Blocks of S slots from the response's start, the last one shorter; K = R: one slot per stage;
    otherwise K / n stages per block, K a multiple of n."""
    owner = [i // S for i in range(R)]
    n = max(owner) + 1
    assert n_causal_blocks(R, S) == n
    spans = [(owner.index(b), len(owner) - owner[::-1].index(b)) for b in range(n)]
    assert block_layout(R, R, block=S) == tuple((a, z, z - a) for a, z in spans)
    for K in range(1, 3 * R + 1):
        if K != R and K % n:
            assert "multiple of the" in (layout_error(R, K, block=S) or "")
            with pytest.raises(ValueError):
                block_layout(R, K, block=S)
        elif K != R:
            assert block_layout(R, K, block=S) == tuple((a, z, K // n) for a, z in spans)


def test_semi_autoregressive_layout_is_unchanged():
    assert block_layout(8, 4, blocks=2) == ((0, 4, 2), (4, 8, 2))
    assert block_layout(7, 6, blocks=3) == ((0, 3, 2), (3, 5, 2), (5, 7, 2))
    assert layout_error(8, 3, blocks=2) == "steps (3) must be a multiple of blocks (2)"


def test_valid_block_settings_check_clean():
    for process in ("length = 8, block = 3", "steps = 6, length = 8, block = 3", "length = 8, block = 8",
                    "length = 8, block = 64", "steps = 8, length = 8, block = 1, sampler = left_to_right"):
        assert errors(process) == [], process


def test_block_errors_are_positioned_with_expected_and_hint():
    p = "steps = 4, length = 8, block = 3"
    (e,) = errors(p)
    lines = e.splitlines()
    assert lines[0].startswith(f"b.scope:6:{col(p, 'block')}: invalid contract[params]: 4 denoising stages cannot be shared by "
                               "the 3 blocks of 3 slots")
    assert lines[1].endswith("masked_diffusion(steps = 4, length = 8, block = 3)")
    assert lines[2].index("^") == lines[1].index("block = 3") and lines[2].count("^") == len("block = 3")
    assert "expected: steps = 8 (one slot per stage) or a multiple of 3" in e
    assert "hint: or block = 2: 4 blocks, 1 stage each" in e
    p = "length = 8, block = 3, blocks = 2"
    (e,) = errors(p)
    assert f"b.scope:6:{col(p, 'block')}:" in e and "`block` and `blocks` cannot both be given" in e and "hint: drop `blocks`" in e
    for bad in ("0", "-2", "2.5", "true", '"64"', "big"):
        p = f"length = 8, block = {bad}"
        (e,) = errors(p)
        assert f"b.scope:6:{col(p, 'block')}:" in e and "`block` must be a positive integer" in e and "expected: block = " in e, bad
    p = "length = 8, block = 4, adapter = shift"
    (e,) = errors(p)
    assert f"b.scope:6:{col(p, 'adapter')}:" in e and "needs the plain adapter" in e and "expected: adapter = plain" in e
    (e,) = errors("length = 8, bloc = 4")
    assert "has no parameter `bloc`" in e and "block" in e
