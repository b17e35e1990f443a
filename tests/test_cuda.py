"""CUDA parity: on every bundled model (models/*.onnx) ``analyze(..., device="cuda")`` gives the
CPU path's certified values (tight relative tolerance) with the same label for every method and
every node, and no certified value below a ratio realised by onnxruntime on sampled pairs.

Runs only where CUDA is available; elsewhere the module is skipped with the reason printed
(the device code paths are then exercised by the CPU tests, which run the same functions with
device "cpu").

What honours ``--device`` (read from the code): the float32 executor (``Context.fast``) runs the
power iteration of every segment (``passes.norms``), the lower-bound search (``passes.lower_pass``)
and SeqLip's top-k triplets (``OperatorMap.fast``); LipSDP's first-order route takes the device.
The certificates themselves — materialised SVDs, the convolutions' DFT bound and Gram proof
(``certify.conv``), SeqLip's exact enumeration and branch and bound — are float64 on the CPU by
design: they are the proofs, and they are the same numbers on either device.
"""
from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import BUNDLED, MODELS

if not torch.cuda.is_available():
    pytest.skip("no CUDA device: the GPU path is tested by the CPU-fallback tests", allow_module_level=True)

import lipgraph  # noqa: E402 - after the skip: nothing to import without a device

#: Certified values come from float64 CPU proofs steered by float32 estimates made on the device;
#: a different estimate can move a Cholesky ladder's step, never by more than this.
REL = 1e-6
METHODS = ("autolip", "autolip-power", "seqlip", "seqlip-greedy", "lipsdp", "lower")


def _sampled_ratio(path, shape, pairs: int = 64, seed: int = 0) -> float:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    best = 0.0
    for _ in range(pairs):
        x = rng.standard_normal(shape).astype(np.float32)
        y = (x + 1e-2 * rng.standard_normal(shape)).astype(np.float32)
        fx, fy = (np.asarray(sess.run(None, {name: v})[0], np.float64) for v in (x, y))
        best = max(best, float(np.linalg.norm(fx - fy) / np.linalg.norm(x.astype(np.float64) - y)))
    return best


@pytest.mark.parametrize("name", BUNDLED)
def test_cuda_matches_cpu(name):
    path = MODELS / f"{name}.onnx"
    cpu = lipgraph.analyze(path, device="cpu", seed=0, methods=METHODS)
    gpu = lipgraph.analyze(path, device="cuda", seed=0, methods=METHODS)
    assert gpu.document["device"].startswith("cuda")
    want = {m.name: m for m in cpu.methods}
    got = {m.name: m for m in gpu.methods}
    assert set(got) == set(want)
    for key, m in want.items():
        g = got[key]
        assert g.label == m.label, (key, m.label, g.label)
        if m.is_bound and m.value is not None and math.isfinite(m.value):
            assert g.value == pytest.approx(m.value, rel=REL), (key, m.value, g.value)
    assert [(n.name, n.label, n.method) for n in gpu.nodes] == [(n.name, n.label, n.method) for n in cpu.nodes]
    for n, c in zip(gpu.nodes, cpu.nodes):
        if c.label is not None and c.label.is_bound and c.bound is not None:
            assert n.bound == pytest.approx(c.bound, rel=REL), (n.name, c.bound, n.bound)
    for g, c in zip(gpu.document["chains"], cpu.document["chains"], strict=True):
        assert (g["label"], g["method"]) == (c["label"], c["method"])
        if c["seqlip"] is not None:
            assert g["seqlip"] == pytest.approx(c["seqlip"], rel=REL)
    upper = gpu.upper
    if upper is not None:
        ratio = _sampled_ratio(path, cpu.document["input_shape"] or _input_shape(path))
        assert upper.value >= ratio * (1 - 1e-5), (upper.value, ratio)
        if gpu.lower is not None:
            assert upper.value >= gpu.lower * (1 - 1e-6)


def _input_shape(path) -> list[int]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
