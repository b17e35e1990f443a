"""Shared fixtures: bundled models analysed once per test session."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
ANCHORS = MODELS / "anchors"   # a copy of the shared anchor (models/anchors/README.md)
ANCHOR_NPZ = ANCHORS / "lipsdp_random_2-10-30-20-2.npz"
#: Tests that read the anchor weights skip, saying why, when the shared folder is absent.
needs_anchors = pytest.mark.skipif(not ANCHOR_NPZ.is_file(), reason=f"anchor weights not found at {ANCHOR_NPZ}")
BUNDLED = ["mlp", "lenet", "resnet_small", "affine", "anchor_lipsdp", "spectral", "concat"]
#: Upper-bound methods only: the lower-bound pass has its own tests (test_lower_pass.py) and
#: would add its search budget to every analysis here.
UPPER = ("autolip", "autolip-power", "seqlip", "seqlip-greedy")


@functools.cache
def analysed(name: str):
    from lipgraph.options import Options
    from lipgraph.pipeline import analyze
    return analyze(MODELS / f"{name}.onnx", Options(methods=UPPER))


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread per test process: small kernels, wall-clock search budgets and
    pytest-xdist workers all behave better without thread oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def isolated_registry(monkeypatch):
    """Rules a test registers (plugins) vanish with the test: other tests in the same worker
    must not see a Sin rule that only one test defined."""
    from lipgraph.registry import REGISTRY
    monkeypatch.setattr(REGISTRY, "_rules", dict(REGISTRY._rules))
    return REGISTRY


@pytest.fixture(params=BUNDLED)
def bundled(request):
    return request.param, analysed(request.param)
