"""Ops whose output does not depend on the analysed input's values, only on shapes."""
from __future__ import annotations

import torch

from lipgraph.registry import Kind, Rule, rule


@rule("Shape", versions=(13, 15, 19, 21), kind=Kind.CONSTANT)
class Shape(Rule):
    """Shape depends only on the (pinned) shape: constant, Lipschitz constant 0.

    Bound: 0. Exactness: exact. Assumptions: shapes pinned at load time.
    References: ONNX Shape (start/end attributes honoured).
    """

    def forward(self, node, x):
        dims = list(x.shape)
        start, end = node.attr("start", 0), node.attr("end")
        return torch.tensor(dims[start:end] if end is not None else dims[start:], dtype=torch.int64)
