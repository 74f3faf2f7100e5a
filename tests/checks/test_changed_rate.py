"""``changed_rate`` counts what the README says: how often the regenerated output differs from
``y`` over the check's own perturbed inputs (a deletion curve's points), not over the NAOPC
bound search's evaluations (issue 23, item 5: 0.6625 was the share over all 240 evaluations,
230 of them the bound search's; over the curve it was 0.9)."""

from __future__ import annotations

import torch

from scopecheck.checks.registry import run_check
from scopecheck.engine.run import run

P2O = '''contract "p2o" {
 model reference:translate-mdlm
 prompt "Translate to French: The dog is black."
 output "Le chien est noir."
 score log p(y | x) via chain
 fixed nothing
 explain y
 eligible x
 process masked_diffusion(sampler = confidence, steps = 8)
 method occlusion(operator = mask)
 seed 0
}
'''


def test_changed_rate_is_the_share_of_the_deletion_curves_regenerated_outputs():
    r = run(P2O)
    d = run_check("deletion", r, {"operator": "mask"})
    assert d.config["protocol"] == "regenerate"
    ks, ranking = d.extra["k"], d.extra["ranking"]
    assert d.extra["bound_evaluations"] > len(ks)            # the bound search ran, and more than the curve
    # by hand: regenerate each perturbed point of the curve (top-k removed, k >= 1) on its own
    obj = r.compiled.check_objective
    pb = r.compiled.problem
    flags = []
    for k in ks:
        if k == 0:
            continue                                        # nothing perturbed: not a perturbation
        drop = torch.zeros(1, pb.length, dtype=torch.bool)
        drop[0, ranking[:k]] = True
        emb, keep = pb.replace("mask", drop)
        obj(emb, keep)
        flags.append(obj.changed[-1])
    assert len(flags) == len(ks) - 1
    assert d.fields["changed_rate"] == sum(flags) / len(flags)
    assert d.extra["changed"] == f"{sum(flags)} of {len(flags)} perturbed curve points"
    assert 0.0 <= d.extra["bound_changed_rate"] <= 1.0


def test_changed_rate_of_a_single_perturbation_check_is_its_one_perturbed_input():
    """comprehensiveness scores S(x) (unperturbed: not counted) and S(x without top-k)."""
    r = run(P2O)
    c = run_check("comprehensiveness", r, {"operator": "mask", "k": 2})
    top = r.ranking()[:2]
    obj = r.compiled.check_objective
    pb = r.compiled.problem
    drop = torch.zeros(1, pb.length, dtype=torch.bool)
    drop[0, [t.position for t in top]] = True
    emb, keep = pb.replace("mask", drop)
    obj(emb, keep)
    assert c.fields["changed_rate"] == float(obj.changed[-1])
