"""RNN, GRU, LSTM: torch semantics vs onnxruntime (directions, optional inputs, sequence_lens,
linear_before_reset, opsets 7/14/22; layout 1 against onnxruntime's layout 0 on transposed
tensors, since onnxruntime refuses layout 1), refused attributes, and the certified bound against
onnxruntime's ratios on random and gradient-ascended pairs, for every output."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from lipgraph.errors import RuleNotApplicable
from rulecheck import (OrtNode, assert_matches_ort, assert_versions_covered, conformance, make_nodeview, nodeview, rule_for,
                       torch_forward)

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
OUTPUTS = {"RNN": ["Y", "Y_h"], "GRU": ["Y", "Y_h"], "LSTM": ["Y", "Y_h", "Y_c"]}


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_versions_covered(op):
    assert assert_versions_covered(op, first_opset=7) == [7, 14, 22]


def make(op, direction="forward", steps=4, batch=2, inputs=3, hidden=3, optional=(), scale=1.0, seed=0,
         layout=0, **attrs):
    """(node, arrays, dynamic) of one recurrent node; ``optional`` names the optional inputs given
    (B, sequence_lens, initial_h, initial_c, P)."""
    rng = np.random.default_rng(seed)
    d, g = (2 if direction == "bidirectional" else 1), GATES[op]
    f32 = lambda *shape, s=scale: (rng.normal(size=shape) * s).astype(np.float32)  # noqa: E731
    state = (d, batch, hidden) if layout == 0 else (batch, d, hidden)
    table = {"B": f32(d, 2 * g * hidden),
             "sequence_lens": np.array([steps] + list(rng.integers(1, steps + 1, size=batch - 1)), np.int32),
             "initial_h": f32(*state, s=1.0), "initial_c": f32(*state, s=1.0), "P": f32(d, 3 * hidden)}
    order = ["B", "sequence_lens", "initial_h", "initial_c", "P"][:5 if op == "LSTM" else 3]
    names = ["X", "W", "R"] + [n if n in optional else "" for n in order]
    arrays = [f32(*((steps, batch, inputs) if layout == 0 else (batch, steps, inputs)), s=1.0),
              f32(d, g * hidden, inputs), f32(d, g * hidden, hidden)] + [table[n] if n in optional else None
                                                                        for n in order]
    while names[-1] == "":
        names.pop()
        arrays.pop()
    extra = {"layout": layout} if layout else {}
    node = helper.make_node(op, names, OUTPUTS[op], hidden_size=hidden, direction=direction, **extra, **attrs)
    return node, arrays, [i == 0 for i in range(len(arrays))]


ALL = ("B", "sequence_lens", "initial_h", "initial_c", "P")
CONFIGS = [(op, direction, optional, attrs)
           for op in ("RNN", "GRU", "LSTM")
           for direction in ("forward", "reverse", "bidirectional")
           for optional in ((), ALL, ("B", "initial_h"))
           for attrs in ([{"linear_before_reset": 0}, {"linear_before_reset": 1}] if op == "GRU" else [{}])]


@pytest.mark.parametrize("op,direction,optional,attrs", CONFIGS)
def test_forward_matches_onnxruntime(op, direction, optional, attrs):
    node, arrays, dyn = make(op, direction, optional=optional, **attrs)
    for opset in ((7, 14, 22) if optional == ALL else (14,)):
        assert_matches_ort(node, arrays, dyn, opset=opset)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_layout_1_is_layout_0_transposed(op, direction):
    """onnxruntime refuses layout = 1: compare with its layout-0 run on transposed tensors."""
    node1, arrays1, dyn = make(op, direction, optional=ALL, layout=1)
    node0, arrays0, _ = make(op, direction, optional=ALL, layout=0)
    arrays0 = list(arrays1)
    for i in (0, 5, 6):          # X [B,S,I] → [S,B,I]; states [B,D,H] → [D,B,H]
        if i < len(arrays0) and arrays0[i] is not None:
            arrays0[i] = np.ascontiguousarray(np.swapaxes(arrays1[i], 0, 1))
    expected = OrtNode(node0, arrays0, 14)(arrays0)
    out_shapes = [e.shape for e in expected]
    out_shapes = [(s[2], s[0], s[1], s[3]) for s in out_shapes[:1]] + [(s[1], s[0], s[2]) for s in out_shapes[1:]]
    from lipgraph.registry import REGISTRY
    view = make_nodeview(node1, REGISTRY.resolve("", op, 14)[1], [np.shape(a) if a is not None else None
                                                                  for a in arrays1],
                         out_shapes, dyn, {i: a for i, a in enumerate(arrays1) if i and a is not None})
    got = torch_forward(view, arrays1, dtype=torch.float32)
    np.testing.assert_allclose(got[0].numpy(), np.transpose(expected[0], (2, 0, 1, 3)), atol=1e-5, rtol=1e-5)
    for e, g in zip(expected[1:], got[1:]):
        np.testing.assert_allclose(g.numpy(), np.swapaxes(e, 0, 1), atol=1e-5, rtol=1e-5)
    rule_for(view).check(view)
    assert np.isfinite(rule_for(view).bounds(view)[0].value)


@pytest.mark.parametrize("attrs,why", [
    ({"activations": ["Relu", "Tanh", "Tanh"]}, "activations"),
    ({"clip": 1.0}, "clip"),
    ({"input_forget": 1}, "input_forget"),
    ({"activation_alpha": [0.5]}, "activation_alpha"),
])
def test_refused_attributes(attrs, why):
    node, arrays, dyn = make("LSTM", **attrs)
    view = make_nodeview(node, 14, [np.shape(a) for a in arrays], [None, None, None], dyn,
                         {i: a for i, a in enumerate(arrays) if i})
    with pytest.raises(RuleNotApplicable, match=why):
        rule_for(view).check(view)


def test_default_activations_written_out_are_accepted():
    node, arrays, dyn = make("GRU", "bidirectional", activations=["Sigmoid", "Tanh", "sigmoid", "tanh"])
    assert_matches_ort(node, arrays, dyn, opset=14)
    view = nodeview(node, arrays, dyn, 14)
    rule_for(view).check(view)


@pytest.mark.parametrize("computed", [1, 2, 5])
def test_computed_weights_or_state_are_not_applicable(computed):
    node, arrays, dyn = make("GRU", optional=("B", "initial_h"))
    dyn = [i in (0, computed) for i in range(len(arrays))]
    view = nodeview(node, arrays, dyn, 14)
    with pytest.raises(RuleNotApplicable, match="constant"):
        rule_for(view).check(view)


# ------------------------------------------------------------------------------ soundness
def ascend_pair(view, arrays, output, steps=40, seed=0):
    """A pair (x, y) found by gradient ascent on ‖f(x) − f(y)‖/‖x − y‖ through the rule's float64
    forward, from a random start near the origin (where the slopes are largest)."""
    gen = torch.Generator().manual_seed(seed)
    shape = np.shape(arrays[0])
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 0.3).requires_grad_(True)
    v = (torch.randn(shape, generator=gen, dtype=torch.float64) * 0.05).requires_grad_(True)
    opt = torch.optim.Adam([x, v], lr=0.02)
    rest = [None if a is None else torch.as_tensor(np.asarray(a)).to(torch.float64) if np.asarray(a).dtype.kind == "f"
            else torch.as_tensor(np.asarray(a)) for a in arrays[1:]]
    rule_obj = rule_for(view)
    for _ in range(steps):
        fx = rule_obj.forward(view, x, *rest)[output]
        fy = rule_obj.forward(view, x + v, *rest)[output]
        loss = -torch.linalg.vector_norm(fx - fy) / torch.linalg.vector_norm(v)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return x.detach().numpy(), (x + v).detach().numpy()


def ort_ratios(node, arrays, pairs, output):
    """onnxruntime's (float32) ratio of each pair, less its rounding allowance 64·eps·(‖f(a)‖ + ‖f(b)‖)/‖a − b‖
    (as the semantic sweep): what a sound bound must stay above."""
    session = OrtNode(node, arrays, 14)
    out = []
    for a, b in pairs:
        a, b = a.astype(np.float32), b.astype(np.float32)
        fa, fb = (session([v] + list(arrays[1:]))[output].astype(np.float64) for v in (a, b))
        dist = np.linalg.norm(a.astype(np.float64) - b)
        slack = 64 * np.finfo(np.float32).eps * (np.linalg.norm(fa) + np.linalg.norm(fb)) / dist
        out.append(np.linalg.norm(fa - fb) / dist - slack)
    return out


SOUND = [(op, direction, optional, scale)
         for op in ("RNN", "GRU", "LSTM") for direction in ("forward", "bidirectional")
         for optional, scale in (((), 0.3), (ALL, 1.5))]


@pytest.mark.parametrize("op,direction,optional,scale", SOUND)
def test_bound_above_onnxruntime_ratios(op, direction, optional, scale):
    node, arrays, dyn = make(op, direction, optional=optional, scale=scale, steps=3, hidden=2, batch=1)
    view = nodeview(node, arrays, dyn, 14)
    rule_for(view).check(view)
    bound = rule_for(view).bounds(view)[0].value
    rng = np.random.default_rng(1)
    x = arrays[0].astype(np.float64)
    random_pairs = [(x * s0, x * s0 + rng.normal(size=x.shape) * s) for s0 in (0.0, 1.0) for s in (1e-2, 1.0)]
    for output in range(len(OUTPUTS[op])):
        pairs = random_pairs + [ascend_pair(view, arrays, output, seed=k) for k in range(2)]
        ratios = ort_ratios(node, arrays, pairs, output)
        assert max(ratios) <= bound * (1 + 1e-9), (output, max(ratios), bound)


@pytest.mark.parametrize("op,attrs", [("RNN", {}), ("GRU", {"linear_before_reset": 0}),
                                      ("GRU", {"linear_before_reset": 1}), ("LSTM", {})])
def test_bound_above_jacobian_norms(op, attrs):
    """σ_max of the Jacobian (autograd through the forward checked against onnxruntime above) at
    inputs of several scales never exceeds the bound, for every output (for RNN it comes within a
    few per cent of it: the check can fail)."""
    node, arrays, dyn = make(op, "bidirectional", optional=("B", "initial_h", "initial_c", "P"), scale=2.0, steps=3,
                             hidden=2, batch=1, inputs=2, **attrs)
    view = nodeview(node, arrays, dyn, 14)
    rule_obj = rule_for(view)
    bound = rule_obj.bounds(view)[0].value
    rest = [None if a is None else torch.as_tensor(a).to(torch.float64) for a in arrays[1:]]
    gen = torch.Generator().manual_seed(0)
    for output in range(len(OUTPUTS[op])):
        fn = lambda x: rule_obj.forward(view, x, *rest)[output].reshape(-1)  # noqa: E731
        for scale in (0.1, 1.0, 3.0):
            for _ in range(10):
                x = torch.randn(arrays[0].shape, generator=gen, dtype=torch.float64) * scale
                jac = torch.autograd.functional.jacobian(fn, x).reshape(-1, x.numel())
                assert float(torch.linalg.matrix_norm(jac, 2)) <= bound * (1 + 1e-9)


def test_one_step_rnn_bound_is_realised():
    """One step, zero bias and state: h = tanh(W x) has constant ‖W‖ (slope 1 at 0), which the
    bound equals; a pair along W's top right singular vector near 0 realises it (the check can fail)."""
    node, arrays, dyn = make("RNN", steps=1, batch=1)
    view = nodeview(node, arrays, dyn, 14)
    bound = rule_for(view).bounds(view)[0].value
    w = arrays[1][0].astype(np.float64)
    top = np.linalg.svd(w)[2][0].reshape(1, 1, -1)
    ratio = ort_ratios(node, arrays, [(-1e-3 * top, 1e-3 * top)], 0)[0]
    assert bound * (1 - 1e-4) <= ratio <= bound * (1 + 1e-9), (ratio, bound)


def test_bound_grows_with_sequence_length_and_covers_each_length():
    """sequence_lens: the bound is the largest over the lengths present; shorter ones give less."""
    full, arrays, dyn = make("LSTM", optional=("sequence_lens",), steps=4, batch=2)
    b = {}
    for lens in ([4, 4], [2, 2], [4, 2]):
        arrays[4] = np.array(lens, np.int32)
        view = nodeview(full, arrays, dyn, 14)
        b[tuple(lens)] = rule_for(view).bounds(view)[0].value
    assert b[(2, 2)] < b[(4, 4)] == b[(4, 2)]


@pytest.mark.parametrize("name", ["lstm_ts", "lstm_dynamo", "bigru_ts", "bigru_dynamo"])
def test_zoo_recurrent_models_certified_and_sound(name):
    """The zoo's LSTM and bidirectional GRU models: finite certified bound, no unsupported op or
    node without a global bound, above the realised lower bound (its search ascends a smoothed
    surrogate) and above onnxruntime's ratios on random pairs of the whole model."""
    from pathlib import Path

    import onnxruntime as ort

    from lipgraph.options import LowerOptions, Options
    from lipgraph.pipeline import analyze

    path = Path(__file__).resolve().parents[1] / "models" / "zoo" / f"{name}.onnx"
    options = Options(methods=("autolip", "lower"), lower=LowerOptions(budget=0.3))   # a gradient-based search
    result = analyze(path, options)
    assert result.certified and np.isfinite(result.upper.value)
    assert not any(d.code in ("unsupported-op", "no-global-bound") for d in result.diagnostics)
    assert result.lower.value <= result.upper.value
    session = ort.InferenceSession(path.as_posix(), providers=["CPUExecutionProvider"])
    shape = [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    for s in (1e-2, 1.0):
        x = rng.normal(size=shape).astype(np.float32)
        y = (x + rng.normal(size=shape) * s).astype(np.float32)
        fx, fy = (session.run(None, {"x": v})[0].astype(np.float64) for v in (x, y))
        assert np.linalg.norm(fx - fy) / np.linalg.norm(x.astype(np.float64) - y) <= result.upper.value


def _single_lstm(tmp_path, **attrs):
    from onnx import TensorProto, numpy_helper
    node, arrays, _ = make("LSTM", steps=3, batch=1, **attrs)
    inits = [numpy_helper.from_array(a, n) for n, a in zip(node.input[1:], arrays[1:]) if n]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, arrays[0].shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    del node.output[1:]
    path = tmp_path / "lstm.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]).SerializeToString())
    return path


def test_refused_configuration_is_reported_not_a_crash(tmp_path):
    """An LSTM with clip: onnxruntime runs it, lipgraph's forward does not implement it and the rule
    refuses it — the onnxruntime cross-check skips the node (no bound rests on it) and the report says
    why, with no certified bound."""
    from lipgraph.options import Options
    from lipgraph.pipeline import analyze
    result = analyze(_single_lstm(tmp_path, clip=1.0), Options(methods=("autolip",)))
    assert not result.certified
    assert any(d.code == "no-global-bound" and "clip is not supported" in d.message for d in result.diagnostics)


def test_guard_refuses_an_admitted_configuration_that_does_not_execute(tmp_path, monkeypatch):
    """The skip above needs the rule to refuse the node: a rule that admits a configuration its forward
    does not implement is a bug, reported as a mismatch with onnxruntime."""
    from lipgraph.errors import SemanticMismatch
    from lipgraph.options import Options
    from lipgraph.pipeline import analyze
    from lipgraph.registry import REGISTRY
    monkeypatch.setattr(type(REGISTRY.resolve("", "LSTM", 14)[0]), "check", lambda self, node: None)
    with pytest.raises(SemanticMismatch, match="does not implement"):
        analyze(_single_lstm(tmp_path, clip=1.0), Options(methods=("autolip",)))


def test_long_sequences_use_the_hoelder_bound(monkeypatch):
    """Past ROWS_LIMIT steps ‖A‖₂ is bounded by √(‖A‖₁‖A‖_∞): never below the exact route, and
    above the realised one-step pair's ratio."""
    import lipgraph.rules.recurrent as recurrent
    node, arrays, dyn = make("LSTM", "bidirectional", optional=ALL, steps=5)
    view = nodeview(node, arrays, dyn, 14)
    exact = recurrent.recurrent_bound(view)
    monkeypatch.setattr(recurrent, "ROWS_LIMIT", 0)
    hoelder = recurrent.recurrent_bound(view)
    assert exact <= hoelder < 10 * exact


def test_overflowing_bound_is_not_applicable():
    """A long RNN with ‖R‖ ≈ 6: the bound ~6^600 exceeds float64 — not applicable, said so."""
    node, arrays, dyn = make("RNN", steps=600, batch=1, inputs=1, hidden=2, scale=4.0)
    view = nodeview(node, arrays, dyn, 14)
    with pytest.raises(RuleNotApplicable, match="exceeds float64 over 600 steps"):
        rule_for(view).check(view)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_conformance(op):
    """ONNX's node test cases (expected outputs from its reference), the batchwise (layout 1) ones included."""
    checked, skipped = conformance(op, dynamic_inputs=(0,))
    assert checked >= 3, skipped
    assert not [s for s in skipped if "batchwise" in s], skipped


BOXED = [(op, direction, optional, attrs)
         for op in ("RNN", "GRU", "LSTM") for direction in ("forward", "bidirectional")
         for optional in ((), ALL)
         for attrs in ([{"linear_before_reset": 0}, {"linear_before_reset": 1}] if op == "GRU" else [{}])]


@pytest.mark.parametrize("op,direction,optional,attrs", BOXED)
@pytest.mark.parametrize("centre,radius", [(0.0, 0.3), (1.5, 0.5)])
def test_local_bound_on_a_box_is_sound_and_never_above_the_global_one(op, direction, optional, attrs, centre, radius):
    """On X ∈ centre ± radius: σ_max of the Jacobian (autograd through the forward that matches
    onnxruntime) at sampled points, and onnxruntime's ratios of sampled pairs, never exceed the
    local bound (gate slopes and values over the box); it is at most the global bound."""
    node, arrays, dyn = make(op, direction, optional=optional, scale=1.5, steps=3, hidden=2, batch=1, inputs=2,
                             **attrs)
    view = nodeview(node, arrays, dyn, 14)
    rule_obj = rule_for(view)
    shape = np.shape(arrays[0])
    lo, hi = np.full(shape, centre - radius), np.full(shape, centre + radius)
    local = rule_obj.local_bounds(view, ((torch.as_tensor(lo), torch.as_tensor(hi)),) + (None,) * 7)[0].value
    assert local <= rule_obj.bounds(view)[0].value * (1 + 1e-9)
    rest = [None if a is None else torch.as_tensor(a).to(torch.float64) for a in arrays[1:]]
    rng = np.random.default_rng(0)
    points = [lo + rng.random(shape) * (hi - lo) for _ in range(12)] + [lo, hi]
    for output in range(len(OUTPUTS[op])):
        fn = lambda x: rule_obj.forward(view, x, *rest)[output].reshape(-1)  # noqa: E731
        for x in points:
            jac = torch.autograd.functional.jacobian(fn, torch.as_tensor(x)).reshape(-1, x.size)
            assert float(torch.linalg.matrix_norm(jac, 2)) <= local * (1 + 1e-9)
        pairs = [(a, np.clip(a + rng.normal(size=shape) * radius / 4, lo, hi)) for a in points[:6]]
        assert max(ort_ratios(node, arrays, pairs, output)) <= local * (1 + 1e-9)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_local_bound_shrinks_where_the_gates_saturate(op):
    """Inputs in [3, 4] with large weights saturate the gates: the local bound is far below the
    global one (at least 5× for these seeds; LSTM's cell growth is bounded by the forget gate)."""
    node, arrays, dyn = make(op, "forward", optional=("B",), scale=2.0, steps=6, hidden=3, batch=1, inputs=2, seed=3)
    view = nodeview(node, arrays, dyn, 14)
    shape = np.shape(arrays[0])
    box = (torch.full(shape, 3.0, dtype=torch.float64), torch.full(shape, 4.0, dtype=torch.float64))
    local = rule_for(view).local_bounds(view, (box,) + (None,) * 7)[0]
    glob = rule_for(view).bounds(view)[0].value
    assert local.label.is_bound and local.value * 5 <= glob, (local.value, glob)
    print(f"{op}: box [3, 4] {local.value:.4g}, global {glob:.4g}")
