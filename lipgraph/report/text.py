"""The text report, rendered from the report document (``document.to_json``) alone.

In the document ∞ is ``null`` (JSON has no infinity): a null bound that carries a label is ∞,
a null without one is "no bound of its own" (—).
"""
from __future__ import annotations

import math


def _fmt(value: float | None, infinite: bool = False) -> str:
    if value is None:
        return "∞" if infinite else "—"
    return f"{value:.6g}"


def render(doc: dict, verbose: bool = False) -> str:
    lines = [f"lipgraph {doc['lipgraph']}  {doc['model']}  (opset {doc['opset']}, device {doc['device']})",
             f"input  {doc['input']} {doc['input_shape']}   output  {doc['output']} {doc['output_shape']}   norm l2",
             ""]
    lines += _table(doc)
    if verbose:
        lines += _verbose(doc)
    lines.append("methods: " + ", ".join(f"{m['name']} {_fmt(m['value'], True)} [{m['label']}"
                                         + ("" if m["domain"] == "R^n" else f", on {m['domain']}")
                                         + f"] {m['seconds']:.2f}s" for m in doc["methods"]))
    if doc["unfinished"]:
        lines.append(f"unfinished (--time-limit): {', '.join(doc['unfinished'])}")
    lo = doc["lower_bound"]
    if lo is not None:
        lines.append(f"lower bound {lo['value']:.6g} on {lo['domain']}: realised by a pair of inputs at distance "
                     f"{lo['eps']:.3g} ({lo['method']}, seed {lo['seed']}, {lo['rounds']} rounds, {lo['seconds']:.2f}s)")
    for d in doc["diagnostics"]:
        where = f"{d['node']}: " if d["node"] else ""
        lines.append(f"{d['severity']}: {where}{d['message']} [{d['code']}]")
    lines.append(summary(doc))
    return "\n".join(lines) + "\n"


def _table(doc: dict) -> list[str]:
    header = ("node", "op", "kind", "bound", "label", "method", "share")
    rows = [(r["name"], r["op"], r["kind"], _fmt(r["bound"], r["label"] is not None), r["label"] or "—",
             r["method"], f"{100 * r['share']:.1f}%" if r["share"] is not None else "")
            for r in doc["table"]]
    total = doc["autolip"]
    rows.append(("Total", "", "", _fmt(total["value"], total["label"] is not None), total["label"] or "unfinished",
                 "autolip",
                 "100%" if total["value"] is not None else ""))
    widths = [min(max(len(str(x[i])) for x in [header, *rows]), 40) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}.{w}}}" for w in widths)
    rule = fmt.format(*("-" * w for w in widths))
    return [fmt.format(*header), rule, *(fmt.format(*map(str, r)) for r in rows[:-1]), rule,
            fmt.format(*map(str, rows[-1])), ""]


def _verbose(doc: dict) -> list[str]:
    lines = []
    for s in doc["segments"]:
        others = s["candidates"] if len(s["candidates"]) > 1 else {}
        lines.append(f"  segment {s['id']}: certified {_fmt(s['bound'], True)} ({s['method']}), "
                     f"power-iteration estimate {_fmt(s['estimate'])} ({s['power_iterations']} iterations)"
                     + "".join(f"; {k} {_fmt(v, True)}" for k, v in others.items()))
    for c in doc["chains"]:
        factors = ", ".join(f"n={f['n']} {f['method']} {_fmt(f['certified'], True)} (greedy {_fmt(f['greedy'])}) "
                            f"{f['seconds']:.2f}s" for f in c["factors"])
        lines.append(f"  {c['id']}: autolip {_fmt(c['autolip'], True)}, seqlip {_fmt(c['seqlip'], True)} "
                     f"[{c['label']}, {c['method']}], seqlip-greedy {_fmt(c['seqlip_greedy'])} [estimate]; "
                     f"factors: {factors}")
    lo = doc["lower_bound"]
    if lo is not None and lo["chains"] is not None:
        for c in lo["chains"]:
            gap = _fmt(c["upper"] / c["value"]) if c["value"] > 0 and c["upper"] is not None else "—"
            lines.append(f"  {c['chain']}: realised lower {_fmt(c['value'])}, {c['label']} upper "
                         f"{_fmt(c['upper'], True)}, gap {gap}")
        if not lo["chains"]:
            lines.append("  per-chain lower bounds: none (no chains, or the seqlip method did not run)")
    return lines + [""]


def summary(doc: dict) -> str:
    """The last line: headline upper bound, realised lower bound, gap, estimates."""
    up, lower = doc["upper_bound"], doc["lower_bound"]
    if up is None:
        head = "NOT CERTIFIED: no finite certified upper bound"
        if doc["partial"]:
            head = "PARTIAL (time limit): no finite certified upper bound yet"
    else:
        head = f"certified upper {up['value']:.6g} ({up['method']}, {up['label']}, on {up['domain']})"
    if lower is not None:
        head += f", realised lower {lower['value']:.6g}" + (f" on {lower['domain']}" if lower["domain"] != "R^n" else "")
        if up is not None and lower["value"] > 0:
            head += f", gap {up['value'] / lower['value']:.3g}"
    estimates = [m for m in doc["methods"] if m["label"] == "estimate" and m["value"] is not None
                 and math.isfinite(m["value"])]
    if estimates:
        head += "; estimates (not bounds): " + ", ".join(f"{m['name']} {m['value']:.6g}" for m in estimates)
    if doc["partial"] and up is not None:
        head += f"; PARTIAL (time limit): {', '.join(doc['unfinished'])} unfinished"
    return head
