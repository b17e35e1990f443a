"""Max and min, elementwise (Max, Min) and reduced (ReduceMax, ReduceMin), the reductions
ReduceSum (AFFINE) and ReduceL2 (NONLINEAR), and the cumulative sum CumSum (AFFINE).

The one inequality behind the max/min rules: |max_i a_i − max_i b_i| ≤ max_i |a_i − b_i| (and
the same for min). For an elementwise Max of broadcast inputs, output entry o reads entry
src_i(o) of input i, so |Δy_o|² ≤ Σ_i |Δa_i[src_i(o)]|², and summing over o counts every entry
of input i numel(out)/numel(a_i) times (broadcasting copies every entry equally):
‖Δy‖² ≤ Σ_i copies_i·‖Δa_i‖². That is COMBINE with partial constants √copies_i combined in ℓ2.
For a reduction over disjoint groups G: ‖Δy‖² = Σ_G |max Δ…|² ≤ Σ_G ‖Δx_G‖² = ‖Δx‖².
"""
from __future__ import annotations

import math

import numpy as np
import torch

from lipgraph.certify.intervals import abs_range
from lipgraph.labels import CERT_MARGIN, Bound, Label, certify
from lipgraph.registry import Kind, Rule, require_constant, rule
from lipgraph.rules.arithmetic import _elementwise, broadcast_gain
from lipgraph.rules.pooling import reduce_axes
from lipgraph.rules.shape import copies_bound, ints


class _Elementwise(Rule):
    """Max/Min of several (broadcast) tensors: partial constant √copies per analysed input, ℓ2."""

    combine = "l2"
    reduce = staticmethod(torch.maximum)
    monotone = True

    def forward(self, node, *xs):
        return _elementwise(type(self).reduce, *[x for x in xs if x is not None])   # uint16/32/64 via int64

    def bounds(self, node):
        return {i: Bound(broadcast_gain(node, i), Label.EXACT, "max-broadcast") for i in node.dynamic_indices}

    def accepts_infinite(self, node, i):
        """−inf in a Max operand (+inf in a Min operand) never wins: the jax2tf idiom Max(−inf, x)."""
        value = node.const(i)
        never_wins = -np.inf if type(self).reduce is torch.maximum else np.inf
        return value is not None and bool(np.all(np.isfinite(value) | (value == never_wins)))


@rule("Max", versions=(8, 12, 13), kind=Kind.NONLINEAR)
class Max(_Elementwise):
    """Max (variadic, broadcasting): partial constant √(copies) per analysed input, combined in ℓ2.

    Bound: |max_i a_i − max_i a′_i| ≤ max_i |Δa_i| ≤ √(Σ_i Δa_i²) per output entry; summed over
      the output, input i's entries are counted copies_i = numel(out)/numel(a_i) times, so
      ‖Δy‖ ≤ √(Σ_i copies_i‖Δa_i‖²) (see the module docstring).
    Exactness: exact per input (perturb an input where it is the strict maximum); the ℓ2
      combination of several analysed inputs is an upper bound.
    Assumptions: none; constant operands (the jax2tf idiom Max(−inf, x) included) contribute
      nothing.
    References: ONNX Max.
    """

    reduce = staticmethod(torch.maximum)


@rule("Min", versions=(8, 12, 13), kind=Kind.NONLINEAR)
class Min(_Elementwise):
    """Min (variadic, broadcasting): partial constant √(copies) per analysed input, combined in ℓ2.

    Bound: as Max (min_i a_i = −max_i(−a_i)).
    Exactness: exact per input; the ℓ2 combination of several analysed inputs is an upper bound.
    Assumptions: none; constant operands (±inf included) contribute nothing.
    References: ONNX Min.
    """

    reduce = staticmethod(torch.minimum)


def _dims(node, x, axes, input_since=18):
    return reduce_axes(node, x.dim(), None if axes is None else ints(axes), input_since)


def _reduce(node, x, axes, fn, input_since=18):
    dims = _dims(node, x, axes, input_since)
    if dims is None:
        return x
    return fn(x, dims, bool(node.attr("keepdims", 1)))


def _extreme(x, dims, keepdim, largest: bool):
    """amax/amin; over an empty group ONNX gives the identity element −inf (max) / +inf (min)."""
    if any(x.shape[d] == 0 for d in dims):
        fill = -math.inf if largest else math.inf
        if x.dtype == torch.bool:
            fill = not largest
        elif not x.is_floating_point():
            fill = torch.iinfo(x.dtype).min if largest else torch.iinfo(x.dtype).max
        return torch.full_like(x.sum(dim=dims, keepdim=keepdim), fill)
    return x.amax(dim=dims, keepdim=keepdim) if largest else x.amin(dim=dims, keepdim=keepdim)


def _group_size(node, input_since=18) -> int:
    shape = node.input_shapes[0]
    dims = reduce_axes(node, len(shape), None, input_since)
    return 1 if dims is None else math.prod(shape[a] for a in dims)


class _Reduction(Rule):
    def check(self, node):
        require_constant(node, 1)

    def bounds(self, node):
        """1; 0 when the output is empty or a group is (an empty max/min/norm is a constant)."""
        constant = node.numel_out() == 0 or _group_size(node) == 0
        return {0: Bound(0.0 if constant else 1.0, Label.EXACT, "max")}


@rule("ReduceMax", versions=(11, 12, 13, 18, 20), kind=Kind.NONLINEAR)
class ReduceMax(_Reduction):
    """ReduceMax: L = 1 (each output is a max over its own group; groups are disjoint).

    Bound: |max x_G − max y_G| ≤ max_{j∈G}|x_j − y_j| ≤ ‖x_G − y_G‖, summed in squares over
      disjoint groups: 1 (the identity for noop_with_empty_axes with no axes).
    Exactness: exact (perturb a group's strict maximum alone).
    Assumptions: the axes input (opset 18+) is constant.
    References: ONNX ReduceMax.
    """

    monotone = True

    def forward(self, node, x, axes=None):
        return _reduce(node, x, axes, lambda t, d, k: _extreme(t, d, k, True))


@rule("ReduceMin", versions=(11, 12, 13, 18, 20), kind=Kind.NONLINEAR)
class ReduceMin(_Reduction):
    """ReduceMin: L = 1 (each output is a min over its own group; groups are disjoint).

    Bound: as ReduceMax (min x_G = −max(−x_G)).
    Exactness: exact.
    Assumptions: the axes input (opset 18+) is constant.
    References: ONNX ReduceMin.
    """

    monotone = True

    def forward(self, node, x, axes=None):
        return _reduce(node, x, axes, lambda t, d, k: _extreme(t, d, k, False))


@rule("ReduceL2", versions=(11, 13, 18), kind=Kind.NONLINEAR)
class ReduceL2(_Reduction):
    """ReduceL2: L = 1 (each output is the ℓ2 norm of its own group; groups are disjoint).

    Bound: |‖x_G‖ − ‖y_G‖| ≤ ‖x_G − y_G‖ (triangle inequality), summed in squares over disjoint
      groups: 1. With noop_with_empty_axes and no axes each entry is its own group: |x|
      (as onnxruntime and the ONNX reference compute it), 1-Lipschitz too.
    Exactness: exact (scale one group along itself: x_G ↦ (1 + t)x_G).
    Assumptions: the axes input (opset 18+) is constant.
    References: ONNX ReduceL2.
    """

    def interval(self, node, x_range, *rest):
        """√(Σx²) is nondecreasing in every |x|: its value at the entrywise least and largest |x|."""
        a, b = abs_range(x_range)
        axes = rest[0][0] if rest and rest[0] is not None else None
        return self.forward(node, a, axes), self.forward(node, b, axes)

    def forward(self, node, x, axes=None):
        if _dims(node, x, axes) is None:   # no axes with noop_with_empty_axes: √(x²) entrywise
            return torch.abs(x)
        return _reduce(node, x, axes, lambda t, d, k: torch.linalg.vector_norm(t, dim=d, keepdim=k))


@rule("ReduceSum", versions=(11, 13), kind=Kind.AFFINE)
class ReduceSum(Rule):
    """ReduceSum: norm √(number of entries summed into each output).

    Bound: each output is 1ᵀx_G over a disjoint group of m entries: ‖1ᵀ‖ = √m (1 for the
      identity, noop_with_empty_axes with no axes).
    Exactness: exact (x constant on one group).
    Assumptions: the axes input (opset 13+) is constant.
    References: ONNX ReduceSum.
    """

    monotone = True

    def check(self, node):
        require_constant(node, 1)

    def forward(self, node, x, axes=None):
        return _reduce(node, x, axes, lambda t, d, k: t.sum(dim=d, keepdim=k), input_since=13)

    def certified_norm(self, node):
        if node.numel_out() == 0:
            return copies_bound(0, "empty")
        return copies_bound(_group_size(node, input_since=13), "sum")


def cumsum_norm(n: int) -> float:
    """‖L_n‖₂ of the n×n lower-triangular matrix of ones, 1/(2 sin(π/(2(2n+1)))) (0 for n = 0),
    rounded up by the certification margin (the float64 sine and division err by a few ulps)."""
    return certify(1.0 / (2.0 * math.sin(math.pi / (2 * (2 * n + 1))))) if n > 0 else 0.0


@rule("CumSum", versions=(11, 14), kind=Kind.AFFINE)
class CumSum(Rule):
    """CumSum along one axis of n entries: norm 1/(2 sin(π/(2(2n+1)))) (n − 1 entries if exclusive).

    Bound: along the axis the map is the lower-triangular matrix of ones L_n (reverse: J L_n J with
      J the flip, the same singular values; exclusive: L_{n−1} shifted by one position, with a zero
      row and column, so ‖L_{n−1}‖); the other axes are independent copies (block-diagonal, the
      same norm). The singular values of L_n are 1/(2 sin((2k−1)π/(2(2n+1)))), k = 1…n (L_n⁻¹ is
      the difference matrix: (L_n L_nᵀ)⁻¹ is the path-graph Laplacian with one Dirichlet and one
      Neumann end, eigenvalues 4 sin²((2k−1)π/(2(2n+1)))); the largest is at k = 1.
    Exactness: certified: the exact constant rounded up by the certification margin (the
      top singular vector of L_n realises it).
    Assumptions: axis constant.
    References: ONNX CumSum; Strang, "The discrete cosine transform" (1999), DCT-type eigenvectors.
    """

    def check(self, node):
        require_constant(node, 1)

    def forward(self, node, x, axis):
        dim = ints(axis)[0] % x.dim()
        if node.attr("reverse", 0):
            x = torch.flip(x, (dim,))
        y = torch.cumsum(x, dim=dim)
        if node.attr("exclusive", 0):   # shift by one: y_i = Σ_{j<i} x_j, a zero first entry
            y = torch.cat([torch.zeros_like(y.narrow(dim, 0, min(1, y.shape[dim]))),
                           y.narrow(dim, 0, max(y.shape[dim] - 1, 0))], dim=dim)
        return torch.flip(y, (dim,)) if node.attr("reverse", 0) else y

    def certified_norm(self, node):
        shape = node.input_shapes[0]
        n = shape[ints(node.const(1))[0] % len(shape)]
        if node.numel_in(0) == 0:
            return copies_bound(0, "empty")
        n = n - 1 if node.attr("exclusive", 0) else n
        return Bound(cumsum_norm(n), Label.CERTIFIED, "cumsum-closed-form", slack=CERT_MARGIN)

    def abs_linear(self, node, r):
        """The map's matrix has entries 0 and 1 (no offset): |A|·r is the cumulative sum of r."""
        return self.forward(node, r, torch.as_tensor(node.const(1)))
