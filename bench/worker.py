"""Analyse one network in a fresh process: ``python -m bench.worker JOB.json``.

The job says which file, which methods, which budgets; the worker writes its result as JSON
to ``job["out"]``. Running each network in its own process gives every network a clean
memory measurement, a wall-clock limit (the parent kills a worker that overruns), and keeps
one engine crash from taking the whole benchmark down.
"""
from __future__ import annotations

import json
import math
import sys
import time
import traceback

import numpy as np


def _finite(v):
    return float(v) if v is not None and math.isfinite(v) else None


def forward_seconds(path: str) -> float:
    """Median wall time of one onnxruntime forward pass (batch 1, random input)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    sess.run(None, x)
    times, total = [], 0.0
    while len(times) < 5 or (total < 0.5 and len(times) < 200):
        t = time.perf_counter()
        sess.run(None, x)
        times.append(time.perf_counter() - t)
        total += times[-1]
    return float(np.median(times))


def _method_rows(analysis) -> dict:
    rows = {}
    for m in analysis.methods:
        detail = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                  for k, v in (m.detail or {}).items()}
        rows[m.name] = {"value": _finite(m.value), "infinite": not math.isfinite(m.value),
                        "label": str(getattr(m.label, "value", m.label)), "seconds": m.seconds, "detail": detail}
    return rows


def _diagnostics(analysis) -> list:
    return [{"node": d.node, "code": d.code, "severity": d.severity, "message": d.message}
            for d in analysis.diagnostics]


def _search(analysis):
    """(f, f_smooth, shape) of the float64 model for ``search_lower``."""
    import torch
    from lipgraph.ir.execute import Executor
    ex = Executor(analysis.graph, torch.float64, "cpu")
    f = ex.model_function()
    cache = {}

    def f_smooth(x, t):
        if t not in cache:
            cache[t] = ex.model_function(smooth=t)
        return cache[t](x)

    return f, f_smooth, analysis.graph.shape(analysis.graph.analysed)


def lower_runs(analysis, budgets) -> dict:
    """``search_lower`` (default search, seed 0) on the float64 model once per budget; a round
    always finishes, so the seconds actually used can exceed the budget and are reported."""
    from lipgraph.lower.search import search_lower
    f, fs, shape = _search(analysis)
    runs = {}
    for b in budgets:
        res = search_lower(f, shape, f_smooth=fs, budget_s=b, seed=0)
        runs[f"{b:g}"] = {"value": res.value, "seconds": res.seconds, "rounds": res.rounds, "method": res.method,
                          "seed": res.seed}
        print(f"    search_lower budget {b:g} s: {res.value:.6g} after {res.seconds:.1f} s, {res.rounds} rounds",
              file=sys.stderr, flush=True)
    return runs


def conv_norms(path: str, device: str, out_path: str) -> dict:
    """Every Conv node: power-iteration σ (float32, the engine's default settings) and convnorm's
    certified norm steered by it; seconds of each. Loads the graph the way ``analyze()`` does,
    without analysing it, and rewrites ``out_path`` after every convolution (a partial table
    survives a time limit)."""
    import torch
    from lipgraph.passes.annotate import annotate
    from lipgraph.certify.conv import conv_certified_norm
    from lipgraph.ir.execute import Executor, resolve_device
    from lipgraph.ir.graph import build_graph
    from lipgraph.certify.dense import power_iteration
    from lipgraph.ir.load import load_model
    from lipgraph.options import NormOptions
    from lipgraph.rules.conv import geometry
    g = build_graph(load_model(path, {}), None, None)
    ex = Executor(g, torch.float32, resolve_device(device))
    annotate(g, g.nodes_between(), {})
    opts = NormOptions()
    rows = []
    result = {"rows": rows, "power_s": 0.0, "certified_s": 0.0, "complete": False}
    for nid in g.order:
        view = g.views[nid]
        if view.op_type != "Conv":
            continue
        w = view.const(1)
        x_shape = tuple(view.input_shapes[0])
        _, strides, dil, pads = geometry(view, w.shape, x_shape)
        fn = ex.function([nid], view.inputs[0], view.outputs[0])
        t = time.perf_counter()
        pw = power_iteration(fn, x_shape, dtype=ex.dtype, device=ex.device, tol=opts.power_tol,
                             max_iter=opts.power_iters, seed=0)
        t_pow = time.perf_counter() - t
        t = time.perf_counter()
        b = conv_certified_norm(w, x_shape[2:], strides=strides, dilations=dil, pads=pads,
                                groups=view.attr("group", 1), estimate=pw.sigma)
        t_cert = time.perf_counter() - t
        rows.append({"node": nid, "weight": list(w.shape), "input": list(x_shape), "power": pw.sigma,
                     "power_iters": pw.iterations, "power_s": t_pow, "certified": b.value, "route": b.method,
                     "certified_s": t_cert})
        result["power_s"] += t_pow
        result["certified_s"] += t_cert
        with open(out_path, "w") as fh:
            json.dump({"ok": True, "convs": result}, fh)
        print(f"    conv {nid}: power {pw.sigma:.5g} ({t_pow:.2f} s), certified {b.value:.5g} "
              f"[{b.method}] ({t_cert:.2f} s)", file=sys.stderr, flush=True)
    result["complete"] = True
    return result


def conv_segments(analysis) -> list:
    """Every affine segment of ``analyze()`` containing a convolution: its certified norm, route and
    power-iteration estimate (section (c)'s check that each certificate is within 0.1 % of it)."""
    rows = []
    for u in analysis.units or []:
        if u.role != "segment" or not any(analysis.graph.views[n].op_type == "Conv" for n in u.nodes):
            continue
        b = u.bounds[0]
        rows.append({"id": u.id, "certified": _finite(b.value), "label": str(b.label.value), "method": b.method,
                     "estimate": _finite(u.info.get("estimate")), "iterations": u.info.get("power_iterations")})
    return rows


def box_run(job: dict) -> dict:
    """The same methods on R^n and on the box [0, 1] (section (e)): seconds of each analysis and of
    the box pass, every method's value on both, the realised lower bound on the box."""
    from lipgraph import options as O
    from lipgraph import pipeline
    out = {"name": job["name"], "ok": False}
    for key, domain in (("global", None), ("box", O.Domain(0.0, 1.0, "--input-box 0,1"))):
        opts = O.Options(methods=tuple(job["methods"]), device=job["device"], seed=0, domain=domain)
        opts.lower.budget = job["lower_budget"]
        opts.seqlip.budget = job["seqlip_budget"]
        t = time.perf_counter()
        analysis = pipeline.analyze(job["path"], opts)
        out[key] = {"analysis_s": time.perf_counter() - t, "box_s": analysis.box_seconds,
                    "methods": _method_rows(analysis),
                    "lower": _finite(analysis.lower.value) if analysis.lower is not None else None}
        print(f"    [{job['name']}] {key}: {out[key]['analysis_s']:.2f} s", file=sys.stderr, flush=True)
    out["ok"] = True
    return out


def run(job: dict) -> dict:
    import torch
    from lipgraph import options as O
    from lipgraph import pipeline
    from lipgraph.passes import PASSES
    from .memory import peak_memory

    out = {"name": job["name"], "ok": False, "torch_threads": torch.get_num_threads()}
    out["forward_s"] = forward_seconds(job["path"])
    known = tuple(O.ALL_METHODS)
    wanted = tuple(m for m in job["methods"] if m in known)
    out["known_methods"] = list(known)
    out["wired_passes"] = [p.name for p in PASSES]
    opts = O.Options(methods=wanted, device=job["device"], seed=0)
    opts.lower.budget = job["lower_budget"]
    opts.seqlip.budget = job["seqlip_budget"]
    t = time.perf_counter()
    with peak_memory() as peak:
        def progress(s):
            peak.phase(s.split(":")[0])
            print(f"    [{job['name']}] {s}", file=sys.stderr, flush=True)
        analysis = pipeline.analyze(job["path"], opts, progress=progress)
    out["analysis_s"] = time.perf_counter() - t
    out["peak_mb"], out["peak_how"], out["peak_at"] = peak.mb, peak.how, peak.at
    out["device"] = analysis.device
    out["guard"] = analysis.guard.to_json() if analysis.guard else None
    out["methods"] = _method_rows(analysis)
    out["diagnostics"] = _diagnostics(analysis)
    low = analysis.lower
    if low is not None:
        out["lower_detail"] = {"value": low.value, "method": low.method, "seed": low.seed, "rounds": low.rounds}
    out["chains"] = len(analysis.chains or [])
    out["chain_detail"] = [c.to_json() for c in analysis.chains or []]
    out["conv_segments"] = conv_segments(analysis)
    budgets = list(job.get("trace_budgets") or [])
    fallback = "lower" not in out["methods"] and job.get("fallback_lower")
    if fallback and job["lower_budget"] not in budgets:
        budgets.append(job["lower_budget"])
    if budgets:
        runs = lower_runs(analysis, budgets)
        if job.get("trace_budgets"):
            out["trace"] = {k: v for k, v in runs.items() if float(k) in job["trace_budgets"]}
        if fallback:
            out["bench_lower"] = runs[f"{job['lower_budget']:g}"]
    out["ok"] = True
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as fh:
        job = json.load(fh)
    try:
        if job.get("kind") == "convs":
            result = {"ok": True, "convs": conv_norms(job["path"], job["device"], job["out"])}
        elif job.get("kind") == "box":
            result = box_run(job)
        else:
            result = run(job)
    except Exception as exc:  # noqa: BLE001 - reported in the table, with the traceback
        result = {"name": job["name"], "ok": False, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
        print(result["traceback"], file=sys.stderr, flush=True)
    with open(job["out"], "w") as fh:
        json.dump(result, fh, allow_nan=False, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
