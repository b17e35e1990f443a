"""Dense affine ops with a constant weight: Gemm, MatMul."""
from __future__ import annotations

import numpy as np
import torch

from lipgraph.labels import Bound, Label, certify
from lipgraph.registry import Kind, Rule, require_constant, rule


def spectral_norm(matrix: np.ndarray) -> float:
    """Largest singular value in float64 (exact up to rounding). A stack of matrices
    (batched MatMul weight) acts block-diagonally: the largest over the stack."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.size == 0:
        return 0.0
    blocks = m.reshape(-1, *m.shape[-2:])
    return float(max(np.linalg.norm(b, 2) for b in blocks))


@rule("Gemm", versions=(7, 9, 11, 13), kind=Kind.AFFINE)
class Gemm(Rule):
    """Y = alpha·A'·B' + beta·C with constant B: ‖linear part‖ = |alpha|·σ_max(B).

    Bound: |alpha|·σ_max(B) (B transposed or not, the norm is the same).
    Exactness: certified (float64 SVD plus margin); equal to the true constant.
    Assumptions: B constant; A is the analysed input (transA allowed); C constant.
    References: ONNX Gemm.
    """

    def check(self, node):
        require_constant(node, 1, 2)

    def forward(self, node, a, b, c=None):
        if node.attr("transA"):
            a = a.transpose(-1, -2)
        if node.attr("transB"):
            b = b.transpose(-1, -2)
        y = node.attr("alpha", 1.0) * (a @ b)
        if c is not None:
            y = y + node.attr("beta", 1.0) * c
        return y

    def certified_norm(self, node):
        sigma = abs(node.attr("alpha", 1.0)) * spectral_norm(node.const(1))
        return Bound(certify(sigma), Label.CERTIFIED, "svd")
