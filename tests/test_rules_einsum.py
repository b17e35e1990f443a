"""Einsum with one computed operand: torch semantics vs onnxruntime over equation shapes (matmul,
batch, contraction, outer product, sums, diagonals, implicit output, ellipsis, three operands), the
certified norm vs the materialised operator's SVD and sampled ratios, a realising pair; two computed
operands are not applicable."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from lipgraph.errors import RuleNotApplicable
from rulecheck import (OrtNode, assert_matches_ort, assert_versions_covered, check_norm, nodeview, ort_operator,
                       rule_for)

EQUATIONS = [("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 2)]), ("i,i->", [(4,), (4,)]),
             ("i,j->ij", [(3,), (4,)]), ("ij->ji", [(3, 4)]), ("ij->", [(3, 4)]), ("ij->j", [(3, 4)]),
             ("ii->i", [(3, 3)]), ("ij,jk", [(3, 4), (4, 2)]), ("...ij,jk->...ik", [(2, 3, 4), (4, 2)]),
             ("ijk,kj->i", [(2, 3, 4), (4, 3)]), ("i,ij,j->", [(3,), (3, 4), (4,)]), ("ij,jk->ijk", [(2, 3), (3, 2)]),
             ("ab,bc,cd->ad", [(2, 3), (3, 4), (4, 2)]), ("ij,ij->ij", [(3, 4), (3, 4)]),
             ("ij, jk -> ik", [(3, 4), (4, 5)]), ("Ab,bC->AC", [(2, 3), (3, 2)]), ("bij,jk->bik", [(2, 3, 4), (4, 2)])]


def test_versions_covered():
    assert assert_versions_covered("Einsum") == [12, 28]


@pytest.mark.parametrize("equation,shapes", EQUATIONS, ids=[e for e, _ in EQUATIONS])
def test_einsum(equation, shapes):
    """Every operand in turn computed, the others constant: onnxruntime's values (opsets 12, 28) and
    the norm (closed form, or the engine's materialised route where the rule has none)."""
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=s).astype(np.float32) for s in shapes]
    node = helper.make_node("Einsum", [f"x{k}" for k in range(len(arrays))], ["y"], equation=equation)
    for i in range(len(arrays)):
        dyn = [k == i for k in range(len(arrays))]
        for opset in (12, 28):
            assert_matches_ort(node, arrays, dyn, opset=opset)
        view = nodeview(node, arrays, dyn, 12)
        rule_for(view).check(view)
        if "." in equation or equation == "ii->i":
            assert rule_for(view).certified_norm(view) is None       # the engine materialises these
            continue
        bound, exact = check_norm(view, [a.astype(np.float64) for a in arrays], i=i, rel=1e-6, n_pairs=20)
        # the top right singular vector of onnxruntime's own operator realises the bound
        matrix = ort_operator(node, [a.astype(np.float64) for a in arrays], i, session=OrtNode(
            node, [a.astype(np.float64) for a in arrays], 12))
        v = np.linalg.svd(matrix)[2][0].reshape(shapes[i])
        args = [a.astype(np.float64) for a in arrays]
        session = OrtNode(node, args, 12)
        zero, moved = list(args), list(args)
        zero[i], moved[i] = np.zeros(shapes[i]), v
        realised = np.linalg.norm(session(moved)[0] - session(zero)[0])
        assert realised == pytest.approx(bound.value, rel=1e-6)


def test_two_computed_operands_not_applicable():
    arrays = [np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)]
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik")
    view = nodeview(node, arrays, [True, True], 12)
    with pytest.raises(RuleNotApplicable, match="multilinear"):
        rule_for(view).check(view)
