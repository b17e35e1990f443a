"""Interval soundness of every rule (the box pass, design §9): on one-node models drawn from the
op's attribute space (tests/sweep_strategies.py), random boxes around the drawn inputs — points
(lo = hi), small, unit and huge ones — give output ranges that contain the rule's float64 output
at sampled points of the box and at its corners; an activation's local slopes contain the
mean-value slopes of pairs inside the box; a node's local bounds are ≥ sampled ratios of pairs
inside the box. Fused activations (no ONNX schema) are checked the same way on their own."""
from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

from lipgraph.certify.intervals import as_float
from lipgraph.errors import RuleNotApplicable
from lipgraph.nodeview import make_nodeview
from lipgraph.passes.box import node_output_ranges
from lipgraph.registry import FUSED_DOMAIN, REGISTRY, Kind, has_own
from rulecheck import nodeview, rule_for, torch_forward
from sweep_strategies import CASES
from test_semantics_sweep import opset_for, ort_reference, registered_ops, versions

EXAMPLES = int(os.environ.get("LIPGRAPH_BOX_EXAMPLES", "6"))   # per op, over its versions
RADII = (0.0, 1e-3, 1.0, 1e4)
SAMPLES = 24


def _box(rng, a, radius):
    a = np.asarray(a, dtype=np.float64)
    return a - radius * rng.random(a.shape), a + radius * rng.random(a.shape)


def _status(rule, view):
    try:
        rule.check(view)
        return "ok"
    except RuleNotApplicable:
        return "not-applicable"


def _points(rng, boxes, dynamic, arrays, n):
    """Sampled input lists: uniform in the box, plus its two corner points."""
    out = []
    for k in range(n + 2):
        args = []
        for i, a in enumerate(arrays):
            if not dynamic[i] or boxes[i] is None:
                args.append(a)
                continue
            lo, hi = boxes[i]
            t = 0.0 if k == n else 1.0 if k == n + 1 else rng.random(lo.shape)
            args.append(lo + t * (hi - lo))
        out.append(args)
    return out


def check_box(view, arrays, rng):
    rule = rule_for(view)
    status = _status(rule, view)
    info = SimpleNamespace(status=status)
    floats = [i for i, a in enumerate(arrays) if a is not None and view.dynamic[i] and np.asarray(a).dtype.kind == "f"]
    if not floats:
        return
    radius = RADII[rng.integers(len(RADII))]
    boxes = {i: _box(rng, arrays[i], radius) for i in floats}
    ins = []
    for i, a in enumerate(arrays):
        if a is None:
            ins.append(None)
        elif i in boxes:
            ins.append(tuple(torch.as_tensor(v) for v in boxes[i]))
        else:
            c = torch.as_tensor(np.array(a))
            c = c.double() if c.is_floating_point() else c
            ins.append((c, c))
    shapes = [tuple(t.shape) for t in torch_forward(view, arrays)]
    ranges = node_output_ranges(rule, info, view, tuple(ins), shapes, [])
    points = _points(rng, boxes, [i in boxes for i in range(len(arrays))], arrays, SAMPLES)
    outs = [torch_forward(view, p) for p in points]
    for k, (lo, hi) in enumerate(ranges):
        if not lo.is_floating_point():
            continue
        for got in outs:
            y = got[k].detach().double()
            ok = torch.isnan(y) | ((y >= lo) & (y <= hi))
            assert bool(ok.all()), (f"output {k} outside its range: {y[~ok][:3].tolist()} not in "
                                    f"[{lo[~ok][:3].tolist()}, {hi[~ok][:3].tolist()}] (radius {radius})")
    if radius == 0.0:
        return
    usable = status == "ok" or rule.box_only
    if usable and rule.kind is Kind.ACTIVATION and floats == [0]:
        _check_local_slopes(rule, view, ins[0], outs, points)
    elif usable and (rule.kind in (Kind.NONLINEAR, Kind.COMBINE) or has_own(rule, "local_bounds")):
        _check_local_bounds(rule, view, tuple(ins), points, floats, rng)


def _check_local_slopes(rule, view, x_range, outs, points):
    try:
        lo, hi = (np.asarray(v, dtype=np.float64) for v in rule.local_slopes(view, x_range))
    except RuleNotApplicable:
        return
    _check_relaxation(rule, view, x_range, outs, points)
    x0, y0 = np.asarray(points[0][0], np.float64), outs[0][0].detach().numpy()
    for p, out in zip(points[1:], outs[1:]):
        x1, y1 = np.asarray(p[0], np.float64), out[0].detach().numpy()
        h = x1 - x0
        keep = np.abs(h) > 1e-7 * (1 + np.abs(x0))
        dq = np.where(keep, (y1 - y0) / np.where(keep, h, 1.0), 0.0)
        slack = 1e-12 * (np.abs(y0) + np.abs(y1) + 1) / np.where(keep, np.abs(h), 1.0)
        lo_b, hi_b = np.broadcast_to(lo, dq.shape), np.broadcast_to(hi, dq.shape)
        bad = keep & np.isfinite(dq) & ((dq < lo_b - slack) | (dq > hi_b + slack))
        assert not bad.any(), f"slope {dq[bad][:3]} outside [{lo_b[bad][:3]}, {hi_b[bad][:3]}]"


def _check_relaxation(rule, view, x_range, outs, points):
    """The lines of ``linear_relaxation`` lie below and above the sampled outputs (finite boxes)."""
    if not (torch.isfinite(x_range[0]).all() and torch.isfinite(x_range[1]).all()):
        return
    a_lo, b_lo, a_hi, b_hi = (np.asarray(v, np.float64) for v in rule.linear_relaxation(view, x_range))
    for p, out in zip(points, outs):
        x, y = np.asarray(p[0], np.float64), out[0].detach().numpy()
        slack = 1e-9 * (1 + np.abs(y) + np.abs(a_lo * x) + np.abs(a_hi * x))
        assert np.all(a_lo * x + b_lo <= y + slack) and np.all(y <= a_hi * x + b_hi + slack), "relaxation violated"


def _check_local_bounds(rule, view, ins, points, floats, rng):
    try:
        bounds = rule.local_bounds(view, ins)
    except (RuleNotApplicable, NotImplementedError):
        return
    for i in floats:
        b = bounds[i].value
        for p, q in zip(points[:-1:2], points[1::2]):
            a = list(p)
            a2 = list(p)
            a2[i] = q[i]
            d = np.linalg.norm(np.asarray(a[i], np.float64) - np.asarray(a2[i], np.float64))
            if d == 0:
                continue
            f0, f1 = (torch_forward(view, v)[0].detach().numpy() for v in (a, a2))
            ratio = np.linalg.norm(f1 - f0) / d
            slack = 1e-12 * (np.linalg.norm(f0) + np.linalg.norm(f1)) / d
            assert ratio <= b * (1 + 1e-9) + slack, f"ratio {ratio} above the local bound {bounds[i]} of input {i}"


SWEPT = registered_ops()


@pytest.mark.parametrize("op", SWEPT)
def test_intervals_sound(op):
    """Every registered op: ranges, local slopes and local bounds hold on random boxes."""
    vs = versions(op)

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data(), seed=st.integers(0, 2**32 - 1))
    def sweep(data, seed):
        version = data.draw(st.sampled_from(vs))
        case = data.draw(CASES[op](version))
        opset = opset_for(op, version)
        _, arrays, outs = ort_reference(case, opset)    # rejects draws onnxruntime refuses
        view = nodeview(case.node, arrays, case.dynamic, opset, outs=outs)
        check_box(view, case.arrays, np.random.default_rng(seed))

    sweep()


FUSED = [(op, attrs) for op, attrs in [("SiLU", {}), ("Swish", {"beta": 1.7}), ("Swish", {"beta": -0.6}),
                                        ("Swish", {"beta": 0.0}), ("HardSwish", {}), ("Mish", {}),
                                        ("Gelu", {}), ("Gelu", {"approximate": "tanh"})]]


@pytest.mark.parametrize("op,attrs", FUSED, ids=[f"{o}{a}" for o, a in FUSED])
def test_fused_intervals_sound(op, attrs):
    rng = np.random.default_rng(0)
    node = helper.make_node(op, ["x"], ["y"], domain=FUSED_DOMAIN, **attrs)
    rule, version = REGISTRY.resolve(FUSED_DOMAIN, op, 1)
    for scale in (0.5, 3.0, 30.0):
        x = rng.normal(size=(3, 40)) * scale
        view = make_nodeview(node, version, [x.shape], [x.shape], [True], {})
        for _ in range(4):
            check_box(view, [x], rng)


def test_degenerate_and_unknown_ranges():
    """A point box gives the point's value; an unknown (±inf) input gives a range that stays sound
    (sigmoid's [0, 1] from the ends) and never NaN."""
    rule, version = REGISTRY.resolve("", "Sigmoid", 13)
    node = helper.make_node("Sigmoid", ["x"], ["y"])
    view = make_nodeview(node, version, [(4,)], [(4,)], [True], {})
    inf = torch.full((4,), math.inf, dtype=torch.float64)
    (lo, hi), = node_output_ranges(rule, None, view, ((-inf, inf),), [(4,)], [])
    assert torch.all(lo <= 0) and torch.all(hi >= 1) and torch.all(hi <= 1 + 1e-9)
    x = torch.tensor([0.3, -2.0, 5.0, 0.0], dtype=torch.float64)
    (lo, hi), = node_output_ranges(rule, None, view, ((x, x),), [(4,)], [])
    y = torch.sigmoid(x)
    assert torch.all(lo <= y) and torch.all(y <= hi) and float((hi - lo).max()) < 1e-9


FUSED_NORMS = [("LayerNorm", {"axes": [1], "epsilon": 1e-5}, True), ("LayerNorm", {"axes": [0, 2], "epsilon": 1e-3}, True),
               ("RMSNorm", {"axes": [2], "epsilon": 1e-6}, True), ("RMSNorm", {"axes": [1, 2], "epsilon": 1e-2}, False),
               ("Softmax", {"axes": [1]}, False), ("Softmax", {"axes": [0, 2]}, False),
               ("LogSoftmax", {"axes": [2]}, False), ("LogSoftmax", {"axes": [1, 2]}, False)]


@pytest.mark.parametrize("op,attrs,affine", FUSED_NORMS, ids=[f"{o}{a.get('axes')}" for o, a, _ in FUSED_NORMS])
def test_fused_normalisation_intervals_sound(op, attrs, affine):
    """The fused LayerNorm/RMSNorm (γ, β constant, slices over any axes) and Softmax/LogSoftmax:
    ranges hold at sampled points and the local bound at sampled pairs, on boxes of every radius;
    on a box far from zero variance (mean square) the local bound is below the global one."""
    rng = np.random.default_rng(1)
    shape = (2, 5, 3)
    inputs = ["x", "g", "b"] if affine else ["x"]
    node = helper.make_node(op, inputs, ["y"], domain=FUSED_DOMAIN, **attrs)
    rule, version = REGISTRY.resolve(FUSED_DOMAIN, op, 1)
    dims = attrs["axes"]
    gshape = tuple(shape[d] if d in dims else 1 for d in range(3))[min(dims):]
    consts = {1: rng.normal(size=gshape), 2: rng.normal(size=gshape)} if affine else {}
    view = make_nodeview(node, version, [shape] + [gshape] * len(consts), [shape], [True] + [False] * len(consts),
                         consts)
    for scale in (0.5, 3.0):
        x = rng.normal(size=shape) * scale
        for _ in range(6):
            check_box(view, [x] + [consts[i] for i in sorted(consts)], rng)
    if op in ("LayerNorm", "RMSNorm"):
        spread = np.linspace(-2, 2, 30).reshape(shape) + (0 if op == "LayerNorm" else 3)
        box = tuple(torch.as_tensor(v) for v in (spread - 0.01, spread + 0.01))
        local = rule.local_bounds(view, (box,) + tuple((torch.as_tensor(c),) * 2 for c in consts.values()))[0]
        assert local.value < rule.bounds(view)[0].value / 10


def _ranges(node, arrays, dynamic, boxes, opset=17):
    """Output ranges of a one-node model: ``boxes`` {input: (lo, hi)}, other inputs as points."""
    view = nodeview(node, arrays, dynamic, opset)
    ins = tuple(None if a is None else tuple(torch.as_tensor(v, dtype=torch.float64) for v in boxes[i]) if i in boxes
                else (as_float(torch.as_tensor(a)),) * 2 for i, a in enumerate(arrays))
    shapes = [tuple(t.shape) for t in torch_forward(view, arrays)]
    return view, node_output_ranges(rule_for(view), None, view, ins, shapes, [])


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_hidden_states_lie_in_minus_one_one(op):
    """Whatever the weights and the input box (here [−100, 100]), Y and Y_h lie in [−1, 1] with zero
    initial states (the interval arithmetic of the unrolled cell would give far more); the LSTM cell
    within ±T. Sampled outputs land inside."""
    rng = np.random.default_rng(0)
    steps, hidden, gates = 5, 4, {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    x = rng.normal(size=(steps, 1, 3)).astype(np.float32)
    w, r = (rng.normal(size=(1, gates * hidden, n)).astype(np.float32) * 3 for n in (3, hidden))
    outs = ["y", "y_h", "y_c"][:3 if op == "LSTM" else 2]
    node = helper.make_node(op, ["x", "w", "r"], outs, hidden_size=hidden)
    view, ranges = _ranges(node, [x, w, r], [True, False, False], {0: (x * 0 - 100, x * 0 + 100)})
    for k, (lo, hi) in enumerate(ranges[:2]):
        assert float(lo.min()) == pytest.approx(-1, abs=1e-9) and float(hi.max()) == pytest.approx(1, abs=1e-9)
    if op == "LSTM":
        assert float(ranges[2][1].max()) == pytest.approx(steps, rel=1e-9)
    for _ in range(20):
        got = torch_forward(view, [rng.uniform(-100, 100, size=x.shape).astype(np.float32), w, r])
        for (lo, hi), y in zip(ranges, got):
            assert bool(((y >= lo) & (y <= hi)).all())


def test_affine_ranges_of_cumsum_einsum_and_where():
    """CumSum's range is exact ([cumsum(lo), cumsum(hi)], nonnegative weights); Einsum's is centre ±
    |K|·radius (exact for a single contraction with a constant of one sign per output); Where with a
    constant condition picks each branch's range, a computed condition gives the hull."""
    rng = np.random.default_rng(1)
    lo, hi = rng.uniform(-1, 0, size=(2, 6)), rng.uniform(0, 1, size=(2, 6))
    x = ((lo + hi) / 2).astype(np.float32)
    _, ((y_lo, y_hi),) = _ranges(helper.make_node("CumSum", ["x", "axis"], ["y"]), [x, np.array(1)],
                                 [True, False], {0: (lo, hi)})
    assert np.allclose(y_lo, np.cumsum(lo, axis=1), atol=1e-12) and np.allclose(y_hi, np.cumsum(hi, axis=1), atol=1e-12)
    k = np.abs(rng.normal(size=(6, 3))).astype(np.float32)
    _, ((e_lo, e_hi),) = _ranges(helper.make_node("Einsum", ["x", "k"], ["y"], equation="ij,jk->ik"), [x, k],
                                 [True, False], {0: (lo, hi)})
    k = k.astype(np.float64)
    assert np.allclose(e_lo, lo @ k, atol=1e-12) and np.allclose(e_hi, hi @ k, atol=1e-12)
    cond = rng.random((2, 6)) < 0.5
    other = rng.normal(size=(2, 6)).astype(np.float32)
    where = helper.make_node("Where", ["c", "x", "z"], ["y"])
    _, ((w_lo, w_hi),) = _ranges(where, [cond, x, other], [False, True, False], {1: (lo, hi)})
    o64 = other.astype(np.float64)
    assert np.allclose(w_lo, np.where(cond, lo, o64), atol=1e-12) and np.allclose(w_hi, np.where(cond, hi, o64), atol=1e-12)
    view = nodeview(where, [cond, x, other], [True, True, False], 17)
    (w_lo, w_hi), = node_output_ranges(rule_for(view), SimpleNamespace(status="not-lipschitz"), view,
                                       ((torch.zeros(2, 6), torch.ones(2, 6)),
                                        tuple(torch.as_tensor(v) for v in (lo, hi)), (as_float(torch.as_tensor(other)),) * 2),
                                       [(2, 6)], [])
    assert np.allclose(w_lo, np.minimum(lo, o64), atol=1e-9) and np.allclose(w_hi, np.maximum(hi, o64), atol=1e-9)
