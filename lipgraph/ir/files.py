"""Reading a model file safely: its size, its protobuf, its external data.

Nothing outside the model's folder is ever opened: every external-data location is checked
before any byte of it is read (no absolute paths, no ``..``, no symlink that resolves outside
the folder, only regular files), offsets and lengths must lie inside the file, and the bytes
are read here, for every tensor of the model (initializers, sparse initializers, node
attributes, subgraphs, local functions) — not by onnx's own loader.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

import onnx
from google.protobuf.message import DecodeError

from lipgraph.errors import InputError

#: protobuf cannot serialise or parse a message of 2 GiB or more.
PROTOBUF_LIMIT = 2**31 - 1


def read_model(path: Path) -> onnx.ModelProto:
    size = path.stat().st_size
    if size > PROTOBUF_LIMIT:
        raise InputError(f"{path}: {size / 2**30:.1f} GiB is over protobuf's 2 GB limit; a model that large must "
                         "keep its weights in external data (onnx.save(..., save_as_external_data=True))")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError, ValueError, RecursionError) as exc:
        raise InputError(f"{path}: not a valid ONNX model (protobuf parse failed: {exc})") from None
    if not proto.graph.node or not proto.opset_import or proto.ir_version <= 0:
        raise InputError(f"{path}: not an ONNX model (no graph, opset or IR version; truncated or another format?)")
    base = path.resolve().parent
    for tensor in _tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _read_external(tensor, base, path)
    return proto


def _read_external(tensor: onnx.TensorProto, base: Path, path: Path) -> None:
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    where = f"{path}: external data of '{tensor.name}'"
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if not location or os.path.isabs(location) or PureWindowsPath(location).drive or ".." in parts:
        raise InputError(f"{where} points outside the model's folder ('{location}': only relative paths "
                         "without '..' are allowed); refusing to read it")
    target = (base / location).resolve()
    if os.path.commonpath([base, target]) != str(base):
        raise InputError(f"{where} points outside the model's folder ('{location}' resolves to {target}); "
                         "refusing to read it")
    if not target.is_file():
        raise InputError(f"{where}: file '{location}' is missing (or not a regular file)")
    size = target.stat().st_size
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else size - offset
    except ValueError:
        raise InputError(f"{where}: offset/length are not integers ({info})") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise InputError(f"{where}: bytes {offset}–{offset + length} are past the end of '{location}' "
                         f"({size} bytes): the file is too short")
    with open(target, "rb") as f:
        f.seek(offset)
        tensor.raw_data = f.read(length)
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]


def _tensors(proto: onnx.ModelProto):
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes):
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sparse in [attr.sparse_tensor, *attr.sparse_tensors]:
                yield sparse.values
                yield sparse.indices
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for g in attr.graphs:
                yield from _graph_tensors(g)
