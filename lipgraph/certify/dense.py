"""Norms of affine maps given as torch functions: the paper's power iteration through
autograd (an estimate), and certified norms by materialising small operators (float64
eigenvalues plus a margin).

For an affine f the linear part is A v = f(v) − f(0). One power step v ← AᵀA v costs one
forward and one backward pass; no matrix is formed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.sparse.linalg
import torch

from lipgraph.certify.margins import UNIT, pow2_scale, prove_pd
import lipgraph.budget as budget
from lipgraph.labels import LADDER_SLACK, Bound, Label, certify

TorchFn = Callable[[torch.Tensor], torch.Tensor]
#: The method of a bound that is ∞ because float64 arithmetic overflowed (huge weights).
OVERFLOW = "overflow"


@dataclass
class PowerResult:
    sigma: float
    iterations: int
    converged: bool
    vector: torch.Tensor
    met_target: bool = False   # stopped because σ came within ``agree`` of the caller's ``target``


def linear_part(fn: TorchFn, shape, dtype, device) -> TorchFn:
    """v ↦ fn(v) − fn(0)."""
    with torch.no_grad():
        offset = fn(torch.zeros(shape, dtype=dtype, device=device)).detach()
    return lambda v: fn(v) - offset


def gram_apply(lin: TorchFn, v: torch.Tensor) -> torch.Tensor:
    """AᵀA v through autograd: ∇_v ½‖A v‖², one forward and one backward pass."""
    v = v.detach().requires_grad_(True)
    y = lin(v)
    (grad,) = torch.autograd.grad(0.5 * (y * y).sum(), v)
    return grad.detach()


def power_iteration(fn: TorchFn, shape, *, dtype=torch.float32, device="cpu", tol: float = 1e-6,
                    max_iter: int = 500, seed: int = 0, init: torch.Tensor | None = None,
                    method: str = "lanczos", target: float | None = None, agree: float = 0.0) -> PowerResult:
    """σ_max of the linear part of the affine ``fn`` through autograd, without forming A.

    ``method="power"`` is the paper's power iteration v ← AᵀA v / ‖AᵀA v‖, stopping when σ
    changes by less than ``tol`` (relative). ``method="lanczos"`` (default) runs the Lanczos
    recurrence on the same AᵀA products, with full reorthogonalisation and restarts from
    the best Ritz vector every 64 steps; it stops when the Ritz residual bound says σ is
    within ``tol``, or when a whole restart cycle raised σ by less than ``tol`` (clustered top
    singular values, e.g. of convolutions, keep the residual large long after σ has settled). Same cost per step, far fewer steps on slowly decaying spectra (a
    ResNet stem convolution: ~40 products instead of ~400).

    Both approach σ_max from below: the result is an *estimate*. ``iterations`` counts
    AᵀA products; at most ``max_iter``. With ``target`` (a certified upper bound on σ_max, e.g.
    a convolution's DFT bound) the iteration also stops as soon as σ·(1 + ``agree``) ≥ target:
    the estimate then proves the certificate tight to ``agree`` and more steps buy nothing.
    Arithmetic that overflows (huge weights) gives σ = ∞, not converged. The analysis's time
    limit (``lipgraph.budget``) is checked every step.
    """
    lin = linear_part(fn, shape, dtype, device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = init.to(dtype=dtype, device=device) if init is not None else \
        torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    v = v / torch.linalg.vector_norm(v)
    run = _lanczos if method == "lanczos" else _power
    floor = target / (1 + agree) if target is not None and math.isfinite(target) else math.inf
    try:
        sigma, v, it, converged = run(lin, v, tol, max_iter, floor)
    except Overflow:
        return PowerResult(math.inf, 0, False, v.detach())
    with torch.no_grad():  # ‖A v‖ with ‖v‖ = 1 is a realised value, ≤ σ_max
        realised = float(torch.linalg.vector_norm(lin(v)))
    if not math.isfinite(realised):
        return PowerResult(math.inf, it, False, v.detach())
    sigma = max(sigma, realised)
    return PowerResult(sigma, it, converged, v.detach(), met_target=sigma >= floor)


class Overflow(ArithmeticError):
    """A norm computation met a non-finite value: the weights are too large for the float type."""


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise Overflow
    return x


def _power(lin, v, tol, max_iter, floor=math.inf):
    sigma = 0.0
    for it in range(1, max_iter + 1):
        budget.check()
        grad = gram_apply(lin, v)
        new_sigma = math.sqrt(max(_finite(float(torch.vdot(v.reshape(-1), grad.reshape(-1)))), 0.0))
        norm = _finite(float(torch.linalg.vector_norm(grad)))
        if norm == 0:
            return 0.0, v, it, True
        v = grad / norm
        if (it > 1 and abs(new_sigma - sigma) <= tol * max(new_sigma, 1e-300)) or new_sigma >= floor:
            return new_sigma, v, it, True
        sigma = new_sigma
    return sigma, v, max_iter, False


def _lanczos(lin, v, tol, max_iter, floor=math.inf, basis: int = 64):
    shape, used, theta = v.shape, 0, 0.0
    while used < max_iter:
        cycle_start = theta
        steps = min(basis, max_iter - used)
        vecs = torch.empty((steps + 1, v.numel()), dtype=v.dtype, device=v.device)
        vecs[0] = v.reshape(-1)
        alphas, betas = [], []
        for j in range(steps):
            w = gram_apply(lin, vecs[j].reshape(shape)).reshape(-1)
            used += 1
            alphas.append(_finite(float(torch.vdot(vecs[j], w))))
            done = vecs[: j + 1]
            for _ in range(2):  # full reorthogonalisation, twice is enough
                w = w - done.T @ (done @ w)
            beta = _finite(float(torch.linalg.vector_norm(w)))
            evals, evecs = scipy.linalg.eigh_tridiagonal(np.array(alphas), np.array(betas))
            theta, y = float(evals[-1]), evecs[:, -1]
            if beta <= 1e-12 * max(theta, 1e-300) or beta * abs(y[-1]) <= 2 * tol * max(theta, 1e-300) \
                    or math.sqrt(max(theta, 0.0)) >= floor:
                return math.sqrt(max(theta, 0.0)), _ritz(done, y, shape), used, True
            betas.append(beta)
            vecs[j + 1] = w / beta
            budget.check()
        v = _ritz(vecs[:steps], y, shape)
        if steps == basis and theta - cycle_start <= 2 * tol * max(theta, 1e-300):  # a whole cycle gained < tol
            return math.sqrt(max(theta, 0.0)), v, used, True
    return math.sqrt(max(theta, 0.0)), v, used, False


def _ritz(stacked: torch.Tensor, y: np.ndarray, shape) -> torch.Tensor:
    v = stacked.T @ torch.as_tensor(y, dtype=stacked.dtype, device=stacked.device)
    return (v / torch.linalg.vector_norm(v)).reshape(shape)


def materialise(fn: TorchFn, shape, *, device="cpu", chunk: int = 256) -> np.ndarray:
    """The matrix of the linear part of the affine ``fn`` (float64), one column per input entry.

    Columns are computed in batches with torch.func.vmap, falling back to a loop for
    rules whose semantics do not vectorise.
    """
    n = int(np.prod(shape))
    lin = linear_part(fn, shape, torch.float64, device)
    cols = []
    try:
        batched = torch.func.vmap(lambda e: lin(e.reshape(shape)).reshape(-1))
        for start in range(0, n, chunk):
            budget.check()
            eye = torch.zeros((min(chunk, n - start), n), dtype=torch.float64, device=device)
            eye[torch.arange(eye.shape[0]), torch.arange(start, start + eye.shape[0])] = 1.0
            with torch.no_grad():
                cols.append(batched(eye).cpu())
    except Exception:  # noqa: BLE001 - vmap unsupported by some rule: fall back to a loop
        cols = []
        for j in range(n):
            e = torch.zeros(n, dtype=torch.float64, device=device)
            e[j] = 1.0
            with torch.no_grad():
                cols.append(lin(e.reshape(shape)).reshape(1, -1).cpu())
    return torch.cat(cols).T.numpy()


#: Entries of the float64 row block in which ``matrix_norm`` forms a Gram matrix (32 MiB).
GRAM_BLOCK = 1 << 22


def matrix_norm(matrix: np.ndarray, estimate: float | None = None) -> float:
    """σ_max of a real matrix (float32, float64, …) up to float64 rounding — an upper bound once
    the caller adds the ``certify`` margin (every caller does); at most 1 % above σ_max.

    Small Gram matrices (≤ 512): the largest eigenvalue. Larger: an estimate θ (the caller's,
    refined by Lanczos on G), then a proof that θ′² I − G ≻ 0 for the smaller Gram matrix G
    by a Cholesky factorisation at θ′ = θ(1 + δ), δ = 1e-7, 1e-6, … (a fraction of the work of
    one eigendecomposition); if no δ ≤ 1e-2 works, the largest eigenvalue of G.

    The matrix is scaled by a power of two s near its largest entry first (σ is homogeneous, the
    scaling exact), so a finite matrix never overflows its Gram matrix; the result is ∞ only
    when σ itself is past float64's range. G is formed in float64 block by block (``_gram``):
    each entry is a sum of m products (m the longer side), computed in some order — BLAS's within
    a block, then block after block — and for every order its error is at most γ_m·Σ_k |a_ki a_kj|
    (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, §3.1), the bound of a single
    float64 product of the whole matrix: blockwise forming changes no argument, and no float64
    copy of the whole matrix is made.
    """
    matrix = np.asarray(matrix)
    scale = pow2_scale(matrix)
    if scale in (0.0, math.inf):
        return scale
    budget.check()
    gram = _gram(matrix, scale)
    budget.check()
    estimate = None if estimate is None else estimate / scale
    if gram.shape[0] <= 512:  # small: the eigendecomposition is cheap and exact
        estimate = None
    else:  # Lanczos refines the estimate so one factorisation usually suffices
        top = scipy.sparse.linalg.eigsh(gram, k=1, which="LA", tol=1e-12, return_eigenvectors=False)[0]
        estimate = max(estimate or 0.0, math.sqrt(max(float(top), 0.0)))
    m = max(matrix.shape)   # the length of every Gram entry's sum
    err = 2 * m * UNIT / (1 - m * UNIT) * float(np.trace(gram))   # ≥ ‖Ĝ − G‖₂ (see ``_gram_norm``)
    with np.errstate(over="ignore"):
        return float(np.float64(scale) * _gram_norm(gram, estimate, err))


def _gram(a: np.ndarray, scale: float) -> np.ndarray:
    """The float64 Gram matrix of a / ``scale`` on a's shorter side (tᵀt with t = a, or aᵀ when a
    is wide), accumulated in place by BLAS's syrk over blocks of t's rows, each block converted and
    divided by the power of two ``scale`` (exactly) on its own; syrk forms the upper triangle, which
    is then mirrored, so G is exactly symmetric and no second n×n array is made."""
    t = a if a.shape[1] <= a.shape[0] else a.T
    n = t.shape[1]
    step = max(1, GRAM_BLOCK // n)
    gram = np.zeros((n, n), dtype=np.float64, order="F")
    for start in range(0, t.shape[0], step):
        block = t[start:start + step].astype(np.float64, order="C")
        if scale != 1.0:
            block /= scale
        # block.T is n×k and, for a row-major block, Fortran-ordered: syrk reads it without a copy
        gram = scipy.linalg.blas.dsyrk(1.0, block.T, beta=1.0, c=gram, trans=0, lower=0, overwrite_c=1)
        budget.check()
    for start in range(0, n, step):   # mirror the upper triangle, a band of rows at a time
        stop = min(n, start + step)
        gram[start:stop, :start] = gram[:start, start:stop].T
        diag = gram[start:stop, start:stop]
        diag[...] = np.triu(diag) + np.triu(diag, 1).T
    return gram


def _gram_norm(gram: np.ndarray, estimate: float | None, err: float = 0.0) -> float:
    """√ of a number ≥ λ_max of every symmetric matrix within ``err`` of the float64 Gram matrix:
    the first θ(1 + δ) above ``estimate`` that a Cholesky proof establishes for all of them, else
    (or without an estimate) √(its largest eigenvalue + err).

    ``matrix_norm`` passes err = 2γ_m·tr(Ĝ): the computed Ĝ differs from the exact G by
    ‖Ĝ − G‖₂ ≤ ‖γ_m|A|ᵀ|A|‖₂ ≤ γ_m‖A‖_F² and ‖A‖_F² ≤ (1 + γ_m)(1 + γ_n)·tr(Ĝ) (nonnegative
    sums), so the bound holds for G itself at every size — the ``certify`` margin alone only
    covered it while m·‖A‖_F²/σ² ≲ 1.8e8."""
    if estimate is not None and estimate > 0:
        for delta in (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2):
            theta = estimate * (1 + delta)
            budget.check()
            if proves_gram_below(gram, theta * theta, err):
                return theta
    top = float(scipy.linalg.eigh(gram, eigvals_only=True, subset_by_index=[gram.shape[0] - 1] * 2)[0])
    return math.sqrt(max(top + err, 0.0))


def proves_gram_below(gram: np.ndarray, bound: float, err: float = 0.0) -> bool:
    """True only if λ_max < bound for gram and every symmetric matrix within ``err`` of it,
    proven by ``margins.prove_pd`` on bound·I − gram.

    Forming bound·I − gram rounds each diagonal entry once (the negation is exact), a relative
    error of at most u per diagonal entry, which the proof covers.
    """
    m = -np.asarray(gram, dtype=np.float64)
    m[np.diag_indices(m.shape[0])] += bound
    return bool(prove_pd(m, err=err, diag_rel=UNIT, overwrite=True))


def certified_materialised_norm(fn: TorchFn, shape, out_numel: int, limit: int, device="cpu",
                                estimate: float | None = None) -> Bound | None:
    """Certified σ_max by materialising the operator, or None when in·out entries exceed ``limit`` or
    the matrix and its Gram matrix would not fit in the memory limit (``lipgraph.budget``)."""
    n_in = int(np.prod(shape))
    if n_in * out_numel > limit or min(n_in, out_numel) > 4096:
        return None
    if not budget.fits(8 * (n_in * out_numel + 4 * min(n_in, out_numel) ** 2), f"materialising a {out_numel}×{n_in} "
                       "operator and its Gram matrix", "not materialised (other certificates only)"):
        return None
    matrix = materialise(fn, shape, device=device)
    if not np.any(matrix):
        return Bound(0.0, Label.EXACT, "zero")
    if not np.all(np.isfinite(matrix)):
        return Bound(math.inf, Label.CERTIFIED, OVERFLOW)
    return Bound(certify(matrix_norm(matrix, estimate)), Label.CERTIFIED, "materialised", slack=LADDER_SLACK)
