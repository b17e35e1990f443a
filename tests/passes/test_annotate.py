"""The annotate pass on constants that are not finite: ±inf where it never binds is accepted
(the jax2tf idiom Max(−inf, x), Clip with infinite limits), ±inf in a weight and NaN anywhere on
the analysed path are bad input naming the tensor."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lipgraph.cli import main
from lipgraph.options import Options
from lipgraph.pipeline import analyze

W = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], dtype=np.float32)


def _model(tmp_path, first, consts):
    nodes = [first, helper.make_node("MatMul", ["h", "w"], ["y"])]
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in consts.items()]
    inits.append(numpy_helper.from_array(W.T.copy(), "w"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("first, consts", [
    (helper.make_node("Max", ["x", "ninf"], ["h"]), {"ninf": np.array(-np.inf)}),
    (helper.make_node("Min", ["pinf", "x"], ["h"]), {"pinf": np.array(np.inf)}),
    (helper.make_node("Clip", ["x", "lo", "hi"], ["h"]), {"lo": np.array(-np.inf), "hi": np.array(np.inf)}),
])
def test_infinite_bounds_that_never_bind_are_accepted(tmp_path, first, consts):
    a = analyze(_model(tmp_path, first, consts), Options(methods=("autolip",)))
    sigma = np.linalg.norm(W.astype(np.float64), 2)   # the model is x ↦ W x
    assert a.upper is not None
    assert sigma <= a.upper.value <= sigma * (1 + 1e-6)


@pytest.mark.parametrize("first, consts, words", [
    (helper.make_node("Add", ["x", "c"], ["h"]), {"c": np.array([0.0, np.inf, 0.0])}, ["'c'", "inf"]),
    (helper.make_node("Max", ["x", "c"], ["h"]), {"c": np.array(np.inf)}, ["'c'", "inf"]),
    (helper.make_node("Add", ["x", "c"], ["h"]), {"c": np.array([0.0, np.nan, 0.0])}, ["'c'", "nan"]),
])
def test_non_finite_constants_on_the_path_are_bad_input(tmp_path, capsys, first, consts, words):
    code = main(["analyze", str(_model(tmp_path, first, consts)), "-q", "--methods", "autolip"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("lipgraph: error:")
    assert all(w.lower() in lines[0].lower() for w in words), lines[0]
