"""Normalisations of the private domain lipgraph.fused ("LayerNorm", "RMSNorm", "Softmax",
"LogSoftmax"): forward against numpy references over any set of axes (non-trailing,
non-contiguous) with γ, β broadcast as the model's Mul/Add would; bounds against SVDs of explicit
Jacobians (where they are reached and at random points), sampled ratios and realising pairs; the
same value as the ai.onnx rule whose maths they reuse."""
import math

import numpy as np
import pytest
import torch
from onnx import helper

from lipgraph.diagnostics import CODES
from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import Label
from lipgraph.nodeview import make_nodeview
from lipgraph.registry import FUSED_DOMAIN, REGISTRY, load_builtin_rules
from rulecheck import nodeview, rule_for, sampled_max_ratio, spectral

load_builtin_rules()


def _fused(op, shape, attrs, weights=(), dynamic_weights=False):
    """(rule, view, fn: x ↦ output) of a fused node with constant inputs ``weights`` after x."""
    names = ["g", "b"][:len(weights)]
    node = helper.make_node(op, ["x", *names], ["y"], domain=FUSED_DOMAIN, **attrs)
    r, version = REGISTRY.resolve(FUSED_DOMAIN, op, 1)
    view = make_nodeview(node, version, [shape, *(np.shape(w) for w in weights)], [shape],
                         [True, *([dynamic_weights] * len(weights))],
                         {} if dynamic_weights else {i + 1: np.asarray(w) for i, w in enumerate(weights)})
    tensors = [torch.as_tensor(np.asarray(w, np.float64)) for w in weights]
    return r, view, lambda x: r.forward(view, x, *tensors)


def _jacobian_norm(fn, x) -> float:
    """σ_max of the explicit Jacobian of fn at x (autograd, float64 SVD)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return spectral(torch.autograd.functional.jacobian(fn, x).reshape(x.numel(), x.numel()).numpy())


def _np_norm(x, dims, eps, g, b, centred):
    m = x.mean(axis=dims, keepdims=True) if centred else 0.0
    y = (x - m) / np.sqrt(((x - m) ** 2).mean(axis=dims, keepdims=True) + eps)
    return y * (1.0 if g is None else g) + (0.0 if b is None else b)


NORM_CASES = [  # shape, axes, γ shape (None: no γ), β, ε
    ((2, 3, 8), [2], (8,), True, 1e-5),
    ((2, 4, 3, 3), [1], (4, 1, 1), True, 1e-6),          # ConvNeXt's channels-first LayerNorm
    ((2, 3, 4), [1, 2], (3, 4), False, 1e-2),
    ((2, 3, 4), [0, 2], (2, 1, 4), True, 1e-3),          # non-contiguous axes, γ varies per slice
    ((3, 5), [1], None, False, 1e-5),
    ((2, 6), [1], (), True, 0.25),                       # scalar γ
]


@pytest.mark.parametrize("op", ["LayerNorm", "RMSNorm"])
@pytest.mark.parametrize("shape,axes,gshape,bias,eps", NORM_CASES)
def test_normalisation(op, shape, axes, gshape, bias, eps):
    rng = np.random.default_rng(len(shape) + len(axes))
    g = None if gshape is None else rng.normal(size=gshape) * 2
    b = rng.normal(size=shape[-1:]) if bias else None
    weights = [np.ones(()) if g is None else g] + ([b] if bias else [])
    r, view, fn = _fused(op, shape, {"axes": axes, "epsilon": eps}, weights)
    r.check(view)
    x = rng.normal(size=shape) * 3 + 1
    centred = op == "LayerNorm"
    stored = float(np.float32(eps))   # an ONNX float attribute
    np.testing.assert_allclose(fn(torch.as_tensor(x)).numpy(), _np_norm(x, tuple(axes), stored, g, b, centred),
                               rtol=1e-12, atol=1e-12)
    bound = r.bounds(view)[0]
    assert bound.label == Label.CERTIFIED
    # reached where every slice is constant (LayerNorm) or zero (RMSNorm): the Jacobian's SVD there
    at_worst = _jacobian_norm(fn, np.full(shape, 0.7) if centred else np.zeros(shape))
    assert bound.value >= at_worst and bound.value == pytest.approx(at_worst, rel=1e-7)
    for scale in (1e-4, 1e-2, 1.0, 10.0):
        assert _jacobian_norm(fn, rng.normal(size=shape) * scale) <= bound.value
    assert sampled_max_ratio(fn, shape, n_pairs=60, scales=(1e-4, 1e-2, 1.0)) <= bound.value
    notes = r.notes(view)
    assert [code for code, _ in notes] == ["normalization-global"] and "normalization-global" in CODES


def test_rmsnorm_constant_is_max_gamma_over_sqrt_eps_attained_at_zero():
    """RMSNorm's global constant max|γ|/√ε: the Jacobian's SVD is largest at x = 0, where it equals
    the constant, and the pair (0, t·e_i) realises it (i the entry of largest |γ|)."""
    gamma, eps, n = np.array([0.5, -3.0, 1.0, 2.0, 0.1, -0.2, 1.5, 0.7]), float(np.float32(1e-5)), 8
    r, view, fn = _fused("RMSNorm", (1, n), {"axes": [1], "epsilon": eps}, [gamma])
    closed = np.abs(gamma).max() / math.sqrt(eps)
    assert r.bounds(view)[0].value == pytest.approx(closed, rel=1e-7) and r.bounds(view)[0].value >= closed
    rng = np.random.default_rng(3)
    norms = [_jacobian_norm(fn, rng.normal(size=(1, n)) * s) for s in np.geomspace(1e-6, 10, 15)]
    assert max(norms) <= closed and _jacobian_norm(fn, np.zeros((1, n))) == pytest.approx(closed, rel=1e-12)
    t, e = 1e-6, np.eye(n)[1][None]
    pair = float(torch.linalg.vector_norm(fn(torch.as_tensor(t * e)) - fn(torch.zeros(1, n)))) / t
    assert pair == pytest.approx(closed, rel=1e-6) and pair <= r.bounds(view)[0].value


def test_rmsnorm_single_entry_is_not_constant():
    """n = 1: y = γx/√(x² + ε) has slope γε/(x² + ε)^{3/2}, largest (γ/√ε) at 0 — unlike LayerNorm."""
    r, view, fn = _fused("RMSNorm", (4, 1), {"axes": [1], "epsilon": 0.0625}, [np.array([2.0])])
    assert r.bounds(view)[0].value == pytest.approx(8.0, rel=1e-7)
    assert _jacobian_norm(fn, np.zeros((4, 1))) == pytest.approx(8.0, rel=1e-12)
    _, ln_view, _ = _fused("LayerNorm", (4, 1), {"axes": [1], "epsilon": 0.0625}, [np.array([2.0])])
    assert rule_for(ln_view).bounds(ln_view)[0].value == 0.0


def test_layernorm_equals_the_onnx_rule_on_trailing_axes():
    rng = np.random.default_rng(4)
    gamma = rng.normal(size=(3, 5)).astype(np.float32)
    x = rng.normal(size=(2, 3, 5)).astype(np.float32)
    onnx_node = helper.make_node("LayerNormalization", ["x", "g"], ["y"], axis=1, epsilon=1e-3)
    onnx_view = nodeview(onnx_node, [x, gamma], [True, False], 17)
    r, view, fn = _fused("LayerNorm", x.shape, {"axes": [1, 2], "epsilon": 1e-3}, [gamma])
    assert r.bounds(view)[0].value == rule_for(onnx_view).bounds(onnx_view)[0].value
    ours = rule_for(onnx_view).forward(onnx_view, torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(gamma))
    assert torch.allclose(fn(torch.as_tensor(x, dtype=torch.float64)), ours, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["LayerNorm", "RMSNorm"])
def test_computed_scale_refused(op):
    r, view, _ = _fused(op, (2, 3), {"axes": [1], "epsilon": 1e-5}, [np.ones(3)], dynamic_weights=True)
    with pytest.raises(RuleNotApplicable):
        r.check(view)


def _np_softmax(x, dims, log):
    shifted = x - x.max(axis=dims, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=dims, keepdims=True))
    return shifted - lse if log else np.exp(shifted - lse)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axes", [((2, 5), [1]), ((3, 4, 2), [1]), ((2, 3, 4), [0, 2]), ((4, 1), [1])])
def test_softmax(op, shape, axes):
    r, view, fn = _fused(op, shape, {"axes": axes})
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape) * 4
    np.testing.assert_allclose(fn(torch.as_tensor(x)).numpy(), _np_softmax(x, tuple(axes), op == "LogSoftmax"),
                               rtol=1e-12, atol=1e-12)
    n = math.prod(shape[a] for a in axes)
    # the ai.onnx rule over one axis of n entries gives the same value
    onnx_node = helper.make_node(op, ["x"], ["y"], axis=1)
    flat = np.zeros((1, n), np.float32)
    onnx_bound = rule_for(nodeview(onnx_node, [flat], [True])).bounds(nodeview(onnx_node, [flat], [True]))[0]
    bound = r.bounds(view)[0]
    assert (bound.value, bound.label) == (onnx_bound.value, onnx_bound.label) == (
        {"Softmax": 0.5, "LogSoftmax": math.sqrt(n)}[op] if n > 1 else 0.0, Label.EXACT)
    assert sampled_max_ratio(fn, shape, n_pairs=60) <= bound.value
    for scale in (0.1, 1.0, 10.0):
        assert _jacobian_norm(fn, rng.normal(size=shape) * scale) <= bound.value * (1 + 1e-12)
