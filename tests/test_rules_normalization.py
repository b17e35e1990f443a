"""LayerNormalization, InstanceNormalization, GroupNormalization: torch semantics vs onnxruntime
and ONNX cases; the global bound ‖diag(γ)P‖/√ε vs an explicit matrix's SVD, Jacobians at random
points, sampled ratios, and a pair near zero variance that realises it (numpy reference)."""
import math

import numpy as np
import pytest
import torch
from onnx import helper

from lipgraph.diagnostics import CODES
from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import Label
from rulecheck import (assert_matches_ort, assert_versions_covered, conformance, input_fn, nodeview, rule_for,
                       sampled_max_ratio)


def test_versions_covered():
    assert assert_versions_covered("LayerNormalization") == [17]
    assert assert_versions_covered("InstanceNormalization") == [6, 22]
    assert assert_versions_covered("GroupNormalization") == [18, 21]


def _explicit_sup(gamma_slices, eps):
    """max over slices of σ_max(diag(γ)(I − 11ᵀ/n))/√ε from explicit matrices (numpy SVD)."""
    best = 0.0
    for g in gamma_slices:
        g = np.asarray(g, np.float64).reshape(-1)
        n = g.size
        best = max(best, np.linalg.norm(np.diag(g) @ (np.eye(n) - np.ones((n, n)) / n), 2))
    return best / math.sqrt(eps)


def _np_layernorm_slice(x, g, eps):
    """Independent reference for one slice (float64)."""
    z = (x - x.mean()) / np.sqrt(((x - x.mean()) ** 2).mean() + eps)
    return g * z


def _realised(gamma, eps, t=1e-7):
    """Ratio of the pair (c1, c1 + t·v), v the top right singular vector of diag(γ)P."""
    g = np.asarray(gamma, np.float64).reshape(-1)
    n = g.size
    _, _, vt = np.linalg.svd(np.diag(g) @ (np.eye(n) - np.ones((n, n)) / n))
    x = np.full(n, 0.7)
    y = x + t * vt[0]
    return np.linalg.norm(_np_layernorm_slice(y, g, eps) - _np_layernorm_slice(x, g, eps)) / t


def _check_bound(view, arrays, gamma_slices, eps, sampled_shape):
    r = rule_for(view)
    r.check(view)
    bound = r.bounds(view)[0]
    assert bound.label == Label.CERTIFIED
    explicit = _explicit_sup(gamma_slices, eps)
    assert bound.value >= explicit and bound.value == pytest.approx(explicit, rel=1e-7)
    # a pair near zero variance realises it (the worst slice)
    worst = max(gamma_slices, key=lambda g: _explicit_sup([g], eps))
    assert _realised(worst, eps) == pytest.approx(bound.value, rel=1e-5)
    assert _realised(worst, eps) <= bound.value
    # Jacobians at random points, including near-constant inputs, and sampled ratios stay below
    fn = input_fn(view, arrays, 0)
    rng = np.random.default_rng(0)
    for scale in (1e-4, 1e-2, 1.0, 10.0):
        p = torch.as_tensor(rng.normal(size=sampled_shape) * scale)
        jac = torch.autograd.functional.jacobian(fn, p).reshape(p.numel(), p.numel())
        assert float(torch.linalg.matrix_norm(jac, 2)) <= bound.value
    assert sampled_max_ratio(fn, sampled_shape, n_pairs=100, scales=(1e-4, 1e-2, 1.0)) <= bound.value
    notes = r.notes(view)
    assert notes and all(code in CODES for code, _ in notes) and notes[0][0] == "normalization-global"
    return bound


@pytest.mark.parametrize("axis,scale_shape,bias,eps", [
    (-1, (5,), True, 1e-5), (-2, (4, 5), False, 1e-3), (1, (3, 4, 5), True, 0.5),
    (-2, (5,), True, 1e-2), (2, (1,), False, 1e-5), (0, (2, 3, 4, 5), True, 1e-1)])
def test_layernorm(axis, scale_shape, bias, eps):
    rng = np.random.default_rng(len(scale_shape) + axis + 10)
    x = (rng.normal(size=(2, 3, 4, 5)) * 2).astype(np.float32)
    gamma = rng.normal(size=scale_shape).astype(np.float32)
    beta = rng.normal(size=scale_shape).astype(np.float32)
    node = helper.make_node("LayerNormalization", ["x", "g"] + (["b"] if bias else []), ["y"],
                            axis=axis, epsilon=eps)
    arrays = [x, gamma] + ([beta] if bias else [])
    dyn = [True, False] + ([False] if bias else [])
    for opset in (17, 18, 22):
        assert_matches_ort(node, arrays, dyn, opset=opset, atol=1e-4, rtol=1e-4)
    view = nodeview(node, arrays, dyn, 17)
    block = x.shape[axis % 4:]
    # a smaller copy of the problem for the sampled checks (same γ, one leading entry)
    small = x[(slice(0, 1),) * (axis % 4)] if axis % 4 else x
    small_view = nodeview(node, [small] + arrays[1:], dyn, 17)
    _check_bound(small_view, [small] + arrays[1:], [np.broadcast_to(gamma, block)], eps, small.shape)
    assert rule_for(view).bounds(view)[0].value == rule_for(small_view).bounds(small_view)[0].value


def test_layernorm_max_gamma_is_loose_but_bound_exact():
    # γ = (1, 0): ‖ΓP‖ = 1/√2 < max|γ| = 1 (the closed form is sound but loose)
    node = helper.make_node("LayerNormalization", ["x", "g"], ["y"], epsilon=1e-2)
    x, g = np.zeros((1, 2), np.float32), np.array([1.0, 0.0], np.float32)
    view = nodeview(node, [x, g], [True, False], 17)
    bound = rule_for(view).bounds(view)[0]
    assert bound.value == pytest.approx(math.sqrt(0.5) / 0.1, rel=1e-7)
    assert _realised(g, 1e-2) == pytest.approx(bound.value, rel=1e-5)


def test_layernorm_single_entry_is_constant():
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)
    x = np.random.default_rng(1).normal(size=(4, 1)).astype(np.float32)
    arrays = [x, np.array([2.0], np.float32), np.array([0.5], np.float32)]
    assert_matches_ort(node, arrays, [True, False, False])
    view = nodeview(node, arrays, [True, False, False])
    assert rule_for(view).bounds(view)[0].value == 0.0
    assert sampled_max_ratio(input_fn(view, arrays, 0), x.shape, n_pairs=20) == 0.0


def test_layernorm_stats_outputs_refused_but_executed():
    node = helper.make_node("LayerNormalization", ["x", "g"], ["y", "mean", "istd"], axis=1)
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    arrays = [x, np.ones(4, np.float32)]
    assert_matches_ort(node, arrays, [True, False])
    with pytest.raises(RuleNotApplicable):
        rule_for(nodeview(node, arrays, [True, False])).check(nodeview(node, arrays, [True, False]))


def test_computed_scale_refused():
    node = helper.make_node("LayerNormalization", ["x", "g"], ["y"])
    x = np.zeros((2, 3), np.float32)
    view = nodeview(node, [x, np.ones(3, np.float32)], [True, True])
    with pytest.raises(RuleNotApplicable):
        rule_for(view).check(view)


@pytest.mark.parametrize("spatial,eps", [((3, 4), 1e-5), ((5,), 1e-2), ((1, 1), 1e-5), ((2, 2, 2), 0.3)])
def test_instancenorm(spatial, eps):
    rng = np.random.default_rng(len(spatial))
    x = (rng.normal(size=(2, 3) + spatial) * 3).astype(np.float32)
    scale = np.array([0.5, -2.0, 1.5], np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    node = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=eps)
    arrays, dyn = [x, scale, bias], [True, False, False]
    for opset in (11, 22):
        assert_matches_ort(node, arrays, dyn, opset=opset, atol=1e-4, rtol=1e-4)
    view = nodeview(node, arrays, dyn, 22)
    m = math.prod(spatial)
    if m == 1:
        assert rule_for(view).bounds(view)[0].value == 0.0
        return
    small = x[:1]
    sview = nodeview(node, [small, scale, bias], dyn, 22)
    bound = _check_bound(sview, [small, scale, bias], [np.full(m, c) for c in scale], eps, small.shape)
    assert bound.value == pytest.approx(2.0 / math.sqrt(eps), rel=1e-7)


def _group_ref(x, groups, scale_c, bias_c, eps):
    """numpy GroupNorm with per-channel scale/bias (independent of the rule)."""
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1).astype(np.float64)
    z = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    shape = (1, c) + (1,) * (x.ndim - 2)
    return z.reshape(x.shape) * scale_c.reshape(shape) + bias_c.reshape(shape)


@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_groupnorm(opset, groups):
    rng = np.random.default_rng(groups + opset)
    x = (rng.normal(size=(2, 4, 3, 2)) * 2).astype(np.float32)
    k = groups if opset < 21 else 4
    scale = rng.normal(size=k).astype(np.float32)
    bias = rng.normal(size=k).astype(np.float32)
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=groups, epsilon=1e-3)
    arrays, dyn = [x, scale, bias], [True, False, False]
    view = nodeview(node, arrays, dyn, opset)
    got = rule_for(view).forward(view, *[torch.as_tensor(a, dtype=torch.float64) for a in arrays]).numpy()
    per_channel = np.repeat(scale, 4 // groups) if opset < 21 else scale
    bias_c = np.repeat(bias, 4 // groups) if opset < 21 else bias
    np.testing.assert_allclose(got, _group_ref(x, groups, per_channel.astype(np.float64), bias_c, 1e-3), atol=1e-9)
    if opset >= 21:   # onnxruntime implements GroupNormalization from v21 (v18 only as a function body)
        assert_matches_ort(node, arrays, dyn, opset=opset, atol=1e-4, rtol=1e-4)
    small = x[:1]
    sview = nodeview(node, [small, scale, bias], dyn, opset)
    slices = [np.repeat(per_channel.reshape(groups, -1)[g].astype(np.float64), 6) for g in range(groups)]
    _check_bound(sview, [small, scale, bias], slices, 1e-3, small.shape)


def test_conformance(monkeypatch):
    # the ONNX cases name the Mean/InvStdDev outputs, which check() refuses for the bound; their
    # semantics are still checked here
    for op in ("LayerNormalization", "InstanceNormalization", "GroupNormalization"):
        monkeypatch.setattr(type(rule_for(nodeview(*_tiny(op)))), "check", lambda self, node: None)
    checked, skipped = conformance("LayerNormalization", atol=1e-4)
    assert checked >= 10, skipped
    checked, skipped = conformance("InstanceNormalization", atol=1e-4)
    assert checked >= 2, skipped
    checked, skipped = conformance("GroupNormalization", atol=1e-4)
    assert checked >= 2, skipped


def _tiny(op):
    x = np.zeros((1, 2, 2), np.float32)
    if op == "LayerNormalization":
        return helper.make_node(op, ["x", "s"], ["y"]), [x, np.ones(2, np.float32)], [True, False], 17
    attrs = {"num_groups": 2} if op == "GroupNormalization" else {}
    return (helper.make_node(op, ["x", "s", "b"], ["y"], **attrs), [x, np.ones(2, np.float32), np.zeros(2, np.float32)],
            [True, False, False], 21 if op == "GroupNormalization" else 17)


def test_many_distinct_scales_fall_back_to_max_gamma(monkeypatch):
    # past NORM_EIG_LIMIT distinct |γ| values the closed form max|γ|/√ε is used: sound (≥ the
    # explicit SVD), labelled without a known slack
    import lipgraph.rules.normalization as norm
    monkeypatch.setattr(norm, "NORM_EIG_LIMIT", 3)
    gamma = np.array([0.5, -2.0, 1.0, 0.25, 1.5], np.float32)
    node = helper.make_node("LayerNormalization", ["x", "g"], ["y"], epsilon=1e-2)
    view = nodeview(node, [np.zeros((1, 5), np.float32), gamma], [True, False], 17)
    bound = rule_for(view).bounds(view)[0]
    assert bound.value >= 2.0 / 0.1 and bound.slack is None
    assert bound.value >= _explicit_sup([gamma], 1e-2)
