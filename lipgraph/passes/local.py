"""Local node bounds on the input box (design §9): each node unit of the AutoLip composition gets
its rule's bound over the value ranges of its inputs (``lipgraph.passes.box``) — an activation's
slope range per entry over its input range (``Rule.local_slopes``), a nonlinear node's partial
bounds (``Rule.local_bounds``: products of computed tensors, normalisations, softmax …). Affine
segments keep their norms (they do not depend on the domain). Each partial bound is the smaller of
the local and the global one, so the composition on the box is never above the global one. A rule
that refuses the node globally takes part only when it says the refusal is for want of a global
bound (``Rule.box_only``); a local hook that raises ``RuleNotApplicable`` (a range outside the op's domain) leaves the global bound (often
∞), with a ``box-bound`` diagnostic.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from lipgraph.diagnostics import Diagnostic
from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import Bound
from lipgraph.passes.autolip import Unit
from lipgraph.passes.box import input_ranges
from lipgraph.registry import Kind, has_own


@dataclass
class LocalUnits:
    units: list[Unit]
    node_bounds: dict
    slopes: dict = field(default_factory=dict)        # activation node → (lo, hi) float64 per entry
    diagnostics: list[Diagnostic] = field(default_factory=list)


def box_units(units: list[Unit], graph, infos, ranges: dict, node_bounds: dict) -> LocalUnits:
    out = LocalUnits([], dict(node_bounds))
    for u in units:
        local = _local(u, graph, infos, ranges, out) if u.role == "node" else None
        if local is None:
            out.units.append(u)
            continue
        bounds = tuple(min(b, local.get(i, b), key=lambda x: x.value) for i, b in zip(_dyn(graph, u), u.bounds))
        out.units.append(replace(u, bounds=bounds, estimates=tuple(b.value for b in bounds)))
        if bounds:
            out.node_bounds[u.id] = max(bounds, key=lambda b: b.value)
    return out


def _dyn(graph, u: Unit) -> list[int]:
    view = graph.views[u.nodes[0]]
    return [i for i, d in enumerate(view.dynamic) if d]


def _local(u: Unit, graph, infos, ranges, out: LocalUnits) -> dict[int, Bound] | None:
    nid = u.nodes[0]
    info, view = infos[nid], graph.views[nid]
    rule = info.rule
    if rule is None or info.status not in ("ok", "not-applicable"):
        return None
    ok = info.status == "ok" or rule.box_only
    ins = input_ranges(graph, view, ranges)
    try:
        if not ok:
            return None
        if info.kind is Kind.ACTIVATION:
            s = rule.local_slopes(view, ins[0])
            lo, hi = (np.broadcast_to(np.asarray(v, dtype=np.float64), graph.shape(view.inputs[0])) for v in s)
            out.slopes[nid] = (lo.copy(), hi.copy())       # of the input's shape
            value = float(max(np.max(np.abs(lo), initial=0.0), np.max(np.abs(hi), initial=0.0)))
            label = getattr(s, "label", None) or u.bounds[0].label
            return {i: Bound(value, label, "box-slopes") for i in _dyn(graph, u)}
        if info.kind in (Kind.NONLINEAR, Kind.COMBINE) or has_own(rule, "local_bounds"):
            return rule.local_bounds(view, ins)
    except Exception as exc:  # noqa: BLE001 - RuleNotApplicable (range outside the domain) or a hook bug
        why = exc.reason if isinstance(exc, RuleNotApplicable) else f"{type(exc).__name__}: {exc}"
        out.diagnostics.append(Diagnostic(nid, "box-bound", f"{info.op}: no bound on the box: {why}"))
    return None
