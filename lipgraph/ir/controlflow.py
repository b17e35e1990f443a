"""Structure that exporters add around the computation: model-local functions (the dynamo
exporter's) and ``If`` nodes whose condition is fixed once the non-analysed inputs are.

``inline_functions`` expands every call of a model-local function into its nodes (onnx's own
inliner). ``take_constant_branches`` replaces an ``If`` whose condition is computed from
initializers alone (fixed inputs included) by the nodes of the branch it takes: the branch's
own tensors get the prefix ``<If node>/`` and its outputs reach the ``If``'s output names
through ``Identity`` nodes, so every tensor outside keeps its name. Any other control flow
(``Loop``, ``Scan``, an ``If`` on a value that depends on the analysed input) is bad input.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx

from lipgraph.errors import InputError

CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}


def inline_functions(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with every call of a model-local function inlined (the same object if it has none)."""
    if not proto.functions:
        return proto
    import onnx.inliner
    try:
        return onnx.inliner.inline_local_functions(proto)
    except Exception as exc:  # noqa: BLE001 - a malformed function is bad input
        raise InputError(f"cannot inline the model's local functions: {str(exc).splitlines()[0]}") from None


def take_constant_branches(proto: onnx.ModelProto) -> list[tuple]:
    """Replace, in place, every top-level ``If`` with a constant condition by its taken branch
    (repeatedly: a branch may hold another ``If``); then refuse any control flow left.
    Returns the notes (code, message)."""
    notes = []
    while True:
        constant = _constant_tensors(proto.graph)
        k = next((k for k, n in enumerate(proto.graph.node)
                  if n.op_type == "If" and not n.domain and n.input[0] in constant), None)
        if k is None:
            break
        node = proto.graph.node[k]
        cond = bool(np.asarray(_evaluate(proto, node.input[0])).reshape(-1)[0])
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if cond else "else_branch"))
        label = node.name or node.output[0]
        _replace_by_branch(proto.graph, k, branch, label)
        notes.append(("branch-taken", f"If node '{label}': its condition is {cond} once the fixed inputs are set; "
                      f"analysed as its {'then' if cond else 'else'} branch ({len(branch.node)} nodes)"))
    _refuse_control_flow(proto.graph)
    return notes


def _constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors computed from initializers alone (graph inputs are the only non-constants; the
    implicit reads of a subgraph count as inputs of the node that holds it)."""
    constant = {t.name for t in graph.initializer} - {i.name for i in graph.input}
    for node in graph.node:
        if all(t == "" or t in constant for t in [*node.input, *outer_reads(node)]):
            constant.update(o for o in node.output if o)
    return constant


def outer_reads(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read from the enclosing scope."""
    reads: set[str] = set()
    for attr in node.attribute:
        for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            for n in g.node:
                reads.update(t for t in [*n.input, *outer_reads(n)] if t and t not in local)
                local.update(n.output)
    return reads


def _evaluate(proto: onnx.ModelProto, tensor: str) -> np.ndarray:
    """The value of a constant tensor, by onnx's reference evaluator on the constant nodes."""
    from onnx.reference import ReferenceEvaluator
    constant = _constant_tensors(proto.graph)
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    nodes = [n for n in model.graph.node if all(o in constant for o in n.output if o)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    del model.graph.input[:]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ReferenceEvaluator(model).run(None, {})[0]
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot evaluate the condition '{tensor}' of an If node: {str(exc).splitlines()[0]}") from None


def _replace_by_branch(graph: onnx.GraphProto, k: int, branch: onnx.GraphProto, label: str) -> None:
    node = graph.node[k]
    own = {t.name for t in branch.initializer} | {o for n in branch.node for o in n.output if o}
    rename = {t: f"{label}/{t}" for t in own}
    nodes = []
    for n in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.name = f"{label}/{n.name or n.op_type}"
        for i, t in enumerate(copy.input):
            copy.input[i] = rename.get(t, t)
        for i, t in enumerate(copy.output):
            copy.output[i] = rename.get(t, t)
        nodes.append(copy)
    for out, branch_out in zip(node.output, branch.output):
        if out:
            nodes.append(onnx.helper.make_node("Identity", [rename.get(branch_out.name, branch_out.name)], [out],
                                               name=f"{label}/output:{out}"))
    for t in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.name = rename[t.name]
        graph.initializer.append(copy)
    rest = [onnx.NodeProto() for _ in range(len(graph.node) - k - 1)]
    for c, n in zip(rest, graph.node[k + 1:]):
        c.CopyFrom(n)
    del graph.node[k:]
    graph.node.extend(nodes + rest)


def _refuse_control_flow(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        if node.op_type in CONTROL_FLOW or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                               for a in node.attribute):
            why = (" (its condition depends on a graph input: fix that input with --fix NAME=VALUE, or export "
                   "the model with the branch taken)" if node.op_type == "If"
                   else " (export the model with the loop unrolled)")
            raise InputError(f"control flow is not supported: {node.op_type} node '{node.name}'{why}")
