"""Certified Lipschitz bounds of logit margins f_i − f_j, each as its own network.

The margin network is the model with its analysed output flattened to the K logits and
multiplied by the column e_i − e_j: an affine row the passes fold into the last segment, so
AutoLip, SeqLip and LipSDP bound the margin directly — at most √2 times the model's bound,
and usually less (the row only sees the logits' difference). The value used is the smaller of
that bound and √2·L (both certified).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lipgraph.options import Options

PREFIX = "lipgraph_margin"


def margin_model(proto: onnx.ModelProto, output: str, classes: int, i: int, j: int) -> onnx.ModelProto:
    """``proto`` with one more output ``lipgraph_margin`` = flatten(output) · (e_i − e_j)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    row = np.zeros((classes, 1), np.float32)
    row[i, 0], row[j, 0] = 1.0, -1.0
    elem = next((o.type.tensor_type.elem_type for o in proto.graph.output if o.name == output), onnx.TensorProto.FLOAT)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem or onnx.TensorProto.FLOAT)
    model.graph.initializer.append(numpy_helper.from_array(row.astype(dtype), f"{PREFIX}_row"))
    model.graph.node.extend([
        helper.make_node("Flatten", [output], [f"{PREFIX}_logits"], axis=0, name=f"{PREFIX}_flatten"),
        helper.make_node("MatMul", [f"{PREFIX}_logits", f"{PREFIX}_row"], [PREFIX], name=f"{PREFIX}_row"),
    ])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(PREFIX, elem or onnx.TensorProto.FLOAT, None))
    return model


@dataclasses.dataclass
class MarginBound:
    i: int
    j: int
    value: float          # an upper bound (math.inf when none)
    label: str            # how far it can be trusted: the label of the bound it comes from
    method: str           # the method that gave it, or "√2·L"

    def to_json(self) -> dict:
        return {"i": self.i, "j": self.j, "value": self.value if math.isfinite(self.value) else None,
                "label": self.label, "method": self.method}


def margin_bounds(proto: onnx.ModelProto, output: str, classes: int, pairs: list[tuple[int, int]],
                  options: Options, model_bound, progress=lambda s: None) -> dict[tuple[int, int], MarginBound]:
    """A bound per unordered pair (i < j) — |∇(f_i − f_j)| is the same for (j, i) — the smaller of
    the margin network's headline bound and √2 times ``model_bound`` (the model's headline
    ``MethodValue``, or None), each keeping its label (``certified``, or ``assumed`` when it rests
    on --assume)."""
    from lipgraph.api import analyze
    margin_options = dataclasses.replace(options, output=None,
                                         methods=tuple(m for m in options.methods if m != "lower") or ("autolip",))
    out = {}
    for k, (i, j) in enumerate(pairs):
        progress(f"margin bounds: pair {k + 1}/{len(pairs)} (classes {i}, {j})")
        report = analyze(margin_model(proto, output, classes, i, j), options=margin_options)
        up = report.upper
        best = MarginBound(i, j, up.value, up.label.value, up.name) if up else \
            MarginBound(i, j, math.inf, "certified", "none")
        if model_bound is not None and math.sqrt(2.0) * model_bound.value < best.value:
            best = MarginBound(i, j, math.sqrt(2.0) * model_bound.value * (1 + 1e-12), model_bound.label.value, "√2·L")
        out[(i, j)] = best
    return out
