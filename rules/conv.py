"""Convolutions with a constant weight: Conv and ConvTranspose (1-D, 2-D, 3-D).

Both are affine in the analysed input. Torch semantics via torch.nn.functional, with ONNX
padding resolved here (``geometry``) and applied as an explicit ``F.pad`` so asymmetric
pads and every ``auto_pad`` mode are exact. Certified norms come from
``lipgraph.certify.conv.conv_certified_norm`` (design §4), given the resolved ONNX pads.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lipgraph.registry import Kind, Rule, require_constant, rule

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def geometry(node, weight_shape, x_shape):
    """(kernel, strides, dilations, pads) with ONNX defaults; pads = [begins…, ends…]
    resolved from auto_pad (and, for ConvTranspose, output_shape; see ``_transpose_pads``)."""
    spatial = list(x_shape[2:])
    d = len(spatial)
    kernel = list(node.attr("kernel_shape") or weight_shape[2:])
    strides = list(node.attr("strides") or [1] * d)
    dil = list(node.attr("dilations") or [1] * d)
    auto = node.attr("auto_pad", "NOTSET")
    extent = [(k - 1) * dd + 1 for k, dd in zip(kernel, dil)]
    if node.op_type == "ConvTranspose":
        return kernel, strides, dil, _transpose_pads(node, spatial, strides, extent, auto)
    if auto in ("NOTSET", "VALID"):
        pads = list(node.attr("pads") or [0] * 2 * d) if auto == "NOTSET" else [0] * 2 * d
        return kernel, strides, dil, pads
    total = [max((math.ceil(n / s) - 1) * s + e - n, 0) for n, s, e in zip(spatial, strides, extent)]
    small = [t // 2 for t in total]
    if auto == "SAME_UPPER":            # the extra padding goes at the end
        return kernel, strides, dil, small + [t - h for t, h in zip(total, small)]
    return kernel, strides, dil, [t - h for t, h in zip(total, small)] + small


def _transpose_pads(node, spatial, strides, extent, auto):
    """ConvTranspose crop of its full output (length s·(n−1) + output_padding + (k−1)·d + 1),
    as onnxruntime computes it (the spec's total_padding rule):

    - ``output_shape`` given (its last d entries; explicit pads are then ignored): total =
      full − output_shape; SAME_UPPER crops total//2 at the start and the rest at the end,
      every other auto_pad the larger half at the start. A target larger than the full output
      (total < 0) keeps the full output at the start and appends zeros at the end (a negative
      end pad).
    - SAME_UPPER / SAME_LOWER without output_shape: target n·s, total = max(0, full − n·s),
      split as above; a target larger than the full output gives the full output (no zeros).
    - VALID: no crop; NOTSET: the explicit pads.
    """
    d = len(spatial)
    out_pad = list(node.attr("output_padding") or [0] * d)
    full = [s * (n - 1) + op + e for s, n, op, e in zip(strides, spatial, out_pad, extent)]
    if node.attr("output_shape"):
        total = [f - o for f, o in zip(full, list(node.attr("output_shape"))[-d:])]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        total = [max(f - n * s, 0) for f, n, s in zip(full, spatial, strides)]
    else:
        return list(node.attr("pads") or [0] * 2 * d) if auto == "NOTSET" else [0] * 2 * d
    begin = [0 if t < 0 else t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
    return begin + [t - b for t, b in zip(total, begin)]


def _torch_pad(begins, ends):
    """ONNX begin/end lists → F.pad's last-axis-first pairs."""
    out = []
    for b, e in zip(reversed(begins), reversed(ends)):
        out += [int(b), int(e)]
    return out


class _ConvBase(Rule):
    """Shared by Conv and ConvTranspose: constant weight/bias, norm via convnorm."""

    def check(self, node):
        require_constant(node, 1, 2)

    def certified_norm(self, node):
        w = node.const(1)
        x_shape = node.input_shapes[0]
        _, strides, dil, pads = geometry(node, w.shape, x_shape)
        transpose = node.op_type == "ConvTranspose"
        groups = node.attr("group", 1)
        from lipgraph.certify.conv import conv_certified_norm
        out_pad = list(node.attr("output_padding") or [0] * len(strides)) if transpose else None
        return conv_certified_norm(w, tuple(x_shape[2:]), strides=strides, dilations=dil, pads=pads,
                                   groups=groups, transpose=transpose, output_padding=out_pad)

    def cost(self, node):
        """Multiply-adds: every output (Conv) or input (ConvTranspose) entry meets C/g·Πk weights."""
        w = node.const(1)
        side = node.output_shapes[0] if node.op_type == "Conv" else node.input_shapes[0]
        per_entry = math.prod(w.shape[2:]) * (w.shape[1] if node.op_type == "Conv" else w.shape[1])
        return float(math.prod(side) * per_entry)

    def conv_form(self, node):
        """The linear part (bias dropped) with the resolved ONNX pads, for segment folding."""
        from lipgraph.certify.convfold import ConvForm
        w = node.const(1)
        _, strides, dil, pads = geometry(node, w.shape, node.input_shapes[0])
        transpose = node.op_type == "ConvTranspose"
        out_pad = list(node.attr("output_padding") or [0] * len(strides)) if transpose else None
        return ConvForm.conv(w, strides, dil, pads, node.attr("group", 1), transpose, out_pad)

    def abs_linear(self, node, r):
        """The convolution with |W| and no bias applied to r (never forming |A|)."""
        return self.forward(node, r, torch.as_tensor(np.abs(np.asarray(node.const(1), np.float64))))


@rule("Conv", versions=(11, 22), kind=Kind.AFFINE)
class Conv(_ConvBase):
    """Conv with a constant kernel: ‖linear part‖ ≤ max_ω σ_max(K̂(ω)) (DFT on a large grid).

    Bound: lipgraph.certify.conv's certified norm (design §4): the materialised operator's float64
      SVD for small maps; otherwise the DFT bound max_ω σ_max(K̂(ω)) on a grid N ≥ n + (k−1)·d
      (padding embeds isometrically, cropping and striding project, so strides, dilations,
      groups, asymmetric pads and auto_pad are all covered), tightened by a banded Gram proof
      when affordable.
    Exactness: certified upper bound; the SVD and Gram proof are within rounding / ≈0.02 %,
      the DFT bound is +0.2–0.6 % on 3×3 at 28×28, up to +9–17 % for 5×5 on 8×8.
    Assumptions: W and B constant; the bias is a shift and does not count.
    References: ONNX Conv; Sedghi, Gupta & Long, "The singular values of convolutional
      layers" (ICLR 2019); Delattre et al., Gram iteration (ICML 2023).
    """

    def forward(self, node, x, w, b=None):
        d = x.dim() - 2
        _, strides, dil, pads = geometry(node, tuple(w.shape), tuple(x.shape))
        x = F.pad(x, _torch_pad(pads[:d], pads[d:]))
        return _CONV[d](x, w.to(x.dtype), None if b is None else b.to(x.dtype), stride=strides,
                        dilation=dil, groups=node.attr("group", 1))


@rule("ConvTranspose", versions=(11, 22), kind=Kind.AFFINE)
class ConvTranspose(_ConvBase):
    """ConvTranspose with a constant kernel: ‖linear part‖ ≤ max_ω σ_max(K̂(ω)) (adjoint of a conv).

    Bound: the certified convolution norm of lipgraph.certify.conv with transpose=True: a
      transposed convolution is the adjoint of a strided convolution followed by cropping
      (pads) and zero extension (output_padding), so the DFT bound of the kernel on a grid
      N ≥ s·(n−1) + (k−1)·d + 1 holds; output_shape and auto_pad only change the crop (an
      output_shape past the full output appends zero rows at the end, which add nothing).
    Exactness: certified upper bound (see Conv).
    Assumptions: W and B constant; the bias is a shift.
    References: ONNX ConvTranspose (output size s·(n−1) + output_padding + (k−1)·d + 1 −
      pads), as onnxruntime resolves auto_pad and output_shape (``_transpose_pads``); Sedghi
      et al. 2019.
    """

    def forward(self, node, x, w, b=None):
        d = x.dim() - 2
        _, strides, dil, pads = geometry(node, tuple(w.shape), tuple(x.shape))
        out_pad = list(node.attr("output_padding") or [0] * d)
        y = _CONV_T[d](x, w.to(x.dtype), None, stride=strides, dilation=dil, groups=node.attr("group", 1))
        # full transposed output, then crop pads / extend with output_padding (negative F.pad crops)
        y = F.pad(y, _torch_pad([-p for p in pads[:d]], [op - p for op, p in zip(out_pad, pads[d:])]))
        if b is not None:
            y = y + b.to(y.dtype).reshape((1, -1) + (1,) * d)
        return y
