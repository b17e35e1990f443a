"""SeqLip maths against independent brute force (itertools + numpy), sampling and anchors."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from bruteforce import factor_vertices, joint_patterns, seqlip_bruteforce, spec
from conftest import ANCHOR_NPZ, needs_anchors
from lipgraph.labels import Label
from lipgraph.certify import seqlip as seqlip_mod
from lipgraph.certify.seqlip import (
    BudgetExhausted,
    factor_bnb,
    factor_exact,
    factor_greedy,
    factor_relaxation,
    factor_topk,
    topk_triplets,
)
from lipgraph.certify.seqlip_chain import OperatorMap, seqlip_chain, seqlip_factors, time_exact_factor

# certify() adds 1e-8 relative per factor; allow that per factor plus rounding.
MARGIN = 1e-7

ACTS = {
    "relu": ((0.0, 1.0), lambda z: np.maximum(z, 0.0)),
    "leaky": ((0.1, 1.0), lambda z: np.where(z > 0, z, 0.1 * z)),
    "sigmoid": ((0.0, 0.25), lambda z: 1.0 / (1.0 + np.exp(-z))),
    "tanh": ((0.0, 1.0), np.tanh),
}


def _net(rng, widths):
    return [rng.standard_normal((widths[i + 1], widths[i])) / math.sqrt(widths[i])
            for i in range(len(widths) - 1)]


def _autolip(Ws, boxes):
    return math.prod(spec(W) for W in Ws) * math.prod(max(abs(lo), abs(hi)) for lo, hi in boxes)


def _forward(Ws, acts, x):
    z = x
    for W, a in zip(Ws[:-1], acts):
        z = ACTS[a][1](z @ W.T)
    return z @ Ws[-1].T


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("seed", range(8))
def test_chain_equals_bruteforce_seqlip(seed):
    rng = np.random.default_rng(seed)
    hidden = 2 + seed % 2
    widths = [int(rng.integers(2, 7))] + [int(rng.integers(2, 13)) for _ in range(hidden)] \
        + [int(rng.integers(1, 6))]
    acts = [list(ACTS)[int(rng.integers(0, 4))] for _ in range(hidden)]
    boxes = [ACTS[a][0] for a in acts]
    Ws = _net(rng, widths)
    res = seqlip_chain(Ws, boxes)
    bf = seqlip_bruteforce(Ws, boxes)
    assert res.certified.label is Label.CERTIFIED
    assert bf * (1 - 1e-9) <= res.certified.value <= bf * (1 + MARGIN), (widths, acts)
    assert all(f.method.startswith("exact") for f in res.factors)


@pytest.mark.parametrize("seed", range(6))
def test_chain_above_joint_patterns(seed):
    rng = np.random.default_rng(100 + seed)
    hidden = 2 + seed % 2
    cap = 7 if hidden == 2 else 5
    widths = [3] + [int(rng.integers(2, cap + 1)) for _ in range(hidden)] + [2]
    acts = [list(ACTS)[int(rng.integers(0, 4))] for _ in range(hidden)]
    boxes = [ACTS[a][0] for a in acts]
    Ws = _net(rng, widths)
    joint = joint_patterns(Ws, boxes)
    cert = seqlip_chain(Ws, boxes).certified.value
    assert cert >= joint * (1 - 1e-12)
    assert cert <= _autolip(Ws, boxes) * (1 + MARGIN)


def test_exact_single_layer_and_linear():
    rng = np.random.default_rng(5)
    W = rng.standard_normal((7, 4))
    res = seqlip_chain([W], [])
    assert spec(W) <= res.certified.value <= spec(W) * (1 + MARGIN)
    # identity activations (box [1, 1]) make the chain linear: SeqLip ≥ ‖W2 W1‖ exactly
    Ws = _net(rng, [4, 6, 3])
    res = seqlip_chain(Ws, [(1.0, 1.0)])
    assert res.certified.value >= spec(Ws[1] @ Ws[0]) * (1 - 1e-12)


# ----------------------------------------------------------------------------- factor functions


@pytest.mark.parametrize("seed", range(6))
def test_factor_functions_against_bruteforce(seed):
    rng = np.random.default_rng(200 + seed)
    n, p, q = int(rng.integers(4, 12)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    A, B = rng.standard_normal((p, n)), rng.standard_normal((n, q))
    if seed % 2:  # per-neuron GELU-like boxes with negative slopes
        lo = -0.17 * rng.random(n)
        hi = 1.0 + 0.13 * rng.random(n)
    else:
        lo, hi = np.zeros(n), np.ones(n)
    bf = max(spec(A @ np.diag(d) @ B) for d in itertools.product(*zip(lo, hi)))
    ex = factor_exact(A, B, lo, hi, low_bits=3)
    assert ex.label is Label.CERTIFIED and bf <= ex.value <= bf * (1 + MARGIN)
    bb, done = factor_bnb(A, B, lo, hi, time_budget=None, max_nodes=1 << 20)
    assert done and bf <= bb.value <= bf * (1 + MARGIN)
    rel = factor_relaxation(A, B, lo, hi)
    assert rel.label is Label.CERTIFIED and rel.value >= bf
    smax = np.maximum(np.abs(lo), np.abs(hi)).max()
    assert rel.value <= smax * spec(A) * spec(B) * (1 + MARGIN)
    # the design's scalar form m‖AB‖ + r‖A‖‖B‖ is never beaten from below
    if seed % 2 == 0:
        assert rel.value <= (0.5 * spec(A @ B) + 0.5 * spec(A) * spec(B)) * (1 + MARGIN)
    gr = factor_greedy(A, B, lo, hi, seed=seed)
    assert gr.label is Label.ESTIMATE and gr.value <= bf * (1 + 1e-12)


def _random_box(rng, n, kind):
    if kind == "relu":
        return np.zeros(n), np.ones(n)
    if kind == "gelu":  # per-neuron ranges with negative lo
        return -0.17 * rng.random(n), 1.0 + 0.13 * rng.random(n)
    if kind == "mixed":  # negative, positive, degenerate (lo = hi) and zero intervals
        lo = rng.uniform(-1.0, 0.5, n)
        hi = lo + rng.uniform(0.0, 1.5, n)
        hi[0] = lo[0]
        lo[1] = hi[1] = 0.0
        return lo, hi
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["relu", "gelu", "mixed"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_moment_features_are_exact(kind, k):
    """tr(G^k) of every vertex from the split features equals the directly formed Gram."""
    rng = np.random.default_rng(k)
    n, p, q = 7, 3, 5
    A, B = torch.tensor(rng.standard_normal((p, n))), torch.tensor(rng.standard_normal((n, q)))
    lo, hi = (torch.tensor(x) for x in _random_box(rng, n, kind))
    for l in (1, 3, 6):
        dL = seqlip_mod._all_vertices(lo[:l], hi[:l])
        dH = seqlip_mod._all_vertices(lo[l:], hi[l:])
        Fh, Fl = seqlip_mod._moment_features(A.T @ A, B @ B.T, list(range(l, n)), list(range(l)),
                                             dH, dL, k)
        D = torch.cat([dL[None, :, :].expand(len(dH), -1, -1),
                       dH[:, None, :].expand(-1, len(dL), -1)], 2).reshape(-1, n)
        X = A[None] * D[:, None, :] @ B
        ref = torch.linalg.matrix_power(X @ X.transpose(1, 2), k).diagonal(dim1=1, dim2=2).sum(-1)
        np.testing.assert_allclose((Fh @ Fl.T).reshape(-1).numpy(), ref.numpy(),
                                   rtol=1e-10, atol=1e-10 * float(ref.abs().max()))


def _degenerate(rng, case, n, p, q):
    A, B = rng.standard_normal((p, n)), rng.standard_normal((n, q))
    if case == "rank1-A":
        A = np.outer(rng.standard_normal(p), rng.standard_normal(n))
    elif case == "lowrank-B":
        B = rng.standard_normal((n, 2)) @ rng.standard_normal((2, q))
    elif case == "zero-cols":
        A[:, :3] = 0.0
        B[4] = 0.0
    elif case == "zero-A":
        A[:] = 0.0
    elif case == "duplicate":
        A[:, 1] = A[:, 0]
        B[1] = B[0]
    return A, B


@pytest.mark.parametrize("seed", range(9))
def test_enumeration_equals_bruteforce(seed):
    """The split enumeration (forced with direct_max=0) against itertools on random boxes,
    per-neuron ranges with negative lo, degenerate boxes and matrices, weak incumbents."""
    rng = np.random.default_rng(300 + seed)
    n = int(rng.integers(5, 11))
    p, q = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    kind = ("relu", "gelu", "mixed")[seed % 3]
    case = ("plain", "rank1-A", "lowrank-B", "zero-cols", "duplicate", "plain", "zero-cols",
            "lowrank-B", "rank1-A")[seed]
    A, B = _degenerate(rng, case, n, p, q)
    lo, hi = _random_box(rng, n, kind)
    bf = max(spec(A @ np.diag(d) @ B) for d in itertools.product(*zip(lo, hi)))
    for low_bits in (1, n // 2, n - 1):
        for incumbent in (None, 0.0, 0.5 * bf):
            ex = factor_exact(A, B, lo, hi, direct_max=0, low_bits=low_bits, incumbent=incumbent,
                              check_batch=7, chunk=64)
            assert ex.label is Label.CERTIFIED
            assert bf <= ex.value <= bf * (1 + MARGIN) + 1e-250, (case, kind, low_bits, incumbent)


def test_enumeration_zero_factor():
    rng = np.random.default_rng(9)
    A, B = _degenerate(rng, "zero-A", 12, 3, 4)
    assert factor_exact(A, B, -0.5, 1.0, direct_max=0).value <= 1e-250


@pytest.mark.parametrize("seed", [0, 1])
def test_enumeration_exact_at_16(seed):
    """n = 16: the pruned enumeration equals plain enumeration of all 2^16 vertices (eigvalsh
    where Cholesky cannot prove a vertex below the incumbent) and exhaustive branch and bound."""
    rng = np.random.default_rng(seed)
    (A, B), = seqlip_factors([rng.standard_normal((16, 16)),
                                         rng.standard_normal((16, 16))])
    fast = factor_exact(A, B, 0.0, 1.0).value
    full = factor_exact(A, B, 0.0, 1.0, direct_max=16, incumbent=0.0).value
    bb, done = factor_bnb(A, B, 0.0, 1.0, time_budget=None, max_nodes=1 << 40)
    assert done
    assert fast == pytest.approx(full, rel=1e-12) and fast == pytest.approx(bb.value, rel=1e-12)
    bf = factor_vertices(A, B, 0.0, 1.0)   # independent: numpy SVD at all 65,536 vertices
    assert bf <= fast <= bf * (1 + MARGIN), (fast, bf)
    lo, hi = _random_box(rng, 16, "gelu")
    fast = factor_exact(A, B, lo, hi).value
    full = factor_exact(A, B, lo, hi, direct_max=16, incumbent=0.0).value
    assert fast == pytest.approx(full, rel=1e-12)
    bf = factor_vertices(A, B, lo, hi)
    assert bf <= fast <= bf * (1 + MARGIN), (fast, bf)


def test_budget_exhaustion_falls_back():
    rng = np.random.default_rng(7)
    A, B = rng.standard_normal((6, 14)), rng.standard_normal((14, 6))
    with pytest.raises(BudgetExhausted):
        factor_exact(A, B, 0.0, 1.0, time_budget=0.0)
    Ws = _net(rng, [3, 6, 8, 2])
    boxes = [(0.0, 1.0), (0.0, 0.25)]
    res = seqlip_chain(Ws, boxes, time_budget=0.0)
    assert any(d.code == "seqlip-budget" and "time budget exhausted" in d.message for d in res.diagnostics)
    assert not any(f.method.startswith("exact") for f in res.factors)
    assert res.certified.value >= joint_patterns(Ws, boxes)
    assert res.certified.value >= seqlip_bruteforce(Ws, boxes)
    assert res.certified.value <= _autolip(Ws, boxes) * (1 + MARGIN)


def test_wide_factor_uses_relaxation():
    rng = np.random.default_rng(8)
    Ws = _net(rng, [5, 80, 4])
    res = seqlip_chain(Ws, [(0.0, 1.0)], bnb_max=64)
    assert any("used relaxation" in d.message for d in res.diagnostics)
    assert res.factors[0].method in ("relaxation", "autolip-factor")
    assert res.certified.value <= _autolip(Ws, [(0.0, 1.0)]) * (1 + MARGIN)


# ----------------------------------------------------------------------------- soundness sweep


def test_random_nets_sampled_soundness():
    rng = np.random.default_rng(12345)
    matched = known = 0
    for case in range(100):
        hidden = int(rng.integers(1, 4))
        widths = [int(rng.integers(2, 9))] + [int(rng.integers(2, 65)) for _ in range(hidden)] \
            + [int(rng.integers(1, 6))]
        acts = [list(ACTS)[int(rng.integers(0, 4))] for _ in range(hidden)]
        boxes = [ACTS[a][0] for a in acts]
        Ws = _net(rng, widths)
        res = seqlip_chain(Ws, boxes, exact_max=14, bnb_max=14, bnb_nodes=256, seed=case)
        cert = res.certified.value
        x = rng.standard_normal((256, widths[0])) * 2.0
        y = np.concatenate([x[:128] + 1e-4 * rng.standard_normal((128, widths[0])),
                            rng.standard_normal((128, widths[0])) * 2.0])
        ratios = (np.linalg.norm(_forward(Ws, acts, x) - _forward(Ws, acts, y), axis=1)
                  / np.linalg.norm(x - y, axis=1))
        assert ratios.max() <= cert, (case, widths, acts)
        assert cert <= _autolip(Ws, boxes) * (1 + MARGIN), (case, widths, acts)
        assert res.greedy.label is Label.ESTIMATE
        for f in res.factors:
            if f.method.startswith("exact"):
                known += 1
                assert f.greedy <= f.certified
                matched += f.greedy * (1 + MARGIN) >= f.certified
    print(f"\ngreedy matched the exact factor in {matched}/{known} factors")
    assert known >= 30


# ----------------------------------------------------------------------------- anchor


@needs_anchors
def test_anchor_lipsdp_random():
    d = np.load(ANCHOR_NPZ)
    Ws = [d[f"W{i}"] for i in range(1, 5)]
    res = seqlip_chain(Ws, [(0.0, 1.0)] * 3)
    print(f"\nanchor 2-10-30-20-2 SeqLip certified = {res.certified.value:.6f} "
          f"({[f.method for f in res.factors]}), greedy = {res.greedy.value:.6f}")
    assert 36.48223 <= res.certified.value < 43.30557


# ----------------------------------------------------------------------------- top-k


def test_topk_triplets_and_factor_topk():
    rng = np.random.default_rng(3)
    W1, W2 = rng.standard_normal((12, 6)), rng.standard_normal((4, 12))
    T1 = torch.tensor(W1)
    U, S, V = topk_triplets(lambda x: T1 @ x, (6,), 3, iters=200, seed=1)
    s_ref = np.linalg.svd(W1, compute_uv=False)[:3]
    np.testing.assert_allclose(S.numpy(), s_ref, rtol=1e-8)
    np.testing.assert_allclose((T1 @ V).numpy(), (U * S).numpy(), atol=1e-8)
    # full-rank top-k greedy equals greedy on the dense SVD factor
    t1 = topk_triplets(lambda x: T1 @ x, (6,), 6, iters=300)
    t2 = topk_triplets(lambda x: torch.tensor(W2) @ x, (12,), 4, iters=300)
    g = factor_topk(t1, t2, 0.0, 1.0, first=True, last=True)
    assert g.label is Label.ESTIMATE
    U1, s1, _ = np.linalg.svd(W1, full_matrices=False)
    _, s2, Vt2 = np.linalg.svd(W2, full_matrices=False)
    ref = factor_greedy(np.diag(s2) @ Vt2, U1 @ np.diag(s1), 0.0, 1.0).value
    assert g.value == pytest.approx(ref, rel=1e-7)


def test_operator_maps_in_chain():
    rng = np.random.default_rng(4)
    Ws = _net(rng, [5, 9, 3])
    T0 = torch.tensor(Ws[0])
    small = seqlip_chain([OperatorMap(lambda x: T0 @ x, (5,)), Ws[1]], [(0.0, 1.0)])
    dense = seqlip_chain(Ws, [(0.0, 1.0)])
    assert small.certified.value == pytest.approx(dense.certified.value, rel=1e-12)
    big = seqlip_chain([OperatorMap(lambda x: T0 @ x, (5,)), Ws[1]], [(0.0, 1.0)], dense_max=0,
                       topk=5)
    assert math.isinf(big.certified.value)  # no certified norm supplied: no certified bound
    assert big.greedy.label is Label.ESTIMATE
    assert big.greedy.value <= dense.certified.value * (1 + 1e-6)


def test_time_exact_factor_helper():
    secs, val = time_exact_factor(10, seed=0)
    secs2, val2 = time_exact_factor(10, seed=0, method="bnb")
    assert secs >= 0 and secs2 >= 0 and val == pytest.approx(val2, rel=1e-12)
    # the factor of the chain q → n → p it draws is max_d ‖W2 diag(d) W1‖ over ReLU vertices
    rng = np.random.default_rng(0)
    W1, W2 = rng.standard_normal((10, 10)), rng.standard_normal((10, 10))
    bf = factor_vertices(W2, W1, 0.0, 1.0)
    assert bf <= val <= bf * (1 + MARGIN), (val, bf)
    _, val3 = time_exact_factor(9, seed=3, p=4, q=6)
    rng = np.random.default_rng(3)
    W1, W2 = rng.standard_normal((9, 6)), rng.standard_normal((4, 9))
    bf = factor_vertices(W2, W1, 0.0, 1.0)
    assert bf <= val3 <= bf * (1 + MARGIN), (val3, bf)


def test_topk_skipped_when_too_costly_falls_back_to_autolip_factor():
    """A map whose top-k decomposition would cost more than TOPK_MAX_MACS multiply-adds (a count,
    not a time: the same decision under any load) gets none: the factor (certified and estimate)
    is the AutoLip factor from the operator's certified norm, and a diagnostic says so."""
    from lipgraph.labels import Bound as B
    rng = np.random.default_rng(5)
    Ws = _net(rng, [5, 9, 3])
    T0 = torch.tensor(Ws[0])
    norm0 = B(spec(Ws[0]) * (1 + 1e-9), Label.CERTIFIED, "given")
    res = seqlip_chain([OperatorMap(lambda x: T0 @ x, (5,), norm0, cost=1e12), Ws[1]], [(0.0, 1.0)], dense_max=0)
    autolip = norm0.value * spec(Ws[1])
    assert res.certified.value == pytest.approx(autolip, rel=1e-7) and res.certified.value >= autolip
    assert res.greedy.value == pytest.approx(autolip, rel=1e-7)
    assert any(d.code == "seqlip-factor" and "top-k skipped" in d.message and "multiply-adds" in d.message
               for d in res.diagnostics)
    cheap = seqlip_chain([OperatorMap(lambda x: T0 @ x, (5,), norm0, cost=45.0), Ws[1]], [(0.0, 1.0)], dense_max=0)
    assert any("top-5 triplets" in d.message for d in cheap.diagnostics)


@pytest.mark.parametrize("pq", [3, 40, 200])
def test_factor_ascent_realised_on_both_product_routes(pq):
    """Alternating ascent forms A·D·B when it is small (p, q ≪ n: top-k factors) and multiplies
    through A and B otherwise: on both routes the value is realised at a vertex (≤ the brute-force
    maximum) and no lower than the start vertex's norm."""
    from lipgraph.certify.seqlip import factor_ascent
    rng = np.random.default_rng(pq)
    n = 12
    A, B = rng.standard_normal((pq, n)), rng.standard_normal((n, pq))
    got = factor_ascent(A, B, 0.0, 1.0).value
    assert spec(A @ B) * (1 - 1e-6) <= got <= factor_vertices(A, B, 0.0, 1.0) * (1 + 1e-9)


def test_topk_too_costly_for_k_gets_the_largest_k_that_fits():
    """Past TOPK_MAX_MACS at the requested k, top-k runs with fewer triplets (not skipped): the
    diagnostic names k, the greedy stays an estimate between the exact factor's realised vertices
    and the certified AutoLip factor."""
    from lipgraph.certify import seqlip_chain as sc
    from lipgraph.labels import Bound as B
    rng = np.random.default_rng(6)
    Ws = _net(rng, [100, 80, 3])
    T0 = torch.tensor(Ws[0])
    norm0 = B(spec(Ws[0]) * (1 + 1e-9), Label.CERTIFIED, "given")
    k_want = 30
    cost = sc.TOPK_MAX_MACS / ((2 * sc.TOPK_ITERS + 1) * (k_want + sc.TOPK_OVERSAMPLE))
    res = seqlip_chain([OperatorMap(lambda x: T0 @ x, (100,), norm0, cost=cost), Ws[1]], [(0.0, 1.0)],
                       dense_max=0, topk=60)
    assert any(f"top-{k_want} triplets" in d.message and "k reduced from 60" in d.message for d in res.diagnostics)
    assert res.greedy.label is Label.ESTIMATE
    assert res.greedy.value <= res.certified.value
    skipped = seqlip_chain([OperatorMap(lambda x: T0 @ x, (100,), norm0, cost=cost * 4), Ws[1]], [(0.0, 1.0)],
                           dense_max=0, topk=60)
    assert any("top-k skipped" in d.message and f"k = {sc.TOPK_MIN}" in d.message for d in skipped.diagnostics)


def test_topk_in_the_fast_arithmetic_matches_float64():
    """OperatorMap.fast (a float32 copy of the map) is what top-k runs on; with every direction kept
    (k ≥ input width) the triplets are exact, so the greedy estimate equals the float64 one to
    float32 accuracy."""
    rng = np.random.default_rng(7)
    Ws = _net(rng, [6, 9, 4])
    T64, T32 = torch.tensor(Ws[0]), torch.tensor(Ws[0], dtype=torch.float32)
    calls = []

    def fast(x):
        calls.append(x.dtype)
        return T32 @ x

    slow = seqlip_chain([OperatorMap(lambda x: T64 @ x, (6,)), Ws[1]], [(0.0, 1.0)], dense_max=0)
    quick = seqlip_chain([OperatorMap(lambda x: T64 @ x, (6,), fast=(fast, torch.float32, "cpu")), Ws[1]],
                         [(0.0, 1.0)], dense_max=0)
    assert calls and set(calls) == {torch.float32}
    assert quick.greedy.value == pytest.approx(slow.greedy.value, rel=1e-5)
    assert any("torch.float32" in d.message for d in quick.diagnostics)


def test_topk_triplets_oversampled_float32():
    rng = np.random.default_rng(8)
    W = rng.standard_normal((50, 40)) * np.linspace(3, 0.1, 40)
    T = torch.tensor(W, dtype=torch.float32)
    U, S, V = topk_triplets(lambda x: T @ x, (40,), 5, iters=30, oversample=10, dtype=torch.float32)
    assert S.dtype == torch.float32 and U.shape == (50, 5) and V.shape == (40, 5)
    np.testing.assert_allclose(S.numpy(), np.linalg.svd(W, compute_uv=False)[:5], rtol=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_relaxation_with_per_neuron_ranges_never_exceeds_the_hull(seed):
    """Per-neuron slope ranges inside [0, 1] (a box: some neurons fixed at 0 or 1, most across) give
    a relaxation no larger than the uniform [0, 1] one, and still above the exact maximum."""
    rng = np.random.default_rng(seed)
    n = 14
    A, B = rng.standard_normal((6, n)), rng.standard_normal((n, 7))
    lo, hi = np.zeros(n), np.ones(n)
    fixed = rng.random(n) < 0.2
    lo[fixed] = hi[fixed] = (rng.random(fixed.sum()) < 0.5).astype(float)
    box = factor_relaxation(A, B, lo, hi).value
    assert box <= factor_relaxation(A, B, np.zeros(n), np.ones(n)).value
    assert box >= factor_exact(A, B, lo, hi).value * (1 - 1e-12)


def test_topk_triplets_through_an_operator_torch_func_cannot_transform():
    """Operators whose rules read the data of a tensor computed from the input (shape logic in
    Split/Resize: zoo yolo_neck and unet_decoder) cannot run under torch.func.vjp; the adjoint then
    falls back to plain autograd and the triplets are still the SVD's."""
    W = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def op(x):
        n = int(x.detach().numpy().size)   # fails on a functorch-wrapped tensor
        return W @ x.reshape(n)

    _, S, _ = topk_triplets(op, (5,), 3)
    np.testing.assert_allclose(S.numpy(), torch.linalg.svdvals(W)[:3].numpy(), rtol=1e-8)
