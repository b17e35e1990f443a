"""Section (a'): the exact SeqLip factor past enumeration, by Lagrangian branch and bound.

``python -m bench.bnb CASE SEED SECONDS OUT.json`` — CASE ``gauss32`` / ``gauss64`` (random Gaussian
n → n → n chain, the hardest shape, as ``time_exact_factor``) or ``mlp784-50-10`` (random 784-50-10 ReLU
net: A = Σ₂V₂ᵀ 10×50, B = U₁Σ₁ 50×50). The search stops after SECONDS (safety net): its value is
then the anytime certified bound, reported with the gap to the best vertex found."""
from __future__ import annotations

import json
import sys

CASES = {"gauss32": ((32, 32), (32, 32)), "gauss64": ((64, 64), (64, 64)),
         "mlp784-50-10": ((50, 784), (10, 50))}


def main(argv=None) -> int:
    case, seed, seconds, out = (sys.argv[1:] if argv is None else argv)
    import numpy as np
    from lipgraph.certify.seqlip_bnb import factor_bnb_lagrangian
    from lipgraph.certify.seqlip_chain import seqlip_factors
    rng = np.random.default_rng(int(seed))
    (A, B), = seqlip_factors([rng.standard_normal(s) / np.sqrt(s[1]) for s in CASES[case]])
    res = factor_bnb_lagrangian(A, B, 0.0, 1.0, max_nodes=1 << 40, time_budget=float(seconds))
    with open(out, "w") as fh:
        json.dump({"case": case, "n": int(A.shape[1]), "seed": int(seed), "seconds": res.seconds,
                   "value": res.bound.value, "lower": res.lower, "done": res.done, "nodes": res.nodes,
                   "open": res.open, "gap": res.bound.value / res.lower - 1 if res.lower > 0 else None}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
