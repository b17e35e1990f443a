"""Fusion of decomposed activations (lipgraph/ir/fuse): every spelling of both torch exporters
and of the zoo is fused into the right op, near misses are not, the numerical proof rejects a
wrong claim, onnxruntime runs the original model (so it checks every fused node), and models
whose only blockers were these activations get a finite certified bound above sampled ratios."""
from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

import lipgraph.ir.fuse as fusion
from conftest import ROOT
from fusecheck import assert_torch_matches_ort_on_original, fused_ops
from lipgraph.errors import SemanticMismatch
from lipgraph.ir.differential import ort_session
from lipgraph.ir.fuse import fuse
from lipgraph.ir.fuse.match import X, Op, Pattern
from lipgraph.ir.fuse.verify import disagreement, subgraph_model
from lipgraph.ir.graph import build_graph
from lipgraph.ir.load import load_model
from lipgraph.options import LowerOptions, Options
from lipgraph.passes.annotate import annotate
from lipgraph.pipeline import analyze
from lipgraph.registry import FUSED_DOMAIN, load_builtin_rules

load_builtin_rules()
ZOO = ROOT / "models" / "zoo"
C = math.sqrt(2 / math.pi)


# --- the TorchScript exporter's spellings (dynamo's are in the zoo) ---------------------------

class _Act(torch.nn.Module):
    def __init__(self, f):
        super().__init__()
        self.lin, self.f = torch.nn.Linear(6, 6), f

    def forward(self, x):
        return self.f(self.lin(x))


TORCH_CASES = {
    "nn.SiLU": (torch.nn.SiLU(), [("SiLU", {})]),
    "x*sigmoid(x)": (lambda x: x * torch.sigmoid(x), [("SiLU", {})]),
    "x*sigmoid(2x)": (lambda x: x * torch.sigmoid(2 * x), [("Swish", {"beta": 2.0})]),
    "x*sigmoid(-0.5x)": (lambda x: x * torch.sigmoid(-0.5 * x), [("Swish", {"beta": -0.5})]),
    "x*hardsigmoid(x)": (lambda x: x * F.hardsigmoid(x), [("HardSwish", {})]),
    "x*relu6(x+3)/6": (lambda x: x * F.relu6(x + 3) / 6, [("HardSwish", {})]),
    "x*relu6(x+3)*(1/6)": (lambda x: x * F.relu6(x + 3) * (1 / 6), [("HardSwish", {})]),
    "nn.Mish": (torch.nn.Mish(), [("Mish", {})]),
    "nn.GELU": (torch.nn.GELU(), [("Gelu", {"approximate": b"none"})]),
    "nn.GELU(tanh)": (torch.nn.GELU("tanh"), [("Gelu", {"approximate": b"tanh"})]),
    "gelu-tanh-pow": (lambda x: 0.5 * x * (1 + torch.tanh(C * (x + 0.044715 * torch.pow(x, 3)))),
                      [("Gelu", {"approximate": b"tanh"})]),
    "gelu-tanh-xxx": (lambda x: x * (0.5 * (1 + torch.tanh(C * (x + 0.044715 * (x * x * x))))),
                      [("Gelu", {"approximate": b"tanh"})]),
    "near-miss x*sigmoid(x+1)": (lambda x: x * torch.sigmoid(x + 1), []),
    "near-miss gelu 0.6": (lambda x: 0.6 * x * (1 + torch.erf(x / math.sqrt(2))), []),
    "near-miss relu6 min 5": (lambda x: x * torch.clamp(x + 3, 0, 5) / 6, []),
}


@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_torchscript_spellings(name, tmp_path):
    torch.manual_seed(0)
    f, expect = TORCH_CASES[name]
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Act(f), (torch.randn(1, 6),), str(path), dynamo=False, opset_version=18,
                          input_names=["x"], output_names=["y"])
    model = fuse(load_model(path))
    got = [(op, {k: pytest.approx(v) if isinstance(v, float) else v for k, v in a.items()})
           for op, a in fused_ops(model)]
    assert got == expect
    if expect:   # a near miss keeps ops lipgraph may have no rule for (Erf)
        assert_torch_matches_ort_on_original(model, (1, 6))


# --- the zoo: every decomposed activation fused, only the genuine blockers left ---------------

ZOO_FUSED = {
    "mbconv_ts": {"SiLU": 5}, "mbconv_dynamo": {"SiLU": 5}, "yolo_neck_ts": {"SiLU": 11},
    "yolo_neck_dynamo": {"SiLU": 11}, "keras_cnn": {"SiLU": 1}, "mobilenetv3_ts": {"HardSwish": 3},
    "mobilenetv3_dynamo": {"HardSwish": 3}, "mlp_mish_elu_ts": {"Mish": 1}, "flax_mlp_gelu": {"Gelu": 2, "LayerNorm": 1},
    "convnext_ts": {"Gelu": 1}, "convnext_dynamo": {"Gelu": 1}, "vit_block_ts": {"Gelu": 1},
    "vit_block_dynamo": {"Gelu": 1}, "mlp_mish_elu_dynamo": {}, "paddle_cnn": {}, "unet_decoder_ts": {},
}
#: What still has no global bound once the activations and normalisations are fused: products of
#: two computed tensors only — SE gates and attention.
ZOO_BLOCKERS = {
    "mbconv_ts": {"/se/Mul"}, "mbconv_dynamo": {"node_mul"},
    "mobilenetv3_ts": {"/se/Mul"}, "mobilenetv3_dynamo": {"node_mul_2"},
    "yolo_neck_ts": set(), "yolo_neck_dynamo": set(), "mlp_mish_elu_ts": set(), "mlp_mish_elu_dynamo": set(),
    "flax_mlp_gelu": set(),
    "vit_block_dynamo": {"node_MatMul_73", "node_scaled_dot_product_attention"},
    "keras_cnn": set(),
}


def _zoo(name):
    return fuse(load_model(ZOO / f"{name}.onnx", {"x": (1, 16, 16, 3)} if name == "keras_cnn" else None))


@pytest.mark.parametrize("name", list(ZOO_FUSED))
def test_zoo_activations_fused(name):
    model = _zoo(name)
    assert Counter(op for op, _ in fused_ops(model)) == Counter(ZOO_FUSED[name])
    notes = [n for n in model.notes if n[0] == "fused"]
    assert len(notes) == sum(ZOO_FUSED[name].values()) and not [n for n in model.notes if n[0] == "fusion-rejected"]
    fused_names = {n.name for n in model.proto.graph.node if n.domain == FUSED_DOMAIN}
    assert {n[2] for n in notes} == fused_names and all(n[3]["op"].startswith(FUSED_DOMAIN) for n in notes)
    if name in ZOO_BLOCKERS:
        g = build_graph(model)
        infos = annotate(g, g.nodes_between(), {})
        assert {i.node for i in infos.values() if i.status != "ok"} == ZOO_BLOCKERS[name]


# --- hand-built graphs: near misses, fan-out, broadcasting, other spellings -------------------

def _model(nodes, consts, outputs=("y",), shape=(2, 5)):
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in consts.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _load(proto, tmp_path):
    path = tmp_path / "h.onnx"
    onnx.save(proto, str(path))
    return fuse(load_model(path))


SWISH2 = [helper.make_node("Mul", ["x", "two"], ["bx"]), helper.make_node("Sigmoid", ["bx"], ["s"]),
          helper.make_node("Mul", ["s", "x"], ["y"])]
RELU6 = [helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["c"])]
HANDBUILT = {
    "swish-2": (SWISH2, {"two": 2.0}, ("y",), [("Swish", {"beta": 2.0})]),
    "sigmoid-fans-out": ([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"]),
                          helper.make_node("Add", ["y", "s"], ["z"])], {}, ("z",), []),
    "internal-is-output": ([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])], {},
                           ("y", "s"), []),
    "hardswish-mul-sixth-inside": (RELU6 + [helper.make_node("Mul", ["c", "sixth"], ["g"]),
                                            helper.make_node("Mul", ["x", "g"], ["y"])],
                                   {"three": 3.0, "zero": 0.0, "six": 6.0, "sixth": 1 / 6}, ("y",), [("HardSwish", {})]),
    "hardswish-div-inside": (RELU6 + [helper.make_node("Div", ["c", "six"], ["g"]), helper.make_node("Mul", ["g", "x"], ["y"])],
                             {"three": 3.0, "zero": 0.0, "six": 6.0}, ("y",), [("HardSwish", {})]),
    "gelu-mul-inv-sqrt2-half-bracket": ([helper.make_node("Mul", ["x", "r"], ["u"]), helper.make_node("Erf", ["u"], ["e"]),
                                         helper.make_node("Add", ["one", "e"], ["b"]),
                                         helper.make_node("Mul", ["half", "b"], ["h"]), helper.make_node("Mul", ["h", "x"], ["y"])],
                                        {"r": 1 / math.sqrt(2), "one": 1.0, "half": 0.5}, ("y",),
                                        [("Gelu", {"approximate": b"none"})]),
    "gelu-half-broadcasts-rank": ([helper.make_node("Div", ["x", "r"], ["u"]), helper.make_node("Erf", ["u"], ["e"]),
                                   helper.make_node("Add", ["e", "one"], ["b"]), helper.make_node("Mul", ["x", "b"], ["p"]),
                                   helper.make_node("Mul", ["p", "half"], ["y"])],
                                  {"r": math.sqrt(2), "one": 1.0, "half": np.full((1, 1, 1), 0.5)}, ("y",), []),
}


@pytest.mark.parametrize("name", list(HANDBUILT))
def test_handbuilt(name, tmp_path):
    nodes, consts, outputs, expect = HANDBUILT[name]
    model = _load(_model(nodes, consts, outputs), tmp_path)
    assert [(op, {k: pytest.approx(v) if isinstance(v, float) else v for k, v in a.items()})
            for op, a in fused_ops(model)] == expect
    if expect:
        assert_torch_matches_ort_on_original(model, (2, 5))


def test_proof_rejects_swish2_declared_as_silu():
    proto = _model(SWISH2, {"two": 2.0})
    sub = subgraph_model(proto, list(proto.graph.node), "x", "y", {"two": np.float32(2.0)}, TensorProto.FLOAT)
    silu = helper.make_node("SiLU", ["x"], ["y"], domain=FUSED_DOMAIN)
    swish = helper.make_node("Swish", ["x"], ["y"], domain=FUSED_DOMAIN, beta=2.0)
    assert disagreement(sub, silu, np.float32) is not None
    assert disagreement(sub, swish, np.float32) is None


def test_wrong_claim_is_rejected_with_a_note(tmp_path, monkeypatch):
    wrong = Pattern("wrong", Op("Mul", X, Op("Sigmoid", X)), "Mish", "x·Sigmoid(x) claimed as Mish")
    monkeypatch.setattr(fusion, "PATTERNS", [wrong])
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
    model = _load(_model(nodes, {}), tmp_path)
    assert fused_ops(model) == [] and [n[0] for n in model.notes] == ["fusion-rejected"]
    assert model.notes[0][3]["nodes"] == ["Sigmoid", "Mul"] and "Mish gives" in model.notes[0][3]["reason"]


def test_onnxruntime_runs_the_original_and_checks_each_fused_node(tmp_path, monkeypatch):
    """With the proof switched off, a wrong fusion reaches the differential guard, which compares it
    with onnxruntime's run of the original subgraph and refuses it."""
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"]), helper.make_node("Sigmoid", ["h"], ["s"]),
             helper.make_node("Mul", ["h", "s"], ["y"])]
    path = tmp_path / "m.onnx"
    onnx.save(_model(nodes, {"w": np.random.default_rng(0).standard_normal((5, 5))}), str(path))
    assert analyze(path, Options(methods=("autolip",))).guard.status == "passed"
    monkeypatch.setattr(fusion, "PATTERNS", [Pattern("wrong", Op("Mul", X, Op("Sigmoid", X)), "Mish", "wrong")])
    monkeypatch.setattr(fusion, "disagreement", lambda *a: None)
    with pytest.raises(SemanticMismatch):
        analyze(path, Options(methods=("autolip",)))


# --- finite certified bounds where only decomposed activations blocked them -------------------

def _extract(name, inputs, outputs, tmp_path):
    path = tmp_path / f"{name}_part.onnx"
    onnx.utils.extract_model(str(ZOO / f"{name}.onnx"), str(path), inputs, outputs)
    return path


def _sampled_ratio(path, shape, pairs=200, seed=0):
    sess = ort_session(onnx.load(str(path)))
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    best = 0.0
    for k in range(pairs):
        x = rng.standard_normal(shape) * 2
        y = x + rng.standard_normal(shape) * (1e-2, 1e-1, 1.0)[k % 3]
        fx, fy = (sess.run(None, {name: v.astype(np.float32)})[0].astype(np.float64) for v in (x, y))
        best = max(best, float(np.linalg.norm(fx - fy) / np.linalg.norm(x.astype(np.float32) - y.astype(np.float32))))
    return best


PARTS = {  # zoo model: cut (inputs, outputs) or None for the whole model, input shape, run the lower pass
    "mbconv_ts": ((["x"], ["/dw/dw.2/Mul_output_0"]), (1, 3, 32, 32), False),
    "mobilenetv3_dynamo": ((["x"], ["mul_1"]), (1, 3, 32, 32), False),
    "yolo_neck_ts": ((["x"], ["/p5/p5.2/Mul_output_0"]), (1, 3, 32, 32), True),
    "mlp_mish_elu_ts": ((["x"], ["/net/net.4/Gemm_output_0"]), (1, 32), True),
    "flax_mlp_gelu": (None, (1, 32), True),
    "keras_cnn": (None, (1, 16, 16, 3), False),
}


@pytest.mark.parametrize("name", list(PARTS))
def test_zoo_parts_certified(name, tmp_path):
    """Parts of zoo models (before SE gates, Resize, LogSoftmax) whose only blockers were
    decomposed activations and normalisations: finite certified bound, above sampled ratios by
    onnxruntime and, where the lower pass runs, above its pair realised by onnxruntime on the
    original model."""
    cut, shape, lower = PARTS[name]
    path = _extract(name, *cut, tmp_path) if cut else ZOO / f"{name}.onnx"
    methods = ("autolip", "lower") if lower else ("autolip",)
    res = analyze(path, Options(methods=methods, lower=LowerOptions(restarts=1),
                                input_shapes={"x": shape} if cut is None else {}))
    assert res.certified and res.guard.status == "passed", [d.message for d in res.diagnostics]
    assert any(d.code == "fused" for d in res.diagnostics)
    ratio = _sampled_ratio(path, shape)
    assert res.upper.value >= ratio > 0.0
    if lower:
        realised = next(m for m in res.methods if m.name == "lower")
        assert "onnxruntime" in realised.detail["realised"] and ratio <= realised.value <= res.upper.value
