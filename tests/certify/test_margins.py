"""Attacks on the proof kernel: a proof must never succeed on a matrix that is not positive
definite, and should succeed when the margin is comfortably above float64 rounding."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.linalg
import torch

from lipgraph.certify.margins import (
    frobenius_upper,
    prove_block_tridiagonal,
    prove_pd,
    round_down,
    round_up,
)
from lipgraph.certify.dense import proves_gram_below


def with_spectrum(eigs, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigs), len(eigs))))
    a = (q * np.asarray(eigs)) @ q.T
    return np.tril(a) + np.tril(a, -1).T


def exactly_pd(a: np.ndarray) -> bool:
    """Ground truth for the float matrix itself: Cholesky in 60-digit arithmetic."""
    mpmath.mp.dps = 60
    try:
        mpmath.cholesky(mpmath.matrix(a.tolist()))
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("n", [2, 10, 50])
@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
@pytest.mark.parametrize("sign", [1, -1])
def test_threshold_decided_correctly(n, scale, sign):
    eigs = scale * np.concatenate([[sign * 1e-10], np.linspace(0.5, 2.0, n - 1)])
    a = with_spectrum(eigs, seed=n)
    truth = np.linalg.eigvalsh(a)[0]
    assert np.sign(truth) == sign  # construction error ~n·u·scale ≪ 1e-10·scale
    assert bool(prove_pd(a)) == (sign > 0)


@pytest.mark.parametrize("n", [3, 30])
def test_threshold_with_unbalanced_diagonal(n):
    """A diagonal congruence by 10^±6 keeps the sign of λ_min; equilibration keeps the margin."""
    rng = np.random.default_rng(1)
    d = 10.0 ** rng.uniform(-6, 6, n)
    for sign in (1, -1):
        base = with_spectrum(np.concatenate([[sign * 1e-7], np.linspace(0.5, 2.0, n - 1)]), seed=3)
        a = d[:, None] * base * d[None, :]
        assert bool(prove_pd(a)) == (sign > 0)
        assert exactly_pd(a) == (sign > 0)


@pytest.mark.parametrize("n", range(2, 15))
def test_hilbert_never_wrong(n):
    h = scipy.linalg.hilbert(n)
    proof = prove_pd(h)
    if proof:
        assert exactly_pd(h)
    if n <= 7:  # λ_min(H_7) ≈ 3.5e-9: far above the margin
        assert proof
    assert not prove_pd(h - 2 * abs(np.linalg.eigvalsh(h)[0]) * np.eye(n) - 1e-12 * np.eye(n))


def test_float32_inputs_are_promoted():
    a64 = with_spectrum(np.linspace(0.1, 3.0, 8), seed=5)
    a32 = a64.astype(np.float32)
    assert prove_pd(a32)
    assert bool(prove_pd(a32)) == bool(prove_pd(a32.astype(np.float64)))
    bad = with_spectrum(np.concatenate([[-1e-6], np.ones(7)]), seed=6).astype(np.float32)
    if np.linalg.eigvalsh(bad.astype(np.float64))[0] < 0:
        assert not prove_pd(bad)


def test_small_and_degenerate():
    assert prove_pd(np.zeros((0, 0)))
    assert not prove_pd(np.zeros((3, 3)))
    assert not prove_pd(np.zeros((1, 1)))
    assert not prove_pd(-np.eye(1))
    assert prove_pd(np.eye(1))
    assert prove_pd(np.array([[1e-300]]))
    assert prove_pd(np.array([[5e-324]]))  # the smallest subnormal is positive
    assert not prove_pd(np.array([[1.0, 1.0], [1.0, 1.0]]))  # singular
    assert not prove_pd(np.array([[np.nan]]))
    assert not prove_pd(np.array([[np.inf]]))
    with pytest.raises(ValueError):
        prove_pd(np.ones((2, 3)))


def test_error_bound_and_asymmetry():
    assert prove_pd(np.eye(4), err=0.99)
    assert not prove_pd(np.eye(4), err=1.0)
    # the lower triangle is I, but (a + aᵀ)/2 = [[1, 5], [5, 1]] is indefinite
    assert not prove_pd(np.array([[1.0, 10.0], [0.0, 1.0]]))
    assert prove_pd(np.array([[2.0, 0.1], [0.0, 2.0]]))


def test_rounding_helpers():
    for x in (1.0, 1e-300, 3.7e200, -2.5, 0.0):
        assert round_up(x) > x and round_down(x) < x
        assert round_up(x, 1e-3) >= x + 1e-3 * abs(x)
        assert round_down(x, 1e-3) <= x - 1e-3 * abs(x)
    a = np.random.default_rng(0).standard_normal((30, 20))
    exact = mpmath.sqrt(mpmath.fsum(mpmath.mpf(float(v)) ** 2 for v in a.ravel()))
    assert frobenius_upper(a) >= exact >= np.linalg.svd(a, compute_uv=False)[0]
    assert frobenius_upper(np.zeros((0, 3))) == 0.0


def test_gram_bound_uses_the_kernel():
    a = np.random.default_rng(2).standard_normal((40, 25))
    top = np.linalg.svd(a, compute_uv=False)[0] ** 2
    gram = a.T @ a
    assert proves_gram_below(gram, top * (1 + 1e-10))
    assert not proves_gram_below(gram, top * (1 - 1e-10))


# --------------------------------------------------------------------- block tridiagonal


def random_block_tridiagonal(sizes, rng, coupling=1.0):
    diag = [with_spectrum(rng.uniform(1.0, 3.0, n), seed=int(rng.integers(1 << 30))) for n in sizes]
    sub = [coupling * rng.standard_normal((b, a)) / math.sqrt(a + b) for a, b in zip(sizes, sizes[1:])]
    return diag, sub


def assemble(diag, sub) -> np.ndarray:
    offsets = np.cumsum([0] + [d.shape[0] for d in diag])
    m = np.zeros((offsets[-1], offsets[-1]))
    for i, d in enumerate(diag):
        m[offsets[i]:offsets[i + 1], offsets[i]:offsets[i + 1]] = d
    for i, c in enumerate(sub):
        m[offsets[i + 1]:offsets[i + 2], offsets[i]:offsets[i + 1]] = c
        m[offsets[i]:offsets[i + 1], offsets[i + 1]:offsets[i + 2]] = c.T
    return m


def shifted(diag, sub, by):
    return [d + by * np.eye(d.shape[0]) for d in diag], sub


@pytest.mark.parametrize("sizes", [[1], [3, 1], [1, 4, 2, 7], [5] * 12, [10, 30, 20, 2]])
@pytest.mark.parametrize("rel", [1e-2, 1e-8, -1e-8, -1e-2])
def test_block_tridiagonal_against_dense_and_eigvalsh(sizes, rel):
    rng = np.random.default_rng(len(sizes) * 100 + sum(sizes))
    diag, sub = random_block_tridiagonal(sizes, rng, coupling=2.0)
    dense = assemble(diag, sub)
    eigs = np.linalg.eigvalsh(dense)
    scale = float(np.abs(eigs).max())
    diag, sub = shifted(diag, sub, rel * scale - eigs[0])  # λ_min = rel·scale
    dense = assemble(diag, sub)
    lam_min = np.linalg.eigvalsh(dense)[0]
    assert np.sign(lam_min) == np.sign(rel)
    block = prove_block_tridiagonal(diag, sub)
    assert bool(block) == (rel > 0) == bool(prove_pd(dense)), block.reason


def test_block_tridiagonal_unbalanced_blocks():
    """Blocks of very different magnitudes (a congruence by 10^±5 per block)."""
    rng = np.random.default_rng(7)
    sizes = [4, 6, 3, 5]
    diag, sub = random_block_tridiagonal(sizes, rng, coupling=2.0)
    dense = assemble(diag, sub)
    diag, sub = shifted(diag, sub, 1e-6 - np.linalg.eigvalsh(dense)[0])
    s = [10.0 ** rng.uniform(-5, 5) for _ in sizes]
    diag = [d * si * si for d, si in zip(diag, s)]
    sub = [c * s[i] * s[i + 1] for i, c in enumerate(sub)]
    assert prove_block_tridiagonal(diag, sub)
    assert exactly_pd(assemble(diag, sub))
    worse = [d - 2e-6 * si * si * np.eye(d.shape[0]) for d, si in zip(diag, s)]  # λ_min −1e-6 before scaling
    assert not exactly_pd(assemble(worse, sub))
    assert not prove_block_tridiagonal(worse, sub)


def test_block_tridiagonal_errors_and_shapes():
    rng = np.random.default_rng(8)
    diag, sub = random_block_tridiagonal([3, 4, 2], rng)
    dense = assemble(diag, sub)
    lam = np.linalg.eigvalsh(dense)[0]
    assert lam > 0.1
    assert prove_block_tridiagonal(diag, sub, diag_err=[0.5 * lam] * 3, sub_err=[0.0] * 2)
    assert not prove_block_tridiagonal(diag, sub, diag_err=[1.01 * lam] * 3)
    assert prove_block_tridiagonal([], [])
    with pytest.raises(ValueError):
        prove_block_tridiagonal(diag, sub[:1])
    with pytest.raises(ValueError):
        prove_block_tridiagonal(diag, [sub[0].T, sub[1]])
    bad = [d.astype(np.float32) for d in diag]  # float32 blocks are promoted
    assert prove_block_tridiagonal(bad, [c.astype(np.float32) for c in sub])


# ---------------------------------------------------------------- banded, batched (conv, SeqLip)
def _band_storage(m: np.ndarray, band: int) -> np.ndarray:
    n = m.shape[0]
    ab = np.zeros((band + 1, n))
    for d in range(band + 1):
        ab[d, : n - d] = np.diagonal(m, -d)
    return ab


@pytest.mark.parametrize("seed", range(4))
def test_banded_proof_decides_both_sides_of_the_threshold(seed):
    from lipgraph.certify.margins import banded_cholesky_succeeds
    rng = np.random.default_rng(seed)
    n, band = 40, 3
    a = np.triu(np.tril(rng.standard_normal((n, n)), band), -band)
    gram = a.T @ a
    top = np.linalg.eigvalsh(gram)[-1]
    ab = _band_storage(gram, 2 * band)
    assert banded_cholesky_succeeds(ab, top * (1 + 1e-6))
    assert not banded_cholesky_succeeds(ab, top * (1 - 1e-6))


def test_batched_proof_is_per_matrix():
    from lipgraph.certify.margins import batched_gram_below
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.standard_normal((3, 4, 6)))
    g = x @ x.transpose(1, 2)
    tops = torch.linalg.eigvalsh(g)[:, -1]
    c = float(tops[1]) * (1 + 1e-6)
    proven = batched_gram_below(g, c, float((x * x).sum(dim=(1, 2)).max()))
    assert bool(proven[1])     # just below c: proven
    for t, ok in zip(tops.tolist(), proven.tolist()):
        if abs(t - c) > 1e-3 * c:
            assert ok == (t < c)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_proven_max_eigenvalue_against_eigvalsh(dtype):
    """Above the true maximum and within 1e-6 of it, on batches whose top is shared, hidden among
    near-equal ones (the power ranking cannot single it out), or zero."""
    from lipgraph.certify.margins import proven_max_eigenvalue
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, 12, 9, dtype=dtype, generator=gen)
    x[5] = x[17]                                  # shared top candidates
    x[30:] *= 0                                   # zero matrices
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=dtype, generator=gen))
    for i in range(8, 16):                        # near-equal tops, the largest at i = 13
        x[i] = q[:, :9] * (3.0 + (1e-9 if i == 13 else 0.0))
    g = x @ x.mH
    true = float(torch.linalg.eigvalsh(g)[:, -1].max())
    xmax2 = float((x.abs() ** 2).sum(dim=(1, 2)).max())
    got = proven_max_eigenvalue(g, xmax2, 9)
    assert true <= got <= true * (1 + 1e-9)
    assert proven_max_eigenvalue(g, xmax2, 9, floor=2 * true) >= 2 * true
    assert proven_max_eigenvalue(g[30:], 0.0, 9) == 0.0
    assert 0 < proven_max_eigenvalue(g[30:], xmax2, 9) <= 1e-12 * xmax2
