#!/usr/bin/env python
"""Export a small Keras 3 CNN (TensorFlow backend) with tf2onnx.

    <venvs>/zoo-tf/bin/python models/zoo/export_keras.py
    # <venvs>: where models/zoo/setup_venvs.sh put the exporter venvs

``keras_cnn.onnx``: NHWC input ``x`` [N, 16, 16, 3] with a **dynamic batch dimension** (as
tf2onnx writes Keras models; analyse with ``--input-shape x:1,16,16,3``). Conv2D 8@3×3 same +
ReLU → BatchNormalization (random statistics) → MaxPooling2D 2×2 → SeparableConv2D 16@3×3 same +
swish → GlobalAveragePooling2D → Dense 32 + tanh → Dropout 0.3 (inactive in inference) →
Dense 10 + softmax. Weights from ``keras.utils.set_random_seed(0)``; biases drawn at random so
tf2onnx keeps every Add. Converted with ``tf2onnx.convert.from_function`` on a ``tf.function``
(``from_keras`` fails on Keras 3 models) at opset 18; output ``y``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tf2onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_common import OPSET, ZOO, check_size, save_reference  # noqa: E402


def build() -> keras.Model:
    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.BatchNormalization(),
        L.MaxPooling2D(2),
        L.SeparableConv2D(16, 3, padding="same", activation="swish"),
        L.GlobalAveragePooling2D(),
        L.Dense(32, activation="tanh"),
        L.Dropout(0.3),
        L.Dense(10, activation="softmax"),
    ])
    rng = np.random.default_rng(0)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, L.BatchNormalization):  # gamma, beta, moving mean, moving variance
            weights = [rng.uniform(0.5, 1.5, 8), rng.uniform(-0.2, 0.2, 8),
                       rng.uniform(-0.5, 0.5, 8), rng.uniform(0.5, 2.0, 8)]
        elif weights:  # kernels as initialised, biases random
            weights[-1] = rng.uniform(-0.2, 0.2, weights[-1].shape)
        layer.set_weights([w.astype(np.float32) for w in weights])
    return model


def main() -> None:
    model = build()
    spec = (tf.TensorSpec((None, 16, 16, 3), tf.float32, name="x"),)

    @tf.function(input_signature=spec)
    def forward(x):
        return {"y": model(x, training=False)}

    path = ZOO / "keras_cnn.onnx"
    tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET, output_path=str(path))
    check_size(path)
    x = np.random.default_rng(1).standard_normal((1, 16, 16, 3)).astype(np.float32)
    save_reference(path.stem, {"x": x}, model(x, training=False).numpy())


if __name__ == "__main__":
    main()
