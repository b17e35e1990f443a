"""The box pass (design §9): a value range for every tensor on the analysed path when the input
lies in a box, by interval arithmetic through each node's rule (``Rule.interval``).

The analysed input starts as the box; a constant is the point range (c, c); a node whose inputs
are all points is evaluated (``forward``) at them. A node without a rule, a rule that refuses the
node (``check``) and neither is ``monotone`` nor has an interval hook of its own (the defaults
trust the kind's contract, which a refused node may break), or a hook that fails gives the whole line
(±inf) for its outputs — never a guess. Every float range is widened outward
(:func:`lipgraph.certify.intervals.widen`). Ranges of the wrong shape are a rule bug and give the
whole line with a ``box-range`` note.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from lipgraph.certify.intervals import as_float, unknown, widen
from lipgraph.context import Context, PassResult
from lipgraph.diagnostics import Diagnostic
from lipgraph.ir.graph import Graph
from lipgraph.registry import has_own


def value_ranges(graph: Graph, infos: dict, box: tuple[np.ndarray, np.ndarray]) -> tuple[dict, list[Diagnostic]]:
    """{tensor: (lo, hi)} for the analysed input and every output of the analysed nodes, and notes."""
    ranges = {graph.analysed: (torch.as_tensor(box[0], dtype=torch.float64),
                               torch.as_tensor(box[1], dtype=torch.float64))}
    notes: list[Diagnostic] = []
    for nid in graph.nodes_between():
        view, rule, info = graph.views[nid], graph.rules[nid], infos.get(nid)
        ins = input_ranges(graph, view, ranges)
        shapes = [graph.model.shapes.get(o) if o else None for o in view.outputs]
        for o, r in zip(view.outputs, node_output_ranges(rule, info, view, ins, shapes, notes)):
            if o:
                ranges[o] = r
    return ranges, notes


def node_output_ranges(rule, info, view, ins, shapes, notes: list) -> list:
    """One node's widened output ranges (one per output, the whole line where unknown), from its
    input ranges ``ins``; ``info`` (annotate.NodeInfo or None) says whether its rule refused it."""
    outs = _node_ranges(rule, info, view, ins, view.name, notes)
    return [_checked(outs[k] if outs is not None and k < len(outs) else None, shape, view.name, notes)
            for k, shape in enumerate(shapes)]


def input_ranges(graph: Graph, view, ranges: dict) -> tuple:
    """The ranges of a node's inputs: from ``ranges`` (the whole line when missing), a constant as
    the point (c, c), None for an omitted input."""
    ins = []
    for i, t in enumerate(view.inputs):
        if not t:
            ins.append(None)
        elif view.dynamic[i]:
            ins.append(ranges.get(t) or unknown(graph.shape(t)))
        else:
            c = as_float(torch.as_tensor(np.array(graph.constants[t])))
            ins.append((c, c))
    return tuple(ins)


def run(ctx: Context, progress) -> PassResult:
    """The box pass: artefact ``ranges`` ({tensor: (lo, hi)}) when a domain is given, else nothing."""
    if ctx.box is None:
        return PassResult()
    progress("box: value ranges of every tensor")
    t0 = time.perf_counter()
    ranges, notes = value_ranges(ctx.graph, ctx.infos, ctx.box)
    return PassResult([], {"ranges": ranges, "box_seconds": time.perf_counter() - t0}, notes)


def _node_ranges(rule, info, view, ins, nid, notes):
    """The node's output ranges as a list (None: unknown)."""
    refused = info is not None and info.status not in ("ok", "assumed")
    if rule is None or (refused and not (rule.monotone or has_own(rule, "interval"))):
        return None
    try:
        if all(r is None or torch.equal(r[0], r[1]) for r in ins):
            y = rule.forward(view, *[None if r is None else r[0] for r in ins])
            out = tuple((v, v) for v in y) if isinstance(y, (tuple, list)) else (y, y)
        else:
            out = rule.interval(view, *ins)
    except Exception as exc:  # noqa: BLE001 - a rule's hook failing on a range: unknown, said once
        notes.append(Diagnostic(nid, "box-range", f"{view.op_type}: no value range ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); the whole line is used"))
        return None
    if out is None:
        return None
    return [out] if torch.is_tensor(out[0]) else list(out)


def _checked(pair, shape, nid, notes):
    """A widened float64 range of ``shape``, or the whole line."""
    if shape is None:
        return None if pair is None else widen(*pair)
    if pair is None or pair[0] is None:
        return unknown(shape)
    lo, hi = (torch.as_tensor(v) for v in pair)
    try:
        lo, hi = lo.broadcast_to(shape), hi.broadcast_to(shape)
    except RuntimeError:
        notes.append(Diagnostic(nid, "box-range", f"range of shape {list(lo.shape)} for a tensor of shape "
                                f"{list(shape)} (a rule bug); the whole line is used"))
        return unknown(shape)
    return widen(lo.detach(), hi.detach())
