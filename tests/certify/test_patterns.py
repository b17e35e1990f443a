"""Activation patterns an input box realises (lipgraph.certify.patterns) and the SeqLip factor
restricted to them, against an exact arrangement on a line and brute force over the vertices."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lipgraph.certify.patterns import SignPatterns, _farkas_margin
from lipgraph.certify.seqlip_bnb import factor_bnb_lagrangian


def line_patterns(g, c, lo, hi, orient) -> set[tuple]:
    """Every closed sign pattern of z = g·x + c over x ∈ [lo, hi] (one input): the patterns
    between consecutive kinks and at each kink (where that neuron takes both sides)."""
    kinks = sorted(t for t in -c / g if lo <= t <= hi)
    points = [lo, hi, *kinks, *((a + b) / 2 for a, b in zip([lo, *kinks], [*kinks, hi]))]
    out = set()
    for x in points:
        z = g * x + c
        choices = [(1, -1) if abs(zj) <= 1e-12 else ((1,) if zj > 0 else (-1,)) for zj in z]
        for signs in itertools.product(*choices):
            out.add(tuple(int(s * o) for s, o in zip(signs, orient)))
    return out


def _line_case(seed):
    rng = np.random.default_rng(seed)
    n = 6
    g, c = rng.standard_normal(n), rng.standard_normal(n)
    orient = np.where(rng.random(n) < 0.7, 1, -1)
    return g, c, -1.5, 2.0, orient


@pytest.mark.parametrize("seed", range(6))
def test_full_and_partial_patterns_on_a_line_match_the_arrangement(seed):
    g, c, lo, hi, orient = _line_case(seed)
    exact = line_patterns(g, c, lo, hi, orient)
    oracle = SignPatterns(g[:, None], c, lo, hi, 0.0, orient > 0)
    rows = np.array(list(itertools.product((-1, 0, 1), repeat=len(g))), dtype=np.int8)
    got = oracle.realisable(rows)
    for row, ok in zip(rows, got):
        want = any(all(r == 0 or r == e for r, e in zip(row, full)) for full in exact)
        assert ok == want, (row, ok, want)
    assert oracle.lps > 0


def test_kinks_away_from_zero_and_a_box_of_several_inputs():
    """A kink at a ≠ 0 is the sign of z − a; in 3 inputs the oracle admits every pattern found at
    sampled points and rejects one no point of the box can give."""
    rng = np.random.default_rng(3)
    G, c, at = rng.standard_normal((8, 3)), rng.standard_normal(8), rng.standard_normal(8)
    oracle = SignPatterns(G, c, 0.0, 1.0, at, True)
    xs = rng.random((4000, 3))
    seen = {tuple(np.where(G @ x + c - at >= 0, 1, -1)) for x in xs}
    assert oracle.realisable(np.array(sorted(seen), dtype=np.int8)).all()
    # z_0 ≥ a_0 and z_1 ≤ a_1 with z_1 = z_0 + 1, a_1 = a_0: impossible on any box
    G2, c2 = np.array([[1.0, 2.0, -1.0], [1.0, 2.0, -1.0]]), np.array([0.0, 1.0])
    two = SignPatterns(G2, c2, 0.0, 1.0, 0.0, True)
    assert two.realisable(np.array([[1, -1], [1, 1], [-1, -1], [-1, 1]], dtype=np.int8)).tolist() == [
        False, True, True, True]


def test_farkas_margin_never_proves_a_feasible_system_infeasible():
    rng = np.random.default_rng(0)
    for _ in range(300):
        m, k = rng.integers(1, 6), rng.integers(1, 8)
        S, x0 = rng.standard_normal((k, m)), rng.random(m)
        h = S @ x0 + rng.random(k) * rng.choice([0.0, 1e-12, 1.0])   # x0 is feasible
        y = rng.random(k) * rng.choice([1e-8, 1.0, 1e8])
        assert not _farkas_margin(y, S, h, np.zeros(m), np.ones(m)) > 0
    S, h = np.array([[1.0], [-1.0]]), np.array([0.25, -0.5])   # x ≤ 0.25 and x ≥ 0.5
    assert _farkas_margin(np.array([1.0, 1.0]), S, h, np.zeros(1), np.ones(1)) > 0
    assert not _farkas_margin(np.array([1.0, 0.0]), S, h, np.zeros(1), np.ones(1)) > 0


def test_program_limit_admits_what_it_cannot_check():
    G2, c2 = np.array([[1.0, 2.0], [1.0, 2.0]]), np.array([0.0, 1.0])
    oracle = SignPatterns(G2, c2, 0.0, 1.0, 0.0, True, max_programs=0)
    assert oracle.realisable(np.array([[1, -1]], dtype=np.int8)).all() and oracle.exhausted


def _realised_max(A, B, lo, hi, patterns) -> float:
    """max ‖A diag(d) B‖ over the given full patterns (d = hi where +1, lo where −1)."""
    best = 0.0
    for p in patterns:
        d = np.where(np.array(p) > 0, hi, lo)
        best = max(best, np.linalg.norm(A @ np.diag(d) @ B, 2))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_restricted_branch_and_bound_equals_brute_force_on_a_line(seed):
    """Slope boxes [0, 1] (ReLU) or [1, α] with the upper end below the kink (α > 1 LeakyReLU):
    the branch and bound over realisable vertices is the maximum over the arrangement's
    patterns, and below the unrestricted maximum when that vertex is not realisable."""
    g, c, lo_x, hi_x, orient = _line_case(seed)
    rng = np.random.default_rng(100 + seed)
    n = len(g)
    A, B = rng.standard_normal((4, n)), rng.standard_normal((n, 5))
    lo, hi = (np.zeros(n), np.ones(n)) if seed % 2 else (np.ones(n), np.full(n, 1.5))
    exact = line_patterns(g, c, lo_x, hi_x, orient)
    want = _realised_max(A, B, lo, hi, exact)
    oracle = SignPatterns(g[:, None], c, lo_x, hi_x, 0.0, orient > 0)
    res = factor_bnb_lagrangian(A, B, lo, hi, oracle=oracle)
    assert res.done and res.bound.label.is_bound
    assert want <= res.bound.value <= want * (1 + 1e-7)
    full = _realised_max(A, B, lo, hi, itertools.product((-1, 1), repeat=n))
    free = factor_bnb_lagrangian(A, B, lo, hi)
    assert free.bound.value >= full * (1 - 1e-12)
    assert res.bound.value <= free.bound.value * (1 + 1e-9)


def test_restricted_search_on_a_wide_factor_is_sound_against_sampled_patterns():
    """n = 24 neurons of 10 inputs on [0, 1]^10: the value is at least every pattern met at
    sampled points and at most the unrestricted exact factor."""
    rng = np.random.default_rng(7)
    n, m = 24, 10
    G, c = rng.standard_normal((n, m)), rng.standard_normal(n) * 0.5
    A, B = torch.tensor(rng.standard_normal((6, n))), torch.tensor(rng.standard_normal((n, 6)))
    oracle = SignPatterns(G, c, 0.0, 1.0, 0.0, True)
    res = factor_bnb_lagrangian(A, B, 0.0, 1.0, oracle=oracle, max_nodes=1 << 16)
    free = factor_bnb_lagrangian(A, B, 0.0, 1.0, max_nodes=1 << 16)
    xs = rng.random((20000, m))
    seen = {tuple(np.where(G @ x + c >= 0, 1, -1)) for x in xs}
    sampled = _realised_max(A.numpy(), B.numpy(), np.zeros(n), np.ones(n), seen)
    assert sampled <= res.bound.value <= free.bound.value * (1 + 1e-9)
    print(f"sampled {sampled:.6f} ≤ restricted {res.bound.value:.6f} ≤ unrestricted {free.bound.value:.6f}"
          f" ({oracle.lps} programs, {res.nodes} nodes)")
