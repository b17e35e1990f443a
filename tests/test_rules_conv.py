"""Conv/ConvTranspose (and BatchNormalization, the usual partner): torch semantics vs
onnxruntime and ONNX cases; certified norms vs the materialised operator's SVD and sampled ratios."""
import numpy as np
import pytest
import torch
from onnx import helper

from lipgraph.errors import RuleNotApplicable
from lipgraph.nodeview import make_nodeview
from rulecheck import (assert_matches_ort, check_norm, conformance, nodeview, ort_operator, ort_run, rule_for,
                       sampled_max_ratio, spectral, uncovered_opsets)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose", "BatchNormalization"])
def test_versions_cover_opset_11_to_latest(op):
    assert uncovered_opsets(op) == []


# (x shape, w shape, attributes)
CONV_CASES = {
    "plain": ((1, 2, 6, 6), (3, 2, 3, 3), {}),
    "sym-pads": ((2, 2, 5, 5), (3, 2, 3, 3), dict(pads=[1, 1, 1, 1])),
    "strided": ((1, 2, 7, 7), (3, 2, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "strided-hw": ((1, 2, 7, 6), (2, 2, 3, 2), dict(strides=[3, 2])),
    "dilated": ((1, 2, 8, 8), (3, 2, 3, 3), dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    "grouped": ((1, 4, 5, 5), (6, 2, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),
    "depthwise": ((1, 3, 5, 5), (3, 1, 3, 3), dict(group=3)),
    "asym-pads": ((1, 2, 5, 6), (3, 2, 3, 3), dict(pads=[0, 1, 2, 0])),
    "asym-strided": ((1, 2, 6, 5), (2, 2, 2, 3), dict(pads=[1, 0, 0, 2], strides=[2, 2])),
    "same-upper": ((1, 2, 7, 6), (3, 2, 3, 2), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "same-lower": ((1, 2, 7, 6), (3, 2, 2, 3), dict(auto_pad="SAME_LOWER", strides=[2, 1])),
    "valid": ((1, 2, 6, 6), (3, 2, 3, 3), dict(auto_pad="VALID", strides=[2, 2])),
    "kernel_shape": ((1, 2, 5, 5), (2, 2, 2, 2), dict(kernel_shape=[2, 2], pads=[1, 0, 1, 0])),
    "1d": ((2, 2, 9), (3, 2, 3), dict(strides=[2], pads=[1, 2], dilations=[2])),
    "1d-same-lower": ((1, 3, 10), (2, 3, 4), dict(auto_pad="SAME_LOWER", strides=[3])),
    "1d-grouped": ((1, 4, 8), (4, 2, 3), dict(group=2, pads=[0, 2])),
    "3d": ((1, 2, 4, 4, 3), (2, 2, 2, 2, 2), dict(pads=[1, 0, 0, 0, 1, 1])),
}


def _conv_arrays(x_shape, w_shape, c_out, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=x_shape).astype(np.float32), rng.normal(size=w_shape).astype(np.float32),
            rng.normal(size=(c_out,)).astype(np.float32)]


@pytest.mark.parametrize("name", list(CONV_CASES))
@pytest.mark.parametrize("bias", [True, False])
def test_conv_semantics_and_norm(name, bias):
    x_shape, w_shape, attrs = CONV_CASES[name]
    arrays = _conv_arrays(x_shape, w_shape, w_shape[0], seed=len(name))
    if not bias:
        arrays = arrays[:2]
    node = helper.make_node("Conv", ["x", "w", "b"][:len(arrays)], ["y"], **attrs)
    dyn = [True] + [False] * (len(arrays) - 1)
    assert_matches_ort(node, arrays, dyn, atol=1e-4, rtol=1e-4)
    view = nodeview(node, arrays, dyn)
    rule_for(view).check(view)
    if bias:  # the norm ignores the bias; check it once per geometry
        bound, exact = check_norm(view, arrays, 0, n_pairs=60)
        assert bound.label == "certified"
        if bound.method == "materialized-svd":
            assert bound.value == pytest.approx(exact, rel=1e-7)


CONVT_CASES = {
    "plain": ((1, 2, 4, 4), (2, 3, 3, 3), {}),
    "strided": ((1, 2, 3, 4), (2, 2, 3, 3), dict(strides=[2, 2])),
    "output_padding": ((1, 2, 3, 3), (2, 2, 3, 3), dict(strides=[2, 3], output_padding=[1, 2])),
    "pads": ((1, 2, 4, 4), (2, 2, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "asym-pads": ((1, 2, 4, 3), (2, 3, 3, 3), dict(pads=[0, 2, 1, 0], strides=[2, 1])),
    "dilated": ((1, 2, 3, 3), (2, 2, 3, 2), dict(dilations=[2, 3])),
    "grouped": ((1, 4, 3, 3), (4, 3, 2, 2), dict(group=2, strides=[2, 2])),
    "output_shape": ((1, 2, 3, 3), (2, 2, 3, 3), dict(strides=[3, 2], output_shape=[10, 8])),
    "same-upper": ((1, 2, 3, 4), (2, 2, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "same-lower": ((1, 2, 3, 4), (2, 2, 4, 3), dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    "valid": ((1, 2, 3, 3), (2, 2, 3, 3), dict(auto_pad="VALID", strides=[2, 2])),
    "1d": ((2, 2, 5), (2, 3, 3), dict(strides=[2], pads=[1, 0], output_padding=[1], dilations=[2])),
    "1d-grouped": ((1, 4, 5), (4, 1, 3), dict(group=4, strides=[3])),
}


@pytest.mark.parametrize("name", list(CONVT_CASES))
def test_conv_transpose_semantics_and_norm(name):
    x_shape, w_shape, attrs = CONVT_CASES[name]
    arrays = _conv_arrays(x_shape, w_shape, w_shape[1] * attrs.get("group", 1), seed=len(name))
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)
    dyn = [True, False, False]
    assert_matches_ort(node, arrays, dyn, atol=1e-4, rtol=1e-4)
    view = nodeview(node, arrays, dyn)
    rule_for(view).check(view)
    bound, exact = check_norm(view, arrays, 0, n_pairs=60)
    assert bound.label == "certified"
    if bound.method == "materialized-svd":
        assert bound.value == pytest.approx(exact, rel=1e-7)


def test_conv_large_map_bound_is_sound():
    """A map too large to materialise goes through the DFT/Gram route: still ≥ the true norm."""
    arrays = _conv_arrays((1, 4, 40, 40), (4, 4, 3, 3), 4, seed=7)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 0, 1, 2], strides=[1, 1])
    view = nodeview(node, arrays, [True, False, False])
    bound = rule_for(view).certified_norm(view)
    assert bound.method != "materialized-svd"
    w, b = (torch.as_tensor(a, dtype=torch.float64) for a in arrays[1:])
    fn = lambda x: rule_for(view).forward(view, x, w, b)  # noqa: E731
    v = torch.randn(1, 4, 40, 40, dtype=torch.float64)   # power iteration: a lower bound on ‖A‖
    zero = fn(torch.zeros_like(v))
    for _ in range(60):
        v = v.requires_grad_(True)
        g, = torch.autograd.grad(0.5 * ((fn(v) - zero) ** 2).sum(), v)
        v = (g / g.norm()).detach()
    lower = float((fn(v) - zero).norm())
    assert lower <= bound.value <= lower * 1.02
    assert sampled_max_ratio(fn, (1, 4, 40, 40), n_pairs=8) <= bound.value


def test_conv_with_computed_weight_is_not_applicable():
    arrays = _conv_arrays((1, 2, 4, 4), (2, 2, 3, 3), 2, seed=0)
    view = nodeview(helper.make_node("Conv", ["x", "w", "b"], ["y"]), arrays, [True, True, False])
    with pytest.raises(RuleNotApplicable):
        rule_for(view).check(view)


@pytest.mark.parametrize("op,minimum", [("Conv", 6), ("ConvTranspose", 11)])
def test_conformance(op, minimum):
    checked, skipped = conformance(op, dynamic_inputs=(0,))
    assert checked >= minimum, skipped


def _bn_arrays(x_shape, seed):
    rng = np.random.default_rng(seed)
    c = x_shape[1]
    return [rng.normal(size=x_shape).astype(np.float32), rng.normal(size=c).astype(np.float32) * 2,
            rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32),
            rng.uniform(0.05, 2.0, size=c).astype(np.float32)]


@pytest.mark.parametrize("x_shape,eps,opset", [((2, 3, 4, 4), 1e-5, 17), ((4, 5), 0.1, 17), ((2, 3, 6), 1e-3, 14),
                                               ((1, 2, 3, 3), 1e-5, 11)])
def test_batchnorm_semantics_and_norm(x_shape, eps, opset):
    arrays = _bn_arrays(x_shape, seed=len(x_shape))
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=eps)
    dyn = [True, False, False, False, False]
    assert_matches_ort(node, arrays, dyn, opset=opset, atol=1e-4, rtol=1e-4)
    view = nodeview(node, arrays, dyn, opset=opset)
    rule_for(view).check(view)
    bound, exact = check_norm(view, arrays, 0, rel=1e-7, n_pairs=100)
    s, v = arrays[1].astype(np.float64), arrays[4].astype(np.float64)
    assert bound.value == pytest.approx(np.max(np.abs(s / np.sqrt(v + np.float32(eps)))), rel=1e-7)


@pytest.mark.parametrize("version,attrs,outputs", [(15, dict(training_mode=1), ["y", "rm", "rv"]),
                                                   (9, {}, ["y", "m", "v", "sm", "sv"])])
def test_batchnorm_training_is_not_applicable(version, attrs, outputs):
    arrays = _bn_arrays((2, 3, 4), seed=0)
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], outputs, **attrs)
    view = make_nodeview(node, version, [a.shape for a in arrays], [(2, 3, 4)] + [(3,)] * (len(outputs) - 1),
                         [True] + [False] * 4, {i: a for i, a in enumerate(arrays) if i})
    with pytest.raises(RuleNotApplicable, match="training"):
        rule_for(view).check(view)


def test_batchnorm_conformance():
    checked, skipped = conformance("BatchNormalization", dynamic_inputs=(0,))
    assert checked >= 2, skipped
    assert sum("training" in s for s in skipped) >= 2, skipped


# --- ConvTranspose output window (red-team cases V1a, V1b, C3 in ../shared/soundness) ---------
# onnxruntime's rule: with output_shape, total = full − target split SAME_UPPER small-first, else
# large-first, and a target past the full output appends zeros at the end; SAME_* without
# output_shape crops max(0, full − n·s) and never pads. Checked against onnxruntime's outputs
# and the SVD of onnxruntime's own operator matrix.
CONVT_WINDOW_CASES = {
    "V1a-same-upper-k1-s3": ((1, 1, 2), [[[2.0]]], dict(auto_pad="SAME_UPPER", strides=[3]), (1, 1, 4)),
    "V1b-output-shape-past-full": ((1, 1, 2), [[[2.0, -1.0]]], dict(strides=[3], output_shape=[7]), (1, 1, 7)),
    "C3-same-lower-k2-s4": ((1, 1, 2), [[[2.0, -1.0]]], dict(auto_pad="SAME_LOWER", strides=[4]), (1, 1, 6)),
    "same-upper-odd-crop": ((1, 1, 3), [[[1.0, 2.0, 3.0]]], dict(auto_pad="SAME_UPPER", strides=[2]), (1, 1, 6)),
    "same-lower-odd-crop": ((1, 1, 3), [[[1.0, 2.0, 3.0]]], dict(auto_pad="SAME_LOWER", strides=[2]), (1, 1, 6)),
    "output-shape-crop-odd": ((1, 1, 2), [[[2.0, -1.0]]], dict(strides=[3], output_shape=[4]), (1, 1, 4)),
    "output-shape-same-lower-past-full": ((1, 1, 2), [[[2.0, -1.0]]],
                                          dict(strides=[3], output_shape=[7], auto_pad="SAME_LOWER"), (1, 1, 7)),
    "output-shape-2d-output-padding": ((1, 1, 2, 3), np.arange(1.0, 5.0).reshape(1, 1, 2, 2),
                                       dict(strides=[2, 3], output_shape=[5, 6], output_padding=[1, 0]), (1, 1, 5, 6)),
    "same-upper-output-padding": ((1, 2, 3), np.arange(1.0, 7.0).reshape(2, 1, 3),
                                  dict(auto_pad="SAME_UPPER", strides=[2], output_padding=[1]), (1, 1, 6)),
}


@pytest.mark.parametrize("name", list(CONVT_WINDOW_CASES))
def test_conv_transpose_output_window_matches_onnxruntime(name):
    x_shape, w, attrs, out_shape = CONVT_WINDOW_CASES[name]
    x = np.random.default_rng(len(name)).normal(size=x_shape).astype(np.float32)
    arrays = [x, np.asarray(w, np.float32)]
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)
    assert ort_run(node, arrays)[0].shape == out_shape
    assert_matches_ort(node, arrays, [True, False], atol=1e-5, rtol=1e-5)
    view = nodeview(node, arrays, [True, False])
    exact = spectral(ort_operator(node, arrays))
    bound = rule_for(view).certified_norm(view)
    assert exact * (1 - 1e-6) <= bound.value <= exact * (1 + 1e-6), (bound, exact)
    assert bound.value == pytest.approx(check_norm(view, arrays, 0, n_pairs=40)[1], rel=1e-7)

