"""The numerical proof a fusion needs before it rewrites anything: the fused op's torch
semantics (its rule's ``forward``) must reproduce the matched subgraph, run by onnxruntime on
its own, on inputs that include large magnitudes, signed zeros and points near every kink."""
from __future__ import annotations

import numpy as np
import onnx
import torch

from lipgraph.nodeview import make_nodeview
from lipgraph.registry import FUSED_DOMAIN, REGISTRY, load_builtin_rules

RTOL, ATOL = 1e-5, 1e-5


def samples() -> np.ndarray:
    """Signed zeros, ±1e4 and ±1e2, a fine grid on [−10, 10], points just around ±3 (hard-swish's
    kinks), ±√2 and ±2.4 (GELU's and SiLU's slope extrema), seeded normals of three scales."""
    kinks = np.array([3.0, -3.0])[:, None] + np.array([-1e-3, -1e-6, 0.0, 1e-6, 1e-3])[None, :]
    fixed = [0.0, -0.0, 1e4, -1e4, 1e2, -1e2, 30.0, -30.0, np.sqrt(2), -np.sqrt(2), 2.4, -2.4]
    rng = np.random.default_rng(0x5eed)
    return np.concatenate([fixed, kinks.ravel(), np.linspace(-10, 10, 401),
                           rng.standard_normal(64) * np.repeat([0.1, 3.0, 50.0], [21, 22, 21])])


def subgraph_model(proto: onnx.ModelProto, nodes: list[onnx.NodeProto], x: str, output: str,
                   constants: dict[str, np.ndarray], elem: int) -> onnx.ModelProto:
    """The matched nodes alone: input ``x`` as a 1-D tensor, its constants as initializers."""
    graph = onnx.helper.make_graph(
        list(nodes), "fusion_check", [onnx.helper.make_tensor_value_info(x, elem, [None])],
        [onnx.helper.make_tensor_value_info(output, elem, None)],
        [onnx.numpy_helper.from_array(np.asarray(v), name) for name, v in constants.items()])
    return onnx.helper.make_model(graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)


def fused_function(node: onnx.NodeProto):
    """x ↦ the fused node's output by its rule's torch semantics."""
    load_builtin_rules()
    rule, version = REGISTRY.resolve(FUSED_DOMAIN, node.op_type, 1)
    if rule is None:
        raise LookupError(f"no rule for {FUSED_DOMAIN}::{node.op_type}")
    view = make_nodeview(node, version, [None], [None], [True], {})
    return lambda x: rule.forward(view, x)


def disagreement(sub: onnx.ModelProto, fused: onnx.NodeProto, dtype) -> str | None:
    """None when the fused op reproduces ``sub`` on ``samples()``; else where it does not."""
    from lipgraph.ir.differential import ort_session

    x = samples().astype(dtype)
    try:
        want = ort_session(sub).run(None, {sub.graph.input[0].name: x})[0].astype(np.float64)
    except Exception as exc:  # noqa: BLE001 - onnxruntime refuses the subgraph (e.g. an opset it lacks)
        return f"onnxruntime cannot run the subgraph ({str(exc).strip().splitlines()[0][:160]})"
    with torch.no_grad():
        got = fused_function(fused)(torch.as_tensor(x)).double().numpy()
    if want.shape != got.shape:
        return f"shapes {list(got.shape)} and {list(want.shape)}"
    bad = ~((np.abs(got - want) <= ATOL + RTOL * np.abs(want)) | (np.isnan(got) & np.isnan(want)))
    if bad.any():
        k = int(np.argmax(bad))
        return f"at x = {float(x[k]):.6g} the subgraph gives {want[k]:.9g}, {fused.op_type} gives {got[k]:.9g}"
    return None
