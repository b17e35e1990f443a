"""Pooling and mean reductions: MaxPool, GlobalMaxPool (NONLINEAR), AveragePool,
GlobalAveragePool, ReduceMean (AFFINE).

Every windowed pool here is separable: a window is a box, so a max over it is an iterated
max over the spatial axes, and an average over it is a Kronecker product of 1-D averaging
matrices (the divisor of a box is the product of the per-axis counts, with or without
padding counted). ``_axis_geometry`` computes, once per spatial axis, which input
positions each output window covers — the one piece of logic that both the torch semantics
and the bounds are built from, so they cannot disagree.

GlobalAveragePool and ReduceMean use convnorm's ``global_avgpool_norm`` (design §4); AveragePool
norms the per-axis averaging matrices of ``_axis_geometry`` themselves. MaxPool counts window
overlaps on this node's actual geometry (exact, and never above convnorm's geometry-free
``maxpool_bound``, which the tests check).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import LADDER_SLACK, Bound, Label, certify
from lipgraph.registry import Kind, Rule, require_constant, rule


@dataclass(frozen=True)
class AxisGeometry:
    """One spatial axis of a pooling window: ``positions[o]`` are the input coordinates
    (possibly in the padding, i.e. < 0 or ≥ n) read by output ``o``."""

    n: int
    positions: np.ndarray          # (out, k) int
    pad_begin: int
    pad_end: int

    @property
    def out(self) -> int:
        return self.positions.shape[0]

    @property
    def inside(self) -> np.ndarray:
        """(out, k) mask: position lies in the input (not in any padding)."""
        return (self.positions >= 0) & (self.positions < self.n)

    def membership(self) -> np.ndarray:
        """(out, n) 0/1 matrix: input j is read by window o."""
        m = np.zeros((self.out, self.n))
        for o in range(self.out):
            m[o, self.positions[o][self.inside[o]]] = 1.0
        return m

    def divisor(self, count_include_pad: bool) -> np.ndarray:
        """Per-window count along this axis: input entries only, or input plus explicit
        padding (positions past the explicit padding, added by ceil_mode, never count)."""
        if count_include_pad:
            within = (self.positions >= -self.pad_begin) & (self.positions < self.n + self.pad_end)
            return within.sum(axis=1).astype(np.float64)
        return self.inside.sum(axis=1).astype(np.float64)

    def averaging(self, count_include_pad: bool) -> np.ndarray:
        return self.membership() / self.divisor(count_include_pad)[:, None]


def _c_div(a: int, b: int) -> int:
    """Integer division truncating toward zero (C++), for onnxruntime's size and pad rules."""
    return -(-a // b) if a < 0 else a // b


def _axis_geometry(n: int, k: int, s: int, dil: int, pad_begin: int, pad_end: int,
                   ceil_mode: bool, auto_pad: str) -> AxisGeometry:
    """Windows along one axis, following onnxruntime's output-size rule: floor (or ceil)
    of (n + pads − dil·(k−1) − 1)/s + 1, the division truncating toward zero when the window
    is wider than the padded input (0 outputs when wider by a stride or more); with ceil_mode
    a window that would start in the end padding is dropped; SAME_* gives ceil(n/s) outputs
    with total padding (out − 1)·s + span − n split in C++ integer division, total/2 at the
    start for SAME_UPPER, (total + 1)/2 for SAME_LOWER. The total is not clamped at 0: when
    it is negative (a stride wider than the kernel), the start "padding" is negative and the
    windows begin inside the input (n = 3, k = 1, s = 3: the one window reads x[1])."""
    span = dil * (k - 1) + 1
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = -(-n // s)
        total = (out - 1) * s + span - n
        pad_begin = _c_div(total, 2) if auto_pad == "SAME_UPPER" else _c_div(total + 1, 2)
        pad_end = total - pad_begin
    else:
        if auto_pad == "VALID":
            pad_begin = pad_end = 0
        num = n + pad_begin + pad_end - span
        # onnxruntime divides in C++, truncating toward zero: a window wider than the padded
        # input by less than a stride still gives one output (the spec's floor would give none)
        out = (-(-num // s) if ceil_mode else _c_div(num, s)) + 1
        if ceil_mode and (out - 1) * s >= n + pad_begin:
            out -= 1
    out = max(out, 0)   # a window wider than the padded input: an empty output (as onnxruntime)
    positions = (np.arange(out)[:, None] * s - pad_begin + dil * np.arange(k)[None, :]).astype(np.int64)
    return AxisGeometry(n, positions, pad_begin, pad_end)


def _pool_geometry(node, spatial: tuple[int, ...]) -> list[AxisGeometry]:
    """The per-axis geometry of a MaxPool/AveragePool node for the given spatial shape."""
    kernel = list(node.attr("kernel_shape"))
    nd = len(kernel)
    strides = list(node.attr("strides") or [1] * nd)
    dilations = list(node.attr("dilations") or [1] * nd)
    pads = list(node.attr("pads") or [0] * (2 * nd))
    auto_pad = node.attr("auto_pad", "NOTSET")
    ceil_mode = bool(node.attr("ceil_mode", 0))
    return [_axis_geometry(spatial[d], kernel[d], strides[d], dilations[d], pads[d], pads[nd + d],
                           ceil_mode, auto_pad) for d in range(nd)]


def _apply_along(x: torch.Tensor, dim: int, matrix: np.ndarray) -> torch.Tensor:
    """Apply a (out, n) matrix along ``dim`` of x."""
    m = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
    return torch.movedim(torch.movedim(x, dim, -1) @ m.T, -1, dim)


def _max_along(x: torch.Tensor, dim: int, geo: AxisGeometry) -> torch.Tensor:
    """Max over each window along ``dim``; padding reads the dtype's lowest finite value, so a
    window that reads only padding (possible with dilation) gives that constant, as onnxruntime
    does, never −inf (whose differences would be NaN in the linear part)."""
    lowest = torch.finfo(x.dtype).min if x.is_floating_point() else torch.iinfo(x.dtype).min
    fill_shape = list(x.shape)
    fill_shape[dim] = 1
    xp = torch.cat([x, torch.full(fill_shape, lowest, dtype=x.dtype, device=x.device)], dim)
    idx = np.where(geo.inside, geo.positions, geo.n).reshape(-1)
    g = xp.index_select(dim, torch.as_tensor(idx, device=x.device))
    shape = list(x.shape)
    shape[dim:dim + 1] = [geo.out, geo.positions.shape[1]]
    return g.reshape(shape).amax(dim=dim + 1)


def _check_pool(node) -> None:
    """Refuse what onnxruntime and the ONNX spec disagree on: SAME_* padding with dilation
    (onnxruntime sizes the padding without the dilation, the spec with it)."""
    dilations = node.attr("dilations") or []
    if node.attr("auto_pad", "NOTSET").startswith("SAME") and any(d != 1 for d in dilations):
        raise RuleNotApplicable(f"{node.op_type} with auto_pad={node.attr('auto_pad')} and dilations "
                                f"{list(dilations)}: onnxruntime and the ONNX spec disagree on the output size")


def _spatial(node) -> tuple[int, ...]:
    return tuple(node.input_shapes[0][2:])


@rule("MaxPool", versions=(8, 10, 11, 12, 22), kind=Kind.NONLINEAR)
class MaxPool(Rule):
    """MaxPool: L = √(max number of windows reading one input entry) ≤ √Π_d ceil(k_eff_d/s_d).

    Bound: ‖f(x) − f(y)‖² = Σ_o |max_{W_o} x − max_{W_o} y|² ≤ Σ_o max_{j∈W_o} |x_j − y_j|²
      ≤ Σ_j c_j |x_j − y_j|² ≤ (max_j c_j)·‖x − y‖², with c_j the number of windows that read
      entry j. Windows are boxes, so max_j c_j = Π_d (max count along axis d), computed from
      this node's kernel, strides, dilations, pads, auto_pad, ceil_mode and input size.
      With dilation 1 on a large input this is Π_d ceil(k_d/s_d); 1 when windows don't overlap.
    Exactness: exact. Take j with c_j maximal, x = e_j, y = 0: every window reading j has
      max 1 in x and max 0 in y (padding is never read as a value), so ‖f(x) − f(y)‖² = c_j.
    Assumptions: the optional Indices output is not supported (not applicable when the node
      names it); padding never wins the max (onnxruntime semantics); auto_pad SAME_* with
      dilation is refused (onnxruntime and the spec disagree there).
    References: ONNX MaxPool; design §4 (closed form √(ceil(k_h/s_h)·ceil(k_w/s_w))).
    """

    monotone = True     # a max, or an average with nonnegative weights and no offset

    def check(self, node):
        _check_pool(node)
        if len(node.outputs) > 1 and node.outputs[1]:
            raise RuleNotApplicable("MaxPool's Indices output is not supported")

    def forward(self, node, x):
        for d, geo in enumerate(_pool_geometry(node, tuple(x.shape[2:]))):
            x = _max_along(x, 2 + d, geo)
        return x

    def bounds(self, node):
        copies = math.prod(int(g.membership().sum(axis=0).max(initial=0)) for g in _pool_geometry(node, _spatial(node)))
        return {0: Bound(math.sqrt(copies), Label.EXACT, "maxpool-overlap")}


@rule("AveragePool", versions=(7, 10, 11, 19, 22), kind=Kind.AFFINE)
class AveragePool(Rule):
    """AveragePool is linear: ‖A‖ = Π_d σ_max(A_d), the 1-D averaging matrices per axis.

    Bound: the operator is A_1 ⊗ … ⊗ A_D on each (batch, channel) plane, where A_d (out_d ×
      n_d) has 1/divisor_d(o) at the input positions window o reads; the divisor of a box is
      the product of per-axis counts (input entries only for count_include_pad=0, input plus
      explicit padding for 1), so the Kronecker form is exact and ‖⊗A_d‖ = Π‖A_d‖.
    Exactness: certified (float64 eigenvalues of each small A_d's Gram matrix, plus margin);
      equal to the true norm. A_d is the matrix ``forward`` applies, so the two cannot disagree.
    Assumptions: none (pads, auto_pad, ceil_mode, dilations where the version has them,
      count_include_pad either way); auto_pad SAME_* with dilation is refused (onnxruntime
      and the spec disagree there), and so is count_include_pad before v19 with a (floor-mode)
      window wider than the padded input (onnxruntime's old kernels divide by the whole kernel).
    References: ONNX AveragePool; Kronecker-product norm identity (Horn & Johnson, Topics in
      Matrix Analysis, Thm 4.2.15).
    """

    monotone = True     # a max, or an average with nonnegative weights and no offset

    def check(self, node):
        _check_pool(node)
        if node.since_version < 19 and node.attr("count_include_pad", 0) and any(
                g.out and g.positions.max() >= g.n + g.pad_end for g in _pool_geometry(node, _spatial(node))):
            raise RuleNotApplicable("AveragePool (before v19) with count_include_pad and a window wider than the "
                                    "padded input: onnxruntime divides by the whole kernel there, unlike v19+ "
                                    "and ceil_mode windows (divisor clipped to the padded input)")

    def forward(self, node, x):
        cip = bool(node.attr("count_include_pad", 0))
        for d, geo in enumerate(_pool_geometry(node, tuple(x.shape[2:]))):
            x = _apply_along(x, 2 + d, geo.averaging(cip))
        return x

    def certified_norm(self, node):
        """Π_d σ_max(A_d) from the very matrices ``forward`` applies (``AxisGeometry.averaging``)."""
        from lipgraph.certify.dense import matrix_norm

        cip = bool(node.attr("count_include_pad", 0))
        value = math.prod(matrix_norm(g.averaging(cip)) for g in _pool_geometry(node, _spatial(node)))
        return Bound(certify(value), Label.CERTIFIED, "separable-svd", slack=LADDER_SLACK)


def _mean_norm(count: int) -> Bound:
    """‖x ↦ mean of groups of ``count`` entries‖ = ‖(1/count)·1ᵀ‖ = 1/√count, exact."""
    from lipgraph.certify.conv import global_avgpool_norm

    return global_avgpool_norm(count)


@rule("GlobalMaxPool", versions=(1, 22), kind=Kind.NONLINEAR)
class GlobalMaxPool(Rule):
    """GlobalMaxPool: L = 1 (one max over disjoint sets).

    Bound: |max x_W − max y_W| ≤ max_{j∈W}|x_j − y_j| ≤ ‖x_W − y_W‖ per (batch, channel), sum
      of squares over disjoint W ⇒ 1.
    Exactness: exact (perturb the maximal entry alone).
    Assumptions: none.
    References: ONNX GlobalMaxPool.
    """

    monotone = True     # a max, or an average with nonnegative weights and no offset

    def forward(self, node, x):
        return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)

    def bounds(self, node):
        return {0: Bound(1.0, Label.EXACT, "max")}


@rule("GlobalAveragePool", versions=(1, 22), kind=Kind.AFFINE)
class GlobalAveragePool(Rule):
    """GlobalAveragePool: ‖A‖ = 1/√m, m the number of spatial entries pooled.

    Bound: each output is (1/m)·1ᵀx_W over disjoint W of size m: norm 1/√m.
    Exactness: exact (x constant on one plane).
    Assumptions: none.
    References: ONNX GlobalAveragePool; design §4.
    """

    monotone = True     # a max, or an average with nonnegative weights and no offset

    def forward(self, node, x):
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)

    def certified_norm(self, node):
        return _mean_norm(math.prod(_spatial(node)))


def reduce_axes(node, rank: int, axes_input=None, input_since: int = 18) -> tuple[int, ...] | None:
    """Axes reduced by a Reduce* node (normalised, sorted); None means identity
    (noop_with_empty_axes with no axes). Axes are an attribute before ``input_since`` (18 for
    most Reduce ops, 13 for ReduceSum) and an optional input from then on."""
    if node.since_version >= input_since:
        axes = axes_input if axes_input is not None else node.const(1)
        axes = [] if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
        if not axes and node.attr("noop_with_empty_axes", 0):
            return None
    else:
        axes = list(node.attr("axes") or [])
    if not axes:
        return tuple(range(rank))
    return tuple(sorted(a % rank for a in axes))


@rule("ReduceMean", versions=(11, 13, 18), kind=Kind.AFFINE)
class ReduceMean(Rule):
    """ReduceMean: ‖A‖ = 1/√(number of entries averaged into each output).

    Bound: each output is the mean of a disjoint group of n entries: norm 1/√n (1 for the
      identity case noop_with_empty_axes=1 without axes).
    Exactness: exact.
    Assumptions: the axes input (opset 18+) is constant.
    References: ONNX ReduceMean.
    """

    monotone = True     # a max, or an average with nonnegative weights and no offset

    def check(self, node):
        if node.since_version >= 18:
            require_constant(node, 1)

    def forward(self, node, x, axes=None):
        dims = reduce_axes(node, x.dim(), None if axes is None else axes.cpu().numpy())
        if dims is None:
            return x
        return x.mean(dim=dims, keepdim=bool(node.attr("keepdims", 1))) if dims else x

    def certified_norm(self, node):
        shape = node.input_shapes[0]
        dims = reduce_axes(node, len(shape))
        return _mean_norm(1 if dims is None else math.prod(shape[a] for a in dims))
