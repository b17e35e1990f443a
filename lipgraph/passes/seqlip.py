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
``Π‖M_i‖·max|slope_i|``. This module does not depend on the graph engine.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from lipgraph.labels import Bound, Label, certify
from lipgraph.linear import materialise

#: Subspace iterations for the top-k heuristic inside a chain: it only guides the greedy
#: estimate, so a rough subspace is enough (each iteration costs 2k operator applications).
TOPK_ITERS = 20

__all__ = [
    "BudgetExhausted",
    "OperatorMap",
    "FactorReport",
    "ChainBounds",
    "factor_exact",
    "factor_bnb",
    "factor_relaxation",
    "factor_greedy",
    "factor_ascent",
    "factor_topk",
    "topk_triplets",
    "seqlip_factors",
    "seqlip_chain",
    "time_exact_factor",
]

_DT = torch.float64


def _one_thread(fn):
    """Run ``fn`` with one torch thread. The work here is many small LAPACK calls (SVDs and
    eigvalsh of ≤ 64×64 matrices); with intra-op threads on shared cores they thrash
    (measured on the 2-core machine under load: 95 ms vs 0.5 ms for one 64×64 SVD; an exact
    n = 18 factor 2.6 s vs 1.5 s)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        prev = torch.get_num_threads()
        if prev == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(prev)
    return wrapper


class BudgetExhausted(RuntimeError):
    """An exact computation ran out of its time budget; ``best`` is a realised lower value."""

    def __init__(self, message: str, best: float = 0.0):
        super().__init__(message)
        self.best = best


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


def _vertex_products(K: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """All 2^m sums Σ_j d_j K_j over d ∈ Π{lo_j, hi_j}; K (m, F) → (2^m, F). Bit j ↔ hi_j."""
    m = K.shape[0]
    idx = torch.arange(1 << m)
    bits = ((idx[:, None] >> torch.arange(m)[None, :]) & 1).to(_DT)
    D = lo[None, :] + bits * (hi - lo)[None, :]
    return D @ K


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


@_one_thread
def factor_relaxation(A, B, lo, hi) -> Bound:
    """Certified bound on ``max_{d ∈ [lo, hi]} ‖A diag(d) B‖`` for any width.

    Bound: ``‖A diag(m) B‖ + min(‖ |A| diag(r) |B| ‖, min_w ‖A diag(√r∘w)‖·‖diag(√r/w) B‖)``,
    further capped by ``max_j|d_j|·‖A‖‖B‖``; ``m = (lo+hi)/2``, ``r = (hi−lo)/2``.

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


@_one_thread
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


@_one_thread
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
    for d in starts:
        v = torch.randn(q, generator=gen, dtype=_DT)
        v = v / torch.linalg.vector_norm(v).clamp_min(1e-300)
        for _ in range(max_iter):
            s = 0.0
            for _ in range(power_iters):
                u = A @ (d * (B @ v))
                nu = torch.linalg.vector_norm(u)
                if float(nu) == 0.0:
                    break
                u = u / nu
                w = B.T @ (d * (A.T @ u))
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


def _fro_gram_bound_terms(M: torch.Tensor, p: int, q: int):
    """Per-vertex pieces for the ‖G‖_F bound: M, P=MMᵀ, S=MᵀM, PM, ‖P‖², ‖M‖_F (flattened)."""
    N = M.shape[0]
    Mm = M.view(N, p, q)
    P = Mm @ Mm.transpose(1, 2)
    S = Mm.transpose(1, 2) @ Mm
    PM = P @ Mm
    return (M, P.reshape(N, -1), S.reshape(N, -1), PM.reshape(N, -1),
            (P * P).sum((1, 2)), torch.linalg.vector_norm(M, dim=1))


def _ws_survivors(G: torch.Tensor, lam_best: float) -> torch.Tensor:
    """Mask of PSD matrices G (N, p, p) whose λ_max may exceed ``lam_best``.

    For any c, ``|λ_max − c| ≤ ‖G − cI‖_F = sqrt(‖G‖_F² − 2c·tr G + c²p)``; with
    ``c = tr G / p`` this is the Wolkowicz–Styan bound. A rounding slack of
    ``1e-9·(tr G)²`` (tr G ≥ ‖G‖_F ≥ every term's scale) keeps the test sound.
    """
    p = G.shape[-1]
    t = G.diagonal(dim1=1, dim2=2).sum(-1)
    F = (G * G).sum((1, 2))
    c = t / p
    ub = c + (F - 2 * c * t + c * c * p + 1e-9 * t * t).clamp_min(0).sqrt()
    return ub > lam_best


@_one_thread
def factor_exact(A, B, lo, hi, *, time_budget: float | None = None,
                 progress: Callable[[str], None] | None = None, low_bits: int = 10,
                 chunk: int = 1 << 18, incumbent: float | None = None) -> Bound:
    """Exact ``max_{d ∈ Π{lo_j,hi_j}} ‖A diag(d) B‖`` by vectorised vertex enumeration.

    Bound: the maximum over all 2^n vertices, which equals the maximum over the box
    (convexity). Coordinates split into ``l`` low and ``h`` high bits; ``X = X_h + X_l``.
    For every (high, low) pair an upper bound ``T ≥ ‖G‖_F² ≥ ‖X‖⁴`` (``G = XXᵀ``, expanded
    bilinearly: ``‖P‖²+‖R‖²+4⟨S_h,S_l⟩+2⟨P,R⟩+4⟨PX_h,X_l⟩+4⟨X_h,RX_l⟩`` with
    ``P = X_hX_hᵀ, R = X_lX_lᵀ, S = XᵀX`` and ``tr(Q²) ≤ ‖Q‖²`` for ``Q = X_hX_lᵀ``) comes
    from matrix products only; vertices whose ``T`` (plus a rounding slack) is below the
    best realised value⁴ are skipped; for the rest the Gram matrix is formed and the
    Wolkowicz–Styan bound (see ``_ws_survivors``) skips more; the remaining vertices get an
    exact batched ``eigvalsh``. Skipped vertices are provably ≤ the running best. Result:
    the best realised vertex value, rounded up by ``certify``. Label ``certified``.
    Raises :class:`BudgetExhausted` when ``time_budget`` seconds pass first.
    """
    t0 = time.perf_counter()
    A, B = _oriented(A, B)
    p, n = A.shape
    q = B.shape[1]
    lo, hi = _box(lo, hi, n)
    if n == 0 or p == 0 or q == 0:
        return Bound(0.0, Label.CERTIFIED, "exact-enumeration")
    K = (A.T[:, :, None] * B[:, None, :]).reshape(n, p * q)
    best = incumbent if incumbent is not None else factor_greedy(A, B, lo, hi).value
    l = min(n, low_bits)
    h = n - l
    low = _fro_gram_bound_terms(_vertex_products(K[:l], lo[:l], hi[:l]), p, q)
    Ml, Rl, Sl, RMl, nRl, fl = low  # for the low part "PM" is R·X_l
    L = Ml.shape[0]
    hc = max(1, chunk // L)
    total_h = 1 << h
    evaluated = 0
    last_report = t0
    for start in range(0, total_h, hc):
        stop = min(total_h, start + hc)
        if time_budget is not None and time.perf_counter() - t0 > time_budget:
            raise BudgetExhausted(
                f"exact enumeration n={n}: budget {time_budget:.3g}s spent after "
                f"{start * L}/{total_h * L} vertices", best)
        idx = torch.arange(start, stop)
        bits = ((idx[:, None] >> torch.arange(h)[None, :]) & 1).to(_DT)
        D = lo[None, l:] + bits * (hi - lo)[None, l:]
        Mh, Ph, Sh, PMh, nPh, fh = _fro_gram_bound_terms(D @ K[l:], p, q)
        T = (nPh[:, None] + nRl[None, :] + 4 * (Sh @ Sl.T) + 2 * (Ph @ Rl.T)
             + 4 * (PMh @ Ml.T) + 4 * (Mh @ RMl.T))
        slack = 1e-9 * (fh[:, None] + fl[None, :]) ** 4
        surv = (T + slack > best ** 4).nonzero()
        for s0 in range(0, surv.shape[0], 1 << 15):
            ij = surv[s0:s0 + (1 << 15)]
            X = (Mh[ij[:, 0]] + Ml[ij[:, 1]]).view(-1, p, q)
            G = X @ X.transpose(1, 2)
            keep = _ws_survivors(G, best ** 2)
            if bool(keep.any()):
                G = G[keep]
                lam = G[:, 0, 0] if p == 1 else torch.linalg.eigvalsh(G)[:, -1]
                best = max(best, float(lam.clamp_min(0).max().sqrt()))
        evaluated += int(surv.shape[0])
        now = time.perf_counter()
        if progress is not None and now - last_report > 1.0:
            progress(f"exact n={n}: {stop * L}/{total_h * L} vertices, "
                     f"{evaluated} evaluated, best {best:.6g}")
            last_report = now
    return Bound(certify(best), Label.CERTIFIED, "exact-enumeration")


@_one_thread
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
    p, n = A.shape
    q = B.shape[1]
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
                  seed: int = 0, device: str | torch.device = "cpu"):
    """k leading singular triplets ``(U, S, V)`` of a linear operator given as a callable.

    ``op`` maps a tensor of ``in_shape`` to any shape; the adjoint is ``adjoint`` or the
    vector–Jacobian product through autograd. Block power (subspace) iteration with
    re-orthonormalisation — the deflated power iteration done for all k vectors at once —
    followed by a Rayleigh–Ritz step: ``U`` (out_dim × k), ``S`` (k, descending),
    ``V`` (in_dim × k) with ``op(V[:, i]) ≈ S[i] U[:, i]``. Converges from below: the
    values are an ``estimate``, never a certified norm.
    """
    device = torch.device(device)
    in_shape = tuple(int(s) for s in in_shape)
    n_in = int(np.prod(in_shape))
    k = max(1, min(k, n_in))
    zero = torch.zeros(in_shape, dtype=_DT, device=device)
    out0 = op(zero)
    out_shape = tuple(out0.shape)

    def fwd(v):
        return (op(v.reshape(in_shape)) - out0).reshape(-1)

    if adjoint is None:
        _, vjp = torch.func.vjp(lambda x: op(x) - out0, zero)

        def adj(u):
            return vjp(u.reshape(out_shape))[0].reshape(-1)
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
    V = orth(torch.randn(n_in, k, generator=gen, dtype=_DT)).to(device)
    for _ in range(iters):
        V = orth(apply_cols(adj, apply_cols(fwd, V)))
    AV = apply_cols(fwd, V)
    P, S, Qh = torch.linalg.svd(AV, full_matrices=False)
    return P, S, V @ Qh.T


@_one_thread
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


# ----------------------------------------------------------------------------- chains


@dataclass(frozen=True)
class OperatorMap:
    """A linear map given as a torch callable on tensors of ``in_shape``.

    ``norm_bound`` is a certified bound on its spectral norm when the engine has one
    (e.g. the DFT bound of a convolution); without it a chain containing the operator
    has no certified SeqLip value unless the map is small enough to materialise.
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    in_shape: tuple[int, ...]
    norm_bound: Bound | None = None
    adjoint: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class FactorReport:
    """One SeqLip factor: width n, method of the certified value, both values, seconds."""

    n: int
    method: str
    certified: float
    greedy: float
    seconds: float
    greedy_method: str = "greedy"


@dataclass
class ChainBounds:
    """SeqLip result for one chain: ``certified`` (label certified) and ``greedy`` (estimate)."""

    certified: Bound
    greedy: Bound
    factors: list[FactorReport] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)


@dataclass
class _Svd:
    U: torch.Tensor | None  # None when only top-k triplets are known
    S: torch.Tensor
    V: torch.Tensor
    norm: float  # certified spectral norm (inf if unknown)
    dense: bool


def _decompose(M, *, topk: int, seed: int, dense_max: int, diags: list[str], idx: int) -> _Svd:
    if isinstance(M, OperatorMap):
        n_in = int(np.prod(M.in_shape))
        if n_in <= dense_max:
            M = torch.from_numpy(materialise(M.fn, M.in_shape))
            diags.append(f"map {idx + 1}: operator materialised ({tuple(M.shape)})")
        else:
            U, S, V = topk_triplets(M.fn, M.in_shape, topk, adjoint=M.adjoint, seed=seed, iters=TOPK_ITERS)
            nb = M.norm_bound
            norm = nb.value if nb is not None and nb.label.is_bound else math.inf
            diags.append(f"map {idx + 1}: top-{S.numel()} triplets by power iteration"
                         + ("" if math.isfinite(norm) else ", no certified norm"))
            return _Svd(U, S, V, norm, False)
    M = _t(M)
    if M.ndim != 2:
        raise ValueError(f"map {idx + 1}: dense maps must be 2-D matrices, got {tuple(M.shape)}")
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    return _Svd(U, S, Vh.T, float(S[0]) if S.numel() else 0.0, True)


def seqlip_factors(maps) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The SeqLip factor matrices ``(A_i, B_i) = (Σ̃_{i+1}V_{i+1}ᵀ, U_iΣ̃_i)`` of dense maps."""
    svds = [_decompose(M, topk=0, seed=0, dense_max=0, diags=[], idx=i) for i, M in enumerate(maps)]
    K = len(svds)
    out = []
    for i in range(K - 1):
        s_in = svds[i].S if i == 0 else svds[i].S.sqrt()
        s_out = svds[i + 1].S if i + 1 == K - 1 else svds[i + 1].S.sqrt()
        out.append((s_out[:, None] * svds[i + 1].V.T, svds[i].U * s_in[None, :]))
    return out


@_one_thread
def seqlip_chain(maps, slopes, *, exact_max: int = 20, time_budget: float | None = None,
                 topk: int = 200, seed: int = 0, progress: Callable[[str], None] | None = None,
                 bnb_max: int = 64, bnb_nodes: int = 1 << 11, dense_max: int = 4096,
                 greedy_max: int = 1 << 18) -> ChainBounds:
    """SeqLip bounds for ``M_K ∘ ρ_{K−1} ∘ … ∘ ρ_1 ∘ M_1``.

    ``maps``: K dense matrices (out × in) or :class:`OperatorMap`; ``slopes``: K−1 pairs
    ``(lo, hi)`` (scalars or per-neuron arrays; any box ``lo ≤ hi``, negative slopes included).
    Per factor the certified value is the smallest of: the exact maximum (branch and bound
    when it finishes, else vertex enumeration when n ≤ ``exact_max``), the anytime
    branch-and-bound bound (n ≤ ``bnb_max``), :func:`factor_relaxation`, and the AutoLip factor
    ``max|slope|·‖Σ̃_{i+1}‖‖Σ̃_i‖`` — so the product is never above AutoLip's
    ``Π‖M_i‖·max|slope_i|``. ``certified`` multiplies the per-factor values (label
    ``certified``; ∞ when an operator has no certified norm). ``greedy`` multiplies vertex
    estimates: the paper's coordinate greedy when ``n·p·q ≤ greedy_max``, else
    :func:`factor_ascent`; top-k truncations for operator maps (label ``estimate``).

    Determinism: branch and bound is limited by its frontier width ``bnb_nodes`` (open nodes
    per level, so at most ``n·bnb_nodes`` node evaluations; scaled down by ``8000/(p·q·min(p,q))``
    for factors larger than 20×20, at least 64) and enumeration by ``exact_max``,
    never by seconds, so the certified value depends only on the inputs and the options.
    ``time_budget`` (seconds for the whole chain) is an outer safety net only: when it fires,
    the remaining exact work falls back to certified relaxations and a diagnostic containing
    "time budget exhausted" says that the result may depend on machine load.
    """
    t0 = time.perf_counter()
    deadline = None if time_budget is None else t0 + time_budget
    diags: list[str] = []
    K = len(maps)
    if K == 0:
        raise ValueError("empty chain")
    if len(slopes) != K - 1:
        raise ValueError(f"{K} maps need {K - 1} slope boxes, got {len(slopes)}")
    svds = [_decompose(M, topk=topk, seed=seed, dense_max=dense_max, diags=diags, idx=i)
            for i, M in enumerate(maps)]
    if K == 1:
        v = svds[0].norm
        cert = Bound(certify(v), Label.CERTIFIED, "svd") if svds[0].dense else (
            Bound(v, Label.CERTIFIED, "norm-bound") if math.isfinite(v) else
            Bound(math.inf, Label.CERTIFIED, "none"))
        est = Bound(float(svds[0].S[0]), Label.ESTIMATE, "svd")
        return ChainBounds(cert, est, [], diags)

    reports: list[FactorReport] = []
    cert_prod, greedy_prod = 1.0, 1.0
    for i in range(K - 1):
        ts = time.perf_counter()
        prev, nxt = svds[i], svds[i + 1]
        first, last = i == 0, i + 1 == K - 1
        n = int(prev.U.shape[0])
        lo, hi = _box(slopes[i][0], slopes[i][1], n)
        smax = float(torch.maximum(lo.abs(), hi.abs()).max()) if n else 0.0
        norm_in = prev.norm if first else math.sqrt(prev.norm)
        norm_out = nxt.norm if last else math.sqrt(nxt.norm)
        cap = certify(smax * norm_in * norm_out)
        if not (prev.dense and nxt.dense):
            g = factor_topk((prev.U, prev.S, prev.V), (nxt.U, nxt.S, nxt.V), lo, hi,
                            first=first, last=last, seed=seed, greedy_max=greedy_max)
            cval, method = cap, "autolip-factor"
            diags.append(f"factor {i + 1}: n={n}, operator map: top-k {g.method.split('-')[-1]} "
                         "estimate, certified by the AutoLip factor")
        else:
            s_in = prev.S if first else prev.S.sqrt()
            s_out = nxt.S if last else nxt.S.sqrt()
            A = s_out[:, None] * nxt.V.T
            B = prev.U * s_in[None, :]
            g = _vertex_estimate(A, B, lo, hi, seed=seed, greedy_max=greedy_max)
            cval, method = _certified_factor(A, B, lo, hi, n, i, g.value, exact_max, bnb_max,
                                             bnb_nodes, deadline, progress, diags)
            if cap < cval:
                cval, method = cap, "autolip-factor"
        cert_prod *= cval
        greedy_prod *= g.value
        reports.append(FactorReport(n, method, cval, g.value, time.perf_counter() - ts, g.method))
    methods = sorted({r.method for r in reports})
    cert = Bound(certify(cert_prod, 1e-15 * K), Label.CERTIFIED, "seqlip[" + ",".join(methods) + "]")
    est = Bound(greedy_prod, Label.ESTIMATE, "seqlip-greedy")
    return ChainBounds(cert, est, reports, diags)


def _certified_factor(A, B, lo, hi, n, i, incumbent, exact_max, bnb_max, bnb_nodes, deadline,
                      progress, diags) -> tuple[float, str]:
    """Certified value of one dense factor and the method that produced it (deterministic
    unless the outer ``deadline`` fires, which is reported)."""
    def left():
        return None if deadline is None else max(0.0, deadline - time.perf_counter())

    def fired():
        return deadline is not None and time.perf_counter() >= deadline

    relax = factor_relaxation(A, B, lo, hi)
    if n > bnb_max and n > exact_max:
        diags.append(f"factor {i + 1}: n={n} > exact_max={exact_max}, used relaxation")
        return relax.value, relax.method
    if fired():
        diags.append(f"factor {i + 1}: n={n}: time budget exhausted before the exact search; "
                     "certified relaxation used (result depends on machine load)")
        return relax.value, relax.method
    b = None
    if n <= bnb_max:
        # the frontier limit decides; the deadline only guards against a runaway
        p, q = A.shape[0], B.shape[1]
        gram = max(8000, p * q * min(p, q))  # frontier scaled down for Grams above 20×20
        b, done = factor_bnb(A, B, lo, hi, time_budget=left(),
                             max_nodes=max(64, bnb_nodes * 8000 // gram), incumbent=incumbent)
        if done:
            return b.value, "exact-bnb"
        if fired():
            diags.append(f"factor {i + 1}: n={n}: time budget exhausted during branch and bound; "
                         "certified relaxation used (result depends on machine load)")
            return min(b.value, relax.value), "bnb" if b.value < relax.value else relax.method
    if n <= exact_max:
        try:
            e = factor_exact(A, B, lo, hi, time_budget=left(), progress=progress,
                             incumbent=incumbent)
            return e.value, "exact-enumeration"
        except BudgetExhausted:
            diags.append(f"factor {i + 1}: n={n}: time budget exhausted during enumeration; "
                         "certified relaxation used (result depends on machine load)")
    else:
        diags.append(f"factor {i + 1}: n={n} > exact_max={exact_max}, used branch and bound"
                     " / relaxation")
    if b is not None and b.value < relax.value:
        return b.value, "bnb"
    return relax.value, relax.method


def time_exact_factor(n: int, seed: int = 0, *, p: int | None = None, q: int | None = None,
                      method: str = "enumeration") -> tuple[float, float]:
    """Seconds for one exact SeqLip factor of width n (ReLU box) and its value.

    The factor is that of a random Gaussian chain ``q → n → p`` (defaults p = q = n, the
    hardest shape): ``A = Σ₂V₂ᵀ`` (p×n), ``B = U₁Σ₁`` (n×q). ``method``: ``"enumeration"``
    (:func:`factor_exact`) or ``"bnb"`` (:func:`factor_bnb` without limits).
    """
    rng = np.random.default_rng(seed)
    p = n if p is None else p
    q = n if q is None else q
    (A, B), = seqlip_factors([rng.standard_normal((n, q)), rng.standard_normal((p, n))])
    t = time.perf_counter()
    if method == "bnb":
        b, done = factor_bnb(A, B, 0.0, 1.0, time_budget=None, max_nodes=1 << 40)
        assert done
        v = b.value
    else:
        v = factor_exact(A, B, 0.0, 1.0).value
    return time.perf_counter() - t, v
