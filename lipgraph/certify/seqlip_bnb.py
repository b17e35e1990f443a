"""Exact SeqLip factor by branch and bound with a Lagrangian (AM–GM / S-lemma) node bound.

The factor is ``F = max_{d ∈ [lo, hi]} ‖A diag(d) B‖₂`` (A p×n, B n×q; see
:mod:`lipgraph.certify.seqlip`); by convexity it is attained at a vertex ``d_j ∈ {lo_j, hi_j}``.
Write ``a_j`` for column j of A, ``b_j`` for row j of B, ``m = (lo+hi)/2``, ``r = (hi−lo)/2``.

**Node bound.** A node fixes the coordinates S (values ``d_S``) and leaves F free. Every free
``d_j = m_j + r_j e_j`` with ``|e_j| ≤ 1``, so for unit u, v and any ``t ∈ (0, ∞)^F``::

    uᵀXv = uᵀX_c v + Σ_F r_j e_j (a_jᵀu)(b_jᵀv)
         ≤ uᵀX_c v + ½ Σ_F r_j (t_j (a_jᵀu)² + (b_jᵀv)²/t_j)          (AM–GM)
         = ½ zᵀ M(t) z ≤ λ_max(M(t)),       z = (u, v), ‖z‖² = 2,

    M(t) = [[P, X_c], [X_cᵀ, Q]],  X_c = Σ_S d_j a_j b_jᵀ + Σ_F m_j a_j b_jᵀ,
    P = Σ_F r_j t_j a_j a_jᵀ,      Q = Σ_F (r_j/t_j) b_j b_jᵀ

(``λ_max(M) ≥ 0`` as ``tr M ≥ 0``). Maximising over u, v: every completion of the node has
``‖X‖ ≤ λ_max(M(t))`` for *every* t — the choice of t only decides how tight the bound is.
``M`` is a sum of PSD matrices times ``e^{±log t_j}``, so ``λ_max(M(t))`` is convex in
``log t``; AM–GM is tight at ``t_j = |b_jᵀv|/|a_jᵀu|`` for the top eigenvector ``(u, v)``,
and each node takes damped steps towards that fixed point (step halved when the bound does
not drop, grown by 1.5 when it does), warm-started from its parent. The root starts at
``t_j = c‖b_j‖/‖a_j‖`` with c making ``‖P‖ = ‖Q‖``, where the bound is already at most the
split bound of :func:`~lipgraph.certify.seqlip.factor_relaxation`,
``‖X_c‖ + ‖A diag √(r t)‖‖diag √(r/t) B‖`` (``λ_max`` of the block matrix is at most
``‖X_c‖ + max(‖P‖, ‖Q‖)``). A child fixing ``d_j = m_j ∓ r_j`` has, at the parent's t,
``M_parent − M_child = r_j w wᵀ ⪰ 0`` with ``w = (√t_j a_j, ∓b_j/√t_j)``, so it keeps
``min(own bound, parent's bound)``. Leaves (nothing free) are vertices: ``λ_max = ‖X‖``.

**Floating point** (u = 2⁻⁵³, no over/underflow). m and r are rounded, but every end
``d_j ∈ {lo_j, hi_j}`` has ``|d_j − m̂_j| ≤ r̂_j + 2u·s_j`` (s = max(|lo|, |hi|)), so the proof
above holds with an extra ``2u·x``, ``x = Σ_j s_j‖a_j‖‖b_j‖``. The computed ``M̂`` differs from
``M(t)`` (for the float t actually used, ``r̂_j t_j`` and ``r̂_j/t_j`` rounded inside) entrywise
by at most ``γ_{n+2}`` times the same sums in absolute value, whose Frobenius norms are at most
``x``, ``tr P`` and ``tr Q``; the computed top eigenvalue of ``M̂`` is within
``c·(p+q)·u·‖M̂‖₂`` of the true one (backward stable symmetric eigensolver, modest c; eigh
reads one triangle, whose entries obey the same bound). Each node bound is therefore taken
as ``λ̂ + 10⁻¹⁴·((p+q)‖M̂‖_F + (n+2)(x + tr P̂ + tr Q̂))`` — about 90 unit roundoffs per
term, far above ``γ_{n+2} + 2u`` and LAPACK's c — and the final value is further rounded up
by ``certify`` (relative 1e-8).

**Search.** Coordinates with ``r_j‖a_j‖‖b_j‖ = 0`` cannot change X and are fixed. Each node
branches on its free coordinate with the largest ``r_j|a_jᵀu||b_jᵀv|`` at the top eigenvector of
its best M — the largest term the relaxation had to cover (measured: 2–5× fewer nodes than the
static order by ``r_j‖a_j‖‖b_j‖`` at n = 32–48, Gaussian factors). Best-first in batches (the ``batch`` open nodes
with the largest bounds, ties broken by a stable sort). Incumbent: coordinate-flip greedy from
the largest-|slope| vertex, then at every evaluated node the vertex its top eigenvector
suggests (free ``d_j = hi_j`` where ``(a_jᵀu)(b_jᵀv) > 0``, else ``lo_j``) — the best of a batch,
when it beats the incumbent, is polished by coordinate flips. A node is pruned when its bound is
at most ``incumbent·(1 + rtol)``; every value the search reports is ``certified``:
``max(incumbent·(1 + rtol), largest open bound)``, exact (up to rtol and certify's margin)
when no node is left (``done``). The search stops before the next batch once ``max_nodes``
nodes have been evaluated (deterministic: the same inputs give the same value) or, as a safety
net only, once ``time_budget`` seconds have passed (reported in ``stopped``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

import lipgraph.budget as budget
from lipgraph.labels import Bound, Label, certify
from lipgraph.certify.seqlip import (
    OverMemory,
    _box,
    _greedy_from,
    _norm2,
    _norm2_batch,
    _oriented,
    factor_exact,
)
from lipgraph.certify.threads import single_threaded

__all__ = ["BnbResult", "factor_bnb_lagrangian", "factor_exact_auto", "ENUM_MAX"]

_DT = torch.float64
#: Widest factor for which :func:`factor_exact_auto` enumerates vertices instead (measured on
#: Gaussian n×n factors: enumeration is faster up to n = 16, branch and bound from n = 20).
ENUM_MAX = 18
#: Relative slack of the per-node rounding term (see the module docstring).
_EPS = 1e-14
#: Suggested vertices offered to a realisability oracle per batch (best first).
_ORACLE_TRIES = 4
#: ``log t`` stays within this distance of its starting value (keeps P, Q finite).
_LOG_T_RANGE = 30.0


@dataclass(frozen=True)
class BnbResult:
    """Outcome of :func:`factor_bnb_lagrangian`.

    ``bound``: certified upper bound on the factor; ``done``: the tree was exhausted, so
    ``bound`` is the exact maximum up to ``rtol`` and certify's margin; ``lower``: the best
    realised vertex value found (a lower bound on the factor, not certified); ``vertex``: that
    vertex (None when a supplied incumbent was never beaten); ``nodes``: node bounds evaluated;
    ``open``: nodes left; ``seconds``; ``stopped``: "" (done), "nodes" or "seconds".
    """

    bound: Bound
    done: bool
    lower: float
    vertex: torch.Tensor | None
    nodes: int
    open: int
    seconds: float
    stopped: str


class _Problem:
    """One factor with its coordinates permuted: the ``k`` branchable ones first, by decreasing
    influence ``r_j‖a_j‖‖b_j‖``; the rest cannot move X and are fixed (``lo = hi``) at the
    largest-|slope| end."""

    def __init__(self, A, B, lo, hi):
        A, B = _oriented(A, B)
        self.p, self.n = A.shape
        self.q = B.shape[1]
        lo, hi = _box(lo, hi, self.n)
        ca, rb = torch.linalg.vector_norm(A, dim=0), torch.linalg.vector_norm(B, dim=1)
        influence = (hi - lo) / 2 * ca * rb
        self.perm = torch.argsort(influence, descending=True, stable=True)
        self.k = k = int((influence > 0).sum())
        self.A, self.B = A[:, self.perm].contiguous(), B[self.perm].contiguous()
        lo, hi, ca, rb = lo[self.perm], hi[self.perm], ca[self.perm], rb[self.perm]
        lo[k:] = hi[k:] = torch.where(hi.abs() >= lo.abs(), hi, lo)[k:]
        self.lo, self.hi = lo, hi
        self.m, self.r = (lo + hi) / 2, (hi - lo) / 2
        self.x = float((torch.maximum(lo.abs(), hi.abs()) * ca * rb).sum())  # see "Floating point"
        # start t_j = c‖b_j‖/‖a_j‖, c balancing ‖A diag √(r t)‖ = ‖diag √(r/t) B‖ (branched part)
        self.log_t0 = torch.zeros(self.n, dtype=_DT)
        if k:
            t = rb[:k] / ca[:k]
            c = (_norm2((self.r[:k] / t).sqrt()[:, None] * self.B[:k])
                 / _norm2(self.A[:, :k] * (self.r[:k] * t).sqrt()[None, :]))
            self.log_t0[:k] = (c * t).log()

    def bounds(self, dc: torch.Tensor, free: torch.Tensor, log_t: torch.Tensor,
               eta: torch.Tensor, iters: int):
        """Certified node bounds of a batch; returns (bound, log_t, eta, suggested vertex,
        branching coordinate).

        ``dc`` (N, n): fixed values where ``free`` (N, n) is False, centres where it is True.
        Every bound includes the rounding slack of the module docstring.
        """
        A, B, p, q = self.A, self.B, self.p, self.q
        N = dc.shape[0]
        rf = self.r[None, :] * free
        M = torch.zeros(N, p + q, p + q, dtype=_DT)
        X = A[None] * dc[:, None, :] @ B
        M[:, :p, p:] = X
        M[:, p:, :p] = X.transpose(1, 2)
        best = torch.full((N,), math.inf, dtype=_DT)
        best_lt, target, sign, score = log_t, log_t, None, None
        lt = log_t
        for it in range(iters):
            budget.check()
            t = lt.exp()
            P = A[None] * (rf * t)[:, None, :] @ A.T
            Q = B.T[None] * (rf / t)[:, None, :] @ B
            M[:, :p, :p] = P
            M[:, p:, p:] = Q
            w, V = torch.linalg.eigh(M)
            trace = P.diagonal(dim1=1, dim2=2).sum(-1) + Q.diagonal(dim1=1, dim2=2).sum(-1)
            slack = _EPS * ((p + q) * torch.linalg.matrix_norm(M) + (self.n + 2) * (self.x + trace))
            val = w[:, -1] + slack
            z = V[:, :, -1]
            au, bv = (z[:, :p] @ A), (z[:, p:] @ B.T)
            better = val < best
            if it:
                eta = torch.where(better, (eta * 1.5).clamp(max=1.0), eta / 2)
            best = torch.where(better, val, best)
            best_lt = torch.where(better[:, None], lt, best_lt)
            a, b = au.abs(), bv.abs()
            fp = (b + 1e-9 * b.amax(1, keepdim=True)).log() - (a + 1e-9 * a.amax(1, keepdim=True)).log()
            target = torch.where(better[:, None], fp, target)
            s = au * bv > 0
            sign = s if sign is None else torch.where(better[:, None], s, sign)
            sc = torch.where(free, self.r * a * b, -1.0)
            score = sc if score is None else torch.where(better[:, None], sc, score)
            lt = best_lt + eta[:, None] * (target - best_lt)
            lt = torch.minimum(torch.maximum(lt, self.log_t0 - _LOG_T_RANGE), self.log_t0 + _LOG_T_RANGE)
        vertex = torch.where(free, torch.where(sign, self.hi, self.lo), dc)
        return best, best_lt, eta, vertex, score.argmax(1)

    def polish(self, d: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Coordinate-flip local search from vertex ``d`` (a realised value and its vertex)."""
        return _greedy_from(self.A, self.B, self.lo, self.hi, d, candidates=64, max_steps=2 * self.n + 10)


@single_threaded
def factor_bnb_lagrangian(A, B, lo, hi, *, max_nodes: int = 1 << 16, time_budget: float | None = None,
                          incumbent: float | None = None, progress: Callable[[str], None] | None = None,
                          batch: int = 256, iters: int = 3, root_iters: int = 30,
                          rtol: float = 1e-9, oracle=None) -> BnbResult:
    """Anytime exact ``max_{d ∈ [lo, hi]} ‖A diag(d) B‖₂`` by branch and bound.

    Bound and proof: see the module docstring (Lagrangian node bound, rounding slack,
    pruning at ``incumbent·(1 + rtol)``). ``incumbent`` must be a realised vertex value (a
    lower bound on the factor) — a larger value would make the result unsound. ``iters``
    eigen-decompositions per node (``root_iters`` at the root). ``progress`` gets a line about
    once a second. The returned ``bound`` is ``certified`` whether or not the search finished.

    ``oracle`` restricts the maximum to the vertices it admits (an input box's activation
    patterns, :class:`lipgraph.certify.patterns.SignPatterns`): ``oracle.realisable`` maps sides
    per original coordinate (N × n, +1 fixed at ``hi``, −1 at ``lo``, 0 free) to one bool per row,
    False only for proven unrealisable ones; ``oracle.drain()`` returns full patterns realised
    by actual inputs; ``oracle.incumbent(sides, value)`` hears of each new incumbent. Children it rejects are dropped (no completion is admitted); only vertices
    it admits become incumbents — realisable leaves, drained patterns, and the best suggested
    vertex of each batch when admitted (no coordinate-flip polish). ``incumbent`` must then be
    the value of an admitted vertex.
    """
    t0 = time.perf_counter()
    pr = _Problem(A, B, lo, hi)
    if pr.p == 0 or pr.q == 0 or pr.n == 0:
        return BnbResult(Bound(0.0, Label.CERTIFIED, "exact-bnb"), True, 0.0, None, 0, 0, 0.0, "")
    if oracle is None:
        lower, vbest = pr.polish(torch.where(pr.hi.abs() >= pr.lo.abs(), pr.hi, pr.lo))
    else:
        lower, vbest = 0.0, None
    inc = max(lower, incumbent or 0.0)

    def sides(dc: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        fixed = ~free
        fixed[:, pr.k:] = False   # the unbranchable coordinates have lo = hi
        s = torch.where(fixed, torch.where(dc == pr.hi, 1, -1), 0).to(torch.int8)
        out = torch.empty_like(s)
        out[:, pr.perm] = s
        return out

    def admitted(dc: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(oracle.realisable(sides(dc, free).numpy()))

    def collect() -> None:
        """Offer the patterns the oracle's inputs realised (as vertices in permuted order)."""
        found = torch.from_numpy(oracle.drain()).to(torch.int64)
        if found.numel():
            verts = torch.where(found[:, pr.perm] > 0, pr.hi, pr.lo)
            offer(_norm2_batch(pr.A[None] * verts[:, None, :] @ pr.B), verts,
                  known=torch.ones(verts.shape[0], dtype=torch.bool))

    def offer(vals: torch.Tensor, verts: torch.Tensor, known: torch.Tensor | None = None) -> None:
        """Raise the incumbent: polished best vertex, or with an oracle the best admitted one
        (``known``: rows already admitted; else the top suggestions are asked, a few at most)."""
        nonlocal lower, vbest, inc
        if oracle is None:
            i = int(torch.argmax(vals))
            if float(vals[i]) > lower:
                lower, vbest = pr.polish(verts[i])
                inc = max(inc, lower)
            return
        order = torch.sort(torch.where(known, vals, -math.inf) if known is not None else vals,
                           descending=True, stable=True).indices
        for i in order[:1 if known is not None else _ORACLE_TRIES].tolist():
            v = float(vals[i])
            if v <= lower or (known is not None and not bool(known[i])):
                break
            if known is not None or bool(admitted(verts[i:i + 1], torch.zeros_like(verts[i:i + 1], dtype=torch.bool))[0]):
                lower, vbest, inc = v, verts[i], max(inc, v)
                oracle.incumbent(sides(verts[i:i + 1], torch.zeros_like(verts[i:i + 1], dtype=torch.bool))[0].numpy(), v)
                break

    dc = pr.m[None].clone()
    free = (torch.arange(pr.n) < pr.k)[None]
    bound, log_t, eta, vert, br = pr.bounds(dc, free, pr.log_t0[None], torch.full((1,), 0.3, dtype=_DT),
                                        root_iters)
    offer(_norm2_batch(pr.A[None] * vert[:, None, :] @ pr.B), vert)
    if oracle is not None:
        collect()
    nodes, stopped, last = 1, "", t0
    if pr.k == 0:  # nothing to branch on: the root is the only vertex
        dc, free, br, log_t, eta, bound = dc[:0], free[:0], br[:0], log_t[:0], eta[:0], bound[:0]
    while True:
        budget.check()
        keep = bound > inc * (1 + rtol)
        dc, free, br, log_t, eta, bound = dc[keep], free[keep], br[keep], log_t[keep], eta[keep], bound[keep]
        if bound.numel() == 0:
            break
        if nodes >= max_nodes:
            stopped = "nodes"
            break
        if time_budget is not None and time.perf_counter() - t0 > time_budget:
            stopped = "seconds"
            break
        now = time.perf_counter()
        if progress is not None and now - last >= 1.0:
            ub = max(inc * (1 + rtol), float(bound.max()))
            progress(f"seqlip bnb n={pr.n}: {nodes} nodes, {bound.numel()} open, incumbent "
                     f"{inc:.9g}, bound {ub:.9g}, gap {ub / inc - 1 if inc > 0 else math.inf:.2e}")
            last = now
        order = torch.sort(bound, descending=True, stable=True).indices
        take, rest = order[:batch], order[batch:]
        j = br[take]
        cdc = torch.cat([dc[take], dc[take]])
        rows = torch.arange(cdc.shape[0])
        cdc[rows, torch.cat([j, j])] = torch.cat([pr.lo[j], pr.hi[j]])
        cfree = torch.cat([free[take], free[take]])
        cfree[rows, torch.cat([j, j])] = False
        cb, clt, ceta, cvert, cbr = pr.bounds(cdc, cfree, torch.cat([log_t[take]] * 2),
                                         torch.cat([eta[take]] * 2), iters)
        cb = torch.minimum(cb, torch.cat([bound[take]] * 2))
        nodes += cdc.shape[0]
        vals = _norm2_batch(pr.A[None] * cvert[:, None, :] @ pr.B)
        inner = cfree.any(1)  # leaves are vertices: their value goes to the incumbent
        if oracle is not None:
            ok = admitted(cdc, cfree)
            cb = torch.where(ok, cb, -math.inf)
            offer(vals, cvert, known=ok & ~inner)   # a leaf's suggested vertex is the leaf
        offer(vals, cvert)
        if oracle is not None:
            collect()
        dc = torch.cat([dc[rest], cdc[inner]])
        free = torch.cat([free[rest], cfree[inner]])
        br = torch.cat([br[rest], cbr[inner]])
        log_t = torch.cat([log_t[rest], clt[inner]])
        eta = torch.cat([eta[rest], ceta[inner]])
        bound = torch.cat([bound[rest], cb[inner]])
    done = bound.numel() == 0
    value = max(inc * (1 + rtol), float(bound.max()) if not done else 0.0)
    vertex = None
    if vbest is not None and lower >= inc:
        vertex = torch.empty_like(vbest)
        vertex[pr.perm] = vbest
    return BnbResult(Bound(certify(value), Label.CERTIFIED, "exact-bnb" if done else "bnb"), done,
                     lower, vertex, nodes, int(bound.numel()), time.perf_counter() - t0, stopped)


def factor_exact_auto(A, B, lo, hi, *, enum_max: int = ENUM_MAX, max_nodes: int = 1 << 16,
                      time_budget: float | None = None, incumbent: float | None = None,
                      progress: Callable[[str], None] | None = None,
                      oracle=None) -> tuple[Bound, bool]:
    """The exact factor by the faster method: vertex enumeration
    (:func:`~lipgraph.certify.seqlip.factor_exact`) when ``n ≤ enum_max`` and no ``oracle``
    restricts the vertices, else :func:`factor_bnb_lagrangian`. Returns ``(certified bound, exact)``; ``exact`` is False
    only when branch and bound stopped at ``max_nodes`` or ``time_budget`` (the bound is then
    its anytime value). Enumeration raises :class:`~lipgraph.certify.seqlip.BudgetExhausted`
    when ``time_budget`` runs out, and either search before it starts when its tables would exceed
    the memory limit (``lipgraph.budget``, with a note).
    """
    oa, ob = _oriented(A, B)
    n, pq = oa.shape[1], oa.shape[0] + ob.shape[1]
    half = n - n // 2   # enumeration: vertex tables of 2^half rows and their degree-3 moment features
    enumerate_ = n <= enum_max and oracle is None
    need = 8 * 4 * 2 ** half * math.comb(half + 3, 3) if enumerate_ else 8 * 4 * 2 * 256 * pq * pq
    if not budget.fits(need, f"the exact SeqLip search at n={n}", "the certified relaxation instead"):
        raise OverMemory(f"exact search n={n}: over the memory limit", incumbent or 0.0)
    if enumerate_:
        return factor_exact(A, B, lo, hi, time_budget=time_budget, progress=progress,
                            incumbent=incumbent), True
    res = factor_bnb_lagrangian(A, B, lo, hi, max_nodes=max_nodes, time_budget=time_budget,
                                incumbent=incumbent, progress=progress, oracle=oracle)
    return res.bound, res.done
