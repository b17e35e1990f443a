"""Lagrangian branch and bound for the SeqLip factor against brute force (every vertex, numpy)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bruteforce import factor_vertices
from lipgraph.certify.seqlip_bnb import ENUM_MAX, factor_bnb_lagrangian, factor_exact_auto
from lipgraph.labels import CERT_MARGIN, Label
from lipgraph.certify.seqlip import factor_exact
from lipgraph.certify.seqlip_chain import seqlip_chain, seqlip_factors

RTOL = 1e-9  # factor_bnb_lagrangian's default pruning tolerance


def _case(kind: str, seed: int):
    """(A, B, lo, hi) of a random factor; the degenerate kinds stress ties and zero pieces."""
    rng = np.random.default_rng(seed)
    n = 8 + seed % 7  # 8 … 14
    p, q = 3 + seed % 5, 4 + (seed * 3) % 7
    A, B = rng.standard_normal((p, n)), rng.standard_normal((n, q))
    lo, hi = 0.0, 1.0
    if kind == "rank1-A":
        A = np.outer(rng.standard_normal(p), rng.standard_normal(n))
    elif kind == "rank2-B":
        B = rng.standard_normal((n, 2)) @ rng.standard_normal((2, q))
    elif kind == "zero-columns":
        A[:, ::3] = 0.0
        B[1::4] = 0.0
    elif kind == "equal-singular-values":  # orthonormal rows/columns, all singular values 1
        A = np.linalg.qr(rng.standard_normal((n, p)))[0].T
        B = np.linalg.qr(rng.standard_normal((n, q)))[0]
    elif kind == "duplicate-columns":  # symmetric ties between optimal vertices
        A[:, 1::2] = A[:, 0::2][:, : n // 2]
        B[1::2] = B[0::2][: n // 2]
    elif kind == "negative-slopes":
        lo, hi = -0.5, 1.0
    elif kind == "mixed-boxes":  # per-neuron boxes, some with lo = hi, some below zero
        lo = rng.uniform(-1.0, 0.5, n)
        hi = lo + rng.uniform(0.0, 1.0, n) * (rng.random(n) < 0.7)
    elif kind == "sigmoid":
        lo, hi = 0.0, 0.25
    return A, B, lo, hi


KINDS = ["gaussian", "rank1-A", "rank2-B", "zero-columns", "equal-singular-values",
         "duplicate-columns", "negative-slopes", "mixed-boxes", "sigmoid"]
CASES = [(k, s) for k in KINDS for s in (0, 4)] + [("gaussian", s) for s in (1, 2, 3, 5, 6)]


@pytest.mark.parametrize("kind,seed", CASES)
def test_equals_bruteforce_and_early_stop_is_above(kind, seed):
    A, B, lo, hi = _case(kind, seed)
    bf = factor_vertices(A, B, lo, hi)
    res = factor_bnb_lagrangian(A, B, lo, hi)
    assert res.done and res.stopped == "" and res.open == 0
    assert res.bound.label is Label.CERTIFIED and res.bound.method == "exact-bnb"
    assert res.lower == pytest.approx(bf, rel=1e-9, abs=1e-12)
    assert bf <= res.bound.value <= bf * (1 + RTOL) * (1 + 2 * CERT_MARGIN) + 1e-12
    if res.vertex is not None:  # the reported vertex realises the value
        d = res.vertex.numpy()
        assert np.all((d == np.broadcast_to(lo, d.shape)) | (d == np.broadcast_to(hi, d.shape)))
        assert np.linalg.norm(A @ (d[:, None] * B), 2) == pytest.approx(res.lower, rel=1e-12)
    for budget in (1, 2, 9, 40):  # anytime: stopped after a handful of nodes, still above
        early = factor_bnb_lagrangian(A, B, lo, hi, max_nodes=budget)
        assert early.bound.label is Label.CERTIFIED
        assert early.bound.value >= bf * (1 - 1e-15), (budget, early, bf)
        assert early.done or early.stopped == "nodes"


def test_weak_node_bounds_still_above():
    """One eigen-decomposition per node from a poor start: weaker bounds, never below."""
    for seed in range(4):
        A, B, lo, hi = _case("gaussian", seed)
        bf = factor_vertices(A, B, lo, hi)
        for budget in (1, 5, 1 << 12):
            res = factor_bnb_lagrangian(A, B, lo, hi, max_nodes=budget, iters=1, root_iters=1)
            assert res.bound.value >= bf * (1 - 1e-15)
        assert res.done and res.lower == pytest.approx(bf, rel=1e-9)


def test_deterministic():
    rng = np.random.default_rng(3)
    (A, B), = seqlip_factors([rng.standard_normal((20, 20)), rng.standard_normal((20, 20))])
    for budget in (7, 1 << 16):
        r1 = factor_bnb_lagrangian(A, B, 0.0, 1.0, max_nodes=budget)
        r2 = factor_bnb_lagrangian(A, B, 0.0, 1.0, max_nodes=budget)
        assert (r1.bound, r1.done, r1.lower, r1.nodes, r1.open) == (r2.bound, r2.done, r2.lower, r2.nodes, r2.open)


def test_degenerate_shapes():
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((3, 6)), rng.standard_normal((6, 4))
    assert factor_bnb_lagrangian(A * 0, B, 0.0, 1.0).bound.value <= 1e-300
    fixed = factor_bnb_lagrangian(A, B, 0.7, 0.7)  # nothing to branch on
    assert fixed.done and fixed.nodes == 1
    assert fixed.bound.value == pytest.approx(0.7 * np.linalg.norm(A @ B, 2), rel=2e-8)
    empty = factor_bnb_lagrangian(np.zeros((3, 0)), np.zeros((0, 4)), 0.0, 1.0)
    assert empty.done and empty.bound.value == 0.0
    with pytest.raises(ValueError):
        factor_bnb_lagrangian(A, B, 1.0, 0.0)


def test_time_budget_is_reported_and_sound():
    rng = np.random.default_rng(1)
    (A, B), = seqlip_factors([rng.standard_normal((24, 24)), rng.standard_normal((24, 24))])
    res = factor_bnb_lagrangian(A, B, 0.0, 1.0, time_budget=0.0)
    assert not res.done and res.stopped == "seconds"
    assert res.bound.value >= factor_exact(A, B, 0.0, 1.0).value / (1 + 2 * CERT_MARGIN)


def test_auto_against_enumeration_at_20():
    rng = np.random.default_rng(5)
    (A, B), = seqlip_factors([rng.standard_normal((20, 20)), rng.standard_normal((20, 20))])
    e = factor_exact(A, B, 0.0, 1.0).value
    b, done = factor_exact_auto(A, B, 0.0, 1.0)
    assert done and b.method == "exact-bnb" and b.value == pytest.approx(e, rel=2e-9)
    small, done = factor_exact_auto(A[:, :ENUM_MAX], B[:ENUM_MAX], 0.0, 1.0)
    assert done and small.method == "exact-enumeration"
    early, done = factor_exact_auto(A, B, 0.0, 1.0, max_nodes=1)
    assert not done and early.method == "bnb" and early.value >= e / (1 + 2 * CERT_MARGIN)


def test_chain_uses_bnb_beyond_enumeration():
    rng = np.random.default_rng(2)
    Ws = [rng.standard_normal((22, 12)), rng.standard_normal((5, 22))]
    res = seqlip_chain(Ws, [(0.0, 1.0)])
    assert res.factors[0].method == "exact-bnb"
    (A, B), = seqlip_factors(Ws)
    assert res.certified.value == pytest.approx(factor_exact(A, B, 0.0, 1.0).value, rel=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("n", [26, 28])
def test_agrees_with_enumeration_past_24(n):
    rng = np.random.default_rng(n)
    (A, B), = seqlip_factors([rng.standard_normal((n, n)), rng.standard_normal((n, n))])
    e = factor_exact(A, B, 0.0, 1.0).value
    lines: list[str] = []
    res = factor_bnb_lagrangian(A, B, 0.0, 1.0, progress=lines.append)
    assert res.done and res.bound.value == pytest.approx(e, rel=2e-9)
    assert all("nodes" in line and "gap" in line for line in lines)
    assert lines or res.seconds < 1.5
    assert res.lower == pytest.approx(e / (1 + CERT_MARGIN), rel=1e-9)
    assert torch.is_tensor(res.vertex)
