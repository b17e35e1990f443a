"""Affine-segment detection.

A segment is a set of linear nodes (AFFINE, STRUCTURAL, COMBINE) with one entry tensor
and one exit tensor, every dynamic input of its nodes coming from the entry or from inside,
and every tensor produced inside consumed only inside. Conv→BatchNorm, Gemm→Mul(const)
and x + Conv(x) are segments; their norm is taken as a whole, which is never worse and
often far better than the product of the parts.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..graph import Graph


@dataclass(frozen=True)
class Segment:
    entry: str
    nodes: tuple[str, ...]      # in graph order
    exit: str

    @property
    def id(self) -> str:
        return self.nodes[-1] if len(self.nodes) == 1 else f"{self.nodes[0]}…{self.nodes[-1]}"


def find_segments(graph: Graph, eligible: set[str]) -> list[Segment]:
    """Maximal segments made of ``eligible`` nodes (linear, usable rule, one output)."""
    position = {nid: k for k, nid in enumerate(graph.order)}
    open_: dict[str, Segment] = {}       # exit tensor → segment that may still grow
    absorbed: set[str] = set()
    for nid in graph.order:
        if nid not in eligible:
            continue
        view = graph.views[nid]
        inputs = list(dict.fromkeys(t for t, d in zip(view.inputs, view.dynamic) if d))
        best = _best_merge(graph, nid, inputs, open_, absorbed, position)
        out = view.outputs[0]
        if best is not None:
            segment, parts = best
            absorbed.update(p.exit for p in parts)
            open_[out] = segment
        elif len(inputs) == 1:
            open_[out] = Segment(inputs[0], (nid,), out)
    return [s for exit_, s in open_.items() if exit_ not in absorbed]


def _best_merge(graph, nid, inputs, open_, absorbed, position):
    """The largest segment ending at ``nid`` whose entry is common to all its inputs."""
    def growable(t):
        return t in open_ and t not in absorbed

    options = [{t} | ({open_[t].entry} if growable(t) else set()) for t in inputs]
    best = None
    for entry in set.intersection(*options) if options else set():
        parts = [open_[t] for t in inputs if t != entry]
        if any(p.entry != entry for p in parts):
            continue
        members = {n for p in parts for n in p.nodes}
        if not members and len(inputs) == 1:
            continue
        if not _closed(graph, members, nid):
            continue
        nodes = tuple(sorted(members | {nid}, key=position.__getitem__))
        if best is None or len(nodes) > len(best[0].nodes):
            best = (Segment(entry, nodes, graph.views[nid].outputs[0]), parts)
    return best


def _closed(graph: Graph, members: set[str], nid: str) -> bool:
    """Every tensor produced by ``members`` is consumed only by members or ``nid``, and is not
    the analysed output."""
    inside = members | {nid}
    for m in members:
        for t in graph.views[m].outputs:
            if t == graph.output or any(c not in inside for c in graph.consumers.get(t, [])):
                return False
    return True
