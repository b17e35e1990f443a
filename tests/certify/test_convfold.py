"""Affine segments certified as one convolution (lipgraph.certify.convfold), end to end on ONNX models.

Every exact value here is computed independently of lipgraph: the operator is materialised by
applying torch.nn.functional ops (written out in this file from the ONNX weights) to basis
vectors, and its norm is a float64 numpy SVD / eigenvalue. Run with ``-s`` to see the worst
certified/exact ratio per (n, k) and for strided cases.
"""
from __future__ import annotations

import collections
import itertools
import json
import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS
from rulecheck import torch_pads
from lipgraph.options import Options
from lipgraph.pipeline import analyze
from lipgraph.cli import main
from lipgraph.options import NormOptions

WORST: dict[str, float] = collections.defaultdict(float)
NO_MATERIALISE = Options(methods=("autolip",), norms=NormOptions(materialize_limit=0))


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    print("\nworst certified/exact ratio (one-node Conv models and folded segments, --materialize-limit 0):")
    for key in sorted(WORST):
        print(f"  {key:44s} {WORST[key]:.5f}")


# ------------------------------------------------------------------------ independent truth
def exact_norm(apply, in_shape) -> float:
    """σ_max of the linear map ``apply`` on (C, *spatial), float64, from the materialised matrix."""
    n = math.prod(in_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        m = (apply(eye) - apply(torch.zeros(1, *in_shape, dtype=torch.float64))).reshape(n, -1).numpy()
    gram = m.T @ m if m.shape[1] < m.shape[0] else m @ m.T
    return math.sqrt(max(float(np.linalg.eigvalsh(gram)[-1]), 0.0))


def conv_apply(w, s, d, pads, groups, b=None):
    wt = torch.as_tensor(w, dtype=torch.float64)
    dim = wt.dim() - 2
    conv = (F.conv1d, F.conv2d)[dim - 1]
    bias = None if b is None else torch.as_tensor(b, dtype=torch.float64)
    return lambda x: conv(F.pad(x, torch_pads(pads, dim)), wt, bias, stride=s, dilation=d, groups=groups)


def bn_apply(scale, bias, mean, var, eps):
    c = [torch.as_tensor(a, dtype=torch.float64) for a in (scale, bias, mean, var)]
    shape = lambda x: (1, -1) + (1,) * (x.dim() - 2)
    return lambda x: (x - c[2].reshape(shape(x))) * (c[0] / torch.sqrt(c[3] + eps)).reshape(shape(x)) \
        + c[1].reshape(shape(x))


# ------------------------------------------------------------------------ ONNX model helpers
def _model(nodes, inits, x_shape, y_shape=None, opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape or [None] * len(x_shape))],
                              initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k)
                                           for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _save(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _f32(a):
    """Weights as the ONNX model stores them (float32), back in float64 for the reference."""
    return np.asarray(a, np.float32).astype(np.float64)


def _segment_bound(analysis):
    segs = [u for u in analysis.units if u.role == "segment"]
    assert len(segs) == 1, [u.id for u in segs]
    return segs[0].bounds[0]


# ---------------------------------------------------------- one Conv node through the rule
def _conv_grid():
    """(c_in, c_out, k, stride, dilation, groups, pads, spatial): every k × stride × dilation ×
    groups once on small maps, plus larger 3×3 stride-1 maps (the 1 % regime)."""
    rng = np.random.default_rng(7)
    bases = [(4, 4), (5, 7), (6, 6), (9,), (8, 8), (7, 5)]
    cases = []
    for idx, (k, s, d, g) in enumerate(itertools.product((1, 2, 3, 5), (1, 2), (1, 2), (1, 2))):
        k_eff = d * (k - 1) + 1
        spatial = tuple(max(n, k_eff) for n in bases[idx % len(bases)])
        pads = tuple(int(p) for p in rng.integers(0, k_eff, size=2 * len(spatial)))
        cases.append((g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3)), k, s, d, g, pads, spatial))
    cases += [(2, 3, 3, 1, 1, 1, (1, 1, 1, 1), (24, 24)), (3, 2, 3, 1, 1, 1, (1, 0, 1, 2), (26, 24)),
              (2, 2, 3, 1, 2, 2, (2, 2, 2, 2), (24, 25)), (3, 3, 3, 1, 1, 1, (1, 1), (48,))]
    return cases


@pytest.mark.parametrize("case", _conv_grid(), ids=lambda c: "ci{}-co{}-k{}-s{}-d{}-g{}-p{}-n{}".format(
    *c[:6], "".join(map(str, c[6])), "x".join(map(str, c[7]))))
def test_conv_rule_not_materialised_sound_and_tight(case, tmp_path):
    c_in, c_out, k, s, d, g, pads, spatial = case
    dim = len(spatial)
    w = _f32(np.random.default_rng(abs(hash(case)) % 2**32).standard_normal((c_out, c_in // g) + (k,) * dim))
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[k] * dim, strides=[s] * dim,
                            dilations=[d] * dim, pads=list(pads), group=g)
    a = analyze(_save(_model([node], {"w": w}, (1, c_in, *spatial)), tmp_path), NO_MATERIALISE)
    bound = _segment_bound(a)
    assert bound.method.startswith("folded-conv/") and "materiali" not in bound.method, bound
    exact = exact_norm(conv_apply(w, s, d, pads, g), (c_in, *spatial))
    assert bound.value >= exact
    tight = 1.01 if min(spatial) >= 24 and k == 3 and s == 1 else 1.02
    assert bound.value <= tight * exact, (bound, exact)
    key = f"conv n={'x'.join(map(str, spatial))} k={k}" + (" strided" if s > 1 else "")
    WORST[key] = max(WORST[key], bound.value / exact)


def test_cli_materialize_limit_zero_reaches_the_conv_certificate(tmp_path, capsys):
    """The command-line flag, not only the option object, routes a Conv to the unmaterialised
    certificate (JSON segment method)."""
    w = _f32(np.random.default_rng(3).standard_normal((3, 2, 3, 3)))
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    path = _save(_model([node], {"w": w}, (1, 2, 10, 10)), tmp_path)
    assert main(["analyze", str(path), "--materialize-limit", "0", "--methods", "autolip", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (seg,) = out["segments"]
    exact = exact_norm(conv_apply(w, 1, 1, (1, 1, 1, 1), 1), (2, 10, 10))
    assert seg["method"] in ("folded-conv/gram-proof", "folded-conv/dft")
    assert exact <= seg["bound"] <= 1.02 * exact


# --------------------------------------------------------------------- residual x + Conv(x)
RESIDUAL = [  # (channels, k, dilation, pads, spatial, groups, with BN in the branch, Sub instead of Add)
    (3, 3, 1, (1, 1, 1, 1), (10, 10), 1, False, False),
    (4, 3, 2, (2, 2, 2, 2), (9, 8), 2, True, False),
    (2, 2, 1, (1, 1, 0, 0), (8, 7), 1, False, True),       # even kernel: the identity is tap (1, 1)
    (3, 5, 1, (2, 2), (20,), 3, True, False),               # depthwise 1-D
    (2, 3, 1, (1, 1, 1, 1), (24, 24), 1, False, False),
]


@pytest.mark.parametrize("case", RESIDUAL, ids=lambda c: f"c{c[0]}-k{c[1]}-d{c[2]}-g{c[5]}-bn{int(c[6])}-sub{int(c[7])}")
def test_residual_block_folds(case, tmp_path):
    c, k, d, pads, spatial, g, with_bn, sub = case
    dim = len(spatial)
    rng = np.random.default_rng(c * 10 + k)
    w = _f32(rng.standard_normal((c, c // g) + (k,) * dim) * 0.5)
    bn = [_f32(v) for v in (rng.uniform(0.5, 1.5, c), rng.uniform(-0.3, 0.3, c), rng.uniform(-0.3, 0.3, c),
                            rng.uniform(0.25, 2.0, c))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["h"], kernel_shape=[k] * dim, dilations=[d] * dim,
                              pads=list(pads), group=g)]
    inits = {"w": w, "b": _f32(rng.standard_normal(c))}
    branch = "h"
    if with_bn:
        nodes.append(helper.make_node("BatchNormalization", ["h", "s", "bb", "m", "v"], ["hb"], epsilon=1e-3))
        inits |= dict(zip(("s", "bb", "m", "v"), bn))
        branch = "hb"
    nodes.append(helper.make_node("Sub" if sub else "Add", ["x", branch], ["y"]))
    a = analyze(_save(_model(nodes, inits, (1, c, *spatial)), tmp_path), NO_MATERIALISE)
    bound = _segment_bound(a)
    assert bound.method.startswith("folded-conv/"), bound

    conv = conv_apply(w, 1, d, pads, g)
    part = (lambda x: bn_apply(*bn, 1e-3)(conv(x))) if with_bn else conv
    exact = exact_norm((lambda x: x - part(x)) if sub else (lambda x: x + part(x)), (c, *spatial))
    conv_norm = exact_norm(part, (c, *spatial))
    # never worse than the parts (1 + ‖C‖), up to the proof's own slack where the triangle
    # inequality is attained (the depthwise case: exact = 1 + ‖C‖)
    assert exact <= bound.value <= (1 + conv_norm) * (1 + 1e-3)
    assert bound.value <= 1.02 * exact
    WORST[f"residual n={'x'.join(map(str, spatial))} k={k}"] = max(WORST[f"residual n={'x'.join(map(str, spatial))} k={k}"],
                                                                   bound.value / exact)


def test_residual_with_a_pointwise_conv(tmp_path):
    """x + Conv1×1(x): the identity and the pointwise kernel share their only tap."""
    w = _f32(np.random.default_rng(0).standard_normal((2, 2, 1, 1)))
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[1, 1], pads=[0, 0, 0, 0]),
             helper.make_node("Add", ["x", "h"], ["y"])]
    a = analyze(_save(_model(nodes, {"w": w}, (1, 2, 5, 5)), tmp_path), NO_MATERIALISE)
    bound = _segment_bound(a)
    exact = exact_norm(lambda x: x + conv_apply(w, 1, 1, (0, 0, 0, 0), 1)(x), (2, 5, 5))
    assert bound.method.startswith("folded-conv/") and exact <= bound.value <= 1.02 * exact


# ------------------------------------------------------------------------ Conv → BN, scales
CONV_BN = [  # (c_in, c_out, k, stride, dilation, groups, pads, spatial)
    (3, 4, 3, 1, 1, 1, (1, 1, 1, 1), (12, 12)),
    (4, 6, 3, 2, 1, 2, (1, 1, 1, 1), (11, 10)),
    (2, 3, 5, 1, 2, 1, (4, 3, 2, 4), (13, 12)),
    (3, 3, 3, 1, 1, 1, (1, 1, 1, 1), (28, 28)),
    (2, 4, 4, 2, 1, 1, (1, 2), (30,)),
]


@pytest.mark.parametrize("case", CONV_BN, ids=lambda c: f"k{c[2]}-s{c[3]}-d{c[4]}-g{c[5]}-n{'x'.join(map(str, c[7]))}")
def test_conv_bn_folded_certificate(case, tmp_path):
    c_in, c_out, k, s, d, g, pads, spatial = case
    dim = len(spatial)
    rng = np.random.default_rng(k * 100 + c_out)
    w = _f32(rng.standard_normal((c_out, c_in // g) + (k,) * dim))
    bn = [_f32(v) for v in (rng.uniform(-1.5, 1.5, c_out), rng.uniform(-0.3, 0.3, c_out),
                            rng.uniform(-0.3, 0.3, c_out), rng.uniform(0.05, 2.0, c_out))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[k] * dim, strides=[s] * dim,
                              dilations=[d] * dim, pads=list(pads), group=g),
             helper.make_node("BatchNormalization", ["h", "s", "bb", "m", "v"], ["y"], epsilon=1e-5)]
    a = analyze(_save(_model(nodes, {"w": w, **dict(zip(("s", "bb", "m", "v"), bn))}, (1, c_in, *spatial)),
                      tmp_path), NO_MATERIALISE)
    bound = _segment_bound(a)
    assert bound.method.startswith("folded-conv/") and "materiali" not in bound.method, bound
    conv = conv_apply(w, s, d, pads, g)
    exact = exact_norm(lambda x: bn_apply(*bn, 1e-5)(conv(x)), (c_in, *spatial))
    assert exact <= bound.value <= 1.02 * exact
    product = exact_norm(conv, (c_in, *spatial)) * float(np.max(np.abs(bn[0] / np.sqrt(bn[3] + 1e-5))))
    assert bound.value < product  # folding is what makes it tight: the parts' product is looser here
    key = f"conv-bn n={'x'.join(map(str, spatial))} k={k}" + (" strided" if s > 1 else "")
    WORST[key] = max(WORST[key], bound.value / exact)


def test_conv_scale_chain_folds(tmp_path):
    """Conv → Mul(per-channel) → Div(per-channel) → Add(const) → Sub(const) → Neg is one convolution."""
    rng = np.random.default_rng(11)
    w = _f32(rng.standard_normal((4, 2, 3, 3)))
    mul, div = _f32(rng.uniform(-2, 2, (4, 1, 1))), _f32(rng.uniform(0.5, 2, (1, 4, 1, 1)))
    nodes = [helper.make_node("Conv", ["x", "w"], ["h0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["mul", "h0"], ["h1"]), helper.make_node("Div", ["h1", "div"], ["h2"]),
             helper.make_node("Add", ["h2", "c"], ["h3"]), helper.make_node("Sub", ["c", "h3"], ["h4"]),
             helper.make_node("Neg", ["h4"], ["y"])]
    inits = {"w": w, "mul": mul, "div": div, "c": _f32(rng.standard_normal((4, 1, 1)))}
    a = analyze(_save(_model(nodes, inits, (1, 2, 14, 14)), tmp_path), NO_MATERIALISE)
    bound = _segment_bound(a)
    assert bound.method.startswith("folded-conv/"), bound
    conv = conv_apply(w, 1, 1, (1, 1, 1, 1), 1)
    factor = torch.as_tensor(mul.reshape(1, 4, 1, 1) / div.reshape(1, 4, 1, 1))
    exact = exact_norm(lambda x: conv(x) * factor, (2, 14, 14))
    assert exact <= bound.value <= 1.02 * exact


def test_spatially_varying_mul_is_not_a_conv_form(tmp_path):
    """A constant that varies over space is a mask, not a convolution: no fold, still sound."""
    rng = np.random.default_rng(12)
    w = _f32(rng.standard_normal((2, 2, 3, 3)))
    mask = _f32(rng.uniform(-1, 1, (1, 1, 6, 6)))
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["h", "mask"], ["y"])]
    a = analyze(_save(_model(nodes, {"w": w, "mask": mask}, (1, 2, 6, 6)), tmp_path), NO_MATERIALISE)
    bound = _segment_bound(a)
    assert not bound.method.startswith("folded")
    exact = exact_norm(lambda x: conv_apply(w, 1, 1, (1, 1, 1, 1), 1)(x) * torch.as_tensor(mask), (2, 6, 6))
    assert bound.value >= exact


def test_conv_conv_is_not_folded_and_stays_sound(tmp_path):
    rng = np.random.default_rng(13)
    w1, w2 = _f32(rng.standard_normal((2, 2, 3, 3))), _f32(rng.standard_normal((2, 2, 3, 3)))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "w2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    a = analyze(_save(_model(nodes, {"w1": w1, "w2": w2}, (1, 2, 8, 8)), tmp_path), NO_MATERIALISE)
    bound = _segment_bound(a)
    assert bound.method == "product of parts"
    c1, c2 = conv_apply(w1, 1, 1, (1, 1, 1, 1), 1), conv_apply(w2, 1, 1, (1, 1, 1, 1), 1)
    assert bound.value >= exact_norm(lambda x: c2(c1(x)), (2, 8, 8))


# --------------------------------------------------------------------------- bundled CNNs
def _onnx_segment_fn(model, nodes, entry, exit_):
    """The segment's map entry → exit, written here with torch from the ONNX nodes and weights."""
    inits = {t.name: torch.as_tensor(numpy_helper.to_array(t).astype(np.float64)) for t in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}

    def run(x):
        env = dict(inits)
        env[entry] = x
        for name in nodes:
            n = by_name[name]
            a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
            ins = [env[i] for i in n.input]
            if n.op_type == "Conv":
                pads = list(a.get("pads", [0, 0, 0, 0]))
                out = conv_apply(ins[1].numpy(), a.get("strides", 1), 1, pads, a.get("group", 1),
                                 ins[2].numpy() if len(ins) > 2 else None)(ins[0])
            elif n.op_type == "BatchNormalization":
                out = bn_apply(*[i.numpy() for i in ins[1:]], a.get("epsilon", 1e-5))(ins[0])
            elif n.op_type == "Gemm":
                out = ins[0] @ (ins[1].T if a.get("transB", 0) else ins[1]) + ins[2]
            elif n.op_type == "Flatten":
                out = ins[0].reshape(ins[0].shape[0], -1)
            elif n.op_type == "GlobalAveragePool":
                out = ins[0].mean(dim=(2, 3), keepdim=True)
            elif n.op_type == "Add":
                out = ins[0] + ins[1]
            else:
                raise AssertionError(f"reference interpreter has no {n.op_type}")
            env[n.output[0]] = out
        return env[exit_]

    return run


def _closed_form(op, attrs) -> float:
    """ℓ2 constants of the non-affine units, from their textbook closed forms."""
    if op == "Relu":
        return 1.0
    if op == "MaxPool":
        k, s = attrs["kernel_shape"], attrs.get("strides", [1] * len(attrs["kernel_shape"]))
        return math.sqrt(math.prod(-(-ki // si) for ki, si in zip(k, s)))
    if op == "Add":
        return 1.0
    raise AssertionError(op)


@pytest.mark.parametrize("name", ["lenet", "resnet_small"])
def test_bundled_cnn_loses_at_most_one_percent_per_conv(name):
    a = analyze(MODELS / f"{name}.onnx", Options(methods=("autolip",)))
    model = onnx.load(MODELS / f"{name}.onnx")
    shapes = a.graph.model.shapes
    by_name = {n.name: n for n in model.graph.node}
    lip = {a.graph.analysed: 1.0}
    for u in a.units:  # AutoLip over lipgraph's unit structure, with independently computed constants
        if u.role == "segment":
            fn = _onnx_segment_fn(model, u.nodes, u.inputs[0], u.outputs[0])
            ells = [exact_norm(fn, tuple(shapes[u.inputs[0]][1:]))]
        else:
            n = by_name[u.id]
            ells = [_closed_form(n.op_type, {at.name: helper.get_attribute_value(at) for at in n.attribute})] \
                * len(u.inputs)
        lip[u.outputs[0]] = sum(ell * lip[t] for ell, t in zip(ells, u.inputs))
    exact_product = lip[a.graph.output]
    convs = sum(1 for n in model.graph.node if n.op_type == "Conv")
    print(f"\n{name}: autolip {a.autolip.value:.6g}, product of exact segment norms {exact_product:.6g}, "
          f"ratio {a.autolip.value / exact_product:.6f} (allowed 1.01^{convs} = {1.01 ** convs:.4f})")
    assert exact_product <= a.autolip.value <= 1.01 ** convs * exact_product


@pytest.mark.parametrize("pads_b,k_b,d_b,g_b", [((0, 0, 0, 0), 1, 1, 1), ((2, 1, 2, 3), 3, 2, 2), ((0, 0, 1, 1), 2, 1, 1)])
def test_sum_of_strided_convs_folds(pads_b, k_b, d_b, g_b, tmp_path):
    """Conv_a(x) + Conv_b(x) with one stride, different kernels, dilations, pads and groups (a
    ResNet projection shortcut beside a main branch, before the nonlinearity) is one convolution."""
    rng = np.random.default_rng(k_b * 10 + d_b)
    spatial, s = (11, 9), 2
    wa = _f32(rng.standard_normal((4, 4, 3, 3)))
    wb = _f32(rng.standard_normal((4, 4 // g_b, k_b, k_b)))
    pads_a = (1, 1, 1, 1)
    out = [(n + pads_a[i] + pads_a[i + 2] - 3) // s + 1 for i, n in enumerate(spatial)]
    out_b = [(n + pads_b[i] + pads_b[i + 2] - (d_b * (k_b - 1) + 1)) // s + 1 for i, n in enumerate(spatial)]
    assert out == out_b
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], kernel_shape=[3, 3], strides=[s, s], pads=list(pads_a)),
             helper.make_node("Conv", ["x", "wb"], ["b"], kernel_shape=[k_b, k_b], strides=[s, s],
                              dilations=[d_b, d_b], pads=list(pads_b), group=g_b),
             helper.make_node("Add", ["a", "b"], ["y"])]
    a = analyze(_save(_model(nodes, {"wa": wa, "wb": wb}, (1, 4, *spatial)), tmp_path), NO_MATERIALISE)
    bound = _segment_bound(a)
    assert bound.method.startswith("folded-conv/"), (bound, a.diagnostics)
    ca, cb = conv_apply(wa, s, 1, pads_a, 1), conv_apply(wb, s, d_b, pads_b, g_b)
    exact = exact_norm(lambda x: ca(x) + cb(x), (4, *spatial))
    assert exact <= bound.value <= 1.02 * exact
    WORST["sum of strided convs n=11x9 k=3"] = max(WORST["sum of strided convs n=11x9 k=3"], bound.value / exact)


def test_verbose_shows_estimate_next_to_certificate(tmp_path, capsys):
    rng = np.random.default_rng(21)
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["h", "s", "bb", "m", "v"], ["y"])]
    inits = {"w": _f32(rng.standard_normal((2, 2, 3, 3))), "s": np.ones(2), "bb": np.zeros(2), "m": np.zeros(2),
             "v": np.full(2, 0.25)}
    path = _save(_model(nodes, inits, (1, 2, 12, 12)), tmp_path)
    assert main(["analyze", str(path), "--methods", "autolip,autolip-power", "-v", "--materialize-limit", "0"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.strip().startswith("segment ") and "estimate" in l)
    assert "certified" in line and "folded-conv/" in line and "power-iteration estimate" in line


def test_identity_and_dropout_fold_into_conv_segments(tmp_path):
    """Conv → Identity → Dropout → BatchNorm is one convolution: the folded certificate is
    used (materialisation disabled) and is ≥ the exact norm of the materialised operator."""
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    bn = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in
          [("s", rng.uniform(0.5, 2, 3)), ("b", rng.normal(size=3)), ("m", rng.normal(size=3)),
           ("v", rng.uniform(0.5, 2, 3))]]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Identity", ["c"], ["i"]),
             helper.make_node("Dropout", ["i"], ["d"]),
             helper.make_node("BatchNormalization", ["d", "s", "b", "m", "v"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), *bn])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    a = analyze(tmp_path / "m.onnx", Options(methods=("autolip",), norms=NormOptions(materialize_limit=0)))
    (unit,) = a.units
    assert "folded" in unit.info["candidates"]
    scale = numpy_helper.to_array(bn[0]).astype(np.float64) / np.sqrt(numpy_helper.to_array(bn[3]) + 1e-5)
    ww = torch.as_tensor(w.astype(np.float64) * scale[:, None, None, None])
    cols = [torch.nn.functional.conv2d(e.reshape(1, 2, 10, 10), ww, padding=1).reshape(-1)
            for e in torch.eye(200, dtype=torch.float64)]
    exact = np.linalg.norm(torch.stack(cols, 1).numpy(), 2)
    assert exact <= a.autolip.value <= exact * 1.02
