"""Max, Min (elementwise, variadic, broadcasting) and ReduceMax, ReduceMin, ReduceSum, ReduceL2:
torch semantics vs onnxruntime over axes (negative too), keepdims, noop_with_empty_axes and every
opset the rules list, ONNX cases; bounds vs sampled ratios, materialised norms (ReduceSum) and
pairs that realise them."""
import math

import numpy as np
import pytest
import torch
from onnx import helper

from lipgraph.labels import Label
from rulecheck import (assert_matches_ort, assert_versions_covered, check_norm, conformance, input_fn, nodeview,
                       ort_run, rule_for, sampled_max_ratio)


def test_versions_covered():
    assert assert_versions_covered("Max") == [8, 12, 13]
    assert assert_versions_covered("Min") == [8, 12, 13]
    assert assert_versions_covered("ReduceMax") == [11, 12, 13, 18, 20]
    assert assert_versions_covered("ReduceMin") == [11, 12, 13, 18, 20]
    assert assert_versions_covered("ReduceL2") == [11, 13, 18]
    assert assert_versions_covered("ReduceSum") == [11, 13]


def _joint_ratio(view, arrays, dyn, n_pairs=200, seed=0):
    """max ‖f(x′) − f(x)‖/√(Σ_i copies_i‖Δa_i‖²)-free check: the largest ratio
    ‖Δy‖/‖(Δa_i)_i‖ with the analysed inputs perturbed together, each weighted by √copies
    — returned as ‖Δy‖² / Σ_i copies_i ‖Δa_i‖² (≤ 1 by the rule's claim)."""
    rng = np.random.default_rng(seed)
    r = rule_for(view)
    bounds = r.bounds(view)
    worst = 0.0
    for k in range(n_pairs):
        scale = (1e-3, 1e-1, 1.0, 10.0)[k % 4]
        a = [np.asarray(x, np.float64) for x in arrays]
        b = [x + (rng.normal(size=x.shape) * scale if d else 0) for x, d in zip(a, dyn)]
        a = [x + (rng.normal(size=x.shape) * 3 if d else 0) for x, d in zip(a, dyn)]
        b = [y + (x - np.asarray(arr, np.float64)) if d else y for x, y, d, arr in zip(a, b, dyn, arrays)]
        fa = r.forward(view, *[torch.as_tensor(x) for x in a]).numpy()
        fb = r.forward(view, *[torch.as_tensor(x) for x in b]).numpy()
        denom = sum(bounds[i].value ** 2 * np.sum((a[i] - b[i]) ** 2) for i in range(len(a)) if dyn[i])
        worst = max(worst, float(np.sum((fa - fb) ** 2) / denom))
    return worst


CASES = [  # shapes of the inputs; which are analysed
    ([(2, 3)], [True]),
    ([(2, 3), (2, 3)], [True, True]),
    ([(2, 3), (3,)], [True, True]),
    ([(1, 3), (4, 1), (4, 3)], [True, True, False]),
    ([(2, 3), ()], [True, False]),
    ([(4, 1, 3), (2, 1)], [True, True]),
]


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize("shapes,dyn", CASES)
def test_max_min(op, shapes, dyn):
    rng = np.random.default_rng(len(shapes))
    arrays = [rng.normal(size=s).astype(np.float32) for s in shapes]
    node = helper.make_node(op, [f"a{i}" for i in range(len(shapes))], ["y"])
    for opset in (8, 12, 13, 17):
        assert_matches_ort(node, arrays, dyn, opset=opset)
    view = nodeview(node, arrays, dyn)
    r = rule_for(view)
    assert r.combine == "l2"
    bounds = r.bounds(view)
    out = np.broadcast_shapes(*shapes)
    for i, d in enumerate(dyn):
        if not d:
            assert i not in bounds
            continue
        assert bounds[i].value == pytest.approx(math.sqrt(math.prod(out) / math.prod(shapes[i])), rel=1e-15)
        # the partial bound holds (other inputs fixed) …
        assert sampled_max_ratio(input_fn(view, arrays, i), shapes[i], n_pairs=60) <= bounds[i].value * (1 + 1e-12)
        # … and is realised: input i far above (below for Min) the others, perturbed alone
        big = [a.astype(np.float64) for a in arrays]
        sign = 1.0 if op == "Max" else -1.0
        big[i] = big[i] + sign * 100.0
        fn = input_fn(view, big, i)
        d_ = rng.normal(size=shapes[i])
        x0 = torch.as_tensor(big[i])
        ratio = float(torch.linalg.vector_norm(fn(x0 + torch.as_tensor(d_ * 1e-3)) - fn(x0))) / (np.linalg.norm(d_) * 1e-3)
        assert ratio == pytest.approx(bounds[i].value, rel=1e-9)
    # joint moves: ‖Δy‖² ≤ Σ copies_i ‖Δa_i‖² (the ℓ2 combination)
    assert _joint_ratio(view, arrays, dyn, n_pairs=80) <= 1 + 1e-12


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_minus_inf_constant(op):
    # jax2tf writes relu as Max(-inf, x)… and Min(+inf, x) appears too: constants, bound 1
    c = np.array(-np.inf if op == "Max" else np.inf, np.float32)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    node = helper.make_node(op, ["c", "x"], ["y"])
    assert_matches_ort(node, [c, x], [False, True])
    view = nodeview(node, [c, x], [False, True])
    assert rule_for(view).bounds(view) == {1: rule_for(view).bounds(view)[1]}
    assert rule_for(view).bounds(view)[1].value == 1.0
    np.testing.assert_array_equal(rule_for(view).forward(view, torch.as_tensor(c), torch.as_tensor(x)).numpy(), x)


REDUCE_CASES = [  # (axes, keepdims, noop_with_empty_axes)
    ([1], 1, 0), ([-1], 0, 0), ([0, 2], 1, 0), ([-3, -1], 0, 0), (None, 1, 0), (None, 0, 0), (None, 1, 1), ([1, -1], 1, 1),
]


def _reduce_node(op, axes, keepdims, noop, opset):
    axes_as_input = opset >= (13 if op == "ReduceSum" else 18)
    attrs = {"keepdims": keepdims}
    if axes_as_input:
        attrs["noop_with_empty_axes"] = noop
    elif axes is not None:
        attrs["axes"] = axes
    inputs = ["x"] + (["axes"] if axes_as_input and axes is not None else [])
    return helper.make_node(op, inputs, ["y"], **attrs), axes_as_input


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceL2", "ReduceSum"])
@pytest.mark.parametrize("axes,keepdims,noop", REDUCE_CASES)
def test_reductions(op, axes, keepdims, noop):
    x = np.random.default_rng(7).normal(size=(2, 3, 4)).astype(np.float32)
    for opset in assert_versions_covered(op):
        node, as_input = _reduce_node(op, axes, keepdims, noop, max(opset, 11))
        if noop and not as_input:
            continue
        arrays = [x] + ([np.array(axes, np.int64)] if as_input and axes is not None else [])
        dyn = [True] + [False] * (len(arrays) - 1)
        assert_matches_ort(node, arrays, dyn, opset=max(opset, 11))
        view = nodeview(node, arrays, dyn, max(opset, 11))
        r = rule_for(view)
        r.check(view)
        identity = noop and as_input and axes is None
        group = 1 if identity else math.prod(x.shape[a] for a in ([0, 1, 2] if axes is None else axes))
        if op == "ReduceSum":
            bound, exact = check_norm(view, arrays, n_pairs=40)
            assert bound.value == pytest.approx(math.sqrt(group), rel=1e-15) and bound.label == Label.EXACT
            continue
        bound = r.bounds(view)[0]
        assert bound.value == 1.0 and bound.label == Label.EXACT
        fn = input_fn(view, arrays, 0)
        assert sampled_max_ratio(fn, x.shape, n_pairs=60) <= 1.0 + 1e-12
        # realised: perturb along a direction that moves each group's max/min/norm at rate 1
        x64 = torch.as_tensor(x.astype(np.float64))
        d = x64 / torch.linalg.vector_norm(x64) if op == "ReduceL2" else torch.zeros_like(x64)
        if op != "ReduceL2":
            d.view(-1)[int(torch.argmax(x64) if op == "ReduceMax" else torch.argmin(x64))] = 1.0
        t = 1e-4
        ratio = float(torch.linalg.vector_norm(fn(x64 + t * d) - fn(x64))) / t
        assert ratio == pytest.approx(1.0, rel=1e-9)


def test_conformance():
    for op in ("Max", "Min"):
        checked, skipped = conformance(op, dynamic_inputs=(0, 1, 2))
        assert checked >= 3, skipped
    for op in ("ReduceMax", "ReduceMin", "ReduceL2", "ReduceSum"):
        checked, skipped = conformance(op)
        assert checked >= 6, (op, skipped)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceL2"])
def test_empty_group_is_constant(op):
    x = np.zeros((2, 0, 3), np.float32)
    node = helper.make_node(op, ["x"], ["y"], axes=[1], keepdims=1)
    assert_matches_ort(node, [x], [True], opset=13)
    view = nodeview(node, [x], [True], 13)
    assert rule_for(view).bounds(view)[0].value == 0.0


# ------------------------------------------------------------------------------------ CumSum
def test_cumsum_versions_covered():
    assert assert_versions_covered("CumSum") == [11, 14]


@pytest.mark.parametrize("axis", [0, 1, -1, -3])
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumsum(axis, exclusive, reverse):
    """onnxruntime's values, and the closed-form norm against the SVD of the materialised operator."""
    x = np.random.default_rng(5).normal(size=(3, 5, 2)).astype(np.float32)
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    arrays = [x, np.array(axis, np.int64)]
    for opset in (11, 14):
        assert_matches_ort(node, arrays, [True, False], opset=opset)
    view = nodeview(node, arrays, [True, False], 14)
    check_norm(view, arrays, rel=1e-7, n_pairs=30)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_cumsum_closed_form_realised(n):
    """The top singular vector of the explicit matrix of ones (float64 SVD, independent of the closed
    form), fed to onnxruntime (float64), realises the bound to 1e-6; exclusive uses n − 1."""
    for exclusive in (0, 1):
        node = helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive)
        m = n - exclusive
        v = np.linalg.svd(np.tril(np.ones((m, m))))[2][0] if m else np.zeros(0)
        x = np.concatenate([v, np.zeros(exclusive)]) if exclusive else v        # the dropped last entry: 0
        arrays = [x.astype(np.float64), np.array(0, np.int64)]
        view = nodeview(node, arrays, [True, False], 14)
        bound = rule_for(view).certified_norm(view).value
        realised = np.linalg.norm(ort_run(node, arrays, 14)[0]) / max(np.linalg.norm(x), 1e-300)
        assert bound >= realised
        assert realised == pytest.approx(bound, rel=1e-6, abs=1e-12)
