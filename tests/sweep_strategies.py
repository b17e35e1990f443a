"""Hypothesis strategies for the semantic sweep (test_semantics_sweep.py): one per registered op.

``CASES[op](version)`` is a strategy of ``Case``: a one-node model (node, input arrays, which
inputs are analysed) drawn from the op's attribute space in its schema at that since_version.
Float inputs are drawn as float32 numbers held in float64 arrays, so the same values can be
fed to onnxruntime in either precision. Invalid draws are fine: onnxruntime rejects them and
the sweep skips them; nothing here tries to pre-filter what onnxruntime should decide.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from onnx import TensorProto, helper

INT_MAX, INT_MIN = 2**63 - 1, -(2**63)
AUTO_PADS = ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]


class Case:
    """A one-node model: node (onnx.NodeProto), arrays (one per node input, None for an omitted
    optional one), dynamic (which inputs are analysed), attrs (as given to make_node)."""

    def __init__(self, node, arrays, dynamic, attrs):
        self.node, self.arrays, self.dynamic, self.attrs = node, arrays, dynamic, attrs

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        shapes = [None if a is None else (np.shape(a), str(np.asarray(a).dtype)) for a in self.arrays]
        consts = {i: np.asarray(a).tolist() for i, a in enumerate(self.arrays)
                  if a is not None and not self.dynamic[i] and np.size(a) <= 12}
        return (f"Case({self.node.op_type}, attrs={self.attrs}, inputs={shapes}, dynamic={self.dynamic}, "
                f"outputs={list(self.node.output)}, small constants={consts})")


def make_case(op, inputs, dynamic, n_outputs=1, **attrs) -> Case:
    """A Case for ``op`` with inputs given as (name, array | None) pairs."""
    names = [name if a is not None else "" for name, a in inputs]
    while names and names[-1] == "":   # trailing omitted optional inputs are dropped
        names.pop()
    arrays = [a for _, a in inputs][:len(names)]
    attrs = {k: v for k, v in attrs.items() if v is not None}
    node = helper.make_node(op, names, [f"y{i}" for i in range(n_outputs)], **attrs)
    return Case(node, arrays, [bool(d) and arrays[i] is not None for i, d in enumerate(dynamic[:len(names)])], attrs)


# ------------------------------------------------------------------------------ building blocks
@st.composite
def rngs(draw):
    """A numpy generator seeded by hypothesis (values need no shrinking, only reproducibility)."""
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def values(rng, shape, scale=2.0, avoid_zero=False):
    """float32 numbers in a float64 array; ``avoid_zero`` keeps |v| ≥ 0.25 (divisors)."""
    v = rng.normal(size=shape) * scale
    if avoid_zero:
        v = np.sign(v + (v == 0)) * (0.25 + np.abs(v))
    return np.asarray(v, dtype=np.float32).astype(np.float64)


def i64(values_) -> np.ndarray:
    return np.asarray(values_, dtype=np.int64)


def shapes(min_rank=1, max_rank=4, min_side=1, max_side=4):
    return st.lists(st.integers(min_side, max_side), min_size=min_rank, max_size=max_rank).map(tuple)


@st.composite
def broadcast_family(draw, n, max_rank=4):
    """An output shape and ``n`` input shapes multidirectionally broadcastable to it (each
    input: a suffix of the output's axes, each axis its size or 1)."""
    out = draw(shapes(0, max_rank, 1, 4))
    ins = []
    for _ in range(n):
        rank = draw(st.integers(0, len(out)))
        ins.append(tuple(1 if draw(st.booleans()) else d for d in out[len(out) - rank:]))
    return out, ins


def floats(lo, hi):
    """Attribute floats: float32 numbers (what an ONNX float attribute holds)."""
    return st.floats(lo, hi, allow_nan=False).map(lambda v: float(np.float32(v)))


def signed_axes(rank, count_min=0, count_max=None):
    """Distinct axes of a tensor of ``rank``, each written positive or negative."""
    count_max = rank if count_max is None else count_max

    @st.composite
    def draw_axes(draw):
        axes = draw(st.lists(st.integers(0, rank - 1), min_size=min(count_min, rank),
                             max_size=min(count_max, rank), unique=True)) if rank else []
        return [a - rank if draw(st.booleans()) else a for a in axes]
    return draw_axes()


# ------------------------------------------------------------------------------- activations
def unary(op, **attr_strategies):
    """An elementwise op of one analysed input with the given attribute strategies."""
    @st.composite
    def build(draw, version):
        attrs = {k: draw(s) for k, s in attr_strategies.items()}
        x = values(draw(rngs()), draw(shapes(0, 4)), scale=3.0)
        return make_case(op, [("x", x)], [True], **attrs)
    return build


@st.composite
def clip(draw, version):
    rng = draw(rngs())
    x = values(rng, draw(shapes(0, 4)), scale=3.0)
    lo, hi = (draw(st.none() | floats(-3, 3)) for _ in range(2))
    if version < 11:
        return make_case("Clip", [("x", x)], [True], min=lo, max=hi)
    scalar = lambda v: None if v is None else np.asarray(v, dtype=np.float64)  # noqa: E731
    return make_case("Clip", [("x", x), ("lo", scalar(lo)), ("hi", scalar(hi))], [True, False, False])


@st.composite
def prelu(draw, version):
    """Slopes broadcastable to x (unidirectional), and sometimes a slope that broadcasts x."""
    rng = draw(rngs())
    x_shape = draw(shapes(1, 4))
    rank = draw(st.integers(0, len(x_shape) + 1))
    s_shape = []
    for k in range(rank):
        a = len(x_shape) - rank + k
        d = x_shape[a] if a >= 0 else 1
        s_shape.append(draw(st.sampled_from([d, 1, 3] if d == 1 else [d, 1])))
    s = values(rng, tuple(s_shape), scale=1.5)
    return make_case("PRelu", [("x", values(rng, x_shape, 3.0)), ("slope", s)], [True, False])


@st.composite
def dropout(draw, version):
    rng = draw(rngs())
    x = values(rng, draw(shapes(0, 4)))
    ratio = draw(st.none() | st.sampled_from([0.0]) | floats(0.0, 0.9))
    mask = draw(st.booleans())
    if version < 12:
        return make_case("Dropout", [("x", x)], [True], n_outputs=1 + mask, ratio=ratio)
    training = draw(st.none() | st.booleans())
    inputs = [("x", x), ("ratio", None if ratio is None else np.asarray(ratio, np.float32)),
              ("training_mode", None if training is None else np.asarray(training))]
    return make_case("Dropout", inputs, [True, False, False], n_outputs=1 + mask)


@st.composite
def cast(draw, version):
    rng = draw(rngs())
    shape = draw(shapes(0, 3))
    x = values(rng, shape) if draw(st.booleans()) else i64(rng.integers(-5, 5, size=shape))
    to = draw(st.sampled_from([TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16,
                               TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL]))
    return make_case("Cast", [("x", x)], [x.dtype.kind == "f"], to=to)


# ------------------------------------------------------------------------------- arithmetic
def elementwise(op, n_inputs=2, max_inputs=None):
    """Add/Sub/Mul/Div/Sum over multidirectionally broadcast shapes; any subset analysed."""
    @st.composite
    def build(draw, version):
        rng = draw(rngs())
        n = draw(st.integers(n_inputs, max_inputs or n_inputs))
        _, ins = draw(broadcast_family(n))
        if op == "Div":
            dyn = [True, False]
        elif op == "Mul":
            dyn = draw(st.sampled_from([[True, False], [False, True], [True, True]]))
        else:
            dyn = draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any))
        arrays = [values(rng, s, avoid_zero=(op == "Div" and i == 1)) for i, s in enumerate(ins)]
        return make_case(op, [(f"x{i}", a) for i, a in enumerate(arrays)], dyn)
    return build


@st.composite
def matmul(draw, version):
    """numpy-matmul shapes: 1-D operands, batch broadcasting either way; one side analysed."""
    rng = draw(rngs())
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    _, (ba, bb) = draw(broadcast_family(2, max_rank=2))
    a = (k,) if draw(st.integers(0, 4)) == 0 else ba + (m, k)
    b = (k,) if draw(st.integers(0, 4)) == 0 else bb + (k, n)
    dyn = draw(st.sampled_from([[True, False], [False, True], [True, True]]))
    return make_case("MatMul", [("a", values(rng, a)), ("b", values(rng, b))], dyn)


@st.composite
def gemm(draw, version):
    rng = draw(rngs())
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    ta, tb = draw(st.sampled_from([0, 1])), draw(st.sampled_from([0, 1]))
    c_shape = draw(st.sampled_from([None, (), (n,), (1, n), (m, 1), (m, n), (1, 1)]))
    if version < 11 and c_shape is None:
        c_shape = (m, n)
    c = None if c_shape is None else values(rng, c_shape)
    inputs = [("a", values(rng, (k, m) if ta else (m, k))), ("b", values(rng, (n, k) if tb else (k, n))), ("c", c)]
    return make_case("Gemm", inputs, [True, False, False], transA=ta, transB=tb,
                     alpha=draw(st.none() | floats(-2, 2)), beta=draw(st.none() | floats(-2, 2)))


@st.composite
def expand(draw, version):
    """Bidirectional broadcasting: the target may be shorter than x and may hold 1 where x is wider."""
    _, (x_shape, t_shape) = draw(broadcast_family(2))
    return make_case("Expand", [("x", values(draw(rngs()), x_shape)), ("shape", i64(t_shape))], [True, False])


# ------------------------------------------------------------------------------- structural
@st.composite
def reshape(draw, version):
    rng = draw(rngs())
    x_shape = draw(shapes(0, 4, 1, 4))
    numel = math.prod(x_shape)
    target = []
    while numel > 1 and len(target) < 4:
        divisors = [d for d in range(1, numel + 1) if numel % d == 0]
        d = draw(st.sampled_from(divisors))
        target.append(d)
        numel //= d
    target.append(numel)
    target = draw(st.permutations(target))
    allowzero = draw(st.none() | st.sampled_from([0, 1])) if version >= 14 else None
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    if not allowzero:
        target = [0 if i < len(x_shape) and t == x_shape[i] and draw(st.booleans()) else t
                  for i, t in enumerate(target)]
    return make_case("Reshape", [("x", values(rng, x_shape)), ("shape", i64(target))], [True, False],
                     allowzero=allowzero)


@st.composite
def flatten(draw, version):
    x_shape = draw(shapes(1, 4))
    axis = draw(st.integers(-len(x_shape), len(x_shape)))
    return make_case("Flatten", [("x", values(draw(rngs()), x_shape))], [True], axis=axis)


@st.composite
def transpose(draw, version):
    x_shape = draw(shapes(0, 4))
    perm = draw(st.none() | st.permutations(range(len(x_shape)))) if x_shape else None
    return make_case("Transpose", [("x", values(draw(rngs()), x_shape))], [True],
                     perm=None if perm is None else list(perm))


@st.composite
def squeeze(draw, version):
    x_shape = tuple(draw(st.lists(st.sampled_from([1, 1, 2, 3]), min_size=0, max_size=4)))
    ones = [i for i, d in enumerate(x_shape) if d == 1]
    axes = None
    if ones and draw(st.booleans()):
        axes = draw(st.lists(st.sampled_from(ones), min_size=1, unique=True))
        axes = [a - len(x_shape) if draw(st.booleans()) else a for a in axes]
    x = values(draw(rngs()), x_shape)
    if version < 13:
        return make_case("Squeeze", [("x", x)], [True], axes=axes)
    return make_case("Squeeze", [("x", x), ("axes", None if axes is None else i64(axes))], [True, False])


@st.composite
def unsqueeze(draw, version):
    x_shape = draw(shapes(0, 3))
    k = draw(st.integers(1, 3))
    rank = len(x_shape) + k
    axes = draw(st.lists(st.integers(0, rank - 1), min_size=k, max_size=k, unique=True))
    axes = [a - rank if draw(st.booleans()) else a for a in axes]
    x = values(draw(rngs()), x_shape)
    if version < 13:
        return make_case("Unsqueeze", [("x", x)], [True], axes=axes)
    return make_case("Unsqueeze", [("x", x), ("axes", i64(axes))], [True, False])


@st.composite
def slice_(draw, version):
    """starts/ends anywhere (negative, out of range, INT_MAX/INT_MIN), negative steps, empty results."""
    rng = draw(rngs())
    x_shape = draw(shapes(1, 3, 0, 5))
    axes = draw(signed_axes(len(x_shape), 1))
    bound = st.integers(-7, 7) | st.sampled_from([INT_MAX, INT_MIN])
    starts = [draw(bound) for _ in axes]
    ends = [draw(bound) for _ in axes]
    steps = [draw(st.sampled_from([-3, -2, -1, 1, 2, 3])) for _ in axes]
    give_axes = draw(st.booleans()) or draw(st.booleans()) and axes != list(range(len(axes)))
    give_steps = give_axes and (draw(st.booleans()) or any(s != 1 for s in steps))
    if not give_steps:
        steps = [1] * len(axes)
    if not give_axes:
        axes = list(range(len(axes)))
    inputs = [("x", values(rng, x_shape)), ("starts", i64(starts)), ("ends", i64(ends)),
              ("axes", i64(axes) if give_axes else None), ("steps", i64(steps) if give_steps else None)]
    return make_case("Slice", inputs, [True, False, False, False, False])


@st.composite
def split(draw, version):
    rng = draw(rngs())
    x_shape = draw(shapes(1, 3, 1, 6))
    axis = draw(st.integers(-len(x_shape), len(x_shape) - 1))
    n = x_shape[axis]
    x = values(rng, x_shape)
    how = draw(st.sampled_from(["sizes", "equal", "num_outputs"] if version >= 18 else ["sizes", "equal"]))
    if how == "sizes":
        cuts = sorted(draw(st.lists(st.integers(0, n), min_size=0, max_size=3)))
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [n])]
        if version < 13:
            return make_case("Split", [("x", x)], [True], n_outputs=len(sizes), axis=axis, split=sizes)
        return make_case("Split", [("x", x), ("split", i64(sizes))], [True, False], n_outputs=len(sizes), axis=axis)
    if how == "equal":
        parts = draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
        return make_case("Split", [("x", x)], [True], n_outputs=parts, axis=axis)
    parts = draw(st.integers(1, n))
    return make_case("Split", [("x", x)], [True], n_outputs=parts, axis=axis, num_outputs=parts)


@st.composite
def concat(draw, version):
    rng = draw(rngs())
    base = draw(shapes(1, 3))
    axis = draw(st.integers(-len(base), len(base) - 1))
    n = draw(st.integers(1, 3))
    arrays = []
    for _ in range(n):
        s = list(base)
        s[axis] = draw(st.integers(0, 3))
        arrays.append(values(rng, tuple(s)))
    dyn = draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any))
    return make_case("Concat", [(f"x{i}", a) for i, a in enumerate(arrays)], dyn, axis=axis)


@st.composite
def gather(draw, version):
    rng = draw(rngs())
    x_shape = draw(shapes(1, 3))
    axis = draw(st.integers(-len(x_shape), len(x_shape) - 1))
    n = x_shape[axis]
    idx = i64(rng.integers(-n, n, size=draw(shapes(0, 2, 0, 3))))
    return make_case("Gather", [("x", values(rng, x_shape)), ("idx", idx)], [True, False], axis=axis)


@st.composite
def pad(draw, version):
    rng = draw(rngs())
    x_shape = draw(shapes(1, 3, 1, 4))
    modes = ["constant", "reflect", "edge"] + (["wrap"] if version >= 19 else [])
    mode = draw(st.sampled_from(modes))
    axes = draw(signed_axes(len(x_shape), 1)) if version >= 18 and draw(st.booleans()) else None
    k = len(x_shape) if axes is None else len(axes)
    pads = draw(st.lists(st.integers(-2, 3), min_size=2 * k, max_size=2 * k))
    value = np.asarray(draw(floats(-2, 2)), np.float64) if mode == "constant" and draw(st.booleans()) else None
    inputs = [("x", values(rng, x_shape)), ("pads", i64(pads)), ("value", value),
              ("axes", None if axes is None else i64(axes))]
    return make_case("Pad", inputs, [True, False, False, False], mode=mode)


# -------------------------------------------------------------------------------- constants
@st.composite
def shape_op(draw, version):
    x_shape = draw(shapes(0, 4))
    r = len(x_shape)
    se = st.none() | st.integers(-r - 1, r + 1)
    start, end = (draw(se), draw(se)) if version >= 15 else (None, None)
    return make_case("Shape", [("x", values(draw(rngs()), x_shape))], [True], start=start, end=end)


@st.composite
def size_op(draw, version):
    return make_case("Size", [("x", values(draw(rngs()), draw(shapes(0, 4, 0, 3))))], [True])


@st.composite
def constant_of_shape(draw, version):
    dims = i64(draw(st.lists(st.integers(0, 3), max_size=3)))
    value = draw(st.none() | st.sampled_from([
        helper.make_tensor("v", TensorProto.FLOAT, [1], [2.5]),
        helper.make_tensor("v", TensorProto.INT64, [1], [-3]),
        helper.make_tensor("v", TensorProto.DOUBLE, [1], [0.125])]))
    # the input is a shape (integers), never analysed values
    return make_case("ConstantOfShape", [("shape", dims)], [False], value=value)


# ------------------------------------------------------------------------- convolution, pooling
@st.composite
def window_attrs(draw, dim, kernel, *, dilations=True, auto_pad=True):
    """strides, dilations, pads, auto_pad for a window op (explicit pads only with NOTSET)."""
    auto = draw(st.sampled_from(AUTO_PADS)) if auto_pad else "NOTSET"
    attrs = dict(strides=draw(st.none() | st.lists(st.integers(1, 3), min_size=dim, max_size=dim)),
                 dilations=draw(st.none() | st.lists(st.integers(1, 3), min_size=dim, max_size=dim))
                 if dilations else None,
                 auto_pad=None if auto == "NOTSET" and draw(st.booleans()) else auto)
    if auto == "NOTSET" and draw(st.booleans()):
        attrs["pads"] = [draw(st.integers(0, kernel[i % dim] - 1 if kernel[i % dim] > 1 else 1))
                         for i in range(2 * dim)]
    return attrs


@st.composite
def conv(draw, version):
    rng = draw(rngs())
    dim = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = draw(st.lists(st.integers(1, 3), min_size=dim, max_size=dim))
    spatial = draw(st.lists(st.integers(1, 6 if dim < 3 else 3), min_size=dim, max_size=dim))
    attrs = draw(window_attrs(dim, kernel))
    w = values(rng, (c_out, c_in // groups, *kernel))
    b = values(rng, (c_out,)) if draw(st.booleans()) else None
    return make_case("Conv", [("x", values(rng, (draw(st.integers(1, 2)), c_in, *spatial))), ("w", w), ("b", b)],
                     [True, False, False], group=groups if groups > 1 or draw(st.booleans()) else None,
                     kernel_shape=kernel if draw(st.booleans()) else None, **attrs)


@st.composite
def conv_transpose(draw, version):
    """Every auto_pad; explicit pads; output_padding; output_shape smaller or larger than the
    full output."""
    rng = draw(rngs())
    dim = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = draw(st.lists(st.integers(1, 3), min_size=dim, max_size=dim))
    spatial = draw(st.lists(st.integers(1, 4 if dim < 3 else 2), min_size=dim, max_size=dim))
    attrs = draw(window_attrs(dim, kernel))
    strides = attrs["strides"] or [1] * dim
    dil = attrs["dilations"] or [1] * dim
    if draw(st.booleans()):
        attrs["output_padding"] = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(strides, dil)]
    if draw(st.booleans()):
        full = [s * (n - 1) + (k - 1) * d + 1 for s, n, k, d in zip(strides, spatial, kernel, dil)]
        shape = [max(1, f + draw(st.integers(-3, 3))) for f in full]
        attrs["output_shape"] = shape   # the (d+2)-long form fails onnx shape inference in onnxruntime
    w = values(rng, (c_in, c_out // groups, *kernel))
    b = values(rng, (c_out,)) if draw(st.booleans()) else None
    return make_case("ConvTranspose", [("x", values(rng, (1, c_in, *spatial))), ("w", w), ("b", b)],
                     [True, False, False], group=groups if groups > 1 else None,
                     kernel_shape=kernel if draw(st.booleans()) else None, **attrs)


def pool(op):
    @st.composite
    def build(draw, version):
        rng = draw(rngs())
        dim = draw(st.integers(1, 3))
        kernel = draw(st.lists(st.integers(1, 3), min_size=dim, max_size=dim))
        spatial = draw(st.lists(st.integers(1, 6 if dim < 3 else 4), min_size=dim, max_size=dim))
        has_dil = (op == "MaxPool" and version >= 10) or (op == "AveragePool" and version >= 19)
        attrs = draw(window_attrs(dim, kernel, dilations=has_dil))
        if version >= 10:
            attrs["ceil_mode"] = draw(st.none() | st.sampled_from([0, 1]))
        if op == "AveragePool":
            attrs["count_include_pad"] = draw(st.none() | st.sampled_from([0, 1]))
        n_outputs = 1
        if op == "MaxPool":
            attrs["storage_order"] = draw(st.none() | st.sampled_from([0, 1])) if version >= 8 else None
            n_outputs = 1 + (draw(st.integers(0, 4)) == 0)
        x = values(rng, (draw(st.integers(1, 2)), draw(st.integers(1, 2)), *spatial))
        return make_case(op, [("x", x)], [True], n_outputs=n_outputs, kernel_shape=kernel, **attrs)
    return build


def global_pool(op):
    @st.composite
    def build(draw, version):
        x = values(draw(rngs()), draw(shapes(3, 5, 1, 4)))
        return make_case(op, [("x", x)], [True])
    return build


@st.composite
def reduce_mean(draw, version):
    rng = draw(rngs())
    x_shape = draw(shapes(1, 4))
    axes = draw(st.none() | signed_axes(len(x_shape)))
    keepdims = draw(st.none() | st.sampled_from([0, 1]))
    x = values(rng, x_shape)
    if version < 18:
        return make_case("ReduceMean", [("x", x)], [True], axes=axes or None, keepdims=keepdims)
    return make_case("ReduceMean", [("x", x), ("axes", None if axes is None else i64(axes))], [True, False],
                     keepdims=keepdims, noop_with_empty_axes=draw(st.none() | st.sampled_from([0, 1])))


@st.composite
def batch_norm(draw, version):
    rng = draw(rngs())
    x_shape = draw(shapes(2, 4))
    c = x_shape[1]
    stats = [values(rng, (c,)), values(rng, (c,)), values(rng, (c,)),
             np.abs(values(rng, (c,))) + draw(st.sampled_from([0.0, 1e-3, 1.0]))]
    training = draw(st.none() | st.sampled_from([0, 1])) if version >= 14 else None
    inputs = [("x", values(rng, x_shape))] + list(zip(["scale", "b", "mean", "var"], stats))
    return make_case("BatchNormalization", inputs, [True] + [False] * 4,
                     n_outputs=3 if training else 1, epsilon=draw(st.none() | floats(1e-5, 0.5)),
                     training_mode=training)


@st.composite
def softmax(draw, version):
    x_shape = draw(shapes(1, 4))
    axis = draw(st.none() | st.integers(-len(x_shape), len(x_shape) - 1))
    return make_case("Softmax", [("x", values(draw(rngs()), x_shape, 3.0))], [True], axis=axis)


def reduce_op(op):
    """ReduceSum/Max/Min/L2: axes an attribute before their input version (13 for ReduceSum,
    18 for the others), an input from it on."""
    axes_input = 13 if op == "ReduceSum" else 18

    @st.composite
    def build(draw, version):
        rng = draw(rngs())
        x_shape = draw(shapes(1, 4))
        axes = draw(st.none() | signed_axes(len(x_shape)))
        keepdims = draw(st.none() | st.sampled_from([0, 1]))
        x = values(rng, x_shape)
        if version < axes_input:
            return make_case(op, [("x", x)], [True], axes=axes or None, keepdims=keepdims)
        return make_case(op, [("x", x), ("axes", None if axes is None else i64(axes))], [True, False],
                         keepdims=keepdims, noop_with_empty_axes=draw(st.none() | st.sampled_from([0, 1])))
    return build


@st.composite
def log_softmax(draw, version):
    x_shape = draw(shapes(1, 4))
    axis = draw(st.none() | st.integers(-len(x_shape), len(x_shape) - 1))
    return make_case("LogSoftmax", [("x", values(draw(rngs()), x_shape, 3.0))], [True], axis=axis)


@st.composite
def pow_(draw, version):
    rng = draw(rngs())
    x_shape = draw(shapes(0, 3))
    exponent = np.asarray(draw(st.sampled_from([0.0, 1.0, 2.0, 3.0, 0.5, -1.0])), dtype=np.float64)
    x = np.abs(values(rng, x_shape)) + 0.25
    return make_case("Pow", [("x", x), ("e", exponent)], [True, False])


@st.composite
def layer_norm(draw, version):
    rng = draw(rngs())
    x_shape = draw(shapes(1, 4))
    axis = draw(st.integers(-len(x_shape), len(x_shape) - 1))
    inner = x_shape[axis:] if axis >= 0 else x_shape[len(x_shape) + axis:]
    scale = values(rng, inner)
    bias = draw(st.none() | st.just(values(rng, inner)))
    return make_case("LayerNormalization", [("x", values(rng, x_shape)), ("scale", scale), ("bias", bias)],
                     [True, False, False], axis=axis, epsilon=draw(st.none() | floats(1e-5, 0.5)))


@st.composite
def instance_norm(draw, version):
    rng = draw(rngs())
    # ≥ 2 entries per instance: over one entry the output is constant and onnxruntime's
    # rounding (x·(1/√ε) − μ·(1/√ε)) is all a ratio would measure
    x_shape = (*draw(shapes(2, 3)), draw(st.integers(2, 4)))
    c = x_shape[1]
    return make_case("InstanceNormalization", [("x", values(rng, x_shape)), ("scale", values(rng, (c,))),
                                               ("b", values(rng, (c,)))], [True, False, False],
                     epsilon=draw(st.none() | floats(1e-5, 0.5)))


@st.composite
def group_norm(draw, version):
    rng = draw(rngs())
    groups = draw(st.integers(1, 3))
    x_shape = (draw(st.integers(1, 2)), groups * draw(st.integers(1, 2)), *draw(shapes(1, 2)))
    side = groups if version < 21 else x_shape[1]
    return make_case("GroupNormalization", [("x", values(rng, x_shape)), ("scale", values(rng, (side,))),
                                            ("bias", values(rng, (side,)))], [True, False, False],
                     num_groups=groups, epsilon=draw(st.none() | floats(1e-5, 0.5)))


@st.composite
def tile(draw, version):
    rng = draw(rngs())
    x_shape = draw(shapes(1, 3))
    repeats = i64(draw(st.lists(st.integers(1, 3), min_size=len(x_shape), max_size=len(x_shape))))
    return make_case("Tile", [("x", values(rng, x_shape)), ("repeats", repeats)], [True, False])


def block_op(op):
    @st.composite
    def build(draw, version):
        rng = draw(rngs())
        b = draw(st.integers(1, 3))
        n, c, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
        shape = (n, c * b * b, h, w) if op == "DepthToSpace" else (n, c, h * b, w * b)
        mode = draw(st.none() | st.sampled_from(["DCR", "CRD"])) if op == "DepthToSpace" else None
        return make_case(op, [("x", values(rng, shape))], [True], blocksize=b, mode=mode)
    return build


@st.composite
def resize(draw, version):
    rng = draw(rngs())
    x_shape = (1, draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    mode = draw(st.sampled_from(["nearest", "linear", "cubic"]))
    ctm = draw(st.sampled_from(["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]))
    x = values(rng, x_shape)
    roi = np.zeros(0, dtype=np.float64)
    attrs = dict(mode=mode, coordinate_transformation_mode=ctm,
                 nearest_mode=draw(st.none() | st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor",
                                                                "ceil"])) if mode == "nearest" else None)
    if draw(st.booleans()):
        scales = np.array([1.0, 1.0, *draw(st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]), min_size=2,
                                                       max_size=2))])
        return make_case("Resize", [("x", x), ("roi", roi), ("scales", scales)], [True, False, False], **attrs)
    sizes = i64([1, x_shape[1], *draw(st.lists(st.integers(1, 6), min_size=2, max_size=2))])
    return make_case("Resize", [("x", x), ("roi", roi), ("scales", None if version >= 13 else np.zeros(0)),
                                ("sizes", sizes)], [True, False, False, False], **attrs)


@st.composite
def upsample(draw, version):
    """Scales ≥ 1 (onnxruntime refuses smaller ones), any axis for nearest, the last two for linear."""
    rng = draw(rngs())
    x = values(rng, (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))))
    mode = draw(st.none() | st.sampled_from(["nearest", "linear"]))
    factor = st.sampled_from([1.0, 1.5, 2.0, 3.0, 1.7])
    scales = [draw(factor) if mode in (None, "nearest") else 1.0 for _ in range(2)] + [draw(factor) for _ in range(2)]
    if version < 9:
        return make_case("Upsample", [("x", x)], [True], mode=mode, scales=scales)
    return make_case("Upsample", [("x", x), ("scales", np.array(scales))], [True, False], mode=mode)


@st.composite
def cumsum(draw, version):
    rng = draw(rngs())
    x = values(rng, draw(shapes(1, 4, 0, 5)))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    return make_case("CumSum", [("x", x), ("axis", np.asarray(axis, dtype=draw(st.sampled_from([np.int64, np.int32]))))],
                     [True, False], exclusive=draw(st.none() | st.sampled_from([0, 1])),
                     reverse=draw(st.none() | st.sampled_from([0, 1])))


EINSUMS = ["ij,jk->ik", "ij,kj->ik", "bij,bjk->bik", "i,i->", "i,j->ij", "ij->ji", "ij->", "ii->i", "ij,jk",
           "...ij,jk->...ik", "ijk,kj->i", "ij,j->i", "i,ij,j->", "ab,bc,cd->ad", "ij,ij->ij", "bij,jk->bik", "iij,j->i"]


@st.composite
def einsum(draw, version):
    """Equations of every kind (matmul, batch, dot, outer, transpose, sums, diagonals, implicit output,
    ellipsis, three operands) with letter sizes drawn; one operand analysed, sometimes two."""
    rng = draw(rngs())
    equation = draw(st.sampled_from(EINSUMS))
    size = {c: draw(st.integers(1, 4)) for c in "abcdijk"}
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    terms = equation.split("->")[0].split(",")
    arrays = [values(rng, (batch if t.startswith("...") else ()) + tuple(size[c] for c in t.replace("...", "")))
              for t in terms]
    analysed = draw(st.lists(st.integers(0, len(terms) - 1), min_size=1, max_size=2, unique=True))
    return make_case("Einsum", [(f"x{k}", a) for k, a in enumerate(arrays)], [k in analysed for k in range(len(arrays))],
                     equation=equation)


def boolean_valued(op, n_inputs=2, logical=False):
    """Comparisons (small integers as floats, so ties occur) and logical ops (bools) over broadcast
    shapes; any subset analysed, none included (the rules refuse analysed inputs: only then is the
    forward compared)."""
    @st.composite
    def build(draw, version):
        rng = draw(rngs())
        _, ins = draw(broadcast_family(n_inputs))
        ints = op == "Equal" and (version < 11 or draw(st.booleans()))     # Equal-7 compares integers only
        dtype = np.int64 if ints else np.float64
        arrays = [rng.random(s) > 0.5 if logical else np.asarray(rng.integers(-2, 3, size=s), dtype=dtype)
                  for s in ins]
        dyn = draw(st.lists(st.booleans(), min_size=n_inputs, max_size=n_inputs))
        return make_case(op, [(f"x{i}", a) for i, a in enumerate(arrays)], dyn)
    return build


@st.composite
def arg_extreme(draw, version, op="ArgMax"):
    x = np.asarray(draw(rngs()).integers(0, 3, size=draw(shapes(1, 4))), dtype=np.float64)   # ties
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    last = draw(st.none() | st.sampled_from([0, 1])) if version >= 12 else None
    return make_case(op, [("x", x)], [draw(st.booleans())], axis=axis, keepdims=draw(st.none() | st.sampled_from([0, 1])),
                     select_last_index=last)


@st.composite
def where(draw, version):
    """Broadcast condition and branches; either branch (or both) analysed, the condition sometimes."""
    rng = draw(rngs())
    _, (c, x, y) = draw(broadcast_family(3))
    dyn = [draw(st.booleans())] + draw(st.sampled_from([[True, False], [False, True], [True, True], [False, False]]))
    return make_case("Where", [("c", rng.random(c) > 0.4), ("x", values(rng, x)), ("y", values(rng, y))], dyn)


def recurrent(op):
    """RNN/GRU/LSTM: direction, hidden size, any subset of the optional inputs (B, sequence_lens,
    initial_h, initial_c, P), linear_before_reset, any subset of the outputs named; layout 0 (onnxruntime
    refuses layout 1: tests/test_rules_recurrent.py checks it against layout 0 on transposed tensors)."""
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]

    @st.composite
    def build(draw, version):
        rng = draw(rngs())
        direction = draw(st.none() | st.sampled_from(["forward", "reverse", "bidirectional"]))
        d = 2 if direction == "bidirectional" else 1
        steps, batch, width, hidden = (draw(st.integers(1, 4)) for _ in range(4))
        scale = draw(st.sampled_from([0.3, 1.0, 2.0]))
        optional = {"B": values(rng, (d, 2 * gates * hidden), scale),
                    "sequence_lens": np.asarray(rng.integers(1, steps + 1, size=batch), dtype=np.int32),
                    "initial_h": values(rng, (d, batch, hidden)), "initial_c": values(rng, (d, batch, hidden)),
                    "P": values(rng, (d, 3 * hidden), scale)}
        names = ["B", "sequence_lens", "initial_h"] + (["initial_c", "P"] if op == "LSTM" else [])
        given = [n for n in names if draw(st.booleans())]
        inputs = [("x", values(rng, (steps, batch, width))), ("w", values(rng, (d, gates * hidden, width), scale)),
                  ("r", values(rng, (d, gates * hidden, hidden), scale))] + \
                 [(n, optional[n] if n in given else None) for n in names]
        n_out = 3 if op == "LSTM" else 2
        case = make_case(op, inputs, [True] + [False] * (len(inputs) - 1), n_outputs=n_out, hidden_size=hidden, direction=direction,
                         linear_before_reset=draw(st.none() | st.sampled_from([0, 1])) if op == "GRU" else None)
        outputs = [o if k == 0 or draw(st.booleans()) else "" for k, o in enumerate(case.node.output)]
        del case.node.output[:]
        case.node.output.extend(outputs)
        return case
    return build


SLOPE = floats(-2, 3)
CASES = {
    "Relu": unary("Relu"), "Sigmoid": unary("Sigmoid"), "Tanh": unary("Tanh"), "Softplus": unary("Softplus"), "Mish": unary("Mish"),
    "HardSwish": unary("HardSwish"), "Neg": unary("Neg"), "Identity": unary("Identity"),
    "Elu": unary("Elu", alpha=st.none() | SLOPE),
    "Selu": unary("Selu", alpha=st.none() | SLOPE, gamma=st.none() | floats(-2, 3)),
    "LeakyRelu": unary("LeakyRelu", alpha=st.none() | SLOPE),
    "HardSigmoid": unary("HardSigmoid", alpha=st.none() | floats(-1, 1), beta=st.none() | floats(-1, 1)),
    "Gelu": unary("Gelu", approximate=st.none() | st.sampled_from(["none", "tanh"])),
    "Clip": clip, "PRelu": prelu, "Dropout": dropout, "Cast": cast,
    "Add": elementwise("Add"), "Sub": elementwise("Sub"), "Mul": elementwise("Mul"),
    "Div": elementwise("Div"), "Sum": elementwise("Sum", 1, 4),
    "MatMul": matmul, "Gemm": gemm, "Expand": expand,
    "Reshape": reshape, "Flatten": flatten, "Transpose": transpose, "Squeeze": squeeze,
    "Unsqueeze": unsqueeze, "Slice": slice_, "Split": split, "Concat": concat, "Gather": gather, "Pad": pad,
    "Shape": shape_op, "Size": size_op, "ConstantOfShape": constant_of_shape,
    "Conv": conv, "ConvTranspose": conv_transpose,
    "MaxPool": pool("MaxPool"), "AveragePool": pool("AveragePool"),
    "GlobalMaxPool": global_pool("GlobalMaxPool"), "GlobalAveragePool": global_pool("GlobalAveragePool"),
    "ReduceMean": reduce_mean, "BatchNormalization": batch_norm, "Softmax": softmax,
    "Abs": unary("Abs"), "Erf": unary("Erf"), "Softsign": unary("Softsign"), "Celu": unary("Celu", alpha=st.none() | floats(-2, 3)),
    "Exp": unary("Exp"), "Log": unary("Log"), "Sqrt": unary("Sqrt"), "Reciprocal": unary("Reciprocal"),
    "Floor": unary("Floor"), "Ceil": unary("Ceil"), "Round": unary("Round"), "Sign": unary("Sign"),
    "ThresholdedRelu": unary("ThresholdedRelu", alpha=st.none() | floats(-1, 2)), "Pow": pow_,
    "Max": elementwise("Max", 1, 3), "Min": elementwise("Min", 1, 3),
    "ReduceSum": reduce_op("ReduceSum"), "ReduceMax": reduce_op("ReduceMax"), "ReduceMin": reduce_op("ReduceMin"),
    "ReduceL2": reduce_op("ReduceL2"), "LogSoftmax": log_softmax,
    "LayerNormalization": layer_norm, "InstanceNormalization": instance_norm, "GroupNormalization": group_norm,
    "Tile": tile, "DepthToSpace": block_op("DepthToSpace"), "SpaceToDepth": block_op("SpaceToDepth"),
    "Resize": resize, "Upsample": upsample, "CumSum": cumsum, "Einsum": einsum,
    **{op: boolean_valued(op) for op in ("Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual")},
    **{op: boolean_valued(op, logical=True) for op in ("And", "Or", "Xor")}, "Not": boolean_valued("Not", 1, True),
    "ArgMax": arg_extreme, "ArgMin": lambda version: arg_extreme(version, op="ArgMin"), "Where": where,
    "RNN": recurrent("RNN"), "GRU": recurrent("GRU"), "LSTM": recurrent("LSTM"),
}
