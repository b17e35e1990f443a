"""Orchestration: build every network, analyse each in a worker process, add the extra
sections, check soundness, write ``bench/results.md`` and ``bench/results.json`` (on a GPU:
``bench/results-cuda.md`` and ``.json``)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import lipsdp as F
from . import networks as N
from . import onnxutil
from . import report

HERE = Path(__file__).resolve().parent
METHODS = ("autolip", "autolip-power", "seqlip", "seqlip-greedy", "lipsdp", "lower")
SEQLIP = ("seqlip", "seqlip-greedy")
BOUND_LABELS = ("exact", "certified", "assumed")
SECTIONS = ("a", "networks", "e", "f")


class Config:
    def __init__(self, quick: bool, device: str):
        self.quick = quick
        self.device = device
        self.lower_budget = 1.0 if quick else 5.0          # seconds of search inside analyze()
        self.seqlip_budget = 5.0 if quick else 15.0        # seconds of exact enumeration per analysis
        self.trace_budgets = (1.0, 3.0) if quick else (1.0, 5.0, 20.0)   # section (b) searches
        self.exact_ns = (20,) if quick else (20, 24)       # section (a)
        self.exact_timeout = 60.0 if quick else 90.0
        self.bnb_cases = ("gauss32", "mlp784-50-10") + (() if quick else ("gauss64",))  # (a'), B&B
        self.bnb_seconds = 60.0                            # its safety net (anytime bound after)
        self.conv_timeout = 150.0
        self.net_timeout_scale = 0.4 if quick else 1.0
        self.box_timeout = 120.0 if quick else 300.0         # section (e), per network (two analyses)
        self.sdp_limit = F.SDP_LIMIT[quick]                  # section (f): largest SDP matrix for Clarabel
        self.route_limit = 120.0 if quick else 600.0         # section (f): seconds per route and case
        self.lipsdp_timeout = 900.0 if quick else 7200.0     # section (f): its worker's safety net


def log(msg: str) -> None:
    print(msg, flush=True)


def _worker(module: str, args: list[str], timeout: float) -> tuple[bool, float]:
    """Run ``python -m module args`` with a wall-clock limit; (finished, seconds)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=HERE.parent, start_new_session=True)
    try:
        proc.wait(timeout=timeout)
        return True, time.perf_counter() - t
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)   # the worker's own process group (start_new_session), nothing else
        proc.wait()
        return False, time.perf_counter() - t


def analyse(net: N.Network, path: Path, cfg: Config, tmp: Path) -> dict:
    """One worker with every method; if it overruns, one more without SeqLip."""
    timeout = net.timeout * cfg.net_timeout_scale
    job = {"name": net.name, "path": str(path), "methods": list(METHODS), "device": cfg.device,
           "lower_budget": cfg.lower_budget, "seqlip_budget": cfg.seqlip_budget,
           "trace_budgets": list(cfg.trace_budgets) if net.trace else [],
           "fallback_lower": net.small_input,
           "out": str(tmp / f"{net.name}.json")}
    for attempt in range(2):
        jf = tmp / f"{net.name}.job{attempt}.json"
        jf.write_text(json.dumps(job))
        done, secs = _worker("bench.worker", [str(jf)], timeout)
        if done and Path(job["out"]).exists():
            res = json.loads(Path(job["out"]).read_text())
            res["wall_s"] = secs
            if attempt:
                res["skipped"] = {m: f"analyze() with SeqLip overran the {timeout:.0f} s limit" for m in SEQLIP}
            return res
        if not done and attempt == 0 and net.small_input:
            log(f"  ! {net.name}: over {timeout:.0f} s with every method; again without SeqLip")
            job["methods"] = [m for m in METHODS if m not in SEQLIP]
            continue
        break
    return {"name": net.name, "ok": False,
            "error": f"worker {'overran ' + format(timeout, '.0f') + ' s' if not done else 'wrote no result'}",
            "wall_s": secs}


def conv_section(net: N.Network, path: Path, cfg: Config, tmp: Path) -> dict | None:
    """Section (c) in its own worker; a partial table is kept when it overruns."""
    out = tmp / f"{net.name}.convs.json"
    jf = tmp / f"{net.name}.convjob.json"
    jf.write_text(json.dumps({"kind": "convs", "name": net.name, "path": str(path), "device": cfg.device,
                              "out": str(out)}))
    log(f"  [c] certified norm and power iteration of every convolution (limit {cfg.conv_timeout:.0f} s)")
    done, secs = _worker("bench.worker", [str(jf)], cfg.conv_timeout)
    if not out.exists():
        return {"rows": [], "power_s": 0.0, "certified_s": 0.0, "complete": False,
                "error": f"no result ({'over ' + format(cfg.conv_timeout, '.0f') + ' s' if not done else 'failed'})"}
    res = json.loads(out.read_text()).get("convs")
    if not done:
        res["error"] = f"stopped at the {cfg.conv_timeout:.0f} s limit after {len(res['rows'])} convolutions"
    return res


def exact_section(cfg: Config, tmp: Path) -> list[dict]:
    rows = []
    for n in cfg.exact_ns:
        out = tmp / f"exact{n}.json"
        log(f"[a] exact SeqLip factor, n = {n} (limit {cfg.exact_timeout:.0f} s)")
        done, secs = _worker("bench.exact", [str(n), "0", str(out)], cfg.exact_timeout)
        if done and out.exists():
            row = json.loads(out.read_text())
            log(f"    {row['seconds']:.2f} s (value {row['value']:.6g})")
        else:
            row = {"n": n, "seconds": None, "error": f"over {cfg.exact_timeout:.0f} s" if not done else "no result"}
            log(f"    {row['error']}")
        rows.append(row)
    return rows


def bnb_section(cfg: Config, tmp: Path) -> list[dict]:
    rows = []
    for case in cfg.bnb_cases:
        out = tmp / f"bnb-{case}.json"
        log(f"[a'] exact SeqLip factor by branch and bound, {case} (stops at {cfg.bnb_seconds:.0f} s)")
        done, secs = _worker("bench.bnb", [case, "0", str(cfg.bnb_seconds), str(out)], cfg.bnb_seconds + 60)
        if done and out.exists():
            row = json.loads(out.read_text())
            log(f"    {row['seconds']:.2f} s, {row['nodes']} nodes, {'exact' if row['done'] else 'stopped'}: "
                f"value {row['value']:.9g} (certified), best vertex {row['lower']:.9g}, gap {row['gap']:.2e}")
        else:
            row = {"case": case, "seconds": None, "error": "worker overran" if not done else "no result"}
            log(f"    {row['error']}")
        rows.append(row)
    return rows


ZOO = HERE.parent / "models" / "zoo"
#: Zoo models of the quick run's box section (an MLP, squeeze-and-excitation, attention, an LSTM).
QUICK_ZOO = ("sklearn_mlp_digits.onnx", "mbconv_ts.onnx", "vit_block_ts.onnx", "lstm_ts.onnx")
BOX_METHODS = ("autolip", "seqlip", "lower")


def box_section(cfg: Config, targets: list[tuple[str, Path]], tmp: Path) -> list[dict]:
    """Section (e): each network and zoo model analysed on R^n and on [0, 1] in one worker."""
    rows = []
    for name, path in targets:
        stem = name.replace("/", "-")
        out, jf = tmp / f"box-{stem}.json", tmp / f"box-{stem}.job.json"
        jf.write_text(json.dumps({"kind": "box", "name": name, "path": str(path), "device": cfg.device,
                                  "methods": list(BOX_METHODS), "lower_budget": cfg.lower_budget,
                                  "seqlip_budget": cfg.seqlip_budget, "out": str(out)}))
        log(f"[e] {name}: {', '.join(BOX_METHODS)} on R^n and on [0, 1]")
        done, secs = _worker("bench.worker", [str(jf)], cfg.box_timeout)
        row = json.loads(out.read_text()) if done and out.exists() else {
            "name": name, "ok": False, "error": f"over {cfg.box_timeout:.0f} s" if not done else "no result"}
        row["wall_s"] = secs
        log("    " + report.box_line(row))
        rows.append(row)
    return rows


def box_targets(cfg: Config, nets: list, built: dict, only: list[str] | None = None) -> list[tuple[str, Path]]:
    """The bench networks with small inputs, then the zoo (the quick subset in a quick run; with
    ``--only``, the zoo models named there as ``zoo/<stem>``)."""
    zoo = sorted(ZOO.glob("*.onnx"))
    if only:
        zoo = [p for p in zoo if f"zoo/{p.stem}" in only]
    elif cfg.quick:
        zoo = [p for p in zoo if p.name in QUICK_ZOO]
    return [(n.name, built[n.name]) for n in nets if n.small_input and n.name in built] + \
        [(f"zoo/{p.stem}", p) for p in zoo]


def lipsdp_section(cfg: Config, cases: list, built: dict, tmp: Path) -> list[dict]:
    """Section (f) in one worker (``bench.lipsdp``): each case's ONNX model is the main run's when
    it was built, else built here; rows the worker did not reach say so."""
    if not cases:
        return []
    jobs = []
    for case in cases:
        path = built.get(case.source) if isinstance(case.source, str) else None
        try:
            if path is None and isinstance(case.source, str):
                path = N.build(next(n for n in N.NETWORKS if n.name == case.source), tmp)
            elif path is None:
                path = onnxutil.mlp(tmp / f"f-{case.name}.onnx", case.source(), name=case.name.replace("-", "_"))
        except Exception as exc:  # noqa: BLE001 - a builder failure is a row, not a crash
            log(f"[f] {case.name}: build failed: {exc!r}")
            continue
        jobs.append({"name": case.name, "describe": case.describe, "path": str(path), "iters": list(case.iters),
                     "goal": case.goal, "others": case.others, "series": case.series,
                     "full_only": list(case.full_only)})
    out, jf = tmp / "lipsdp.json", tmp / "lipsdp.job.json"
    jf.write_text(json.dumps({"cases": jobs, "out": str(out), "device": cfg.device, "cvxpy": F.cvxpy_installed(),
                              "quick": cfg.quick, "sdp_limit": cfg.sdp_limit, "route_limit": cfg.route_limit,
                              "analysis_limit": cfg.route_limit, "lower_budget": cfg.lower_budget,
                              "seqlip_budget": cfg.seqlip_budget}))
    log(f"[f] LipSDP routes on {len(jobs)} networks (cvxpy {'installed' if F.cvxpy_installed() else 'not installed'}; "
        f"limit {cfg.lipsdp_timeout:.0f} s)")
    done, secs = _worker("bench.lipsdp", [str(jf)], cfg.lipsdp_timeout)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    seen = {r["name"] for r in rows}
    why = f"not reached: the section's worker {'overran ' + format(cfg.lipsdp_timeout, '.0f') + ' s' if not done else 'stopped'}"
    rows += [{"name": c.name, "ok": False, "describe": c.describe, "series": c.series, "error": why}
             for c in cases if c.name not in seen]
    return rows


def realised_lowers(r: dict) -> list[tuple[str, float]]:
    """Every lower bound realised on a network in one worker's result: (what, value)."""
    lows = []
    low = r.get("methods", {}).get("lower")
    if low and low.get("value") is not None:
        lows.append(("lower", low["value"]))
    for b, run in (r.get("trace") or {}).items():
        lows.append((f"search_lower {b} s", run["value"]))
    if r.get("bench_lower"):
        lows.append(("bench search_lower", r["bench_lower"]["value"]))
    return lows


def soundness(results: list[dict], lipsdp_rows: list[dict] = ()) -> list[str]:
    """Every certified/exact/assumed value must be ≥ every realised lower bound on its network: the
    methods of each network's analysis, and in section (f) every route and ECLipsE-Fast's value,
    against that section's lower bound and those realised on the same network in the main run."""
    bad = []
    lows_of = {r["name"]: realised_lowers(r) for r in results if r.get("ok")}
    checks = [(r, realised_lowers(r)) for r in results] + \
        [(r, realised_lowers(r) + lows_of.get(r["name"], [])) for r in lipsdp_rows]
    for r, lows in checks:
        if not r.get("ok"):
            continue
        values = dict(r.get("methods", {}))
        values.update({f"lipsdp {k}": m for k, m in r.get("routes", {}).items()})
        if r.get("eclipse_fast"):
            values["eclipse-fast"] = r["eclipse_fast"]
        for mname, m in values.items():
            if m.get("label") not in BOUND_LABELS or m.get("value") is None:
                continue
            for lname, lv in lows:
                if m["value"] < lv:
                    bad.append(f"{r['name']}: {mname} = {m['value']:.9g} ({m['label']}) < {lname} = {lv:.9g}")
    return bad


def box_soundness(rows: list[dict]) -> list[str]:
    """On the box: every bound ≥ the lower bound realised in the box, and ≤ the same method's global value."""
    bad = []
    for r in rows:
        if not r.get("ok"):
            continue
        low = r["box"]["lower"]
        for name, m in r["box"]["methods"].items():
            if m["label"] not in BOUND_LABELS or m["value"] is None:
                continue
            if low is not None and m["value"] < low:
                bad.append(f"{r['name']} on [0, 1]: {name} = {m['value']:.9g} < lower = {low:.9g}")
            g = r["global"]["methods"].get(name, {})
            if g.get("label") in BOUND_LABELS and g.get("value") is not None and m["value"] > g["value"] * (1 + 1e-9):
                bad.append(f"{r['name']}: {name} on [0, 1] = {m['value']:.9g} above its global value {g['value']:.9g}")
    return bad


def results_stem(device: str) -> str:
    """``results`` on the CPU; ``results-cuda`` (etc.) on an accelerator, so that a GPU run never
    overwrites the CPU results."""
    return "results" if device == "cpu" else f"results-{device}"


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a small subset with short budgets (a few minutes)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--only", nargs="*", help="network names, zoo models as zoo/<stem> (default: all, or the quick subset)")
    ap.add_argument("--out", default=str(HERE), help="folder for results.md / results.json (results-cuda.* on a GPU)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)} (networks: the bounds tables, (b) and (c))")
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))
    if not sections <= set(SECTIONS):
        ap.error(f"--sections: unknown {', '.join(sorted(sections - set(SECTIONS)))}")

    import torch
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = Config(args.quick, device)
    nets = N.select(args.quick, args.only) if "networks" in sections else []
    start = time.perf_counter()
    log(f"lipgraph bench: {len(nets)} networks, {'quick' if cfg.quick else 'full'}, device {device}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    results, built = [], {}
    with tempfile.TemporaryDirectory(prefix="lipgraph-bench-") as td:
        tmp = Path(td)
        exact = exact_section(cfg, tmp) if "a" in sections else []
        bnb = bnb_section(cfg, tmp) if "a" in sections else []
        for i, net in enumerate(nets, 1):
            log(f"[{i}/{len(nets)}] {net.name}: {net.describe}")
            t = time.perf_counter()
            try:
                path = N.build(net, tmp)
            except Exception as exc:  # noqa: BLE001 - a builder failure is a row, not a crash
                results.append({"name": net.name, "ok": False, "error": f"build failed: {exc!r}"})
                log(f"  ! build failed: {exc!r}")
                continue
            built[net.name] = path
            log(f"  built in {time.perf_counter() - t:.1f} s ({path.stat().st_size / 1e6:.2f} MB) {net.notes or ''}")
            convs = conv_section(net, path, cfg, tmp) if net.convs else None
            res = analyse(net, path, cfg, tmp)
            if convs is not None:
                res["convs"] = convs
            res.update(family=net.family, describe=net.describe, notes=net.notes, quick=net.quick)
            results.append(res)
            log("  " + report.one_line(res))
        boxes = box_section(cfg, box_targets(cfg, nets, built, args.only), tmp) if "e" in sections else []
        sdp = lipsdp_section(cfg, F.select(cfg.quick, args.only), built, tmp) if "f" in sections else []
    total = time.perf_counter() - start
    meta = {"quick": cfg.quick, "device": device, "total_s": total, "python": platform.python_version(),
            "torch": torch.__version__, "cpus": os.cpu_count(), "load_average_end": os.getloadavg()[0],
            "lower_budget_s": cfg.lower_budget, "seqlip_budget_s": cfg.seqlip_budget,
            "trace_budgets_s": list(cfg.trace_budgets), "date": time.strftime("%Y-%m-%d %H:%M"),
            "sections": [x for x in SECTIONS if x in sections], "cvxpy": F.cvxpy_installed(),
            "sdp_limit": cfg.sdp_limit, "route_limit_s": cfg.route_limit}
    bad = soundness(results, sdp)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bad += box_soundness(boxes)
    payload = {"meta": meta, "exact_factor": exact, "bnb_factor": bnb, "networks": results, "box": boxes,
               "lipsdp": sdp, "soundness_violations": bad}
    stem = results_stem(device)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=str, allow_nan=False))
    (out / f"{stem}.md").write_text(report.markdown(payload))
    log(f"wrote {out / (stem + '.md')} and {out / (stem + '.json')} in {total:.0f} s total")
    if bad:
        print("\nSOUNDNESS FAILURE: a certified upper bound is below a realised lower bound:", file=sys.stderr)
        for b in bad:
            print("  " + b, file=sys.stderr)
        return 1
    return 0
