"""certify/dense: materialising affine maps, norm estimates through autograd, certified norms of
explicit matrices — each against numpy's SVD of the same explicit matrix."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lipgraph.certify import dense
from lipgraph.certify.dense import (certified_materialised_norm, materialise, matrix_norm, power_iteration,
                                    proves_gram_below)
from lipgraph.labels import Label, certify


def _affine(W: np.ndarray, b: np.ndarray):
    Wt, bt = torch.as_tensor(W), torch.as_tensor(b)
    return lambda x: (Wt.to(x.dtype) @ x.reshape(-1) + bt.to(x.dtype)).reshape(1, -1)


@pytest.mark.parametrize("seed", range(6))
def test_materialise_recovers_the_linear_part(seed):
    rng = np.random.default_rng(seed)
    W, b = rng.standard_normal((5, 7)), rng.standard_normal(5)
    np.testing.assert_allclose(materialise(_affine(W, b), (1, 7)), W, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_estimates_approach_the_norm_from_below(seed, method):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((30, 20))
    sigma = np.linalg.norm(W, 2)
    res = power_iteration(_affine(W, rng.standard_normal(30)), (1, 20), dtype=torch.float64, tol=1e-10,
                          max_iter=2000, method=method, seed=seed)
    assert res.sigma <= sigma * (1 + 1e-9)
    assert res.sigma == pytest.approx(sigma, rel=1e-4)


@pytest.mark.parametrize("shape", [(3, 3), (40, 8), (8, 700), (600, 600)])
def test_matrix_norm_is_an_upper_bound_within_the_ladder(shape):
    rng = np.random.default_rng(sum(shape))
    A = rng.standard_normal(shape)
    sigma = np.linalg.norm(A, 2)
    value = certify(matrix_norm(A))   # matrix_norm is exact up to float64 rounding; certify covers it
    assert sigma <= value <= sigma * (1 + 1e-2)


@pytest.mark.parametrize("shape", [(700, 530), (530, 700), (2000, 3)])
def test_gram_in_blocks_is_the_whole_products_gram_and_float32_needs_no_float64_copy(shape, monkeypatch):
    """Forming G over many row blocks (the block size forced small) gives an exactly symmetric
    matrix within γ_m·|A|ᵀ|A| of the exact Gram matrix (the bound of one product), and the norm
    of a float32 matrix equals that of its float64 copy up to the ladder."""
    rng = np.random.default_rng(sum(shape))
    A32 = rng.uniform(-3.9, 3.9, shape).astype(np.float32)
    A32[0, 0] = 3.5
    A = A32.astype(np.float64)
    monkeypatch.setattr(dense, "GRAM_BLOCK", 7 * min(shape))       # ⌈m/7⌉ blocks
    scale = 4.0                                                    # max |A| ∈ [2, 4) → s = 4 (checked)
    assert 2.0 <= np.abs(A).max() < 4.0
    G = dense._gram(A32, scale)
    t = A / scale if shape[1] <= shape[0] else (A / scale).T
    m = t.shape[0]
    exact = t.T @ t                                                # reference; its own error is as small
    gamma = 2 * m * 2.0 ** -53 / (1 - m * 2.0 ** -53)
    assert np.array_equal(G, G.T)
    assert np.all(np.abs(G - exact) <= gamma * (np.abs(t).T @ np.abs(t)))
    sigma = np.linalg.norm(A, 2)
    value = certify(matrix_norm(A32))
    assert sigma <= value <= sigma * (1 + 1e-2)
    assert value == pytest.approx(certify(matrix_norm(A)), rel=1e-2)


def test_gram_proof_decides_both_sides_of_the_threshold():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, 20))
    top = np.linalg.eigvalsh(A.T @ A)[-1]
    assert proves_gram_below(A.T @ A, top * (1 + 1e-6))
    assert not proves_gram_below(A.T @ A, top * (1 - 1e-9))


def test_certified_materialised_norm_and_its_limits():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((6, 9))
    b = certified_materialised_norm(_affine(W, np.zeros(6)), (1, 9), 6, limit=1000)
    assert b.label is Label.CERTIFIED and np.linalg.norm(W, 2) <= b.value <= np.linalg.norm(W, 2) * (1 + 1e-2)
    assert certified_materialised_norm(_affine(W, np.zeros(6)), (1, 9), 6, limit=10) is None
    zero = certified_materialised_norm(_affine(np.zeros((6, 9)), np.ones(6)), (1, 9), 6, limit=1000)
    assert zero.value == 0.0 and zero.label is Label.EXACT


def test_gram_norm_covers_every_matrix_within_err():
    """With an uncertainty err on the Gram matrix (its rounding), both routes bound λ_max + err:
    the eigenvalue route exactly, the proof route at a θ with θ² ≥ λ_max + err."""
    from lipgraph.certify.dense import _gram_norm
    a = np.random.default_rng(7).standard_normal((700, 600))
    gram = a.T @ a
    top = float(np.linalg.eigvalsh(gram)[-1])
    err = 1e-3 * top
    assert _gram_norm(gram.copy(), None, err) == pytest.approx(math.sqrt(top + err), rel=1e-12)
    proven = _gram_norm(gram.copy(), math.sqrt(top), err)
    assert proven ** 2 >= top + err
    assert proven ** 2 <= (top + err) * (1 + 1e-2)
    assert _gram_norm(gram.copy(), math.sqrt(top), 0.0) ** 2 < top + err
