"""Elementwise activations: each rule states its slope range [lo, hi].

AutoLip uses max(|lo|, |hi|); SeqLip uses the range itself.
"""
from __future__ import annotations

import torch

from lipgraph.registry import Kind, Rule, rule


@rule("Relu", versions=(6, 13, 14), kind=Kind.ACTIVATION)
class Relu(Rule):
    """ReLU is 1-Lipschitz: slopes in [0, 1].

    Bound: slopes [0, 1], Lipschitz constant 1.
    Exactness: exact (any input with a positive entry realises slope 1).
    Assumptions: none.
    References: ONNX Relu.
    """

    def forward(self, node, x):
        return torch.relu(x)

    def slopes(self, node):
        return 0.0, 1.0

    def smooth(self, node, x, t):
        return t * torch.nn.functional.softplus(x / t) if t > 0 else torch.relu(x)
