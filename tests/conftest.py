"""Shared fixtures: bundled models analysed once per test session."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
ANCHORS = ROOT.parent / "shared" / "anchors"
BUNDLED = ["mlp", "lenet", "resnet_small", "affine", "anchor_lipsdp", "spectral", "concat"]


@functools.cache
def analysed(name: str):
    from lipgraph.analysis import analyze
    return analyze(MODELS / f"{name}.onnx")


@pytest.fixture(params=BUNDLED)
def bundled(request):
    return request.param, analysed(request.param)
