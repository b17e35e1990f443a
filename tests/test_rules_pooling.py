"""Pooling and ReduceMean: torch semantics vs onnxruntime (pads, auto_pad, ceil_mode,
dilations, count_include_pad) and ONNX cases; MaxPool's bound vs onnxruntime's own worst case
and convnorm's closed form; average norms vs materialised operators."""
import itertools
import math

import numpy as np
import pytest
import torch
from onnx import helper

from lipgraph.certify.conv import maxpool_bound
from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import Label
from rulecheck import (assert_matches_ort, assert_versions_covered, conformance, input_fn, materialised_norm,
                       nodeview, ort_run, rule_for, sampled_max_ratio, torch_forward)


def test_versions_covered():
    assert assert_versions_covered("MaxPool") == [11, 12, 22]
    assert assert_versions_covered("AveragePool") == [11, 19, 22]
    assert assert_versions_covered("GlobalMaxPool") == [1, 22]
    assert assert_versions_covered("GlobalAveragePool") == [1, 22]
    assert assert_versions_covered("ReduceMean") == [11, 13, 18]


def _pool_configs():
    """(kernel, strides, pads or auto_pad, ceil_mode, dilations, height) on a (1, 2, H, 5) input."""
    out = []
    for k, s, pad, cm, dil, h in itertools.product((2, 3), (1, 2, 3), ((0, 0), (1, 0), (1, 1), "SAME_UPPER",
                                                                       "SAME_LOWER", "VALID"),
                                                   (0, 1), (1, 2), (6, 7)):
        if isinstance(pad, str) and (dil > 1 or s > k):
            continue            # SAME+dilation: refused (tested below); s > k: onnxruntime rejects SAME
        out.append((k, s, pad, cm, dil, h))
    return out[::3]             # a third of the grid keeps the file fast; the subsample is fixed


def _pool_node(op, k, s, pad, cm, dil, cip=None):
    attrs = dict(kernel_shape=[k, 2], strides=[s, 1], ceil_mode=cm)
    if isinstance(pad, str):
        attrs["auto_pad"] = pad
    else:
        attrs["pads"] = [pad[0], 1, pad[1], 0]
    if dil > 1:
        attrs["dilations"] = [dil, 1]
    if cip is not None:
        attrs["count_include_pad"] = cip
    return helper.make_node(op, ["x"], ["y"], **attrs)


def _ort_worst_ratio(node, spatial, opset):
    """max_j ‖f(e_j) − f(0)‖ with f run by onnxruntime (batched over j): the largest ratio any
    one-entry perturbation of 0 realises — for MaxPool exactly √(max windows reading one entry)."""
    n = math.prod(spatial)
    basis = np.eye(n, dtype=np.float32).reshape(n, 1, *spatial)
    y = ort_run(node, [basis], opset)[0].reshape(n, -1)
    y0 = ort_run(node, [np.zeros((1, 1, *spatial), np.float32)], opset)[0].reshape(1, -1)
    return float(np.max(np.linalg.norm(y - y0, axis=1)))


@pytest.mark.parametrize("k,s,pad,cm,dil,h", _pool_configs())
def test_maxpool(k, s, pad, cm, dil, h):
    node = _pool_node("MaxPool", k, s, pad, cm, dil)
    x = np.random.default_rng(k * 100 + s * 10 + h).normal(size=(1, 2, h, 5)).astype(np.float32)
    for opset in (11, 12, 22):
        assert_matches_ort(node, [x], [True], opset=opset)
    view = nodeview(node, [x], [True], 22)
    r = rule_for(view)
    r.check(view)
    bound = r.bounds(view)[0]
    assert bound.label == Label.EXACT
    assert bound.value == pytest.approx(_ort_worst_ratio(node, (h, 5), 22), rel=1e-6)   # exact
    assert bound.value <= maxpool_bound([k, 2], [s, 1], [dil, 1]).value                 # ≤ closed form
    assert sampled_max_ratio(input_fn(view, [x], 0), x.shape, n_pairs=40) <= bound.value * (1 + 1e-9)


@pytest.mark.parametrize("k,s,pad,cm,dil,h", _pool_configs())
@pytest.mark.parametrize("cip", [0, 1])
def test_averagepool(k, s, pad, cm, dil, h, cip):
    node = _pool_node("AveragePool", k, s, pad, cm, dil, cip)
    x = np.random.default_rng(k * 100 + s * 10 + h).normal(size=(1, 2, h, 5)).astype(np.float32)
    for opset in ((19, 22) if dil > 1 else (11, 19, 22)):
        assert_matches_ort(node, [x], [True], opset=opset)
    view = nodeview(node, [x], [True], 22)
    r = rule_for(view)
    r.check(view)
    bound = r.certified_norm(view)
    exact = materialised_norm(input_fn(view, [x], 0), x.shape)
    assert bound.value >= exact
    assert bound.value == pytest.approx(exact, rel=1e-7)


def test_maxpool_3x3_stride2_worst_case_pair():
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2])
    x = np.zeros((1, 1, 5, 5), np.float32)
    view = nodeview(node, [x], [True])
    assert rule_for(view).bounds(view)[0].value == 2.0
    # entry (2, 2) is read by all four windows: raise it alone and every output moves by 1
    y = x.copy()
    y[0, 0, 2, 2] = 1.0
    fx, fy = ort_run(node, [x])[0], ort_run(node, [y])[0]
    assert np.linalg.norm(fy - fx) / np.linalg.norm(y - x) == pytest.approx(2.0, abs=1e-6)
    assert maxpool_bound([3, 3], [2, 2]).value == pytest.approx(2.0)


@pytest.mark.parametrize("op,shape,attrs", [
    ("MaxPool", (1, 2, 9), dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
    ("MaxPool", (1, 1, 4, 5, 6), dict(kernel_shape=[2, 3, 2], strides=[1, 2, 2], ceil_mode=1)),
    ("AveragePool", (1, 2, 9), dict(kernel_shape=[3], strides=[2], pads=[1, 2], ceil_mode=1)),
    ("AveragePool", (1, 1, 4, 5, 6), dict(kernel_shape=[2, 3, 2], strides=[1, 2, 2], pads=[0, 1, 1, 1, 0, 1],
                                         count_include_pad=1)),
])
def test_pool_1d_3d(op, shape, attrs):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    x = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    assert_matches_ort(node, [x], [True], opset=22)
    view = nodeview(node, [x], [True], 22)
    fn = input_fn(view, [x], 0)
    if op == "MaxPool":
        bound = rule_for(view).bounds(view)[0].value
        assert bound == pytest.approx(_ort_worst_ratio(node, shape[2:], 22), rel=1e-6)
        assert sampled_max_ratio(fn, shape, n_pairs=40) <= bound * (1 + 1e-9)
    else:
        exact = materialised_norm(fn, shape)
        assert rule_for(view).certified_norm(view).value == pytest.approx(exact, rel=1e-7)


def test_pool_not_applicable():
    x = np.zeros((1, 1, 6, 6), np.float32)
    for op in ("MaxPool", "AveragePool"):
        node = helper.make_node(op, ["x"], ["y"], kernel_shape=[2, 2], auto_pad="SAME_UPPER", dilations=[2, 2])
        view = nodeview(node, [x], [True], 22)
        with pytest.raises(RuleNotApplicable):
            rule_for(view).check(view)
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2])
    view = nodeview(node, [x], [True], 22)
    with pytest.raises(RuleNotApplicable):
        rule_for(view).check(view)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 7), (1, 1, 2, 3, 2)])
def test_global_pools(shape):
    x = np.random.default_rng(6).normal(size=shape).astype(np.float32)
    m = math.prod(shape[2:])
    for op in ("GlobalMaxPool", "GlobalAveragePool"):
        node = helper.make_node(op, ["x"], ["y"])
        for opset in (11, 22):
            assert_matches_ort(node, [x], [True], opset=opset)
        view = nodeview(node, [x], [True], 22)
        fn = input_fn(view, [x], 0)
        if op == "GlobalMaxPool":
            assert rule_for(view).bounds(view)[0].value == 1.0
            assert sampled_max_ratio(fn, shape, n_pairs=60) <= 1.0 + 1e-12
            assert _ort_worst_ratio(node, shape[2:], 22) == pytest.approx(1.0)
        else:
            bound = rule_for(view).certified_norm(view)
            exact = materialised_norm(fn, shape)
            assert bound.value >= exact and bound.value == pytest.approx(1 / math.sqrt(m), rel=1e-12)


REDUCE = [((3, 4, 5), [1], 1, 0), ((3, 4, 5), [-1, 0], 0, 0), ((3, 4, 5), None, 1, 0), ((3, 4, 5), None, 0, 1),
          ((2, 3), [0, 1], 0, 0)]


@pytest.mark.parametrize("shape,axes,keepdims,noop", REDUCE)
def test_reducemean(shape, axes, keepdims, noop):
    x = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    for opset in (11, 13, 18):
        if opset < 18:
            if noop:
                continue
            node = helper.make_node("ReduceMean", ["x"], ["y"], keepdims=keepdims,
                                    **({"axes": axes} if axes is not None else {}))
            arrays, dyn = [x], [True]
        else:
            node = helper.make_node("ReduceMean", ["x", "axes"] if axes is not None else ["x"], ["y"],
                                    keepdims=keepdims, noop_with_empty_axes=noop)
            arrays = [x] + ([np.array(axes, np.int64)] if axes is not None else [])
            dyn = [True] + [False] * (len(arrays) - 1)
        assert_matches_ort(node, arrays, dyn, opset=opset)
        view = nodeview(node, arrays, dyn, opset)
        r = rule_for(view)
        r.check(view)
        bound = r.certified_norm(view)
        exact = materialised_norm(input_fn(view, arrays, 0), x.shape)
        assert bound.value >= exact and bound.value == pytest.approx(exact, rel=1e-9)
    count = 1 if noop else math.prod(shape[a] for a in (axes or range(len(shape))))
    assert bound.value == pytest.approx(1 / math.sqrt(count))


def test_reducemean_computed_axes_not_applicable():
    x = np.zeros((2, 3), np.float32)
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"])
    view = nodeview(node, [x, np.array([1], np.int64)], [True, True], 18)
    with pytest.raises(RuleNotApplicable):
        rule_for(view).check(view)


@pytest.mark.parametrize("op,minimum", [("MaxPool", 17), ("AveragePool", 20), ("GlobalMaxPool", 2),
                                        ("GlobalAveragePool", 2), ("ReduceMean", 8)])
def test_conformance(op, minimum):
    checked, skipped = conformance(op, dynamic_inputs=(0,))
    assert checked >= minimum, skipped


def _top_right_singular_vector(fn, shape) -> np.ndarray:
    """The input direction of largest gain of an affine fn, from its materialised matrix."""
    n = math.prod(shape)
    zero = fn(torch.zeros(shape, dtype=torch.float64)).reshape(-1)
    a = np.stack([(fn(torch.as_tensor(e.reshape(shape))).reshape(-1) - zero).numpy() for e in np.eye(n)], axis=1)
    return np.linalg.svd(a)[2][0].reshape(shape)


@pytest.mark.parametrize("op,shape,attrs,arrays", [
    ("AveragePool", (1, 2, 7, 6), dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1], count_include_pad=0), []),
    ("AveragePool", (1, 2, 7, 6), dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1], count_include_pad=1), []),
    ("AveragePool", (1, 1, 8, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0], ceil_mode=1), []),
    ("AveragePool", (1, 1, 8, 7), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, count_include_pad=1), []),
    ("GlobalAveragePool", (1, 3, 5, 4), {}, []),
    ("ReduceMean", (2, 3, 4), dict(keepdims=1), [np.array([1, 2], np.int64)]),
])
def test_average_bounds_sampled_and_worst_case_realised(op, shape, attrs, arrays):
    """Sampled ratios never exceed the certified norm, and a constructed pair (x, x + v), v the top
    right singular vector (for a global average the constant input), realises it through
    onnxruntime — so the closed form is attained, not just sound."""
    node = helper.make_node(op, ["x"] + (["axes"] if arrays else []), ["y"], **attrs)
    x = np.random.default_rng(9).normal(size=shape)
    full = [x.astype(np.float32)] + arrays
    view = nodeview(node, full, [True] + [False] * len(arrays), 18)
    bound = rule_for(view).certified_norm(view).value
    fn = input_fn(view, full, 0)
    assert sampled_max_ratio(fn, shape, n_pairs=60) <= bound * (1 + 1e-9)
    v = np.ones(shape) if op == "GlobalAveragePool" else _top_right_singular_vector(fn, shape)
    if op == "GlobalAveragePool":
        assert bound == pytest.approx(1 / math.sqrt(math.prod(shape[2:])), rel=1e-12)
    y = x + v
    fx, fy = (ort_run(node, [t.astype(np.float32)] + arrays, 18)[0].astype(np.float64) for t in (x, y))
    realised = np.linalg.norm(fy - fx) / np.linalg.norm(y.astype(np.float32).astype(np.float64) - x.astype(np.float32))
    assert realised == pytest.approx(bound, rel=1e-5)
    assert realised <= bound * (1 + 1e-5)  # float32 onnxruntime: within its rounding


@pytest.mark.parametrize("cip", [0, 1])
@pytest.mark.parametrize("auto_pad", ["VALID", "NOTSET"])
def test_averagepool_ceil_mode_window_wider_than_input(cip, auto_pad):
    """ceil_mode with a (dilated) window wider than the input: onnxruntime still produces one
    window (positions 0 and 2 of 3); the certified norm must not be an 'exact' 0."""
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3], strides=[3], dilations=[2],
                            ceil_mode=1, count_include_pad=cip, auto_pad=auto_pad)
    x = np.random.default_rng(7).normal(size=(1, 1, 3)).astype(np.float32)
    assert_matches_ort(node, [x], [True], opset=19)
    view = nodeview(node, [x], [True], 19)
    bound = rule_for(view).certified_norm(view)
    exact = materialised_norm(input_fn(view, [x], 0), x.shape)
    assert exact > 0.5
    assert bound.value >= exact
    assert bound.value == pytest.approx(exact, rel=1e-7)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("n,k,s,outputs", [(1, 2, 2, 1), (3, 5, 3, 1), (1, 2, 1, 0), (2, 5, 2, 0)])
def test_pool_window_wider_than_input(op, n, k, s, outputs):
    """Found by the semantic sweep: onnxruntime sizes the output with C++ division, truncating
    toward zero, so a window wider than the (padded) input by less than a stride still gives
    one output (the spec's floor gives none), and wider by a stride or more an empty output.
    The rule used to raise RuleNotApplicable from its forward on both."""
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[k], strides=[s])
    x = np.random.default_rng(n + k).normal(size=(1, 2, n)).astype(np.float32)
    assert ort_run(node, [x], 17)[0].shape == (1, 2, outputs)
    assert_matches_ort(node, [x], [True], opset=17)
    view = nodeview(node, [x], [True], 17)
    r = rule_for(view)
    r.check(view)
    exact = materialised_norm(input_fn(view, [x], 0), x.shape) if op == "AveragePool" else float(outputs)
    bound = r.certified_norm(view) if op == "AveragePool" else r.bounds(view)[0]
    assert bound.value == pytest.approx(exact, rel=1e-7, abs=1e-300)


def test_maxpool_window_reading_only_padding():
    """Found by the semantic sweep: with dilation a window can skip the input and read only
    padding; onnxruntime returns the dtype's lowest finite value there, the forward gave −inf
    (so f(x) − f(0) was NaN)."""
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 2], dilations=[1, 2], pads=[0, 1, 0, 1])
    x = np.random.default_rng(1).normal(size=(1, 1, 1, 1))
    expected = ort_run(node, [x], 17)[0]
    got = torch_forward(nodeview(node, [x], [True], 17), [x])[0].numpy()
    assert np.isfinite(got).all() and np.array_equal(got, expected)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("n,k,s", [(3, 1, 3), (4, 1, 4), (5, 2, 5), (10, 1, 6)])   # total −2, −3, −3, −3
def test_same_padding_negative_when_stride_exceeds_kernel(auto_pad, n, k, s):
    """Found by the semantic sweep: with SAME_* the total padding (out − 1)·s + k − n is negative
    when the stride is wider than the kernel; onnxruntime's float64 MaxPool does not clamp it, so
    the windows start inside the input (n = 3, k = 1, s = 3 reads x[1], not x[0]). (Its float32
    kernels refuse such negative padding at run time; AveragePool has no float64 kernel, so
    there the shared geometry is checked through MaxPool only.)"""
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[k], strides=[s], auto_pad=auto_pad)
    x = np.random.default_rng(n * k * s).normal(size=(1, 2, n))
    expected = ort_run(node, [x], 17)[0]
    view = nodeview(node, [x], [True], 17)
    np.testing.assert_array_equal(torch_forward(view, [x])[0].numpy(), expected)
    zero = ort_run(node, [np.zeros_like(x)], 17)[0]   # the bound is exact, realised by (0, e_j)
    realised = max(np.linalg.norm(ort_run(node, [e.reshape(x.shape)], 17)[0] - zero) for e in np.eye(x.size))
    assert rule_for(view).bounds(view)[0].value == pytest.approx(realised, rel=1e-9)


@pytest.mark.parametrize("opset,applicable", [(11, False), (19, True)])
def test_averagepool_include_pad_window_wider_than_padded_input(opset, applicable):
    """Found by the semantic sweep: n = 1, k = 2, s = 2, count_include_pad = 1 keeps one window
    (C++ truncation); onnxruntime's v10/v11 kernels divide it by 2 (the whole kernel), its v19+
    kernels by 1 (clipped to the padded input, as lipgraph does). Before v19: not applicable."""
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2], strides=[2], count_include_pad=1)
    x = np.full((1, 1, 1), 0.75, np.float32)
    assert ort_run(node, [x], opset)[0].ravel().tolist() == [0.375 if opset < 19 else 0.75]
    view = nodeview(node, [x], [True], opset)
    if applicable:
        rule_for(view).check(view)
        assert_matches_ort(node, [x], [True], opset=opset)
    else:
        with pytest.raises(RuleNotApplicable, match="count_include_pad"):
            rule_for(view).check(view)
