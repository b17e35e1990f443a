#!/usr/bin/env python
"""Export scikit-learn's MLPClassifier, fitted on the digits data set, with skl2onnx.

    <venvs>/zoo-sklearn/bin/python models/zoo/export_sklearn.py
    # <venvs>: where models/zoo/setup_venvs.sh put the exporter venvs

``sklearn_mlp_digits.onnx``: MLPClassifier(hidden_layer_sizes=(32, 16), relu), 30 Adam epochs
on ``sklearn.datasets.load_digits`` (scaled to [0, 1]), random_state 0. Converted at opset 18 with
``zipmap=False`` and then cut (``select_model_inputs_outputs``) to its single ``probabilities``
output, the tensor [1, 10] of class probabilities; input ``x`` is [1, 64] float32. The reference
``y`` is ``predict_proba`` on the first test digit.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from skl2onnx.helpers.onnx_helper import save_onnx_model, select_model_inputs_outputs
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_common import OPSET, ZOO, check_size, save_reference  # noqa: E402


def main() -> None:
    X, t = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X[:1500], t[:1500])
    onx = convert_sklearn(clf, initial_types=[("x", FloatTensorType([1, 64]))],
                          target_opset={"": OPSET, "ai.onnx.ml": 3},
                          options={id(clf): {"zipmap": False}})
    probabilities = next(o for o in onx.graph.output if o.name == "probabilities")
    onx = select_model_inputs_outputs(onx, outputs=["probabilities"])
    onx.graph.output[0].CopyFrom(probabilities)  # the cut drops the output's type
    onx.graph.name = "sklearn_mlp_digits"  # instead of a random uuid, so a rebuild is identical
    path = ZOO / "sklearn_mlp_digits.onnx"
    save_onnx_model(onx, str(path))
    check_size(path)
    x = X[1500:1501]
    save_reference(path.stem, {"x": x}, clf.predict_proba(x).astype(np.float32))


if __name__ == "__main__":
    main()
