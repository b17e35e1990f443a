"""Fusion of decomposed normalisations (lipgraph/ir/fuse/normalization.py): LayerNorm (both
variance forms, with and without γ, β), RMSNorm, softmax and log-softmax (with and without the
max shift) written by hand in torch and exported by both exporters — plus nn.LayerNorm, which the
TorchScript exporter decomposes at opset ≤ 16, and the dynamo exporter's tanh-GELU — and
hand-made opset-18 graphs (axes as inputs). Near misses are not fused (the structure or the
numerical proof refuses them, the latter with a note); the fused model's torch execution matches
onnxruntime on the original; certified bounds stay above sampled ratios near the worst inputs."""
from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fusecheck import assert_torch_matches_ort_on_original, fused_ops
from lipgraph.ir.differential import ort_session
from lipgraph.ir.fuse import fuse
from lipgraph.ir.load import load_model
from lipgraph.options import Options
from lipgraph.pipeline import analyze
from lipgraph.registry import load_builtin_rules

load_builtin_rules()
SHAPE = (2, 4, 8)
EPS32 = float(np.float32(1e-5))


# --- torch modules that spell the decompositions by hand ----------------------------------------

def _layernorm(h):
    mean = h.mean(-1, keepdim=True)
    d = h - mean
    return d / torch.sqrt(d.pow(2).mean(-1, keepdim=True) + 1e-5)


def _layernorm_moments(h):   # over dim 1, variance E[x²] − E[x]², 1/√ as rsqrt
    mean = h.mean(1, keepdim=True)
    return (h - mean) * torch.rsqrt((h * h).mean(1, keepdim=True) - mean * mean + 1e-6)


def _layernorm_recomputed(h):   # x − mean written thrice (both exporters share it: see HAND for two nodes)
    var = ((h - h.mean(-1, keepdim=True)) * (h - h.mean(-1, keepdim=True))).mean(-1, keepdim=True)
    return (h - h.mean(-1, keepdim=True)) / torch.sqrt(var + 1e-5)


def _rmsnorm_rsqrt(h):
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)


def _rmsnorm_div(h):
    return h / torch.sqrt((h * h).mean(-2, keepdim=True) + 1e-5)


def _softmax(h):
    e = torch.exp(h - h.amax(1, keepdim=True))
    return e / e.sum(1, keepdim=True)


def _softmax_unshifted(h):
    e = torch.exp(h)
    return e / e.sum(-1, keepdim=True)


def _log_softmax(h):
    m = h.amax(-1, keepdim=True)
    return h - m - torch.log(torch.exp(h - m).sum(-1, keepdim=True))


def _log_softmax_unshifted(h):
    return h - torch.log(torch.exp(h).sum(-2, keepdim=True))


class _Branches(torch.nn.Module):
    """Each branch reads its own Linear of x (so no exporter shares a node between branches); the
    outputs are concatenated."""

    def __init__(self, branches):
        super().__init__()
        torch.manual_seed(0)
        self.branches = branches
        self.lins = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in branches)
        self.gamma = torch.nn.Parameter(torch.rand(8) + 0.5)
        self.beta = torch.nn.Parameter(torch.randn(8))
        self.layernorm = torch.nn.LayerNorm(8)
        with torch.no_grad():
            self.layernorm.weight.uniform_(0.5, 2.0)

    def forward(self, x):
        outs = []
        for f, lin in zip(self.branches, self.lins):
            outs.append(f(self, lin(x)))
        return torch.cat(outs, -1)


POSITIVE = {  # branch: (f(module, h), the fused op it becomes: (op, axes, epsilon or None))
    "layernorm-affine": (lambda m, h: _layernorm(h) * m.gamma + m.beta, ("LayerNorm", [2], EPS32)),
    "layernorm-moments-rsqrt": (lambda m, h: _layernorm_moments(h), ("LayerNorm", [1], float(np.float32(1e-6)))),
    "layernorm-recomputed": (lambda m, h: _layernorm_recomputed(h) * m.gamma, ("LayerNorm", [2], EPS32)),
    "rmsnorm-rsqrt-scale": (lambda m, h: _rmsnorm_rsqrt(h) * m.gamma, ("RMSNorm", [2], float(np.float32(1e-6)))),
    "rmsnorm-div": (lambda m, h: _rmsnorm_div(h), ("RMSNorm", [1], EPS32)),
    "softmax": (lambda m, h: _softmax(h), ("Softmax", [1], None)),
    "softmax-unshifted": (lambda m, h: _softmax_unshifted(h), ("Softmax", [2], None)),
    "log-softmax": (lambda m, h: _log_softmax(h), ("LogSoftmax", [2], None)),
    "log-softmax-unshifted": (lambda m, h: _log_softmax_unshifted(h), ("LogSoftmax", [1], None)),
    "nn.LayerNorm": (lambda m, h: m.layernorm(h), ("LayerNorm", [2], EPS32)),   # decomposed at opset ≤ 16 only
    "nn.GELU(tanh)": (lambda m, h: torch.nn.GELU("tanh")(h), ("Gelu", "tanh")),
}

def _eps_outside_sqrt(h):
    d = h - h.mean(-1, keepdim=True)
    return d / (torch.sqrt(d.pow(2).mean(-1, keepdim=True)) + 1e-5)


def _other_mean(m, h):   # not a LayerNorm; an RMSNorm of h − mean(g), and fused as that
    d = h - m.lins[0](h).mean(-1, keepdim=True)
    return d / torch.sqrt(d.pow(2).mean(-1, keepdim=True) + 1e-5)


def _variance_over_other_axis(h):   # likewise an RMSNorm of h − mean(h) over dim 1
    d = h - h.mean(-1, keepdim=True)
    return d / torch.sqrt(d.pow(2).mean(1, keepdim=True) + 1e-5)


def _shift_over_other_axis(h, log):   # not softmax(h); softmax of s = h − max₁(h), and fused as that
    s = h - h.amax(1, keepdim=True)
    return s - torch.log(torch.exp(s).sum(-1, keepdim=True)) if log else torch.exp(s) / torch.exp(s).sum(-1, keepdim=True)


NEAR_MISSES = {  # branch: (f, the fused ops it becomes, the fusion-rejected note's pattern or None)
    "eps-outside-sqrt": (lambda m, h: _eps_outside_sqrt(h), [], None),
    "rms-of-another-tensor": (lambda m, h: h / torch.sqrt((m.lins[0](h) ** 2).mean(-1, keepdim=True) + 1e-5), [], None),
    "softmax-different-shifts": (lambda m, h: torch.exp(h - h.amax(1, keepdim=True))
                                 / torch.exp(h - h.amax(-1, keepdim=True)).sum(-1, keepdim=True), [], None),
    "sub-of-another-mean": (_other_mean, [("RMSNorm", [2], EPS32)], None),
    "variance-over-another-axis": (lambda m, h: _variance_over_other_axis(h), [("RMSNorm", [1], EPS32)], None),
    "softmax-shift-over-another-axis": (lambda m, h: _shift_over_other_axis(h, False), [("Softmax", [2], None)],
                                        "softmax/shifted/div"),
    "log-softmax-shift-over-another-axis": (lambda m, h: _shift_over_other_axis(h, True),
                                            [("LogSoftmax", [2], None)], "logsoftmax/shifted"),
}

EXPORTS = {  # name: (branches, dynamo, opset)
    "ts16": (POSITIVE, False, 16), "ts18": (POSITIVE, False, 18), "dynamo18": (POSITIVE, True, 18),
    "near-miss-ts18": (NEAR_MISSES, False, 18), "near-miss-dynamo18": (NEAR_MISSES, True, 18),
}


def _export(branches, dynamo, opset, path):
    module = _Branches([spec[0] for spec in branches.values()])
    x = (torch.randn(*SHAPE),)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, x, str(path), dynamo=True, external_data=False, opset_version=opset,
                              input_names=["x"], output_names=["y"])
        else:
            torch.onnx.export(module, x, str(path), dynamo=False, opset_version=opset, input_names=["x"],
                              output_names=["y"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name → path of that export, made on first use and kept for the module (the dynamo
    exporter's first run in a process costs about 4 s, a TorchScript export 0.1 s)."""
    folder = tmp_path_factory.mktemp("fuse_norm")

    class Exports(dict):
        def __missing__(self, name):
            self[name] = folder / f"{name}.onnx"
            _export(*EXPORTS[name], self[name])
            return self[name]
    return Exports()


def _summary(op, attrs):
    if op == "Gelu":
        return (op, attrs["approximate"].decode())
    return (op, attrs["axes"], attrs.get("epsilon"))   # ε: the model's float32 constant, exactly


@pytest.mark.parametrize("name", ["ts16", "ts18", "dynamo18"])
def test_torch_exports_fused(name, exported):
    """Every hand-written branch becomes its op; nn.LayerNorm too where the exporter decomposes it
    (opset 16; at 18 both exporters write LayerNormalization)."""
    model = fuse(load_model(exported[name]))
    want = [fused for branch, (_, fused) in POSITIVE.items() if branch != "nn.LayerNorm" or name == "ts16"]
    assert Counter(map(repr, (_summary(*f) for f in fused_ops(model)))) == Counter(map(repr, want))
    assert all(note[0] == "fused" for note in model.notes if note[0].startswith("fus"))
    scale_bias = [n for n in model.proto.graph.node if n.op_type == "LayerNorm" and len(n.input) == 3]
    assert len(scale_bias) == (2 if name == "ts16" else 1)
    assert_torch_matches_ort_on_original(model, SHAPE, scales=(0.3, 3.0))   # no exp overflow unshifted


def test_dynamo_tanh_gelu_is_fused(exported):
    """nn.GELU('tanh') from dynamo at opset 18: Pow(x, 3), the ½ on the bracket (Gelu exists only
    from opset 20)."""
    model = fuse(load_model(exported["dynamo18"]))
    notes = [n[3] for n in model.notes if n[0] == "fused" and n[3]["op"].endswith("::Gelu")]
    assert [n["pattern"] for n in notes] == ["gelu-tanh/pow/half-bracket"] and notes[0]["approximate"] == "tanh"


@pytest.mark.parametrize("name", ["near-miss-ts18", "near-miss-dynamo18"])
def test_near_misses_not_fused(name, exported):
    """No near miss becomes the op it resembles. Where the structure matched, the proof refused it
    with a note (a softmax shifted by the max over another axis); where a smaller fusion is right
    (softmax of the shifted tensor, RMSNorm of x − mean(y)) it is made."""
    model = fuse(load_model(exported[name]))
    want = [fused for _, expect, _ in NEAR_MISSES.values() for fused in expect]
    assert Counter(map(repr, (_summary(*f) for f in fused_ops(model)))) == Counter(map(repr, want))
    rejected = [n[3] for n in model.notes if n[0] == "fusion-rejected"]
    assert sorted(n["pattern"] for n in rejected) == sorted(p for *_, p in NEAR_MISSES.values() if p)
    assert all("the subgraph gives" in n["reason"] for n in rejected)
    assert_torch_matches_ort_on_original(model, SHAPE, scales=(0.3, 3.0))


def test_sampled_soundness_on_the_export(exported):
    """The whole ts18 model: finite certified bound above onnxruntime's ratios on the original,
    near zero-variance inputs of the first LayerNorm too, and above the realised lower bound."""
    res = analyze(exported["ts18"], Options(methods=("autolip",)))
    assert res.certified and res.guard.status == "passed"
    sess = ort_session(onnx.load(str(exported["ts18"])))
    rng = np.random.default_rng(0)
    lin = _Branches([f for f, _ in POSITIVE.values()]).lins[0]   # the exported weights (seeded)
    # x with lin(x) constant along the last axis: zero variance in the first LayerNorm
    flat = torch.linalg.lstsq(lin.weight.detach(), -lin.bias.detach()[:, None]).solution[:, 0].numpy()
    worst = 0.0
    for k in range(60):
        x = np.tile(flat, SHAPE[:2] + (1,)) if k % 2 else rng.standard_normal(SHAPE)
        y = x + rng.standard_normal(SHAPE) * 10.0 ** -(k % 4)
        fx, fy = (sess.run(None, {"x": v.astype(np.float32)})[0].astype(np.float64) for v in (x, y))
        worst = max(worst, np.linalg.norm(fx - fy) / np.linalg.norm((x - y).astype(np.float32)))
    assert res.upper.value >= worst > 1.0


# --- hand-made graphs: opset 18 axes as inputs, negative axes, refusals --------------------------

def _graph(nodes, consts, shape=(2, 3, 4), opset=18, outputs=("y",)):
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _load(proto, tmp_path):
    path = tmp_path / "h.onnx"
    onnx.save(proto, str(path))
    return fuse(load_model(path)), path


def _ints(*v):
    return np.asarray(v, np.int64)


def _f(v):
    return np.asarray(v, np.float32)


def _ln(axes_a="a1", axes_b="a2", eps_after_sqrt=False, extra=()):
    """LayerNorm at opset 18 with both ReduceMeans' axes as inputs, γ and β."""
    std = ([helper.make_node("Sqrt", ["v"], ["sv"]), helper.make_node("Add", ["sv", "eps"], ["s"])] if eps_after_sqrt
           else [helper.make_node("Add", ["eps", "v"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["s"])])
    return [helper.make_node("ReduceMean", ["x", axes_a], ["m"]), helper.make_node("Sub", ["x", "m"], ["d"]),
            helper.make_node("Pow", ["d", "two"], ["d2"]), helper.make_node("ReduceMean", ["d2", axes_b], ["v"]),
            *std, helper.make_node("Div", ["d", "s"], ["z"]), helper.make_node("Mul", ["g", "z"], ["zg"]),
            helper.make_node("Add", ["zg", "b"], ["y"]), *extra]


LN_CONSTS = {"two": _f(2.0), "eps": _f(1e-5), "g": _f(np.linspace(0.5, 2.0, 4)), "b": _f(np.arange(4) / 4),
             "a1": _ints(2), "a2": _ints(2)}
LN = ("LayerNorm", {"axes": [2], "epsilon": EPS32})
SOFTMAX = [helper.make_node("ReduceMax", ["x", "am"], ["mx"]), helper.make_node("Sub", ["x", "mx"], ["sh"]),
           helper.make_node("Exp", ["sh"], ["e"]), helper.make_node("ReduceSum", ["e", "as"], ["t"]),
           helper.make_node("Div", ["e", "t"], ["y"])]
S3 = (2, 3, 4)
HAND = {  # name: (nodes, constants, the fused ops (op, attrs) expected, opset, input shape)
    "layernorm-axes-inputs-negative-and-positive": (_ln(), LN_CONSTS | {"a1": _ints(-1)}, [LN], 18, S3),
    "layernorm-axes-constant-node": (_ln("c", "c", extra=[helper.make_node("Constant", [], ["c"],
                                                                          value=numpy_helper.from_array(_ints(1, 2)))]),
                                     LN_CONSTS | {"g": _f(np.ones((3, 4)) * 1.5), "b": _f(np.zeros((3, 1)))},
                                     [("LayerNorm", {"axes": [1, 2], "epsilon": EPS32})], 18, S3),
    "layernorm-axes-attribute-opset-13": ([n if n.op_type != "ReduceMean" else
                                           helper.make_node("ReduceMean", n.input[:1], n.output, axes=[-1])
                                           for n in _ln()], LN_CONSTS, [LN], 13, S3),
    "layernorm-recomputed": ([helper.make_node("ReduceMean", ["x", "a1"], ["m2"]), helper.make_node("Sub", ["x", "m2"], ["d2_"]),
                              *[n if n.op_type != "Pow" else helper.make_node("Pow", ["d2_", "two"], ["d2"]) for n in _ln()]],
                             LN_CONSTS, [LN], 18, S3),
    "layernorm-bias-only": ([*_ln()[:-2], helper.make_node("Add", ["b", "z"], ["y"])], LN_CONSTS, [LN], 18, S3),
    "softmax-negative-axis": (SOFTMAX, {"am": _ints(-2), "as": _ints(1)}, [("Softmax", {"axes": [1]})], 18, S3),
    "rmsnorm-all-axes": ([helper.make_node("Mul", ["x", "x"], ["q"]), helper.make_node("ReduceMean", ["q"], ["ms"]),
                          helper.make_node("Add", ["ms", "eps"], ["mse"]), helper.make_node("Sqrt", ["mse"], ["s"]),
                          helper.make_node("Reciprocal", ["s"], ["r"]), helper.make_node("Mul", ["r", "x"], ["y"])],
                         {"eps": _f(1e-3)}, [("RMSNorm", {"axes": [0, 1, 2], "epsilon": float(np.float32(1e-3))})],
                         18, S3),
    # not LayerNorms, by structure (no note); where an RMSNorm of x − mean is right, it is made
    "layernorm-axes-differ": (_ln(), LN_CONSTS | {"a1": _ints(-1), "a2": _ints(1)},
                              [("RMSNorm", {"axes": [1], "epsilon": EPS32})], 18, S3),
    "layernorm-eps-after-sqrt": (_ln(eps_after_sqrt=True), LN_CONSTS, [], 18, S3),
    "layernorm-centred-fans-out": (_ln(extra=[helper.make_node("Relu", ["d"], ["out2"])]), LN_CONSTS,
                                   [("RMSNorm", {"axes": [2], "epsilon": EPS32})], 18, S3),
    # γ of higher rank broadcasts the output: only the normalisation is fused, γ and β stay nodes
    "layernorm-gamma-broadcasts-rank": (_ln(), LN_CONSTS | {"g": _f(np.ones((1, 1, 1, 4)))}, [LN], 18, S3),
    # keepdims = 0 over axis 1 of (4, 4) divides row i by the sum of row j: no softmax
    "softmax-keepdims-0": ([n if n.op_type != "ReduceSum" else
                            helper.make_node("ReduceSum", n.input, n.output, keepdims=0) for n in SOFTMAX],
                           {"am": _ints(1), "as": _ints(1)}, [], 18, (4, 4)),
    "softmax-noop-empty-axes": ([n if n.op_type != "ReduceSum" else
                                 helper.make_node("ReduceSum", ["e"], n.output, noop_with_empty_axes=1) for n in SOFTMAX],
                                {"am": _ints(2)}, [], 18, S3),
}


@pytest.mark.parametrize("name", list(HAND))
def test_handmade(name, tmp_path):
    nodes, consts, want, opset, shape = HAND[name]
    outputs = ("y", "out2") if any("out2" in n.output for n in nodes) else ("y",)
    model, _ = _load(_graph(nodes, consts, shape, opset, outputs), tmp_path)
    got = [(op, {k: pytest.approx(v, rel=1e-7) if isinstance(v, float) else v for k, v in a.items()})
           for op, a in fused_ops(model)]
    assert got == want
    assert not [n for n in model.notes if n[0] == "fusion-rejected"]
    if want and all(n.input[0] == "x" for n in model.proto.graph.node if n.domain):
        # nothing of a match on x is left behind (both copies of a recomputed x − mean are fused)
        assert not {"ReduceMean", "Sub", "Pow", "Sqrt", "Div"} & {n.op_type for n in model.proto.graph.node}
    if name == "layernorm-bias-only":
        assert [list(n.input) for n in model.proto.graph.node if n.op_type == "LayerNorm"] == [["x", "", "b"]]
    if want:
        assert_torch_matches_ort_on_original(model, shape)


def test_softmax_shift_over_another_axis_rejected_with_a_note(tmp_path):
    """max over axis 0, sum over axis 2: the proof refuses softmax(x) over axis 2 (with a note);
    softmax of x − max₀(x) over axis 2 is what the graph computes, and is fused."""
    model, _ = _load(_graph(SOFTMAX, {"am": _ints(0), "as": _ints(2)}), tmp_path)
    assert fused_ops(model) == [("Softmax", {"axes": [2]})]
    assert [n.input[0] for n in model.proto.graph.node if n.op_type == "Softmax"] == ["sh"]
    (note,) = [n for n in model.notes if n[0] == "fusion-rejected"]
    assert note[3]["pattern"] == "softmax/shifted/div" and note[3]["nodes"] == [n.name or n.op_type for n in SOFTMAX]
    assert_torch_matches_ort_on_original(model, S3)


WORST = {  # hand-made model → where its bound is approached: (x, pair scale)
    "layernorm-axes-inputs-negative-and-positive": (lambda rng: np.full((2, 3, 4), 0.7), 1e-4),
    "rmsnorm-all-axes": (lambda rng: np.zeros((2, 3, 4)), 1e-4),
    "softmax-negative-axis": (lambda rng: np.zeros((2, 3, 4)), 1e-3),
}


@pytest.mark.parametrize("name", list(WORST))
def test_certified_above_sampled_ratios_near_the_worst_input(name, tmp_path):
    """autolip's certified value ≥ onnxruntime's ratios on the original model, at random pairs
    and at pairs around the input where the Jacobian is largest, where they come within a
    factor 3 of it (so a bound too small by that much fails)."""
    nodes, consts, _, opset, shape = HAND[name]
    _, path = _load(_graph(nodes, consts, shape, opset), tmp_path)
    res = analyze(path, Options(methods=("autolip",)))
    assert res.certified and res.guard.status == "passed"
    sess = ort_session(onnx.load(str(path)))
    rng = np.random.default_rng(1)
    start, step = WORST[name]
    ratios = []
    for k in range(40):
        x = start(rng) if k % 2 else rng.standard_normal((2, 3, 4)) * 3
        y = x + rng.standard_normal((2, 3, 4)) * step
        x32, y32 = x.astype(np.float32), y.astype(np.float32)
        fx, fy = (sess.run(None, {"x": v})[0].astype(np.float64) for v in (x32, y32))
        ratios.append(np.linalg.norm(fx - fy) / np.linalg.norm(x32.astype(np.float64) - y32))
    assert res.upper.value >= max(ratios) >= res.upper.value / 3
