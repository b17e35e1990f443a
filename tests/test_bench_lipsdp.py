"""The bench's section (f) (``bench/lipsdp.py``): its worker on a small MLP, the table, and the
soundness check that covers every LipSDP route."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the bench package lives at the repository root
    sys.path.insert(0, str(REPO))

from bench import lipsdp as F  # noqa: E402
from bench import onnxutil, report  # noqa: E402
from bench.run import soundness  # noqa: E402
from lipgraph.certify.lipsdp import lipsdp  # noqa: E402


def test_worker_runs_every_route_on_the_chain(tmp_path):
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((b, a)) / math.sqrt(a) for a, b in ((3, 5), (5, 4), (4, 2))]
    path = onnxutil.mlp(tmp_path / "mlp.onnx", weights, [0.1 * rng.standard_normal(w.shape[0]) for w in weights])
    case = {"name": "tiny", "describe": "3-5-4-2", "path": str(path), "iters": [200, 200], "goal": 10.0,
            "others": "", "series": False, "full_only": ["layer/first-order"]}
    job = {"device": "cpu", "cvxpy": False, "quick": True, "sdp_limit": 64, "route_limit": 60.0,
           "analysis_limit": 60.0, "lower_budget": 0.2, "seqlip_budget": 1.0}
    saved = []
    row = F.run_case(case, job, saved.append)
    assert row["ok"] and (row["neurons"], row["hidden_layers"], row["sdp_size"]) == (9, 2, 12)
    assert len(saved) == 1 + len(F.ROUTES)        # after ECLipsE-Fast and after every route
    routes = row["routes"]
    assert routes["layer/first-order"]["skipped"] == "full run only"
    assert routes["layer/sdp"]["skipped"] == routes["neuron/sdp"]["skipped"] == "cvxpy not installed"
    neuron, fast = routes["neuron/first-order"], row["eclipse_fast"]
    assert neuron["label"] == fast["label"] == "certified"
    # the chain's weights are the ONNX file's (float32): the same value as lipsdp on them directly
    direct = lipsdp([w.astype(np.float32) for w in weights], max_iter=200)
    assert neuron["value"] == pytest.approx(direct.bound.value, rel=1e-6)
    assert row["lower"] <= neuron["value"] <= fast["value"] * (1 + 1e-9)
    assert neuron["value"] <= row["methods"]["autolip"]["value"] * (1 + 1e-9)
    text = "\n".join(report.section_f([row], {"sdp_limit": 64, "cvxpy": False, "lower_budget_s": 0.2,
                                               "route_limit_s": 60.0, "load_average_end": 1.0, "cpus": 2}))
    assert "cvxpy not installed" in text and "full run only" in text
    assert "goal < 10 s: **met**" in text    # a 3-5-4-2 chain takes well under a second


def test_soundness_covers_the_routes():
    main = {"name": "net", "ok": True, "methods": {"lower": {"value": 2.0, "label": "lower"}}}
    row = {"name": "net", "ok": True, "methods": {"lower": {"value": 1.5, "label": "lower"},
                                                  "autolip": {"value": 3.0, "label": "certified"}},
           "eclipse_fast": {"value": 1.4, "label": "certified"},
           "routes": {"neuron/first-order": {"value": 1.9, "label": "certified"},
                      "layer/first-order": {"value": 0.5, "label": "estimate"},
                      "layer/sdp": {"value": None, "skipped": "too large"}}}
    bad = soundness([main], [row])
    assert len(bad) == 3
    assert any("lipsdp neuron/first-order = 1.9" in b and "lower = 2" in b for b in bad)   # the main run's lower
    assert sum("eclipse-fast = 1.4" in b for b in bad) == 2                                   # below both
    assert soundness([main], [dict(row, ok=False)]) == []
