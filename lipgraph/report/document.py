"""The report document: the JSON view model of design §5, built once from an ``Analysis``.
Every format renders this dict (``text``, ``json``) — there is no second source of truth."""
from __future__ import annotations

import json
import math

from lipgraph.version import __version__
from lipgraph.pipeline import Analysis


def _num(value: float | None) -> float | None:
    """JSON numbers: plain floats, ∞ and NaN as null."""
    return float(value) if value is not None and math.isfinite(value) else None


def node_rows(a: Analysis) -> list[dict]:
    """One row per analysed node in graph order; multi-node segments add a row of their own."""
    unit_of = {n: u for u in a.units or [] for n in u.nodes}
    shares = a.autolip.shares if a.autolip is not None else {}
    rows = []
    for nid, info in a.infos.items():
        unit = unit_of.get(nid)
        if unit is None:
            continue
        own = a.node_bounds.get(nid)
        method = own.method if own else ("in segment " + unit.id if unit.role == "segment" else "")
        if info.status == "unsupported":
            method = "no rule"
        elif info.status == "not-applicable":
            method = "not applicable"
        rows.append({"name": nid, "op": info.op, "kind": info.kind.value if info.kind else "unknown",
                     "bound": own.value if own else None, "label": own.label.value if own else None,
                     "method": method, "segment": unit.id if unit.role == "segment" else None,
                     "share": shares.get(unit.id) if len(unit.nodes) == 1 else None})
        if len(unit.nodes) > 1 and nid == unit.nodes[-1]:
            b = unit.bounds[0]
            rows.append({"name": f"segment {unit.id}", "op": f"{len(unit.nodes)} nodes", "kind": "segment",
                         "bound": b.value, "label": b.label.value, "method": b.method, "segment": unit.id,
                         "share": shares.get(unit.id)})
    return rows


def to_json(a: Analysis, path: str) -> dict:
    g = a.graph
    up = a.upper
    lower = a.lower
    diagnostics = list(a.diagnostics)
    if up is None:
        diagnostics.append(_not_certified(a))
    rows = node_rows(a)
    return {
        "lipgraph": __version__,
        "model": str(path),
        "norm": "l2",
        "input": g.analysed,
        "output": g.output,
        "input_shape": list(g.model.shapes.get(g.analysed, ())),
        "output_shape": list(g.model.shapes.get(g.output, ())),
        "opset": g.model.opset,
        "device": a.device,
        "upper_bound": ({"value": up.value, "label": up.label.value, "method": up.name, "domain": up.domain}
                        if up else None),
        "lower_bound": ({"value": lower.value, "method": lower.method, "seed": lower.seed, "eps": lower.eps,
                         "domain": lower.domain, "rounds": lower.rounds, "seconds": round(lower.seconds, 4),
                         "chains": lower.chains} if lower else None),
        "gap": (up.value / lower.value) if (up and lower and lower.value > 0) else None,
        "domain": a.domain,
        "methods": [{"name": m.name, "value": _num(m.value), "label": m.label.value,
                     "seconds": round(m.seconds, 4), "domain": m.domain, **m.detail} for m in a.methods],
        "nodes": [{**r, "bound": _num(r["bound"])} for r in rows if not r["kind"] == "segment"],
        "table": [{**r, "bound": _num(r["bound"])} for r in rows],
        "autolip": ({"value": _num(a.autolip.value), "label": a.autolip.label.value} if a.autolip is not None
                    else {"value": None, "label": None}),
        "partial": a.partial,
        "unfinished": list(a.unfinished),
        "segments": [{"id": u.id, "nodes": list(u.nodes), "bound": _num(u.bounds[0].value),
                      "label": u.bounds[0].label.value, "method": u.bounds[0].method,
                      "estimate": _num(u.info.get("estimate")), "power_iterations": u.info.get("power_iterations"),
                      "candidates": {k: _num(v) for k, v in u.info.get("candidates", {}).items()}}
                     for u in a.units or [] if u.role == "segment"],
        "chains": [c.to_json() for c in a.chains],
        "checks": {"onnxruntime": a.guard.to_json() if a.guard else None},
        "diagnostics": [d.to_json() for d in diagnostics],
    }


def _not_certified(a: Analysis):
    from lipgraph.diagnostics import Diagnostic
    return Diagnostic("", "not-certified", "no finite certified upper bound: see the diagnostics above for the nodes without one")


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=2, allow_nan=False)
