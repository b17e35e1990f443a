"""Chains + SeqLip through the full ONNX pipeline, against independent computations:
brute-force SeqLip (itertools + numpy SVD on the initializers), joint activation patterns,
onnxruntime-sampled ratios, exact constants of non-negative ReLU nets, the LipSDP anchor,
and residual CNNs."""
from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS
from lipgraph.options import Options, SeqLipOptions
from lipgraph.pipeline import analyze
from lipgraph.labels import Label
from bruteforce import joint_patterns, seqlip_bruteforce, spec
from randgraphs import IR_VERSION, OPSET, random_mlp, sampled_ratio

MARGIN = 1e-7          # certify(): 1e-8 relative per factor, plus rounding
METHODS = ("autolip", "seqlip", "seqlip-greedy")
FAST = SeqLipOptions(exact_max=10, bnb_nodes=128, greedy_max=1 << 16, budget=20.0)


def _analyze(model, tmp_path, name="m.onnx", seqlip=None):
    path = tmp_path / name
    onnx.save(model, path)
    return analyze(path, Options(methods=METHODS, seqlip=seqlip or SeqLipOptions())), path


def _method(a, name):
    return next(m for m in a.methods if m.name == name)


def _mlp_weights(model):
    """(W_i (out×in) float64, slope box of the activation after it) from the ONNX graph."""
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    Ws, boxes = [], []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm":
            W = inits[node.input[1]]
            Ws.append(W if attrs.get("transB", 0) else W.T)
        elif node.op_type == "MatMul":
            Ws.append(inits[node.input[1]].T)
        elif node.op_type == "Relu":
            boxes.append((0.0, 1.0))
        elif node.op_type == "LeakyRelu":
            alpha = float(attrs.get("alpha", 0.01))
            boxes.append((min(alpha, 1.0), max(alpha, 1.0)))
        elif node.op_type == "Tanh":
            boxes.append((0.0, 1.0))
        elif node.op_type == "Sigmoid":
            boxes.append((0.0, 0.25))
        else:
            raise AssertionError(node.op_type)
    return Ws, boxes


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("seed", range(6))
def test_model_seqlip_equals_bruteforce(seed, tmp_path):
    rng = np.random.default_rng(seed)
    hidden = 2 + seed % 2
    widths = [int(rng.integers(2, 7))] + [int(rng.integers(3, 13)) for _ in range(hidden)] \
        + [int(rng.integers(1, 5))]
    act = ["Relu", "LeakyRelu", "Tanh", "Sigmoid"][seed % 4]
    model = random_mlp(seed, widths, act)
    a, _ = _analyze(model, tmp_path)
    Ws, boxes = _mlp_weights(model)
    bf = seqlip_bruteforce(Ws, boxes)
    seq = _method(a, "seqlip")
    assert seq.label is Label.CERTIFIED
    assert len(a.chains) == 1 and len(a.chains[0].factors) == hidden
    assert all(f.method.startswith("exact") for f in a.chains[0].factors)
    assert bf * (1 - 1e-9) <= seq.value <= bf * (1 + MARGIN), (widths, act, seq.value, bf)
    if sum(widths[1:-1]) <= 14:
        assert seq.value >= joint_patterns(Ws, boxes) * (1 - 1e-12)
    assert seq.value <= a.autolip.value * (1 + 1e-12)
    greedy = _method(a, "seqlip-greedy")
    assert greedy.label is Label.ESTIMATE and greedy.value <= seq.value * (1 + 1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_model_seqlip_abovejoint_patterns(seed, tmp_path):
    rng = np.random.default_rng(50 + seed)
    widths = [3] + [int(rng.integers(3, 6)) for _ in range(3)] + [2]
    model = random_mlp(50 + seed, widths, ["Relu", "LeakyRelu"][seed % 2])
    a, _ = _analyze(model, tmp_path)
    Ws, boxes = _mlp_weights(model)
    assert _method(a, "seqlip").value >= joint_patterns(Ws, boxes) * (1 - 1e-12)


# ----------------------------------------------------------------------------- soundness sweep


def _nonneg(model):
    """The same MLP with |W| (biases zero): a ReLU net whose constant is exactly ‖W_K⋯W_1‖."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        arr = numpy_helper.to_array(t)
        arr = np.abs(arr) if t.name.startswith("W") else np.zeros_like(arr)
        t.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), t.name))
    return m


def test_random_nets_through_onnx(tmp_path):
    rng = np.random.default_rng(2024)
    matched = known = exact_known = 0
    ratios = []
    for case in range(104):
        hidden = int(rng.integers(1, 4))
        widths = [int(rng.integers(2, 9))] + [int(rng.integers(2, 65)) for _ in range(hidden)] \
            + [int(rng.integers(1, 6))]
        act = ["Relu", "LeakyRelu", "Tanh", "Sigmoid"][case % 4]
        model = random_mlp(1000 + case, widths, act)
        exact = None
        if case % 8 == 0:  # non-negative ReLU nets: the constant is known exactly
            model = _nonneg(random_mlp(1000 + case, widths, "Relu"))
            Ws, _ = _mlp_weights(model)
            exact = spec(np.linalg.multi_dot(Ws[::-1]) if len(Ws) > 1 else Ws[0])
        a, path = _analyze(model, tmp_path, f"c{case}.onnx", FAST)
        seq = _method(a, "seqlip")
        assert seq.label is Label.CERTIFIED, case
        assert seq.value <= a.autolip.value * (1 + 1e-12), (case, widths)
        ratio = sampled_ratio(str(path), [1, widths[0]], n=24, seed=case)
        assert ratio <= seq.value * (1 + 1e-5), (case, widths, act, ratio, seq.value)
        if exact is not None:
            exact_known += 1
            assert exact * (1 - 1e-6) <= seq.value, (case, widths, exact, seq.value)
        for c in a.chains:
            assert c.seqlip <= c.autolip * (1 + 1e-12)
            assert c.greedy <= c.seqlip * (1 + 1e-12)
            for f in c.factors:
                if f.method.startswith("exact"):
                    known += 1
                    assert f.greedy <= f.certified * (1 + 1e-12), (case, f)
                    matched += f.greedy * (1 + MARGIN) >= f.certified
        ratios.append(a.autolip.value / seq.value)
    print(f"\ngreedy matched the exact factor in {matched}/{known} factors; "
          f"exact constant known for {exact_known} nets; autolip/seqlip median "
          f"{np.median(ratios):.3f}, max {max(ratios):.3f}")
    assert known >= 30 and exact_known >= 10


# ----------------------------------------------------------------------------- anchor


def test_anchor_seqlip_certified_and_deterministic():
    path = MODELS / "anchor_lipsdp.onnx"
    values = []
    for budget in (30.0, 300.0):
        a = analyze(path, Options(methods=METHODS, seqlip=SeqLipOptions(budget=budget)))
        seq = _method(a, "seqlip")
        assert seq.label is Label.CERTIFIED
        assert 36.48223 <= seq.value < 43.30557
        assert not any(d.code == "seqlip-budget" for d in a.diagnostics)
        values.append(seq.value)
    print(f"\nanchor seqlip = {values[0]:.6f} "
          f"({[f.method for f in a.chains[0].factors]}), greedy {_method(a, 'seqlip-greedy').value:.6f}")
    assert values[0] == values[1]


def test_budget_safety_net_is_reported(tmp_path):
    model = random_mlp(7, [4, 10, 12, 3], "Relu")
    a, _ = _analyze(model, tmp_path, seqlip=SeqLipOptions(budget=0.0))
    assert any(d.code == "seqlip-budget" for d in a.diagnostics)
    seq = _method(a, "seqlip")
    assert seq.label is Label.CERTIFIED and seq.value <= a.autolip.value * (1 + 1e-12)
    Ws, boxes = _mlp_weights(model)
    assert seq.value >= seqlip_bruteforce(Ws, boxes) * (1 - 1e-9)


# ----------------------------------------------------------------------------- residual CNNs


def _residual_cnn(seed=0):
    """x[1,2,4,4] → Conv → Relu → [Conv → Relu → Conv → LeakyRelu → Conv] + skip → Relu →
    Flatten → Gemm 3: a chain of three segments lives inside the residual branch."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv(x, out, k):
        w = const(f"K{k}", rng.uniform(-0.4, 0.4, (2, 2, 3, 3)))
        nodes.append(helper.make_node("Conv", [x, w], [out], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))

    conv("x", "c0", 0)
    nodes.append(helper.make_node("Relu", ["c0"], ["r0"]))
    conv("r0", "c1", 1)
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    conv("r1", "c2", 2)
    nodes.append(helper.make_node("LeakyRelu", ["c2"], ["r2"], alpha=0.1))
    conv("r2", "c3", 3)
    nodes.append(helper.make_node("Add", ["c3", "r0"], ["s"]))
    nodes.append(helper.make_node("Relu", ["s"], ["r3"]))
    nodes.append(helper.make_node("Flatten", ["r3"], ["f"]))
    w = const("Wout", rng.uniform(-0.3, 0.3, (3, 32)))
    nodes.append(helper.make_node("Gemm", ["f", w], ["y"], transB=1))
    graph = helper.make_graph(nodes, "rescnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def test_constructed_residual_cnn(tmp_path):
    a, path = _analyze(_residual_cnn(), tmp_path, seqlip=FAST)
    branch = [c for c in a.chains if c.entry == "r0"]
    assert len(branch) == 1 and branch[0].exit == "c3" and len(branch[0].factors) == 2
    c = branch[0]
    assert c.maps == ["dense"] * 3 and c.seqlip <= c.autolip * (1 + 1e-12)
    seq = _method(a, "seqlip")
    assert seq.label is Label.CERTIFIED and seq.value <= a.autolip.value * (1 + 1e-12)
    ratio = sampled_ratio(str(path), [1, 2, 4, 4], n=60, seed=0)
    assert ratio <= seq.value * (1 + 1e-5)
    # the branch chain against its Jacobians at random activation patterns, convolutions
    # written as matrices in numpy from the initializers (independent of lipgraph)
    model = onnx.load(path)
    K = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}

    def conv_matrix(k):
        cols = []
        for e in np.eye(32):
            x = np.pad(e.reshape(2, 4, 4), ((0, 0), (1, 1), (1, 1)))
            cols.append(np.array([[[np.sum(k[o] * x[:, i:i + 3, j:j + 3]) for j in range(4)]
                                   for i in range(4)] for o in range(2)]).reshape(-1))
        return np.stack(cols, axis=1)

    M1, M2, M3 = (conv_matrix(K[f"K{i}"]) for i in (1, 2, 3))
    rng = np.random.default_rng(3)
    best = 0.0
    for _ in range(300):
        d1 = (rng.random(32) < 0.5).astype(float)
        d2 = np.where(rng.random(32) < 0.5, 1.0, 0.1)
        best = max(best, spec(M3 @ (d2[:, None] * (M2 @ (d1[:, None] * M1)))))
    assert best <= c.seqlip
    assert c.autolip == pytest.approx(spec(M1) * spec(M2) * spec(M3), rel=1e-6)


def test_resnet_small_chains_in_residual_branches():
    from lipgraph.options import NormOptions
    a = analyze(MODELS / "resnet_small.onnx",
                Options(methods=METHODS, norms=NormOptions(materialize_limit=1 << 16),
                        seqlip=SeqLipOptions(exact_max=10, bnb_nodes=64, topk=2, greedy_max=1 << 16)))
    assert len(a.chains) >= 2
    adds = {t for nid, v in a.graph.views.items() if v.op_type == "Add" for t in v.inputs}
    assert sum(c.exit in adds for c in a.chains) >= 2           # chains end in a residual Add
    seq = _method(a, "seqlip")
    assert seq.label is Label.CERTIFIED and seq.value <= a.autolip.value * (1 + 1e-12)
    ratio = sampled_ratio(str(MODELS / "resnet_small.onnx"), a.graph.shape(a.graph.analysed), n=30, seed=1)
    assert ratio <= seq.value * (1 + 1e-4)
    print(f"\nresnet_small: autolip {a.autolip.value:.6g}, seqlip {seq.value:.6g}, "
          f"greedy {_method(a, 'seqlip-greedy').value:.6g}, chains {[c.maps for c in a.chains]}")
