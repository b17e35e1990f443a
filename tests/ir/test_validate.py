"""Validation before analysis (lipgraph/ir/validate.py and the loader's topological sort): one
minimal hand-made model per rule, each refused with one line naming the problem (exit 2); a
graph input that is also an initializer is analysed as that constant, with a note."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lipgraph.cli import main
from lipgraph.ir import files, validate
from lipgraph.options import Options
from lipgraph.pipeline import analyze

FAST = ["--methods", "autolip", "-q"]


def model(nodes=None, inits=None, inputs=None, outputs=None, opset=17, ir=8):
    """x[1,3] → Gemm(w) → Relu → y, or the parts given."""
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "w")
    nodes = nodes if nodes is not None else [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1, name="gemm"),
                                             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g",
                              inputs if inputs is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              outputs if outputs is not None else [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits if inits is not None else [w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def refused(tmp_path, capsys, m, *words):
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    code = main(["analyze", str(path), *FAST])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("lipgraph: error:"), (code, err)
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    return lines[0]


def test_the_base_model_is_valid(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(model(), path)
    assert main(["analyze", str(path), *FAST]) == 0


def test_dangling_node_input(tmp_path, capsys):
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node("Add", ["h", "missing_tensor"], ["y"])]
    refused(tmp_path, capsys, model(nodes), "missing_tensor", "no node, input or initializer")


def test_dangling_graph_output(tmp_path, capsys):
    outputs = [helper.make_tensor_value_info("nowhere", TensorProto.FLOAT, None)]
    refused(tmp_path, capsys, model(outputs=outputs), "graph output 'nowhere'")


def test_cycle(tmp_path, capsys):
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["a"], ["y"])]
    refused(tmp_path, capsys, model(nodes, inits=[]), "cycle")


@pytest.mark.parametrize("where", ["node output", "initializer", "graph input", "output shadows input"])
def test_duplicate_tensor_names(tmp_path, capsys, where):
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    if where == "node output":
        m = model([helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["h"]),
                   helper.make_node("Relu", ["h"], ["y"])])
    elif where == "initializer":
        m = model(inits=[w, w])
    elif where == "graph input":
        m = model(inputs=[x, x])
    else:
        m = model([helper.make_node("Gemm", ["x", "w"], ["x"], transB=1), helper.make_node("Relu", ["x"], ["y"])])
    refused(tmp_path, capsys, m, "duplicate tensor name")


@pytest.mark.parametrize("field", ["raw", "typed"])
def test_initializer_size_disagrees_with_dims(tmp_path, capsys, field):
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    if field == "typed":
        w = helper.make_tensor("w", TensorProto.FLOAT, [2, 3], [1.0] * 6)
        del w.float_data[-1]
    else:
        w.dims[1] = 4
    refused(tmp_path, capsys, model(inits=[w]), "initializer 'w'", "dims")


def test_initializer_unknown_element_type_and_negative_dim(tmp_path, capsys):
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    w.data_type = 99
    refused(tmp_path, capsys, model(inits=[w]), "element type")
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    w.dims[0] = -2
    refused(tmp_path, capsys, model(inits=[w]), "negative dim")


@pytest.mark.parametrize("dim", [0, -3])
def test_input_dim_not_positive(tmp_path, capsys, dim):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    x.type.tensor_type.shape.dim[0].dim_value = dim
    refused(tmp_path, capsys, model(inputs=[x]), f"dim 0 = {dim}")


CONV_W = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")


def _conv(**attrs):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)]
    return model(nodes, inits=[CONV_W], inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])])


@pytest.mark.parametrize("attrs, words", [
    ({"strides": [0, 1]}, ["strides", "≥ 1"]),
    ({"dilations": [1, -1]}, ["dilations"]),
    ({"group": 0}, ["group"]),
    ({"pads": [1, 1, -1, 1]}, ["pads", "≥ 0"]),
    ({"auto_pad": "SIDEWAYS"}, ["auto_pad"]),
    ({"strides": 2}, ["'strides' has type INT", "INTS"]),
    ({"colour": 3}, ["'colour' is not defined by Conv"]),
])
def test_attribute_out_of_schema(tmp_path, capsys, attrs, words):
    refused(tmp_path, capsys, _conv(**attrs), "conv", *words)


def test_flag_attribute_not_0_or_1(tmp_path, capsys):
    nodes = [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=-5, name="mean")]
    refused(tmp_path, capsys, model(nodes, inits=[]), "keepdims = -5", "0 or 1")


@pytest.mark.parametrize("value, word", [(float("nan"), "NaN"), (-1e-5, "epsilon")])
def test_float_attribute_out_of_range(tmp_path, capsys, value, word):
    stats = [numpy_helper.from_array(np.ones(3, np.float32), n) for n in ("s", "b", "mu", "var")]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "mu", "var"], ["y"], epsilon=value)]
    refused(tmp_path, capsys, model(nodes, inits=stats), word)


@pytest.mark.parametrize("opset, ir, words", [(99, 8, ["opset 99", "unknown"]), (0, 8, ["opset 0"]),
                                              (17, 10_000, ["IR version"])])
def test_unknown_opset_or_ir_version(tmp_path, capsys, opset, ir, words):
    refused(tmp_path, capsys, model(opset=opset, ir=ir), *words)


def test_domain_without_opset(tmp_path, capsys):
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node("Thing", ["h"], ["y"], domain="acme")]
    refused(tmp_path, capsys, model(nodes), "domain 'acme'")


def test_sparse_initializer(tmp_path, capsys):
    m = model()
    values = numpy_helper.from_array(np.ones(2, np.float32), "s")
    indices = numpy_helper.from_array(np.array([0, 3], np.int64), "s_idx")
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [2, 3]))
    refused(tmp_path, capsys, m, "sparse")


def test_enormous_graph(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(validate, "MAX_NODES", 1)
    refused(tmp_path, capsys, model(), "2 nodes", "at most 1")


def test_protobuf_over_2gb(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(files, "PROTOBUF_LIMIT", 100)
    refused(tmp_path, capsys, model(), "2 GB", "external data")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_deeply_nested_graph_attribute(tmp_path, capsys):
    """If nodes nested 200 deep (written as raw protobuf: onnx's helpers cannot even build it):
    one line and exit 2, not a crash."""
    graph = _field(2, b"leaf")
    for _ in range(200):
        attr = _field(1, b"then_branch") + _field(6, graph) + _varint(20 << 3) + _varint(5)
        graph = _field(1, _field(4, b"If") + _field(5, attr))
    path = tmp_path / "m.onnx"
    path.write_bytes(model().SerializeToString() + _field(7, graph))
    assert main(["analyze", str(path), *FAST]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a valid ONNX model" in err, err


def test_input_that_is_an_initializer_is_a_constant_with_a_note(tmp_path):
    """ONNX lets a graph input have a default (an initializer): lipgraph analyses the constant.
    The bound equals that of the same model without the extra input (‖w‖₂ of the Gemm)."""
    with_input = model(inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3])])
    a_path, b_path = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(with_input, a_path)
    onnx.save(model(), b_path)
    a, b = analyze(a_path, Options(methods=("autolip",))), analyze(b_path, Options(methods=("autolip",)))
    assert a.graph.analysed == "x"
    notes = [d for d in a.diagnostics if d.code == "input-initializer"]
    assert len(notes) == 1 and "'w'" in notes[0].message
    w = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    assert a.upper.value == b.upper.value >= np.linalg.norm(w.astype(np.float32).astype(np.float64), 2)
