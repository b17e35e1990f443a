"""Gemm/MatMul: torch semantics vs onnxruntime and ONNX cases; norms vs explicit SVD."""
import numpy as np
import pytest
from onnx import helper

from rulecheck import (assert_matches_ort, conformance, input_fn, materialised_norm, nodeview, rule_for,
                       sampled_max_ratio)


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
