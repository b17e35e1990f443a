"""Resize (nearest, linear, cubic): torch semantics vs onnxruntime over modes, coordinate transforms,
nearest rounding, cubic coefficient and exclude_outside, scales (up, down, fractional) and sizes, at every opset the rule lists, and
ONNX cases; the norm vs an explicit SVD of the materialised operator and sampled ratios."""
import itertools
import math

import numpy as np
import pytest
from onnx import helper

from lipgraph.errors import RuleNotApplicable
from rulecheck import (assert_matches_ort, assert_versions_covered, check_norm, conformance, nodeview, rule_for)

CTMS = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
SCALES = [(2.0, 2.0), (3.0, 1.0), (1.5, 2.5), (0.5, 0.5), (0.6, 1.7), (1.0, 0.75)]


def test_versions_covered():
    assert assert_versions_covered("Resize") == [11, 13, 18, 19]


def _node(mode, ctm, nm, with_sizes=False, **extra):
    inputs = ["x", "roi", "scales", "sizes"] if with_sizes else ["x", "roi", "scales"]
    if mode.startswith("cubic"):    # "cubic-<a>-<exclude_outside>"
        _, a, ex = mode.split("|")
        mode, extra = "cubic", {**extra, "cubic_coeff_a": float(a), "exclude_outside": int(ex)}
    return helper.make_node("Resize", inputs, ["y"], mode=mode, coordinate_transformation_mode=ctm,
                            nearest_mode=nm, **extra)


def _arrays(x, scales=None, sizes=None):
    roi = np.zeros(0, np.float32)
    if sizes is not None:
        return [x, roi, np.zeros(0, np.float32), np.array(sizes, np.int64)]   # empty scales (opset 11 needs one)
    return [x, roi, np.array(scales, np.float32)]


CONFIGS = ([("nearest", ctm, nm) for ctm in CTMS for nm in NEAREST] +
           [("linear", ctm, "round_prefer_floor") for ctm in CTMS] +
           [(f"cubic|{a}|{ex}", ctm, "round_prefer_floor") for ctm in CTMS for a in (-0.75, -0.5) for ex in (0, 1)])


@pytest.mark.parametrize("mode,ctm,nm", CONFIGS)
def test_scales(mode, ctm, nm):
    x = np.random.default_rng(0).normal(size=(1, 2, 5, 4)).astype(np.float32)
    node = _node(mode, ctm, nm)
    for sh, sw in SCALES:
        arrays = _arrays(x, scales=[1.0, 1.0, sh, sw])
        dyn = [True, False, False]
        for opset in (11, 13, 18, 19):
            assert_matches_ort(node, arrays, dyn, opset=opset)
        small = _arrays(x[:, :1], scales=[1.0, 1.0, sh, sw])
        view = nodeview(node, small, dyn, 19)
        rule_for(view).check(view)
        check_norm(view, small, rel=1e-6, n_pairs=20)


@pytest.mark.parametrize("mode,ctm,nm", CONFIGS[::3] + CONFIGS[-4:])
@pytest.mark.parametrize("sizes", [(1, 2, 7, 3), (1, 2, 2, 9), (1, 2, 1, 1), (1, 2, 5, 4)])
def test_sizes(mode, ctm, nm, sizes):
    x = np.random.default_rng(1).normal(size=(1, 2, 5, 4)).astype(np.float32)
    node = _node(mode, ctm, nm, with_sizes=True)
    arrays, dyn = _arrays(x, sizes=sizes), [True, False, False, False]
    assert_matches_ort(node, arrays, dyn, opset=11)        # v11: an empty scales tensor
    node.input[2] = ""                                       # v13+: scales omitted
    arrays[2] = None
    for opset in (13, 18, 19):
        assert_matches_ort(node, arrays, dyn, opset=opset)
    view = nodeview(node, arrays, dyn, 19)
    bound, exact = check_norm(view, arrays, rel=1e-6, n_pairs=20)
    if sizes == (1, 2, 5, 4):
        assert bound.value == pytest.approx(1.0, rel=1e-7)


def test_axes_attribute_v18():
    x = np.random.default_rng(2).normal(size=(1, 2, 3, 4)).astype(np.float32)
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", axes=[3, -2])
    arrays, dyn = [x, None, np.array([2.0, 1.5], np.float32)], [True, False, False]
    for opset in (18, 19):
        assert_matches_ort(node, arrays, dyn, opset=opset)
    check_norm(nodeview(node, arrays, dyn, 19), arrays, rel=1e-6, n_pairs=20)


def test_nearest_integer_upscale_closed_form():
    # design §9: nearest with integer scales s_h, s_w has norm √(s_h·s_w)
    x = np.zeros((1, 1, 3, 4), np.float32)
    for sh, sw in itertools.product((1, 2, 3), (1, 2, 4)):
        node = _node("nearest", "asymmetric", "floor")
        arrays = _arrays(x, scales=[1.0, 1.0, sh, sw])
        view = nodeview(node, arrays, [True, False, False], 13)
        assert rule_for(view).certified_norm(view).value == pytest.approx(math.sqrt(sh * sw), rel=1e-7)


@pytest.mark.parametrize("attrs", [{"coordinate_transformation_mode": "tf_half_pixel_for_nn"},
                                   {"coordinate_transformation_mode": "tf_crop_and_resize"},
                                   {"antialias": 1, "mode": "linear"}])
def test_unsupported_refused(attrs):
    x = np.zeros((1, 1, 4, 4), np.float32)
    node = helper.make_node("Resize", ["x", "roi", "scales"], ["y"], **attrs)
    arrays = [x, np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32), np.array([1, 1, 0.5, 0.5], np.float32)]
    view = nodeview(node, arrays, [True, False, False], 19)
    with pytest.raises(RuleNotApplicable):
        rule_for(view).check(view)


def test_computed_scales_refused():
    x = np.zeros((1, 1, 4, 4), np.float32)
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"])
    view = nodeview(node, [x, None, np.array([1, 1, 2, 2], np.float32)], [True, False, True], 13)
    with pytest.raises(RuleNotApplicable):
        rule_for(view).check(view)


#: ONNX cases where onnxruntime (lipgraph's reference executor) and the ONNX expected outputs
#: disagree: align_corners with a fractional downscale, where the ONNX reference uses the
#: unfloored length n·scale and onnxruntime the actual output length (test_scales checks ours
#: against onnxruntime for the same configuration).
ORT_DIFFERS = ("test_resize_downsample_scales_linear_align_corners", "test_resize_downsample_scales_cubic_align_corners")


def test_skipped_cases_really_differ_in_onnxruntime():
    """On the skipped cases ours equals onnxruntime exactly and onnxruntime differs from ONNX."""
    import torch
    from rulecheck import _all_cases, ort_run, torch_forward
    for case in _all_cases()["Resize"]:
        if case.name in ORT_DIFFERS:
            node = case.model.graph.node[0]
            (x, scales), (expected,) = case.data_sets[0]
            arrays, opset = [x, None, scales], case.model.opset_import[0].version
            ort = ort_run(node, arrays, opset)[0]
            ours = torch_forward(nodeview(node, arrays, [True, False, False], opset), arrays, torch.float32)[0]
            np.testing.assert_allclose(ours.numpy(), ort, atol=1e-6)
            assert np.abs(ort - expected).max() > 0.1


def test_conformance():
    checked, skipped = conformance("Resize", skip=ORT_DIFFERS)
    assert checked >= 20, skipped


# ---------------------------------------------------------------------------------- Upsample
def test_upsample_versions_covered():
    """Upsample-7 and -9; version 10 deprecated it (onnxruntime refuses such a model)."""
    from lipgraph.registry import REGISTRY
    assert [REGISTRY.resolve("", "Upsample", opset)[1] for opset in (7, 8, 9)] == [7, 7, 9]
    assert REGISTRY.resolve("", "Upsample", 10)[0] is None


UPSAMPLE_SCALES = [(1.0, 1.0, 2.0, 2.0), (1.0, 1.0, 1.5, 2.5), (1.0, 1.0, 3.0, 1.7), (1.0, 1.0, 1.0, 1.0)]
#: onnxruntime's linear Upsample scales the last two axes only; nearest any axis.
UPSAMPLE_CASES = [(m, s) for m in ("nearest", "linear") for s in UPSAMPLE_SCALES] + [("nearest", (2.0, 3.0, 1.0, 1.5))]


@pytest.mark.parametrize("mode,scales", UPSAMPLE_CASES)
def test_upsample(mode, scales):
    """onnxruntime's Upsample (attribute scales at opset 7, input scales at 9 and 10) and the norm
    against the materialised operator's SVD; Upsample is Resize's code with asymmetric/floor."""
    x = np.random.default_rng(3).normal(size=(1, 2, 4, 3)).astype(np.float32)
    node7 = helper.make_node("Upsample", ["x"], ["y"], mode=mode, scales=list(scales))
    assert_matches_ort(node7, [x], [True], opset=7)
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], mode=mode)
    arrays, dyn = [x, np.array(scales, np.float32)], [True, False]
    assert_matches_ort(node, arrays, dyn, opset=9)
    view = nodeview(node, arrays, dyn, 9)
    rule_for(view).check(view)
    bound, _ = check_norm(view, arrays, rel=1e-6, n_pairs=20)
    view7 = nodeview(node7, [x], [True], 7)
    assert rule_for(view7).certified_norm(view7).value == bound.value
    if mode == "nearest" and scales == (1.0, 1.0, 2.0, 2.0):
        assert bound.value == pytest.approx(2.0, rel=1e-7)     # √(2·2): each entry copied 4 times


def test_upsample_other_mode_not_applicable():
    x = np.zeros((1, 1, 2, 2), np.float32)
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], mode="cubic")
    from lipgraph.registry import REGISTRY
    from rulecheck import make_nodeview
    view = make_nodeview(node, REGISTRY.resolve("", "Upsample", 9)[1], [x.shape, (4,)], [(1, 1, 4, 4)], [True, False],
                         {1: np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(RuleNotApplicable, match="cubic"):
        rule_for(view).check(view)
