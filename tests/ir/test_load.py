"""Loading: value-independent subgraphs folded, non-float inputs analysed from the first
float tensor, shapes known everywhere."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import UPPER, MODELS, analysed
from lipgraph.options import Options
from lipgraph.pipeline import analyze
from lipgraph.ir.graph import build_graph
from lipgraph.ir import load as lipgraph_load
from lipgraph.ir.load import load_model


def test_spectral_parametrisation_and_shape_plumbing_are_folded():
    a = analysed("spectral")
    ops = [a.graph.views[n].op_type for n in a.graph.order]
    assert "Div" not in ops and "Shape" not in ops and "Gather" not in ops and "Concat" not in ops
    model = onnx.load(MODELS / "spectral.onnx")
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    # independent: W_eff = W / (uᵀ W v) from the raw initializers, then the last Gemm's weight
    w_eff = w["W_0"] / float(w["u_0"] @ w["W_0"] @ w["v_0"])
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    expected = np.linalg.norm(w_eff, 2) * np.linalg.norm(w[gemm.input[1]], 2)
    assert a.autolip.value == pytest.approx(expected, rel=1e-6)
    assert a.autolip.value >= expected


def test_every_tensor_has_a_shape():
    for name in ["lenet", "resnet_small", "spectral", "concat"]:
        g = analysed(name).graph
        for nid in g.order:
            assert all(s is not None for s in g.views[nid].output_shapes), (name, nid)


def _int_input_model(first_op):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(10, 3)).astype(np.float32)
    nodes = []
    if first_op == "Cast":
        nodes.append(helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT))
        shape = [1, 10]
    else:
        depth = numpy_helper.from_array(np.array(10, dtype=np.int64), "depth")
        values = numpy_helper.from_array(np.array([0.0, 1.0], dtype=np.float32), "values")
        nodes.append(helper.make_node("OneHot", ["ids", "depth", "values"], ["f"]))
        shape = [1, 4]
    nodes.append(helper.make_node("MatMul", ["f", "w"], ["y"]))
    inits = [numpy_helper.from_array(w, "w")] + ([depth, values] if first_op == "OneHot" else [])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, w


@pytest.mark.parametrize("first_op", ["Cast", "OneHot"])
def test_non_float_input_is_analysed_from_first_float_tensor(tmp_path, first_op):
    model, w = _int_input_model(first_op)
    path = tmp_path / "ids.onnx"
    onnx.save(model, path)
    a = analyze(path, Options(methods=UPPER))
    assert a.graph.analysed == "f"
    assert any(d.code == "input-redirected" for d in a.diagnostics)
    assert a.autolip.value == pytest.approx(np.linalg.norm(w.astype(np.float64), 2), rel=1e-6)


def test_constant_of_shape_and_shape_ops_fold(tmp_path):
    """x + ConstantOfShape(Shape(x)) is a shift: bound 1, and the plumbing is folded."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["c"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0])),
             helper.make_node("Add", ["x", "c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "shift.onnx"
    onnx.save(model, path)
    g = build_graph(load_model(path))
    assert [g.views[n].op_type for n in g.order] == ["Add"]
    np.testing.assert_array_equal(g.constants["c"], np.full((1, 4), 2.0, dtype=np.float32))
    assert analyze(path, Options(methods=UPPER)).autolip.value == pytest.approx(1.0)


def test_shapes_onnx_cannot_infer_come_from_onnxruntime(tmp_path):
    """NonZero's output shape depends on values: onnx shape inference leaves it unknown,
    one onnxruntime run fills it in, and the weight it selects is folded."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    mask = np.array([True, False, True, False])
    nodes = [helper.make_node("NonZero", ["mask"], ["nz"]),
             helper.make_node("Reshape", ["nz", "flat"], ["idx"]),
             helper.make_node("Gather", ["w", "idx"], ["g"]),
             helper.make_node("MatMul", ["x", "g"], ["y"])]
    inits = [numpy_helper.from_array(mask, "mask"), numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "nz.onnx"
    onnx.save(model, path)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    assert not any(v.name == "g" and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)
                   for v in inferred.graph.value_info)          # the case this test is about
    loaded = load_model(path)
    assert loaded.shapes["g"] == (2, 3)
    a = analyze(path, Options(methods=UPPER))
    assert a.autolip.value == pytest.approx(np.linalg.norm(w[mask].astype(np.float64), 2), rel=1e-6)


def test_shapes_inferred_without_the_weights_equal_those_inferred_with_them(tmp_path):
    """Shape inference runs with the large initializers turned into typed inputs; shapes that
    depend on a weight's shape (Shape of it → Reshape) or on a small constant's value (a Reshape
    target) must come out as ONNX infers them on the whole model."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 96)).astype(np.float32)          # large: 6144 entries
    assert w.size > lipgraph_load.LARGE_INITIALIZER
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Reshape", ["h", "target"], ["r"]),       # target: a small constant
             helper.make_node("Shape", ["w"], ["ws"]),
             helper.make_node("Slice", ["ws", "one", "two"], ["wcols"]),
             helper.make_node("Concat", ["neg", "wcols"], ["back"], axis=0),
             helper.make_node("Reshape", ["r", "back"], ["y"])]            # shape from the weight's shape
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([4, 8, 12], np.int64), "target"),
             numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([-1], np.int64), "neg")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "weights.onnx"
    onnx.save(model, path)
    full = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True).graph
    want = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
            for v in [*full.value_info, *full.output] if v.name in ("h", "r", "y")}
    assert want == {"h": (4, 96), "r": (4, 8, 12), "y": (4, 96)}     # the full model's inference resolves them
    loaded = load_model(path)
    assert {k: loaded.shapes[k] for k in want} == want
    assert loaded.shapes["w"] == (64, 96) and loaded.elem_types["w"] == TensorProto.FLOAT
    assert "w" not in {i.name for i in loaded.proto.graph.input}    # the model itself is untouched
    assert np.array_equal(loaded.initializers["w"], w)


def test_a_copy_without_initializers_keeps_everything_else():
    w = numpy_helper.from_array(np.ones((80, 80), np.float32), "w")
    small = numpy_helper.from_array(np.array([2], np.int64), "s")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 80])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 80])], [w, small],
                              doc_string="kept")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="p")
    assert [t.name for t in lipgraph_load.large_initializers(model)] == ["w"]
    bare = lipgraph_load.without_initializers(model, {"w"})
    expect = onnx.ModelProto()
    expect.CopyFrom(model)
    del expect.graph.initializer[0]
    assert bare == expect
    assert len(model.graph.initializer) == 2


def test_invalid_utf8_text_field_is_refused_in_one_line(tmp_path):
    """A byte flip inside a string field (here the doc string) makes protobuf fail on access: the
    load refuses it as a damaged file (InputError, exit 2), never an internal error."""
    from lipgraph.errors import InputError
    model = onnx.load(MODELS / "mlp.onnx")
    model.doc_string = "marker-ABCDEFGH"
    data = model.SerializeToString().replace(b"ABCDEFGH", b"AB\xf3\x28CDEF")
    path = tmp_path / "flipped.onnx"
    path.write_bytes(data)
    with pytest.raises(InputError, match="not valid UTF-8"):
        load_model(path)


def test_weights_are_held_once_and_written_back_exactly(tmp_path):
    """The large initializers' values live in ``LoadedModel.initializers`` only: the proto keeps
    a stub per weight (name, type, dims), onnxruntime runs the loaded model from the arrays with
    the file's outputs, and ``with_weights`` restores a model equal to the file's."""
    from lipgraph.ir.differential import ort_session
    rng = np.random.default_rng(0)
    w = rng.standard_normal((80, 96)).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float64)
    idx = np.arange(96 * 50, dtype=np.int64) % 96          # a large integer table: detached too
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Cast", ["h"], ["hd"], to=TensorProto.DOUBLE),
             helper.make_node("Add", ["hd", "b"], ["y"]),
             helper.make_node("Gather", ["y", "idx"], ["z"], axis=1)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(idx, "idx")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 80])],
                              [helper.make_tensor_value_info("z", TensorProto.DOUBLE, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "weights.onnx"
    onnx.save(model, path)
    loaded = load_model(path)
    assert sorted(t.name for t in lipgraph_load.detached(loaded.proto)) == ["idx", "w"]     # b is small
    assert loaded.proto.ByteSize() < 2000 < w.nbytes
    stub = next(t for t in loaded.proto.graph.initializer if t.name == "w")
    assert (list(stub.dims), stub.data_type) == ([80, 96], TensorProto.FLOAT)
    x = rng.standard_normal((2, 80)).astype(np.float32)
    import onnxruntime as ort
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort_session(loaded.ort_proto, initializers=loaded.initializers).run(None, {"x": x})[0]
    assert np.array_equal(got, want)
    with pytest.raises(ValueError, match="detached weights"):
        ort_session(loaded.ort_proto)
    full = lipgraph_load.with_weights(loaded.proto, loaded.initializers)
    assert {t.name: numpy_helper.to_array(t).tobytes() for t in full.graph.initializer} == \
        {t.name: numpy_helper.to_array(t).tobytes() for t in model.graph.initializer}
    assert not lipgraph_load.detached(full) and len(lipgraph_load.detached(loaded.proto)) == 2
