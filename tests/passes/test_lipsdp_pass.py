"""The LipSDP pass on whole models: the anchor's exact constant, soundness against realised
pairs and sampled ratios, chains it must skip, and the model bound that takes the best
certified value per chain."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import ANCHOR_NPZ, MODELS, needs_anchors
from lipgraph.options import LipSDPOptions, LowerOptions, Options
from lipgraph.pipeline import analyze
from randgraphs import run_ort, sampled_ratio

ANCHOR_EXACT = 36.48223


def _method(a, name):
    return next(m for m in a.methods if m.name == name)


@needs_anchors
def test_anchor_lipsdp_is_certified_and_reaches_the_exact_constant():
    a = analyze(MODELS / "anchor_lipsdp.onnx", Options(methods=("autolip", "seqlip", "lipsdp")))
    m = _method(a, "lipsdp")
    w = np.load(ANCHOR_NPZ)
    exact = np.linalg.norm(w["W4"] @ w["W3"] @ w["W2"] @ w["W1"], 2)
    assert m.label.value == "certified"
    assert exact <= m.value <= 36.4823 * (1 + 1e-4)
    assert a.upper.name == "lipsdp" and m.value < _method(a, "seqlip").value


@pytest.mark.parametrize("name", ["mlp", "concat"])
def test_lipsdp_is_sound_on_bundled_models(name):
    a = analyze(MODELS / f"{name}.onnx", Options(methods=("autolip", "seqlip", "lipsdp", "lower"),
                                                lower=LowerOptions(restarts=2)))
    m = _method(a, "lipsdp")
    assert m.value >= a.lower.value * (1 - 1e-9)
    shape = a.graph.shape(a.graph.analysed)
    assert m.value >= sampled_ratio(str(MODELS / f"{name}.onnx"), shape, n=100) * (1 - 1e-6)
    assert m.value <= _method(a, "seqlip").value * (1 + 1e-12)     # the best certified per chain
    # the realising pair is real in onnxruntime too
    x, y = a.lower.x, a.lower.y
    fx, fy = (run_ort(str(MODELS / f"{name}.onnx"), p).astype(np.float64) for p in (x, y))
    assert np.linalg.norm(fy - fx) / np.linalg.norm(y.astype(np.float64) - x) <= m.value * (1 + 1e-6)


def test_chains_over_the_neuron_limit_are_skipped_with_a_note():
    a = analyze(MODELS / "mlp.onnx", Options(methods=("autolip", "seqlip", "lipsdp"),
                                             lipsdp=LipSDPOptions(max_neurons=1)))
    assert _method(a, "lipsdp").value == pytest.approx(_method(a, "seqlip").value)
    assert any(d.code == "lipsdp-skipped" and "max-neurons" in d.message for d in a.diagnostics)
