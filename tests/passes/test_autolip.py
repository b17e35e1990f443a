"""Whole-model AutoLip: ground truth, soundness against sampled ratios (onnxruntime), and
lipgraph's torch execution against onnxruntime."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import scipy.signal
import torch
from onnx import numpy_helper

from conftest import ANCHOR_NPZ, MODELS, UPPER, analysed
from lipgraph.options import Options
from lipgraph.pipeline import analyze
from lipgraph.ir.execute import Executor
from lipgraph.labels import Label
from randgraphs import random_graph, run_ort, sampled_ratio


def test_anchor_autolip_is_product_of_norms():
    a = analysed("anchor_lipsdp")
    assert a.autolip.label is Label.CERTIFIED
    assert a.autolip.value == pytest.approx(43.30557, rel=1e-6)   # models/anchors/README.md
    if not ANCHOR_NPZ.is_file():
        pytest.skip(f"anchor weights not found at {ANCHOR_NPZ}")
    weights = np.load(ANCHOR_NPZ)
    product = math.prod(np.linalg.norm(weights[f"W{i}"].astype(np.float32).astype(np.float64), 2) for i in range(1, 5))
    assert product <= a.autolip.value <= product * (1 + 1e-6)   # the bundled model's weights


def _explicit_affine_matrix(path) -> np.ndarray:
    """affine.onnx's linear part composed in numpy from its initializers, independently of lipgraph."""
    model = onnx.load(path)
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    nodes = {n.op_type: n for n in model.graph.node}
    gemm1, gemm2 = [n for n in model.graph.node if n.op_type == "Gemm"]
    conv = nodes["Conv"]

    def gemm(node, x):
        b = w[node.input[1]]
        trans = {a.name: a.i for a in node.attribute}.get("transB", 0)
        return x @ (b.T if trans else b)

    def lin(x):
        h = gemm(gemm1, x[None, :]).reshape(2, 4, 4)
        k = w[conv.input[1]]
        out = np.stack([sum(scipy.signal.correlate2d(h[c], k[o, c], mode="same") for c in range(k.shape[1]))
                        for o in range(k.shape[0])])
        return gemm(gemm2, out.reshape(1, -1))[0]

    n_in = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    return np.stack([lin(e) for e in np.eye(n_in)], axis=1)


def test_affine_model_segment_is_exact():
    a = analysed("affine")
    exact = np.linalg.norm(_explicit_affine_matrix(MODELS / "affine.onnx"), 2)
    segments = [u for u in a.units if u.role == "segment"]
    assert len(segments) == 1 and len(segments[0].nodes) == len(a.infos)   # one segment spans the model
    assert segments[0].bounds[0].value == pytest.approx(exact, rel=1e-6)
    for m in a.methods:
        if m.label in (Label.CERTIFIED, Label.EXACT):
            assert m.value >= exact
    assert a.upper.value == pytest.approx(exact, rel=1e-6)


def test_bundled_models_sound(bundled):
    name, a = bundled
    shape = a.graph.shape(a.graph.analysed)
    assert math.isfinite(a.autolip.value)
    ratio = sampled_ratio(str(MODELS / f"{name}.onnx"), shape, n=90)
    assert ratio <= a.autolip.value * (1 + 1e-4), (name, ratio, a.autolip.value)


@pytest.mark.parametrize("seed", range(50))
def test_random_graphs_sound(seed, tmp_path):
    model = random_graph(seed)
    path = tmp_path / "g.onnx"
    onnx.save(model, path)
    a = analyze(path, Options(methods=UPPER))
    assert a.autolip.label is Label.CERTIFIED and math.isfinite(a.autolip.value)
    ratio = sampled_ratio(str(path), a.graph.shape(a.graph.analysed), n=60, seed=seed)
    assert ratio <= a.autolip.value * (1 + 1e-4), (seed, ratio, a.autolip.value)


def test_executor_matches_onnxruntime(bundled):
    name, a = bundled
    ex = Executor(a.graph, torch.float32)
    f = ex.model_function()
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.normal(size=a.graph.shape(a.graph.analysed)).astype(np.float32)
        ours = f(torch.as_tensor(x)).detach().numpy()
        np.testing.assert_allclose(ours, run_ort(str(MODELS / f"{name}.onnx"), x), atol=1e-5, rtol=1e-5)


def test_power_estimate_is_labelled_estimate_and_close(bundled):
    _, a = bundled
    power = next(m for m in a.methods if m.name == "autolip-power")
    assert power.label is Label.ESTIMATE
    assert power.value <= a.autolip.value * (1 + 1e-5)
    assert power.value >= 0.9 * a.autolip.value


def test_large_one_node_segment_without_closed_form_stays_finite(tmp_path):
    """A lone Add of a constant on a tensor too large to materialise falls back to its rule's
    bound (1), not to 'no certified norm'."""
    from onnx import TensorProto, helper
    bias = onnx.numpy_helper.from_array(np.ones((1, 3, 48, 48), np.float32), "bias")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "bias"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 48, 48])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    a = analyze(tmp_path / "m.onnx", Options(methods=UPPER))
    assert a.autolip.value == pytest.approx(1.0) and a.autolip.label is Label.CERTIFIED
