"""LipSDP on chains: anchors, exact constants, sampled soundness, the proof's teeth, routes."""
from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lipgraph.certify.lipsdp import ClosedForm, chain, eclipse_fast, lipsdp, prove
from lipgraph.certify.seqlip import factor_exact
from lipgraph.labels import Label
from lipgraph.lower.search import search_lower

ANCHOR = Path(__file__).resolve().parents[2] / "models" / "anchors" / "lipsdp_random_2-10-30-20-2.npz"
needs_anchor = pytest.mark.skipif(not ANCHOR.is_file(), reason=f"anchor weights not found at {ANCHOR}")
EXACT_ANCHOR = 36.48223

def kinked(x):
    """Piecewise linear with slopes exactly −0.1 (x < 0) and 1.1 (x > 0): the range [−0.1, 1.1]
    with both ends attained everywhere (where dropping the αβ term hurts most)."""
    return torch.where(x > 0, 1.1 * x, -0.1 * x)


#: Activations realising the slope ranges they are declared with (GELU: [−0.12899, 1.12899]).
ACTIVATIONS = {
    "relu": (torch.relu, 0.0, 1.0),
    "leaky": (lambda x: torch.nn.functional.leaky_relu(x, 0.01), 0.01, 1.0),
    "kinked": (kinked, -0.1, 1.1),
    "gelu": (torch.nn.functional.gelu, -0.1290, 1.1290),
    "sigmoid": (torch.sigmoid, 0.0, 0.25),
}


def anchor_weights():
    data = np.load(ANCHOR)
    return [data[f"W{i}"] for i in range(1, 5)]


def network(weights, act):
    ws = [torch.as_tensor(w, dtype=torch.float64) for w in weights]

    def f(x):
        for w in ws[:-1]:
            x = act(x @ w.T)
        return x @ ws[-1].T
    return f


def sampled_lower(weights, act, seed, points=64):
    """Largest sampled ratio ‖f(x) − f(y)‖/‖x − y‖ and local Jacobian norm."""
    gen = torch.Generator().manual_seed(seed)
    f = network(weights, act)
    n = weights[0].shape[1]
    x = 2 * torch.randn(points, n, generator=gen, dtype=torch.float64)
    far = x.flip(0)
    near = x + 1e-4 * torch.randn(points, n, generator=gen, dtype=torch.float64)
    best = 0.0
    for y in (far, near):
        ratio = torch.linalg.vector_norm(f(x) - f(y), dim=1) / torch.linalg.vector_norm(x - y, dim=1)
        best = max(best, float(ratio.max()))
    jac = torch.func.vmap(torch.func.jacrev(f))(x)
    return max(best, float(torch.linalg.matrix_norm(jac, ord=2).max()))


# ------------------------------------------------------------------------------ anchors


@needs_anchor
def test_anchor_neuron():
    res = lipsdp(anchor_weights(), 0.0, 1.0, variant="neuron")
    assert res.bound.label is Label.CERTIFIED, res.notes
    assert res.bound.method == "lipsdp-neuron/first-order"
    assert EXACT_ANCHOR * (1 - 1e-6) <= res.bound.value <= 36.4823 * (1 + 1e-4)
    exact = np.linalg.norm(np.linalg.multi_dot(anchor_weights()[::-1]), 2)
    assert res.bound.value >= exact
    assert len(res.multipliers) == 3 and res.multipliers[0].shape == (10,)


@needs_anchor
@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_anchor_scaled(scale):
    """ρ of order 1e±24: the optimiser's steps must not depend on the scale of ρ."""
    res = lipsdp([scale * w for w in anchor_weights()])
    assert res.bound.label is Label.CERTIFIED
    assert res.bound.value == pytest.approx(EXACT_ANCHOR * scale ** 4, rel=1e-5)


@needs_anchor
def test_anchor_layer_and_eclipse_fast():
    layer = lipsdp(anchor_weights(), 0.0, 1.0, variant="layer")
    assert layer.bound.label is Label.CERTIFIED
    assert layer.bound.value == pytest.approx(39.839, rel=2e-5)
    assert layer.bound.value >= EXACT_ANCHOR
    fast = eclipse_fast(anchor_weights())
    assert fast.bound.label is Label.CERTIFIED and fast.bound.method == "eclipse-fast"
    autolip = math.prod(np.linalg.norm(w, 2) for w in anchor_weights())
    assert layer.bound.value <= fast.bound.value <= autolip


@needs_anchor
@pytest.mark.slow
@pytest.mark.parametrize("variant,expected", [("neuron", 36.4822), ("layer", 39.839)])
def test_anchor_sdp_route(variant, expected):
    pytest.importorskip("cvxpy")
    res = lipsdp(anchor_weights(), variant=variant, route="sdp")
    assert res.bound.label is Label.CERTIFIED
    assert res.bound.value == pytest.approx(expected, rel=2e-5)


# ------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize("seed", range(5))
def test_nonnegative_relu_nets_are_exact(seed):
    rng = np.random.default_rng(seed)
    widths = [int(w) for w in rng.integers(2, 12, size=int(rng.integers(3, 6)))]
    weights = [rng.uniform(0, 1, (b, a)) for a, b in zip(widths, widths[1:])]
    exact = np.linalg.norm(np.linalg.multi_dot(weights[::-1]), 2)
    res = lipsdp(weights)
    assert res.bound.label is Label.CERTIFIED
    assert exact <= res.bound.value <= exact * (1 + 1e-4)


def realised_pattern_pair(w1, w2, pattern):
    """A pair realising ‖W₂ D W₁‖ for the activation pattern D = diag(pattern) of a one-hidden-layer
    ReLU net (W₁ of full row rank): x with W₁x = ±1 (+ where the pattern is on), y = x + εv with v
    the top right singular vector of W₂DW₁ — both in the same linear region. Returns the ratio."""
    x = np.linalg.lstsq(w1, np.where(pattern > 0, 1.0, -1.0), rcond=None)[0]
    v = np.linalg.svd(w2 @ (pattern[:, None] * w1))[2][0]
    y = x + 1e-3 * v / np.abs(w1 @ v).max()
    f = network([w1, w2], torch.relu)
    fx, fy = (f(torch.as_tensor(z)) for z in (x, y))
    return float(torch.linalg.vector_norm(fy - fx) / np.linalg.norm(y - x))


@pytest.mark.parametrize("seed", range(4))
def test_one_hidden_layer_against_enumeration(seed):
    """n ≤ input width: every pattern is realised, so the constant is max over patterns ‖W₂DW₁‖
    (brute force here), and a pair in the best pattern's region realises it."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(4, 11))
    d, m = n + int(rng.integers(0, 4)), int(rng.integers(1, 5))
    w1, w2 = rng.standard_normal((n, d)), rng.standard_normal((m, n))
    patterns = np.array(list(itertools.product([0.0, 1.0], repeat=n)))
    norms = np.linalg.norm(np.einsum("mn,pn,nd->pmd", w2, patterns, w1), ord=2, axis=(1, 2))
    exact = norms.max()
    assert realised_pattern_pair(w1, w2, patterns[norms.argmax()]) == pytest.approx(exact, rel=1e-9)
    res = lipsdp([w1, w2])
    assert res.bound.label is Label.CERTIFIED
    assert res.bound.value >= exact
    print(f"n={n}: lipsdp-neuron / exact = {res.bound.value / exact:.4f}")


def test_one_hidden_layer_n20_against_exact_seqlip():
    """n = 20 ≤ input width: the exact constant is the exact SeqLip factor (all 2²⁰ patterns,
    lipgraph's enumeration; certified, so rounded up by a few ulps)."""
    rng = np.random.default_rng(120)
    w1, w2 = rng.standard_normal((20, 24)), rng.standard_normal((3, 20))
    exact = factor_exact(w2, w1, 0.0, 1.0).value
    res = lipsdp([w1, w2])
    assert res.bound.label is Label.CERTIFIED
    assert res.bound.value >= exact * (1 - 1e-12)
    print(f"n=20: lipsdp-neuron / exact SeqLip = {res.bound.value / exact:.4f}")


def test_affine_neurons():
    """α = β: the chain is linear, LipSDP approaches its norm as the multipliers grow."""
    rng = np.random.default_rng(3)
    weights = [rng.standard_normal((6, 4)), rng.standard_normal((5, 6)), rng.standard_normal((2, 5))]
    exact = 0.25 * np.linalg.norm(np.linalg.multi_dot(weights[::-1]), 2)
    res = lipsdp(weights, 0.5, 0.5)
    assert res.bound.label is Label.CERTIFIED
    assert exact <= res.bound.value <= exact * (1 + 1e-3)


# ----------------------------------------------------------------------------- soundness


def random_chain(seed):
    rng = np.random.default_rng(1000 + seed)
    deep = seed % 12 == 0
    depth = int(rng.integers(5, 10)) if deep else int(rng.integers(1, 4))  # hidden layers
    top = 64 if seed % 9 == 4 else 12
    widths = [int(w) for w in rng.integers(1, top + 1, size=depth + 2)]
    return [rng.standard_normal((b, a)) / math.sqrt(a) * rng.uniform(0.5, 2)
            for a, b in zip(widths, widths[1:])]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("seed", range(26))
def test_sampled_soundness(name, seed):
    act, alpha, beta = ACTIVATIONS[name]
    weights = random_chain(seed)
    res = lipsdp(weights, alpha, beta, variant="layer" if seed % 3 == 0 else "neuron", max_iter=40)
    assert res.bound.label is Label.CERTIFIED, res.notes
    assert sampled_lower(weights, act, seed, points=32) <= res.bound.value * (1 + 1e-9)
    autolip = math.prod(np.linalg.norm(w, 2) for w in weights) * max(abs(alpha), abs(beta))
    if alpha >= 0:  # with α < 0 the SDP need not beat the product of norms
        assert res.bound.value <= autolip * (1 + 1e-6)
    if seed % 12 in (0, 4):  # lipgraph's realised lower bound (a pair it constructs) on deep and wide chains
        low = search_lower(network(weights, act), (weights[0].shape[1],), restarts=1, seed=seed, batch=8, steps=30)
        assert low.value <= res.bound.value * (1 + 1e-9)
    if seed % 4 == 0:
        fast = eclipse_fast(weights, alpha, beta)
        assert fast.bound.label is Label.CERTIFIED
        assert sampled_lower(weights, act, seed, points=32) <= fast.bound.value * (1 + 1e-9)
        assert res.bound.value <= fast.bound.value * (1 + 1e-9)


def test_per_neuron_slopes_mixed():
    """Some neurons affine (slope 1), some ReLU, some GELU-like: per-neuron [α, β] arrays."""
    rng = np.random.default_rng(5)
    weights = [rng.standard_normal((6, 3)), rng.standard_normal((6, 6)), rng.standard_normal((2, 6))]
    kinds = np.array([0, 1, 2, 0, 1, 2])
    alpha = np.array([1.0, 0.0, -0.129])[kinds]
    beta = np.array([1.0, 1.0, 1.129])[kinds]
    acts = [lambda x: x, torch.relu, torch.nn.functional.gelu]

    def act(x):
        return torch.stack([acts[k](x[..., j]) for j, k in enumerate(kinds)], dim=-1)
    res = lipsdp(weights, [alpha, alpha], [beta, beta])
    assert res.bound.label is Label.CERTIFIED
    assert sampled_lower(weights, act, 0, points=256) <= res.bound.value


def test_negative_alpha_needs_the_p_term():
    """GELU has slope 1.12899 somewhere: a pair realises ratio > 1.1289. LipSDP with the αβ
    term bounds it; dropping the term (same m, p = 0: slopes [0, α+β] = [0, 1]) gives 1."""
    weights = [np.array([[1.0]]), np.array([[1.0]])]
    x = torch.tensor([math.sqrt(2.0)], dtype=torch.float64)  # GELU′ peaks at √2
    y = x + 1e-6
    gelu = torch.nn.functional.gelu
    pair = float((gelu(y) - gelu(x)) / (y - x))
    assert pair > 1.1289
    res = lipsdp(weights, -0.1290, 1.1290)
    assert res.bound.label is Label.CERTIFIED
    assert pair <= res.bound.value <= 1.1290 * (1 + 1e-6)
    dropped = lipsdp(weights, 0.0, -0.1290 + 1.1290)  # what code without the p term computes
    assert dropped.bound.value < pair
    # the same failure in a wider net: a neuron pair realising GELU's top slope
    rng = np.random.default_rng(11)
    w1 = rng.standard_normal((8, 8))
    w2 = rng.standard_normal((3, 8))
    weights = [w1, w2]
    keep = lipsdp(weights, -0.1290, 1.1290)
    lower = sampled_lower(weights, gelu, 1, points=512)
    assert lower <= keep.bound.value
    assert lipsdp(weights, 0.0, 1.0).bound.value * 1.1290 >= lower  # sanity of the scale


def test_negative_alpha_wide_constructed_pair():
    """Slopes exactly [−0.1, 1.1] (``kinked``), W₁ = I: two inputs with every coordinate positive
    and x − y along W₂ᵀ realise 1.1‖W₂‖ (W₂ a row); the p = αβ term is what keeps LipSDP above it
    (without it the slopes read [0, 1] and the bound is ‖W₂‖)."""
    rng = np.random.default_rng(12)
    n = 16
    w2 = rng.standard_normal((1, n))
    weights = [np.eye(n), w2]
    x = torch.as_tensor(1.0 + np.abs(w2[0]), dtype=torch.float64)
    y = x - 0.5 * torch.as_tensor(w2[0], dtype=torch.float64)
    assert bool((y > 0).all())
    f = network(weights, kinked)
    pair = float(torch.linalg.vector_norm(f(y) - f(x)) / torch.linalg.vector_norm(y - x))
    assert pair == pytest.approx(1.1 * np.linalg.norm(w2), rel=1e-12)
    for variant in ("neuron", "layer"):
        res = lipsdp(weights, -0.1, 1.1, variant=variant)
        assert res.bound.label is Label.CERTIFIED
        assert pair <= res.bound.value <= pair * (1 + 1e-4)
        dropped = lipsdp(weights, 0.0, 1.0, variant=variant)  # m kept, p = 0
        assert dropped.bound.value < pair / 1.09


# ------------------------------------------------------------------------- proof's teeth


@pytest.mark.parametrize("source", ["anchor", "random deep", "random gelu"])
def test_proof_rejects_perturbed_certificates(source):
    """The proof after solving rejects multipliers 1 % too small (and ρ 1 % too small, negative
    or missing multipliers) at a ρ it accepts for the solved ones."""
    if source == "anchor" and not ANCHOR.is_file():
        pytest.skip(f"anchor weights not found at {ANCHOR}")
    weights = anchor_weights() if source == "anchor" else random_chain(12)
    alpha, beta = (-0.1290, 1.1290) if source == "random gelu" else (0.0, 1.0)
    ch = chain(weights, alpha, beta)
    res = lipsdp(weights, alpha, beta)
    assert res.bound.label is Label.CERTIFIED
    lams = res.multipliers
    closed = ClosedForm(ch)

    def rho_min(multipliers):  # ∞ where some Schur complement S_h is not positive definite
        value = closed([torch.as_tensor(x) for x in multipliers])
        return math.inf if value is None else float(value)
    rho = rho_min(lams) * (1 + 1e-7)
    assert prove(ch, rho, lams)
    assert not prove(ch, 0.99 * rho, lams)
    smaller = [0.99 * x for x in lams]
    assert rho_min(smaller) > rho
    assert not prove(ch, rho, smaller)
    assert not prove(ch, rho, [-x for x in lams])
    assert not prove(ch, rho, lams[:-1])


def test_proof_rejects_rounding_level_cheats():
    """Relative 1e-12 below the least ρ for given multipliers is never proven."""
    rng = np.random.default_rng(4)
    weights = [rng.standard_normal((5, 3)), rng.standard_normal((4, 5)), rng.standard_normal((2, 4))]
    ch = chain(weights)
    res = lipsdp(weights)
    rho_min = float(ClosedForm(ch)([torch.as_tensor(x) for x in res.multipliers]))
    assert not prove(ch, rho_min * (1 - 1e-12), res.multipliers)


def test_bad_input():
    with pytest.raises(ValueError):
        lipsdp([np.eye(3)])
    with pytest.raises(ValueError):
        lipsdp([np.eye(3), np.eye(2)])
    with pytest.raises(ValueError):
        lipsdp([np.eye(3), np.eye(3)], 1.0, 0.0)
    with pytest.raises(ValueError):
        lipsdp([np.eye(3), np.eye(3)], variant="network")


# ---------------------------------------------------------------------------------- routes


@pytest.mark.parametrize("name,variant", [("relu", "neuron"), ("gelu", "neuron"), ("leaky", "layer")])
def test_routes_agree(name, variant):
    pytest.importorskip("cvxpy")
    _, alpha, beta = ACTIVATIONS[name]
    rng = np.random.default_rng(7)
    weights = [rng.standard_normal((6, 4)), rng.standard_normal((5, 6)), rng.standard_normal((2, 5))]
    fo = lipsdp(weights, alpha, beta, variant=variant)
    sdp = lipsdp(weights, alpha, beta, variant=variant, route="sdp")
    assert fo.bound.label is Label.CERTIFIED and sdp.bound.label is Label.CERTIFIED, sdp.notes
    assert fo.bound.value == pytest.approx(sdp.bound.value, rel=1e-5)
    assert sdp.bound.method == f"lipsdp-{variant}/sdp"


def test_sdp_route_without_cvxpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    res = lipsdp([np.eye(2), np.eye(2)], route="sdp")
    assert res.bound is None
    assert len(res.notes) == 1 and "cvxpy" in res.notes[0]


def test_device_argument_and_float32():
    weights = [np.eye(3, dtype=np.float32) * 2, np.ones((1, 3), dtype=np.float32)]
    res = lipsdp(weights, device="cpu")
    assert res.bound.label is Label.CERTIFIED
    assert res.bound.value == pytest.approx(2 * math.sqrt(3), rel=1e-4)
