"""Load an ONNX model for analysis: validate, resolve external data, pin dynamic dims,
infer every tensor's shape.

Every problem with the input is an ``InputError`` with one line naming it; the command
line turns it into exit code 2.
"""
from __future__ import annotations

import heapq
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from lipgraph.errors import InputError
from lipgraph.ir.controlflow import inline_functions, outer_reads, take_constant_branches
from lipgraph.ir.files import read_model
from lipgraph.ir.inputs import analysed_input, prepare_inputs
from lipgraph.ir.validate import validate

#: Initializers with more entries than this are weights, not shape data: shape inference and
#: onnxruntime sessions are given them without their values (``large_initializers``).
LARGE_INITIALIZER = 4096
#: Element types onnxruntime reads from numpy arrays (the weights ``differential.ort_session`` feeds).
ARRAY_DTYPES = {np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                                      np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)}
#: The external-data location of a weight whose values live in ``LoadedModel.initializers`` only.
DETACHED = "lipgraph:detached"


@dataclass
class LoadedModel:
    path: Path
    proto: onnx.ModelProto
    opsets: dict[str, int]
    inputs: list[str]                      # graph inputs that are not initializers
    outputs: list[str]
    shapes: dict[str, tuple[int, ...]]
    elem_types: dict[str, int]
    #: every initializer's value; the large ones' values are held here only (``detach_weights``)
    initializers: dict[str, np.ndarray]
    notes: list[tuple] = field(default_factory=list)   # (diagnostic code, message[, node[, data]])
    #: the model as loaded, before ``lipgraph.ir.fuse`` rewrote ``proto``; None if nothing was fused
    original_proto: onnx.ModelProto | None = None

    @property
    def opset(self) -> int:
        return self.opsets.get("", 0)

    @property
    def ort_proto(self) -> onnx.ModelProto:
        """The model onnxruntime runs: always the one as loaded (fused ops are lipgraph's own)."""
        return self.original_proto if self.original_proto is not None else self.proto


def load_model(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None, *,
               input: str | None = None, fixed: dict[str, str] | None = None) -> LoadedModel:
    """Load ``path`` for analysing ``input`` (default: the first graph input) with every other input
    held at its ``fixed`` value (``lipgraph.ir.inputs``) and dims pinned by ``input_shapes``."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    proto = read_model(path)
    notes = validate(proto, path)
    proto = inline_functions(proto)
    stored = {t.name for t in proto.graph.initializer}
    graph_inputs = [i.name for i in proto.graph.input if i.name not in stored]
    analysed = analysed_input(graph_inputs, input)
    notes += prepare_inputs(proto, graph_inputs, analysed, input_shapes or {}, fixed or {})
    _sort_nodes(proto, path)
    notes += take_constant_branches(proto)
    _sort_nodes(proto, path)
    initializers = _initializers(proto)
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    shapes, elem_types, inferred_notes = _infer_shapes(proto, path)
    notes += inferred_notes
    proto = detach_weights(proto, initializers)
    return LoadedModel(
        path=path, proto=proto,
        opsets={(o.domain if o.domain != "ai.onnx" else ""): o.version for o in proto.opset_import},
        inputs=inputs, outputs=[o.name for o in proto.graph.output],
        shapes=shapes, elem_types=elem_types, initializers=initializers, notes=notes)


def _initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {}
    for tensor in proto.graph.initializer:
        values[tensor.name] = numpy_helper.to_array(tensor)
    for name, value in values.items():
        if value.dtype.kind == "f" and np.isnan(value).any():
            raise InputError(f"weight '{name}' contains NaN values")
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.HasField("t"):
                    value = numpy_helper.to_array(attr.t)
                    if value.dtype.kind == "f" and np.isnan(value).any():
                        raise InputError(f"constant '{node.output[0]}' contains NaN values")
    return values  # ±inf is checked where it is used (passes/annotate): fine as Max(−inf, x), not as a weight


def _sort_nodes(proto: onnx.ModelProto, path: Path) -> None:
    """Put the nodes in topological order (stable: the file's order where it is one already),
    as onnxruntime does; a node reading a tensor that nothing provides, or a cycle, is bad input."""
    graph = proto.graph
    provided = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    producer = {o: k for k, n in enumerate(graph.node) for o in n.output if o}
    waiting: dict[int, set[int]] = {}
    consumers: dict[int, list[int]] = {}
    for k, node in enumerate(graph.node):
        deps = set()
        for t in [*node.input, *sorted(outer_reads(node))]:
            if t in provided:
                continue
            if t not in producer:
                raise InputError(f"{path}: node '{node.name or node.op_type}' reads tensor '{t}', which no node, "
                                 "input or initializer provides")
            deps.add(producer[t])
        waiting[k] = deps
        for d in deps:
            consumers.setdefault(d, []).append(k)
    ready = [k for k, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for c in consumers.get(k, []):
            waiting[c].discard(k)
            if not waiting[c]:
                heapq.heappush(ready, c)
    if len(order) < len(graph.node):
        stuck = next(graph.node[k] for k in range(len(graph.node)) if k not in set(order))
        raise InputError(f"{path}: the graph has a cycle (through node '{stuck.name or stuck.op_type}')")
    if order != list(range(len(graph.node))):
        nodes = [graph.node[k] for k in order]
        copies = [onnx.NodeProto() for _ in nodes]
        for c, n in zip(copies, nodes):
            c.CopyFrom(n)
        del graph.node[:]
        graph.node.extend(copies)


def _static(value_info) -> tuple[int, ...] | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not (d.HasField("dim_value") and d.dim_value >= 0):
            return None
        dims.append(d.dim_value)
    return tuple(dims)


def large_initializers(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The top-level initializers with more than ``LARGE_INITIALIZER`` entries (the weights)."""
    return [t for t in proto.graph.initializer if math.prod(t.dims) > LARGE_INITIALIZER]


def detach_weights(proto: onnx.ModelProto, initializers: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``proto`` holding each weight once: a copy in which the large initializers
    (``large_initializers``) that onnxruntime can take from arrays keep name, type and dims with an
    external-data stub (location ``DETACHED``) instead of their data, whose values stay in
    ``initializers`` only. Without it the loaded model held every weight twice (the file's bytes
    and the arrays). A copy, because protobuf frees a message's storage only with the message:
    clearing the fields would free nothing. Whoever hands the proto to onnxruntime gives it the
    arrays (``differential.ort_session``) or writes them back first (``with_weights``)."""
    names = {t.name for t in large_initializers(proto) if initializers[t.name].dtype in ARRAY_DTYPES}
    if not names:
        return proto
    bare = without_initializers(proto, names)
    for tensor in proto.graph.initializer:
        if tensor.name in names:
            stub = bare.graph.initializer.add(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                                              data_location=onnx.TensorProto.EXTERNAL)
            stub.external_data.add(key="location", value=DETACHED)
    return bare


def detached(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The initializers of ``proto`` whose values ``detach_weights`` left in the loaded arrays."""
    return [t for t in proto.graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL and any(e.key == "location" and e.value == DETACHED
                                                                     for e in t.external_data)]


def with_weights(proto: onnx.ModelProto, initializers: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A self-contained copy of ``proto`` (e.g. ``LoadedModel.ort_proto``): the values of its
    detached weights written back from ``initializers`` (``LoadedModel.initializers``)."""
    full = onnx.ModelProto()
    full.CopyFrom(proto)
    for tensor in detached(full):
        tensor.CopyFrom(numpy_helper.from_array(initializers[tensor.name], tensor.name))
    return full


def without_initializers(proto: onnx.ModelProto, names: set[str]) -> onnx.ModelProto:
    """A copy of ``proto`` without the top-level initializers in ``names``, made field by field so
    that their values are never copied (a whole-model copy would duplicate every weight)."""
    bare = onnx.ModelProto()
    _copy_fields(proto, bare, skip={"graph"})
    _copy_fields(proto.graph, bare.graph, skip={"initializer"})
    bare.graph.initializer.extend(t for t in proto.graph.initializer if t.name not in names)
    return bare


def _copy_fields(src, dst, skip: set[str]) -> None:
    for desc, value in src.ListFields():
        if desc.name in skip:
            continue
        if desc.is_repeated:
            getattr(dst, desc.name).extend(value)
        elif desc.type == desc.TYPE_MESSAGE:
            getattr(dst, desc.name).CopyFrom(value)
        else:
            setattr(dst, desc.name, value)


def _infer_shapes(proto: onnx.ModelProto, path: Path) -> tuple[dict, dict, list]:
    """Every tensor's shape, inferred from the inputs and the weights alone: the model's own
    ``value_info`` and output shapes are dropped first (a stale entry would otherwise be taken
    as the truth); the differential guard then checks each shape against onnxruntime's.

    Inference runs on a copy whose large initializers (``large_initializers``) are graph inputs of
    the same type and shape instead: shapes depend on their shapes only (data propagation reads
    values of small tensors — shape vectors, scales, axes — which stay), and the weights are not
    copied and serialised again."""
    large = large_initializers(proto)
    try:
        bare = without_initializers(proto, {t.name for t in large})
    except UnicodeDecodeError as exc:  # protobuf decodes string fields on access
        raise InputError(f"{path}: a text field is not valid UTF-8 ({exc.reason} at byte {exc.start}): "
                         "a damaged file?") from None
    del bare.graph.value_info[:]
    for out in bare.graph.output:
        out.type.tensor_type.ClearField("shape")
    declared_inputs = {i.name for i in bare.graph.input}
    bare.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                            for t in large if t.name not in declared_inputs)
    try:
        inferred = shape_inference.infer_shapes(bare, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - malformed graphs fail here
        raise InputError(f"{path}: shape inference failed: {str(exc).splitlines()[0]}") from None
    shapes, types = {}, {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        types[value.name] = value.type.tensor_type.elem_type
        shape = _static(value)
        if shape is not None:
            shapes[value.name] = shape
    for tensor in [*graph.initializer, *large]:
        shapes[tensor.name] = tuple(tensor.dims)
        types[tensor.name] = tensor.data_type
    declared = {v.name: v for v in list(proto.graph.value_info) + list(proto.graph.output)}
    for name, value in declared.items():
        types.setdefault(name, value.type.tensor_type.elem_type)
    missing = [o for n in graph.node for o in n.output if o and o not in shapes]
    notes = []
    if missing:
        try:
            shapes.update(_shapes_from_onnxruntime(proto, missing, types, path))
        except InputError:  # ops neither ONNX nor onnxruntime knows: the model's word is all there is
            stated = {m: _static(declared[m]) for m in missing if m in declared}
            if any(stated.get(m) is None for m in missing):
                raise
            shapes.update(stated)
            notes.append(("declared-shapes", f"shapes of {', '.join(missing[:5])}{'…' if len(missing) > 5 else ''} "
                          "taken from the model's value_info: neither ONNX shape inference nor onnxruntime "
                          "knows the ops that make them"))
    return shapes, types, notes


def _shapes_from_onnxruntime(proto: onnx.ModelProto, names: list[str], types: dict, path: Path) -> dict:
    """One onnxruntime run with the intermediates exposed, for shapes inference missed."""
    import onnxruntime as ort

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    known_outputs = {o.name for o in model.graph.output}
    for name in names:
        if name not in known_outputs and types.get(name):
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {}
        for i in sess.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in i.shape]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(types.get(i.name, onnx.TensorProto.FLOAT))
            feeds[i.name] = np.zeros(shape, dtype=dtype)
        outs = sess.run(None, feeds)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: cannot determine the shapes of {', '.join(names[:5])}"
                         f"{'…' if len(names) > 5 else ''} (shape inference incomplete and onnxruntime failed: "
                         f"{str(exc).splitlines()[0]})") from None
    return {o.name: tuple(v.shape) for o, v in zip(sess.get_outputs(), outs) if o.name in names}
