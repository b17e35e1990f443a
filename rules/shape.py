"""Structural ops: they move, drop or copy entries, so their norm is known in closed form."""
from __future__ import annotations

import torch

from lipgraph.labels import Bound, Label
from lipgraph.registry import Kind, Rule, require_constant, rule

EXACT_ONE = Bound(1.0, Label.EXACT, "permutation")


@rule("Reshape", versions=(5, 13, 14, 19, 21), kind=Kind.STRUCTURAL)
class Reshape(Rule):
    """Reshape keeps every entry: norm 1.

    Bound: 1. Exactness: exact (a permutation of storage order: identity).
    Assumptions: the target shape is constant (folded at load time).
    References: ONNX Reshape.
    """

    def check(self, node):
        require_constant(node, 1)

    def forward(self, node, x, shape):
        return x.reshape(node.output_shapes[0])

    def certified_norm(self, node):
        return EXACT_ONE
