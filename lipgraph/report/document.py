"""Reports: the text table and the JSON object of design §5."""
from __future__ import annotations

import json
import math

from lipgraph import __version__
from lipgraph.pipeline import Analysis
from lipgraph.labels import Label


def _num(value: float | None) -> float | None:
    """JSON numbers: plain floats, ∞ and NaN as null."""
    return float(value) if value is not None and math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == math.inf:
        return "∞"
    return f"{value:.6g}"


def node_rows(a: Analysis) -> list[dict]:
    """One row per analysed node in graph order; multi-node segments add a row of their own."""
    unit_of = {n: u for u in a.units for n in u.nodes}
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
                     "share": a.autolip.shares.get(unit.id) if len(unit.nodes) == 1 else None})
        if len(unit.nodes) > 1 and nid == unit.nodes[-1]:
            b = unit.bounds[0]
            rows.append({"name": f"segment {unit.id}", "op": f"{len(unit.nodes)} nodes", "kind": "segment",
                         "bound": b.value, "label": b.label.value, "method": b.method, "segment": unit.id,
                         "share": a.autolip.shares.get(unit.id)})
    return rows


def to_json(a: Analysis, path: str) -> dict:
    g = a.graph
    up = a.upper
    lower = a.lower
    diagnostics = list(a.diagnostics)
    if up is None:
        diagnostics.append(_not_certified(a))
    return {
        "lipgraph": __version__,
        "model": str(path),
        "norm": "l2",
        "input": g.analysed,
        "output": g.output,
        "upper_bound": {"value": up.value, "label": up.label.value, "method": up.name} if up else None,
        "lower_bound": ({"value": lower.value, "method": lower.method, "seed": lower.seed, "eps": lower.eps,
                         "domain": lower.domain} if lower else None),
        "gap": (up.value / lower.value) if (up and lower and lower.value > 0) else None,
        "methods": [{"name": m.name, "value": _num(m.value), "label": m.label.value,
                     "seconds": round(m.seconds, 4), **m.detail} for m in a.methods],
        "nodes": [{**r, "bound": _num(r["bound"])} for r in node_rows(a) if not r["kind"] == "segment"],
        "segments": [{"id": u.id, "nodes": list(u.nodes), "bound": _num(u.bounds[0].value),
                      "label": u.bounds[0].label.value, "method": u.bounds[0].method,
                      "estimate": _num(u.info.get("estimate")), "power_iterations": u.info.get("power_iterations")}
                     for u in a.units if u.role == "segment"],
        "chains": [c.to_json() for c in a.chains],
        "checks": {"onnxruntime": a.guard.to_json() if a.guard else None},
        "diagnostics": [d.to_json() for d in diagnostics],
    }


def _not_certified(a: Analysis):
    from lipgraph.diagnostics import Diagnostic
    return Diagnostic("", "not-certified", "no finite certified upper bound: see the diagnostics above for the nodes without one")


def to_text(a: Analysis, path: str, verbose: bool = False) -> str:
    g = a.graph
    shape_in = list(g.model.shapes.get(g.analysed, ()))
    shape_out = list(g.model.shapes.get(g.output, ()))
    lines = [f"lipgraph {__version__}  {path}  (opset {g.model.opset}, device {a.device})",
             f"input  {g.analysed} {shape_in}   output  {g.output} {shape_out}   norm l2", ""]
    header = ("node", "op", "kind", "bound", "label", "method", "share")
    rows = [(r["name"], r["op"], r["kind"], _fmt(r["bound"]), r["label"] or "—", r["method"],
             f"{100 * r['share']:.1f}%" if r["share"] is not None else "")
            for r in node_rows(a)]
    up = a.upper
    rows.append(("Total", "", "", _fmt(a.autolip.value), a.autolip.label.value, "autolip", "100%"
                 if math.isfinite(a.autolip.value) else ""))
    widths = [min(max(len(str(x[i])) for x in [header, *rows]), 40) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}.{w}}}" for w in widths)
    lines.append(fmt.format(*header))
    lines.append(fmt.format(*("-" * w for w in widths)))
    lines += [fmt.format(*map(str, r)) for r in rows[:-1]]
    lines.append(fmt.format(*("-" * w for w in widths)))
    lines.append(fmt.format(*map(str, rows[-1])))
    lines.append("")
    if verbose:
        for u in a.units:
            if u.role == "segment":
                lines.append(f"  segment {u.id}: certified {_fmt(u.bounds[0].value)} ({u.bounds[0].method}), "
                             f"power-iteration estimate {_fmt(u.info.get('estimate'))} "
                             f"({u.info.get('power_iterations')} iterations)"
                             + "".join(f"; {k} {_fmt(v)}" for k, v in u.info.get("candidates", {}).items()
                                       if len(u.info["candidates"]) > 1))
        for c in a.chains:
            factors = ", ".join(f"n={f.n} {f.method} {_fmt(f.certified)} (greedy {_fmt(f.greedy)}) {f.seconds:.2f}s"
                                for f in c.factors)
            lines.append(f"  {c.id}: autolip {_fmt(c.autolip)}, seqlip {_fmt(c.seqlip)} [{c.label.value}, "
                         f"{c.method}], seqlip-greedy {_fmt(c.greedy)} [estimate]; factors: {factors}")
        if a.lower is not None and a.lower.chains is not None:
            for c in a.lower.chains:
                lines.append(f"  {c['chain']}: realised lower {_fmt(c['value'])}, {c['label']} upper "
                             f"{_fmt(c['upper'])}, gap {_fmt(c['upper'] / c['value']) if c['value'] > 0 else '—'}")
            if not a.lower.chains:
                lines.append("  per-chain lower bounds: none (no chains, or the seqlip method did not run)")
        lines.append("")
    lines.append("methods: " + ", ".join(f"{m.name} {_fmt(m.value)} [{m.label.value}] {m.seconds:.2f}s"
                                         for m in a.methods))
    if a.lower is not None:
        lo = a.lower
        lines.append(f"lower bound {lo.value:.6g} on {lo.domain}: realised by a pair of inputs at distance "
                     f"{lo.eps:.3g} ({lo.method}, seed {lo.seed}, {lo.rounds} rounds, {lo.seconds:.2f}s)")
    diagnostics = list(a.diagnostics) + ([_not_certified(a)] if up is None else [])
    for d in diagnostics:
        where = f"{d.node}: " if d.node else ""
        lines.append(f"{d.severity}: {where}{d.message} [{d.code}]")
    lines.append(summary_line(a))
    return "\n".join(lines) + "\n"


def summary_line(a: Analysis) -> str:
    up, lower = a.upper, a.lower
    if up is None:
        head = "NOT CERTIFIED: no finite certified upper bound"
    else:
        head = f"certified upper {up.value:.6g} ({up.name}, {up.label.value})"
    if lower is not None:
        head += f", realised lower {lower.value:.6g}" + (f" on {lower.domain}" if lower.domain != "R^n" else "")
        if up is not None and lower.value > 0:
            head += f", gap {up.value / lower.value:.3g}"
    estimates = [m for m in a.methods if m.label is Label.ESTIMATE and math.isfinite(m.value)]
    if estimates:
        head += "; estimates (not bounds): " + ", ".join(f"{m.name} {m.value:.6g}" for m in estimates)
    return head


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=2, allow_nan=False)


def render_json(a: Analysis, path: str, verbose: bool = False) -> str:
    return dumps(to_json(a, path)) + "\n"


#: Report formats: name → render(analysis, model path, verbose) → text. ``--format`` offers these.
FORMATS = {"text": to_text, "json": render_json}
