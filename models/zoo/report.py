#!/usr/bin/env python
"""Tables for models/zoo/README.md: each model's file, exporter, size and ONNX op types, and a
snapshot of what lipgraph's AutoLip says about it today.

    python models/zoo/report.py [--analyze] [NAME ...]     # run with the project's .venv

Without ``--analyze`` it rewrites only the generated parts of the README from the ``.onnx``
files and the stored snapshot ``autolip_snapshot.json``. With ``--analyze`` it first runs
``lipgraph analyze MODEL -q --methods autolip --format json`` on every model and output (dynamic
dims pinned with ``--input-shape`` to the shape of the reference input in ``<name>.npz``) and
stores, per model and output: exit code, certified upper bound, the op types without a rule,
the nodes whose rule is not applicable (no global bound) and any other error diagnostics.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

ZOO = Path(__file__).resolve().parent
ROOT = ZOO.parents[1]
README = ZOO / "README.md"
SNAPSHOT = ZOO / "autolip_snapshot.json"
LIPGRAPH = ROOT / ".venv" / "bin" / "lipgraph"

EXPORTERS = {  # file-name pattern -> exporter (all versions: the README's script table)
    "_dynamo": "torch 2.13.0 dynamo",
    "_ts": "torch 2.13.0 TorchScript",
    "keras_": "tf2onnx 1.17.0 (Keras 3.15.1)",
    "flax_": "jax2onnx 0.17.1 (Flax 0.12.8)",
    "paddle_": "paddle2onnx 2.1.0",
    "sklearn_": "skl2onnx 1.20.0",
}


def exporter(name: str) -> str:
    return next(v for k, v in EXPORTERS.items() if name.endswith(k) or name.startswith(k))


def models(names: list[str]) -> list[Path]:
    return [ZOO / f"{n}.onnx" for n in names] if names else sorted(ZOO.glob("*.onnx"))


def dims(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def analyze(path: Path) -> dict:
    model = onnx.load(path, load_external_data=False)
    ref = np.load(path.with_suffix(".npz"))
    pins = []
    for i in model.graph.input:
        if any(not isinstance(d, int) for d in dims(i)):
            pins += ["--input-shape", f"{i.name}:" + ",".join(map(str, ref[i.name].shape))]
    result = {}
    for out in model.graph.output:
        cmd = [str(LIPGRAPH), "analyze", str(path.relative_to(ROOT)), "-q", "--methods", "autolip",
               "--format", "json", "--output", out.name, *pins]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        seconds = time.perf_counter() - t0
        entry = {"command": " ".join(["lipgraph", *cmd[1:]]), "rc": proc.returncode}
        try:
            rep = json.loads(proc.stdout)
        except json.JSONDecodeError:
            entry["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        else:
            up = rep["upper_bound"]
            entry["upper_bound"] = up and {"value": up["value"], "label": up["label"]}
            entry["unsupported"] = dict(sorted(Counter(n["op"] for n in rep["nodes"] if n["method"] == "no rule").items()))
            ops = {n["name"]: n["op"] for n in rep["nodes"]}
            entry["no_global_bound"] = [{"node": d["node"], "op": ops.get(d["node"], "?"), "message": d["message"]}
                                        for d in rep["diagnostics"] if d["code"] == "no-global-bound"]
            entry["other_errors"] = [{"node": d["node"], "code": d["code"], "message": d["message"]}
                                     for d in rep["diagnostics"] if d["severity"] == "error"
                                     and d["code"] not in ("no-global-bound", "unsupported-op", "not-certified")]
        result[out.name] = entry
        print(f"{path.stem}:{out.name} rc={proc.returncode} {seconds:.1f}s", file=sys.stderr)
    return result


def op_table(paths: list[Path]) -> str:
    rows = ["| file | exporter | opset | input | outputs | size | ONNX op types (count) |",
            "|---|---|---|---|---|---|---|"]
    for p in paths:
        m = onnx.load(p)
        opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in m.opset_import)
        ins = "; ".join(f"`{i.name}` [{','.join(map(str, dims(i)))}]" for i in m.graph.input)
        outs = "; ".join(f"`{o.name}` [{','.join(map(str, dims(o)))}]" for o in m.graph.output)
        ops = Counter(n.op_type if not n.domain else f"{n.domain}::{n.op_type}" for n in m.graph.node)
        listed = ", ".join(f"{op} {k}" for op, k in sorted(ops.items()))
        rows.append(f"| `{p.name}` | {exporter(p.stem)} | {opsets} | {ins} | {outs} | "
                    f"{p.stat().st_size / 1000:.1f} kB | {listed} |")
    all_ops = sorted({n.op_type for p in paths for n in onnx.load(p).graph.node})
    return "\n".join(rows) + f"\n\nAll op types in the zoo ({len(all_ops)}): " + ", ".join(all_ops) + "."


def _fmt_bound(e: dict) -> str:
    if "error" in e:
        return f"load/analysis error (rc {e['rc']}): {e['error']}"
    up = e["upper_bound"]
    return f"{up['value']:.4g} ({up['label']})" if up else "∞ (not certified)"


def _reason(message: str) -> str:
    """The rule's reason without the op prefix and without tensor names."""
    reason = message.split(": ", 1)[-1]
    return "bilinear" if "bilinear" in reason else re.sub(r" \('[^']*'\)", "", reason)


def analysis_table(snapshot: dict) -> str:
    rows = ["| model:output | AutoLip upper bound | ops without a rule | nodes without a global bound |",
            "|---|---|---|---|"]
    for name, outs in sorted(snapshot.items()):
        for out, e in outs.items():
            uns = ", ".join(f"{op} ×{k}" for op, k in e.get("unsupported", {}).items()) or "—"
            groups: dict[str, list[str]] = {}
            for d in e.get("no_global_bound", []):
                groups.setdefault(f"{d['op']} ({_reason(d['message'])})", []).append(f"`{d['node']}`")
            ngb = "; ".join(f"{k} ×{len(v)}: {', '.join(v)}" for k, v in groups.items()) or "—"
            ngb += "".join(f"; {d['code']}: `{d['node']}`" for d in e.get("other_errors", []))
            rows.append(f"| `{name}:{out}` | {_fmt_bound(e)} | {uns} | {ngb} |")
    return "\n".join(rows)


def replace_block(text: str, tag: str, body: str) -> str:
    begin, end = f"<!-- {tag}:begin (generated by report.py) -->", f"<!-- {tag}:end -->"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--analyze", action="store_true", help="run lipgraph on the models and update the snapshot")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    snapshot = json.loads(SNAPSHOT.read_text()) if SNAPSHOT.exists() else {}
    if args.analyze:
        for p in models(args.names):
            snapshot[p.stem] = analyze(p)
            SNAPSHOT.write_text(json.dumps(dict(sorted(snapshot.items())), indent=1, ensure_ascii=False) + "\n")
    text = README.read_text()
    text = replace_block(text, "ops", op_table(models([])))
    text = replace_block(text, "autolip", analysis_table(snapshot))
    README.write_text(text)


if __name__ == "__main__":
    main()
