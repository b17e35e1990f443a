"""The numerical proof a fusion needs before it rewrites anything: the fused op's torch
semantics (its rule's ``forward``) must reproduce the matched subgraph, run by onnxruntime on
its own.

Elementwise patterns are proved in the model's float type on inputs that include large
magnitudes, signed zeros and points near every kink. Patterns with a reduction (normalisations,
softmax) are proved on the real function, in float64, on whole inputs of the model's shape: how
float32 rounds them depends on the spelling (E[x²] − E[x]² cancels catastrophically at large
means, exp without the max shift overflows past 88), while the op they compute does not."""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

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


def shaped_samples(shape: tuple[int, ...]) -> list[tuple[str, np.ndarray]]:
    """(label, float64 input of ``shape``): zero and constant slices (zero variance), seeded
    normals at scales 1e-3 (variance below a typical ε, so ε's place matters) to 100, and normals
    around an offset of 50 (a mean to subtract)."""
    rng = np.random.default_rng(0x5eed)
    out = [("zeros", np.zeros(shape)), ("-0.0 everywhere", np.full(shape, -0.0)), ("constant 3", np.full(shape, 3.0))]
    out += [(f"normal·{s:g}", rng.standard_normal(shape) * s) for s in (1e-3, 1e-3, 1.0, 1.0, 10.0, 100.0, 100.0)]
    return out + [("50 + normal", 50.0 + rng.standard_normal(shape))]


def subgraph_model(proto: onnx.ModelProto, nodes: list[onnx.NodeProto], x: str, output: str,
                   constants: dict[str, np.ndarray], elem: int, shape: tuple[int, ...] | None = None) -> onnx.ModelProto:
    """The matched nodes alone: input ``x`` of ``shape`` (1-D of any length when None), its
    constants as initializers."""
    graph = onnx.helper.make_graph(
        list(nodes), "fusion_check", [onnx.helper.make_tensor_value_info(x, elem, [None] if shape is None else shape)],
        [onnx.helper.make_tensor_value_info(output, elem, None)],
        [numpy_helper.from_array(np.asarray(v), name) for name, v in constants.items()])
    return onnx.helper.make_model(graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)


def proof_model(proto: onnx.ModelProto, nodes: list[onnx.NodeProto], x: str, output: str,
                constants: dict[str, np.ndarray], shape: tuple[int, ...]) -> onnx.ModelProto:
    """``subgraph_model`` in float64 with input ``shape``, for the proof on the real function."""
    wide = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in constants.items()}
    return subgraph_model(proto, nodes, x, output, wide, onnx.TensorProto.DOUBLE, shape)


def fused_function(node: onnx.NodeProto, weights: dict[str, np.ndarray] | None = None):
    """x ↦ the fused node's output by its rule's torch semantics; inputs after x are read from
    ``weights`` (by name)."""
    load_builtin_rules()
    rule, version = REGISTRY.resolve(FUSED_DOMAIN, node.op_type, 1)
    if rule is None:
        raise LookupError(f"no rule for {FUSED_DOMAIN}::{node.op_type}")
    extra = [(weights or {})[t] if t else None for t in node.input[1:]]
    view = make_nodeview(node, version, [None] * len(node.input), [None], [True] + [False] * len(extra),
                         {i + 1: w for i, w in enumerate(extra) if w is not None})
    tensors = [None if w is None else torch.as_tensor(np.array(w)) for w in extra]
    return lambda x: rule.forward(view, x, *tensors)


def disagreement(sub: onnx.ModelProto, fused: onnx.NodeProto, dtype, shape: tuple[int, ...] | None = None) -> str | None:
    """None when the fused op reproduces ``sub`` on ``samples()`` in ``dtype`` (``shape`` None)
    or on ``shaped_samples(shape)`` (float64); else where it does not."""
    from lipgraph.ir.differential import ort_session

    weights = {t.name: numpy_helper.to_array(t) for t in sub.graph.initializer}
    fn, session = fused_function(fused, weights), ort_session(sub)
    inputs = [("", samples().astype(dtype))] if shape is None else shaped_samples(shape)
    for label, x in inputs:
        want = session.run(None, {sub.graph.input[0].name: x})[0].astype(np.float64)
        with torch.no_grad():
            got = fn(torch.as_tensor(x)).double().numpy()
        if want.shape != got.shape:
            return f"shapes {list(got.shape)} and {list(want.shape)}"
        bad = ~((np.abs(got - want) <= ATOL + RTOL * np.abs(want)) | (np.isnan(got) & np.isnan(want)))
        if bad.any():
            k = np.unravel_index(int(np.argmax(bad)), bad.shape)
            where = f"at x = {float(x[k]):.6g}" if shape is None else f"on the {label} input, at {list(map(int, k))},"
            return f"{where} the subgraph gives {want[k]:.9g}, {fused.op_type} gives {got[k]:.9g}"
    return None
