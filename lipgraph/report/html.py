"""The HTML report: one self-contained page rendered from the report document alone.

No script, no stylesheet or font from elsewhere: the charts are inline SVG drawn here, so the
page opens offline and cannot raise a console error. The document itself is embedded as JSON
(``<script type="application/json" id="lipgraph-report">``): what the page shows and what a
machine reads come from the one dict. The markup is well-formed XML (tests parse it as such).
"""
from __future__ import annotations

import json
import math
from html import escape

from lipgraph.report.text import summary

LABEL_COLOURS = {"exact": "#1b7837", "certified": "#2166ac", "assumed": "#b35806", "estimate": "#878787",
                 "lower": "#762a83"}
WIDTH = 720


def render(doc: dict) -> str:
    body = [_header(doc), _bracket(doc), _nodes(doc), _chains(doc), _diagnostics(doc)]
    payload = json.dumps(doc, allow_nan=False).replace("</", "<\\/")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
            f"<title>lipgraph: {escape(doc['model'])}</title><style>{_CSS}</style></head><body>"
            + "".join(body)
            + f"<script type=\"application/json\" id=\"lipgraph-report\">{payload}</script></body></html>\n")


def _fmt(value: float | None, infinite: bool = True) -> str:
    return "∞" if value is None and infinite else "—" if value is None else f"{value:.6g}"


def _header(doc: dict) -> str:
    return (f"<h1>lipgraph {escape(doc['lipgraph'])}</h1>"
            f"<p class=\"model\">{escape(doc['model'])} — opset {doc['opset']}, device {escape(doc['device'])}, "
            f"norm ℓ2</p><p>input <code>{escape(doc['input'])}</code> {doc['input_shape']} → output "
            f"<code>{escape(doc['output'])}</code> {doc['output_shape']}</p>"
            f"<p class=\"summary\" id=\"summary\">{escape(summary(doc))}</p>")


def _bracket(doc: dict) -> str:
    """Every method's value and the realised lower bound as points on one log axis."""
    points = [(m["name"], m["value"], m["label"]) for m in doc["methods"] if m["value"] is not None and m["value"] > 0]
    lower = doc["lower_bound"]
    if lower is not None and lower["value"] > 0:
        points.append(("lower bound", lower["value"], "lower"))
    rows = "".join(f"<tr><td>{escape(m['name'])}</td><td class=\"num\" data-method=\"{escape(m['name'])}\">"
                   f"{_fmt(m['value'])}</td><td>{_badge(m['label'])}</td><td>{escape(m.get('domain', 'R^n'))}</td>"
                   f"<td class=\"num\">{m['seconds']:.2f} s</td></tr>" for m in doc["methods"])
    table = f"<table><tr><th>method</th><th>value</th><th>label</th><th>domain</th><th>time</th></tr>{rows}</table>"
    if not points:
        return f"<h2>Bounds</h2>{table}"
    logs = [math.log10(v) for _, v, _ in points]
    lo, hi = math.floor(min(logs)), math.ceil(max(logs))
    hi = hi if hi > lo else lo + 1
    x = [40 + (WIDTH - 80) * (v - lo) / (hi - lo) for v in logs]
    height = 40 + 22 * len(points)
    ticks = "".join(f"<line x1=\"{_tick(k, lo, hi)}\" y1=\"20\" x2=\"{_tick(k, lo, hi)}\" y2=\"{height - 20}\" "
                    f"class=\"grid\"/><text x=\"{_tick(k, lo, hi)}\" y=\"{height - 5}\" class=\"axis\">1e{k}</text>"
                    for k in range(lo, hi + 1))
    marks = "".join(f"<circle cx=\"{xi:.1f}\" cy=\"{30 + 22 * k}\" r=\"5\" fill=\"{LABEL_COLOURS[label]}\"/>"
                    f"<text x=\"{xi + 9:.1f}\" y=\"{34 + 22 * k}\" class=\"mark\">{escape(name)} {_fmt(value)}</text>"
                    for k, ((name, value, label), xi) in enumerate(zip(points, x)))
    svg = (f"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\" "
           f"aria-label=\"bounds on a log axis\">{ticks}{marks}</svg>")
    return f"<h2>Bounds</h2><p>lower ≤ Lipschitz constant ≤ upper, on a log axis</p>{svg}{table}"


def _tick(k: int, lo: int, hi: int) -> str:
    return f"{40 + (WIDTH - 80) * (k - lo) / (hi - lo):.1f}"


def _nodes(doc: dict) -> str:
    """Per node (and multi-node segment): its bound and its share of log(AutoLip bound) as a bar."""
    rows = []
    for r in doc["table"]:
        share = r["share"]
        bar = (f"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"200\" height=\"12\"><rect width=\""
               f"{200 * min(max(share, 0.0), 1.0):.1f}\" height=\"12\" fill=\"#4393c3\"/></svg> {100 * share:.1f}%"
               if share is not None else "")
        rows.append(f"<tr><td>{escape(r['name'])}</td><td>{escape(r['op'])}</td><td>{escape(r['kind'])}</td>"
                    f"<td class=\"num\">{_fmt(r['bound'], r['label'] is not None)}</td>"
                    f"<td>{_badge(r['label']) if r['label'] else '—'}</td><td>{escape(r['method'])}</td><td>{bar}</td></tr>")
    total = doc["autolip"]
    rows.append(f"<tr class=\"total\"><td>Total</td><td></td><td></td><td class=\"num\">{_fmt(total['value'])}</td>"
                f"<td>{_badge(total['label'])}</td><td>autolip</td><td></td></tr>")
    return ("<h2>Nodes</h2><table><tr><th>node</th><th>op</th><th>kind</th><th>bound</th><th>label</th>"
            f"<th>method</th><th>share of log(bound)</th></tr>{''.join(rows)}</table>")


def _chains(doc: dict) -> str:
    if not doc["chains"]:
        return ""
    items = []
    for c in doc["chains"]:
        factors = "".join(f"<li>n = {f['n']}: {escape(f['method'])} {_fmt(f['certified'])} "
                          f"(greedy {_fmt(f['greedy'], False)})</li>" for f in c["factors"])
        items.append(f"<li><b>{escape(c['id'])}</b>: autolip {_fmt(c['autolip'])}, seqlip {_fmt(c['seqlip'])} "
                     f"{_badge(c['label'])} ({escape(c['method'])}), seqlip-greedy {_fmt(c['seqlip_greedy'], False)} "
                     f"{_badge('estimate')}<ul>{factors}</ul></li>")
    return f"<h2>Chains</h2><ul>{''.join(items)}</ul>"


def _diagnostics(doc: dict) -> str:
    if not doc["diagnostics"]:
        return "<h2>Diagnostics</h2><p>none</p>"
    rows = "".join(f"<tr class=\"{escape(d['severity'])}\"><td>{escape(d['severity'])}</td><td>{escape(d['code'])}</td>"
                   f"<td>{escape(d['node'])}</td><td>{escape(d['message'])}</td></tr>" for d in doc["diagnostics"])
    return f"<h2>Diagnostics</h2><table><tr><th>severity</th><th>code</th><th>node</th><th>message</th></tr>{rows}</table>"


def _badge(label: str) -> str:
    return f"<span class=\"label\" style=\"background:{LABEL_COLOURS.get(label, '#878787')}\">{escape(label)}</span>"


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}"
        ".num{text-align:right;font-variant-numeric:tabular-nums}.label{color:#fff;border-radius:3px;padding:0 5px;"
        "font-size:85%}.grid{stroke:#ddd}.axis{font-size:11px;text-anchor:middle;fill:#555}.mark{font-size:12px}"
        ".error td{color:#b2182b}.warning td{color:#b35806}.total td{font-weight:bold}.summary{font-weight:bold}")
