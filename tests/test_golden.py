"""The JSON report of every bundled model is what it was when the golden files were written
(tests/golden/, `lipgraph analyze models/NAME.onnx --seed 0 --lower-restarts 2 --format json`):
a restructuring must not change a number, a label or a diagnostic.

Ignored: ``seconds`` fields and the model path. Floats compare to 1e-6 relative (BLAS
reductions may round differently on another machine); keys the golden file does not have may
be added (new fields), never removed; new diagnostics may be added between the golden ones."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import BUNDLED, MODELS
from lipgraph.cli import main

GOLDEN = Path(__file__).resolve().parent / "golden"
IGNORED = {"seconds", "model"}
#: Notes that quote a quasi-Newton solve's iteration counts (LipSDP), which rounding can shift;
#: the certified values they lead to are compared like every other number.
VOLATILE = {"lipsdp-note"}


def same(want, got, where="$"):
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        for key, value in want.items():
            if key == "diagnostics":
                kept = [d for d in value if d["code"] not in VOLATILE]
                contains_in_order(kept, got[key], f"{where}.{key}")
            elif key not in IGNORED:
                assert key in got, f"{where}.{key} missing"
                same(value, got[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, want, got)
        for k, (w, g) in enumerate(zip(want, got)):
            same(w, g, f"{where}[{k}]")
    elif isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        assert math.isclose(want, got, rel_tol=1e-6, abs_tol=1e-12), (where, want, got)
    else:
        assert want == got, (where, want, got)


def contains_in_order(want: list, got: list, where: str) -> None:
    """Every golden diagnostic is still emitted, in order; new ones may be added (the
    restructuring keeps diagnostics that were dropped before)."""
    rest = iter(got)
    for k, w in enumerate(want):
        assert any(all(g.get(key) == value for key, value in w.items()) for g in rest), f"{where}[{k}] {w} missing"


@pytest.mark.parametrize("name", BUNDLED)
def test_report_matches_golden(name, capsys):
    want = json.loads((GOLDEN / f"{name}.json").read_text())
    code = main(["analyze", str(MODELS / f"{name}.onnx"), "--seed", "0", "--lower-restarts", "2",
                 "--format", "json", "-q"])
    got = json.loads(capsys.readouterr().out)
    assert code == 0
    same(want, got)
