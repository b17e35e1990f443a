"""The model as a networkx DAG of nodes, with dependency on the analysed input marked and
value-independent subgraphs folded to constants.

A tensor is *dynamic* when its value depends on the analysed input (every other graph input
was made a constant by ``lipgraph.ir.inputs``). Nodes with no dynamic input are evaluated once
and become constants; so are outputs of CONSTANT-kind rules (Shape, Size), which depend on shapes only.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import onnx

import lipgraph.budget as budget
from lipgraph.diagnostics import Diagnostic
from lipgraph.errors import InputError
from lipgraph.ir.inputs import FLOAT_TYPES
from lipgraph.ir.load import LoadedModel
from lipgraph.nodeview import NodeView, make_nodeview
from lipgraph.registry import REGISTRY, Kind, Registry, Rule


@dataclass
class Graph:
    model: LoadedModel
    dag: nx.DiGraph                              # node ids; edge attribute "tensor"
    order: list[str]                             # topological order of non-folded nodes
    views: dict[str, NodeView]
    rules: dict[str, Rule | None]
    versions: dict[str, int | None]
    producer: dict[str, str]
    consumers: dict[str, list[str]]
    constants: dict[str, np.ndarray]
    dynamic: set[str]                            # tensors depending on a graph input
    analysed: str                                # the analysed input tensor
    output: str
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def kind(self, node_id: str) -> Kind | None:
        rule = self.rules.get(node_id)
        return rule.kind if rule is not None else None

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.model.shapes[tensor]

    def ancestors_of_output(self) -> set[str]:
        out_node = self.producer.get(self.output)
        return (nx.ancestors(self.dag, out_node) | {out_node}) if out_node else set()

    def nodes_between(self) -> list[str]:
        """Nodes needed to compute the output from the analysed tensor, in order."""
        needed = self.ancestors_of_output()
        producer = self.producer.get(self.analysed)
        upstream = (nx.ancestors(self.dag, producer) | {producer}) if producer is not None else set()
        return [n for n in self.order if n in needed and n not in upstream]


def node_ids(proto: onnx.ModelProto) -> list[str]:
    seen: set[str] = set()
    ids = []
    for k, node in enumerate(proto.graph.node):
        base = node.name or f"{node.op_type}_{k}"
        nid = base if base not in seen else f"{base}#{k}"
        seen.add(nid)
        ids.append(nid)
    return ids


def build_graph(model: LoadedModel, input_name: str | None = None, output_name: str | None = None,
                registry: Registry = REGISTRY) -> Graph:
    proto = model.proto
    analysed = _choose(input_name, model.inputs, "input")
    output = _choose(output_name, model.outputs, "output")
    ids = node_ids(proto)
    nodes = dict(zip(ids, proto.graph.node))
    producer = {o: nid for nid, n in nodes.items() for o in n.output if o}
    consumers: dict[str, list[str]] = {}
    for nid, n in nodes.items():
        for t in n.input:
            if t:
                consumers.setdefault(t, []).append(nid)

    rules, versions = {}, {}
    for nid, n in nodes.items():
        opset = model.opsets.get(n.domain if n.domain != "ai.onnx" else "", 0)
        rules[nid], versions[nid] = registry.resolve(n.domain, n.op_type, opset)

    constants = dict(model.initializers)
    dynamic = set(model.inputs)
    diagnostics = [_diagnostic(*note) for note in model.notes]
    order: list[str] = []
    for nid, n in nodes.items():  # ONNX requires topological order
        rule = rules[nid]
        is_dyn = any(t in dynamic for t in n.input if t)
        if n.op_type == "Constant" and not n.domain:
            constants[n.output[0]] = _constant_value(n)
        elif not is_dyn:
            constants.update(_fold(n, nid, rule, versions[nid], constants, model))
        elif rule is not None and rule.kind is Kind.CONSTANT:
            constants.update(_fold(n, nid, rule, versions[nid], constants, model))
        else:
            dynamic.update(o for o in n.output if o)
            order.append(nid)

    analysed, notes = _redirect_non_float_input(analysed, order, nodes, model, dynamic)
    diagnostics += [Diagnostic("", "input-redirected", m) for m in notes]
    views = {nid: make_nodeview(
        nodes[nid], versions[nid] or 0,
        [model.shapes.get(t) if t else None for t in nodes[nid].input],
        [model.shapes.get(t) if t else None for t in nodes[nid].output],
        [bool(t) and t in dynamic for t in nodes[nid].input],
        {i: constants[t] for i, t in enumerate(nodes[nid].input) if t and t in constants})
        for nid in order}
    dag = nx.DiGraph()
    dag.add_nodes_from(order)
    for nid in order:
        for t in nodes[nid].input:
            if t in producer and producer[t] in views:
                dag.add_edge(producer[t], nid, tensor=t)
    if output in constants:
        raise InputError(f"output '{output}' does not depend on any input")
    return Graph(model=model, dag=dag, order=order, views=views, rules={k: rules[k] for k in order},
                 versions={k: versions[k] for k in order}, producer={t: p for t, p in producer.items() if p in views},
                 consumers={t: [c for c in cs if c in views] for t, cs in consumers.items()},
                 constants=constants, dynamic=dynamic, analysed=analysed, output=output,
                 diagnostics=diagnostics)


def _diagnostic(code: str, message: str, node: str = "", data: dict | None = None) -> Diagnostic:
    """A note of loading or fusion, (code, message[, node[, data]]), as a diagnostic."""
    return Diagnostic(node, code, message, data or {})


def _choose(name: str | None, names: list[str], what: str) -> str:
    if name is None:
        if not names:
            raise InputError(f"the model has no {what}")
        return names[0]
    if name not in names:
        raise InputError(f"unknown --{what} '{name}'; the model's {what}s are: {', '.join(names)}")
    return name


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator
    return np.asarray(ReferenceEvaluator(node).run(None, {})[0])


def _fold(node, nid, rule, version, constants, model) -> dict[str, np.ndarray]:
    """Evaluate a value-independent node once. CONSTANT-kind rules see zeros of the right
    shape (their output depends on shapes only); other nodes run in onnx's reference
    evaluator (any standard op) or their rule's torch semantics (custom domains)."""
    feeds = {}
    for t in node.input:
        if not t:
            continue
        if t in constants:
            feeds[t] = constants[t]
        else:  # dynamic input of a CONSTANT-kind node: only its shape matters
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(model.elem_types.get(t, onnx.TensorProto.FLOAT)))
            shape = model.shapes[t]
            if not budget.fits(dtype.itemsize * float(np.prod(shape, dtype=np.float64))):
                raise InputError(f"cannot fold constant node '{nid}' ({node.op_type}): its input '{t}' would have "
                                 f"shape {list(shape)}, over the memory limit (a damaged size attribute?)")
            feeds[t] = np.zeros(shape, dtype=dtype)
    try:
        if rule is not None and (rule.kind is Kind.CONSTANT or node.domain not in ("", "ai.onnx")):
            import torch
            view = make_nodeview(node, version or 0, [feeds.get(t, np.zeros(0)).shape for t in node.input],
                                 [model.shapes.get(o) for o in node.output], [False] * len(node.input), {})
            out = rule.forward(view, *[torch.as_tensor(feeds[t]) if t else None for t in node.input])
            outs = out if isinstance(out, (tuple, list)) else [out]
            values = [np.asarray(o.detach().cpu().numpy()) for o in outs]
        else:
            from onnx.reference import ReferenceEvaluator
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = ReferenceEvaluator(node).run(None, {t: feeds[t] for t in node.input if t})
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot fold constant node '{nid}' ({node.op_type}): {str(exc).splitlines()[0]}") from None
    return {o: np.asarray(v) for o, v in zip(node.output, values) if o}


def _redirect_non_float_input(analysed, order, nodes, model, dynamic):
    """A non-float input (token ids, masks) is analysed from the first float tensor that
    depends on it, e.g. the output of Cast or OneHot."""
    if model.elem_types.get(analysed) in FLOAT_TYPES:
        return analysed, []
    reach = {analysed}
    for nid in order:
        n = nodes[nid]
        if any(t in reach for t in n.input):
            for o in n.output:
                if o in dynamic and model.elem_types.get(o) in FLOAT_TYPES:
                    return o, [f"input '{analysed}' is not a float tensor; analysing from '{o}', the first float "
                               f"tensor computed from it (by {n.op_type} node '{nid}')"]
            reach.update(o for o in n.output if o)
    raise InputError(f"input '{analysed}' is not a float tensor and no float tensor is computed from it")
