"""Section (f): LipSDP's routes side by side, and how their cost grows with the number of neurons.

``make bench`` runs it (alone: ``python -m bench --sections f [--quick] --out DIR``). This module
holds the cases and the worker, ``python -m bench.lipsdp JOB.json``: for each case in turn it
analyses the ONNX model with ``autolip,seqlip,lower`` and takes the one chain lipgraph finds
(the whole network for these MLPs and the strided digits CNN), then times on that chain
ECLipsE-Fast's closed form and LipSDP-Layer/-Neuron by the first-order route and by cvxpy +
Clarabel (when installed and the SDP matrix is small enough). Every value is proven after solving
(``lipgraph.certify.lipsdp``); one that is not keeps its label. The JSON is rewritten after every
cell, so a worker stopped at its time limit leaves what it finished.

Random weights are N(0, 1)/√fan_in; ECLipsE's family is ``networks.eclipse_weights``.
``iters`` = ``max_iter`` of the first-order route (Layer, Neuron; Neuron spends a third of it on
a Layer start); the pipeline's default is 500.
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .report import lipsdp_line

#: Routes in table order: (variant, route).
ROUTES = (("layer", "first-order"), ("neuron", "first-order"), ("layer", "sdp"), ("neuron", "sdp"))
#: Largest SDP matrix (input + hidden neurons) given to Clarabel, full run and quick run: its time
#: grows steeply with the size (measured on the 2-core machine: 48 → 0.4 s, 64 → 4 s, 84 → 15 s,
#: 128 → 140 s per solve).
SDP_LIMIT = (100, 64)


def random_mlp(widths: list[int], seed: int) -> Callable[[], list[np.ndarray]]:
    def weights() -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [rng.standard_normal((b, a)) / math.sqrt(a) for a, b in zip(widths, widths[1:])]
    return weights


@dataclass(frozen=True)
class Case:
    name: str
    describe: str
    source: str | Callable[[], list[np.ndarray]]   # a bench network's name, or a ReLU MLP's weights
    iters: tuple[int, int] = (2000, 2000)
    quick: bool = False
    goal: float | None = None      # the speed goal for LipSDP-Neuron, first-order (seconds)
    others: str = ""               # published times of other tools on that network
    series: bool = False           # the cost-growth series only (not in the bounds table)
    full_only: tuple[str, ...] = ()   # routes ("variant/route") the quick run leaves out


WIDTHS = (16, 32, 64, 128, 256, 512, 1024)

CASES: tuple[Case, ...] = (
    Case("anchor-lipsdp", "LipSDP anchor 2-10-30-20-2 (exact 36.48223)", "anchor-lipsdp", quick=True),
    Case("digits-mlp16", "digits-trained 64-16-16-10", "digits-mlp16", quick=True),
    Case("digits-mlp64", "digits-trained 64-64-64-10", "digits-mlp64"),
    *[Case(f"paper-mlp{d}", f"784-50×{d - 1}-10, random", f"paper-mlp{d}", quick=d == 4) for d in (4, 5, 7, 10)],
    *[Case(f"eclipse-d{d}", f"ECLipsE 4-80×{d - 1}-1", f"eclipse-d{d}", iters=(300, 900), quick=d <= 10)
      for d in (2, 5, 10, 20, 50, 100)],
    Case("random-784-256-10", "random 784-256-10", random_mlp([784, 256, 10], 0), iters=(200, 200), quick=True,
         goal=10.0, others="LipSDP with MOSEK: 47 s; LipDiff on a GPU: 9.85 s"),
    Case("deep64", "random 64-64×63-64, 64 layers", random_mlp([64] * 65, 1), iters=(300, 900), quick=True,
         goal=60.0, others="LipSDP with MOSEK: 830 s; GLipSDP: 66 s", full_only=("layer/first-order",)),
    Case("digits-cnn", "digits-trained strided CNN (conv chain)", "digits-cnn", iters=(500, 500)),
    *[Case(f"width-{n}", f"random 32-{n}-10", random_mlp([32, n, 10], 10 + n), iters=(500, 500),
           quick=n in (16, 128), series=True) for n in WIDTHS],
)


def select(quick: bool, only: list[str] | None = None) -> list[Case]:
    if only:
        return [c for c in CASES if c.name in only]
    return [c for c in CASES if c.quick or not quick]


def cvxpy_installed() -> bool:
    return importlib.util.find_spec("cvxpy") is not None and importlib.util.find_spec("clarabel") is not None


# ------------------------------------------------------------------------------ worker


def _cell(result) -> dict:
    if result.bound is None:
        return {"value": None, "label": None, "notes": result.notes, "skipped": "; ".join(result.notes)}
    v = result.bound.value
    return {"value": v if math.isfinite(v) else None, "label": result.bound.label.value,
            "method": result.bound.method, "notes": result.notes}


def _timed(fn, limit: float) -> dict:
    """``fn()`` within ``limit`` seconds (the first-order route checks lipgraph's budget); wall
    seconds, and the process's CPU seconds (the routes use one thread, so on a shared machine
    these are close to the wall time the same run would take alone)."""
    import lipgraph.budget as budget
    t, cpu = time.perf_counter(), time.process_time()
    try:
        with budget.active(budget.Budget.start(limit, None)):
            cell = _cell(fn())
    except budget.TimeUp:
        cell = {"value": None, "label": None, "skipped": f"stopped at the {limit:g} s limit"}
    return {**cell, "seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - cpu}


def run_case(case: dict, job: dict, save: Callable[[dict], None]) -> dict:
    """One case: the analysis, then every route on its chain; ``save(row)`` after each cell."""
    from lipgraph import options as O
    from lipgraph import pipeline
    from lipgraph.certify.lipsdp import eclipse_fast, lipsdp
    from .worker import _method_rows

    row = {"name": case["name"], "ok": False, "describe": case["describe"], "series": case["series"],
           "goal": case["goal"], "others": case["others"], "iters": case["iters"], "routes": {}}
    opts = O.Options(methods=("autolip", "seqlip", "lower"), device=job["device"], seed=0,
                     time_limit=job["analysis_limit"])
    opts.lower.budget = job["lower_budget"]
    opts.seqlip.budget = job["seqlip_budget"]
    t = time.perf_counter()
    analysis = pipeline.analyze(case["path"], opts)
    row["analysis_s"] = time.perf_counter() - t
    row["methods"] = _method_rows(analysis)
    row["lower"] = analysis.lower.value if analysis.lower is not None else None
    g, chains = analysis.graph, analysis.chains
    if not (len(chains) == 1 and chains[0].entry == g.analysed and chains[0].exit == g.output
            and all(m is not None for m in chains[0].matrices)):
        row["error"] = f"{len(chains)} chains, not one dense chain over the whole network"
        return row
    c = chains[0]
    ws, lo, hi = c.matrices, [a for a, _ in c.slopes], [b for _, b in c.slopes]
    row.update(ok=True, neurons=sum(len(a) for a in lo), hidden_layers=len(lo),
               sdp_size=ws[0].shape[1] + sum(len(a) for a in lo))
    row["eclipse_fast"] = _timed(lambda: eclipse_fast(ws, lo, hi), job["route_limit"])
    save(row)
    for (variant, route), iters in zip(ROUTES, case["iters"] * 2):
        key = f"{variant}/{route}"
        if job["quick"] and key in case["full_only"]:
            row["routes"][key] = {"value": None, "skipped": "full run only"}
        elif route == "sdp" and not job["cvxpy"]:
            row["routes"][key] = {"value": None, "skipped": "cvxpy not installed"}
        elif route == "sdp" and row["sdp_size"] > job["sdp_limit"]:
            row["routes"][key] = {"value": None, "skipped": "too large"}
        else:
            row["routes"][key] = _timed(lambda: lipsdp(ws, lo, hi, variant=variant, route=route, device=job["device"],
                                                       max_iter=iters), job["route_limit"])
        save(row)
    return row


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as fh:
        job = json.load(fh)
    rows: list[dict] = []

    def save(row=None) -> None:
        with open(job["out"], "w") as fh:
            json.dump({"rows": rows + ([row] if row is not None else [])}, fh, allow_nan=False, default=str)

    for case in job["cases"]:
        print(f"[f] {case['name']}: {case['describe']}", file=sys.stderr, flush=True)
        try:
            row = run_case(case, job, save)
        except Exception as exc:  # noqa: BLE001 - reported in the table, with the traceback
            row = {"name": case["name"], "ok": False, "describe": case["describe"], "series": case["series"],
                   "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            print(row["traceback"], file=sys.stderr, flush=True)
        rows.append(row)
        save()
        print("    " + lipsdp_line(row), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
