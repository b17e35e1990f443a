"""Comparisons, logical ops, ArgMax/ArgMin (not Lipschitz in a computed input) and Where (a
selection with a constant condition): torch semantics vs onnxruntime and ONNX's node test cases;
Where's exact partial norms vs the materialised operator, sampled ratios and a realising pair; whole
models report `not-lipschitz` naming the node, never `unsupported-op`."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from lipgraph.errors import NotLipschitz
from rulecheck import (OrtNode, assert_matches_ort, assert_versions_covered, conformance, make_nodeview, nodeview,
                       ort_operator,
                       rule_for, sampled_max_ratio, spectral, torch_forward)

COMPARE = ["Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual"]
LOGIC = ["And", "Or", "Xor"]


@pytest.mark.parametrize("op,first", [(op, 7) for op in COMPARE[:3] + LOGIC + ["Not", "Where", "ArgMax", "ArgMin"]]
                         + [(op, 12) for op in COMPARE[3:]])
def test_versions_covered(op, first):
    assert assert_versions_covered(op, first_opset=max(first, 9 if op == "Where" else first))


@pytest.mark.parametrize("op", COMPARE + LOGIC + ["Not", "Where", "ArgMax", "ArgMin"])
def test_conformance(op):
    """ONNX's node test cases, all inputs constant (what check admits)."""
    strings = ("test_equal_string", "test_equal_string_broadcast")    # torch has no string tensors
    checked, skipped = conformance(op, dynamic_inputs=(), skip=strings)
    assert checked >= 1, skipped


@pytest.mark.parametrize("op", COMPARE)
@pytest.mark.parametrize("shapes", [((2, 3), (2, 3)), ((2, 3), (3,)), ((1, 3), (2, 1)), ((), (4,))])
def test_comparisons_match_onnxruntime_and_are_not_lipschitz(op, shapes):
    rng = np.random.default_rng(0)
    a = rng.integers(-2, 3, size=shapes[0]).astype(np.float32)      # small integers: ties for Equal & co.
    b = rng.integers(-2, 3, size=shapes[1]).astype(np.float32)
    node = helper.make_node(op, ["a", "b"], ["y"])
    for dyn in ([True, False], [False, True], [True, True], [False, False]):
        assert_matches_ort(node, [a, b], dyn, opset=16)
        view = nodeview(node, [a, b], dyn, 16)
        if any(dyn):
            with pytest.raises(NotLipschitz, match=f"^not Lipschitz: {op}"):
                rule_for(view).check(view)
        else:
            rule_for(view).check(view)


@pytest.mark.parametrize("op", LOGIC + ["Not"])
def test_logical_ops(op):
    rng = np.random.default_rng(1)
    arrays = [rng.random((2, 3)) > 0.5] + ([rng.random((3,)) > 0.5] if op != "Not" else [])
    node = helper.make_node(op, ["a", "b"][:len(arrays)], ["y"])
    assert_matches_ort(node, arrays, [True] * len(arrays))
    view = nodeview(node, arrays, [True] * len(arrays))
    with pytest.raises(NotLipschitz):
        rule_for(view).check(view)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_extremes(op, axis, keepdims, last):
    x = np.random.default_rng(2).integers(0, 3, size=(3, 4)).astype(np.float32)   # ties
    node = helper.make_node(op, ["x"], ["y"], axis=axis, keepdims=keepdims, select_last_index=last)
    assert_matches_ort(node, [x], [True], opset=13)
    view = nodeview(node, [x], [True], 13)
    with pytest.raises(NotLipschitz, match=f"^not Lipschitz: {op}"):
        rule_for(view).check(view)


# --------------------------------------------------------------------------------------- Where
WHERE_SHAPES = [((2, 3), (2, 3), (2, 3)), ((2, 3), (3,), (2, 3)), ((2, 1), (1, 3), (2, 3)), ((2, 3), (), (1,)),
                ((3,), (2, 3), (2, 1))]


@pytest.mark.parametrize("shapes", WHERE_SHAPES)
@pytest.mark.parametrize("dyn", [[False, True, False], [False, False, True], [False, True, True]])
def test_where_constant_condition(shapes, dyn):
    """Bounds equal the exact norm of onnxruntime's operator in each branch, sampled ratios stay
    below, and a pair (0, e_j) on the most copied entry realises the bound."""
    rng = np.random.default_rng(3)
    cond = rng.random(shapes[0]) > 0.4
    x, y = (rng.normal(size=s).astype(np.float32) for s in shapes[1:])
    node = helper.make_node("Where", ["c", "x", "y"], ["out"])
    arrays = [cond, x, y]
    assert_matches_ort(node, arrays, dyn)
    view = nodeview(node, arrays, dyn)
    rule = rule_for(view)
    rule.check(view)
    bounds = rule.bounds(view)
    assert set(bounds) == {i for i, d in enumerate(dyn) if d}
    session = OrtNode(node, arrays)
    for i, bound in bounds.items():
        matrix = ort_operator(node, arrays, i, session=session)
        assert bound.value == pytest.approx(spectral(matrix), abs=1e-12)
        counts = (matrix != 0).sum(axis=0)        # output entries copying each input entry
        j = int(np.argmax(counts))
        e = np.zeros(np.size(arrays[i]), np.float32)
        e[j] = 1.0
        base = list(arrays)
        base[i] = np.zeros_like(arrays[i])
        moved = list(arrays)
        moved[i] = e.reshape(np.shape(arrays[i]))
        realised = np.linalg.norm(session(moved)[0].astype(np.float64) - session(base)[0])
        assert realised == pytest.approx(bound.value, rel=1e-6, abs=1e-12)
        ratio = sampled_max_ratio(lambda t: torch_forward(view, [cond] + [t if k == i else arrays[k]
                                                                          for k in (1, 2)])[0], np.shape(arrays[i]),
                                  n_pairs=40)
        assert ratio <= bound.value * (1 + 1e-12)


def test_where_computed_condition():
    rng = np.random.default_rng(4)
    cond, x = rng.random((2, 3)) > 0.5, rng.normal(size=(2, 3)).astype(np.float32)
    node = helper.make_node("Where", ["c", "x", "y"], ["out"])
    view = nodeview(node, [cond, x, x + 1], [True, True, False])
    with pytest.raises(NotLipschitz, match="^not Lipschitz: Where selects"):
        rule_for(view).check(view)
    same = helper.make_node("Where", ["c", "x", "x"], ["out"])      # both branches one tensor: the output is x
    view = make_nodeview(same, 16, [(2, 3)] * 3, [(2, 3)], [True, True, True], {})
    rule_for(view).check(view)
    bounds = rule_for(view).bounds(view)
    assert (bounds[0].value, bounds[1].value, bounds[2].value) == (0.0, 1.0, 0.0)
    equal = nodeview(node, [cond, np.ones(3, np.float32), np.ones((2, 3), np.float32)], [True, False, False])
    rule_for(equal).check(equal)                   # equal constants: constant output, condition bound 0
    assert rule_for(equal).bounds(equal)[0].value == 0.0


# ----------------------------------------------------------------------- through the pipeline
def _analyze(tmp_path, nodes, inits=()):
    from lipgraph.options import LowerOptions, Options
    from lipgraph.pipeline import analyze
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return analyze(path, Options(methods=("autolip",), lower=LowerOptions(restarts=1)))


def _codes(result):
    return {(d.node, d.code) for d in result.diagnostics}


def test_comparison_feeding_where_is_not_lipschitz(tmp_path):
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    result = _analyze(tmp_path, [helper.make_node("Greater", ["x", "zero"], ["c"], name="gt"),
                                 helper.make_node("Where", ["c", "x", "zero"], ["y"], name="where")], [zero])
    codes = _codes(result)
    assert ("gt", "not-lipschitz") in codes and ("where", "not-lipschitz") in codes
    assert not any(code == "unsupported-op" for _, code in codes)
    assert not result.certified


def test_argmax_cast_is_not_lipschitz(tmp_path):
    result = _analyze(tmp_path, [helper.make_node("ArgMax", ["x"], ["i"], axis=1, name="argmax"),
                                 helper.make_node("Cast", ["i"], ["y"], to=TensorProto.FLOAT, name="cast")])
    assert ("argmax", "not-lipschitz") in _codes(result)
    assert not result.certified


def test_constant_condition_where_is_certified(tmp_path):
    cond = helper.make_tensor("cond", TensorProto.BOOL, [1, 4], [True, False, True, True])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    result = _analyze(tmp_path, [helper.make_node("Where", ["cond", "x", "zero"], ["y"], name="where")], [cond, zero])
    assert result.certified and result.upper.value == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("op,node_args", [("Greater", (["x", "zero"], {})), ("ArgMax", (["x"], {"axis": 0}))])
def test_the_jump_is_real(op, node_args):
    """Two inputs 2e-9 apart whose outputs (through a Cast to float) differ by 1 in onnxruntime:
    the ratio 5e8 shows that no Lipschitz constant exists."""
    names, attrs = node_args
    x = np.array([-1e-9, 1e-9], np.float64) if op == "Greater" else np.array([1.0, 1.0 - 1e-9], np.float64)
    y = np.array([1e-9, 1e-9], np.float64) if op == "Greater" else np.array([1.0, 1.0 + 1e-9], np.float64)
    node = helper.make_node(op, names, ["y"], **attrs)
    arrays = [x] + ([np.array(0.0)] if len(names) == 2 else [])
    session = OrtNode(node, arrays, 13)
    fx, fy = (np.asarray(session([v] + arrays[1:])[0], dtype=np.float64) for v in (x, y))
    assert np.linalg.norm(fx - fy) / np.linalg.norm(x - y) >= 1e8
