"""SeqLip: Lipschitz bounds for chains ``M_K ∘ ρ_{K−1} ∘ … ∘ ρ_1 ∘ M_1`` (standalone maths).

A *chain* alternates linear maps ``M_i`` and elementwise activations ``ρ_i`` whose slope at
neuron j lies in ``[lo_ij, hi_ij]`` (ReLU [0, 1], LeakyReLU [α, 1], Sigmoid [0, ¼], Tanh [0, 1],
GELU-like ranges with lo < 0 are all allowed). Every Jacobian is ``M_K D_{K−1} ⋯ D_1 M_1`` with
``D_i`` diagonal in the slope box. With thin SVDs ``M_i = U_i Σ_i V_iᵀ``

    L ≤ Π_{i=1}^{K−1} max_{D_i ∈ box_i} ‖Σ̃_{i+1} V_{i+1}ᵀ D_i U_i Σ̃_i‖₂      (K = 1: ‖M_1‖),

``Σ̃ = Σ`` for the first and last map and ``Σ^{1/2}`` in between (Virmaux & Scaman 2018,
Thm. 3; insert ``Σ_i^{1/2} Σ_i^{1/2}`` and use sub-multiplicativity). Each factor
``max_d ‖A diag(d) B‖`` maximises a convex function of ``d`` over a box, so the maximum sits
at a vertex ``d_j ∈ {lo_j, hi_j}``.

Per factor (``A``: p×n, ``B``: n×q):

- :func:`factor_exact` — vertex enumeration, exact maximum → label ``certified``;
- :func:`factor_bnb` — branch and bound, anytime: always a ``certified`` upper bound, exact
  when it finishes;
- :func:`factor_relaxation` — closed-form ``certified`` bound for any width;
- :func:`factor_greedy`, :func:`factor_topk` — the paper's heuristics → label ``estimate``
  (a vertex value: it can fall *below* the factor's maximum).

:func:`seqlip_chain` combines them; its certified value is never worse than AutoLip's
``Π‖M_i‖·max|slope_i|``. Chains (``seqlip_chain``, combining these per factor) live in :mod:`lipgraph.certify.seqlip_chain`.
This module does not depend on the graph engine.
"""
from __future__ import annotations

import functools
import itertools
import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

import lipgraph.budget as budget
from lipgraph.diagnostics import Diagnostic
from lipgraph.certify.margins import batched_gram_below, moment_slack
from lipgraph.certify.threads import single_threaded
from lipgraph.labels import Bound, Label, certify

__all__ = [
    "BudgetExhausted",
    "OverMemory",
    "factor_exact",
    "factor_bnb",
    "factor_relaxation",
    "factor_greedy",
    "factor_ascent",
    "factor_topk",
    "topk_triplets",
]

_DT = torch.float64


def _event(code: str, message: str, **data) -> Diagnostic:
    """A structured SeqLip event (``factor``/``map`` index, width ``n``); the pass names the chain."""
    return Diagnostic("", code, message, data)


class BudgetExhausted(RuntimeError):
    """An exact computation ran out of its time budget; ``best`` is a realised lower value."""

    def __init__(self, message: str, best: float = 0.0):
        super().__init__(message)
        self.best = best


class OverMemory(BudgetExhausted):
    """An exact computation's tables would exceed the memory limit (``lipgraph.budget`` noted it)."""


# ----------------------------------------------------------------------------- helpers


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64) if not torch.is_tensor(x) else x,
                           dtype=_DT)


def _box(lo, hi, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    lo_t = torch.broadcast_to(_t(lo), (n,)).clone()
    hi_t = torch.broadcast_to(_t(hi), (n,)).clone()
    if bool((lo_t > hi_t).any()):
        raise ValueError("slope box with lo > hi")
    return lo_t, hi_t


def _oriented(A, B):
    """Return (A, B) as float64 tensors with rows(A) ≤ cols(B) (‖ADB‖ = ‖BᵀDAᵀ‖)."""
    A, B = _t(A), _t(B)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"factor needs A (p×n), B (n×q); got {tuple(A.shape)}, {tuple(B.shape)}")
    if A.shape[0] > B.shape[1]:
        A, B = B.T.contiguous(), A.T.contiguous()
    return A, B


def _norm2(X: torch.Tensor) -> float:
    """Spectral norm of one matrix (float64 SVD)."""
    if X.numel() == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(X, ord=2))


def _norm2_batch(X: torch.Tensor) -> torch.Tensor:
    """Spectral norms of a batch (N, p, q) through the Gram matrix of the smaller side."""
    if X.shape[-1] == 0 or X.shape[-2] == 0:
        return torch.zeros(X.shape[0], dtype=_DT)
    G = X @ X.transpose(-1, -2) if X.shape[-2] <= X.shape[-1] else X.transpose(-1, -2) @ X
    if G.shape[-1] == 1:
        lam = G[..., 0, 0]
    else:
        lam = torch.linalg.eigvalsh(G)[..., -1]
    return lam.clamp_min(0).sqrt()


# ----------------------------------------------------------------------------- relaxation


def _relax_radius_term(A: torch.Tensor, B: torch.Tensor, r: torch.Tensor) -> float:
    """Bound on max_{|e|≤1} ‖A diag(r∘e) B‖ (r ≥ 0); see :func:`factor_relaxation`."""
    if r.numel() == 0 or float(r.max()) == 0.0:
        return 0.0
    best = _norm2(A.abs() * r[None, :] @ B.abs())
    sr = r.sqrt()
    ca = torch.linalg.vector_norm(A, dim=0)
    rb = torch.linalg.vector_norm(B, dim=1)
    ratio = torch.where((ca > 0) & (rb > 0), rb / ca.clamp_min(1e-300), torch.ones_like(ca))
    for t in (0.0, 0.25, 0.5):  # w_j = (‖b_j‖/‖a_j‖)^t; t = 0 is the plain √r split
        w = ratio.pow(t)
        val = _norm2(A * (sr * w)[None, :]) * _norm2((sr / w)[:, None] * B)
        best = min(best, val)
    return best


@single_threaded
def factor_relaxation(A, B, lo, hi) -> Bound:
    """Certified bound on ``max_{d ∈ [lo, hi]} ‖A diag(d) B‖`` for any width.

    Bound: ``‖A diag(m) B‖ + min(‖ |A| diag(r) |B| ‖, min_w ‖A diag(√r∘w)‖·‖diag(√r/w) B‖)``,
    further capped by ``max_j|d_j|·‖A‖‖B‖``; ``m = (lo+hi)/2``, ``r = (hi−lo)/2``; with per-neuron
    ranges, also the same bound for the hull ``[min lo, max hi]`` (which contains them), the smaller.

    Proof. Every admissible ``D = diag(m) + diag(r∘e)`` with ``|e_j| ≤ 1``, so by the triangle
    inequality ``‖ADB‖ ≤ ‖A diag(m) B‖ + ‖A diag(r∘e) B‖``. For any ``w > 0``,
    ``A diag(r∘e) B = (A diag(√r∘w)) diag(e) (diag(√r/w) B)`` and ``‖diag(e)‖ ≤ 1``, which
    gives the product form (``w = 1`` is the design's ``‖A diag √r‖‖diag √r B‖``; for scalar
    ``m, r`` and ``w = 1`` it is ``m‖AB‖ + r‖A‖‖B‖``). Alternatively, for unit ``x, y``,
    ``|xᵀA diag(r∘e) B y| ≤ |x|ᵀ|A| diag(r) |B||y| ≤ ‖|A| diag(r) |B|‖``. The cap is
    ``‖ADB‖ ≤ ‖A‖‖D‖‖B‖``. Each candidate ``w`` (a few balancing exponents) gives a sound
    bound, so their minimum is sound. Float64 norms are rounded up by ``certify``.
    Exactness: tight when ``lo = hi``; otherwise generally loose. Label ``certified``.
    """
    A, B = _oriented(A, B)
    lo, hi = _box(lo, hi, A.shape[1])
    m, r = (lo + hi) / 2, (hi - lo) / 2
    relax = _norm2(A * m[None, :] @ B) + _relax_radius_term(A, B, r)
    if A.shape[1] and not (bool((lo == lo[0]).all()) and bool((hi == hi[0]).all())):
        # the hull [min lo, max hi] holds every admissible d as well: per-neuron ranges (a box)
        # must never do worse than the uniform ones (the global case)
        m0, r0 = (float(lo.min()) + float(hi.max())) / 2, (float(hi.max()) - float(lo.min())) / 2
        relax = min(relax, _norm2(m0 * A @ B) + _relax_radius_term(A, B, torch.full_like(r, r0)))
    cap = float(torch.maximum(lo.abs(), hi.abs()).max()) * _norm2(A) * _norm2(B) if A.shape[1] else 0.0
    if cap < relax:
        return Bound(certify(cap), Label.CERTIFIED, "autolip-factor")
    return Bound(certify(relax), Label.CERTIFIED, "relaxation")


# ----------------------------------------------------------------------------- greedy


def _greedy_from(A, B, lo, hi, d, *, candidates: int, max_steps: int) -> tuple[float, torch.Tensor]:
    """Best-improvement coordinate flips from vertex ``d``; returns (value, vertex)."""
    n = A.shape[1]
    K = A.T[:, :, None] * B[:, None, :]  # (n, p, q) rank-one pieces a_j b_jᵀ
    X = torch.einsum("j,jpq->pq", d, K)
    cur = _norm2(X)
    for _ in range(max_steps):
        budget.check()
        delta = torch.where(d == hi, lo - hi, hi - lo)  # flip to the other end
        if candidates < n:  # rank flips by the first-order gain u_1ᵀ δ_j a_j b_jᵀ v_1
            U, _, Vh = torch.linalg.svd(X)
            gain = delta * (A.T @ U[:, 0]) * (B @ Vh[0])
            cand = torch.topk(gain, candidates).indices
        else:
            cand = torch.arange(n)
        vals = _norm2_batch(X[None] + delta[cand, None, None] * K[cand])
        j = int(torch.argmax(vals))
        if float(vals[j]) <= cur * (1 + 1e-12):
            break
        jj = int(cand[j])
        X = X + delta[jj] * K[jj]
        d = d.clone()
        d[jj] = lo[jj] if d[jj] == hi[jj] else hi[jj]
        cur = float(vals[j])
    return cur, d


@single_threaded
def factor_greedy(A, B, lo, hi, *, seed: int = 0, restarts: int = 0, candidates: int = 64,
                  max_steps: int | None = None) -> Bound:
    """Greedy vertex search for ``max_d ‖A diag(d) B‖`` (the paper's heuristic).

    Start at the vertex of largest |slope| per neuron (``hi`` for ReLU-like boxes), flip the
    coordinate that increases the norm most until none does; ``restarts`` more random starts
    (``seed``). With n > ``candidates`` only the ``candidates`` best first-order flips are
    evaluated per step. The value is realised at a vertex, so it is a *lower* bound on the
    factor and can fall below it. Label ``estimate``.
    """
    A, B = _oriented(A, B)
    n = A.shape[1]
    lo, hi = _box(lo, hi, n)
    if n == 0:
        return Bound(0.0, Label.ESTIMATE, "greedy")
    steps = max_steps if max_steps is not None else 2 * n + 10
    starts = [torch.where(hi.abs() >= lo.abs(), hi, lo)]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(restarts):
        starts.append(torch.where(torch.rand(n, generator=gen, dtype=_DT) < 0.5, lo, hi))
    best = max(_greedy_from(A, B, lo, hi, d, candidates=candidates, max_steps=steps)[0]
               for d in starts)
    return Bound(best, Label.ESTIMATE, "greedy")


@single_threaded
def factor_ascent(A, B, lo, hi, *, seed: int = 0, restarts: int = 1, max_iter: int = 30,
                  power_iters: int = 40) -> Bound:
    """Alternating ascent for ``max_d ‖A diag(d) B‖`` on wide factors (an estimate).

    ``‖A D B‖ = max_{u,v} Σ_j d_j (Aᵀu)_j (Bv)_j``: alternately take (u, v) as the leading
    singular pair of ``A D B`` (power iteration with matrix–vector products, warm-started; no
    ``n·p·q`` tensor as in :func:`factor_greedy`) and ``d_j = hi_j`` where
    ``(Aᵀu)_j(Bv)_j > 0``, else ``lo_j`` (the best vertex for that pair), until ``d`` repeats.
    The value ``‖(ADB)ᵀu‖`` with ``‖u‖ = 1`` is realised at a vertex, so it is a *lower*
    value of the factor and can fall below it. Label ``estimate``. Used for SeqLip-greedy when
    ``n·p·q`` is too large for the coordinate greedy.
    """
    A, B = _oriented(A, B)
    p, n = A.shape
    q = B.shape[1]
    lo, hi = _box(lo, hi, n)
    if n == 0 or p == 0 or q == 0:
        return Bound(0.0, Label.ESTIMATE, "ascent")
    gen = torch.Generator().manual_seed(seed)
    starts = [torch.where(hi.abs() >= lo.abs(), hi, lo)]
    for _ in range(restarts):
        starts.append(torch.where(torch.rand(n, generator=gen, dtype=_DT) < 0.5, lo, hi))
    best = 0.0
    # the power steps on the small p×q matrix A D B when forming it (n·p·q) is cheaper than
    # power_iters products through A and B (2·power_iters·n·(p + q)): top-k factors, k ≪ n
    small = p * q < 2 * power_iters * (p + q)
    for d in starts:
        v = torch.randn(q, generator=gen, dtype=_DT)
        v = v / torch.linalg.vector_norm(v).clamp_min(1e-300)
        for _ in range(max_iter):
            budget.check()
            s = 0.0
            C = A @ (d[:, None] * B) if small else None
            for _ in range(power_iters):
                u = C @ v if small else A @ (d * (B @ v))
                nu = torch.linalg.vector_norm(u)
                if float(nu) == 0.0:
                    break
                u = u / nu
                w = C.T @ u if small else B.T @ (d * (A.T @ u))
                s = float(torch.linalg.vector_norm(w))
                if s == 0.0:
                    break
                v = w / s
            best = max(best, s)
            if s == 0.0:
                break
            d_new = torch.where((A.T @ u) * (B @ v) > 0, hi, lo)
            if torch.equal(d_new, d):
                break
            d = d_new
    return Bound(best, Label.ESTIMATE, "ascent")


def _vertex_estimate(A, B, lo, hi, *, seed: int, greedy_max: int) -> Bound:
    """The paper's coordinate greedy when ``n·p·q ≤ greedy_max``, else :func:`factor_ascent`."""
    A, B = _oriented(A, B)
    if A.shape[1] * A.shape[0] * B.shape[1] <= greedy_max:
        return factor_greedy(A, B, lo, hi, seed=seed)
    return factor_ascent(A, B, lo, hi, seed=seed)


# ----------------------------------------------------------------------------- exact


# --- exact enumeration: moment bounds from split polynomial features ---------------------
#
# For a vertex d write G(d) = X Xᵀ, X = A diag(d) B (p×q, p ≤ q after orientation). Its
# moments are polynomials in d:  m_k(d) = tr(G^k) = tr((D Gb D Ga)^k), Ga = AᵀA, Gb = BBᵀ
# (n×n, cyclic trace). Split the coordinates into a high set H and a low set L, d = d_H + d_L.
# Expanding every D in the 2k-fold cyclic product gives terms with r factors D_L; a term with
# r ≤ k is ⟨coefficient(d_H), d_L^{⊗r}⟩, one with r > k is ⟨coefficient(d_L), d_H^{⊗(2k−r)}⟩.
# Summing, m_k(h, l) = F(h) · Φ(l) — one matrix product yields the exact moment of all
# 2^|H| × 2^|L| vertices, at a cost of (number of features) flops per vertex instead of the
# ~p²q of forming G.


@functools.lru_cache(maxsize=None)
def _sym_index(m: int, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Map the m^r index tuples of an r-fold tensor to sorted multisets: (tuple → id, ids' tuples)."""
    if r == 0:
        return torch.zeros(1, dtype=torch.long), torch.zeros((1, 0), dtype=torch.long)
    tuples = torch.cartesian_prod(*([torch.arange(m)] * r)).reshape(-1, r)
    srt = tuples.sort(dim=1).values
    uniq, inv = torch.unique(srt, dim=0, return_inverse=True)
    return inv, uniq


def _monomials(d: torch.Tensor, r: int) -> torch.Tensor:
    """Monomials Π_{i∈S} d_i over the multisets S of size r of d's columns; (N, m) → (N, #S)."""
    _, uniq = _sym_index(d.shape[1], r)
    return d[:, uniq].prod(-1) if r else torch.ones(d.shape[0], 1, dtype=_DT)


@functools.lru_cache(maxsize=None)
def _cyclic_patterns(k: int, r: int) -> dict[tuple[tuple[int, int], ...], int]:
    """Open-position patterns of a 2k-cycle with r open positions, as segment lists
    ((parity, gap), …), merged up to rotation (a rotation only permutes the indices of the
    coefficient tensor, which the multiset reduction ignores) with their multiplicities."""
    out: dict = {}
    for pos in itertools.combinations(range(2 * k), r):
        segs = tuple((pos[a] % 2, (pos[(a + 1) % r] - pos[a] - 1) % (2 * k) if r > 1 else 2 * k - 1)
                     for a in range(r))
        key = min(segs[i:] + segs[:i] for i in range(r))
        out[key] = out.get(key, 0) + 1
    return out


def _open_coefficients(Ms, dC, C, O, k: int, rmax: int) -> list[torch.Tensor]:
    """Coefficients of the part of tr(Π_{i<2k} D M_{i mod 2}) with r factors D_O (r = 0…rmax).

    ``D = D_C + D_O`` over disjoint index sets; ``dC`` (N, |C|) batches the closed values.
    A term whose open positions are p_1 < … < p_r is Σ_{i_1..i_r ∈ O} Π_a d_{i_a}
    Seg_a[i_a, i_{a+1}] (cyclic) with Seg_a = M_{p_a}[O,C] D_C M[C,C] … D_C M_{p_{a+1}−1}[C,O]
    (just M_{p_a}[O,O] for adjacent positions). Returned per r: the sum over all such terms,
    reduced to sorted multisets (the monomial d_O^S does not depend on the order), shape
    (N, #multisets); r = 0 is the scalar tr((D_C M_0 D_C M_1)^k) restricted to C.
    """
    N = dC.shape[0]
    MOC = [M[O][:, C] for M in Ms]
    MCC = [M[C][:, C] for M in Ms]
    MCO = [M[C][:, O] for M in Ms]
    MOO = [M[O][:, O] for M in Ms]

    @functools.lru_cache(maxsize=None)
    def seg(par: int, gap: int) -> torch.Tensor:
        if gap == 0:
            return MOO[par].expand(N, -1, -1)
        W = MOC[par][None] * dC[:, None, :]
        for j in range(1, gap):
            W = (W @ MCC[(par + j) % 2]) * dC[:, None, :]
        return W @ MCO[(par + gap) % 2]

    Z = (dC[:, :, None] * MCC[0]) * dC[:, None, :] @ MCC[1]  # D_C Gb D_C Ga on C
    out = [torch.linalg.matrix_power(Z, k).diagonal(dim1=1, dim2=2).sum(-1)[:, None]]
    m = len(O)
    for r in range(1, rmax + 1):
        T = torch.zeros((N,) + (m,) * r, dtype=_DT)
        for segs, count in _cyclic_patterns(k, r).items():
            S = [seg(par, gap) for par, gap in segs]
            if r == 1:
                T.add_(S[0].diagonal(dim1=1, dim2=2), alpha=count)
            elif r == 2:
                T.addcmul_(S[0], S[1].transpose(1, 2), value=count)
            else:  # r == 3: T[a,b,c] = S0[a,b] S1[b,c] S2[c,a]
                T.addcmul_(S[0][:, :, :, None] * S[1][:, None, :, :],
                           S[2].transpose(1, 2)[:, :, None, :], value=count)
        inv, uniq = _sym_index(m, r)
        red = torch.zeros(N, uniq.shape[0], dtype=_DT)
        red.index_add_(1, inv, T.reshape(N, -1))
        out.append(red)
    return out


def _moment_features(Ga, Gb, H, L, dH, dL, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with ``m_k = tr(G^k) = Fh[h] · Fl[l]`` for the vertex (dH[h], dL[l]); k ≤ 3."""
    Ms = (Gb, Ga)

    def coefficients(dC, C, O, rmax):  # in blocks of 256 closed vertices: stays in cache
        parts = [_open_coefficients(Ms, dC[i:i + 256], C, O, k, rmax)
                 for i in range(0, dC.shape[0], 256)]
        return [torch.cat(col) for col in zip(*parts)]

    cL = coefficients(dH, H, L, k)        # r = 0..k factors D_L, per high vertex
    cH = coefficients(dL, L, H, k - 1)    # r = 2k..k+1 factors D_L, per low vertex
    Fh = torch.cat(cL + [_monomials(dH, r) for r in range(k)], 1)
    Fl = torch.cat([_monomials(dL, r) for r in range(k + 1)] + cH, 1)
    return Fh, Fl


def _prune_m12(m1, m2, r, c, e1, e2):
    """Mask of vertices NOT proven λ_max(G) ≤ c from m1 = tr G, m2 = tr G² (± e1, e2), rank ≤ r.

    With λ_1 ≥ … ≥ λ_r ≥ 0: Cauchy–Schwarz gives Σ_{i≥2} λ_i² ≥ (m1 − λ_1)²/(r−1), so
    ψ(λ_1) = λ_1² + (m1 − λ_1)²/(r−1) ≤ m2, and ψ increases for λ ≥ m1/r (the Wolkowicz–Styan
    bound in another form). If c ≥ m1/r and ψ(c) > m2 then λ_1 ≤ c. Also λ_1 ≤ m1. The test
    uses m1 + e1 where m1 must be large, m1 − e1 where small, m2 + e2, and a relative 1e-12
    for the few roundings of ψ itself: sound for the exact moments.
    """
    m1_hi, m1_lo, m2_hi = m1 + e1, m1 - e1, m2 + e2
    rm1 = (r - 1).clamp_min(1)
    psi = c * c + (m1_lo - c).clamp_min(0) ** 2 / rm1 * (r > 1)
    proven = (m1_hi <= c) | ((c * r >= m1_hi) & (psi * (1 - 1e-12) > m2_hi))
    return ~proven


def _prune_m23(m2, m3, r, c, e2, e3):
    """Mask of vertices NOT proven λ_max(G) ≤ c from m2 = tr G², m3 = tr G³ (± e2, e3), rank ≤ r.

    Hölder: Σ_{i≥2} λ_i³ ≥ (Σ_{i≥2} λ_i²)^{3/2}/√(r−1), so φ(λ_1) = λ_1³ + (m2 − λ_1²)^{3/2}/√(r−1)
    ≤ m3, and φ increases for λ² ≥ m2/r (i.e. λ_1 at least the rms of the rest). If
    c² ≥ m2/r and φ(c) > m3 then λ_1 ≤ c. Rounding handled as in :func:`_prune_m12`.
    """
    m2_hi, m2_lo, m3_hi = m2 + e2, m2 - e2, m3 + e3
    rm1 = (r - 1).clamp_min(1)
    phi = c ** 3 + (m2_lo - c * c).clamp_min(0) ** 1.5 / rm1.sqrt() * (r > 1)
    proven = (c * c * r >= m2_hi) & (phi * (1 - 1e-12) > m3_hi)
    return ~proven


def _rows_product(Fh: torch.Tensor, Fl: torch.Tensor, ih: torch.Tensor, il: torch.Tensor):
    """(Fh @ Fl.T)[ih, il]: one matrix product over the rows and columns that occur when the
    pairs fill that block densely, else row-wise dot products of gathered features."""
    if ih.numel() == 0:
        return torch.zeros(0, dtype=_DT)
    rows, ir = torch.unique(ih, return_inverse=True)
    cols, ic = torch.unique(il, return_inverse=True)
    if rows.numel() * cols.numel() <= 8 * ih.numel():
        return (Fh[rows] @ Fl[cols].T)[ir, ic]
    out = torch.empty(ih.numel(), dtype=_DT)  # sparse pairs: row-wise dot products, in blocks
    for i in range(0, ih.numel(), 1024):
        j = slice(i, i + 1024)
        out[j] = torch.einsum("nf,nf->n", Fh[ih[j]], Fl[il[j]])
    return out


def _check_vertices(D, A, B, c: float, xmax2: float) -> float:
    """Largest λ_max(G(d)) over the rows of D that ``margins.batched_gram_below`` cannot prove
    ≤ c (exact eigvalsh for those); 0 when all are proven."""
    if D.shape[0] == 0:
        return 0.0
    X = A[None] * D[:, None, :] @ B
    G = X @ X.transpose(1, 2)
    bad = ~batched_gram_below(G, c, xmax2)
    if not bool(bad.any()):
        return 0.0
    return float(torch.linalg.eigvalsh(G[bad])[:, -1].max())


def _all_vertices(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """All 2^m vertices of the box as rows (bit j of the row index ↔ hi_j)."""
    m = lo.numel()
    idx = torch.arange(1 << m)
    bits = ((idx[:, None] >> torch.arange(m)[None, :]) & 1).to(_DT)
    return lo[None, :] + bits * (hi - lo)[None, :]


@single_threaded
def factor_exact(A, B, lo, hi, *, time_budget: float | None = None,
                 progress: Callable[[str], None] | None = None, low_bits: int | None = None,
                 chunk: int = 1 << 18, incumbent: float | None = None,
                 direct_max: int = 10, check_batch: int = 4096) -> Bound:
    """Exact ``max_{d ∈ Π{lo_j,hi_j}} ‖A diag(d) B‖`` by vertex enumeration with proven pruning.

    Bound: the maximum over all 2^n vertices, which equals the maximum over the box
    (convexity). With c = incumbent² (a realised vertex value, greedy by default) each vertex
    d must be shown to satisfy λ_max(G(d)) ≤ c, G = XXᵀ, or be evaluated exactly:

    1. the moments m1 = tr G and m2 = tr G² of *all* vertices come exactly from one matrix
       product of split features (``_moment_features``; coordinates split into ``low_bits``
       low and n − low_bits high ones); :func:`_prune_m12` discards what they prove ≤ c;
    2. for the rest m3 = tr G³ (features of degree 6, a product over the rows that still
       have candidates) and :func:`_prune_m23`;
    3. the few left (largest m3 first, in batches of ``check_batch``) form G and
       :func:`_check_vertices` proves them by a Cholesky of cI − G, or evaluates them with
       ``eigvalsh`` and raises the incumbent; a raised incumbent re-runs 1–2 on the rest.

    Vertices with n ≤ ``direct_max`` all go to step 3.

    Rank ≤ min(p, #nonzero d_j) sharpens both moment tests. Every prune is a proof for the
    exact moments, and the computed moments carry the slack of ``margins.moment_slack``.
    Result: the best realised vertex value, rounded up by ``certify``. Label ``certified``.
    Raises :class:`BudgetExhausted` when ``time_budget`` seconds pass first.
    """
    t0 = time.perf_counter()
    A, B = _oriented(A, B)
    p, n = A.shape
    q = B.shape[1]
    lo, hi = _box(lo, hi, n)
    if n == 0 or p == 0 or q == 0:
        return Bound(0.0, Label.CERTIFIED, "exact-enumeration")
    best = incumbent if incumbent is not None else factor_greedy(A, B, lo, hi).value
    cn = torch.linalg.vector_norm(A, dim=0) * torch.linalg.vector_norm(B, dim=1)
    s = float(torch.maximum(lo.abs(), hi.abs()).max())
    xmax2 = float((torch.maximum(lo.abs(), hi.abs()) * cn).sum()) ** 2
    if n <= direct_max:
        V = _all_vertices(lo, hi)
        for i in range(0, V.shape[0], check_batch):
            best = max(best, math.sqrt(max(0.0, _check_vertices(V[i:i + check_batch], A, B,
                                                                      best * best, xmax2))))
        return Bound(certify(best), Label.CERTIFIED, "exact-enumeration")
    l = max(1, min(n - 1, n // 2 if low_bits is None else low_bits))
    Lidx, Hidx = list(range(l)), list(range(l, n))
    dL, dH = _all_vertices(lo[:l], hi[:l]), _all_vertices(lo[l:], hi[l:])
    Ga, Gb = A.T @ A, B @ B.T
    feats = {k: _moment_features(Ga, Gb, Hidx, Lidx, dH, dL, k) for k in (1, 2, 3)}
    slack = {k: moment_slack(A, B, s, k) for k in (1, 2, 3)}
    nzL, nzH = (dL != 0).sum(1).to(_DT), (dH != 0).sum(1).to(_DT)
    nL = dL.shape[0]
    rows = max(1, chunk // nL)
    evaluated, last_report = 0, t0
    for start in range(0, dH.shape[0], rows):
        budget.check()
        if time_budget is not None and time.perf_counter() - t0 > time_budget:
            raise BudgetExhausted(
                f"exact enumeration n={n}: budget {time_budget:.3g}s spent after "
                f"{start * nL}/{dH.shape[0] * nL} vertices", best)
        sl = slice(start, start + rows)
        c = best * best
        m1 = feats[1][0][sl] @ feats[1][1].T
        m2 = feats[2][0][sl] @ feats[2][1].T
        # ‖G‖_F = √m2 ≥ λ_max: the cheapest test first, the sharper ones on what is left
        ih, il = (m2 > c * c - slack[2]).nonzero(as_tuple=True)
        m1, m2 = m1[ih, il], m2[ih, il]
        r = (nzH[sl][ih] + nzL[il]).clamp(max=p)
        keep = _prune_m12(m1, m2, r, c, slack[1], slack[2])
        ih, il, m1, m2, r = ih[keep], il[keep], m1[keep], m2[keep], r[keep]
        m3 = _rows_product(feats[3][0][sl], feats[3][1], ih, il)
        keep = _prune_m23(m2, m3, r, c, slack[2], slack[3])
        # best first (largest m3), so that a rising incumbent prunes the rest of the chunk
        order = torch.argsort(m3[keep], descending=True)
        cand = [t[keep][order] for t in (ih, il, m1, m2, m3, r)]
        while cand[0].numel():
            budget.check()
            bh, bl = cand[0][:check_batch], cand[1][:check_batch]
            lam = _check_vertices(torch.cat([dL[bl], dH[sl][bh]], 1), A, B, best * best, xmax2)
            evaluated += int(bh.numel())
            cand = [t[check_batch:] for t in cand]
            if lam > best * best:  # the incumbent rose: the remaining candidates are retested
                best = math.sqrt(lam)
                c = best * best
                _, _, c1, c2, c3, cr = cand
                again = _prune_m12(c1, c2, cr, c, slack[1], slack[2]) & \
                    _prune_m23(c2, c3, cr, c, slack[2], slack[3])
                cand = [t[again] for t in cand]
        now = time.perf_counter()
        if progress is not None and now - last_report > 1.0:
            progress(f"exact n={n}: {min(dH.shape[0], start + rows) * nL}/{dH.shape[0] * nL} "
                     f"vertices, {evaluated} evaluated, best {best:.6g}")
            last_report = now
    return Bound(certify(best), Label.CERTIFIED, "exact-enumeration")


@single_threaded
def factor_bnb(A, B, lo, hi, *, time_budget: float | None = 1.0, max_nodes: int = 1 << 14,
               incumbent: float | None = None) -> tuple[Bound, bool]:
    """Anytime branch and bound for ``max_d ‖A diag(d) B‖``; returns (bound, finished).

    Coordinates are fixed one at a time in decreasing ``r_j‖a_j‖‖b_j‖``. A node fixes a
    prefix F; with the free set R at its centre ``m_R``, every completion satisfies
    ``‖A D B‖ ≤ ‖A diag(d_F, m_R) B‖ + ρ(R)`` where ``ρ(R)`` is the radius term of
    :func:`factor_relaxation` on R (same proof). Nodes whose bound is ≤ the best realised
    vertex value are pruned. When the budget or ``max_nodes`` runs out, the answer is
    ``max(best vertex, max open-node bound)`` — still a sound bound on the factor; when
    the tree is exhausted it is the exact maximum. Label ``certified``.
    """
    t0 = time.perf_counter()
    A, B = _oriented(A, B)
    n = A.shape[1]
    lo, hi = _box(lo, hi, n)
    root = factor_relaxation(A, B, lo, hi)
    if n == 0:
        return Bound(0.0, Label.CERTIFIED, "bnb"), True
    best = incumbent if incumbent is not None else factor_greedy(A, B, lo, hi).value
    m, r = (lo + hi) / 2, (hi - lo) / 2
    w = r * torch.linalg.vector_norm(A, dim=0) * torch.linalg.vector_norm(B, dim=1)
    order = torch.argsort(w, descending=True)
    A, B, lo, hi, m, r = A[:, order], B[order], lo[order], hi[order], m[order], r[order]
    K = A.T[:, :, None] * B[:, None, :]
    X = (A * m[None, :] @ B)[None]  # open nodes, (N, p, q), free coordinates at the centre
    ub = torch.full((1,), root.value, dtype=_DT)
    for t in range(n):
        budget.check()
        if time_budget is not None and time.perf_counter() - t0 > time_budget:
            break
        if 2 * X.shape[0] > max_nodes:
            break
        X = torch.cat([X - r[t] * K[t], X + r[t] * K[t]])
        ub = torch.cat([ub, ub])
        rho = _relax_radius_term(A[:, t + 1:], B[t + 1:], r[t + 1:]) if t + 1 < n else 0.0
        val = _norm2_batch(X)
        if t + 1 == n:  # leaves are vertices
            best = max(best, float(val.max()))
            X = X[:0]
            ub = ub[:0]
            break
        ub = torch.minimum(ub, val + rho * (1 + 1e-9) + 1e-12 * val)
        keep = ub > best
        X, ub = X[keep], ub[keep]
        if X.shape[0] == 0:
            break
    finished = X.shape[0] == 0
    value = best if finished else max(best, float(ub.max()))
    value = min(value, root.value)
    return Bound(certify(value), Label.CERTIFIED, "bnb-exact" if finished else "bnb"), finished


# ----------------------------------------------------------------------------- top-k


def topk_triplets(op: Callable[[torch.Tensor], torch.Tensor], in_shape: Sequence[int], k: int, *,
                  adjoint: Callable[[torch.Tensor], torch.Tensor] | None = None, iters: int = 100,
                  seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = _DT,
                  oversample: int = 0):
    """k leading singular triplets ``(U, S, V)`` of a linear operator given as a callable.

    ``op`` maps a tensor of ``in_shape`` (``dtype`` on ``device``) to any shape; the adjoint is
    ``adjoint`` or the vector–Jacobian product through autograd. Block power (subspace) iteration
    on k + ``oversample`` columns with re-orthonormalisation — the deflated power iteration done
    for all vectors at once, i.e. the randomised SVD with ``iters`` power steps (Halko, Martinsson
    & Tropp 2011) — followed by a Rayleigh–Ritz step, truncated to k: ``U`` (out_dim × k), ``S``
    (k, descending), ``V`` (in_dim × k) with ``op(V[:, i]) ≈ S[i] U[:, i]``, in ``dtype`` on
    ``device``. Cost: (2·``iters`` + 1)·(k + ``oversample``) applications of the operator, each
    batch in one vmapped call. Converges from below: the values are an ``estimate``, never a
    certified norm.
    """
    device = torch.device(device)
    in_shape = tuple(int(s) for s in in_shape)
    n_in = int(np.prod(in_shape))
    k = max(1, min(k, n_in))
    cols = min(k + max(0, oversample), n_in)
    zero = torch.zeros(in_shape, dtype=dtype, device=device)
    out0 = op(zero)
    out_shape = tuple(out0.shape)

    def fwd(v):
        return (op(v.reshape(in_shape)) - out0).reshape(-1)

    if adjoint is None:
        try:   # the linearisation once, when every rule on the path supports torch.func
            _, vjp = torch.func.vjp(lambda x: op(x) - out0, zero)

            def adj(u):
                return vjp(u.reshape(out_shape))[0].reshape(-1)
        except Exception:  # noqa: BLE001 - e.g. a rule reading a constant's data: plain autograd per call
            def adj(u):
                x = zero.clone().requires_grad_(True)
                with torch.enable_grad():
                    return torch.autograd.grad(op(x), x, u.reshape(out_shape))[0].reshape(-1)
    else:
        def adj(u):
            return adjoint(u.reshape(out_shape)).reshape(-1)

    def apply_cols(f, M):
        try:  # one batched call when the operator supports vmap
            return torch.func.vmap(f, in_dims=1, out_dims=1)(M)
        except Exception:  # noqa: BLE001 - fall back to one call per column
            return torch.stack([f(M[:, i]) for i in range(M.shape[1])], dim=1)

    def orth(M):  # numpy's QR is far cheaper than torch's for small CPU matrices
        if M.device.type == "cpu":
            return torch.from_numpy(np.linalg.qr(M.detach().numpy())[0])
        return torch.linalg.qr(M)[0]

    gen = torch.Generator(device="cpu").manual_seed(seed)
    V = orth(torch.randn(n_in, cols, generator=gen, dtype=_DT).to(dtype)).to(device)
    for _ in range(iters):
        budget.check()
        V = orth(apply_cols(adj, apply_cols(fwd, V)))
    AV = apply_cols(fwd, V)
    P, S, Qh = torch.linalg.svd(AV, full_matrices=False)
    return P[:, :k], S[:k], V @ Qh[:k].T


@single_threaded
def factor_topk(prev, nxt, lo, hi, *, first: bool, last: bool, seed: int = 0,
                candidates: int = 64, greedy_max: int | None = None) -> Bound:
    """Greedy SeqLip factor on truncated SVDs (the paper's heuristic for large layers).

    ``prev = (U_i, S_i, V_i)`` and ``nxt = (U_{i+1}, S_{i+1}, V_{i+1})`` are top-k triplets
    (e.g. from :func:`topk_triplets`); the factor ``‖Σ̃_{i+1} V_{i+1}ᵀ D U_i Σ̃_i‖`` is
    searched greedily with the k-dimensional truncations (``Σ̃ = Σ`` if ``first``/``last``,
    else ``Σ^{1/2}``). Dropping the tail singular values can only lose mass, and greedy is a
    local search: label ``estimate``. When ``n·k² > greedy_max`` the search is
    :func:`factor_ascent` instead of the coordinate greedy (method ``topk-ascent``).
    """
    U_i, S_i, _ = (_t(x) for x in prev)
    _, S_n, V_n = (_t(x) for x in nxt)
    s_in = S_i if first else S_i.clamp_min(0).sqrt()
    s_out = S_n if last else S_n.clamp_min(0).sqrt()
    A = s_out[:, None] * V_n.T
    B = U_i * s_in[None, :]
    if greedy_max is not None and A.shape[1] * A.shape[0] * B.shape[1] > greedy_max:
        return Bound(factor_ascent(A, B, lo, hi, seed=seed).value, Label.ESTIMATE, "topk-ascent")
    g = factor_greedy(A, B, lo, hi, seed=seed, candidates=candidates)
    return Bound(g.value, Label.ESTIMATE, "topk-greedy")
