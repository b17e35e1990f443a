"""Pattern objects and the matcher: an expression tree over ONNX ops, matched against the
subgraph that computes one tensor.

A pattern is ``Op(op_type, *operands, attrs=…)`` whose operands are patterns, ``X`` (the fused
op's input: every occurrence must be the same tensor), ``Const(value)`` (a constant scalar
within ``REL_TOL`` of ``value``), ``Param(name)`` (a constant scalar read as it is, e.g. Swish's
β), ``Weight(name)`` (a float constant of any shape, e.g. LayerNorm's γ, that becomes an input of
the fused op) or ``Reduce(op_type, operand, axes=name)`` (a ReduceMean/Max/Sum with keepdims = 1
whose axes, an attribute or a constant input, are bound to ``name`` as sorted non-negative
dims). A name bound twice must bind the same value both times. Ops listed in ``COMMUTATIVE``
match their two operands in either order.

Shared subexpressions: a pattern is a tree, the graph a DAG. A sub-pattern written twice (LayerNorm's
``x − mean``, softmax's ``Exp``) matches one node that feeds both places, or two nodes that
compute it twice; a node reached twice is matched again against the second occurrence's
sub-pattern with the bindings made so far, so both reachings compute the same expression of the
same tensors, and the node counts once. A match is valid only if every tensor it computes, except
the root's output, is read by no node outside the match and is not a graph output (fan-out).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

#: Relative tolerance on matched constants (float32 rounding of the ideal value is ≤ 6e-8).
REL_TOL = 1e-6
COMMUTATIVE = {"Mul", "Add", "Max"}


@dataclass(frozen=True)
class Const:
    value: float


@dataclass(frozen=True)
class Param:
    name: str


@dataclass(frozen=True)
class Weight:
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
class Reduce:
    op_type: str
    operand: Any
    axes: str


@dataclass(frozen=True)
class Pattern:
    """``root`` computes ``fused`` (an op of the private domain) with attributes
    ``attrs(params)`` from the matched ``Param`` and axes values, and inputs ``x`` then the
    tensors bound to the ``Weight`` names in ``inputs`` (an unmatched one is omitted, "");
    ``spelling`` is for people."""

    name: str
    root: Op
    fused: str
    spelling: str
    attrs: Callable[[dict], dict] = field(default=lambda params: {})
    inputs: tuple[str, ...] = ()

    @property
    def elementwise(self) -> bool:
        """No reduction inside: the fused op acts entry by entry."""
        return not _any_reduce(self.root)


def _any_reduce(pat: Any) -> bool:
    if isinstance(pat, Reduce):
        return True
    return isinstance(pat, Op) and any(_any_reduce(p) for p in pat.operands)


@dataclass
class Match:
    pattern: Pattern
    x: str                                   # the fused op's input tensor
    output: str                              # the root's output tensor
    nodes: list[int]                         # indices of the matched nodes in the graph
    params: dict[str, Any]                   # Param values (float) and Reduce axes (tuple of ints)
    constants: dict[str, np.ndarray]         # constant tensors the matched nodes read
    weights: dict[str, str]                  # Weight name → the constant tensor it bound

    @property
    def inputs(self) -> list[str]:
        """The fused node's inputs: x, then the pattern's weights ("" where absent, trailing dropped)."""
        names = [self.x, *(self.weights.get(w, "") for w in self.pattern.inputs)]
        while names[-1] == "":
            names.pop()
        return names


class GraphIndex:
    """Producers, consumers, constant values and (where known) ranks of one GraphProto's tensors."""

    def __init__(self, graph: onnx.GraphProto, shapes: dict[str, tuple[int, ...]],
                 initializers: dict[str, np.ndarray]):
        """``initializers``: the graph's initializer values as loaded (``LoadedModel.initializers``)."""
        self.graph = graph
        self.ranks = {t: len(s) for t, s in shapes.items()}
        self.producer = {o: k for k, n in enumerate(graph.node) for o in n.output if o}
        self.consumers: dict[str, set[int]] = {}
        for k, n in enumerate(graph.node):
            for t in n.input:
                self.consumers.setdefault(t, set()).add(k)
        self.outputs = {o.name for o in graph.output}
        self.constants = dict(initializers)
        for n in graph.node:
            if n.op_type == "Constant" and not n.domain and n.attribute and n.attribute[0].name == "value":
                self.constants[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)


def _close(got: np.ndarray, want: float) -> bool:
    got = np.asarray(got, dtype=np.float64)
    return got.size == 1 and bool(np.all(np.abs(got - want) <= REL_TOL * max(abs(want), 1e-30)))


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """The node's attributes, the schema's defaults filled in."""
    have = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    schema = onnx.defs.get_schema(node.op_type, domain="")
    for name, a in schema.attributes.items():
        if name not in have and a.default_value is not None and a.default_value.name:
            have[name] = onnx.helper.get_attribute_value(a.default_value)
    return have


def _attr_ok(node: onnx.NodeProto, attrs: tuple) -> bool:
    """Each attribute in ``attrs`` (the schema's default when the node omits it) is close to
    the wanted value."""
    have = _attributes(node) if attrs else {}
    for name, want in attrs:
        got = have.get(name)
        if got is None or not _close(np.asarray(got), want):
            return False
    return True


class _State:
    def __init__(self):
        self.x: str | None = None
        self.nodes: list[int] = []
        self.params: dict[str, Any] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.weights: dict[str, str] = {}

    def copy(self) -> "_State":
        s = _State()
        s.x, s.nodes, s.params = self.x, list(self.nodes), dict(self.params)
        s.constants, s.weights = dict(self.constants), dict(self.weights)
        return s

    def bind(self, name: str, value: Any) -> bool:
        """Bind ``name`` to ``value``; False if it is already bound to another value."""
        return self.params.setdefault(name, value) == value


def _reduce_axes(index: GraphIndex, node: onnx.NodeProto, st: _State) -> tuple[int, ...] | None:
    """The sorted non-negative dims a Reduce* node with keepdims = 1 reduces; None when keepdims
    is 0, the axes are computed, the rank is unknown or the node is a no-op (empty axes with
    noop_with_empty_axes = 1)."""
    attrs = _attributes(node)
    rank = index.ranks.get(node.input[0])
    if attrs.get("keepdims", 1) != 1 or rank is None:
        return None
    axes = attrs.get("axes")
    if len(node.input) > 1 and node.input[1]:
        axes = index.constants.get(node.input[1])
        if axes is None:
            return None
        st.constants[node.input[1]] = axes
    axes = [int(a) for a in np.asarray(axes if axes is not None else [], dtype=np.int64).reshape(-1)]
    if not axes:
        return None if attrs.get("noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(sorted({a % rank for a in axes})) if all(-rank <= a < rank for a in axes) else None


def _match(index: GraphIndex, pat: Any, tensor: str, st: _State) -> _State | None:
    if pat is X:
        if tensor in index.constants or (st.x is not None and st.x != tensor):
            return None
        st.x = tensor
        return st
    if isinstance(pat, Weight):
        value = index.constants.get(tensor)
        if value is None or value.dtype.kind != "f" or st.weights.setdefault(pat.name, tensor) != tensor:
            return None
        st.constants[tensor] = value
        return st
    if isinstance(pat, (Const, Param)):
        value = index.constants.get(tensor)
        if value is None or value.dtype.kind not in ("f" if isinstance(pat, Param) else "fiu") or value.size != 1:
            return None
        if isinstance(pat, Const) and not _close(value, pat.value):
            return None
        if isinstance(pat, Param) and not st.bind(pat.name, float(np.asarray(value).reshape(()))):
            return None
        st.constants[tensor] = value
        return st
    k = index.producer.get(tensor)
    if k is None:
        return None
    node = index.graph.node[k]
    if node.op_type != pat.op_type or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    if k not in st.nodes:
        st.nodes.append(k)   # (st is the caller's copy: a failed match discards it)
    if isinstance(pat, Reduce):
        axes = _reduce_axes(index, node, st)
        return _match(index, pat.operand, node.input[0], st) if axes is not None and st.bind(pat.axes, axes) else None
    if len(node.input) != len(pat.operands) or not _attr_ok(node, pat.attrs):
        return None
    orders = [pat.operands]
    if pat.op_type in COMMUTATIVE and len(pat.operands) == 2:
        orders.append(pat.operands[::-1])
    for operands in orders:
        trial = st.copy()
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
    return Match(pattern, st.x, out[0], sorted(inside), st.params, st.constants, st.weights)
