"""Elementwise arithmetic: Add, Sub, Sum (COMBINE when several inputs are analysed,
AFFINE with a constant operand), Mul/Div by constants, Neg."""
from __future__ import annotations

import math

import torch

from lipgraph.labels import Bound, Label
from lipgraph.registry import Kind, Rule, rule


def broadcast_gain(node, i: int) -> float:
    """‖x ↦ broadcast(x)‖ = √(copies): broadcasting input i to the output shape copies
    each entry numel(out)/numel(in) times."""
    return math.sqrt(node.numel_out() / node.numel_in(i))


@rule("Add", versions=(7, 13, 14), kind=Kind.COMBINE)
class Add(Rule):
    """Add: partial constant √(copies) per analysed input (1 without broadcasting); AutoLip sums.

    Bound: L = Σ_i √(numel(out)/numel(in_i))·L_i over analysed inputs.
    Exactness: exact per input; the sum is the triangle inequality (exact for one input).
    Assumptions: none (a constant operand is a shift).
    References: ONNX Add.
    """

    def forward(self, node, a, b):
        return a + b

    def bounds(self, node):
        return {i: Bound(broadcast_gain(node, i), Label.EXACT, "broadcast") for i in node.dynamic_indices}
