"""LipSDP routes side by side: ``python -m bench.lipsdp_bench [--quick] [--threads N] [--device D]``.

For each network: AutoLip (product of spectral norms), ECLipsE-Fast's closed form, LipSDP-Layer
and LipSDP-Neuron by the solver-free route, and by cvxpy + Clarabel where the dense SDP is small
enough (input + hidden widths ≤ 120). Every LipSDP/ECLipsE value is proven after solving; a
value that is not says so. Random weights are N(0, 1)/√fan_in; ECLipsE's family is the one of
``make bench`` (``networks.eclipse_weights``: 4 → 80 → … → 80 → 1, ReLU, each layer rescaled to a
spectral norm in [0.4, 1.8]); GELU rows use slopes [−0.129, 1.129] (AutoLip × 1.129).
``max_iter`` of the first-order route (Layer, Neuron): 784-256-10 (200, 200), deep nets (300, 900:
Neuron spends a third on its Layer start), else (2000, 2000).
Not part of CI.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from lipgraph.certify.lipsdp import eclipse_fast, lipsdp

from .networks import eclipse_weights

ANCHOR = Path(__file__).resolve().parents[1].parent / "shared" / "anchors" / "lipsdp_random_2-10-30-20-2.npz"
SDP_LIMIT = 120
RELU, GELU = (0.0, 1.0), (-0.1290, 1.1290)


def random_net(widths, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((b, a)) / math.sqrt(a) for a, b in zip(widths, widths[1:])]


def networks(quick: bool):
    if ANCHOR.is_file():
        data = np.load(ANCHOR)
        yield "anchor 2-10-30-20-2", [data[f"W{i}"] for i in range(1, 5)], (2000, 2000), RELU
    small = random_net([10, 20, 20, 20, 5], 2)
    yield "random 10-20-20-20-5 ReLU", small, (2000, 2000), RELU
    yield "random 10-20-20-20-5 GELU", small, (2000, 2000), GELU
    yield "random 784-256-10", random_net([784, 256, 10], 0), (200, 200), RELU
    yield "64 layers, width 64", random_net([64] * 65, 1), (300, 900), RELU
    for depth in (2, 5, 10) if quick else (2, 5, 10, 20, 50, 100):
        yield f"ECLipsE 4-80×{depth - 1}-1", eclipse_weights(depth), (300, 900), RELU


def cell(res) -> str:
    if res is None or res.bound is None:
        return "—"
    mark = "" if res.bound.label.value == "certified" else f" ({res.bound.label.value})"
    return f"{res.bound.value:.6g}{mark} / {res.seconds:.2f} s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ECLipsE family up to 10 layers only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| network | AutoLip | ECLipsE-Fast | Layer, first-order | Neuron, first-order "
          "| Layer, SDP | Neuron, SDP |")
    print("|---|---|---|---|---|---|---|")
    for name, weights, budgets, slopes in networks(args.quick):
        autolip = math.prod(np.linalg.norm(w, 2) for w in weights) * max(map(abs, slopes))
        row = [name, f"{autolip:.6g}", cell(eclipse_fast(weights, *slopes))]
        for variant, iters in zip(("layer", "neuron"), budgets):
            row.append(cell(lipsdp(weights, *slopes, variant=variant, device=args.device, max_iter=iters)))
        small = sum(w.shape[1] for w in weights) <= SDP_LIMIT
        for variant in ("layer", "neuron"):
            row.append(cell(lipsdp(weights, *slopes, variant=variant, route="sdp")) if small else "too large")
        print("| " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
