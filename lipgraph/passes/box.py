"""The box pass (design §9): a value range for every tensor on the analysed path when the input
lies in a box, by interval arithmetic through each node's rule (``Rule.interval``).

The analysed input starts as the box; a constant is the point range (c, c); a node whose inputs
are all points is evaluated (``forward``) at them. A node without a rule, a rule that refuses the
node (``check``) and neither is ``monotone`` nor has an interval hook of its own (the defaults
trust the kind's contract, which a refused node may break), or a hook that fails gives the whole line
(±inf) for its outputs — never a guess. Every float range is widened outward
(:func:`lipgraph.certify.intervals.widen`). Ranges of the wrong shape are a rule bug and give the
whole line with a ``box-range`` note.

Tighter mode (always on, cheap): where the graph starts with a chain affine → activation →
affine → activation …, the pre-activation ranges from the second activation on are recomputed by
backward linear bounds (CROWN, ``certify.linear_bounds``) and intersected with the interval
ones, and the pass runs again with them (every later range benefits).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from lipgraph.certify.dense import materialise
from lipgraph.certify.intervals import as_float, unknown, widen
from lipgraph.certify.linear_bounds import crown_preactivations
from lipgraph.context import Context, PassResult
from lipgraph.diagnostics import Diagnostic
from lipgraph.ir.graph import Graph
from lipgraph.registry import Kind, has_own


def value_ranges(graph: Graph, infos: dict, box: tuple[np.ndarray, np.ndarray],
                 tighter: dict | None = None) -> tuple[dict, list[Diagnostic]]:
    """{tensor: (lo, hi)} for the analysed input and every output of the analysed nodes, and notes;
    ``tighter``: {tensor: (lo, hi)} known by other means, intersected in where met."""
    ranges = {graph.analysed: (torch.as_tensor(box[0], dtype=torch.float64),
                               torch.as_tensor(box[1], dtype=torch.float64))}
    notes: list[Diagnostic] = []
    tighter = tighter or {}
    for nid in graph.nodes_between():
        view, rule, info = graph.views[nid], graph.rules[nid], infos.get(nid)
        ins = input_ranges(graph, view, ranges)
        shapes = [graph.model.shapes.get(o) if o else None for o in view.outputs]
        for o, r in zip(view.outputs, node_output_ranges(rule, info, view, ins, shapes, notes)):
            if o:
                ranges[o] = r if o not in tighter else (torch.maximum(r[0], tighter[o][0]),
                                                        torch.minimum(r[1], tighter[o][1]))
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
    tighter = chain_preactivations(ctx, ranges)
    if tighter:
        ranges, notes = value_ranges(ctx.graph, ctx.infos, ctx.box, tighter)
    return PassResult([], {"ranges": ranges, "box_seconds": time.perf_counter() - t0}, notes)


def input_chain(graph: Graph, infos: dict) -> list[tuple[list[str], str]]:
    """The chain the graph starts with: [(affine nodes, the activation node after them)], each
    segment of linear-kind nodes (AFFINE, STRUCTURAL, COMBINE with constants; one computed input,
    the previous tensor, which nothing else reads) followed by an elementwise ACTIVATION; it stops
    at the first node that does not fit."""
    nodes, t, seg, chain = set(graph.nodes_between()), graph.analysed, [], []
    while True:
        users = [c for c in graph.consumers.get(t, []) if c in nodes]
        if len(users) != 1 or t == graph.output:
            return chain
        nid = users[0]
        view, rule, info = graph.views[nid], graph.rules[nid], infos.get(nid)
        computed = [view.inputs[i] for i, d in enumerate(view.dynamic) if d]
        if rule is None or info is None or info.status != "ok" or computed != [t]:
            return chain
        if rule.kind.is_linear:
            seg.append(nid)
        elif rule.kind is Kind.ACTIVATION and seg and view.output_shapes[0] == view.input_shapes[0]:
            chain.append((seg, nid))
            seg = []
        else:
            return chain
        t = view.outputs[0]


def chain_preactivations(ctx: Context, ranges: dict) -> dict:
    """Backward linear bounds (``certify.linear_bounds``) for the pre-activations of the chain the
    graph starts with (two activations at least: the first one's range is exact already), each
    affine segment materialised in float64 (up to ``NormOptions.materialize_limit`` entries)."""
    g = ctx.graph
    chain = input_chain(g, ctx.infos)
    layers, acts, t = [], [], g.analysed
    for seg, act in chain:
        out = g.views[seg[-1]].outputs[0]
        n_in, n_out = math.prod(g.shape(t)), math.prod(g.shape(out))
        if n_in * n_out > ctx.options.norms.materialize_limit or not torch.isfinite(ranges[out][0]).all() \
                or not torch.isfinite(ranges[out][1]).all():
            break
        fn = ctx.exact.function(seg, t, out)
        with torch.no_grad():
            offset = fn(torch.zeros(g.shape(t), dtype=torch.float64)).reshape(-1).numpy()
        layers.append((materialise(fn, g.shape(t)), offset))
        acts.append((act, out))
        t = g.views[act].outputs[0]
    if len(layers) < 2:
        return {}

    def relax(j, lo, hi):
        act, out = acts[j]
        shape = g.shape(out)
        x_range = (torch.as_tensor(lo).reshape(shape), torch.as_tensor(hi).reshape(shape))
        return tuple(np.asarray(v, np.float64).reshape(-1) for v in
                     g.rules[act].linear_relaxation(g.views[act], x_range))

    prior = [tuple(ranges[out][k].reshape(-1).numpy() for k in (0, 1)) for _, out in acts]
    found = crown_preactivations(layers, relax, ctx.box[0], ctx.box[1], prior)
    return {out: tuple(torch.as_tensor(v).reshape(g.shape(out)) for v in found[k]) for k, (_, out) in enumerate(acts)}


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
