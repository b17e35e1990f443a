"""Affine regions: the linear parts of the graph that are normed as one operator.

A tensor's *source* is the tensor it is computed from through linear nodes only (AFFINE,
STRUCTURAL, COMBINE with a usable rule): the source of a linear node's outputs is the common
source of its analysed inputs, and a tensor produced by any other node (or a graph input) is
its own source. A linear node whose analysed inputs have different sources joins two regions
and stays a node of its own.

The *region* of a source e is every linear node whose outputs have source e: a subgraph with
one analysed entry e, branches, joins, fan-out and Split/Concat of one tensor included. Each
of its *exits* (a tensor consumed outside the region, or the analysed output) is a function
of e alone, so it becomes one segment: entry e, exit x, and the region's nodes that x depends
on. Its norm ‖A_x‖ is taken as a whole, which is never worse and often far better than AutoLip
inside it: paths that cancel (x − x, a residual that undoes a branch) cancel in A_x.
Conv→BatchNorm, Gemm→Mul(const) and x + Conv(x) are the common small cases.
"""
from __future__ import annotations

from dataclasses import dataclass

from lipgraph.ir.graph import Graph


@dataclass(frozen=True)
class Segment:
    entry: str
    nodes: tuple[str, ...]      # in graph order
    exit: str

    @property
    def id(self) -> str:
        return self.nodes[-1] if len(self.nodes) == 1 else f"{self.nodes[0]}…{self.nodes[-1]}"


def find_segments(graph: Graph, eligible: set[str]) -> list[Segment]:
    """One segment per exit of every affine region made of ``eligible`` (linear, usable) nodes."""
    source: dict[str, str] = {}                  # tensor → its source, for tensors made by region nodes
    region: dict[str, list[str]] = {}            # source → its nodes, in graph order
    for nid in graph.order:
        if nid not in eligible:
            continue
        view = graph.views[nid]
        sources = {source.get(t, t) for t, d in zip(view.inputs, view.dynamic) if d}
        if len(sources) != 1:
            continue
        (src,) = sources
        region.setdefault(src, []).append(nid)
        source.update((o, src) for o in view.outputs if o)
    segments = []
    for src, nodes in region.items():
        members = set(nodes)
        for nid in nodes:
            for out in graph.views[nid].outputs:
                consumers = graph.consumers.get(out, [])
                if out and (out == graph.output or any(c not in members for c in consumers)):
                    segments.append(Segment(src, _needed(graph, nodes, out), out))
    position = {nid: k for k, nid in enumerate(graph.order)}
    return sorted(segments, key=lambda s: position[s.nodes[-1]])


def _needed(graph: Graph, nodes: list[str], exit_: str) -> tuple[str, ...]:
    """The nodes among ``nodes`` (a region in graph order) that ``exit_`` depends on."""
    wanted, keep = {exit_}, []
    for nid in reversed(nodes):
        view = graph.views[nid]
        if any(o in wanted for o in view.outputs if o):
            keep.append(nid)
            wanted.update(t for t, d in zip(view.inputs, view.dynamic) if d)
    return tuple(reversed(keep))
