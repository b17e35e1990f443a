"""Pattern objects and the matcher: an expression tree over ONNX ops, matched against the
subgraph that computes one tensor.

A pattern is ``Op(op_type, *operands, attrs=…)`` whose operands are patterns, ``X`` (the
activation's input: every occurrence must be the same tensor), ``Const(value)`` (a constant
tensor whose every entry is within ``REL_TOL`` of ``value``) or ``Param(name)`` (a constant
scalar read as it is, e.g. Swish's β). Ops listed in ``COMMUTATIVE`` match their two operands
in either order. A match is valid only if every tensor it computes, except the root's output,
is read by no node outside the match and is not a graph output (fan-out).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

#: Relative tolerance on matched constants (float32 rounding of the ideal value is ≤ 6e-8).
REL_TOL = 1e-6
COMMUTATIVE = {"Mul", "Add"}


@dataclass(frozen=True)
class Const:
    value: float


@dataclass(frozen=True)
class Param:
    name: str


@dataclass(frozen=True)
class _Input:
    pass


X = _Input()


@dataclass(frozen=True)
class Op:
    op_type: str
    operands: tuple = ()
    attrs: tuple = ()          # ((name, value), …): attribute values to match within REL_TOL

    def __init__(self, op_type: str, *operands, attrs: dict | None = None):
        object.__setattr__(self, "op_type", op_type)
        object.__setattr__(self, "operands", operands)
        object.__setattr__(self, "attrs", tuple(sorted((attrs or {}).items())))


@dataclass(frozen=True)
class Pattern:
    """``root`` computes ``fused`` (an op of the private domain) with attributes
    ``attrs(params)`` from the matched ``Param`` values; ``spelling`` is for people."""

    name: str
    root: Op
    fused: str
    spelling: str
    attrs: Callable[[dict], dict] = field(default=lambda params: {})


@dataclass
class Match:
    pattern: Pattern
    x: str                                   # the activation's input tensor
    output: str                              # the root's output tensor
    nodes: list[int]                         # indices of the matched nodes in the graph
    params: dict[str, float]
    constants: dict[str, np.ndarray]         # constant tensors the matched nodes read


class GraphIndex:
    """Producers, consumers and constant values of one GraphProto."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.producer = {o: k for k, n in enumerate(graph.node) for o in n.output if o}
        self.consumers: dict[str, set[int]] = {}
        for k, n in enumerate(graph.node):
            for t in n.input:
                self.consumers.setdefault(t, set()).add(k)
        self.outputs = {o.name for o in graph.output}
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant" and not n.domain and n.attribute and n.attribute[0].name == "value":
                self.constants[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)


def _close(got: np.ndarray, want: float) -> bool:
    got = np.asarray(got, dtype=np.float64)
    return got.size == 1 and bool(np.all(np.abs(got - want) <= REL_TOL * max(abs(want), 1e-30)))


def _attr_ok(node: onnx.NodeProto, attrs: tuple) -> bool:
    """Each attribute in ``attrs`` (the schema's default when the node omits it) is close to
    the wanted value."""
    have = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs:
        schema = onnx.defs.get_schema(node.op_type, domain="")
        for name, a in schema.attributes.items():
            if name not in have and a.default_value is not None and a.default_value.name:
                have[name] = onnx.helper.get_attribute_value(a.default_value)
    for name, want in attrs:
        got = have.get(name)
        if got is None or not _close(np.asarray(got), want):
            return False
    return True


class _State:
    def __init__(self):
        self.x: str | None = None
        self.nodes: list[int] = []
        self.params: dict[str, float] = {}
        self.constants: dict[str, np.ndarray] = {}

    def copy(self) -> "_State":
        s = _State()
        s.x, s.nodes, s.params, s.constants = self.x, list(self.nodes), dict(self.params), dict(self.constants)
        return s


def _match(index: GraphIndex, pat: Any, tensor: str, st: _State) -> _State | None:
    if pat is X:
        if tensor in index.constants or (st.x is not None and st.x != tensor):
            return None
        st.x = tensor
        return st
    if isinstance(pat, (Const, Param)):
        value = index.constants.get(tensor)
        if value is None or value.dtype.kind not in ("f" if isinstance(pat, Param) else "fiu") or value.size != 1:
            return None
        if isinstance(pat, Const) and not _close(value, pat.value):
            return None
        if isinstance(pat, Param):
            v = float(np.asarray(value).reshape(()))
            if st.params.setdefault(pat.name, v) != v:
                return None
        st.constants[tensor] = value
        return st
    k = index.producer.get(tensor)
    if k is None or k in st.nodes:
        return None
    node = index.graph.node[k]
    if node.op_type != pat.op_type or node.domain not in ("", "ai.onnx") or len(node.output) != 1 \
            or len(node.input) != len(pat.operands) or not _attr_ok(node, pat.attrs):
        return None
    orders = [pat.operands]
    if pat.op_type in COMMUTATIVE and len(pat.operands) == 2:
        orders.append(pat.operands[::-1])
    for operands in orders:
        trial = st.copy()
        trial.nodes.append(k)
        for sub, t in zip(operands, node.input):
            trial = _match(index, sub, t, trial) if trial is not None else None
        if trial is not None:
            return trial
    return None


def match_at(index: GraphIndex, pattern: Pattern, root: int) -> Match | None:
    """The match of ``pattern`` whose root is node ``root``, if any and if its internal
    tensors do not fan out of it."""
    out = index.graph.node[root].output
    if len(out) != 1 or not out[0]:
        return None
    st = _match(index, pattern.root, out[0], _State())
    if st is None or st.x is None:
        return None
    inside = set(st.nodes)
    for k in inside - {root}:
        for t in index.graph.node[k].output:
            if t in index.outputs or not index.consumers.get(t, set()) <= inside:
                return None
    return Match(pattern, st.x, out[0], sorted(inside), st.params, st.constants)
