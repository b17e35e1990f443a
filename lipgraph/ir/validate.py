"""Validation of a parsed model before anything analyses it: every problem is an ``InputError``
with one line naming it (exit code 2), never a crash later on.

Rules (one regression test each in tests/ir/test_validate.py):

* the graph is not enormous (at most ``MAX_NODES`` nodes);
* IR version and every opset are ones the installed onnx knows;
* no duplicate tensor names: graph inputs, initializers and node outputs each name a tensor once
  (a graph input that is also an initializer is the one exception: ONNX allows it, it is
  analysed as the constant, with an ``input-initializer`` note);
* every graph output is provided by a node, an input or an initializer (node inputs that
  nothing provides, and cycles, are refused by the loader's topological sort);
* every initializer's data agrees with its dims and element type; no dim is negative; no
  sparse initializers;
* every graph input dim that is fixed is ≥ 1;
* attributes of ops in the ONNX domains have the type their schema states, are attributes the
  schema defines, and are in range: sizes, strides, dilations and groups ≥ 1, pads ≥ 0, flags
  (keepdims, transA, …) 0 or 1, floats not NaN, epsilons finite and ≥ 0, ``auto_pad`` one of
  its four values.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto

from lipgraph.errors import InputError

#: More nodes than any model lipgraph can analyse in reasonable time (a large transformer has ~10⁵).
MAX_NODES = 500_000
ONNX_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "ai.onnx.training", "ai.onnx.preview"}
POSITIVE_INTS = {"strides", "dilations", "kernel_shape", "group", "blocksize", "size"}
NONNEGATIVE_INTS = {"pads", "output_padding"}
BOOLEAN_INTS = {"keepdims", "transA", "transB", "ceil_mode", "count_include_pad", "noop_with_empty_axes",
                "select_last_index", "exclusive", "reverse", "largest", "sorted", "training_mode", "allowzero",
                "detect_negative", "detect_positive", "center_point_box", "exclude_outside", "storage_order"}
AUTO_PAD = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"}
_SUBBYTE = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}
_COMPLEX = {TensorProto.COMPLEX64, TensorProto.COMPLEX128}


def validate(proto: onnx.ModelProto, path: Path) -> list[tuple]:
    """Refuse a malformed model (``InputError``); return the loader's notes (code, message)."""
    graph = proto.graph
    if len(graph.node) > MAX_NODES:
        raise InputError(f"{path}: the graph has {len(graph.node)} nodes; lipgraph analyses at most {MAX_NODES}")
    _check_versions(proto, path)
    notes = _check_names(graph, path)
    for tensor in graph.initializer:
        check_tensor(tensor, f"initializer '{tensor.name}'", path)
    if len(graph.sparse_initializer):
        raise InputError(f"{path}: sparse initializers are not supported "
                         f"('{graph.sparse_initializer[0].values.name}'); store the weight densely")
    _check_input_dims(graph, path)
    opsets = {(o.domain if o.domain != "ai.onnx" else ""): o.version for o in proto.opset_import}
    for node in graph.node:
        _check_attributes(node, opsets, path)
    return notes


def _check_versions(proto: onnx.ModelProto, path: Path) -> None:
    if proto.ir_version > onnx.IR_VERSION:
        raise InputError(f"{path}: IR version {proto.ir_version} is newer than the installed onnx knows "
                         f"(≤ {onnx.IR_VERSION}); upgrade onnx")
    known = onnx.defs.C.schema_version_map()
    for o in proto.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        if domain in known and not known[domain][0] <= o.version <= known[domain][1]:
            raise InputError(f"{path}: opset {o.version} of domain '{o.domain or 'ai.onnx'}' is unknown to the "
                             f"installed onnx (it knows {known[domain][0]}–{known[domain][1]})")
    imported = {"" if o.domain == "ai.onnx" else o.domain for o in proto.opset_import}
    for node in proto.graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        if domain not in imported:
            raise InputError(f"{path}: node '{node.name or node.op_type}' uses domain '{node.domain or 'ai.onnx'}', "
                             "which the model imports no opset for")


def _check_names(graph: onnx.GraphProto, path: Path) -> list[tuple]:
    inits = [t.name for t in graph.initializer]
    inputs = [i.name for i in graph.input]
    for what, names in (("graph input", inputs), ("initializer", inits)):
        dup = _first_duplicate(names)
        if dup is not None:
            raise InputError(f"{path}: duplicate tensor name: {what} '{dup}' is declared twice")
    provided = set(inputs) | set(inits)
    for node in graph.node:
        for out in node.output:
            if not out:
                continue
            if out in provided:
                raise InputError(f"{path}: duplicate tensor name: node '{node.name or node.op_type}' writes "
                                 f"'{out}', which is already an input, an initializer or another node's output")
            provided.add(out)
    for out in graph.output:
        if out.name not in provided:
            raise InputError(f"{path}: graph output '{out.name}' is not provided by any node, input or initializer")
    both = [name for name in inputs if name in set(inits)]
    return [("input-initializer", f"graph input '{name}' also has an initializer: analysed as that constant, "
             "not as an input") for name in both]


def _first_duplicate(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def check_tensor(tensor: TensorProto, what: str, path: Path) -> None:
    """Element type known, dims ≥ 0, data length equal to what the dims and type require
    (after external data is loaded)."""
    if tensor.data_type == TensorProto.UNDEFINED or tensor.data_type not in TensorProto.DataType.values():
        raise InputError(f"{path}: {what} has an unknown element type ({tensor.data_type})")
    if any(d < 0 for d in tensor.dims):
        raise InputError(f"{path}: {what} has a negative dim {list(tensor.dims)}")
    count = math.prod(tensor.dims)
    if tensor.data_type == TensorProto.STRING:
        have, want = len(tensor.string_data), count
    elif tensor.HasField("raw_data"):
        itemsize = 1 if tensor.data_type in _SUBBYTE else np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
            tensor.data_type)).itemsize
        have, want = len(tensor.raw_data), ((count + 1) // 2 if tensor.data_type in _SUBBYTE else count * itemsize)
    else:
        field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
        have = len(getattr(tensor, field))
        want = 2 * count if tensor.data_type in _COMPLEX else (count + 1) // 2 if tensor.data_type in _SUBBYTE else count
    if have != want:
        raise InputError(f"{path}: {what} has dims {list(tensor.dims)} but its data holds {have} "
                         f"{'bytes' if tensor.HasField('raw_data') else 'values'} ({want} expected)")


def _check_input_dims(graph: onnx.GraphProto, path: Path) -> None:
    for value in graph.input:
        for k, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                raise InputError(f"{path}: graph input '{value.name}' has dim {k} = {dim.dim_value} (must be ≥ 1)")


def _check_attributes(node: onnx.NodeProto, opsets: dict[str, int], path: Path) -> None:
    where = f"{path}: node '{node.name or node.op_type}' ({node.op_type})"
    for attr in node.attribute:
        if attr.type == AttributeProto.TENSOR:
            check_tensor(attr.t, f"attribute '{attr.name}' of node '{node.name or node.op_type}'", path)
        values = list(attr.ints) if attr.type == AttributeProto.INTS else [attr.i] if attr.type == AttributeProto.INT else []
        if attr.name in POSITIVE_INTS and any(v < 1 for v in values):
            raise InputError(f"{where}: attribute {attr.name} = {values if len(values) > 1 else values[0]} "
                             "(must be ≥ 1)")
        if attr.name in BOOLEAN_INTS and any(v not in (0, 1) for v in values):
            raise InputError(f"{where}: attribute {attr.name} = {values[0]} (must be 0 or 1)")
        if attr.name in NONNEGATIVE_INTS and any(v < 0 for v in values):
            raise InputError(f"{where}: attribute {attr.name} = {values} (must be ≥ 0)")
        floats = list(attr.floats) if attr.type == AttributeProto.FLOATS else [attr.f] if attr.type == AttributeProto.FLOAT else []
        if any(math.isnan(f) for f in floats):
            raise InputError(f"{where}: attribute {attr.name} is NaN")
        if attr.name == "epsilon" and floats and not (math.isfinite(floats[0]) and floats[0] >= 0):
            raise InputError(f"{where}: attribute epsilon = {floats[0]} (must be finite and ≥ 0)")
        if attr.name == "auto_pad" and attr.s.decode(errors="replace") not in AUTO_PAD:
            raise InputError(f"{where}: attribute auto_pad = '{attr.s.decode(errors='replace')}' "
                             f"(one of {', '.join(sorted(AUTO_PAD))})")
    domain = "" if node.domain == "ai.onnx" else node.domain
    if domain not in ONNX_DOMAINS:
        return
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), domain)
    except onnx.defs.SchemaError:
        return  # an op onnx does not know: the annotate pass reports it as unsupported
    for attr in node.attribute:
        declared = schema.attributes.get(attr.name)
        if declared is None:
            raise InputError(f"{where}: attribute '{attr.name}' is not defined by {node.op_type}-"
                             f"{schema.since_version}")
        if int(declared.type) != int(attr.type):
            raise InputError(f"{where}: attribute '{attr.name}' has type "
                             f"{AttributeProto.AttributeType.Name(attr.type)}, the schema says "
                             f"{AttributeProto.AttributeType.Name(int(declared.type))}")
