"""Brute-force references for SeqLip tests: every vertex, written out with numpy.

``boxes[i]`` is the (lo, hi) slope range of activation layer i; W_i maps layer i to i+1.
"""
from __future__ import annotations

import itertools

import numpy as np


def spec(M) -> float:
    return float(np.linalg.norm(M, 2))


def seqlip_bruteforce(Ws, boxes) -> float:
    """Virmaux & Scaman Thm. 3 written out: numpy SVDs, every vertex of every factor."""
    K = len(Ws)
    svds = [np.linalg.svd(W, full_matrices=False) for W in Ws]
    total = 1.0
    for i in range(K - 1):
        U_i, s_i, _ = svds[i]
        _, s_n, Vt_n = svds[i + 1]
        s_in = s_i if i == 0 else np.sqrt(s_i)
        s_out = s_n if i + 1 == K - 1 else np.sqrt(s_n)
        left, right = s_out[:, None] * Vt_n, U_i * s_in[None, :]
        total *= max(spec(left @ (np.array(d)[:, None] * right))
                     for d in itertools.product(boxes[i], repeat=Ws[i].shape[0]))
    return total


def joint_patterns(Ws, boxes) -> float:
    """max over every joint activation pattern of ‖W_K D_{K−1} ⋯ D_1 W_1‖ (≥ the true constant)."""
    widths = [W.shape[0] for W in Ws[:-1]]
    best = 0.0
    for pattern in itertools.product((0, 1), repeat=sum(widths)):
        J, pos = Ws[0], 0
        for i, w in enumerate(widths):
            lo, hi = boxes[i]
            d = np.where(np.array(pattern[pos:pos + w]) == 1, hi, lo)
            pos += w
            J = Ws[i + 1] @ (d[:, None] * J)
        best = max(best, spec(J))
    return best


def factor_vertices(A, B, lo, hi, chunks: int = 16) -> float:
    """max over every vertex d of the box [lo, hi]^n of ‖A diag(d) B‖₂: all 2^n vertices,
    batched numpy SVDs (n = 16 takes about a second)."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    n = A.shape[1]
    lo, hi = np.broadcast_to(np.asarray(lo, dtype=np.float64), (n,)), np.broadcast_to(np.asarray(hi, dtype=np.float64), (n,))
    bits = ((np.arange(1 << n)[:, None] >> np.arange(n)) & 1).astype(np.float64)
    best = 0.0
    for chunk in np.array_split(bits, chunks):
        D = lo + chunk * (hi - lo)
        best = max(best, float(np.linalg.norm(np.einsum("pn,kn,nq->kpq", A, D, B), 2, axis=(1, 2)).max()))
    return best
