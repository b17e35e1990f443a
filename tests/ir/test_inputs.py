"""Inputs and defaults (issue 10 item 3): the batch dim defaults to 1, other dynamic dims are
named with the sizes the model fixes, non-analysed inputs are held fixed (``--fix``), an ``If``
whose condition the fixed inputs decide becomes its branch, model-local functions are inlined.

Every expected bound is computed independently of lipgraph (the model is a product by a known
diagonal, so its constant is a max |·|), and every analysed model is cross-checked against
onnxruntime by the pipeline's differential guard."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lipgraph.cli import main

FAST = ["--methods", "autolip", "-q", "--format", "json"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def save(tmp_path, graph, name="m.onnx", opset=17, functions=()):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    *([helper.make_opsetid("local", 1)] if functions else [])],
                              functions=list(functions))
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, path)
    return path


def one_line_error(code, out, err, *words):
    assert code == 2 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lipgraph: error:") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def analysed(capsys, argv):
    code, out, err = run([*argv, *FAST], capsys)
    assert code == 0, err
    report = json.loads(out)
    return report["upper_bound"]["value"], {d["code"]: d["message"] for d in report["diagnostics"]}


def gemm_graph(shape):
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) - 5, "w")
    return helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])


def test_dynamic_batch_dim_defaults_to_one_with_a_note(capsys, tmp_path):
    path = save(tmp_path, gemm_graph(["batch", 3]))
    upper, notes = analysed(capsys, ["analyze", str(path)])
    w = np.arange(12).reshape(4, 3) - 5.0
    assert upper == pytest.approx(np.linalg.norm(w, 2), rel=1e-6)
    assert "'batch'" in notes["batch-dim"] and "taken as 1" in notes["batch-dim"]


def test_other_dynamic_dim_is_named_with_the_size_the_weight_fixes(capsys, tmp_path):
    path = save(tmp_path, gemm_graph([1, "features"]))
    line = one_line_error(*run(["analyze", str(path)], capsys), "dim 1 ('features')", "--input-shape x:1,3",
                          "Gemm")
    assert "<" not in line


def test_unknown_dims_get_placeholders_never_invented_sizes(capsys, tmp_path):
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    path = save(tmp_path, graph)
    line = one_line_error(*run(["analyze", str(path)], capsys), "--input-shape x:1,3,<h>,<w>", "'h'", "'w'")
    assert "dim 1 = 3 from the weight of Conv" in line
    code, _, err = run(["analyze", str(path), "--input-shape", "x:1,3,5,5", *FAST], capsys)
    assert code == 0, err


def scaled_graph(second_type=TensorProto.FLOAT):
    """y = x ⊙ s with s a second graph input: L = max |s| once s is fixed."""
    return helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "g",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3]),
                              helper.make_tensor_value_info("s", second_type, [1, 3])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


def test_float_inputs_default_to_zeros_and_fix_sets_them(capsys, tmp_path):
    path = save(tmp_path, scaled_graph())
    upper, notes = analysed(capsys, ["analyze", str(path)])
    assert upper == 0.0 and "held at zeros" in notes["input-fixed"]
    values = np.array([[1.0, -3.0, 2.0]], np.float32)
    np.save(tmp_path / "s.npy", values)
    upper, notes = analysed(capsys, ["analyze", str(path), "--fix", f"s={tmp_path / 's.npy'}"])
    assert upper == pytest.approx(3.0, rel=1e-7)
    upper, _ = analysed(capsys, ["analyze", str(path), "--fix", "s=-2.5"])
    assert upper == pytest.approx(2.5, rel=1e-7)
    upper, _ = analysed(capsys, ["analyze", str(path), "--input", "s", "--fix", "x=4"])   # the other way round
    assert upper == pytest.approx(4.0, rel=1e-7)


@pytest.mark.parametrize("fix, words", [
    ("t=1", ["unknown input", "t"]),
    ("x=1", ["analysed input"]),
    ("s=abc", ["expected a number"]),
    ("s", ["NAME=VALUE"]),
    ("s=nan", ["NaN"]),
])
def test_bad_fix(capsys, tmp_path, fix, words):
    path = save(tmp_path, scaled_graph())
    one_line_error(*run(["analyze", str(path), "--fix", fix], capsys), *words)


def test_fix_file_of_the_wrong_shape(capsys, tmp_path):
    path = save(tmp_path, scaled_graph())
    np.save(tmp_path / "s.npy", np.ones((2, 3), np.float32))
    one_line_error(*run(["analyze", str(path), "--fix", f"s={tmp_path / 's.npy'}"], capsys), "shape [2, 3]")


def branch_graph(condition_from_x=False):
    """y = x·2 if sr > 16000 else x·3, sr an int64 input (a sample rate)."""
    def branch(name, factor):
        c = numpy_helper.from_array(np.array(factor, np.float32), f"{name}_c")
        return helper.make_graph([helper.make_node("Mul", ["x", f"{name}_c"], ["out"])], name, [],
                                 [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])], [c])
    limit = numpy_helper.from_array(np.array(16000, np.int64), "limit")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    nodes = ([helper.make_node("ReduceSum", ["x"], ["sx"], keepdims=0), helper.make_node("Greater", ["sx", "zero"], ["c"])]
             if condition_from_x else [helper.make_node("Greater", ["sr", "limit"], ["c"])])
    nodes.append(helper.make_node("If", ["c"], ["y"], name="by_rate", then_branch=branch("fast", 2.0),
                                  else_branch=branch("slow", 3.0)))
    return helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3]),
                                          helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [limit, zero])


def test_integer_input_must_be_fixed(capsys, tmp_path):
    path = save(tmp_path, branch_graph())
    one_line_error(*run(["analyze", str(path)], capsys), "'sr'", "int64", "--fix sr=")
    one_line_error(*run(["analyze", str(path), "--fix", "sr=1.5"], capsys), "not representable", "int64")


@pytest.mark.parametrize("rate, factor", [(44100, 2.0), (8000, 3.0)])
def test_constant_if_becomes_its_branch(capsys, tmp_path, rate, factor):
    path = save(tmp_path, branch_graph())
    upper, notes = analysed(capsys, ["analyze", str(path), "--fix", f"sr={rate}"])
    assert upper == pytest.approx(factor, rel=1e-7)
    assert f"{'then' if factor == 2.0 else 'else'} branch" in notes["branch-taken"]
    # the model file itself gives the same function in onnxruntime
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.array([[1.0, -2.0, 0.5]], np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x, "sr": np.array(rate, np.int64)})[0], factor * x)


def test_if_on_the_analysed_input_is_refused(capsys, tmp_path):
    path = save(tmp_path, branch_graph(condition_from_x=True))
    one_line_error(*run(["analyze", str(path), "--fix", "sr=1"], capsys), "If node 'by_rate'", "--fix")


def test_model_local_functions_are_inlined(capsys, tmp_path):
    """y = W·scale(x) with scale a model-local function (x ↦ 2x): L = 2‖W‖₂."""
    two = helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2.0, np.float32)))
    scale = helper.make_function("local", "Scale", ["a"], ["b"], [two, helper.make_node("Mul", ["a", "two"], ["b"])],
                                 [helper.make_opsetid("", 17)])
    w = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    graph = helper.make_graph([helper.make_node("Scale", ["x"], ["h"], domain="local"),
                               helper.make_node("Gemm", ["h", "w"], ["y"], transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    path = save(tmp_path, graph, functions=[scale])
    upper, _ = analysed(capsys, ["analyze", str(path)])
    assert upper == pytest.approx(2 * np.linalg.norm(w.astype(np.float64), 2), rel=1e-6)


def test_recurrent_state_input_is_held_fixed(capsys, tmp_path):
    """An RNN whose initial state is a second graph input (an exporter's ``h0``): held at zeros by
    default, at a given value with --fix; either way a constant for the RNN rule, and each bound
    holds for sampled onnxruntime ratios with the state at that value."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(1, 4, 3)).astype(np.float32) * 0.5, "W")
    r = numpy_helper.from_array(rng.normal(size=(1, 4, 4)).astype(np.float32) * 0.5, "R")
    graph = helper.make_graph([helper.make_node("RNN", ["x", "W", "R", "", "", "h0"], ["y"], hidden_size=4)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 3]),
                               helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 1, 1, 4])], [w, r])
    path = save(tmp_path, graph)
    state = np.full((1, 1, 4), 0.7, np.float32)
    np.save(tmp_path / "h0.npy", state)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for extra, h0 in (([], np.zeros_like(state)), (["--fix", f"h0={tmp_path / 'h0.npy'}"], state)):
        upper, notes = analysed(capsys, ["analyze", str(path), *extra])
        assert "input-fixed" in notes and np.isfinite(upper)
        for _ in range(50):
            a, b = rng.normal(size=(2, 5, 1, 3)).astype(np.float32)
            ya, yb = (sess.run(None, {"x": v, "h0": h0})[0] for v in (a, b))
            assert np.linalg.norm(ya - yb) <= upper * np.linalg.norm(a - b) * (1 + 1e-5)
