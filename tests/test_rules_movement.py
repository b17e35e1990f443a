"""Tile, DepthToSpace, SpaceToDepth: torch semantics vs onnxruntime (repeats, block sizes, both
DepthToSpace modes, every opset onnxruntime runs) and ONNX cases; norms vs materialised operators."""
import math

import numpy as np
import pytest
from onnx import helper

from lipgraph.labels import Label
from rulecheck import assert_matches_ort, assert_versions_covered, check_norm, conformance, nodeview, rule_for


def test_versions_covered():
    assert assert_versions_covered("Tile") == [6, 13]
    assert assert_versions_covered("DepthToSpace") == [11, 13, 28]
    assert assert_versions_covered("SpaceToDepth") == [1, 13, 28]


@pytest.mark.parametrize("repeats", [[1, 1, 1], [2, 1, 3], [1, 4, 1], [3, 2, 2], [0, 2, 1]])
def test_tile(repeats):
    x = np.random.default_rng(sum(repeats)).normal(size=(2, 3, 2)).astype(np.float32)
    node = helper.make_node("Tile", ["x", "r"], ["y"])
    arrays = [x, np.array(repeats, np.int64)]
    for opset in (11, 13):
        assert_matches_ort(node, arrays, [True, False], opset=opset)
    view = nodeview(node, arrays, [True, False], 13)
    if 0 in repeats:
        assert rule_for(view).certified_norm(view).value == 0.0
        return
    bound, exact = check_norm(view, arrays, n_pairs=40)
    assert bound.label == Label.EXACT and bound.value == pytest.approx(math.sqrt(math.prod(repeats)), rel=1e-15)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("bs,c", [(2, 4), (2, 8), (3, 9)])
def test_depth_to_space(mode, bs, c):
    x = np.random.default_rng(bs * c).normal(size=(2, c, 2, 3)).astype(np.float32)
    node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=bs, mode=mode)
    for opset in (11, 13):
        assert_matches_ort(node, [x], [True], opset=opset, atol=0, rtol=0)
    bound, exact = check_norm(nodeview(node, [x[:1]], [True], 13), [x[:1]], n_pairs=20)
    assert bound.value == 1.0


@pytest.mark.parametrize("bs,c,h,w", [(2, 1, 4, 6), (2, 3, 2, 2), (3, 2, 3, 6)])
def test_space_to_depth(bs, c, h, w):
    x = np.random.default_rng(bs * c * h).normal(size=(2, c, h, w)).astype(np.float32)
    node = helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=bs)
    for opset in (11, 13):
        assert_matches_ort(node, [x], [True], opset=opset, atol=0, rtol=0)
    bound, exact = check_norm(nodeview(node, [x[:1]], [True], 13), [x[:1]], n_pairs=20)
    assert bound.value == 1.0
    # SpaceToDepth then DepthToSpace (DCR) is the identity (onnxruntime for both)
    from rulecheck import ort_run
    y = ort_run(node, [x], 13)[0]
    back = helper.make_node("DepthToSpace", ["y"], ["z"], blocksize=bs, mode="DCR")
    view = nodeview(back, [y], [True], 13)
    import torch
    np.testing.assert_array_equal(rule_for(view).forward(view, torch.as_tensor(y)).numpy(), x)


def test_space_to_depth_crd_inverts_depth_to_space_crd():
    # CRD SpaceToDepth exists from v28 only (onnxruntime does not run it): check it against the
    # onnxruntime-checked DepthToSpace CRD, which it must invert
    import torch
    from rulecheck import ort_run
    x = np.random.default_rng(5).normal(size=(1, 8, 2, 3)).astype(np.float32)
    y = ort_run(helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD"), [x], 13)[0]
    view = nodeview(helper.make_node("SpaceToDepth", ["y"], ["z"], blocksize=2), [y], [True], 13)
    view = type(view)(**{**view.__dict__, "since_version": 28, "attrs": {**view.attrs, "mode": "CRD"}})
    np.testing.assert_array_equal(rule_for(view).forward(view, torch.as_tensor(y)).numpy(), x)


def test_conformance():
    for op, dyn in (("Tile", (0,)), ("DepthToSpace", (0,)), ("SpaceToDepth", (0,))):
        checked, skipped = conformance(op, dynamic_inputs=dyn)
        assert checked >= 1, (op, skipped)
