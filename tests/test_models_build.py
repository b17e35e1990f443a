"""The bundled models (models/build.py, models/*.onnx) and the random-graph generator."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
MODELS = REPO / "models"
if str(TESTS) not in sys.path:  # works under any pytest import mode
    sys.path.insert(0, str(TESTS))

from randgraphs import input_shape, random_graph, random_input, random_mlp, run_ort  # noqa: E402


def _load_build():
    spec = importlib.util.spec_from_file_location("lipgraph_models_build", MODELS / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _load_build()
NAMES = list(build.BUILDERS)
ANCHOR_NPZ = build.DEFAULT_ANCHORS / build.ANCHOR_NPZ
needs_anchor = pytest.mark.skipif(not ANCHOR_NPZ.is_file(),
                                  reason=f"anchor weights not found at {ANCHOR_NPZ}")

EXPECTED = {  # file: (input shape, output shape, op types that must appear)
    "mlp.onnx": ([1, 20], [1, 10], {"Gemm", "Relu", "Tanh"}),
    "lenet.onnx": ([1, 1, 28, 28], [1, 10], {"Conv", "MaxPool", "Flatten", "Gemm", "Relu"}),
    "resnet_small.onnx": ([1, 3, 16, 16], [1, 10],
                          {"Conv", "BatchNormalization", "Add", "GlobalAveragePool"}),
    "affine.onnx": ([1, 12], [1, 5], {"Gemm", "Reshape", "Conv", "Flatten"}),
    "unsupported.onnx": ([1, 6], [1, 4], {"Gemm", "Sin"}),
    "anchor_lipsdp.onnx": ([1, 2], [1, 2], {"MatMul", "Relu"}),
    "spectral.onnx": ([1, 8], [1, 5],
                      {"MatMul", "Div", "Shape", "Gather", "Concat", "Reshape", "Flatten"}),
    "concat.onnx": ([1, 8], [1, 4], {"Concat", "Sub", "Add", "Relu", "Tanh"}),
}


def _shape(vi) -> list[int]:
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_expected_table_covers_builders():
    assert set(EXPECTED) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_checks_and_runs(name):
    path = MODELS / name
    assert path.is_file(), f"{path} missing: run `python models/build.py`"
    assert path.stat().st_size < 1_000_000
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == build.IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    x_shape, y_shape, ops = EXPECTED[name]
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["y"]
    assert _shape(model.graph.input[0]) == x_shape
    assert _shape(model.graph.output[0]) == y_shape
    assert ops <= {n.op_type for n in model.graph.node}
    for init in model.graph.initializer:
        assert init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64), init.name
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    y = run_ort(str(path), x)
    assert y.shape == tuple(y_shape)
    assert np.all(np.isfinite(y))


@needs_anchor
def test_committed_models_match_fresh_build(tmp_path):
    out = tmp_path / "models"
    proc = subprocess.run([sys.executable, str(MODELS / "build.py"), "--out", str(out),
                           "--anchors", str(build.DEFAULT_ANCHORS)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.glob("*.onnx")) == sorted(NAMES)
    stale = [n for n in NAMES if (out / n).read_bytes() != (MODELS / n).read_bytes()]
    assert not stale, f"models/ differ from a fresh build, rerun models/build.py: {stale}"


def test_build_is_deterministic():
    for name, builder in build.BUILDERS.items():
        if name == "anchor_lipsdp.onnx" and not ANCHOR_NPZ.is_file():
            continue
        a = builder(None).SerializeToString(deterministic=True)
        b = builder(None).SerializeToString(deterministic=True)
        assert a == b, name


def test_missing_anchor_dir_is_an_error(tmp_path):
    proc = subprocess.run([sys.executable, str(MODELS / "build.py"), "--out",
                           str(tmp_path / "o"), "--anchors", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "anchor" in proc.stderr


@needs_anchor
def test_anchor_model_reproduces_numpy():
    with np.load(ANCHOR_NPZ) as d:
        w1, w2, w3, w4 = (d[k] for k in ("W1", "W2", "W3", "W4"))
    path = MODELS / "anchor_lipsdp.onnx"
    rng = np.random.default_rng(7)
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    for k in range(20):
        x = rng.standard_normal((1, 2)).astype(np.float32)
        if k % 2:
            x = np.abs(x)  # non-negative input: every ReLU active, the linear regime
        ref = (w4 @ relu(w3 @ relu(w2 @ relu(w1 @ x[0].astype(np.float64)))))[None, :]
        y = run_ort(str(path), x)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(ref).max()))


def test_spectral_weight_is_normalised():
    """uᵀ W_eff v = 1 by construction; check the in-graph weight through the folded output."""
    model = onnx.load(str(MODELS / "spectral.onnx"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    u = next(v for k, v in inits.items() if k.startswith("u_"))
    w = next(v for k, v in inits.items() if k.startswith("W_") and v.shape == (16, 8))
    v = next(v for k, v in inits.items() if k.startswith("v_"))
    sigma = float(u.astype(np.float64) @ w.astype(np.float64) @ v.astype(np.float64))
    assert sigma > 0.5  # well away from zero: the Div is safe


# ------------------------------------------------------------------------------------------------
# random graphs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(60))
def test_random_graph_checks_and_runs(seed):
    model = random_graph(seed)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["y"]
    shp = input_shape(model)
    assert shp[0] == 1 and len(shp) in (2, 4)
    y = run_ort(model, random_input(model, seed))
    assert y.shape == tuple(_shape(model.graph.output[0]))
    assert np.all(np.isfinite(y)) and np.abs(y).max() < 100.0


def test_random_graph_is_deterministic_and_varied():
    assert random_graph(3).SerializeToString() == random_graph(3).SerializeToString()
    ops, images = set(), 0
    for seed in range(60):
        m = random_graph(seed)
        ops |= {n.op_type for n in m.graph.node}
        images += len(input_shape(m)) == 4
    assert {"Gemm", "MatMul", "Relu", "LeakyRelu", "Tanh", "Sigmoid", "Add", "Sub", "Concat",
            "Mul", "Conv", "BatchNormalization", "MaxPool", "Flatten", "Reshape"} <= ops
    assert 5 <= images <= 55


@pytest.mark.parametrize("act", ["Relu", "leakyrelu", "Tanh", "sigmoid", None])
def test_random_mlp(act):
    model = random_mlp(1, [5, 7, 6, 3], act)
    onnx.checker.check_model(model, full_check=True)
    assert input_shape(model) == [1, 5]
    y = run_ort(model, random_input(model))
    assert y.shape == (1, 3)
    n_act = sum(n.op_type not in ("Gemm",) for n in model.graph.node)
    assert n_act == (2 if act else 0)
