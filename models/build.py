#!/usr/bin/env python
"""Build the small ONNX models bundled with lipgraph.

    python models/build.py [--out DIR] [--anchors DIR]

Every model is built with ``onnx.helper`` at opset 17 (IR version 8), float32 weights stored as
initializers, fixed input shapes with batch 1, input ``"x"`` and output ``"y"``.

The build is deterministic: each builder draws its weights from its own fixed seed, only with
``Generator.uniform`` (pure integer/float arithmetic, the same bits on every platform), and the
few derived numbers are computed with ``math.fsum`` (correctly rounded, independent of BLAS).
Running the script twice gives byte-identical files; ``tests/test_models_build.py`` checks that
the committed ``models/*.onnx`` equal a fresh build.

``anchor_lipsdp.onnx`` needs ``lipsdp_random_2-10-30-20-2.npz``, a copy of the shared anchor kept in
``models/anchors`` (``--anchors DIR`` reads it elsewhere).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; onnxruntime 1.17+ reads it
PRODUCER = "lipgraph-models"

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_ANCHORS = Path(__file__).resolve().parent / "anchors"
ANCHOR_NPZ = "lipsdp_random_2-10-30-20-2.npz"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
class GraphBuilder:
    """Collects nodes and initializers; hands out unique tensor names."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count: dict[str, int] = {}

    def name(self, prefix: str) -> str:
        k = self._count.get(prefix, 0)
        self._count[prefix] = k + 1
        return f"{prefix}_{k}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), n))
        return n

    def uniform(self, shape, bound: float) -> np.ndarray:
        return self.rng.uniform(-bound, bound, size=shape).astype(np.float32)

    def weight(self, shape, fan_in: int, gain: float = 1.0) -> np.ndarray:
        """Uniform weights with variance gain/fan_in, so activations stay O(1)."""
        return self.uniform(shape, math.sqrt(3.0 * gain / fan_in))

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        out = output if output is not None else self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name("n_" + op), **attrs))
        return out

    # layers ---------------------------------------------------------------------------------
    def gemm(self, x: str, n_in: int, n_out: int, output: str | None = None,
             bias: bool = True, gain: float = 2.0) -> str:
        w = self.const("W", self.weight((n_out, n_in), n_in, gain))
        ins = [x, w]
        if bias:
            ins.append(self.const("b", self.uniform((n_out,), 0.1)))
        return self.node("Gemm", ins, output, transB=1)

    def conv(self, x: str, c_in: int, c_out: int, k: int, pad: int = 0, stride: int = 1,
             bias: bool = True, output: str | None = None, gain: float = 2.0) -> str:
        fan_in = c_in * k * k
        w = self.const("K", self.weight((c_out, c_in, k, k), fan_in, gain))
        ins = [x, w]
        if bias:
            ins.append(self.const("c", self.uniform((c_out,), 0.1)))
        return self.node("Conv", ins, output, kernel_shape=[k, k], pads=[pad] * 4,
                         strides=[stride, stride])

    def batchnorm(self, x: str, c: int, output: str | None = None) -> str:
        r = self.rng
        scale = self.const("bn_scale", r.uniform(0.5, 1.5, c).astype(np.float32))
        bias = self.const("bn_bias", r.uniform(-0.3, 0.3, c).astype(np.float32))
        mean = self.const("bn_mean", r.uniform(-0.3, 0.3, c).astype(np.float32))
        var = self.const("bn_var", r.uniform(0.25, 2.0, c).astype(np.float32))
        return self.node("BatchNormalization", [x, scale, bias, mean, var], output,
                         epsilon=1e-5)

    def model(self, doc: str, x_shape: list[int], y_shape: list[int]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "main",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
            initializer=self.inits,
        )
        return finish(graph, doc)


def finish(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, producer_version="1")
    model.ir_version = IR_VERSION
    model.doc_string = " ".join(doc.split())
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------
def build_mlp(anchors: Path | None = None) -> onnx.ModelProto:
    """Plain MLP x[1,20] → Gemm 64 → Relu → Gemm 32 → Tanh → Gemm 10 → y[1,10].

    Exercises: Gemm (transB=1, with bias) and two different 1-Lipschitz activations in a chain,
    the simplest case for AutoLip and SeqLip.
    """
    g = GraphBuilder(seed=1001)
    h = g.node("Relu", [g.gemm("x", 20, 64)])
    h = g.node("Tanh", [g.gemm(h, 64, 32)])
    g.gemm(h, 32, 10, output="y", gain=1.0)
    return g.model(build_mlp.__doc__, [1, 20], [1, 10])


def build_lenet(anchors: Path | None = None) -> onnx.ModelProto:
    """LeNet-style CNN x[1,1,28,28] → y[1,10] (the `make demo` model).

    Conv 6@5×5 pad 2 → Relu → MaxPool 3×3 stride 2 (overlapping windows: the ℓ2 constant of
    this pool is 2, not 1) → Conv 16@5×5 → Relu → MaxPool 2×2 stride 2 → Flatten → Gemm 120
    → Relu → Gemm 84 → Relu → Gemm 10.

    Exercises: Conv with padding, overlapping and non-overlapping MaxPool, Flatten, a
    conv-to-dense transition.
    """
    g = GraphBuilder(seed=1002)
    h = g.node("Relu", [g.conv("x", 1, 6, 5, pad=2)])                      # 6×28×28
    h = g.node("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2])        # 6×13×13
    h = g.node("Relu", [g.conv(h, 6, 16, 5)])                              # 16×9×9
    h = g.node("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])        # 16×4×4
    h = g.node("Flatten", [h], axis=1)                                     # 256
    h = g.node("Relu", [g.gemm(h, 256, 120)])
    h = g.node("Relu", [g.gemm(h, 120, 84)])
    g.gemm(h, 84, 10, output="y", gain=1.0)
    return g.model(build_lenet.__doc__, [1, 1, 28, 28], [1, 10])


def build_resnet_small(anchors: Path | None = None) -> onnx.ModelProto:
    """Small ResNet x[1,3,16,16] → y[1,10].

    Stem Conv 8@3×3 pad 1 → BatchNormalization → Relu; block 1: (Conv 3×3 → BN → Relu → Conv
    3×3 → BN) + identity → Add → Relu; block 2: main branch Conv 16@3×3 stride 2 → BN → Relu →
    Conv 3×3 → BN, shortcut a 1×1 stride-2 projection Conv 16, → Add → Relu; then
    GlobalAveragePool → Flatten → Gemm 10. BatchNormalization carries random statistics
    (positive variance, non-trivial scale and bias).

    Exercises: BatchNormalization (inference mode) folding or bounding, residual Adds with an
    identity and with a projection shortcut (the DAG is not a chain), strided Conv,
    GlobalAveragePool.
    """
    g = GraphBuilder(seed=1003)
    h = g.node("Relu", [g.batchnorm(g.conv("x", 3, 8, 3, pad=1, bias=False), 8)])   # 8×16×16
    # block 1: identity shortcut
    m = g.node("Relu", [g.batchnorm(g.conv(h, 8, 8, 3, pad=1, bias=False, gain=1.0), 8)])
    m = g.batchnorm(g.conv(m, 8, 8, 3, pad=1, bias=False, gain=0.5), 8)
    h = g.node("Relu", [g.node("Add", [m, h])])
    # block 2: strided, projection shortcut
    m = g.node("Relu", [g.batchnorm(g.conv(h, 8, 16, 3, pad=1, stride=2, bias=False,
                                           gain=1.0), 16)])                             # 16×8×8
    m = g.batchnorm(g.conv(m, 16, 16, 3, pad=1, bias=False, gain=0.5), 16)
    s = g.conv(h, 8, 16, 1, stride=2, bias=False, gain=1.0)                             # 16×8×8
    h = g.node("Relu", [g.node("Add", [m, s])])
    h = g.node("GlobalAveragePool", [h])                                                # 16×1×1
    h = g.node("Flatten", [h], axis=1)
    g.gemm(h, 16, 10, output="y", gain=1.0)
    return g.model(build_resnet_small.__doc__, [1, 3, 16, 16], [1, 10])


def build_affine(anchors: Path | None = None) -> onnx.ModelProto:
    """Purely affine model x[1,12] → Gemm 32 → Reshape [1,2,4,4] → Conv 3@3×3 pad 1 → Flatten
    → Gemm 5 → y[1,5]; no activations.

    Exercises: the ground-truth case where the Lipschitz constant is the spectral norm of one
    matrix and must come out exact; affine segments spanning Gemm, Reshape (shape given as an
    initializer), Conv and Flatten.
    """
    g = GraphBuilder(seed=1004)
    h = g.gemm("x", 12, 32, gain=1.0)
    shape = g.const("shape", np.array([1, 2, 4, 4], dtype=np.int64))
    h = g.node("Reshape", [h, shape])
    h = g.conv(h, 2, 3, 3, pad=1, gain=1.0)                                # 3×4×4
    h = g.node("Flatten", [h], axis=1)                                     # 48
    g.gemm(h, 48, 5, output="y", gain=1.0)
    return g.model(build_affine.__doc__, [1, 12], [1, 5])


def build_unsupported(anchors: Path | None = None) -> onnx.ModelProto:
    """Small MLP x[1,6] → Gemm 16 → Sin → Gemm 4 → y[1,4] with an op that has no lipgraph rule.

    Exercises: the error path for an op missing from the rule pack (Sin is deliberately left
    out), which must be reported, never silently bounded.
    """
    g = GraphBuilder(seed=1005)
    h = g.node("Sin", [g.gemm("x", 6, 16, gain=1.0)])
    g.gemm(h, 16, 4, output="y", gain=1.0)
    return g.model(build_unsupported.__doc__, [1, 6], [1, 4])


def build_anchor_lipsdp(anchors: Path | None = None) -> onnx.ModelProto:
    """LipSDP anchor network x[1,2] ↦ W4 relu(W3 relu(W2 relu(W1 x))) → y[1,2], no biases.

    Weights from models/anchors/lipsdp_random_2-10-30-20-2.npz (cast to float32) as MatMul
    with constant transposed weights, x @ W1ᵀ. All weights are non-negative, so the exact ℓ2
    Lipschitz constant ‖W4 W3 W2 W1‖₂ = 36.48223 is known.

    Exercises: MatMul with a constant right operand; a ground-truth number from outside the
    project.
    """
    npz = Path(anchors if anchors is not None else DEFAULT_ANCHORS) / ANCHOR_NPZ
    if not npz.is_file():
        raise FileNotFoundError(f"anchor weights not found: {npz} (pass --anchors DIR)")
    with np.load(npz) as data:
        ws = [np.asarray(data[f"W{i}"], dtype=np.float64) for i in range(1, 5)]
    g = GraphBuilder(seed=1006)
    h = "x"
    for i, w in enumerate(ws):
        wt = g.const(f"W{i + 1}T", np.ascontiguousarray(w.T.astype(np.float32)))
        h = g.node("MatMul", [h, wt], "y" if i == len(ws) - 1 else None)
        if i < len(ws) - 1:
            h = g.node("Relu", [h])
    return g.model(build_anchor_lipsdp.__doc__, [1, 2], [1, 2])


def build_spectral(anchors: Path | None = None) -> onnx.ModelProto:
    """Weight computed in-graph, like a spectral-norm parametrisation: x[1,8] → y[1,5].

    W_eff = W / (uᵀ W v) from initializers u[16], W[16,8], v[8] with MatMul, MatMul, Div,
    Transpose; then x @ W_effᵀ (MatMul) → Relu → Reshape to a shape computed from the
    activations (Shape → Gather → Concat with [4,4] → [1,4,4]) → Flatten → Gemm 5.

    Exercises: folding of value-independent subgraphs (the weight branch and the shape
    plumbing) to constants before analysis.
    """
    g = GraphBuilder(seed=1007)
    n_in, n_hid = 8, 16
    w = g.weight((n_hid, n_in), n_in, 2.0)
    v = g.rng.uniform(0.5, 1.0, n_in) * np.where(g.rng.uniform(size=n_in) < 0.5, -1.0, 1.0)
    v = v.astype(np.float32)
    # u = sign(W v) * positive: uᵀ W v = Σ |(W v)_i| u_i > 0, far from zero. fsum: exact and
    # platform-independent, so the bits do not depend on the BLAS.
    wv = [math.fsum(float(w[i, j]) * float(v[j]) for j in range(n_in)) for i in range(n_hid)]
    mag = g.rng.uniform(0.5, 1.0, n_hid)
    u = np.array([math.copysign(m, s) for m, s in zip(mag, wv)], dtype=np.float32)
    w_name, u_name, v_name = g.const("W", w), g.const("u", u), g.const("v", v)
    wv_t = g.node("MatMul", [w_name, v_name])            # [16]
    sigma = g.node("MatMul", [u_name, wv_t])             # scalar
    w_eff = g.node("Div", [w_name, sigma])               # [16, 8]
    w_eff_t = g.node("Transpose", [w_eff], perm=[1, 0])  # [8, 16]
    h = g.node("Relu", [g.node("MatMul", ["x", w_eff_t])])           # [1, 16]
    shp = g.node("Shape", [h])                                        # [2] = (1, 16)
    batch = g.node("Gather", [shp, g.const("idx", np.array([0], dtype=np.int64))], axis=0)
    new_shape = g.node("Concat", [batch, g.const("hw", np.array([4, 4], dtype=np.int64))],
                       axis=0)                                        # (1, 4, 4)
    h = g.node("Reshape", [h, new_shape])                             # [1, 4, 4]
    h = g.node("Flatten", [h], axis=1)                                # [1, 16]
    g.gemm(h, n_hid, 5, output="y", gain=1.0)
    return g.model(build_spectral.__doc__, [1, n_in], [1, 5])


def build_concat(anchors: Path | None = None) -> onnx.ModelProto:
    """Branching model x[1,8] → y[1,4] whose branches meet in Concat, Sub and Add.

    a = Relu(Gemm_A x), b = Tanh(Gemm_B x); c = Gemm(Concat(a, b), axis=1); d = Gemm(a − b);
    y = c + d.

    Exercises: fan-out of the input into two branches, Concat of branches, Sub of branches, an
    Add joining two paths that share inputs (bounds must add, not take the max).
    """
    g = GraphBuilder(seed=1008)
    a = g.node("Relu", [g.gemm("x", 8, 6)])
    b = g.node("Tanh", [g.gemm("x", 8, 6)])
    c = g.gemm(g.node("Concat", [a, b], axis=1), 12, 4, gain=1.0)
    d = g.gemm(g.node("Sub", [a, b]), 6, 4, gain=1.0)
    g.node("Add", [c, d], "y")
    return g.model(build_concat.__doc__, [1, 8], [1, 4])


BUILDERS: dict[str, Callable[[Path | None], onnx.ModelProto]] = {
    "mlp.onnx": build_mlp,
    "lenet.onnx": build_lenet,
    "resnet_small.onnx": build_resnet_small,
    "affine.onnx": build_affine,
    "unsupported.onnx": build_unsupported,
    "anchor_lipsdp.onnx": build_anchor_lipsdp,
    "spectral.onnx": build_spectral,
    "concat.onnx": build_concat,
}


def build_all(out: Path | str = MODELS_DIR, anchors: Path | str | None = None) -> list[Path]:
    """Write every model into ``out``; return the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, builder in BUILDERS.items():
        model = builder(Path(anchors) if anchors is not None else None)
        data = model.SerializeToString(deterministic=True)
        path = out / fname
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder (default models/)")
    ap.add_argument("--anchors", type=Path, default=None,
                    help=f"folder holding {ANCHOR_NPZ} (default {DEFAULT_ANCHORS})")
    args = ap.parse_args(argv)
    try:
        paths = build_all(args.out, args.anchors)
    except FileNotFoundError as e:
        print(f"build.py: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"{p}  {p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
