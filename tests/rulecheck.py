"""Test harness for rules: one-node models, onnxruntime as the reference executor,
ONNX's own node test cases, and sampled-ratio soundness checks.

Every check here compares a rule against something it did not compute itself:
onnxruntime outputs, ONNX's expected outputs, or sampled ratios ‖f(x)−f(y)‖/‖x−y‖.
"""
from __future__ import annotations

import functools
import warnings
from collections import defaultdict

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from lipgraph.nodeview import NodeView, make_nodeview
from lipgraph.registry import REGISTRY, load_builtin_rules

load_builtin_rules()
OPSET = 17
NP_TO_ONNX = {np.dtype(k): v for k, v in
              [(np.float32, TensorProto.FLOAT), (np.float64, TensorProto.DOUBLE),
               (np.int64, TensorProto.INT64), (np.int32, TensorProto.INT32), (np.bool_, TensorProto.BOOL)]}


def one_node_model(node: onnx.NodeProto, arrays, opset: int = OPSET) -> onnx.ModelProto:
    """A model of one node; inputs named as the node's inputs, all fed at run time."""
    inputs = [helper.make_tensor_value_info(n, NP_TO_ONNX[np.asarray(a).dtype], np.shape(a))
              for n, a in zip(node.input, arrays) if n]
    graph = helper.make_graph([node], "one_node", inputs, [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for name in node.output:
        if name:
            info = inferred.get(name) or helper.make_tensor_value_info(name, inputs[0].type.tensor_type.elem_type, None)
            model.graph.output.append(info)
    return model


class OrtNode:
    """One onnxruntime session for a one-node model, built once for the inputs' dtypes and
    shapes; call it with the node's input arrays (same dtypes and shapes) to run it again."""

    def __init__(self, node: onnx.NodeProto, arrays, opset: int = OPSET):
        self.node = node
        model = one_node_model(node, arrays, opset)
        options = ort.SessionOptions()
        options.log_severity_level = 4          # rejected models raise; no console noise
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def __call__(self, arrays) -> list[np.ndarray]:
        feeds = {n: np.asarray(a) for n, a in zip(self.node.input, arrays) if n}
        return self.session.run(None, feeds)


def ort_run(node: onnx.NodeProto, arrays, opset: int = OPSET) -> list[np.ndarray]:
    return OrtNode(node, arrays, opset)(arrays)


def nodeview(node: onnx.NodeProto, arrays, dynamic, opset: int = OPSET, outs=None) -> NodeView:
    """NodeView for a one-node model; output shapes from onnxruntime (``outs``, its outputs,
    when already computed); non-dynamic inputs become constants."""
    rule_obj, version = REGISTRY.resolve(node.domain, node.op_type, opset)
    assert rule_obj is not None, f"no rule for {node.op_type} at opset {opset}"
    outs = ort_run(node, arrays, opset) if outs is None else outs
    in_shapes = [np.shape(a) if a is not None else None for a in arrays]
    constants = {i: np.asarray(a) for i, a in enumerate(arrays) if a is not None and not dynamic[i]}
    shapes = iter([o.shape for o in outs])      # onnxruntime returns the named outputs only
    return make_nodeview(node, version, in_shapes, [next(shapes) if name else None for name in node.output],
                         dynamic, constants)


def rule_for(view: NodeView):
    rule_obj, _ = REGISTRY.resolve(view.domain, view.op_type, view.since_version)
    return rule_obj


def torch_forward(view: NodeView, arrays, dtype=torch.float64) -> list[torch.Tensor]:
    """The rule's torch semantics on numpy inputs; float inputs cast to ``dtype``."""
    def to_t(a):
        if a is None:
            return None
        t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.array(a))
        return t.to(dtype) if t.is_floating_point() else t

    out = rule_for(view).forward(view, *[to_t(a) for a in arrays])
    return list(out) if isinstance(out, (tuple, list)) else [out]


def named(view: NodeView, outputs: list) -> list:
    """The forward's outputs (one per output position) at the positions the node names — what
    onnxruntime returns."""
    return [o for o, name in zip(outputs, view.outputs) if name]


def assert_matches_ort(node: onnx.NodeProto, arrays, dynamic, opset: int = OPSET, atol=1e-5, rtol=1e-5):
    view = nodeview(node, arrays, dynamic, opset)
    expected = ort_run(node, arrays, opset)
    got = named(view, torch_forward(view, arrays, dtype=torch.float32))
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g.detach().numpy(), e, atol=atol, rtol=rtol)


@functools.cache
def _all_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases
        cases = defaultdict(list)
        for case in collect_testcases():
            if len(case.model.graph.node) == 1:
                cases[case.model.graph.node[0].op_type].append(case)
        return cases


def conformance(op_type: str, dynamic_inputs=(0,), atol=1e-5, skip=()) -> tuple[int, list[str]]:
    """Check the rule's torch semantics on ONNX's node test cases for ``op_type``.

    Returns (number of cases checked, names skipped with the reason). Cases at an opset the
    registry does not cover, or that the rule declares not applicable, are skipped.
    """
    from lipgraph.errors import RuleNotApplicable

    checked, skipped = 0, []
    for case in _all_cases().get(op_type, []):
        node = case.model.graph.node[0]
        opset = next(o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx"))
        rule_obj, version = REGISTRY.resolve(node.domain, node.op_type, opset)
        if rule_obj is None or case.name in skip:
            skipped.append(f"{case.name} (opset {opset})")
            continue
        for inputs, outputs in case.data_sets:
            arrays = list(inputs)
            # only inputs the node actually has; optional empty names stay None
            full, k = [], 0
            for name in node.input:
                if name:
                    full.append(arrays[k]); k += 1
                else:
                    full.append(None)
            dyn = [i in dynamic_inputs and full[i] is not None for i in range(len(full))]
            constants = {i: np.asarray(a) for i, a in enumerate(full) if a is not None and not dyn[i]}
            shapes = iter([np.shape(o) for o in outputs])      # the case's outputs: the named ones
            view = make_nodeview(node, version, [np.shape(a) if a is not None else None for a in full],
                                 [next(shapes) if name else None for name in node.output], dyn, constants)
            try:
                rule_obj.check(view)
            except RuleNotApplicable as exc:
                skipped.append(f"{case.name} ({exc.reason})")
                break
            got = named(view, torch_forward(view, full, dtype=torch.float64 if full[0].dtype == np.float64
                                            else torch.float32))
            for e, g in zip(outputs, got):
                np.testing.assert_allclose(g.detach().numpy(), e, atol=max(atol, case.atol), rtol=max(1e-4, case.rtol),
                                           err_msg=case.name)
            checked += 1
    return checked, skipped


def sampled_max_ratio(fn, shape, n_pairs: int = 300, seed: int = 0, scales=(1e-3, 1e-1, 1.0, 10.0)) -> float:
    """Largest ‖fn(x)−fn(y)‖/‖x−y‖ over random pairs at several distances (float64)."""
    rng = np.random.default_rng(seed)
    best = 0.0
    for k in range(n_pairs):
        scale = scales[k % len(scales)]
        x = rng.normal(size=shape) * 3
        y = x + rng.normal(size=shape) * scale
        fx, fy = fn(torch.as_tensor(x)), fn(torch.as_tensor(y))
        ratio = float(torch.linalg.vector_norm(fx - fy) / np.linalg.norm(x - y))
        best = max(best, ratio)
    return best


def input_fn(view: NodeView, arrays, i: int, output: int = 0):
    """fn(x) = output ``output`` of the node as a function of input ``i`` only, others fixed."""
    def fn(x):
        args = list(arrays)
        args[i] = x
        return torch_forward(view, args)[output]
    return fn


def operator_matrix(fn, shape, dtype=np.float64) -> np.ndarray:
    """The matrix (out × in, float64) of the linear part x ↦ fn(x) − fn(0) of an affine ``fn``
    on numpy arrays of ``shape`` and ``dtype``, built column by column from basis vectors."""
    n = int(np.prod(shape))
    zero = np.asarray(fn(np.zeros(shape, dtype)), dtype=np.float64).reshape(-1)
    cols = [np.asarray(fn(e.reshape(shape).astype(dtype)), dtype=np.float64).reshape(-1) - zero
            for e in np.eye(n)]
    return np.stack(cols, axis=1) if cols else np.zeros((zero.size, 0))


def ort_operator(node: onnx.NodeProto, arrays, i: int = 0, output: int = 0, opset: int = OPSET,
                 session: OrtNode | None = None) -> np.ndarray:
    """onnxruntime's linear part of output ``output`` in input ``i`` (others fixed at ``arrays``),
    as a float64 matrix built from basis vectors in input ``i``'s dtype."""
    session = session or OrtNode(node, arrays, opset)
    dtype = np.asarray(arrays[i]).dtype

    def fn(x):
        args = list(arrays)
        args[i] = np.asarray(x, dtype)
        return session(args)[output]
    return operator_matrix(fn, np.shape(arrays[i]), dtype)


def spectral(matrix: np.ndarray) -> float:
    """σ_max of a float64 matrix by SVD (0 for an empty one)."""
    return float(np.linalg.norm(matrix, 2)) if matrix.size else 0.0


def materialised_norm(fn, shape) -> float:
    """σ_max of the linear part of an affine torch fn: Jacobian built column by column, float64 SVD."""
    return spectral(operator_matrix(lambda x: fn(torch.as_tensor(x)).numpy(), shape))


def uncovered_opsets(op_type: str, lowest: int = 11, domain: str = "") -> list[int]:
    """Opsets from ``lowest`` to onnx's latest at which ``op_type`` exists but has no rule."""
    missing = []
    for opset in range(lowest, onnx.defs.onnx_opset_version() + 1):
        try:
            onnx.defs.get_schema(op_type, max_inclusive_version=opset, domain=domain)
        except onnx.defs.SchemaError:
            continue
        if REGISTRY.resolve(domain, op_type, opset)[0] is None:
            missing.append(opset)
    return missing


def check_norm(view: NodeView, arrays, i: int = 0, output: int = 0, rel: float | None = None,
               n_pairs: int = 200):
    """The rule's ``certified_norm`` against independent computations: it must be ≥ the
    materialised operator norm (explicit float64 SVD of the Jacobian built column by column)
    and ≥ sampled ratios; when labelled exact it must equal the materialised norm (rel 1e-9),
    and when ``rel`` is given it must be within ``rel`` of it. Returns (bound, materialised)."""
    from lipgraph.labels import Label

    bound = rule_for(view).certified_norm(view)
    fn = input_fn(view, arrays, i, output)
    shape = np.shape(arrays[i])
    exact = materialised_norm(fn, shape)
    slack = 1e-12 if bound.label is Label.EXACT else 0.0   # an exact closed form may sit an ulp under the SVD
    assert bound.value >= exact * (1 - slack), (bound, exact)
    if bound.label is Label.EXACT or rel is not None:
        assert abs(bound.value - exact) <= (rel or 1e-9) * max(exact, 1e-300) + 1e-12, (bound, exact)
    ratio = sampled_max_ratio(fn, shape, n_pairs=n_pairs)
    assert ratio <= bound.value * (1 + 1e-12), (ratio, bound)
    return bound, exact


# --- helpers appended for the activation / arithmetic / pooling / softmax rule tests -----------

def since_versions(op_type: str, first_opset: int = 11, domain: str = "") -> list[int]:
    """The since_versions of ``op_type`` in effect at some opset from ``first_opset`` to the
    latest one this onnx knows (the versions a rule must cover)."""
    found = set()
    for opset in range(first_opset, onnx.defs.onnx_opset_version() + 1):
        try:
            found.add(onnx.defs.get_schema(op_type, max_inclusive_version=opset, domain=domain).since_version)
        except onnx.defs.SchemaError:
            pass
    return sorted(found)


def assert_versions_covered(op_type: str, first_opset: int = 11, domain: str = "") -> list[int]:
    """Every since_version of ``op_type`` from ``first_opset`` on has a registered rule."""
    versions = since_versions(op_type, first_opset, domain)
    assert versions, f"no schema for {op_type}"
    for v in versions:
        rule_obj, resolved = REGISTRY.resolve(domain, op_type, v)
        assert rule_obj is not None and resolved == v, f"{op_type} v{v} has no rule"
    return versions


def grid_derivatives(fn, xs, h: float = 1e-6):
    """Derivatives of an elementwise ``fn`` on the 1-D grid ``xs`` (float64): autograd, and
    the backward and forward finite differences (f(x) − f(x−h))/h, (f(x+h) − f(x))/h.
    By the mean value theorem a finite difference is a derivative value somewhere in
    [x−h, x+h], so a sound slope range contains all three up to rounding (~1e-16·|f|/h)."""
    x = torch.as_tensor(np.asarray(xs, dtype=np.float64)).clone().requires_grad_(True)
    y = fn(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    with torch.no_grad():
        x0 = x.detach()
        f0, fl, fr = fn(x0), fn(x0 - h), fn(x0 + h)
    return grad.numpy(), ((f0 - fl) / h).numpy(), ((fr - f0) / h).numpy()


def torch_pads(pads, dim: int) -> list[int]:
    """ONNX pads (begins…, ends…) → torch.nn.functional.pad order (last dim first)."""
    return [p for i in reversed(range(dim)) for p in (pads[i], pads[i + dim])]
