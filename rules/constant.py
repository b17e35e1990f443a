"""Ops whose output does not depend on the analysed input's values, only on shapes."""
from __future__ import annotations

import numpy as np
import torch

from lipgraph.registry import Kind, Rule, rule

LATEST = (21, 23, 24, 25)   # since_versions that only added element types


@rule("Shape", versions=(1, 13, 15, 19) + LATEST, kind=Kind.CONSTANT)
class Shape(Rule):
    """Shape depends only on the (pinned) shape: constant, Lipschitz constant 0.

    Bound: 0. Exactness: exact. Assumptions: shapes pinned at load time.
    References: ONNX Shape (start/end attributes honoured, since v15).
    """

    def forward(self, node, x):
        dims = list(x.shape)
        start, end = node.attr("start", 0), node.attr("end")
        return torch.tensor(dims[start:end] if end is not None else dims[start:], dtype=torch.int64)


@rule("Size", versions=(1, 13, 19) + LATEST, kind=Kind.CONSTANT)
class Size(Rule):
    """Size depends only on the (pinned) shape: constant, Lipschitz constant 0.

    Bound: 0. Exactness: exact. Assumptions: shapes pinned at load time.
    References: ONNX Size.
    """

    def forward(self, node, x):
        return torch.tensor(x.numel(), dtype=torch.int64)


@rule("ConstantOfShape", versions=(9, 20) + LATEST, kind=Kind.CONSTANT)
class ConstantOfShape(Rule):
    """ConstantOfShape fills a tensor whose shape is an integer tensor: constant, Lipschitz constant 0.

    Bound: 0. Exactness: exact.
    Assumptions: its input is a shape (integers), never the analysed values.
    References: ONNX ConstantOfShape (value attribute, default float32 0).
    """

    def forward(self, node, shape):
        value = node.attr("value")
        value = np.zeros(1, np.float32) if value is None else np.array(value)
        dims = [int(d) for d in shape.reshape(-1).tolist()]
        return torch.from_numpy(value.reshape(-1)[:1]).expand(*dims).clone() if dims else \
            torch.from_numpy(value.reshape(()).copy())
