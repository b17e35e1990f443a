#!/usr/bin/env python
"""Export a small Flax (nnx) MLP with jax2onnx.

    <venvs>/zoo-jax/bin/python models/zoo/export_jax.py
    # <venvs>: where models/zoo/setup_venvs.sh put the exporter venvs

``flax_mlp_gelu.onnx``: input ``x`` [1, 32]. nnx.Linear 32→64 → GELU (exact, erf) →
nnx.LayerNorm → nnx.Linear 64→64 → GELU (tanh approximation, jax's default) → nnx.Linear 64→10
→ softmax. ``nnx.Rngs(0)``, opset 18, float32; output ``y``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax2onnx import to_onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_common import OPSET, ZOO, check_size, save_reference  # noqa: E402


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(32, 64, rngs=rngs)
        self.ln = nnx.LayerNorm(64, rngs=rngs)
        self.fc2 = nnx.Linear(64, 64, rngs=rngs)
        self.fc3 = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        h = self.ln(jax.nn.gelu(self.fc1(x), approximate=False))
        h = jax.nn.gelu(self.fc2(h), approximate=True)
        return jax.nn.softmax(self.fc3(h), axis=-1)


def build() -> MLP:
    model = MLP(nnx.Rngs(0))
    rng = np.random.default_rng(0)  # non-trivial biases and LayerNorm affine
    for layer in (model.fc1, model.fc2, model.fc3):
        layer.bias.set_value(rng.uniform(-0.2, 0.2, layer.bias.shape).astype(np.float32))
    model.ln.scale.set_value(rng.uniform(0.5, 1.5, 64).astype(np.float32))
    model.ln.bias.set_value(rng.uniform(-0.2, 0.2, 64).astype(np.float32))
    return model


def main() -> None:
    model = build()
    path = ZOO / "flax_mlp_gelu.onnx"
    to_onnx(model, [(1, 32)], model_name="flax_mlp_gelu", opset=OPSET, return_mode="file",
            output_path=str(path), input_names=["x"], output_names=["y"])
    check_size(path)
    x = np.random.default_rng(1).standard_normal((1, 32)).astype(np.float32)
    save_reference(path.stem, {"x": x}, np.asarray(model(x)))


if __name__ == "__main__":
    main()
