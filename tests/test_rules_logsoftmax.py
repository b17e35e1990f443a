"""LogSoftmax: torch semantics vs onnxruntime (opset < 13 coerces to 2-D at axis, 13+ one axis)
and ONNX cases; the bound √n vs explicit Jacobian SVDs (‖I − 1pᵀ‖ = √n‖p‖), sampled ratios,
and a near-worst pair (p → e_1)."""
import math

import numpy as np
import pytest
import torch
from onnx import helper

from lipgraph.labels import Label
from rulecheck import (assert_matches_ort, assert_versions_covered, conformance, input_fn, nodeview, rule_for,
                       sampled_max_ratio)

SHAPE = (2, 3, 4)


def test_versions_covered():
    assert assert_versions_covered("LogSoftmax") == [11, 13]


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("opset", [11, 13])
def test_semantics_and_bound(axis, opset):
    x = (np.random.default_rng(axis + 5).normal(size=SHAPE) * 3).astype(np.float32)
    node = helper.make_node("LogSoftmax", ["x"], ["y"], axis=axis)
    assert_matches_ort(node, [x], [True], opset=opset)
    view = nodeview(node, [x], [True], opset)
    bound = rule_for(view).bounds(view)[0]
    a = axis % 3
    n = SHAPE[a] if opset >= 13 else math.prod(SHAPE[a:])
    assert bound.value == pytest.approx(math.sqrt(n), rel=1e-15) and bound.label == Label.EXACT
    fn = input_fn(view, [x], 0)
    assert sampled_max_ratio(fn, SHAPE, n_pairs=100) <= bound.value
    rng = np.random.default_rng(1)
    for _ in range(10):
        p = torch.as_tensor(rng.normal(size=SHAPE) * rng.choice([0.1, 1, 10, 50]))
        jac = torch.autograd.functional.jacobian(fn, p).reshape(p.numel(), p.numel())
        assert float(torch.linalg.matrix_norm(jac, 2)) <= bound.value * (1 + 1e-12)


@pytest.mark.parametrize("n", [2, 3, 7])
def test_jacobian_norm_identity(n):
    # ‖I − 1pᵀ‖₂ = √n‖p‖₂ for p in the open simplex (explicit SVD), so the sup is √n
    rng = np.random.default_rng(n)
    for _ in range(20):
        p = rng.dirichlet(np.full(n, rng.choice([0.05, 1.0, 10.0])))
        assert np.linalg.norm(np.eye(n) - np.outer(np.ones(n), p), 2) == pytest.approx(math.sqrt(n) * np.linalg.norm(p), rel=1e-10)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_near_worst_pair(n):
    x = np.zeros((1, n))
    x[0, 0] = 40.0                      # p ≈ e_1
    node = helper.make_node("LogSoftmax", ["x"], ["y"], axis=-1)
    view = nodeview(node, [x.astype(np.float32)], [True], 13)
    bound = rule_for(view).bounds(view)[0].value
    p = np.exp(x[0] - x[0].max()); p /= p.sum()
    _, _, vt = np.linalg.svd(np.eye(n) - np.outer(np.ones(n), p))
    d = 1e-3 * vt[0].reshape(1, n)
    # independent reference: y = x − logsumexp(x)
    ref = lambda z: z - (z.max() + np.log(np.exp(z - z.max()).sum()))
    ratio = np.linalg.norm(ref(x + d) - ref(x)) / np.linalg.norm(d)
    # float64 finite-difference rounding ~1e-16·40/1e-3 relative: allowed 1e-10
    assert ratio == pytest.approx(math.sqrt(n), rel=1e-6) and ratio <= bound * (1 + 1e-10)
    fn = input_fn(view, [x], 0)
    ours = float(torch.linalg.vector_norm(fn(torch.as_tensor(x + d)) - fn(torch.as_tensor(x)))) / np.linalg.norm(d)
    assert ours == pytest.approx(ratio, rel=1e-6)


def test_singleton_axis_is_constant():
    x = np.random.default_rng(3).normal(size=(3, 1)).astype(np.float32)
    node = helper.make_node("LogSoftmax", ["x"], ["y"], axis=1)
    for opset in (11, 13):
        assert_matches_ort(node, [x], [True], opset=opset)
        view = nodeview(node, [x], [True], opset)
        assert rule_for(view).bounds(view)[0].value == 0.0


def test_conformance():
    checked, skipped = conformance("LogSoftmax")
    assert checked >= 7, skipped
