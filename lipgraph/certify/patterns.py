"""Which activation patterns an input box realises — proven infeasible, never guessed.

Setting: the first activation of a chain reads ``z = G x + c`` (G n×m, the chain's first affine
segment materialised in float64) and its entry ``x`` lies in a box ``[l, u]`` (the domain, or the
box pass's range of the chain's entry). Each neuron j is piecewise linear with one kink at
``a_j`` (ReLU, LeakyReLU, PRelu): its slope is one end of its slope range for ``z_j ≥ a_j`` and the
other for ``z_j ≤ a_j``. A *partial pattern* fixes the side of some neurons; it is realisable when
some ``x ∈ [l, u]`` puts every fixed neuron on its side (closed half-spaces, so patterns met only
on a kink count too — a superset of the patterns of the open regions, which is what soundness
needs: on a convex box the Lipschitz constant is the largest ‖J‖ over those regions).

**Proof of infeasibility.** Write the fixed neurons' constraints as ``S x ≤ h`` (row j:
``−σ_j g_j`` with ``h_j = σ_j(c_j − a_j) + τ_j``, σ_j = ±1 the side). The slack
``τ_j = 10⁻⁹ (Σ_i |g_ji| max(|l_i|, |u_i|) + |c_j − a_j|) + 10⁻³⁰⁰`` only *enlarges* the set, and
covers, with a wide margin, the float64 rounding between the materialised ``G, c`` and the
network's exact affine map. HiGHS solves ``min t s.t. S x − t·1 ≤ h, x ∈ [l, u]``; when it reports
``t* > 0`` its duals give ``y ≥ 0`` with ``min_{x ∈ [l, u]} yᵀS x − yᵀh > 0`` (Farkas), and any
feasible x would give ``yᵀ(Sx − h) ≤ 0`` — a contradiction. lipgraph does not trust the solver's
verdict: it recomputes that inequality from ``y`` in float64 with a bound on every rounding
(``_farkas_margin``) and declares the pattern unrealisable only when the margin is positive.
Anything else — solver failure, ``t* ≤ 0``, a margin that does not prove — means "realisable",
which can only make the bound larger, never unsound.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from lipgraph.certify.margins import UNIT

#: Relative slack τ added to every constraint (see the module docstring).
SLACK = 1e-9
#: Linear programs per oracle (a few ms each); past them every query is admitted, so the
#: result depends only on the inputs, never on timing.
MAX_PROGRAMS = 4000
#: Inputs kept from feasible linear programs: a query one of them satisfies needs no program.
WITNESSES = 64


class SignPatterns:
    """Realisability of partial sign patterns of ``z = G x + c`` over ``x ∈ [lo, hi]``.

    ``at``: the kink per neuron; ``max_programs``: linear programs before every further query is
    admitted (:attr:`exhausted` then says so); ``hi_above``: per neuron, True when the slope range's upper end
    is the slope for ``z ≥ at`` (ReLU: True). :meth:`realisable` takes sides per neuron — +1 for
    "slope fixed at its upper end", −1 "at its lower end", 0 free — and answers per row;
    :meth:`drain` hands over the full patterns of the inputs its feasible programs found.
    """

    def __init__(self, G, c, lo, hi, at, hi_above, max_programs: int = MAX_PROGRAMS):
        self.G = np.asarray(G, dtype=np.float64)
        n, m = self.G.shape
        self.c = np.broadcast_to(np.asarray(c, dtype=np.float64), (n,)) - np.broadcast_to(
            np.asarray(at, dtype=np.float64), (n,))
        self.lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (m,)).copy()
        self.hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (m,)).copy()
        self.orient = np.where(np.broadcast_to(np.asarray(hi_above, dtype=bool), (n,)), 1.0, -1.0)
        xmax = np.maximum(np.abs(self.lo), np.abs(self.hi))
        self.tau = SLACK * (np.abs(self.G) @ xmax + np.abs(self.c)) + 1e-300
        self.cache: dict[bytes, bool] = {}
        self.witnesses = np.empty((0, m))   # inputs of the box that realised earlier queries
        self.found: list[np.ndarray] = []     # their patterns, not yet collected by ``drain``
        self.best: tuple[float, np.ndarray] | None = None   # the search's best admitted pattern
        self.lps, self.max_programs = 0, max_programs

    def realisable(self, sides) -> np.ndarray:
        """One bool per row of ``sides`` (N × n, values in {−1, 0, +1}): False only when proven
        that no x in the box realises the row's fixed sides."""
        sides = np.atleast_2d(np.asarray(sides, dtype=np.int8))
        out = np.ones(sides.shape[0], dtype=bool)
        for k, row in enumerate(sides):
            key = row.tobytes()
            if key not in self.cache:
                self.cache[key] = self._realisable(row)
            out[k] = self.cache[key]
        return out

    @property
    def exhausted(self) -> bool:
        return self.lps >= self.max_programs

    def drain(self) -> np.ndarray:
        """Full patterns (k × n sides) realised by the inputs found since the last call: each is
        the pattern of an actual point of the box, so its value is a realised incumbent."""
        out = np.array(self.found, dtype=np.int8).reshape(-1, self.G.shape[0])
        self.found = []
        return out

    def incumbent(self, sides, value: float) -> None:
        """The search's best admitted pattern so far (its value and sides)."""
        if self.best is None or value > self.best[0]:
            self.best = (value, np.asarray(sides, dtype=np.int8).copy())

    def interior(self, sides) -> tuple[np.ndarray, float] | None:
        """(x, r): a point of the box whose ℓ2 ball of radius r > 0 lies in the box and inside the
        open region of the pattern ``sides`` (neurons with side 0 unconstrained; the Chebyshev
        centre, by one program), or None when the region has no interior there. A pair of points
        of that ball realises the pattern's Jacobian (the network is affine on it)."""
        sides = np.asarray(sides, dtype=np.float64)
        on = np.flatnonzero(sides)       # neurons with no side (stable, or without influence) are free
        sigma = sides[on] * self.orient[on]
        m = self.G.shape[1]
        norms = np.linalg.norm(self.G[on], axis=1)
        # max r: σ_j(g_j·x + c_j) ≥ r‖g_j‖ + τ_j, lo + r ≤ x ≤ hi − r
        A = np.r_[np.c_[-sigma[:, None] * self.G[on], norms], np.c_[-np.eye(m), np.ones(m)],
                  np.c_[np.eye(m), np.ones(m)]]
        b = np.r_[sigma * self.c[on] - self.tau[on], -self.lo, self.hi]
        res = linprog(np.r_[np.zeros(m), -1.0], A_ub=A, b_ub=b, bounds=[(None, None)] * m + [(0, None)],
                      method="highs")
        if res.status != 0 or not res.x[m] > 0:
            return None
        return res.x[:m], float(res.x[m])

    def sides_at(self, x) -> np.ndarray:
        """The sides (+1/−1 per neuron, as in :meth:`realisable`) of the pattern at input ``x``."""
        z = self.G @ np.asarray(x, dtype=np.float64) + self.c
        return np.where(z >= 0, 1, -1).astype(np.int8) * self.orient.astype(np.int8)

    def _realisable(self, side: np.ndarray) -> bool:
        fixed = np.flatnonzero(side)
        if fixed.size == 0:
            return True
        sigma = side[fixed] * self.orient[fixed]            # +1: z_j ≥ a_j, −1: z_j ≤ a_j
        S = -sigma[:, None] * self.G[fixed]
        h = sigma * self.c[fixed] + self.tau[fixed]
        if self.witnesses.size and (self.witnesses @ S.T <= h).all(1).any():
            return True   # an earlier input realises it (saying so is always sound)
        m = self.G.shape[1]
        if self.lps >= self.max_programs:
            return True   # out of programs: admit (the bound only gets looser)
        self.lps += 1
        res = linprog(np.r_[np.zeros(m), 1.0], A_ub=np.c_[S, -np.ones(fixed.size)], b_ub=h,
                      bounds=[*zip(self.lo, self.hi), (None, None)], method="highs")
        if res.status != 0 or not res.fun > 0 or res.ineqlin is None:
            if res.status == 0:
                x = np.clip(res.x[:m], self.lo, self.hi)
                self.witnesses = np.vstack([x, self.witnesses])[:WITNESSES]
                self.found.append(self.sides_at(x))
            return True
        y = np.maximum(-np.asarray(res.ineqlin.marginals, dtype=np.float64), 0.0)
        return not _farkas_margin(y, S, h, self.lo, self.hi) > 0


def _farkas_margin(y, S, h, lo, hi) -> float:
    """A lower bound on ``min_{x ∈ [lo, hi]} yᵀS x − yᵀh`` for y ≥ 0, every float64 rounding
    covered: positive proves ``S x ≤ h`` has no solution in the box.

    With g = fl(yᵀS) (|fl − exact| ≤ γ_k·|y|ᵀ|S| entrywise, k rows), each ``min(g_i lo_i,
    g_i hi_i)`` and the sums are within γ_{m+k+2} of their exact values relative to the sum of
    absolute terms; we subtract ``4(m + k + 4)·u`` times those sums — more than the γ's — and
    twice the smallest normal times m + k (underflow)."""
    k, m = S.shape
    g = y @ S
    xmax = np.maximum(np.abs(lo), np.abs(hi))
    low = float(np.minimum(g * lo, g * hi).sum()) - float(y @ h)
    scale = float((y @ np.abs(S)) @ xmax) + float(np.abs(g) @ xmax) + float(y @ np.abs(h))
    return low - 4 * (m + k + 4) * UNIT * scale - 2 * (m + k) * np.finfo(np.float64).tiny
