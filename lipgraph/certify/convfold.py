"""Fold an affine segment into one convolution and certify it as a whole (design §4).

Bound: ‖A‖₂ of a segment whose linear part is again a zero-padded convolution — Conv →
BatchNormalization, Conv → Mul/Div by per-channel constants, Conv → Add/Sub of a constant,
x + Conv(x) (identity residual, stride 1, a tap on the centre), sums of convolutions with the
same stride and output, and chains of these — by ``convnorm.conv_certified_norm`` on the folded
kernel, instead of the product of the parts' norms.

Exactness: ``certified`` (whatever route ``conv_certified_norm`` takes); a folded per-channel
scale is ``max|s|``, certified.

Assumptions: the rules' ``conv_form`` (``registry.Rule``) describe their nodes' linear parts
correctly; every fold is checked once against the segment's own float64 torch function on a
random input, and discarded on a mismatch (never a silent wrong norm).

Engine only: ops are known through ``ConvForm`` values that rules return. What folds:

* scale ∘ scale, scale ∘ conv, conv ∘ scale (per-channel factors move into the kernel);
* sums (COMBINE nodes whose rule gives a form per analysed input) of convolutions with the
  same input and output shape and stride: the kernels are placed on a common tap window
  (dilations expanded into zero taps, groups coarsened to the gcd). The identity is the 1×1
  convolution with weight I, so x + Conv(x) folds when Conv keeps the shape at stride 1.

What does not fold: conv ∘ conv. With zero padding, Conv₂(Conv₁(x)) is *not* a convolution:
Conv₁'s output is cropped to its own grid before Conv₂ pads it with zeros again, and that crop
is a spatial mask between the two kernels (near the border, Conv₂ sees zeros where the full
convolution K₂ ∗ K₁ would see Conv₁'s values). Such segments keep the product of the parts'
norms unless they are small enough to materialise. Transposed convolutions fold with
per-channel scales only.

References: Sedghi, Gupta & Long, ICLR 2019; Delattre et al., ICML 2023 (``convnorm``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from lipgraph.labels import CERT_MARGIN, Bound, Label, certify

__all__ = ["ConvForm", "compose", "add", "fold", "certified_norm"]


@dataclass(frozen=True)
class ConvForm:
    """The linear part of a node as a convolution or a per-channel scale, on (B, C, *spatial).

    A convolution: ``weight`` (C_out, C_in/groups, *k) — for ``transpose`` the ONNX ConvTranspose
    layout (C_in, C_out/groups, *k) — with ONNX ``pads`` (begins…, ends…), ``strides``,
    ``dilations``, ``groups`` and ``output_padding`` (transpose only). A per-channel scale
    y[:, c] = scale[c]·x[:, c]: ``weight`` None and ``scale`` (C,). Use ``ConvForm.channel_scale``
    and ``ConvForm.identity``.
    """

    weight: np.ndarray | None = None
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    groups: int = 1
    transpose: bool = False
    output_padding: tuple[int, ...] = ()
    scale: np.ndarray | None = None

    @staticmethod
    def channel_scale(scale, channels: int) -> "ConvForm":
        """Per-channel factor (a scalar is broadcast to ``channels``)."""
        s = np.broadcast_to(np.asarray(scale, dtype=np.float64).reshape(-1), (channels,)).copy()
        return ConvForm(scale=s)

    @staticmethod
    def identity(channels: int) -> "ConvForm":
        return ConvForm(scale=np.ones(channels))

    @staticmethod
    def conv(weight, strides, dilations, pads, groups=1, transpose=False, output_padding=None) -> "ConvForm":
        w = np.asarray(weight, dtype=np.float64)
        dim = w.ndim - 2
        return ConvForm(weight=w, strides=tuple(int(s) for s in strides), dilations=tuple(int(d) for d in dilations),
                        pads=tuple(int(p) for p in pads), groups=int(groups), transpose=bool(transpose),
                        output_padding=tuple(int(p) for p in (output_padding or (0,) * dim)))

    @property
    def is_scale(self) -> bool:
        return self.weight is None


# ------------------------------------------------------------------------------ algebra
def compose(outer: ConvForm, inner: ConvForm) -> ConvForm | None:
    """outer ∘ inner, or None when it is not a convolution (conv ∘ conv, see module docstring)."""
    if outer.is_scale and inner.is_scale:
        return ConvForm(scale=outer.scale * inner.scale) if outer.scale.shape == inner.scale.shape else None
    if outer.is_scale:
        return _scale_output(inner, outer.scale)
    if inner.is_scale:
        return _scale_input(outer, inner.scale)
    return None


def _scale_output(conv: ConvForm, s: np.ndarray) -> ConvForm | None:
    w, g, k = conv.weight, conv.groups, (1,) * (conv.weight.ndim - 2)
    if not conv.transpose:
        if s.shape[0] != w.shape[0]:
            return None
        return replace(conv, weight=w * s.reshape(-1, 1, *k))
    c_in, c_out_g = w.shape[0], w.shape[1]
    if s.shape[0] != c_out_g * g:
        return None
    scaled = w.reshape(g, c_in // g, c_out_g, *w.shape[2:]) * s.reshape(g, 1, c_out_g, *k)
    return replace(conv, weight=scaled.reshape(w.shape))


def _scale_input(conv: ConvForm, s: np.ndarray) -> ConvForm | None:
    w, g, k = conv.weight, conv.groups, (1,) * (conv.weight.ndim - 2)
    if conv.transpose:
        return replace(conv, weight=w * s.reshape(-1, 1, *k)) if s.shape[0] == w.shape[0] else None
    c_out, c_in_g = w.shape[0], w.shape[1]
    if s.shape[0] != c_in_g * g:
        return None
    scaled = w.reshape(g, c_out // g, c_in_g, *w.shape[2:]) * s.reshape(g, 1, c_in_g, *k)
    return replace(conv, weight=scaled.reshape(w.shape))


def add(a: ConvForm, b: ConvForm, in_spatial: tuple[int, ...], out_spatial: tuple[int, ...]) -> ConvForm | None:
    """a + b for two forms on the same input (spatial ``in_spatial``) with the same output
    (``out_spatial``), or None when the sum is not a convolution we build (transposes, different
    strides).

    Stride-s convolutions read y[i] = Σ_u K[u + p_begin]·x[s·i + u] (dense kernel K, dilation
    expanded); two of them with the same s and output grid sum to the convolution whose kernel
    is the sum of both placed on the union of their tap offsets u, with p_begin = −min u and
    p_end chosen so the output grid is unchanged (negative: a crop of a tail nobody reads).
    """
    if a.is_scale and b.is_scale:
        return ConvForm(scale=a.scale + b.scale) if a.scale.shape == b.scale.shape else None
    dim = len(in_spatial)
    a, b = (_scale_as_conv(f, dim) if f.is_scale else f for f in (a, b))
    if a.transpose or b.transpose or a.strides != b.strides or a.weight.shape[0] != b.weight.shape[0]:
        return None
    groups = math.gcd(a.groups, b.groups)
    ka, kb = (_regroup(_undilate(f.weight, f.dilations), f.groups, groups) for f in (a, b))
    if ka.shape[1] != kb.shape[1]:
        return None
    lo = [min(-a.pads[d], -b.pads[d]) for d in range(dim)]
    hi = [max(ka.shape[2 + d] - 1 - a.pads[d], kb.shape[2 + d] - 1 - b.pads[d]) for d in range(dim)]
    kernel = np.zeros(ka.shape[:2] + tuple(h - l + 1 for l, h in zip(lo, hi)))
    for k, f in ((ka, a), (kb, b)):
        at = tuple(slice(-f.pads[d] - lo[d], -f.pads[d] - lo[d] + k.shape[2 + d]) for d in range(dim))
        kernel[(slice(None), slice(None)) + at] += k
    begin = [-l for l in lo]
    end = [(m - 1) * s + kernel.shape[2 + d] - n - begin[d]
           for d, (n, m, s) in enumerate(zip(in_spatial, out_spatial, a.strides))]
    return ConvForm.conv(kernel, a.strides, (1,) * dim, begin + end, groups)


def _scale_as_conv(f: ConvForm, dim: int) -> ConvForm:
    c = f.scale.shape[0]
    return ConvForm.conv(f.scale.reshape(c, 1, *(1,) * dim), (1,) * dim, (1,) * dim, (0,) * 2 * dim, groups=c)


def _undilate(w: np.ndarray, dilations: tuple[int, ...]) -> np.ndarray:
    """The same taps as a dense kernel with dilation 1 (zeros between the taps)."""
    if all(d == 1 for d in dilations):
        return w
    shape = tuple(d * (k - 1) + 1 for d, k in zip(dilations, w.shape[2:]))
    out = np.zeros(w.shape[:2] + shape)
    out[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dilations)] = w
    return out


def _regroup(w: np.ndarray, groups: int, coarse: int) -> np.ndarray:
    """A grouped kernel (groups g) as the same operator with ``coarse`` groups (coarse | g)."""
    if groups == coarse:
        return w
    c_out, c_in_g = w.shape[0], w.shape[1]
    c_in = c_in_g * groups
    dense = np.zeros((c_out, c_in) + w.shape[2:])
    per_out = c_out // groups
    for gi in range(groups):
        dense[gi * per_out:(gi + 1) * per_out, gi * c_in_g:(gi + 1) * c_in_g] = w[gi * per_out:(gi + 1) * per_out]
    out_c, in_c = c_out // coarse, c_in // coarse
    return np.concatenate([dense[gi * out_c:(gi + 1) * out_c, gi * in_c:(gi + 1) * in_c] for gi in range(coarse)])


# ------------------------------------------------------------------------------ segments
def fold(steps, entry: str, exit_: str, shape) -> ConvForm | None:
    """The folded form of a segment, or None.

    ``steps``: in graph order, (output tensor, {input tensor: ConvForm or None, …}) — the node's
    output is Σ over its analysed inputs t of form_t(tensor t) (plus a constant); ``shape(t)``
    gives a tensor's shape (B, C, *spatial). A None anywhere means the segment does not fold.
    """
    forms: dict[str, ConvForm] = {entry: ConvForm.identity(shape(entry)[1])} if len(shape(entry)) >= 3 else {}
    if not forms:
        return None
    in_spatial = tuple(shape(entry)[2:])
    for out, terms in steps:
        if len(shape(out)) != len(shape(entry)) or not terms:
            return None
        total = None
        for tensor, form in terms:
            if form is None or tensor not in forms:
                return None
            term = compose(form, forms[tensor])
            if term is None:
                return None
            total = term if total is None else add(total, term, in_spatial, tuple(shape(out)[2:]))
            if total is None:
                return None
        forms[out] = total
    return forms.get(exit_)


def certified_norm(form: ConvForm, in_shape, *, materialize_limit: int = 4_000_000,
                   estimate: float | None = None, prove: bool = True, first: Bound | None = None) -> Bound:
    """Certified ‖A‖₂ of a folded form applied to tensors of shape ``in_shape`` (B, C, *spatial);
    ``prove=False``: without the Gram proof (the cheap certificate first, see ``UnitBuilder``);
    ``first``: that cheap certificate, when the Gram proof is tried afterwards (not recomputed)."""
    if form.is_scale:
        return Bound(certify(float(np.max(np.abs(form.scale), initial=0.0))), Label.CERTIFIED, "folded-scale",
                     slack=CERT_MARGIN)
    if not form.transpose and all(k == 1 for k in form.weight.shape[2:]):
        return _pointwise_norm(form)
    from lipgraph.certify.conv import conv_certified_norm
    b = conv_certified_norm(form.weight, tuple(in_shape[2:]), strides=form.strides, dilations=form.dilations,
                            pads=form.pads, groups=form.groups, transpose=form.transpose,
                            output_padding=form.output_padding if form.transpose else None,
                            materialize_limit=materialize_limit, estimate=estimate, dft=_unfolded(first),
                            **({} if prove else {"proof_flops": 0.0}))
    return Bound(b.value, b.label, f"folded-conv/{b.method}", slack=b.slack)


def start_vector(form: ConvForm, in_shape):
    """A start for power iteration on the folded convolution (``conv.conv_start_vector``), as a
    float64 tensor of ``in_shape`` (B, C, *spatial), the same in every batch entry, plus 1 % of a
    random unit vector (so that no direction is missed by symmetry); None for scales, pointwise
    and transposed convolutions, and maps under 8 kernel reaches (polyphase) per dimension, where
    the zero padding shapes the top vector (a random start is as good or better there)."""
    import torch
    if form.is_scale or form.transpose or all(k == 1 for k in form.weight.shape[2:]):
        return None
    reach = [-(-(d * (k - 1) + 1) // s) for k, s, d in zip(form.weight.shape[2:], form.strides, form.dilations)]
    if any(n < 8 * r * s for n, r, s in zip(in_shape[2:], reach, form.strides)):
        return None  # a small map: its top vector is no plane wave (measured: slower than random)
    from lipgraph.certify.conv import conv_start_vector
    x = conv_start_vector(form.weight, tuple(in_shape[2:]), strides=form.strides, dilations=form.dilations,
                          pads=form.pads, groups=form.groups)
    if x is None:
        return None
    noise = torch.randn(in_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return x.expand(*in_shape) / math.sqrt(in_shape[0]) + 0.01 * noise / torch.linalg.vector_norm(noise)


def _unfolded(b: Bound | None) -> Bound | None:
    """A ``folded-conv/dft`` bound of this module as ``conv_certified_norm``'s own ``dft`` bound."""
    if b is None or b.method != "folded-conv/dft":
        return None
    return Bound(b.value, b.label, "dft", slack=b.slack)


def _pointwise_norm(form: ConvForm) -> Bound:
    """A 1×1 convolution (any stride, pads): y[:, i] = W·x[:, s·i − p] or 0, every output position
    reading a distinct input position, so A = (I ⊗ W)·P with ‖P‖ ≤ 1 and ‖A‖ ≤ max_g σ_max(W_g)
    (equality once one output reads a real position). Float64 eigenvalues of the per-group Gram
    matrices, plus the ``certify`` margin."""
    w = form.weight.reshape(form.groups, form.weight.shape[0] // form.groups, -1)
    gram = np.einsum("gij,gkj->gik", w, w) if w.shape[1] <= w.shape[2] else np.einsum("gji,gjk->gik", w, w)
    top = float(np.max(np.linalg.eigvalsh(gram)[:, -1]))
    return Bound(certify(math.sqrt(max(top, 0.0))), Label.CERTIFIED, "folded-conv/pointwise", slack=CERT_MARGIN)


def apply(form: ConvForm, x):
    """The folded linear map on a float64 torch tensor (used by the fold's self-check)."""
    import torch
    import torch.nn.functional as F
    d = x.dim() - 2
    if form.is_scale:
        return x * torch.as_tensor(form.scale, dtype=x.dtype).reshape(1, -1, *(1,) * d)
    w = torch.as_tensor(form.weight, dtype=x.dtype)
    if not form.transpose:
        torch_pads = [p for i in reversed(range(d)) for p in (form.pads[i], form.pads[i + d])]
        conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
        return conv(F.pad(x, torch_pads), w, stride=form.strides, dilation=form.dilations, groups=form.groups)
    conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[d - 1]
    y = conv_t(x, w, stride=form.strides, dilation=form.dilations, groups=form.groups)
    crop = [p for i in reversed(range(d)) for p in (-form.pads[i], form.output_padding[i] - form.pads[i + d])]
    return F.pad(y, crop)
