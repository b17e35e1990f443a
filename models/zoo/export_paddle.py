#!/usr/bin/env python
"""Export a small PaddlePaddle CNN with paddle2onnx (``paddle.onnx.export``).

    <venvs>/zoo-paddle/bin/python models/zoo/export_paddle.py
    # <venvs>: where models/zoo/setup_venvs.sh put the exporter venvs

``paddle_cnn.onnx``: input ``x`` [1, 3, 16, 16]. Conv2D 8@3×3 pad 1 → BatchNorm2D (random
statistics) → ReLU6 → AvgPool2D 2×2 → Conv2D 16@3×3 pad 1 → SELU →
AdaptiveAvgPool2D 1 → Flatten → Linear 16→32 → Hardswish → Linear 32→10. ``paddle.seed(0)``,
eval mode, opset 18.

paddle2onnx 2.1.0 pitfalls met on the way: Softplus aborts the export ("Only support softplus
with beta == 1.0 and threshold == 20.0", even with those defaults), and LeakyReLU(0.1) is
exported with a wrong slope (LeakyRelu alpha 1.6733 — SELU's alpha — with a SELU in the model,
0.0 without) — a wrong model that tests/test_zoo_models.py caught against paddle's output.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import paddle
from paddle import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_common import OPSET, ZOO, check_size, save_reference  # noqa: E402


def build() -> nn.Layer:
    paddle.seed(0)
    model = nn.Sequential(
        nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU6(), nn.AvgPool2D(2),
        nn.Conv2D(8, 16, 3, padding=1), nn.SELU(), nn.AdaptiveAvgPool2D(1), nn.Flatten(),
        nn.Linear(16, 32), nn.Hardswish(), nn.Linear(32, 10),
    )
    rng = np.random.default_rng(0)
    bn = model[1]
    for param, (lo, hi) in ((bn.weight, (0.5, 1.5)), (bn.bias, (-0.2, 0.2)),
                            (bn._mean, (-0.5, 0.5)), (bn._variance, (0.5, 2.0))):
        param.set_value(rng.uniform(lo, hi, param.shape).astype(np.float32))
    model.eval()
    return model


def main() -> None:
    model = build()
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    y = model(paddle.to_tensor(x)).numpy()
    spec = [paddle.static.InputSpec([1, 3, 16, 16], "float32", "x")]
    path = ZOO / "paddle_cnn.onnx"
    with tempfile.TemporaryDirectory() as tmp:  # paddle writes its static model next to the prefix
        prefix = os.path.join(tmp, "paddle_cnn")
        paddle.onnx.export(model, prefix, input_spec=spec, opset_version=OPSET)
        Path(prefix + ".onnx").replace(path)
    check_size(path)
    save_reference(path.stem, {"x": x}, y)


if __name__ == "__main__":
    main()
