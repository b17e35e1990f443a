"""``make fuzz``: the long mutation run (issue 15). Every bundled and zoo model, every class of
``mutants.WIDE``, many seeds; each failing mutant (exit code outside 0/1/2/4, an internal error
or traceback, a run past its time limit) is written to ``fuzz-failures/`` with a .txt saying how
it failed and how to rerun it — the material for a regression test.

    python tests/fuzz.py [--seeds N] [--per-model M] [--time-limit S] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutants import WIDE, failure, mutate, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--per-model", type=int, default=2 * len(WIDE))
    p.add_argument("--time-limit", type=float, default=20.0)
    p.add_argument("--out", type=Path, default=ROOT / "fuzz-failures")
    args = p.parse_args()
    models = sorted((ROOT / "models").glob("*.onnx")) + sorted((ROOT / "models" / "zoo").glob("*.onnx"))
    args.out.mkdir(exist_ok=True)
    scratch = args.out / "current.onnx"
    runs = failed = 0
    for seed in range(args.seeds):
        for m, model in enumerate(models):
            data, rng = model.read_bytes(), np.random.default_rng([seed, m])
            for k in range(args.per_model):
                kind = WIDE[k % len(WIDE)]
                mutant, argv = mutate(data, kind, rng)
                scratch.write_bytes(mutant)
                why = failure(*run(scratch, argv, args.time_limit), args.time_limit)
                runs += 1
                if why:
                    failed += 1
                    stem = args.out / f"{model.stem}-{kind}-s{seed}-{k}"
                    stem.with_suffix(".onnx").write_bytes(mutant)
                    stem.with_suffix(".txt").write_text(
                        f"{why}\nrerun: lipgraph analyze {stem.with_suffix('.onnx')} --methods autolip "
                        f"--time-limit {args.time_limit:g} {' '.join(argv)}\n")
                    print(f"FAIL {stem.name}: {why.splitlines()[0][:200]}", flush=True)
            print(f"seed {seed} {model.name}: {runs} runs, {failed} failures", flush=True)
    scratch.unlink(missing_ok=True)
    print(f"{runs} mutants, {failed} failures" + (f" (written to {args.out})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
