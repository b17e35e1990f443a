"""Random small ONNX graphs for property tests.

    from randgraphs import random_graph, random_mlp

``random_graph(seed)`` builds a small random DAG with input ``"x"`` — a vector ``[1, n]``
(n in 3..8) or, about one seed in three, a small image ``[1, c, h, w]`` (c in 1..3, h, w in
4..7) — and output ``"y"`` of shape ``[1, m]`` (m in 1..4). The graph is a random sequence of
blocks drawn from:

* vectors: Gemm (transB 0 or 1, bias or not) or MatMul with constant weights; Relu,
  LeakyRelu, Tanh, Sigmoid; a residual ``x + f(x)``; a Sub ``f(x) − g(x)`` and a Concat
  ``[f(x), g(x)]`` of two branches; Mul by a constant tensor; BatchNormalization on
  ``[1, n]``; Reshape into a small image;
* images: Conv 3×3 with padding 1; BatchNormalization; the activations; MaxPool (2×2 stride
  2, or overlapping 2×2 stride 1, or 3×3 stride 1 pad 1); a residual
  ``x + Conv(act(Conv(x)))``; a Concat of two Conv branches on the channel axis; Flatten or
  Reshape to a vector.

Weights are uniform with variance ~1/fan_in (residual branches scaled by 1/2), BN statistics
are mild, so every value stays O(1). Same seed, same model (bytes included). Every graph
passes ``onnx.checker.check_model(full_check=True)`` and runs in onnxruntime.

``random_mlp(seed, widths, act)`` builds a plain MLP ``Gemm → act → … → Gemm``.

``run_ort(model, x)`` and ``random_input(model, seed)`` are small conveniences for tests.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["random_graph", "random_mlp", "random_input", "input_shape", "run_ort", "ACTIVATIONS",
           "OPSET", "IR_VERSION"]

OPSET = 17
IR_VERSION = 8
ACTIVATIONS = ("Relu", "LeakyRelu", "Tanh", "Sigmoid")
_ACT_ALIASES = {a.lower(): a for a in ACTIVATIONS}


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str | None = None, **attrs) -> str:
        out = output or self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=self.fresh("n" + op),
                                           **attrs))
        return out

    def weight(self, shape, fan_in: int, gain: float = 1.0) -> np.ndarray:
        bound = math.sqrt(3.0 * gain / fan_in)
        return self.rng.uniform(-bound, bound, size=shape).astype(np.float32)

    def small(self, shape, bound: float = 0.1) -> np.ndarray:
        return self.rng.uniform(-bound, bound, size=shape).astype(np.float32)

    def choice(self, options):
        return options[int(self.rng.integers(len(options)))]

    # layers ---------------------------------------------------------------------------------
    def act(self, x: str, kind: str | None = None) -> str:
        kind = kind or self.choice(ACTIVATIONS)
        if kind == "LeakyRelu":
            return self.node("LeakyRelu", [x], alpha=float(np.float32(self.rng.uniform(0.01, 0.3))))
        return self.node(kind, [x])

    def dense(self, x: str, n_in: int, n_out: int, gain: float = 1.0,
              output: str | None = None, kind: str | None = None) -> str:
        kind = kind or self.choice(("GemmT", "Gemm", "MatMul"))
        if kind == "MatMul":
            w = self.const("W", self.weight((n_in, n_out), n_in, gain))
            return self.node("MatMul", [x, w], output)
        bias = [self.const("b", self.small((n_out,)))] if self.rng.random() < 0.7 else []
        if kind == "GemmT":
            w = self.const("W", self.weight((n_out, n_in), n_in, gain))
            return self.node("Gemm", [x, w, *bias], output, transB=1)
        w = self.const("W", self.weight((n_in, n_out), n_in, gain))
        return self.node("Gemm", [x, w, *bias], output)

    def conv(self, x: str, c_in: int, c_out: int, gain: float = 1.0) -> str:
        w = self.const("K", self.weight((c_out, c_in, 3, 3), 9 * c_in, gain))
        bias = [self.const("c", self.small((c_out,)))] if self.rng.random() < 0.5 else []
        return self.node("Conv", [x, w, *bias], kernel_shape=[3, 3], pads=[1, 1, 1, 1])

    def batchnorm(self, x: str, c: int) -> str:
        r = self.rng
        ins = [x,
               self.const("bn_s", r.uniform(0.6, 1.4, c).astype(np.float32)),
               self.const("bn_b", r.uniform(-0.2, 0.2, c).astype(np.float32)),
               self.const("bn_m", r.uniform(-0.2, 0.2, c).astype(np.float32)),
               self.const("bn_v", r.uniform(0.5, 2.0, c).astype(np.float32))]
        return self.node("BatchNormalization", ins, epsilon=1e-5)

    def model(self, x_shape: Sequence[int], y_shape: Sequence[int], doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "random",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
            initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="lipgraph-randgraphs")
        model.ir_version = IR_VERSION
        model.doc_string = doc
        onnx.checker.check_model(model, full_check=True)
        return model


# ------------------------------------------------------------------------------------------------
# blocks: each takes (builder, tensor, shape) and returns (tensor, shape)
# shape is a tuple: (n,) for a [1, n] vector, (c, h, w) for a [1, c, h, w] image
# ------------------------------------------------------------------------------------------------
def _vec_dense(b: _Builder, x, shape):
    m = int(b.rng.integers(2, 9))
    return b.dense(x, shape[0], m, gain=2.0), (m,)


def _vec_act(b, x, shape):
    return b.act(x), shape


def _vec_residual(b, x, shape):
    n = shape[0]
    f = b.act(b.dense(x, n, n))
    if b.rng.random() < 0.5:
        f = b.dense(f, n, n, gain=0.25)
    return b.node("Add", [x, f] if b.rng.random() < 0.5 else [f, x]), shape


def _vec_sub(b, x, shape):
    n, m = shape[0], int(b.rng.integers(2, 9))
    f = b.act(b.dense(x, n, m))
    g = b.dense(x, n, m) if b.rng.random() < 0.5 else b.act(b.dense(x, n, m))
    return b.node("Sub", [f, g]), (m,)


def _vec_concat(b, x, shape):
    n = shape[0]
    m1, m2 = (int(v) for v in b.rng.integers(2, 6, size=2))
    f = b.act(b.dense(x, n, m1, gain=2.0))
    g = b.dense(x, n, m2) if b.rng.random() < 0.3 else b.act(b.dense(x, n, m2, gain=2.0))
    return b.node("Concat", [f, g], axis=1), (m1 + m2,)


def _vec_mul(b, x, shape):
    n = shape[0]
    cshape = (n,) if b.rng.random() < 0.5 else (1, n)
    c = b.rng.uniform(0.5, 1.5, cshape) * np.where(b.rng.random(cshape) < 0.25, -1.0, 1.0)
    k = b.const("scale", c.astype(np.float32))
    return b.node("Mul", [x, k] if b.rng.random() < 0.5 else [k, x]), shape


def _vec_bn(b, x, shape):
    return b.batchnorm(x, shape[0]), shape


def _vec_to_image(b, x, shape):
    n = shape[0]
    # factor n = c * h * w with h, w >= 2 where possible
    options = [(n // (h * w), h, w) for h in range(2, n + 1) for w in range(2, n + 1)
               if n % (h * w) == 0]
    if not options:
        return _vec_dense(b, x, shape)
    c, h, w = b.choice(options)
    s = b.const("shape", np.array([1, c, h, w], dtype=np.int64))
    return b.node("Reshape", [x, s]), (c, h, w)


def _img_conv(b, x, shape):
    c, h, w = shape
    co = int(b.rng.integers(1, 5))
    return b.conv(x, c, co, gain=2.0), (co, h, w)


def _img_act(b, x, shape):
    return b.act(x), shape


def _img_bn(b, x, shape):
    return b.batchnorm(x, shape[0]), shape


def _img_pool(b, x, shape):
    c, h, w = shape
    kinds = ["k3s1p1"]
    if h >= 2 and w >= 2:
        kinds.append("k2s1")
    if h >= 4 and w >= 4:
        kinds.append("k2s2")
    kind = b.choice(kinds)
    if kind == "k2s2":
        return b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), (c, h // 2, w // 2)
    if kind == "k2s1":
        return b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[1, 1]), (c, h - 1, w - 1)
    return (b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
            shape)


def _img_residual(b, x, shape):
    c = shape[0]
    f = b.conv(b.act(b.conv(x, c, c)), c, c, gain=0.25)
    return b.node("Add", [x, f]), shape


def _img_concat(b, x, shape):
    c, h, w = shape
    c1, c2 = (int(v) for v in b.rng.integers(1, 3, size=2))
    f = b.act(b.conv(x, c, c1, gain=2.0))
    g = b.conv(x, c, c2)
    return b.node("Concat", [f, g], axis=1), (c1 + c2, h, w)


def _img_flatten(b, x, shape):
    n = int(np.prod(shape))
    if b.rng.random() < 0.5:
        return b.node("Flatten", [x], axis=1), (n,)
    s = b.const("shape", np.array([1, n if b.rng.random() < 0.5 else -1], dtype=np.int64))
    return b.node("Reshape", [x, s]), (n,)


_VEC_BLOCKS = [(_vec_dense, 3), (_vec_act, 3), (_vec_residual, 2), (_vec_sub, 1),
               (_vec_concat, 1), (_vec_mul, 1), (_vec_bn, 1), (_vec_to_image, 0.5)]
_IMG_BLOCKS = [(_img_conv, 3), (_img_act, 2), (_img_bn, 1), (_img_pool, 1.5),
               (_img_residual, 1.5), (_img_concat, 1), (_img_flatten, 1)]


def _pick(b: _Builder, table):
    w = np.array([t[1] for t in table], dtype=np.float64)
    return table[int(b.rng.choice(len(table), p=w / w.sum()))][0]


def random_graph(seed: int, n_blocks: int | None = None) -> onnx.ModelProto:
    """A small random ONNX graph (opset 17) with input "x" and output "y" [1, m].

    ``n_blocks`` (default: 2..6 drawn from the seed) is the number of blocks before the final
    dense layer. Deterministic in ``seed``.
    """
    b = _Builder(seed)
    r = b.rng
    if r.random() < 1 / 3:
        shape: tuple[int, ...] = (int(r.integers(1, 4)), int(r.integers(4, 8)),
                                  int(r.integers(4, 8)))
    else:
        shape = (int(r.integers(3, 9)),)
    x_shape = [1, *shape]
    if n_blocks is None:
        n_blocks = int(r.integers(2, 7))
    x = "x"
    ops = []
    for _ in range(n_blocks):
        block = _pick(b, _VEC_BLOCKS if len(shape) == 1 else _IMG_BLOCKS)
        # keep images small: pool or flatten once they grow past 96 values, after the first block
        if len(shape) == 3 and int(np.prod(shape)) > 96 and ops:
            block = _img_pool if min(shape[1:]) >= 4 else _img_flatten
        x, shape = block(b, x, shape)
        ops.append(block.__name__.lstrip("_"))
    if len(shape) == 3:
        x, shape = _img_flatten(b, x, shape)
        ops.append("img_flatten")
    m = int(r.integers(1, 5))
    b.dense(x, shape[0], m, output="y")
    return b.model(x_shape, [1, m], f"random_graph(seed={seed}): " + " ".join(ops))


def random_mlp(seed: int, widths: Sequence[int], act: str = "Relu",
               bias: bool = True) -> onnx.ModelProto:
    """MLP x[1, widths[0]] → Gemm → act → … → Gemm → y[1, widths[-1]] (transB=1).

    ``act`` is one of ACTIVATIONS (case-insensitive), or None/"" for a purely affine chain.
    Weights are uniform with variance 2/fan_in (1/fan_in for the last layer).
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2:
        raise ValueError("widths needs at least an input and an output width")
    kind = _ACT_ALIASES.get(act.lower()) if act else None
    if act and kind is None:
        raise ValueError(f"unknown activation {act!r}; pick from {ACTIVATIONS}")
    b = _Builder(seed)
    x = "x"
    n_layers = len(widths) - 1
    for i in range(n_layers):
        last = i == n_layers - 1
        w = b.const("W", b.weight((widths[i + 1], widths[i]), widths[i], 1.0 if last else 2.0))
        ins = [x, w] + ([b.const("b", b.small((widths[i + 1],)))] if bias else [])
        x = b.node("Gemm", ins, "y" if last else None, transB=1)
        if not last and kind:
            x = b.act(x, kind)
    return b.model([1, widths[0]], [1, widths[-1]],
                   f"random_mlp(seed={seed}, widths={widths}, act={kind})")


# ------------------------------------------------------------------------------------------------
# conveniences
# ------------------------------------------------------------------------------------------------
def input_shape(model: onnx.ModelProto) -> list[int]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value for d in dims]


def random_input(model: onnx.ModelProto, seed: int = 0) -> np.ndarray:
    """A standard-normal float32 input of the model's (fixed) input shape."""
    return np.random.default_rng(seed).standard_normal(input_shape(model)).astype(np.float32)


def run_ort(model: onnx.ModelProto | str, x: np.ndarray) -> np.ndarray:
    """Run a single-input, single-output model in onnxruntime on CPU; return the output."""
    import onnxruntime as ort

    src = model if isinstance(model, str) else model.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def sampled_ratio(model_path_or_proto, shape, n=200, seed=0) -> float:
    """max ‖f(x)−f(y)‖/‖x−y‖ over random pairs at several distances, f by onnxruntime."""
    import onnxruntime as ort
    src = model_path_or_proto if isinstance(model_path_or_proto, str) else model_path_or_proto.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    scale = np.array([0.03, 0.3, 3.0])[np.arange(n) % 3].reshape(-1, *([1] * len(shape)))
    y = (x + scale * rng.normal(size=x.shape)).astype(np.float32)
    best = 0.0
    for xi, yi in zip(x, y):
        fx, fy = sess.run(None, {name: xi})[0], sess.run(None, {name: yi})[0]
        best = max(best, float(np.linalg.norm(fx.astype(np.float64) - fy) / np.linalg.norm(xi.astype(np.float64) - yi)))
    return best
