"""Rules of the private domain lipgraph.fused ("SiLU", "Swish", "HardSwish", "Mish", "Gelu"):
forward against the decomposed formula the exporters write, slope ranges against dense grids of
derivatives, high-precision extrema and sampled ratios, and the constant-tolerance margin
attacked by perturbing every matched constant."""

import math

import mpmath
import numpy as np
import pytest
import torch
from onnx import helper

from lipgraph.ir.fuse.match import REL_TOL
from lipgraph.nodeview import make_nodeview
from lipgraph.registry import FUSED_DOMAIN, REGISTRY, load_builtin_rules
from rulecheck import grid_derivatives, sampled_max_ratio

load_builtin_rules()
GRID = np.linspace(-12.0, 12.0, 240001)
SQ2, C, A = math.sqrt(2), math.sqrt(2 / math.pi), 0.044715


def _decomposed(op, attrs, k=(1.0,) * 5):
    """The op as the exporters spell it, constants optionally scaled by the factors ``k``."""
    if op == "SiLU":
        return lambda x: x * torch.sigmoid(x)
    if op == "Swish":
        return lambda x: x * torch.sigmoid(x * attrs["beta"])
    if op == "Mish":
        return lambda x: x * torch.tanh(torch.nn.functional.softplus(x))
    if op == "HardSwish":
        return lambda x: x * torch.clamp(x + 3 * k[0], 0 * k[1], 6 * k[2]) * (k[3] / 6)
    if attrs["approximate"] == "none":
        return lambda x: 0.5 * k[0] * x * (k[1] + torch.erf(x / (SQ2 * k[2])))
    return lambda x: 0.5 * k[0] * x * (k[1] + torch.tanh(C * k[2] * (x + A * k[3] * x ** 3)))


def _rule(op, attrs):
    node = helper.make_node(op, ["x"], ["y"], domain=FUSED_DOMAIN, **attrs)
    r, version = REGISTRY.resolve(FUSED_DOMAIN, op, 1)
    return r, make_nodeview(node, version, [(5,)], [(5,)], [True], {})


CASES = [("SiLU", {}, []), ("Swish", {"beta": 2.0}, []), ("Swish", {"beta": 0.375}, []), ("Swish", {"beta": -1.5}, []),
         ("Swish", {"beta": 0.0}, []), ("HardSwish", {}, [-3.0, 3.0]), ("Mish", {}, []),
         ("Gelu", {"approximate": "none"}, []), ("Gelu", {"approximate": "tanh"}, [])]
IDS = [f"{op}-{'-'.join(f'{k}={v}' for k, v in a.items()) or 'default'}" for op, a, _ in CASES]


@pytest.mark.parametrize("op,attrs,kinks", CASES, ids=IDS)
def test_forward_is_the_decomposed_formula(op, attrs, kinks):
    r, view = _rule(op, attrs)
    x = torch.as_tensor(np.union1d(np.linspace(-20, 20, 4001), [0.0, 1e4, -1e4, *kinks]))
    assert torch.allclose(r.forward(view, x), _decomposed(op, attrs)(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op,attrs,kinks", CASES, ids=IDS)
def test_slope_range_sound_and_reached(op, attrs, kinks):
    r, view = _rule(op, attrs)
    lo, hi = r.slopes(view)
    fn = lambda x: r.forward(view, x)
    derivs = np.concatenate(grid_derivatives(fn, np.union1d(GRID, kinks)))
    assert derivs.min() >= lo - 1e-7 and derivs.max() <= hi + 1e-7, (derivs.min(), derivs.max(), lo, hi)
    # a point realises each end: within 1e-6, plus the declared margin for the widened ops
    margin = 1e-6 + (1e-5 if op in ("HardSwish", "Gelu") else 0.0)
    assert derivs.min() - lo <= margin and hi - derivs.max() <= margin
    assert sampled_max_ratio(fn, (50,)) <= max(abs(lo), abs(hi)) * (1 + 1e-9)


def test_silu_range_matches_high_precision_extrema():
    mpmath.mp.dps = 30
    s = lambda t: t / (1 + mpmath.exp(-t))
    xm = mpmath.findroot(lambda t: mpmath.diff(s, t, 2), 2.4)
    hi, lo = mpmath.diff(s, xm), mpmath.diff(s, -xm)
    for op, attrs in [("SiLU", {}), ("Swish", {"beta": 3.0})]:
        r, view = _rule(op, attrs)
        rlo, rhi = r.slopes(view)
        assert rlo <= lo and rhi >= hi and float(lo) - rlo < 2e-9 and rhi - float(hi) < 2e-9
    assert float(xm) == pytest.approx(2.3994, abs=1e-4)


def test_swish_beta_zero_is_half_identity():
    r, view = _rule("Swish", {"beta": 0.0})
    assert tuple(r.slopes(view)) == (0.5, 0.5)


@pytest.mark.parametrize("op,attrs,n", [("HardSwish", {}, 4), ("Gelu", {"approximate": "none"}, 3),
                                        ("Gelu", {"approximate": "tanh"}, 4)])
def test_constant_tolerance_margin(op, attrs, n):
    """Every matched constant off by ±REL_TOL (relative; 0 stays 0): the derivative stays inside
    the widened range."""
    r, view = _rule(op, attrs)
    lo, hi = r.slopes(view)
    rng = np.random.default_rng(3)
    signs = [np.sign(rng.standard_normal(n)) for _ in range(12)] + [np.ones(n), -np.ones(n)]
    for s in signs:
        k = tuple(1 + REL_TOL * s) + (1.0,) * (5 - n)
        derivs = np.concatenate(grid_derivatives(_decomposed(op, attrs, k), np.union1d(GRID[::4], [-3.0, 3.0])))
        assert derivs.min() >= lo and derivs.max() <= hi, (s, derivs.min(), derivs.max())


def test_hard_swish_smooth_recovers_op():
    r, view = _rule("HardSwish", {})
    x = torch.as_tensor(np.union1d(np.linspace(-6, 6, 1201), [-3.0, 3.0]))
    exact = r.forward(view, x)
    assert torch.allclose(r.smooth(view, x, 0.0), exact, rtol=1e-12, atol=1e-12)
    assert torch.allclose(r.smooth(view, x, 1e-5), exact, atol=1e-4)
