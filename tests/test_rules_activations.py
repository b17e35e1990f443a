"""Activations: torch semantics vs onnxruntime and ONNX cases; slope ranges vs dense grids of
derivatives (autograd and finite differences) and sampled ratios; smoothed surrogates."""

import mpmath
import numpy as np
import pytest
import torch
from onnx import helper

from lipgraph.errors import RuleNotApplicable
from rulecheck import (assert_matches_ort, assert_versions_covered, conformance, grid_derivatives, nodeview,
                       ort_run, rule_for, sampled_max_ratio)

# (op, attributes, kinks: points where one-sided derivatives differ, exact: range is tight)
CASES = [
    ("Relu", {}, [0.0]),
    ("LeakyRelu", {"alpha": 0.1}, [0.0]),
    ("LeakyRelu", {"alpha": 2.5}, [0.0]),
    ("LeakyRelu", {"alpha": -0.5}, [0.0]),
    ("Sigmoid", {}, []),
    ("Tanh", {}, []),
    ("Softplus", {}, []),
    ("Elu", {}, [0.0]),
    ("Elu", {"alpha": 2.0}, [0.0]),
    ("Elu", {"alpha": 0.3}, [0.0]),
    ("Elu", {"alpha": -0.7}, [0.0]),
    ("Selu", {}, [0.0]),
    ("Selu", {"alpha": 0.5, "gamma": 2.0}, [0.0]),
    ("Selu", {"alpha": 2.0, "gamma": -1.5}, [0.0]),
    ("Gelu", {}, []),
    ("Gelu", {"approximate": "tanh"}, []),
    ("HardSigmoid", {}, [-2.5, 2.5]),
    ("HardSigmoid", {"alpha": 0.5, "beta": 0.2}, [-0.4, 1.6]),
    ("HardSigmoid", {"alpha": -0.3, "beta": 0.1}, [1 / 3, -3.0]),
    ("HardSwish", {}, [-3.0, 3.0]),
    ("Mish", {}, []),
]
IDS = [f"{op}-{'-'.join(f'{k}={v}' for k, v in a.items()) or 'default'}" for op, a, _ in CASES]
GRID = np.linspace(-12.0, 12.0, 240001)


def _opsets(op):
    return [max(11, v) for v in assert_versions_covered(op)]


def _view(op, attrs, opset=None, x=None):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    x = np.zeros((3,), np.float32) if x is None else x
    return node, nodeview(node, [x], [True], opset or _opsets(op)[-1])


@pytest.mark.parametrize("op,attrs,kinks", CASES, ids=IDS)
def test_semantics_vs_ort_every_version(op, attrs, kinks):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=60) * 4, kinks, [0.0, -1e-3, 1e-3]]).astype(np.float32).reshape(1, -1)
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    for opset in _opsets(op):
        assert_matches_ort(node, [x], [True], opset=opset)


@pytest.mark.parametrize("op,attrs,kinks", CASES, ids=IDS)
def test_slope_range_sound_and_tight(op, attrs, kinks):
    _, view = _view(op, attrs)
    r = rule_for(view)
    lo, hi = r.slopes(view)
    xs = np.union1d(GRID, np.asarray(kinks, dtype=np.float64))
    fn = lambda x: r.forward(view, x)
    auto, left, right = grid_derivatives(fn, xs)
    tol = 1e-7 * max(1.0, abs(lo), abs(hi))
    for d in (auto, left, right):
        assert d.min() >= lo - tol and d.max() <= hi + tol, (d.min(), d.max(), lo, hi)
    # tight: the grid's derivative values reach both ends of the range
    every = np.concatenate([auto, left, right])
    assert every.min() == pytest.approx(lo, abs=1e-3)
    assert every.max() == pytest.approx(hi, abs=1e-3)
    # sampled ratios of the elementwise map never exceed max(|lo|, |hi|)
    lip = max(abs(lo), abs(hi))
    assert sampled_max_ratio(fn, (50,)) <= lip * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize("op,attrs,kinks", CASES, ids=IDS)
def test_smooth_surrogate_recovers_op(op, attrs, kinks):
    _, view = _view(op, attrs)
    r = rule_for(view)
    x = torch.as_tensor(np.union1d(np.linspace(-6, 6, 1201), kinks))
    exact = r.forward(view, x)
    assert torch.allclose(r.smooth(view, x, 0.0), exact, rtol=1e-12, atol=1e-12)
    assert torch.allclose(r.smooth(view, x, 1e-5), exact, atol=1e-4)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(r.smooth(view, xg, 0.1).sum(), xg)
    assert torch.isfinite(g).all()


def test_mish_range_matches_high_precision_extrema():
    mpmath.mp.dps = 30
    m = lambda t: t * mpmath.tanh(mpmath.log1p(mpmath.exp(t)))
    ends = [mpmath.diff(m, mpmath.findroot(lambda t: mpmath.diff(m, t, 2), x0)) for x0 in (-2.2, 1.5)]
    _, view = _view("Mish", {})
    lo, hi = rule_for(view).slopes(view)
    assert lo <= ends[0] and hi >= ends[1] and float(ends[0]) - lo < 2e-9 and hi - float(ends[1]) < 2e-9


@pytest.mark.parametrize("approximate,target", [("none", "erf"), ("tanh", "tanh")])
def test_gelu_range_matches_high_precision_extrema(approximate, target):
    mpmath.mp.dps = 30
    if target == "erf":
        d = lambda t: mpmath.ncdf(t) + t * mpmath.npdf(t)
        hi, lo = d(mpmath.sqrt(2)), d(-mpmath.sqrt(2))
    else:
        c, a = mpmath.sqrt(2 / mpmath.pi), mpmath.mpf("0.044715")
        g = lambda t: t / 2 * (1 + mpmath.tanh(c * (t + a * t ** 3)))
        xm = mpmath.findroot(lambda t: mpmath.diff(g, t, 2), 1.4)
        hi, lo = mpmath.diff(g, xm), mpmath.diff(g, -xm)
    _, view = _view("Gelu", {"approximate": approximate})
    rlo, rhi = rule_for(view).slopes(view)
    assert rlo <= lo and rhi >= hi                      # sound (rounded outward)
    assert float(lo) - rlo < 2e-9 and rhi - float(hi) < 2e-9   # and tight
    assert float(hi) == pytest.approx(1.1289, abs=1e-3) and float(lo) == pytest.approx(-0.1289, abs=1e-3)


def test_known_slope_values():
    expect = {("LeakyRelu", 2.5): (1.0, 2.5), ("LeakyRelu", -0.5): (-0.5, 1.0), ("Elu", 2.0): (0.0, 2.0),
              ("Elu", -0.7): (-0.7, 1.0), ("HardSigmoid", 0.2): (0.0, 0.2)}
    for (op, alpha), rng in expect.items():
        _, view = _view(op, {"alpha": alpha})
        assert rule_for(view).slopes(view) == pytest.approx(rng)
    _, view = _view("HardSwish", {})
    assert rule_for(view).slopes(view) == (-0.5, 1.5)
    _, view = _view("Sigmoid", {})
    assert rule_for(view).slopes(view) == (0.0, 0.25)


# --- Clip: min/max as attributes (opset 6) or constant inputs (11+) -------------------------

CLIP = [(-1.0, 2.0), (None, 0.5), (-0.5, None), (None, None), (1.0, -1.0)]


@pytest.mark.parametrize("lo,hi", CLIP)
def test_clip_every_version(lo, hi):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=40) * 3, [-1.0, 2.0, 0.5, -0.5]]).astype(np.float32)
    assert assert_versions_covered("Clip") == [11, 12, 13]
    for opset in (6, 11, 12, 13):
        if opset < 11 and lo is not None and hi is not None and lo > hi:
            continue                        # onnxruntime refuses min > max before opset 11
        if opset < 11:
            attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
            node, arrays = helper.make_node("Clip", ["x"], ["y"], **attrs), [x]
        else:
            names = ["x", "lo" if lo is not None else "", "hi" if hi is not None else ""]
            while names[-1] == "":
                names.pop()
            arrays = [x] + [None if n == "" else np.array(v, np.float32)
                            for n, v in zip(names[1:], (lo, hi))]
            node = helper.make_node("Clip", names, ["y"])
        assert_matches_ort(node, arrays, [True] + [False] * (len(arrays) - 1), opset=opset)
        view = nodeview(node, arrays, [True] + [False] * (len(arrays) - 1), opset)
        r = rule_for(view)
        s_lo, s_hi = r.slopes(view)
        fn = lambda t: r.forward(view, *([t] + [None if a is None else torch.as_tensor(a, dtype=torch.float64)
                                                for a in arrays[1:]]))
        auto, left, right = grid_derivatives(fn, np.union1d(GRID[::10], [-1.0, 2.0, 0.5, -0.5]))
        every = np.concatenate([auto, left, right])
        assert every.min() >= s_lo - 1e-7 and every.max() <= s_hi + 1e-7
        assert every.max() == pytest.approx(s_hi, abs=1e-3)
        exact = fn(torch.as_tensor(x, dtype=torch.float64))
        assert torch.allclose(r.smooth(view, torch.as_tensor(x, dtype=torch.float64), 1e-6), exact, atol=1e-5)
    if lo is not None and hi is not None and lo >= hi:
        assert (s_lo, s_hi) == (0.0, 0.0)


def test_clip_computed_limit_not_applicable():
    x = np.zeros(4, np.float32)
    node = helper.make_node("Clip", ["x", "lo"], ["y"])
    view = nodeview(node, [x, np.array(0.0, np.float32)], [True, True], 13)
    with pytest.raises(RuleNotApplicable):
        rule_for(view).check(view)


# --- PRelu: constant slope tensor, per-channel slope arrays ---------------------------------

@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (4,)])
def test_prelu_every_version_and_slopes(slope_shape):
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(2, 3, 5, 4)) * 3).astype(np.float32)
    slope = np.array([0.2, 2.0, -0.5, 1.0][:int(np.prod(slope_shape))], np.float32).reshape(slope_shape)
    node = helper.make_node("PRelu", ["x", "s"], ["y"])
    assert assert_versions_covered("PRelu") == [9, 16]
    for opset in (9, 16):
        assert_matches_ort(node, [x, slope], [True, False], opset=opset)
    view = nodeview(node, [x, slope], [True, False], 16)
    r = rule_for(view)
    lo, hi = r.slopes(view)
    lo_b, hi_b = np.broadcast_to(lo, x.shape), np.broadcast_to(hi, x.shape)
    xt = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
    st = torch.as_tensor(slope, dtype=torch.float64)
    (d,) = torch.autograd.grad(r.forward(view, xt, st).sum(), xt)
    d = d.numpy()
    assert np.all(d >= lo_b - 1e-12) and np.all(d <= hi_b + 1e-12)
    slope_b = np.broadcast_to(slope.astype(np.float64), x.shape)
    assert np.array_equal(d, np.where(x >= 0, 1.0, slope_b))
    # tight per entry: exactly the two slopes the entry can take
    assert np.array_equal(lo_b, np.minimum(slope_b, 1.0)) and np.array_equal(hi_b, np.maximum(slope_b, 1.0))
    lip = float(np.max(np.maximum(np.abs(lo), np.abs(hi))))
    fn = lambda t: r.forward(view, t, st)
    assert sampled_max_ratio(fn, x.shape, n_pairs=100) <= lip * (1 + 1e-9)
    assert torch.allclose(r.smooth(view, xt.detach(), 1e-6), fn(xt.detach()), atol=1e-5)


def test_prelu_computed_slope_not_applicable():
    x = np.zeros((1, 2), np.float32)
    node = helper.make_node("PRelu", ["x", "s"], ["y"])
    view = nodeview(node, [x, np.ones(2, np.float32)], [True, True], 16)
    with pytest.raises(RuleNotApplicable):
        rule_for(view).check(view)


# --- ONNX node test cases -------------------------------------------------------------------

@pytest.mark.parametrize("op,minimum", [("Relu", 1), ("LeakyRelu", 3), ("PRelu", 2), ("Sigmoid", 2), ("Tanh", 2),
                                        ("Softplus", 2), ("Elu", 3), ("Selu", 3), ("Gelu", 4),
                                        ("HardSigmoid", 3), ("HardSwish", 1), ("Mish", 1), ("Clip", 12)])
def test_conformance(op, minimum):
    checked, skipped = conformance(op, dynamic_inputs=(0,))
    assert checked >= minimum, skipped


@pytest.mark.parametrize("x_shape,slope_shape", [((1, 4), (3, 4)),      # red-team V2: output (3, 4)
                                                 ((1,), (3,)), ((2, 1, 3), (4, 1))])
def test_prelu_slope_that_broadcasts_the_input_is_not_applicable(x_shape, slope_shape):
    """onnxruntime broadcasts PRelu both ways: a slope larger than x copies x's entries, so the op
    is no longer elementwise and the slope range is not its Lipschitz constant (V2: 'exact' 3 for
    a realised 3√3). The rule must refuse it."""
    x = np.ones(x_shape, np.float32)
    slope = np.full(slope_shape, 3.0, np.float32)
    node = helper.make_node("PRelu", ["x", "s"], ["y"])
    assert ort_run(node, [x, slope])[0].shape != x_shape
    view = nodeview(node, [x, slope], [True, False])
    with pytest.raises(RuleNotApplicable, match="not elementwise"):
        rule_for(view).check(view)
