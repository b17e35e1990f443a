"""Mutated copies of ONNX models, the way an auditing tool meets files nobody vouches for.

    from mutants import CORE, WIDE, mutate, run, failure

``mutate(data, kind, rng)`` returns ``(bytes, extra_argv)``: the model's serialised bytes
changed by one mutation of class ``kind``, and the command-line arguments the run needs (an
``--input-shape`` when the mutant made an input dim symbolic and pins it back). ``CORE`` are
the classes of issue 15's first paragraph (truncation, byte flips, a weight set to NaN/±inf/a
huge finite value, an op renamed, a node input renamed to a missing tensor, a dim made
symbolic); ``WIDE`` adds the rest of the validation rules and numerics (duplicate names,
initializer size, dims ≤ 0, attributes out of range, opsets, zero and subnormal layers, …)
for ``make fuzz``. Same bytes, same kind, same rng state: same mutant.

``run(path, argv, time_limit)`` analyses a file in-process (``lipgraph.cli.main``, stdout and
stderr captured) and returns ``(exit code, stdout, stderr, seconds)``; ``failure(...)`` says what
is wrong with such a run (None when it is fine): an exit code other than 0/1/2/4, an internal
error or a traceback in the output, or a run past ``time_limit`` plus ``SLACK`` seconds.
"""
from __future__ import annotations

import contextlib
import io
import time

import numpy as np
import onnx
from onnx import numpy_helper

from lipgraph.cli import main

CORE = ("truncate", "byte-flip", "weight-nan", "weight-inf", "weight-huge", "op-renamed",
        "input-dangling", "dim-symbolic")
WIDE = CORE + ("weight-huge-all", "weight-zero", "weight-subnormal", "duplicate-output", "initializer-size",
               "dim-nonpositive", "attribute", "opset", "input-is-initializer", "drop-initializer",
               "swap-inputs", "elem-type", "self-loop")
#: Seconds a run may take past its --time-limit (the last uninterruptible step, output).
SLACK = 3.0
ACCEPTED = (0, 1, 2, 4)
OPS = ("Relu", "Conv", "Gemm", "MatMul", "Add", "Softmax", "Reshape", "Transpose", "Frobnicate", "Loop",
       "MaxPool", "Concat", "Slice", "Sigmoid", "Identity", "Mul", "BatchNormalization", "")


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> tuple[bytes, list[str]]:
    if kind == "truncate":
        return data[: int(rng.integers(0, len(data)))], []
    if kind == "byte-flip":
        out = bytearray(data)
        for k in rng.integers(0, len(out), size=int(rng.integers(1, 9))):
            out[k] ^= 1 << int(rng.integers(0, 8))
        return bytes(out), []
    model = onnx.ModelProto()
    model.ParseFromString(data)
    argv = _MUTATIONS[kind](model, rng) or []
    return model.SerializeToString(), argv


def run(path, argv: list[str], time_limit: float) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["analyze", str(path), "--methods", "autolip", "-q", "--time-limit", str(time_limit), *argv])
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - t0


def failure(code: int, out: str, err: str, seconds: float, time_limit: float) -> str | None:
    if code not in ACCEPTED:
        return f"exit code {code}: {err.strip()[-300:]}"
    if "internal error" in err or "Traceback" in out + err:
        return f"internal error: {err.strip()[-300:]}"
    if seconds > time_limit + SLACK:
        return f"{seconds:.1f}s, past --time-limit {time_limit:g} + {SLACK:g}s"
    if code == 2 and len(err.strip().splitlines()) != 1:
        return f"exit 2 without exactly one line: {err.strip()[-300:]}"
    return None


def _float_initializers(model):
    return [t for t in model.graph.initializer
            if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE) and np.prod(t.dims) > 0]


def _set_weight(model, rng, value, everywhere=False):
    tensors = _float_initializers(model)
    if not tensors:
        return
    t = tensors[int(rng.integers(0, len(tensors)))]
    w = numpy_helper.to_array(t).copy()
    if callable(value):
        w = value(w).astype(w.dtype)
    elif everywhere:
        w[...] = value
    else:
        w.flat[int(rng.integers(0, w.size))] = value
    t.CopyFrom(numpy_helper.from_array(w, t.name))


def _huge(model, rng):
    _set_weight(model, rng, float(rng.choice([1e38, -3e38, 1e30, 1e20])))


def _huge_all(model, rng):
    _set_weight(model, rng, lambda w: w * (1e300 if w.dtype == np.float64 else 1e36) + 1e25)


def _subnormal(model, rng):
    _set_weight(model, rng, lambda w: w * np.finfo(w.dtype).smallest_subnormal)


def _node(model, rng):
    return model.graph.node[int(rng.integers(0, len(model.graph.node)))]


def _op_renamed(model, rng):
    _node(model, rng).op_type = str(rng.choice(OPS))


def _input_dangling(model, rng):
    node = _node(model, rng)
    if node.input:
        node.input[int(rng.integers(0, len(node.input)))] = "missing_tensor"


def _graph_input(model):
    inits = {t.name for t in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in inits)


def _dim_symbolic(model, rng):
    value = _graph_input(model)
    dims = value.type.tensor_type.shape.dim
    shape = [d.dim_value for d in dims]
    if not dims or min(shape) < 1:
        return None
    k = int(rng.integers(0, len(dims)))
    dims[k].dim_param = "N"
    if rng.random() < 0.5:
        return ["--input-shape", f"{value.name}:{','.join(map(str, shape))}"]
    return None


def _dim_nonpositive(model, rng):
    dims = _graph_input(model).type.tensor_type.shape.dim
    if dims:
        dims[int(rng.integers(0, len(dims)))].dim_value = int(rng.choice([0, -1, -7]))


def _duplicate_output(model, rng):
    a, b = _node(model, rng), _node(model, rng)
    if a is not b and a.output and b.output:
        b.output[0] = a.output[0]


def _initializer_size(model, rng):
    tensors = _float_initializers(model)
    tensors = [t for t in tensors if len(t.dims)]
    if tensors:
        t = tensors[int(rng.integers(0, len(tensors)))]
        t.dims[int(rng.integers(0, len(t.dims)))] += int(rng.choice([1, 5, 1000]))


def _attribute(model, rng):
    nodes = [n for n in model.graph.node if any(a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS,
                                                          onnx.AttributeProto.FLOAT) for a in n.attribute)]
    if not nodes:
        return
    node = nodes[int(rng.integers(0, len(nodes)))]
    attr = node.attribute[int(rng.integers(0, len(node.attribute)))]
    bad = int(rng.choice([-5, 0, 1000, 2 ** 40, -(2 ** 40)]))
    if attr.type == onnx.AttributeProto.INT:
        attr.i = bad
    elif attr.type == onnx.AttributeProto.INTS and attr.ints:
        attr.ints[int(rng.integers(0, len(attr.ints)))] = bad
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = float(rng.choice([-1.0, 0.0, 1e38, np.inf, np.nan]))


def _opset(model, rng):
    model.opset_import[0].version = int(rng.choice([0, 1, 5, 99, 100000]))


def _input_is_initializer(model, rng):
    tensors = _float_initializers(model)
    if tensors:
        t = tensors[int(rng.integers(0, len(tensors)))]
        model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))


def _drop_initializer(model, rng):
    if model.graph.initializer:
        del model.graph.initializer[int(rng.integers(0, len(model.graph.initializer)))]


def _swap_inputs(model, rng):
    node = _node(model, rng)
    if len(node.input) >= 2:
        node.input[0], node.input[1] = node.input[1], node.input[0]


def _elem_type(model, rng):
    tensors = list(model.graph.initializer)
    if tensors:
        tensors[int(rng.integers(0, len(tensors)))].data_type = int(rng.choice([2, 6, 7, 9, 10, 11, 16, 99]))


def _self_loop(model, rng):
    node = _node(model, rng)
    if node.input and node.output:
        node.input[0] = node.output[0]


_MUTATIONS = {
    "weight-nan": lambda m, r: _set_weight(m, r, np.nan),
    "weight-inf": lambda m, r: _set_weight(m, r, float(r.choice([np.inf, -np.inf]))),
    "weight-huge": _huge,
    "weight-huge-all": _huge_all,
    "weight-zero": lambda m, r: _set_weight(m, r, 0.0, everywhere=True),
    "weight-subnormal": _subnormal,
    "op-renamed": _op_renamed,
    "input-dangling": _input_dangling,
    "dim-symbolic": _dim_symbolic,
    "dim-nonpositive": _dim_nonpositive,
    "duplicate-output": _duplicate_output,
    "initializer-size": _initializer_size,
    "attribute": _attribute,
    "opset": _opset,
    "input-is-initializer": _input_is_initializer,
    "drop-initializer": _drop_initializer,
    "swap-inputs": _swap_inputs,
    "elem-type": _elem_type,
    "self-loop": _self_loop,
}
