"""Box arithmetic (design §9, box pass): value ranges as pairs ``(lo, hi)`` of float64 torch
tensors, ±inf where nothing is known, and the derivative ranges that give local slopes.

Soundness: every function returns a superset of the true range of the real-valued operation.
Results computed in float64 are widened outward by :func:`widen` (a relative margin ``REL``
plus the smallest normal number), which covers the rounding of float64 evaluations of sums of
up to ~10⁶ terms. NaN (an operation undefined somewhere on the box, 0·∞) becomes the whole
line, never a number.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

#: Relative outward margin of every float64 range.
REL = 1e-10
_TINY = 2.2250738585072014e-308

Interval = tuple  # (lo, hi) torch tensors


def unknown(shape, like: torch.Tensor | None = None) -> Interval:
    """The whole real line for every entry of ``shape``."""
    lo = torch.full(tuple(shape), -math.inf, dtype=torch.float64)
    return lo, -lo


def as_float(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64) if t.is_floating_point() else t


def widen(lo: torch.Tensor, hi: torch.Tensor, rel: float = REL) -> Interval:
    """Outward rounding of a float64 range; NaN ends become ∓inf; non-float tensors unchanged."""
    if not lo.is_floating_point():
        return lo, hi
    lo, hi = as_float(lo), as_float(hi)
    lo = torch.where(torch.isnan(lo), -math.inf, lo - rel * lo.abs() - _TINY)
    hi = torch.where(torch.isnan(hi), math.inf, hi + rel * hi.abs() + _TINY)
    return lo, hi


def hull(*values: torch.Tensor) -> Interval:
    """(min, max) entrywise over candidate values (NaN in any candidate: the whole line)."""
    stacked = torch.stack(torch.broadcast_tensors(*values))
    bad = torch.isnan(stacked).any(0)
    lo, hi = stacked.amin(0), stacked.amax(0)
    return torch.where(bad, -math.inf, lo), torch.where(bad, math.inf, hi)


def centre_radius(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, r) with [lo, hi] ⊆ [c − r, c + r]; an infinite end gives c = 0 (or the finite end), r = ∞."""
    finite = torch.isfinite(lo) & torch.isfinite(hi)
    c = torch.where(finite, (lo + hi) / 2, torch.zeros_like(lo))
    r = torch.where(finite, (hi - lo) / 2, torch.full_like(lo, math.inf))
    return c, r


def mul(a: Interval, b: Interval) -> Interval:
    """The product range: hull of the four end products (0·∞ = 0: the ends are limits of reals)."""
    prods = [torch.nan_to_num(x * y, nan=0.0, posinf=math.inf, neginf=-math.inf)
             for x in a for y in b]
    return hull(*prods)


def reciprocal(b: Interval) -> Interval:
    """1/b: [1/hi, 1/lo] when 0 ∉ [lo, hi]; the whole line otherwise."""
    lo, hi = b
    ok = (lo > 0) | (hi < 0)
    return (torch.where(ok, 1.0 / hi, -math.inf), torch.where(ok, 1.0 / lo, math.inf))


def square(a: Interval) -> Interval:
    """x² on [lo, hi]: [dist(0, [lo, hi])², max(lo², hi²)]."""
    lo, hi = a
    d = torch.where(lo > 0, lo, torch.where(hi < 0, -hi, torch.zeros_like(lo)))
    return d * d, torch.maximum(lo * lo, hi * hi)


def abs_range(a: Interval) -> Interval:
    lo, hi = a
    return torch.where(lo > 0, lo, torch.where(hi < 0, -hi, torch.zeros_like(lo))), torch.maximum(lo.abs(), hi.abs())


def sup_abs(a: Interval) -> torch.Tensor:
    """Entrywise max |x| over the range."""
    return torch.maximum(a[0].abs(), a[1].abs())


def matmul(a: Interval, b: Interval) -> Interval:
    """A·B for interval matrices (numpy matmul broadcasting), midpoint–radius form (Rump 1999):
    AB ∈ A_c B_c ± (|A_c| B_r + A_r |B_c| + A_r B_r)."""
    ac, ar = centre_radius(*a)
    bc, br = centre_radius(*b)
    mid = ac @ bc
    rad = torch.nan_to_num(ac.abs() @ br + ar @ bc.abs() + ar @ br, nan=math.inf)
    return mid - rad, mid + rad


def valley(f: Callable[[torch.Tensor], torch.Tensor], a: Interval, xstar: float, fmin: float) -> Interval:
    """Range of f on [lo, hi] for f nonincreasing on (−∞, x*] and nondecreasing on [x*, ∞)
    with min f = f(x*) ≥ ``fmin`` (a certified lower value)."""
    lo, hi = a
    flo, fhi = hull(f(lo), f(hi))
    inside = (lo <= xstar) & (hi >= xstar)
    return torch.where(inside, torch.full_like(flo, fmin), flo), fhi


def derivative_range(fprime: Callable[[torch.Tensor], torch.Tensor], a: Interval,
                     points: Iterable[tuple[float, Iterable[float]]] = ()) -> Interval:
    """Range of f′ over [lo, hi] entrywise, where f′ is monotone between consecutive ``points``
    (its kinks and its own extrema). ``points`` lists (p, values of f′ reached next to p — both
    one-sided values at a kink, f′(p) at an extremum). The range is the hull of f′(lo), f′(hi)
    and the values of the points inside [lo, hi]; NaN anywhere (f′ undefined there) gives NaN."""
    lo, hi = a
    cands = [fprime(lo), fprime(hi)]
    for p, values in points:
        inside = (lo <= p) & (hi >= p)
        for v in values:
            cands.append(torch.where(inside, torch.as_tensor(v, dtype=torch.float64), cands[0]))
    stacked = torch.stack(torch.broadcast_tensors(*cands))
    return stacked.amin(0), stacked.amax(0)


def variance_lower(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """A certified lower bound on min over the box of the population variance of each row of
    (S, n) ranges. min_x var(x) = min_m g(m), g(m) = mean_i dist(m, [lo_i, hi_i])² (var(x) =
    min_m mean (x_i − m)²); g is convex with g′(m) = (2/n)Σ((m − hi_i)₊ − (lo_i − m)₊). Bisection
    keeps g′(a) ≤ 0 ≤ g′(b); the tangents at a and b lie under g, so on [a, b] (where the minimum
    is) g ≥ max(g(a) + g′(a)(b − a), g(b) + g′(b)(a − b)). Rows with an infinite end get 0."""
    lo, hi = lo.to(torch.float64), hi.to(torch.float64)
    finite = torch.isfinite(lo).all(1) & torch.isfinite(hi).all(1)
    lo = torch.where(finite[:, None], lo, 0.0)
    hi = torch.where(finite[:, None], hi, 0.0)

    def g_and_slope(m):
        above, below = (m[:, None] - hi).clamp_min(0), (lo - m[:, None]).clamp_min(0)
        dist = above + below
        return (dist * dist).mean(1), 2 * (above - below).mean(1)

    a, b = lo.amin(1), hi.amax(1)
    for _ in range(80):
        mid = (a + b) / 2
        _, s = g_and_slope(mid)
        a, b = torch.where(s <= 0, mid, a), torch.where(s <= 0, b, mid)
    (ga, sa), (gb, sb) = g_and_slope(a), g_and_slope(b)
    bound = torch.maximum(ga + sa * (b - a), gb + sb * (a - b)).clamp_min(0) * (1 - 1e-9)
    return torch.where(finite, bound, torch.zeros_like(bound))


def standardised(lo: torch.Tensor, hi: torch.Tensor, eps: float) -> tuple[Interval, torch.Tensor]:
    """Ranges of z = (x − mean)/√(var + ε) over (S, n) rows of ranges, and the variance lower bound
    per row. x_i − mean = x_i(1 − 1/n) − Σ_{j≠i} x_j/n has the exact range from the ends; dividing
    by s ∈ [√(v + ε), ∞) gives [min(d_lo/s_lo, 0), max(d_hi/s_lo, 0)]; and |z_i| ≤ √(n − 1) always
    (Σz = 0 and Σz² < n)."""
    n = lo.shape[1]
    v = variance_lower(lo, hi)
    s_lo = torch.sqrt(v + eps)[:, None]
    d_lo = lo * (1 - 1 / n) - (hi.sum(1, keepdim=True) - hi) / n
    d_hi = hi * (1 - 1 / n) - (lo.sum(1, keepdim=True) - lo) / n
    cap = math.sqrt(max(n - 1, 0))
    z_lo = torch.nan_to_num(torch.clamp(d_lo / s_lo, max=0.0), nan=-cap).clamp(-cap, cap)
    z_hi = torch.nan_to_num(torch.clamp(d_hi / s_lo, min=0.0), nan=cap).clamp(-cap, cap)
    return (z_lo, z_hi), v


def rms_scaled(lo: torch.Tensor, hi: torch.Tensor, eps: float) -> tuple[Interval, torch.Tensor]:
    """Ranges of z = x/√(mean(x²) + ε) over (S, n) rows of ranges, and a lower bound per row on the
    mean square: mean_i dist(0, [lo_i, hi_i])² is its exact minimum over the box (each term is
    minimised alone). Dividing by s ∈ [√(v + ε), ∞) gives [min(lo_i/s_lo, 0), max(hi_i/s_lo, 0)];
    and |z_i| < √n always (Σz² = n·mean(x²)/(mean(x²) + ε) < n)."""
    n = lo.shape[1]
    d = torch.where(lo > 0, lo, torch.where(hi < 0, -hi, torch.zeros_like(lo)))
    v = ((d * d).mean(1) * (1 - 1e-9)).nan_to_num(nan=0.0)
    s_lo = torch.sqrt(v + eps)[:, None]
    cap = math.sqrt(n)
    z_lo = torch.nan_to_num(torch.clamp(lo / s_lo, max=0.0), nan=-cap).clamp(-cap, cap)
    z_hi = torch.nan_to_num(torch.clamp(hi / s_lo, min=0.0), nan=cap).clamp(-cap, cap)
    return (z_lo, z_hi), v
