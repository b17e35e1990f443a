"""Softmax: torch semantics vs onnxruntime (opset < 13 coerces to 2-D at axis, 13+ one axis)
and ONNX cases; the bound 1/2 vs sampled ratios, Jacobian norms, and a pair realising it."""
import numpy as np
import pytest
import torch
from onnx import helper

from lipgraph.labels import Label
from rulecheck import (assert_matches_ort, assert_versions_covered, conformance, input_fn, nodeview, rule_for,
                       sampled_max_ratio)

SHAPE = (2, 3, 4)


def test_versions_covered():
    assert assert_versions_covered("Softmax") == [11, 13]


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_semantics_and_bound(axis, opset):
    x = (np.random.default_rng(axis + 10).normal(size=SHAPE) * 3).astype(np.float32)
    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
    assert_matches_ort(node, [x], [True], opset=opset)
    view = nodeview(node, [x], [True], opset)
    bound = rule_for(view).bounds(view)[0]
    assert bound.value == 0.5 and bound.label == Label.EXACT
    fn = input_fn(view, [x], 0)
    assert sampled_max_ratio(fn, SHAPE, n_pairs=200) <= 0.5 + 1e-12
    # Jacobian spectral norms at random points never exceed 1/2
    rng = np.random.default_rng(1)
    for _ in range(20):
        p = torch.as_tensor(rng.normal(size=SHAPE) * rng.choice([0.1, 1, 5]))
        jac = torch.autograd.functional.jacobian(lambda t: rule_for(view).forward(view, t), p).reshape(p.numel(), p.numel())
        assert torch.linalg.matrix_norm(jac, 2) <= 0.5 + 1e-12


def test_opset11_coerces_to_2d():
    # with axis=1 on (2, 3, 4), opset 11 normalises over 12 entries per batch item, 13 over 3
    x = np.zeros(SHAPE, np.float32)
    node = helper.make_node("Softmax", ["x"], ["y"], axis=1)
    out11 = rule_for(nodeview(node, [x], [True], 11)).forward(nodeview(node, [x], [True], 11), torch.as_tensor(x))
    out13 = rule_for(nodeview(node, [x], [True], 13)).forward(nodeview(node, [x], [True], 13), torch.as_tensor(x))
    assert torch.allclose(out11, torch.full(SHAPE, 1 / 12)) and torch.allclose(out13, torch.full(SHAPE, 1 / 3))


@pytest.mark.parametrize("n", [2, 5])
def test_bound_is_realised(n):
    # two equal entries, the rest very negative: p ≈ (1/2, 1/2, 0, …); moving them apart by
    # ±t changes the output by ≈ t/2 in each, so the ratio tends to 1/2
    x = np.full((1, n), -60.0)
    x[0, :2] = 0.0
    node = helper.make_node("Softmax", ["x"], ["y"], axis=-1)
    view = nodeview(node, [x.astype(np.float32)], [True], 13)
    fn = input_fn(view, [x], 0)
    d = np.zeros((1, n))
    d[0, 0], d[0, 1] = 1e-6, -1e-6
    ratio = float(torch.linalg.vector_norm(fn(torch.as_tensor(x + d)) - fn(torch.as_tensor(x)))) / np.linalg.norm(d)
    assert ratio == pytest.approx(0.5, abs=1e-6)
    assert ratio <= rule_for(view).bounds(view)[0].value


def test_singleton_axis_is_constant():
    x = np.random.default_rng(3).normal(size=(3, 1)).astype(np.float32)
    node = helper.make_node("Softmax", ["x"], ["y"], axis=1)
    for opset in (11, 13):
        assert_matches_ort(node, [x], [True], opset=opset)
        view = nodeview(node, [x], [True], opset)
        assert rule_for(view).bounds(view)[0].value == 0.0
        assert sampled_max_ratio(input_fn(view, [x], 0), x.shape, n_pairs=20) == 0.0


def test_conformance():
    checked, skipped = conformance("Softmax", dynamic_inputs=(0,))
    assert checked >= 7, skipped
