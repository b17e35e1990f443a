"""Add/Sub/Sum/Neg/Mul/Div: torch semantics vs onnxruntime and ONNX cases; partial bounds and
certified norms vs materialised operators (SVD) and sampled ratios."""
import numpy as np
import pytest
from onnx import helper

from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import Label
from rulecheck import (assert_matches_ort, assert_versions_covered, conformance, input_fn, materialised_norm,
                       nodeview, rule_for, sampled_max_ratio)

SHAPES = [((2, 3), (2, 3)), ((2, 3), (3,)), ((3,), (2, 3)), ((2, 1, 4), (3, 1)), ((4,), ())]


def _opsets(op):
    return [max(11, v) for v in assert_versions_covered(op)]


def _arrays(shapes, seed=0, avoid_zero=False):
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        a = rng.normal(size=s)
        if avoid_zero:
            a = np.where(np.abs(a) < 0.2, 0.2, a) * rng.choice([-1, 1], size=s)
        out.append(np.asarray(a, np.float32))
    return out


@pytest.mark.parametrize("op", ["Add", "Sub"])
@pytest.mark.parametrize("sa,sb", SHAPES)
def test_add_sub_semantics_and_partial_bounds(op, sa, sb):
    a, b = _arrays([sa, sb])
    node = helper.make_node(op, ["a", "b"], ["y"])
    for opset in _opsets(op):
        assert_matches_ort(node, [a, b], [True, True], opset=opset)
    for dynamic in ([True, False], [False, True], [True, True]):
        view = nodeview(node, [a, b], dynamic)
        bounds = rule_for(view).bounds(view)
        assert set(bounds) == {i for i, d in enumerate(dynamic) if d}
        for i, bound in bounds.items():
            exact = materialised_norm(input_fn(view, [a, b], i), (a, b)[i].shape)
            assert bound.label == Label.EXACT
            assert bound.value == pytest.approx(exact, rel=1e-9)
            assert sampled_max_ratio(input_fn(view, [a, b], i), (a, b)[i].shape, n_pairs=60) <= bound.value * (1 + 1e-9)


def test_sum_variadic():
    arrays = _arrays([(2, 3), (3,), (1, 3), (2, 1)], seed=1)
    node = helper.make_node("Sum", ["a", "b", "c", "d"], ["y"])
    for opset in _opsets("Sum"):
        assert_matches_ort(node, arrays, [True] * 4, opset=opset)
    dynamic = [True, False, True, True]
    view = nodeview(node, arrays, dynamic)
    bounds = rule_for(view).bounds(view)
    assert set(bounds) == {0, 2, 3}
    for i, bound in bounds.items():
        assert bound.value == pytest.approx(materialised_norm(input_fn(view, arrays, i), arrays[i].shape), rel=1e-9)
    assert bounds[3].value == pytest.approx(np.sqrt(3))


def test_neg():
    (x,) = _arrays([(3, 4)])
    node = helper.make_node("Neg", ["x"], ["y"])
    for opset in _opsets("Neg"):
        assert_matches_ort(node, [x], [True], opset=opset)
    view = nodeview(node, [x], [True])
    assert rule_for(view).certified_norm(view).value == 1.0 == pytest.approx(
        materialised_norm(input_fn(view, [x], 0), x.shape))


def test_neg_conv_form_is_one_form():
    """One analysed input: conv_form is a ConvForm (−1 per channel), not a COMBINE-style dict."""
    from lipgraph.certify import convfold

    (x,) = _arrays([(2, 3, 4)])
    view = nodeview(helper.make_node("Neg", ["x"], ["y"]), [x], [True])
    form = rule_for(view).conv_form(view)
    assert isinstance(form, convfold.ConvForm) and list(form.scale) == [-1.0, -1.0, -1.0]


# (analysed shape, constant shape, analysed index)
SCALE_CASES = [((2, 3), (2, 3), 0), ((2, 3), (), 0), ((2, 3), (3,), 1), ((3,), (2, 3), 0), ((3,), (2, 3), 1),
               ((2, 1, 4), (3, 1), 0), ((1, 4), (5, 3, 1), 1), ((2, 1), (1, 3), 0)]


@pytest.mark.parametrize("op,xs,cs,i", [(op, *case) for op in ("Mul", "Div") for case in SCALE_CASES
                                         if op == "Mul" or case[2] == 0])     # Div: dividend analysed
def test_mul_div_by_constant_norm(op, xs, cs, i):
    x, c = _arrays([xs, cs], seed=3, avoid_zero=True)
    arrays = [x, c] if i == 0 else [c, x]
    dynamic = [i == 0, i == 1]
    node = helper.make_node(op, ["a", "b"], ["y"])
    for opset in _opsets(op):
        assert_matches_ort(node, arrays, [True, True], opset=opset)
    view = nodeview(node, arrays, dynamic)
    r = rule_for(view)
    r.check(view)
    bound = r.certified_norm(view)
    fn = input_fn(view, arrays, i)
    exact = materialised_norm(fn, x.shape)
    assert bound.value >= exact
    assert bound.value == pytest.approx(exact, rel=1e-7)
    broadcasts_x = np.prod(xs) < np.prod(view.output_shapes[0])
    if op == "Mul" and not broadcasts_x:
        assert bound.label == Label.EXACT and bound.value == np.max(np.abs(c.astype(np.float64)))
    assert sampled_max_ratio(fn, x.shape, n_pairs=60) <= bound.value * (1 + 1e-9)


def test_mul_broadcast_norm_worked_example():
    # x (2,1) copied to (2,3) and scaled by c (1,3) = [3, 4, 0]: each entry's column is (3, 4, 0)
    x, c = np.ones((2, 1), np.float32), np.array([[3, 4, 0]], np.float32)
    node = helper.make_node("Mul", ["x", "c"], ["y"])
    view = nodeview(node, [x, c], [True, False])
    assert rule_for(view).certified_norm(view).value == pytest.approx(5.0, rel=1e-7)


@pytest.mark.parametrize("op,dynamic,arrays", [
    ("Mul", [True, True], [np.ones(3, np.float32), np.ones(3, np.float32)]),
    ("Div", [True, True], [np.ones(3, np.float32), np.ones(3, np.float32)]),
    ("Div", [False, True], [np.ones(3, np.float32), np.ones(3, np.float32)]),
    ("Div", [True, False], [np.ones(3, np.float32), np.array([1, 0, 2], np.float32)]),
])
def test_not_applicable(op, dynamic, arrays):
    node = helper.make_node(op, ["a", "b"], ["y"])
    view = nodeview(node, arrays, dynamic)
    with pytest.raises(RuleNotApplicable):
        rule_for(view).check(view)


@pytest.mark.parametrize("op,dynamic,minimum", [("Add", (0, 1), 8), ("Sub", (0, 1), 9), ("Sum", (0, 1, 2), 3),
                                                ("Neg", (0,), 2), ("Mul", (0,), 9), ("Div", (0,), 3)])
def test_conformance(op, dynamic, minimum):
    checked, skipped = conformance(op, dynamic_inputs=dynamic)
    assert checked >= minimum, skipped
    if op == "Div":   # the skipped ones are exactly the integer cases (truncating: not affine)
        assert all("integer Div" in s for s in skipped), skipped
