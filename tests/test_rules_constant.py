"""Value-independent ops (Shape, Size, ConstantOfShape) and the int64 shape plumbing that
goes with them (Gather/Concat/Unsqueeze/Slice/… on shape tensors): torch semantics vs
onnxruntime and ONNX's cases."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from lipgraph.registry import Kind
from rulecheck import assert_matches_ort, conformance, nodeview, ort_run, rule_for, torch_forward, uncovered_opsets

X = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)


@pytest.mark.parametrize("op", ["Shape", "Size", "ConstantOfShape"])
def test_versions_cover_opset_11_to_latest(op):
    assert uncovered_opsets(op) == []


@pytest.mark.parametrize("attrs,opset", [({}, 11), ({}, 13), (dict(start=1), 15), (dict(start=-3, end=-1), 19),
                                         (dict(end=2), 21), (dict(start=3, end=1), 17)])
def test_shape(attrs, opset):
    node = helper.make_node("Shape", ["x"], ["y"], **attrs)
    assert_matches_ort(node, [X], [True], opset=opset)
    view = nodeview(node, [X], [True], opset=opset)
    assert rule_for(view).kind is Kind.CONSTANT
    out = torch_forward(view, [X])[0]
    assert out.dtype.is_floating_point is False


@pytest.mark.parametrize("opset", [11, 13, 19, 21])
def test_size(opset):
    node = helper.make_node("Size", ["x"], ["y"])
    assert_matches_ort(node, [X], [True], opset=opset)
    assert rule_for(nodeview(node, [X], [True], opset=opset)).kind is Kind.CONSTANT


@pytest.mark.parametrize("value,shape,opset", [
    (None, (2, 3), 11),
    (np.array([1.5], np.float32), (3, 1, 2), 17),
    (np.array([7], np.int64), (4,), 20),
    (np.array([2.0], np.float64), (0, 3), 21),
])
def test_constant_of_shape(value, shape, opset):
    attrs = {} if value is None else dict(value=numpy_helper.from_array(value))
    node = helper.make_node("ConstantOfShape", ["s"], ["y"], **attrs)
    arrays = [np.array(shape, np.int64)]
    view = nodeview(node, arrays, [False], opset=opset)
    assert rule_for(view).kind is Kind.CONSTANT
    got = torch_forward(view, arrays)[0]
    expected = ort_run(node, arrays, opset)[0]
    assert got.numpy().dtype == expected.dtype
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("op,minimum", [("Shape", 11), ("Size", 2), ("ConstantOfShape", 3)])
def test_conformance(op, minimum):
    checked, skipped = conformance(op, dynamic_inputs=(0,) if op != "ConstantOfShape" else ())
    assert checked >= minimum, skipped


SHAPE = np.array([2, 3, 4, 5], np.int64)
PLUMBING = [  # (node, arrays): the folding path of a typical "x.view(x.size(0), -1)" export
    (helper.make_node("Gather", ["s", "i"], ["y"], axis=0), [SHAPE, np.array(0, np.int64)]),
    (helper.make_node("Gather", ["s", "i"], ["y"], axis=0), [SHAPE, np.array([-1, 1], np.int64)]),
    (helper.make_node("Unsqueeze", ["s", "a"], ["y"]), [np.array(3, np.int64), np.array([0], np.int64)]),
    (helper.make_node("Concat", ["a", "b"], ["y"], axis=0), [np.array([2], np.int64), np.array([-1, 4], np.int64)]),
    (helper.make_node("Slice", ["s", "b", "e"], ["y"]), [SHAPE, np.array([1], np.int64), np.array([3], np.int64)]),
    (helper.make_node("Squeeze", ["s", "a"], ["y"]), [np.array([6], np.int64), np.array([0], np.int64)]),
    (helper.make_node("Reshape", ["s", "t"], ["y"]), [SHAPE, np.array([2, 2], np.int64)]),
    (helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT), [SHAPE]),
    (helper.make_node("Expand", ["s", "t"], ["y"]), [np.array([1], np.int64), np.array([3], np.int64)]),
    (helper.make_node("Identity", ["s"], ["y"]), [SHAPE]),
]


@pytest.mark.parametrize("k", range(len(PLUMBING)))
def test_int64_shape_plumbing(k):
    node, arrays = PLUMBING[k]
    view = nodeview(node, arrays, [False] * len(arrays))
    got = torch_forward(view, arrays)[0]
    expected = ort_run(node, arrays)[0]
    assert got.numpy().dtype == expected.dtype
    np.testing.assert_array_equal(got.numpy(), expected)
