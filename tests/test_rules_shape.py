"""Structural ops: torch semantics vs onnxruntime and ONNX cases; closed-form norms vs the
materialised operator's SVD (equal, since every label here is exact) and sampled ratios."""
import math

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from lipgraph.errors import RuleNotApplicable
from lipgraph.registry import Kind
from rulecheck import (assert_matches_ort, check_norm, conformance, input_fn, materialised_norm, nodeview, ort_run, rule_for,
                       torch_forward,
                       uncovered_opsets)

OPS = ["Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Slice", "Split", "Cast",
       "Pad", "Concat", "Gather", "Expand"]
RNG = np.random.default_rng(0)


def x_of(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def i64(*values):
    return np.array(values, dtype=np.int64)


def check(op, arrays, attrs=None, opset=17, outputs=("y",), dynamic=(0,), expected_norms=None, atol=1e-6):
    """ORT semantics, then the norm of every output (as a function of input 0) against SVD."""
    node = helper.make_node(op, [f"i{k}" if a is not None else "" for k, a in enumerate(arrays)], list(outputs),
                            **(attrs or {}))
    dyn = [k in dynamic for k in range(len(arrays))]
    assert_matches_ort(node, arrays, dyn, opset=opset, atol=atol, rtol=atol)
    view = nodeview(node, arrays, dyn, opset=opset)
    r = rule_for(view)
    r.check(view)
    assert r.kind is Kind.STRUCTURAL
    norms = [check_norm(view, arrays, 0, output=o, n_pairs=40)[1] for o in range(len(outputs))
             if outputs[o] != "mask"]
    if expected_norms is not None:
        assert norms == pytest.approx(expected_norms, rel=1e-9)
    return view


@pytest.mark.parametrize("op", OPS)
def test_versions_cover_opset_11_to_latest(op):
    assert uncovered_opsets(op) == []


@pytest.mark.parametrize("shape,attrs,opset", [((4, 0, -1), {}, 11), ((6, 4), {}, 17), ((-1,), {}, 21),
                                               ((2, 0, 2, 2), dict(allowzero=0), 14)])
def test_reshape(shape, attrs, opset):
    check("Reshape", [x_of(2, 3, 4), i64(*shape)], attrs, opset=opset, expected_norms=[1.0])


@pytest.mark.parametrize("axis,opset", [(0, 11), (2, 13), (-1, 17), (3, 21)])
def test_flatten(axis, opset):
    check("Flatten", [x_of(2, 3, 2, 2)], dict(axis=axis), opset=opset, expected_norms=[1.0])


@pytest.mark.parametrize("perm", [None, [1, 0, 2], [2, 0, 1]])
def test_transpose(perm):
    check("Transpose", [x_of(2, 3, 4)], dict(perm=perm) if perm else {}, expected_norms=[1.0])


@pytest.mark.parametrize("opset,axes", [(11, [1]), (11, None), (17, [-1, 1]), (17, None)])
def test_squeeze(opset, axes):
    x = x_of(2, 1, 3, 1)
    if opset < 13:
        check("Squeeze", [x], dict(axes=axes) if axes else {}, opset=opset, expected_norms=[1.0])
    else:
        check("Squeeze", [x] + ([i64(*axes)] if axes else []), opset=opset, expected_norms=[1.0])


@pytest.mark.parametrize("opset,axes", [(11, [0, 3]), (11, [-1]), (17, [-1, 1]), (21, [0, 4, 2])])
def test_unsqueeze(opset, axes):
    x = x_of(2, 3)
    if opset < 13:
        check("Unsqueeze", [x], dict(axes=axes), opset=opset, expected_norms=[1.0])
    else:
        check("Unsqueeze", [x, i64(*axes)], opset=opset, expected_norms=[1.0])


@pytest.mark.parametrize("opset", [11, 14, 17, 21])
def test_identity(opset):
    check("Identity", [x_of(3, 4)], opset=opset, expected_norms=[1.0])


def test_dropout_v10_mask_is_all_true():
    """ONNX reference semantics: in inference the mask is all true (onnxruntime's v10 kernel
    returns all false; the mask is constant either way and never analysed)."""
    x = x_of(3, 4)
    node = helper.make_node("Dropout", ["x"], ["y", "mask"], ratio=0.4)
    view = nodeview(node, [x], [True], opset=11)
    y, mask = torch_forward(view, [x])
    np.testing.assert_array_equal(y.numpy(), ort_run(node, [x], opset=11)[0])
    assert mask.dtype == torch.bool and bool(mask.all()) and mask.shape == x.shape


@pytest.mark.parametrize("opset,inputs,outputs", [
    (11, [], ("y",)),
    (17, [np.array(0.3, np.float32)], ("y",)),
    (17, [np.array(0.3, np.float32), np.array(False)], ("y", "mask")),
    (17, [np.array(0.0, np.float32), np.array(True)], ("y", "mask")),   # training with ratio 0: identity
])
def test_dropout_inference(opset, inputs, outputs):
    view = check("Dropout", [x_of(3, 4)] + inputs, dict(ratio=0.4) if opset < 12 else {}, opset=opset,
                 outputs=outputs, expected_norms=[1.0])
    assert rule_for(view).certified_norm(view).value == 1.0


def test_dropout_training_is_not_applicable():
    arrays = [x_of(3, 4), np.array(0.5, np.float32), np.array(True)]
    view = nodeview(helper.make_node("Dropout", ["x", "r", "t"], ["y"]), arrays, [True, False, False])
    with pytest.raises(RuleNotApplicable, match="training"):
        rule_for(view).check(view)


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ((1, 0), (3, 10), (0, 1), (1, 2)),
    ((-1,), (-100,), (1,), (-2,)),                      # negative step, clamped end
    ((-3, 100), (-1, -100), (-2, -1), (1, -1)),         # out of range, negative axes
    ((0,), (2,), None, None),                           # default axes and steps
    ((2,), (0,), (1,), (-1,)),
])
def test_slice(starts, ends, axes, steps):
    arrays = [x_of(4, 5), i64(*starts), i64(*ends)]
    if axes or steps:
        arrays.append(i64(*(axes or range(len(starts)))))
    if steps:
        arrays.append(i64(*steps))
    check("Slice", arrays, expected_norms=[1.0])


def test_slice_empty_output_has_norm_zero():
    arrays = [x_of(4, 5), i64(2), i64(2), i64(0)]
    view = nodeview(helper.make_node("Slice", ["x", "s", "e", "a"], ["y"]), arrays, [True, False, False, False])
    assert ort_run(helper.make_node("Slice", ["x", "s", "e", "a"], ["y"]), arrays)[0].size == 0
    assert rule_for(view).certified_norm(view).value == 0.0


@pytest.mark.parametrize("opset,attrs,split,n_out", [
    (11, dict(axis=1, split=[1, 4]), None, 2),
    (11, dict(axis=0), None, 2),
    (13, dict(axis=-1), i64(2, 2, 1), 3),
    (18, dict(axis=1, num_outputs=2), None, 2),         # 5 = 3 + 2
    (18, dict(axis=1, num_outputs=3), None, 3),         # 5 = 2 + 2 + 1
])
def test_split(opset, attrs, split, n_out):
    arrays = [x_of(4, 5)] + ([split] if split is not None else [])
    outputs = tuple(f"y{k}" for k in range(n_out))
    check("Split", arrays, attrs, opset=opset, outputs=outputs, expected_norms=[1.0] * n_out)


@pytest.mark.parametrize("to,opset,atol", [(TensorProto.DOUBLE, 13, 1e-6), (TensorProto.FLOAT, 19, 1e-6),
                                           (TensorProto.FLOAT16, 21, 1e-3)])
def test_cast_float(to, opset, atol):
    check("Cast", [x_of(3, 4)], dict(to=to), opset=opset, expected_norms=[1.0], atol=atol)


def test_cast_to_integer_is_not_applicable_but_runs_on_shapes():
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT64)
    view = nodeview(node, [x_of(3)], [True])
    with pytest.raises(RuleNotApplicable):
        rule_for(view).check(view)
    shape = i64(2, 3, 5)   # shape plumbing: int64 -> float
    node = helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT)
    view = nodeview(node, [shape], [False])
    np.testing.assert_array_equal(torch_forward(view, [shape])[0].numpy(), ort_run(node, [shape])[0])


PAD_CASES = [  # (mode, pads, axes, opset, expected norm)
    ("constant", (0, 1, 2, 0), None, 11, 1.0),
    ("constant", (1, -1, -2, 3), None, 13, 1.0),
    ("edge", (2, 1, 3, 2), None, 11, math.sqrt(4 * 3)),        # last row ×4, last column ×3
    ("edge", (0, -1, 0, 2), None, 17, math.sqrt(3)),
    ("reflect", (1, 2, 2, 2), None, 13, 3.0),            # row 1 ×3, column 2 ×3
    ("reflect", (0, 3, 0, 3), None, 17, math.sqrt(3)),
    ("reflect", (-1, 0, 1, 1), None, 17, math.sqrt(2 * 2)),
    ("constant", (1, 2), (1,), 18, 1.0),
    ("edge", (2, 3), (-2,), 18, math.sqrt(4)),
    ("wrap", (1, 2, 3, 4), None, 19, 3.0),
    ("wrap", (0, -1, 0, 3), None, 19, math.sqrt(2)),
    ("wrap", (2, 5), (1,), 21, math.sqrt(3)),
]


@pytest.mark.parametrize("mode,pads,axes,opset,norm", PAD_CASES)
def test_pad(mode, pads, axes, opset, norm):
    arrays = [x_of(3, 5), i64(*pads), np.array(1.5, np.float32) if mode == "constant" else None]
    if axes:
        arrays.append(i64(*axes))
    elif arrays[-1] is None:
        arrays.pop()
    check("Pad", arrays, dict(mode=mode), opset=opset, expected_norms=[norm])


def test_pad_bound_is_not_trivially_one():
    """Edge pads copy the border many times; the bound must grow (guards against returning 1)."""
    arrays = [x_of(2, 2), i64(3, 3, 3, 3)]
    view = check("Pad", arrays, dict(mode="edge"), expected_norms=[4.0])
    assert rule_for(view).certified_norm(view).value == pytest.approx(4.0)


@pytest.mark.parametrize("shapes,axis,dynamic", [([(2, 3), (2, 1), (2, 3)], 1, (0, 2)), ([(1, 3), (2, 3)], 0, (0, 1)),
                                                 ([(2, 3), (2, 2)], -1, (0,))])
def test_concat(shapes, axis, dynamic):
    arrays = [x_of(*s) for s in shapes]
    node = helper.make_node("Concat", [f"i{k}" for k in range(len(arrays))], ["y"], axis=axis)
    dyn = [k in dynamic for k in range(len(arrays))]
    assert_matches_ort(node, arrays, dyn)
    view = nodeview(node, arrays, dyn)
    r = rule_for(view)
    assert r.kind is Kind.COMBINE and r.combine == "l2"
    bounds = r.bounds(view)
    assert set(bounds) == set(dynamic) and all(b.value == 1.0 and b.label == "exact" for b in bounds.values())
    # the same tensor fed to every analysed input: norm √(#inputs) = √Σ 1², the l2 combination
    same = [np.shape(arrays[k]) for k in dynamic]
    if len(set(same)) == 1:
        def fn(x):
            args = [x if k in dynamic else torch.as_tensor(a, dtype=torch.float64) for k, a in enumerate(arrays)]
            return r.forward(view, *args)
        assert materialised_norm(fn, same[0]) == pytest.approx(math.sqrt(len(dynamic)), rel=1e-9)


@pytest.mark.parametrize("shape,indices,axis,norm", [
    ((5, 3), i64(0, 2, 2, 4, 2), 0, math.sqrt(3)),
    ((3, 5), i64(-1, 4, 0), 1, math.sqrt(2)),                      # −1 and 4 are the same column
    ((3, 4), np.array([[0, 1], [1, 1]], np.int64), 1, math.sqrt(3)),
    ((3, 4), np.array(2, np.int64), 0, 1.0),                        # scalar index drops the axis
    ((2, 3, 4), i64(1, 0), -1, 1.0),
])
def test_gather(shape, indices, axis, norm):
    check("Gather", [x_of(*shape), indices], dict(axis=axis), expected_norms=[norm])


def test_gather_computed_indices_is_not_applicable():
    arrays = [x_of(3, 2), i64(0, 1)]
    view = nodeview(helper.make_node("Gather", ["x", "i"], ["y"]), arrays, [True, True])
    with pytest.raises(RuleNotApplicable):
        rule_for(view).check(view)


@pytest.mark.parametrize("x_shape,shape,opset", [((3, 1), (2, 3, 4), 13), ((1, 4), (3, 1), 11), ((2, 3), (2, 3), 17)])
def test_expand(x_shape, shape, opset):
    out = np.broadcast_shapes(x_shape, shape)
    check("Expand", [x_of(*x_shape), i64(*shape)], opset=opset,
          expected_norms=[math.sqrt(math.prod(out) / math.prod(x_shape))])


CONFORMANCE = {  # op: (dynamic inputs, minimum checked, skipped cases)
    "Reshape": ((0,), 10, ()), "Flatten": ((0,), 9, ()), "Transpose": ((0,), 7, ()), "Squeeze": ((0,), 2, ()),
    "Unsqueeze": ((0,), 7, ()), "Identity": ((0,), 3, ("test_identity_sequence", "test_identity_opt")),
    "Dropout": ((0,), 6, ()), "Slice": ((0,), 8, ()), "Split": ((0,), 16, ()), "Pad": ((0,), 6, ()),
    "Concat": ((0, 1, 2), 12, ()), "Gather": ((0,), 4, ()), "Expand": ((0,), 2, ()),
}


@pytest.mark.parametrize("op", list(CONFORMANCE))
def test_conformance(op):
    dynamic, minimum, skip = CONFORMANCE[op]
    checked, skipped = conformance(op, dynamic_inputs=dynamic, skip=skip)
    assert checked >= minimum, skipped


def test_cast_conformance():
    """ONNX's Cast cases whose data numpy and torch both hold: the widening float casts (the
    narrowing ones round and overflow, which lipgraph's identity execution ignores by design;
    see Cast's doc). Their data sets are TensorProtos, so they are converted here."""
    from onnx import numpy_helper

    from lipgraph.nodeview import make_nodeview
    from rulecheck import _all_cases
    widening = {"test_cast_FLOAT_to_DOUBLE", "test_cast_FLOAT16_to_FLOAT", "test_cast_FLOAT16_to_DOUBLE"}
    checked = 0
    for case in _all_cases()["Cast"]:
        if case.name not in widening:
            continue
        node = case.model.graph.node[0]
        for inputs, outputs in case.data_sets:
            x = numpy_helper.to_array(inputs[0]) if not isinstance(inputs[0], np.ndarray) else inputs[0]
            e = numpy_helper.to_array(outputs[0]) if not isinstance(outputs[0], np.ndarray) else outputs[0]
            view = make_nodeview(node, 21, [x.shape], [e.shape], [True], {})
            rule_for(view).check(view)
            got = rule_for(view).forward(view, torch.as_tensor(np.array(x)))
            np.testing.assert_array_equal(got.numpy().astype(e.dtype), e, err_msg=case.name)
            checked += 1
    assert checked == 3


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ((0,), (-1,), (1,), (-1,)),          # red-team C1: start already past end going backwards
    ((2,), (5,), (1,), (-1,)),
    ((-1,), (0,), (1,), (1,)),
    ((3,), (1,), (0,), (2,)),
])
def test_slice_empty_result_runs_and_has_norm_zero(starts, ends, axes, steps):
    """C1 crashed the forward (torch.arange with an inconsistent step sign); an empty result must
    run, match onnxruntime's (…, 0) shape, and have norm exactly 0."""
    arrays = [x_of(2, 8), i64(*starts), i64(*ends), i64(*axes), i64(*steps)]
    node = helper.make_node("Slice", ["x", "s", "e", "a", "p"], ["y"])
    assert ort_run(node, arrays)[0].size == 0
    assert_matches_ort(node, arrays, [True, False, False, False, False])
    view = nodeview(node, arrays, [True, False, False, False, False])
    assert rule_for(view).certified_norm(view).value == 0.0 == materialised_norm(input_fn(view, arrays, 0), (2, 8))


def test_transpose_of_a_scalar():
    check("Transpose", [np.array(1.5, np.float32)], expected_norms=[1.0])


def test_concat_empty_input_bound_is_zero():
    """An empty analysed input contributes no entry: its exact partial bound is 0, not 1."""
    arrays = [x_of(2, 0), x_of(2, 3)]
    node = helper.make_node("Concat", ["a", "b"], ["y"], axis=1)
    assert_matches_ort(node, arrays, [True, True])
    view = nodeview(node, arrays, [True, True])
    bounds = rule_for(view).bounds(view)
    assert bounds[0].value == 0.0 and bounds[1].value == 1.0


def test_slice_int64_max_end_with_negative_step_is_not_applicable():
    """Found by the semantic sweep: onnxruntime slices x[0:INT64_MAX:-1] to the beginning (one
    entry of a length-1 axis), the spec clamps the end to dim − 1 (empty). Refused, not guessed."""
    arrays = [x_of(2, 3), i64(2), i64(2**63 - 1), i64(1), i64(-1)]
    node = helper.make_node("Slice", ["x", "s", "e", "a", "p"], ["y"])
    assert ort_run(node, arrays)[0].shape == (2, 3)           # onnxruntime: all three, reversed
    view = nodeview(node, arrays, [True, False, False, False, False])
    with pytest.raises(RuleNotApplicable, match="INT64_MAX"):
        rule_for(view).check(view)
