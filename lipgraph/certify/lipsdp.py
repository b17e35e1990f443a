"""LipSDP on MLP chains — solved, then proven.

Chain f(x) = W_l φ(W_{l−1} … φ(W_1 x)) (biases do not matter), every hidden neuron j of layer h
with slopes in [α_hj, β_hj]. For multipliers λ_h ≥ 0 the slope restriction gives, for any two
inputs, the quadratic constraint Σ_j λ_hj (−p_hj Δv_j² + 2 m_hj Δv_j Δw_j − Δw_j²) ≥ 0 (Δv the
pre-activation, Δw the activation difference; m = (α+β)/2, p = αβ). Hence (Fazlyab et al.,
*Efficient and accurate estimation of Lipschitz constants for deep neural networks*, NeurIPS
2019; design §9): if the block-tridiagonal matrix 𝕄(ρ, Λ) over (Δx_0, …, Δx_{l−1}) with

    (0,0) = ρI + W_1ᵀ P_1Λ_1 W_1,   (h,h) = Λ_h + W_{h+1}ᵀ P_{h+1}Λ_{h+1} W_{h+1} (1 ≤ h ≤ l−2),
    (l−1,l−1) = Λ_{l−1} − W_lᵀW_l,   (h,h−1) = −M_hΛ_h W_h

is positive semidefinite, then ‖f(x) − f(y)‖² ≤ ρ‖x − y‖²: **√ρ is an ℓ2 Lipschitz bound**.
The p term is kept (dropping it is unsound when α < 0, e.g. GELU); α = β (affine neurons) is
allowed. *LipSDP-Neuron* has one λ per neuron, *LipSDP-Layer* one per layer. The coupled
"LipSDP-Network" multipliers are not valid in general and are not offered; softmax is not
elementwise and has no slope range here.

Routes that find (ρ, Λ):
- ``"sdp"``: the SDP min ρ s.t. 𝕄 ⪰ 0 with cvxpy + Clarabel (extra ``lipgraph[sdp]``), for
  small chains (it forms the dense matrix); without them the result has no bound and a note.
- ``"first-order"``: solver-free. For fixed Λ the least ρ has a closed form by eliminating the
  blocks from the back (S_{l−1} = Λ_{l−1} − W_lᵀW_l, S_{h−1} = Λ_{h−1} + W_hᵀ Z_h W_h with
  Z_h = P_hΛ_h − M_hΛ_h S_h⁻¹ Λ_hM_h; ρ_min(Λ) = λ_max(−W_1ᵀ Z_1 W_1) when every S_h ≻ 0); it is
  convex in Λ. We minimise it over log Λ by L-BFGS with a backtracking line search that keeps
  every S_h ≻ 0, in float64 torch (any ``device``), warm-started from ECLipsE-Fast (Xu &
  Sivaranjani, *ECLipsE: Efficient compositional Lipschitz constant estimation for deep neural
  networks*, NeurIPS 2024). Cost per step: l Cholesky factorisations of width n — never the
  dense matrix.
- ``eclipse_fast``: ECLipsE-Fast's closed-form multipliers alone.

**What is proven.** Nothing a route says is trusted. The returned Λ are clipped to ≥ 0 and
ρ′ = ρ(1+δ), δ = 1e-9, 1e-7, 1e-5, 1e-3 in turn (each also pulled slightly into the interior,
see ``certify_multipliers``), is certified only if
``margins.prove_block_tridiagonal`` proves 𝕄(ρ′, Λ) ≻ 0 in float64, with every block's
formation error bounded (products Wᵀ diag(v) W: (k+3)·u·‖W‖_F‖diag(v)W‖_F for inner size k;
each sum one rounding per entry) and m, p rounded so that the quadratic constraint still
holds at both slope ends (see ``quadratic_constraint``). The bound is then √ρ′ rounded up,
labelled ``certified``; if no δ works it is returned labelled ``estimate`` with the reason.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

import lipgraph.budget as budget
from lipgraph.labels import Bound, Label
from lipgraph.certify.threads import single_threaded
from lipgraph.certify.margins import (UNIT, Proof, frobenius_upper, ldexp_up, pow2_normalise,
                                      prove_block_tridiagonal, round_up)

DELTAS = (1e-9, 1e-7, 1e-5, 1e-3)
#: Relative smoothing of λ_max in the first-order route's continuation stages (0: exact).
SMOOTHING = (1e-2, 1e-3, 1e-4, 0.0)
#: How far (in log) the first-order route moves a multiplier from its ECLipsE-Fast start.
RANGE = math.log(1e6)


@dataclass
class LipSDPResult:
    """``bound`` is None only when the route is unavailable (then ``notes`` says why)."""

    bound: Bound | None
    multipliers: list[np.ndarray] = field(default_factory=list)
    rho: float = math.nan
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Chain:
    """Weights W_1 … W_l (float64) and, per hidden layer, the constraint's m and p per neuron."""

    weights: tuple[np.ndarray, ...]
    m: tuple[np.ndarray, ...]
    p: tuple[np.ndarray, ...]

    @property
    def widths(self) -> list[int]:
        """Hidden-layer widths n_1 … n_{l−1}."""
        return [w.shape[0] for w in self.weights[:-1]]


def quadratic_constraint(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 (m, p) with −p + 2m·s − s² ≥ 0 exactly at s = α and s = β, hence on [α, β] (the
    left side is concave in s): m = fl((α+β)/2) and p = min over both ends of s·(2m − s),
    evaluated as fl(s·fl(2m − s)) (relative error < 2.0001u), lowered by 3u of itself and one
    ulp more. It is exact when s = 0 or 2m = s (ReLU keeps p = 0; α = β gives p ≤ α²)."""
    alpha, beta = np.asarray(alpha, np.float64), np.asarray(beta, np.float64)
    m = (alpha + beta) / 2
    ends = []
    for s in (alpha, beta):
        gap = 2 * m - s
        v = s * gap
        ends.append(np.where((s == 0) | (gap == 0), 0.0, np.nextafter(v - 3 * UNIT * np.abs(v), -np.inf)))
    return m, np.minimum(*ends)


def chain(weights: Sequence[np.ndarray], alpha=0.0, beta=1.0) -> Chain:
    """Validate a chain. ``alpha``/``beta``: a scalar for every neuron, or one entry per
    hidden layer, each a scalar or an array of that layer's width."""
    ws = tuple(np.array(w, dtype=np.float64) for w in weights)
    if len(ws) < 2:
        raise ValueError("a chain needs at least two weight matrices (one hidden layer)")
    for i, (w, nxt) in enumerate(zip(ws, ws[1:])):
        if w.ndim != 2 or nxt.ndim != 2 or nxt.shape[1] != w.shape[0]:
            raise ValueError(f"weights {i + 1} and {i + 2} do not chain: {w.shape}, {nxt.shape}")
    if not all(np.isfinite(w).all() for w in ws):
        raise ValueError("weights must be finite")
    widths = [w.shape[0] for w in ws[:-1]]

    def per_layer(v):
        if not isinstance(v, (list, tuple)) and np.ndim(v) == 0:
            return [np.full(n, float(v)) for n in widths]
        if len(v) != len(widths):
            raise ValueError(f"slopes need one entry per hidden layer ({len(widths)}), got {len(v)}")
        return [np.broadcast_to(np.asarray(x, np.float64), (n,)).copy() for x, n in zip(v, widths)]

    ms, ps = [], []
    for a, b in zip(per_layer(alpha), per_layer(beta)):
        if not (np.isfinite(a).all() and np.isfinite(b).all() and (a <= b).all()):
            raise ValueError("slope ranges must be finite with alpha <= beta")
        m, p = quadratic_constraint(a, b)
        ms.append(m)
        ps.append(p)
    return Chain(ws, tuple(ms), tuple(ps))


# ---------------------------------------------------------------------------------- proof


def _weighted_gram(w: np.ndarray, v: np.ndarray | None) -> tuple[np.ndarray, float]:
    """fl(Wᵀ diag(v) W) and a bound on its error: v·W (two roundings with v's own), product."""
    b = w if v is None else v[:, None] * w
    err = (w.shape[0] + 3) * UNIT * frobenius_upper(w) * frobenius_upper(b)
    return w.T @ b, round_up(err, rel=1e-3)


def blocks(ch: Chain, rho: float, lams: Sequence[np.ndarray]):
    """𝕄(ρ, Λ) as (diagonal blocks, sub-diagonal blocks, their error bounds), top-down order:
    block i is Δx_i; ``ws[i]`` is W_{i+1} and ``lams[i]``, ``m[i]``, ``p[i]`` are hidden layer i+1's."""
    ws, l = ch.weights, len(ch.weights)
    diag, diag_err, sub, sub_err = [], [], [], []
    for i in range(l):
        if i < l - 1:
            t, e = _weighted_gram(ws[i], ch.p[i] * lams[i])
        else:
            t, e = _weighted_gram(ws[i], None)
            t = -t
        t[np.diag_indices(t.shape[0])] += rho if i == 0 else lams[i - 1]
        diag.append(t)
        diag_err.append(round_up(e + UNIT * frobenius_upper(t), rel=1e-3))
        if i < l - 1:
            c = -((ch.m[i] * lams[i])[:, None] * ws[i])
            sub.append(c)
            sub_err.append(round_up(3 * UNIT * frobenius_upper(c), rel=1e-3))
    return diag, sub, diag_err, sub_err


def prove(ch: Chain, rho: float, lams: Sequence[np.ndarray]) -> Proof:
    """Prove 𝕄(ρ, Λ) ≻ 0 (so √ρ bounds the chain's Lipschitz constant), eliminating from the
    last block so that ρ's slack is met last, as in the closed form."""
    lams = [np.asarray(x, np.float64) for x in lams]
    if len(lams) != len(ch.widths) or any(x.shape != (n,) for x, n in zip(lams, ch.widths)):
        return Proof(False, "multipliers do not match the hidden layers")
    if not all(np.isfinite(x).all() and (x >= 0).all() for x in lams) or not rho >= 0:
        return Proof(False, "multipliers must be finite and non-negative, rho non-negative")
    diag, sub, diag_err, sub_err = blocks(ch, float(rho), lams)
    return prove_block_tridiagonal(diag[::-1], [c.T for c in sub[::-1]], diag_err[::-1], sub_err[::-1])


def certify_multipliers(ch: Chain, rho: float, lams: Sequence[np.ndarray], method: str,
                        started: float, notes: list[str] | None = None) -> LipSDPResult:
    """The proof after solving: certify √ρ′ for ρ′ = ρ(1+δ), δ growing, or say why not.

    A route's optimum may sit where 𝕄 is barely definite in directions ρ does not reach (an
    S_h nearly singular orthogonally to what the bound sees), too close for a float64 proof.
    Each δ is therefore tried twice: as is, then pulled into the interior by the convex
    combination (1−τ)(ρ(1+δ), Λ) + τ(ρ_s, Λ_s), τ = δ, with the strictly definite point
    ρ_s = 2ρ_E, Λ_s = 2Λ_E from ECLipsE-Fast: 𝕄 is affine in (ρ, Λ), so the combination is
    ⪰ τ𝕄(ρ_s, Λ_s) ≻ 0 whenever 𝕄(ρ(1+δ), Λ) ⪰ 0, at a cost of τ(ρ_s − ρ) in ρ′.
    """
    lams = [np.maximum(np.asarray(x, np.float64), 0.0) for x in lams]
    notes = list(notes or [])
    rho_s, lams_s = eclipse_fast_multipliers(ch)
    floor = math.prod(frobenius_upper(w) for w in ch.weights) ** 2
    proof = Proof(False, "rho is not a finite number")
    for delta in DELTAS if math.isfinite(rho) else ():
        rho_d = rho * (1 + delta) if rho > 0 else delta * floor
        for tau in (0.0, delta):
            rho_p = round_up((1 - tau) * rho_d + tau * 2 * rho_s)
            lams_p = [(1 - tau) * x + tau * 2 * y for x, y in zip(lams, lams_s)] if tau else lams
            proof = prove(ch, rho_p, lams_p)
            if proof:
                bound = Bound(round_up(math.sqrt(rho_p)), Label.CERTIFIED, method)
                return LipSDPResult(bound, lams_p, rho, time.perf_counter() - started, notes)
    notes.append(f"not certified: {proof.reason}")
    value = math.sqrt(rho * (1 + DELTAS[-1])) if math.isfinite(rho) and rho > 0 else math.inf
    return LipSDPResult(Bound(value, Label.ESTIMATE, method), lams, rho, time.perf_counter() - started, notes)


# ------------------------------------------------------------------------- ECLipsE-Fast


def eclipse_fast_multipliers(ch: Chain) -> tuple[float, list[np.ndarray]]:
    """ECLipsE-Fast (Xu & Sivaranjani 2024): eliminate forward from X_0 = I with one λ_h per
    layer, λ_h = 1/(2λ_max(K_h)), K_h = M_h W_h X_{h−1}⁻¹ W_hᵀ M_h, X_h = λ_h I − λ_h² K_h ⪰ λ_h I/2,
    then ρ_E = λ_max(W_l X_{l−1}⁻¹ W_lᵀ); 𝕄(ρ_E, ρ_E Λ) ⪰ 0 by homogeneity. With p < 0 the pivot
    X_{h−1} + λ_h W_hᵀ P_h W_h could lose definiteness: λ_h is then also capped so that the
    pivot stays ⪰ X_{h−1}/2, and K_h is formed with X_{h−1}/2 (which keeps X_h ⪰ λ_h I/2).
    Returns (ρ_E, multipliers ρ_E·λ_h per neuron)."""
    x = np.eye(ch.weights[0].shape[1])
    lams = []
    for w, m, p in zip(ch.weights, ch.m, ch.p):
        neg = np.minimum(p, 0.0)
        xeff = x / 2 if neg.any() else x
        k_hat = (m[:, None] * w) @ np.linalg.solve(xeff, (m[:, None] * w).T)
        top = float(np.linalg.eigvalsh(k_hat)[-1])
        lam = 1.0 / (2 * top) if top > 0 else 1.0
        if neg.any():
            worst = float(np.linalg.eigvalsh(w.T @ (-neg[:, None] * w))[-1])
            if worst > 0:
                lam = min(lam, float(np.linalg.eigvalsh(x)[0]) / (2 * worst))
        pivot = x + lam * (w.T @ (p[:, None] * w))
        k = (m[:, None] * w) @ np.linalg.solve(pivot, (m[:, None] * w).T)
        x = lam * np.eye(w.shape[0]) - lam * lam * k
        lams.append(lam)
    last = ch.weights[-1]
    rho = float(np.linalg.eigvalsh(last @ np.linalg.solve(x, last.T))[-1])
    return rho, [np.full(n, rho * lam) for n, lam in zip(ch.widths, lams)]


def eclipse_fast(weights, alpha=0.0, beta=1.0) -> LipSDPResult:
    """ECLipsE-Fast's closed-form bound, proven like every other (method ``eclipse-fast``)."""
    started = time.perf_counter()
    ch = chain(weights, alpha, beta)
    rho, lams = eclipse_fast_multipliers(ch)
    return certify_multipliers(ch, rho, lams, "eclipse-fast", started)


# ------------------------------------------------------------------ solver-free route


class ClosedForm:
    """ρ_min(Λ) by backward block elimination, in float64 torch, differentiable in Λ.

    The last step is λ_max(−W_1ᵀ Z_1 W_1); when the input is wider than layer 1 it is taken
    as λ_max(F(−Z_1)Fᵀ) with F = Σ Uᵀ from W_1 = UΣVᵀ (same nonzero spectrum, smaller), and 0.
    """

    def __init__(self, ch: Chain, device="cpu"):
        t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
        self.ws = [t(w) for w in ch.weights]
        self.m, self.p = [t(x) for x in ch.m], [t(x) for x in ch.p]
        self.last_gram = self.ws[-1].T @ self.ws[-1]
        w1 = self.ws[0]
        self.wide = w1.shape[1] > w1.shape[0]
        if self.wide:
            u, sigma, _ = torch.linalg.svd(w1, full_matrices=False)
            self.first = sigma[:, None] * u.T
        else:
            self.first = w1.T

    def __call__(self, lams: Sequence[torch.Tensor], smooth: float = 0.0) -> torch.Tensor | None:
        """ρ_min for multipliers ``lams`` (one tensor per hidden layer), None if some S_h ⊁ 0.

        With ``smooth`` = μ > 0, the largest eigenvalue is replaced by μ·log Σ exp(λ_i/μ), a
        smooth upper bound within μ·log n (the optimiser's continuation, never the result)."""
        s = torch.diag(lams[-1]) - self.last_gram
        for h in range(len(lams) - 1, -1, -1):  # lams[h] is hidden layer h+1's
            chol, info = torch.linalg.cholesky_ex(s)
            if int(info) != 0:
                return None
            ml = self.m[h] * lams[h]
            z = torch.diag(self.p[h] * lams[h]) - ml[:, None] * torch.cholesky_inverse(chol) * ml[None, :]
            if h > 0:
                s = torch.diag(lams[h - 1]) + self.ws[h].T @ z @ self.ws[h]
        eigs = torch.linalg.eigvalsh(-(self.first @ z @ self.first.T))
        if self.wide:  # W_1ᵀ Z_1 W_1 has a null space
            eigs = torch.cat([eigs, eigs.new_zeros(1)])
        return smooth * torch.logsumexp(eigs / smooth, 0) if smooth > 0 else eigs.max()


def _lbfgs(fun, x, max_iter: int, tol: float, memory: int = 12):
    """Minimise ``fun`` (returns (value, gradient), value ∞ when infeasible) from a feasible x
    by L-BFGS with Armijo backtracking; stop after 8 steps that each gain < ``tol`` relative."""
    f, g = fun(x)
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    quiet, it = 0, 0
    for it in range(1, max_iter + 1):
        budget.check()
        d = _two_loop(g, pairs)
        slope = float(g @ d)
        if slope >= 0:
            pairs.clear()
            d, slope = -g, -float(g @ g)
        if not pairs:  # first step or reset: 0.5 in log-multiplier, whatever the scale of ρ
            scale = 0.5 / max(float(d.abs().max()), 1e-300)
            d, slope = d * scale, slope * scale
        if -slope <= 1e-3 * tol * abs(f):  # no descent left worth a line search
            return x, f, it
        t = 1.0
        while True:
            f_new, g_new = fun(x + t * d)
            if f_new <= f + 1e-4 * t * slope:
                break
            t *= 0.5
            if t < 1e-6:
                return x, f, it
        step, dg = t * d, g_new - g
        if float(step @ dg) > 1e-12 * float(step.norm() * dg.norm()):
            pairs = (pairs + [(step, dg)])[-memory:]
        gain = (f - f_new) / max(abs(f), 1e-300)
        x, f, g = x + step, f_new, g_new
        quiet = quiet + 1 if gain < tol else 0
        if quiet >= 8:
            break
    return x, f, it


def _two_loop(g: torch.Tensor, pairs) -> torch.Tensor:
    q, coeffs = -g.clone(), []
    for s, y in reversed(pairs):
        a = float(s @ q) / float(s @ y)
        coeffs.append(a)
        q = q - a * y
    if pairs:
        s, y = pairs[-1]
        q = q * (float(s @ y) / float(y @ y))
    for (s, y), a in zip(pairs, reversed(coeffs)):
        q = q + (a - float(y @ q) / float(s @ y)) * s
    return q


def _first_order(ch: Chain, variant: str, device, max_iter: int, tol: float):
    """Minimise ρ_min over log Λ from ECLipsE-Fast's multipliers; returns (ρ, Λ, notes).
    LipSDP-Neuron spends a third of its iterations on LipSDP-Layer first and starts from there.

    log λ = c + R·tanh(φ/R) with c the start and R = log 10⁶: a multiplier moves at most a
    factor 10⁶ from its start. Affine neurons (α = β) gain O(1/λ) from ever larger λ while the
    proof loses u·λ to cancellation in the Schur complements; the cap balances the two.
    """
    closed = ClosedForm(ch, device)
    widths = ch.widths
    rho0, lams0 = eclipse_fast_multipliers(ch)
    # 2Λ_E: strictly inside (𝕄(2ρ_E, 2Λ_E) ≻ 0, see certify_multipliers), where Λ_E itself sits
    # on the boundary and, in deep chains, every S_h is nearly singular there
    eclipse, lams0 = lams0, [2 * x for x in lams0]
    notes, rho1 = [], math.nan
    if variant == "neuron":
        rho1, layer, notes = _first_order(ch, "layer", device, max_iter // 3, tol)
        if math.isfinite(rho1):
            lams0, max_iter = layer, max_iter - max_iter // 3
    sizes = widths if variant == "neuron" else [1] * len(widths)
    centre = torch.cat([torch.log(torch.as_tensor(x, dtype=torch.float64, device=device))
                        if k > 1 else torch.full((1,), math.log(float(x[0])), dtype=torch.float64, device=device)
                        for k, x in zip(sizes, lams0)])

    def unpack(phi):
        logs = centre + RANGE * torch.tanh(phi / RANGE)
        return [part.expand(n) for part, n in zip(torch.split(torch.exp(logs), sizes), widths)]

    def fun(phi, smooth=0.0):
        phi = phi.detach().requires_grad_(True)
        rho = closed(unpack(phi), smooth)
        if rho is None or not torch.isfinite(rho):
            return math.inf, None
        (grad,) = torch.autograd.grad(rho, phi)
        return float(rho.detach()), grad.detach()

    phi = torch.zeros_like(centre)
    for _ in range(40):  # degenerate chains: scale up until every S_h ≻ 0
        if math.isfinite(fun(phi)[0]):
            break
        centre = centre + math.log(2.0)
    else:
        return math.nan, lams0, [f"no feasible start (ECLipsE-Fast rho {rho0:.6g})"]
    iterations = []
    for stage in SMOOTHING:  # continuation on a smoothed λ_max, then the exact one
        mu = stage * fun(phi)[0]
        phi, _, used = _lbfgs(lambda v: fun(v, mu), phi, max_iter // len(SMOOTHING), tol)
        iterations.append(used)
    lams = [part.detach().cpu().numpy().copy() for part in unpack(phi)]
    rho = fun(phi)[0]
    notes = notes + [f"{variant}: L-BFGS {'+'.join(map(str, iterations))} iterations, "
                     f"rho {rho:.8g} (ECLipsE-Fast {rho0:.6g})"]
    if variant == "neuron" and math.isfinite(rho1) and rho1 < rho:  # layer multipliers are neuron ones too
        return rho1, layer, notes + ["the LipSDP-Layer multipliers were better"]
    if not rho <= rho0:  # ECLipsE-Fast's are multipliers of both variants (𝕄(ρ_E, Λ_E) ⪰ 0)
        return rho0, eclipse, notes + ["the ECLipsE-Fast multipliers were better"]
    return rho, lams, notes


# ------------------------------------------------------------------------- SDP route


def _sdp(ch: Chain, variant: str):
    """min ρ s.t. 𝕄(ρ, Λ) ⪰ 0, Λ ≥ 0 with cvxpy + Clarabel (dense matrix: small chains)."""
    try:
        import cvxpy as cp
    except ImportError:
        return None
    ws, widths = ch.weights, ch.widths
    rho = cp.Variable(nonneg=True)
    lams = [cp.Variable(n, nonneg=True) if variant == "neuron" else cp.Variable(nonneg=True) * np.ones(n)
            for n in widths]
    sizes = [ws[0].shape[1]] + widths
    grid = [[np.zeros((a, b)) for b in sizes] for a in sizes]
    l = len(ws)
    for i in range(l):
        if i < l - 1:
            term = ws[i].T @ cp.diag(cp.multiply(ch.p[i], lams[i])) @ ws[i]
        else:
            term = -ws[i].T @ ws[i]
        grid[i][i] = term + (rho * np.eye(sizes[0]) if i == 0 else cp.diag(lams[i - 1]))
        if i < l - 1:
            c = -cp.diag(cp.multiply(ch.m[i], lams[i])) @ ws[i]
            grid[i + 1][i], grid[i][i + 1] = c, c.T
    big = cp.bmat(grid)
    problem = cp.Problem(cp.Minimize(rho), [0.5 * (big + big.T) >> 0])
    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError as exc:
        return math.nan, [np.ones(n) for n in widths], [f"Clarabel failed: {exc}"]
    if rho.value is None:
        return math.nan, [np.ones(n) for n in widths], [f"Clarabel status {problem.status}"]
    values = [np.broadcast_to(np.asarray(lam.value, np.float64), (n,)).copy() for lam, n in zip(lams, widths)]
    return float(rho.value), values, [f"Clarabel status {problem.status}"]


# ---------------------------------------------------------------------------- entry


@single_threaded   # one torch thread: the same multipliers, hence the same bound, whatever the thread count
def lipsdp(weights: Sequence[np.ndarray], alpha=0.0, beta=1.0, *, variant: str = "neuron",
           route: str = "first-order", device="cpu", max_iter: int = 2000, tol: float = 1e-9) -> LipSDPResult:
    """Certified LipSDP bound on ‖f(x) − f(y)‖/‖x − y‖ for the chain ``weights`` (W_1 … W_l,
    shapes (n_h, n_{h−1})) with slopes in [``alpha``, ``beta``] (see ``chain``).

    ``variant``: ``"neuron"`` (λ per neuron) or ``"layer"`` (λ per layer). ``route``:
    ``"first-order"`` (solver-free, torch on ``device``) or ``"sdp"`` (cvxpy + Clarabel; when
    not installed the result's ``bound`` is None and its note says so). The method name is
    ``lipsdp-<variant>/<route>``; the bound is ``certified`` only when proven (module docstring).
    """
    if variant not in ("neuron", "layer") or route not in ("first-order", "sdp"):
        raise ValueError(f"unknown variant {variant!r} or route {route!r}")
    started = time.perf_counter()
    # The bound is homogeneous in each W_i (the slope class is closed under rescaling a layer's
    # input), so it is computed for W_i / c_i (c_i powers of two: exact) and multiplied back.
    scaled = [pow2_normalise(np.asarray(w, dtype=np.float64)) for w in weights]
    scales = [c for _, c in scaled]
    if 0.0 in scales:
        return LipSDPResult(Bound(0.0, Label.EXACT, "zero"), notes=["a weight matrix is zero: the chain is constant"])
    if math.inf in scales:
        return LipSDPResult(Bound(math.inf, Label.CERTIFIED, "overflow"),
                            notes=["a weight matrix is not finite (float64 overflow): no LipSDP bound"])
    result = _lipsdp(chain([w for w, _ in scaled], alpha, beta), variant, route, device, max_iter, tol, started)
    exps = np.cumsum([math.frexp(c)[1] - 1 for c in scales])   # C_i = c_1⋯c_i = 2^exps[i-1]
    if result.bound is not None and exps[-1] != 0:
        # the congruence x_i → C_i x_i maps 𝕄(ρ′, Λ′) of the scaled chain to 𝕄(ρ, Λ)/C_l² of this one
        # with ρ = C_l² ρ′ and Λ_i = (C_l / C_i)² Λ′_i
        result.bound = dataclasses.replace(result.bound, value=ldexp_up(result.bound.value, int(exps[-1])))
        with np.errstate(over="ignore", under="ignore"):
            result.rho = float(np.ldexp(result.rho, 2 * int(exps[-1])))
            result.multipliers = [np.ldexp(x, 2 * int(exps[-1] - e)) for x, e in zip(result.multipliers, exps)]
        result.notes.append(f"computed on the weights scaled by powers of two (product 2^{int(exps[-1])})")
    return result


def _lipsdp(ch: Chain, variant: str, route: str, device, max_iter: int, tol: float, started: float) -> LipSDPResult:
    if route == "sdp":
        solved = _sdp(ch, variant)
        if solved is None:
            return LipSDPResult(None, notes=["sdp route needs cvxpy and clarabel: pip install 'lipgraph[sdp]'"])
    else:
        solved = _first_order(ch, variant, device, max_iter, tol)
    rho, lams, notes = solved
    return certify_multipliers(ch, rho, lams, f"lipsdp-{variant}/{route}", started, notes)
