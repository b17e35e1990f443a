"""Tiny onnx.helper builders for the benchmark's hand-built networks (opset 17, IR 8)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


class Builder:
    """Collects nodes and float32 initializers; hands out unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, prefix: str, array) -> str:
        name = self.fresh(prefix)
        arr = np.asarray(array)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        out = output or self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh("n_" + op), **attrs))
        return out

    def gemm(self, x: str, w: np.ndarray, b: np.ndarray | None = None, output: str | None = None) -> str:
        """y = x Wᵀ + b with W of shape (out, in)."""
        ins = [x, self.const("W", w)] + ([self.const("b", b)] if b is not None else [])
        return self.node("Gemm", ins, output, transB=1)

    def save(self, path: Path, in_shape, out_shape, name: str) -> Path:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
            initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="lipgraph-bench")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return path


def mlp(path: Path, weights: list[np.ndarray], biases: list[np.ndarray | None] | None = None,
        act: str = "Relu", name: str = "mlp") -> Path:
    """x ↦ W_L act(… act(W_1 x + b_1) …) + b_L as Gemm/act nodes; weights (out, in)."""
    b = Builder()
    biases = biases or [None] * len(weights)
    t = "x"
    for i, (w, bias) in enumerate(zip(weights, biases)):
        last = i == len(weights) - 1
        t = b.gemm(t, w, bias, output="y" if last else None)
        if not last:
            t = b.node(act, [t])
    return b.save(path, [1, weights[0].shape[1]], [1, weights[-1].shape[0]], name)
