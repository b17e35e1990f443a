"""Realised lower bounds (lipgraph/passes/lower.py) against constants known independently."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lipgraph.passes.lower import LowerResult, search_lower

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors"
ANCHOR_NPZ = ANCHORS / "lipsdp_random_2-10-30-20-2.npz"
LEAK = 0.1


@pytest.fixture(autouse=True)
def one_thread():
    """Budgets are wall-clock; on a shared machine one thread makes them steadier."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- nets under test


def _act(name: str, z: torch.Tensor, t: float | None = None) -> torch.Tensor:
    """The activation, or its smoothed surrogate at temperature t (softplus for ReLU parts)."""
    if name == "tanh":
        return torch.tanh(z)
    relu = torch.relu(z) if t is None else torch.nn.functional.softplus(z, beta=1.0 / t)
    return relu if name == "relu" else LEAK * z + (1 - LEAK) * relu


def mlp(weights, act="relu"):
    """(f, f_smooth) for x ↦ W_L act(… act(W_1 x)), weights float64 numpy."""
    Ws = [torch.as_tensor(W) for W in weights]

    def run(x, t=None):
        h = x
        for W in Ws[:-1]:
            h = _act(act, W.to(x.dtype) @ h, t)
        return Ws[-1].to(x.dtype) @ h

    return run, (lambda x, t: run(x, t))


def jacobian_norms(weights, act, X):
    """‖J(x)‖₂ for each row of X, from the activation pattern, in numpy."""
    J = np.broadcast_to(np.eye(X.shape[1]), (len(X), X.shape[1], X.shape[1]))
    H = X
    for W in weights[:-1]:
        Z = H @ W.T
        if act == "tanh":
            H, d = np.tanh(Z), 1 - np.tanh(Z) ** 2
        else:
            slope = 0.0 if act == "relu" else LEAK
            H, d = np.where(Z > 0, Z, slope * Z), np.where(Z > 0, 1.0, slope)
        J = d[:, :, None] * (W @ J)
    J = weights[-1] @ J
    return np.linalg.norm(J, 2, axis=(1, 2))


def spectral_product(weights):
    return math.prod(np.linalg.norm(W, 2) for W in weights)


def random_mlp(rng, widths):
    return [rng.standard_normal((b, a)) / math.sqrt(a) for a, b in zip(widths[:-1], widths[1:])]


def ratio_of(res: LowerResult, f) -> float:
    """Re-evaluate the reported pair independently, in float64."""
    x, y = res.x.astype(np.float64), res.y.astype(np.float64)
    fx, fy = (f(torch.as_tensor(p)).numpy() for p in (x, y))
    return float(np.linalg.norm(fy - fx) / np.linalg.norm(y - x))


# ----------------------------------------------------------------------------- anchors


def test_anchor_lipsdp_network_reaches_exact_constant():
    d = np.load(ANCHOR_NPZ)
    weights = [d[k] for k in ("W1", "W2", "W3", "W4")]
    f, fs = mlp(weights)
    exact = 36.48223
    assert np.linalg.norm(weights[3] @ weights[2] @ weights[1] @ weights[0], 2) == pytest.approx(exact, rel=1e-6)
    res = search_lower(f, (2,), f_smooth=fs, budget_s=2.0)
    assert res.value >= 0.9999 * exact
    assert res.value <= exact * (1 + 1e-9)
    assert ratio_of(res, f) == pytest.approx(res.value, rel=1e-9)
    assert res.domain == "R^n" and res.method == "lower-smooth" and res.seconds < 4


# ----------------------------------------------------------------------------- random nets

RANDOM_NETS = [(seed, act) for seed in range(20) for act in ("relu", "leaky", "tanh")]


@pytest.mark.parametrize("seed,act", RANDOM_NETS)
def test_random_mlp_between_sampling_and_spectral_product(seed, act):
    rng = np.random.default_rng(100 + seed)
    widths = [int(rng.integers(2, 9))] + [int(w) for w in rng.integers(4, 33, int(rng.integers(1, 4)))]
    widths.append(int(rng.integers(1, 6)))
    weights = random_mlp(rng, widths)
    f, fs = mlp(weights, act)
    sampled = jacobian_norms(weights, act, rng.standard_normal((1000, widths[0]))).max()
    res = search_lower(f, (widths[0],), f_smooth=fs, restarts=2, seed=seed)
    assert res.value <= spectral_product(weights) * (1 + 1e-9)
    assert res.value >= sampled * (1 - 1e-6), (widths, res.value, sampled)
