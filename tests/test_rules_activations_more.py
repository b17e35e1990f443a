"""Abs, Softsign, Celu, Erf, Mish: torch semantics vs onnxruntime at every listed opset and ONNX
cases; slope ranges vs dense grids of derivatives (autograd and finite differences), high-precision
extrema (mpmath) and sampled ratios."""
import mpmath
import numpy as np
import pytest
import torch
from onnx import helper

from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import Label
from rulecheck import (assert_matches_ort, assert_versions_covered, conformance, grid_derivatives, nodeview,
                       rule_for, sampled_max_ratio)

CASES = [("Abs", {}, [0.0]), ("Softsign", {}, [0.0]), ("Celu", {}, [0.0]), ("Celu", {"alpha": 0.3}, [0.0]),
         ("Celu", {"alpha": 4.0}, [0.0]), ("Erf", {}, []), ("Mish", {}, [])]
IDS = [f"{op}-{'-'.join(f'{k}={v}' for k, v in a.items()) or 'default'}" for op, a, _ in CASES]
GRID = np.linspace(-30.0, 30.0, 300001)
#: opsets onnxruntime runs for each op (the rule's since_versions it can execute)
ORT_OPSETS = {"Abs": [11, 13], "Softsign": [11, 22], "Celu": [12, 22], "Erf": [11, 13], "Mish": [18, 22]}


def test_versions_covered():
    assert assert_versions_covered("Abs") == [6, 13]
    assert assert_versions_covered("Softsign") == [1, 22]
    assert assert_versions_covered("Celu") == [12, 28]
    assert assert_versions_covered("Erf") == [9, 13]
    assert assert_versions_covered("Mish") == [18, 22]


def _view(op, attrs, opset):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    return node, nodeview(node, [np.zeros(3, np.float32)], [True], opset)


@pytest.mark.parametrize("op,attrs,kinks", CASES, ids=IDS)
def test_semantics_vs_ort(op, attrs, kinks):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=80) * 5, kinks, [0.0, -1e-3, 1e-3, 25.0, -25.0]]).astype(np.float32)
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    for opset in ORT_OPSETS[op]:
        assert_matches_ort(node, [x.reshape(1, -1)], [True], opset=opset)


@pytest.mark.parametrize("op,attrs,kinks", CASES, ids=IDS)
def test_slope_range_sound_and_tight(op, attrs, kinks):
    _, view = _view(op, attrs, ORT_OPSETS[op][-1])
    r = rule_for(view)
    r.check(view)
    lo, hi = r.slopes(view)
    xs = np.union1d(GRID, np.asarray(kinks, dtype=np.float64))
    fn = lambda x: r.forward(view, x)
    auto, left, right = grid_derivatives(fn, xs)
    tol = 1e-7
    for d in (auto, left, right):
        assert d.min() >= lo - tol and d.max() <= hi + tol, (d.min(), d.max(), lo, hi)
    every = np.concatenate([auto, left, right])
    # tight: both ends reached (Softsign's infimum 0 only as 1/(1 + 30)² ≈ 1e-3 on this grid)
    assert every.min() == pytest.approx(lo, abs=2e-3) and every.max() == pytest.approx(hi, abs=1e-3)
    assert sampled_max_ratio(fn, (50,)) <= max(abs(lo), abs(hi)) * (1 + 1e-9)


def test_erf_and_mish_extrema_high_precision():
    mpmath.mp.dps = 40
    _, view = _view("Erf", {}, 13)
    lo, hi = rule_for(view).slopes(view)
    assert rule_for(view).slopes(view).label == Label.CERTIFIED
    assert lo == 0.0 and hi >= 2 / mpmath.sqrt(mpmath.pi) and hi - float(2 / mpmath.sqrt(mpmath.pi)) < 1e-15
    mish = lambda t: t * mpmath.tanh(mpmath.log1p(mpmath.exp(t)))
    d = lambda t: mpmath.diff(mish, t)
    xmin = mpmath.findroot(lambda t: mpmath.diff(mish, t, 2), -2.0)
    xmax = mpmath.findroot(lambda t: mpmath.diff(mish, t, 2), 1.5)
    _, view = _view("Mish", {}, 18)
    rlo, rhi = rule_for(view).slopes(view)
    assert rlo <= d(xmin) and rhi >= d(xmax)                          # sound
    assert float(d(xmin)) - rlo < 2e-9 and rhi - float(d(xmax)) < 2e-9   # tight
    assert float(xmin) == pytest.approx(-2.2564, abs=1e-3) and float(xmax) == pytest.approx(1.4906, abs=1e-3)


def test_abs_smooth_recovers_op():
    _, view = _view("Abs", {}, 13)
    r = rule_for(view)
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    assert torch.allclose(r.smooth(view, x, 0.0), x.abs(), atol=1e-12)
    assert torch.allclose(r.smooth(view, x, 1e-5), x.abs(), atol=1e-4)


@pytest.mark.parametrize("alpha", [-1.0, 0.0])
def test_celu_nonpositive_alpha_not_applicable(alpha):
    _, view = _view("Celu", {"alpha": alpha}, 12)
    with pytest.raises(RuleNotApplicable, match="no global Lipschitz bound"):
        rule_for(view).check(view)
    with pytest.raises(RuleNotApplicable, match="no global Lipschitz bound"):   # never [0, 1] for α ≤ 0
        rule_for(view).slopes(view)


def test_conformance():
    for op in ("Abs", "Softsign", "Celu", "Erf", "Mish"):
        checked, skipped = conformance(op, skip=("test_celu_bfloat16",))   # torch cannot take numpy bfloat16
        assert checked >= 1, (op, skipped)
