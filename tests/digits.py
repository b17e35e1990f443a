"""Small ReLU MLPs trained on sklearn's digits (pixels / 16), exported to ONNX: the trained
classifiers that the box and certify tests need (seeded, a second or so each)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def train_digits_mlp(hidden: list[int], folder: Path, classes: int = 10, holdout: int = 100, epochs: int = 150):
    """(ONNX path, the trained torch module, held-out inputs, their labels) for a 64-…-classes ReLU
    MLP trained with Adam on the digits of the first ``classes`` classes but the last ``holdout``."""
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    keep = y < classes
    x, y = (x[keep] / 16.0).astype(np.float32), y[keep]
    torch.manual_seed(0)
    widths = [64, *hidden]
    layers = [m for a, b in zip(widths, widths[1:]) for m in (torch.nn.Linear(a, b), torch.nn.ReLU())]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], classes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.as_tensor(x[:-holdout]), torch.as_tensor(y[:-holdout])
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    path = Path(folder) / "digits_mlp.onnx"
    torch.onnx.export(net.eval(), (torch.zeros(1, 64),), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"])
    return path, net, x[-holdout:], y[-holdout:].astype(np.int64)
