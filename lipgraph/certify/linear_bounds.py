"""Backward linear bounds (CROWN, Zhang et al. 2018; design §9, box pass) for the pre-activations
of a chain x → M_1 x + b_1 → φ_1 → M_2 · + b_2 → φ_2 → … on a box lo ≤ x ≤ hi.

Each activation φ_j is relaxed per neuron by two lines on its pre-activation range [l, u]:
a_lo·z + b_lo ≤ φ_j(z) ≤ a_hi·z + b_hi (``Rule.linear_relaxation``). For pre-activation k the
linear function Λ·h_{k−1} + ν is carried back to the input: an upper bound takes each line by the
sign of its coefficient (Λ⁺ on the upper line, Λ⁻ on the lower one), the lower bound the other
way round, then goes through the affine map (ν += Λ b_j, Λ ← Λ M_j); at the input the box is
exact: max Λx = Λ⁺hi + Λ⁻lo. The ranges of pre-activation k need those of 1 … k − 1 (their
relaxations), so they are computed in order; interval arithmetic's ranges are intersected in.

Soundness in floating point: every product is float64; the result is widened by
``MARGIN``·(Σ|Λ||x| + Σ|terms of ν|), about 10⁶ times the rounding error of sums of 10⁴ terms,
which also covers the materialised matrices' own rounding (each entry a short float64 sum).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

MARGIN = 1e-9

#: relax(j, l, u) → (a_lo, b_lo, a_hi, b_hi), arrays over the neurons of activation j.
Relax = Callable[[int, np.ndarray, np.ndarray], tuple]


def crown_preactivations(layers: list[tuple[np.ndarray, np.ndarray]], relax: Relax, lo: np.ndarray, hi: np.ndarray,
                         prior: list[tuple[np.ndarray, np.ndarray]] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(l_k, u_k)], the range of every layer's output M_k h_{k−1} + b_k (h_0 = x, h_k = φ_k of layer
    k's output); ``layers`` = [(M_k, b_k)] dense float64; ``prior``: ranges known already (interval
    arithmetic), intersected with each result."""
    lo, hi = np.asarray(lo, np.float64).reshape(-1), np.asarray(hi, np.float64).reshape(-1)
    mag = np.maximum(np.abs(lo), np.abs(hi))
    out: list[tuple[np.ndarray, np.ndarray]] = []
    relaxations = []
    for k, (m, b) in enumerate(layers):
        ends = []
        for upper in (True, False):
            lam, nu, err = m.copy(), b.astype(np.float64).copy(), np.abs(b).astype(np.float64)
            for j in range(k - 1, -1, -1):
                a_lo, b_lo, a_hi, b_hi = relaxations[j]
                pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
                (a_p, b_p), (a_n, b_n) = ((a_hi, b_hi), (a_lo, b_lo)) if upper else ((a_lo, b_lo), (a_hi, b_hi))
                shift = pos @ b_p + neg @ b_n
                err += np.abs(pos) @ np.abs(b_p) + np.abs(neg) @ np.abs(b_n)
                lam = pos * a_p + neg * a_n
                mj, bj = layers[j]
                nu, err = nu + shift + lam @ bj, err + np.abs(lam) @ np.abs(bj)
                lam = lam @ mj
            pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
            value = nu + (pos @ hi + neg @ lo if upper else pos @ lo + neg @ hi)
            slack = MARGIN * (np.abs(lam) @ mag + err)
            ends.append(value + slack if upper else value - slack)
        u, l = ends
        if prior is not None and k < len(prior):
            l, u = np.maximum(l, prior[k][0]), np.minimum(u, prior[k][1])
        out.append((l, u))
        if k < len(layers) - 1:
            relaxations.append(relax(k, l, u))
    return out
