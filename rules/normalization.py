"""Normalisation layers in inference form (affine with constant statistics)."""
from __future__ import annotations

import numpy as np
import torch

from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import CERT_MARGIN, Bound, Label, certify
from lipgraph.registry import Kind, Rule, require_constant, rule


@rule("BatchNormalization", versions=(9, 14, 15), kind=Kind.AFFINE)
class BatchNormalization(Rule):
    """Inference BatchNorm y = scale·(x − mean)/√(var + eps) + B: norm max_c |scale_c|/√(var_c + eps).

    Bound: max over channels c of |scale_c / √(var_c + epsilon)|, in float64 (the linear part is
      diagonal, one factor per channel).
    Exactness: certified (exact up to rounding; a float64 margin is added).
    Assumptions: inference only — scale, B, mean and var constant, training_mode = 0 and no
      training outputs (v9 with running/saved statistics outputs is training); otherwise not
      applicable, since batch statistics make the op nonlinear.
    References: ONNX BatchNormalization; Ioffe & Szegedy 2015.
    """

    def check(self, node):
        require_constant(node, 1, 2, 3, 4)
        extra = [o for o in node.outputs[1:] if o]
        if node.attr("training_mode", 0) or extra:
            raise RuleNotApplicable("BatchNormalization in training mode uses batch statistics "
                                    "(nonlinear); only inference is supported")

    def forward(self, node, x, scale, b, mean, var):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        eps = node.attr("epsilon", 1e-5)
        factor = (scale.to(x.dtype) / torch.sqrt(var.to(x.dtype) + eps)).reshape(shape)
        return (x - mean.to(x.dtype).reshape(shape)) * factor + b.to(x.dtype).reshape(shape)

    def certified_norm(self, node):
        scale = np.asarray(node.const(1), dtype=np.float64)
        var = np.asarray(node.const(4), dtype=np.float64)
        factor = np.abs(scale / np.sqrt(var + node.attr("epsilon", 1e-5)))
        return Bound(certify(float(factor.max(initial=0.0))), Label.CERTIFIED, "diagonal", slack=CERT_MARGIN)

    def conv_form(self, node):
        """Per-channel scale scale_c/√(var_c + eps) (rank ≥ 3 inputs), for segment folding."""
        from lipgraph.certify.convfold import ConvForm
        shape = node.input_shapes[0]
        if shape is None or len(shape) < 3:
            return None
        scale = np.asarray(node.const(1), dtype=np.float64)
        var = np.asarray(node.const(4), dtype=np.float64)
        return ConvForm.channel_scale(scale / np.sqrt(var + node.attr("epsilon", 1e-5)), shape[1])
