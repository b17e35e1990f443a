"""The model zoo (models/zoo/): every committed ONNX file is valid, runs in onnxruntime and
reproduces the exporting framework's own output stored beside it (models/zoo/<name>.npz).

Needs only onnx, onnxruntime and numpy: the exporters live in their own venvs
(models/zoo/setup_venvs.sh) and are never imported here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"
MODELS = sorted(p.stem for p in ZOO.glob("*.onnx"))
RTOL = 1e-4


def test_zoo_is_populated():
    assert len(MODELS) >= 20
    assert not sorted(p.stem for p in ZOO.glob("*.npz") if not (ZOO / f"{p.stem}.onnx").exists())


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model_matches_framework(name):
    path = ZOO / f"{name}.onnx"
    assert path.stat().st_size <= 300_000
    model = onnx.load(path)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    onnx.checker.check_model(model, full_check=True)

    ref = np.load(ZOO / f"{name}.npz")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path.as_posix(), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: ref[i.name] for i in sess.get_inputs()}
    got = sess.run(None, feeds)
    want = [ref["y"]] if len(got) == 1 else [ref[f"y{i}"] for i in range(len(got))]
    assert len(want) == len(got)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        scale = max(float(np.abs(w).max()), 1e-6)
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=RTOL * scale)
