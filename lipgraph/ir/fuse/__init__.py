"""Fusion before the graph is built: decomposed activations (``x·Sigmoid(x)``, GELU's erf and
tanh forms, hard-swish, Mish) and normalisations (LayerNorm, RMSNorm, softmax, log-softmax)
become one op of the private domain ``lipgraph.fused``, so that a rule can give them their
global slope range or constant (a product or quotient of two computed tensors has none).

``fuse`` matches the tables in ``activations.py`` and ``normalization.py`` (matcher in
``match.py``), proves each match numerically (``verify.py``) and rewrites it into one node that
keeps the match's input and output tensor names (and reads the matched γ, β constants). The original model is kept on the result (``original_proto``): onnxruntime
only ever runs that one, so the differential guard checks every fused node against it.
"""
from __future__ import annotations

import dataclasses

import onnx

from lipgraph.ir.fuse import activations, normalization
from lipgraph.ir.fuse.match import GraphIndex, Match, match_at
from lipgraph.ir.fuse.verify import disagreement, proof_model, subgraph_model
from lipgraph.ir.load import LoadedModel
from lipgraph.registry import FUSED_DOMAIN

FUSED_VERSION = 1
_CHECKED_TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64"}
#: Normalisations first: they are larger, and RMSNorm or softmax parts never look like activations.
PATTERNS = [*normalization.PATTERNS, *activations.PATTERNS]


def fuse(model: LoadedModel) -> LoadedModel:
    """``model`` with every proven match rewritten; unchanged (same object) when none is."""
    graph = model.proto.graph
    index = GraphIndex(graph, model.shapes, model.initializers)
    used: set[int] = set()
    accepted: dict[int, onnx.NodeProto] = {}
    notes = []
    by_root: dict[str, list] = {}   # the table by root op type, in table order
    for pattern in PATTERNS:
        by_root.setdefault(pattern.root.op_type, []).append(pattern)
    for root in reversed(range(len(graph.node))):   # from the outputs back: larger matches first
        if root in used:
            continue
        for pattern in by_root.get(graph.node[root].op_type, ()):
            m = match_at(index, pattern, root)
            if m is None or used & set(m.nodes) or not _same_shape(model, m):
                continue
            fused = _fused_node(graph, m, root)
            nodes = [graph.node[k] for k in m.nodes]
            names = [n.name or n.op_type for n in nodes]
            listed = ", ".join(f"'{n}'" for n in names)
            why = _disproof(model, nodes, m, fused)
            if why is not None:
                notes.append((root, "fusion-rejected", f"nodes {listed} look like {pattern.spelling} but are not "
                              f"{fused.op_type} ({why}); not rewritten into it", fused.name,
                              {"pattern": pattern.name, "nodes": names, "reason": why}))
                continue
            used.update(m.nodes)
            accepted[root] = fused
            notes.append((root, "fused", f"nodes {listed} ({pattern.spelling}) analysed as one {FUSED_DOMAIN}::"
                          f"{fused.op_type}{_attr_text(fused)} node '{fused.name}'", fused.name,
                          {"pattern": pattern.name, "nodes": names, "op": f"{FUSED_DOMAIN}::{fused.op_type}",
                           **m.pattern.attrs(m.params)}))
            break
    if not accepted:
        return dataclasses.replace(model, notes=[*model.notes, *_in_graph_order(notes)]) if notes else model
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    del proto.graph.node[:]
    proto.graph.node.extend(accepted[k] if k in accepted else n
                            for k, n in enumerate(graph.node) if k in accepted or k not in used)
    proto.opset_import.append(onnx.helper.make_opsetid(FUSED_DOMAIN, FUSED_VERSION))
    return dataclasses.replace(model, proto=proto, opsets={**model.opsets, FUSED_DOMAIN: FUSED_VERSION},
                               notes=[*model.notes, *_in_graph_order(notes)], original_proto=model.proto)


def _in_graph_order(notes: list[tuple]) -> list[tuple]:
    return [note[1:] for note in sorted(notes, key=lambda note: note[0])]


def _disproof(model: LoadedModel, nodes: list[onnx.NodeProto], m: Match, fused: onnx.NodeProto) -> str | None:
    """Where the fused node differs from the matched nodes (verify.py), None when it does not."""
    if m.pattern.elementwise:
        elem = model.elem_types[m.x]
        return disagreement(subgraph_model(model.proto, nodes, m.x, m.output, m.constants, elem), fused,
                            _CHECKED_TYPES[elem])
    shape = model.shapes[m.x]
    return disagreement(proof_model(model.proto, nodes, m.x, m.output, m.constants, shape), fused, "float64", shape)


def _same_shape(model: LoadedModel, m: Match) -> bool:
    """Elementwise for real: the output has the input's shape (a constant of higher rank would
    broadcast it) and a float type the proof can sample."""
    shape = model.shapes.get(m.x)
    return (shape is not None and shape == model.shapes.get(m.output)
            and model.elem_types.get(m.x) in _CHECKED_TYPES and model.elem_types.get(m.output) == model.elem_types[m.x])


def _fused_node(graph: onnx.GraphProto, m: Match, root: int) -> onnx.NodeProto:
    name = graph.node[root].name or f"{m.pattern.fused}_{root}"
    return onnx.helper.make_node(m.pattern.fused, m.inputs, [m.output], name=name, domain=FUSED_DOMAIN,
                                 **m.pattern.attrs(m.params))


def _attr_text(node: onnx.NodeProto) -> str:
    def text(v) -> str:
        if isinstance(v, bytes):
            return v.decode()
        return f"[{', '.join(map(str, v))}]" if isinstance(v, list) else f"{v:.9g}"

    attrs = ", ".join(f"{a.name}={text(onnx.helper.get_attribute_value(a))}" for a in node.attribute)
    return f"({attrs})" if attrs else ""
