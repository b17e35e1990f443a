"""Gemm/MatMul: torch semantics vs onnxruntime and ONNX cases; norms vs explicit SVD."""
import numpy as np
import pytest
from onnx import helper

from lipgraph.errors import RuleNotApplicable
from rulecheck import (assert_matches_ort, check_norm, conformance, input_fn, materialised_norm, nodeview, rule_for,
                       sampled_max_ratio, uncovered_opsets)


@pytest.mark.parametrize("op", ["Gemm", "MatMul"])
def test_versions_cover_opset_11_to_latest(op):
    assert uncovered_opsets(op) == []


@pytest.mark.parametrize("transA,transB", [(0, 0), (0, 1), (1, 0)])
def test_gemm_norm_and_semantics(transA, transB):
    rng = np.random.default_rng(transA * 2 + transB)
    a = rng.normal(size=(4, 3) if transA else (3, 4)).astype(np.float32)
    b = rng.normal(size=(5, 4) if transB else (4, 5)).astype(np.float32)
    c = rng.normal(size=(5,)).astype(np.float32)
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=0.7, beta=2.0, transA=transA, transB=transB)
    assert_matches_ort(node, [a, b, c], [True, False, False])
    view = nodeview(node, [a, b, c], [True, False, False])
    bound = rule_for(view).certified_norm(view)
    exact = materialised_norm(input_fn(view, [a, b, c], 0), a.shape)
    assert bound.value >= exact
    assert bound.value == pytest.approx(exact, rel=1e-7)
    assert sampled_max_ratio(input_fn(view, [a, b, c], 0), a.shape) <= bound.value


def test_gemm_conformance():
    checked, skipped = conformance("Gemm", dynamic_inputs=(0,))
    assert checked >= 5, skipped


# (x shape, W shape, weight on the left?)
MATMUL_CASES = [
    ((3, 4), (4, 5), False),
    ((2, 3, 4), (4, 5), False),
    ((2, 3, 4), (2, 4, 5), False),          # batched weight, one W per x batch entry
    ((3, 4), (3, 4, 2), False),             # x broadcast over W's batch: [W1 W2 W3] side by side
    ((2, 1, 3, 4), (1, 3, 4, 2), False),    # both broadcast
    ((4,), (4, 5), False),                  # 1-D x
    ((3, 4), (4,), False),                  # 1-D W
    ((4,), (4,), False),                    # dot product
    ((4,), (2, 4, 3), False),               # 1-D x against a batched W
    ((3, 4), (5, 3), True),                 # W·x
    ((3, 4), (2, 5, 3), True),              # x broadcast over a batched left W: stacked
    ((2, 3, 4), (3,), True),                # 1-D W on the left
    ((3,), (5, 3), True),                   # 1-D x on the right
]


@pytest.mark.parametrize("x_shape,w_shape,left", MATMUL_CASES)
def test_matmul_norm_and_semantics(x_shape, w_shape, left):
    rng = np.random.default_rng(len(x_shape) * 10 + len(w_shape))
    x = rng.normal(size=x_shape).astype(np.float32)
    w = rng.normal(size=w_shape).astype(np.float32)
    arrays, dyn = ([w, x], [False, True]) if left else ([x, w], [True, False])
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    assert_matches_ort(node, arrays, dyn, atol=1e-4)
    view = nodeview(node, arrays, dyn)
    rule_for(view).check(view)
    bound, exact = check_norm(view, arrays, i=1 if left else 0, rel=1e-7)
    assert bound.label == "certified" and bound.method == "svd"


def test_matmul_broadcast_is_not_max_over_stack():
    """x broadcast over a stack of W: the norm is σ_max([W1 W2]), larger than max σ_max(W_i)."""
    w = np.stack([np.eye(3), np.eye(3)]).astype(np.float32)
    x = np.ones((2, 3), np.float32)
    view = nodeview(helper.make_node("MatMul", ["a", "b"], ["y"]), [x, w], [True, False])
    assert rule_for(view).certified_norm(view).value == pytest.approx(np.sqrt(2), rel=1e-7)


def test_matmul_of_two_computed_tensors_is_not_applicable():
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 2), np.float32)
    view = nodeview(helper.make_node("MatMul", ["a", "b"], ["y"]), [a, b], [True, True])
    with pytest.raises(RuleNotApplicable, match="bilinear"):
        rule_for(view).check(view)


@pytest.mark.parametrize("dynamic", [(0,), (1,)])
def test_matmul_conformance(dynamic):
    checked, skipped = conformance("MatMul", dynamic_inputs=dynamic)
    assert checked >= 7, skipped
