"""Elementwise arithmetic: Add, Sub, Sum (COMBINE), Neg, and Mul/Div by a constant (AFFINE).

Add, Sub and Sum are COMBINE whatever the number of analysed inputs: with one analysed input
the others are constants and the node is a shift plus a broadcast, whose partial bound
√(copies) ``bounds`` gives like any other; AutoLip sums the partial bounds. Mul and Div are
AFFINE only with a constant factor; Mul/Div of two analysed tensors has no global bound and
is not applicable globally; on an input box it has partial bounds from the other factor's
range (``local_bounds``, design §9: Δ(ab) = Δa⊙b(x) + a(y)⊙Δb).

The one norm computed here (``scaled_broadcast_norm``): x ↦ c ⊙ broadcast(x). Each output
entry reads exactly one input entry, so the operator's columns have disjoint supports, its
Gram matrix is diagonal, and its norm is max over input entries j of √(Σ c_o² over the
outputs o that copy j). ``broadcast_gain`` is the case c = 1.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from lipgraph.certify.intervals import abs_range, mul, reciprocal, sup_abs
from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import CERT_MARGIN, Bound, Label, certify
from lipgraph.registry import Kind, Rule, rule


def broadcast_gain(node, i: int) -> float:
    """‖x ↦ broadcast(x)‖ = √(copies): broadcasting input i to the output shape copies
    each entry numel(out)/numel(in) times."""
    return math.sqrt(node.numel_out() / node.numel_in(i))


def _broadcast_bounds(node) -> dict[int, Bound]:
    """Partial bounds of a sum or difference of broadcast inputs: √(copies) each, exact."""
    return {i: Bound(broadcast_gain(node, i), Label.EXACT, "broadcast") for i in node.dynamic_indices}


def _channel_factor(const, in_shape, out_shape):
    """A constant factor as one value per channel of an (N, C, *spatial) input, or None when it
    broadcasts the input or varies along another axis (then the op is not a conv form)."""
    if const is None or in_shape is None or tuple(in_shape) != tuple(out_shape) or len(in_shape) < 3:
        return None
    c = np.asarray(const, dtype=np.float64)
    if c.ndim > len(in_shape):
        return None
    c = c.reshape((1,) * (len(in_shape) - c.ndim) + c.shape)
    if any(n != 1 for a, n in enumerate(c.shape) if a != 1) or c.shape[1] not in (1, in_shape[1]):
        return None
    return np.broadcast_to(c.reshape(-1), (in_shape[1],))


def _sum_forms(node, signs=None):
    """{analysed input: ±identity} for a sum/difference without broadcasting (rank ≥ 3), else None."""
    from lipgraph.certify.convfold import ConvForm
    out = node.output_shapes[0]
    dyn = node.dynamic_indices
    if out is None or len(out) < 3 or any(tuple(node.input_shapes[i] or ()) != tuple(out) for i in dyn):
        return None
    return {i: ConvForm.channel_scale((signs or {}).get(i, 1.0), out[1]) for i in dyn}


def scaled_broadcast_norm(scale: np.ndarray, in_shape, out_shape) -> Bound:
    """‖x ↦ scale ⊙ broadcast(x)‖ for x of ``in_shape`` and output ``out_shape`` (numpy
    broadcasting). Without broadcasting of x it is max|scale| (exact); otherwise
    max_j √(Σ_{o copies j} scale_o²), computed in float64 and certified."""
    scale = np.asarray(scale, dtype=np.float64)
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    if math.prod(in_shape) == math.prod(out_shape):
        return Bound(float(np.max(np.abs(scale), initial=0.0)), Label.EXACT, "diagonal")
    sq = np.broadcast_to(scale ** 2, out_shape)
    lead = len(out_shape) - len(in_shape)
    sq = sq.sum(axis=tuple(range(lead))) if lead else sq
    axes = tuple(a for a, (n_in, n_out) in enumerate(zip(in_shape, sq.shape)) if n_in == 1 and n_out != 1)
    per_entry = sq.sum(axis=axes) if axes else sq
    return Bound(certify(math.sqrt(float(np.max(per_entry, initial=0.0)))), Label.CERTIFIED, "diagonal-copy",
                 slack=CERT_MARGIN)


_UNSIGNED_WIDE = {torch.uint16, torch.uint32, torch.uint64}


def _elementwise(op, *xs):
    """Apply a binary ``op`` left to right; torch has no CPU arithmetic for uint16/32/64, so
    those run in int64 (wrapping identically modulo 2^bits) and are cast back."""
    dtype = xs[0].dtype
    wide = dtype in _UNSIGNED_WIDE
    out = xs[0].to(torch.int64) if wide else xs[0]
    for x in xs[1:]:
        out = op(out, x.to(torch.int64) if wide else x)
    return out.to(dtype) if wide else out


@rule("Add", versions=(7, 13, 14), kind=Kind.COMBINE)
class Add(Rule):
    """Add: partial constant √(copies) per analysed input (1 without broadcasting); AutoLip sums.

    Bound: L = Σ_i √(numel(out)/numel(in_i))·L_i over analysed inputs.
    Exactness: exact per input; the sum is the triangle inequality (exact for one input).
    Assumptions: none (a constant operand is a shift).
    References: ONNX Add.
    """

    monotone = True

    def forward(self, node, a, b):
        return _elementwise(torch.add, a, b)

    def bounds(self, node):
        return _broadcast_bounds(node)

    def conv_form(self, node):
        return _sum_forms(node)


@rule("Sub", versions=(7, 13, 14), kind=Kind.COMBINE)
class Sub(Rule):
    """Sub: partial constant √(copies) per analysed input (1 without broadcasting); AutoLip sums.

    Bound: L = Σ_i √(numel(out)/numel(in_i))·L_i; the sign of the subtrahend does not change
      a norm.
    Exactness: exact per input; the sum is the triangle inequality (exact for one input).
    Assumptions: none (a constant operand is a shift).
    References: ONNX Sub.
    """

    def forward(self, node, a, b):
        return _elementwise(torch.sub, a, b)

    def interval(self, node, a, b):
        return a[0] - b[1], a[1] - b[0]

    def bounds(self, node):
        return _broadcast_bounds(node)

    def conv_form(self, node):
        return _sum_forms(node, {1: -1.0})


@rule("Sum", versions=(8, 13), kind=Kind.COMBINE)
class Sum(Rule):
    """Sum (variadic): partial constant √(copies) per analysed input; AutoLip sums.

    Bound: L = Σ_i √(numel(out)/numel(in_i))·L_i over analysed inputs.
    Exactness: exact per input; the sum is the triangle inequality.
    Assumptions: none (constant operands are shifts).
    References: ONNX Sum (multidirectional broadcasting).
    """

    monotone = True

    def forward(self, node, *xs):
        return _elementwise(torch.add, *xs)

    def bounds(self, node):
        return _broadcast_bounds(node)

    def conv_form(self, node):
        return _sum_forms(node)


@rule("Neg", versions=(6, 13), kind=Kind.AFFINE)
class Neg(Rule):
    """Neg: norm 1.

    Bound: ‖−I‖ = 1. Exactness: exact. Assumptions: none. References: ONNX Neg.
    """

    def forward(self, node, x):
        return -x

    def certified_norm(self, node):
        return Bound(1.0, Label.EXACT, "negation")

    def abs_linear(self, node, r):
        return r

    def conv_form(self, node):
        """−identity as a per-channel scale (one analysed input: a ConvForm, not a dict)."""
        forms = _sum_forms(node, {0: -1.0})
        return None if forms is None else forms[0]


def _range_scaled_norm(scale: np.ndarray, in_shape, out_shape, method: str) -> Bound:
    """``scaled_broadcast_norm`` of an entrywise sup from a range (∞ when a sup is ∞), certified."""
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), tuple(out_shape))
    if not np.isfinite(scale).all():
        return Bound(math.inf, Label.CERTIFIED, method)
    b = scaled_broadcast_norm(scale, in_shape, out_shape)
    return Bound(certify(b.value), Label.CERTIFIED, method, slack=2 * CERT_MARGIN)


def _analysed_index(node) -> int:
    """The one analysed input of a binary Mul; not applicable when both are analysed."""
    dyn = node.dynamic_indices
    if len(dyn) != 1:
        raise RuleNotApplicable(f"{node.op_type} of two tensors computed from the input has no global "
                                "Lipschitz bound (bilinear)" if len(dyn) > 1 else
                                f"{node.op_type} has no analysed input")
    return dyn[0]


@rule("Mul", versions=(7, 13, 14), kind=Kind.AFFINE)
class Mul(Rule):
    """Mul by a constant c: norm max|c|, or max_j √(Σ c² over the copies of x_j) when c
    broadcasts x to a larger shape.

    Bound: x ↦ c ⊙ broadcast(x) (either operand may be the analysed one): the columns of
      this operator have disjoint supports, so its norm is the largest column norm.
    Exactness: exact (max|c| without broadcasting of x); certified (float64 plus margin, equal
      to the true norm) with broadcasting.
    Assumptions: exactly one operand is analysed; Mul of two analysed tensors is bilinear and
      not applicable.
    References: ONNX Mul.
    """

    box_only = True     # refused only as a product/quotient of computed tensors

    def check(self, node):
        _analysed_index(node)

    def forward(self, node, a, b):
        return _elementwise(torch.mul, a, b)

    def interval(self, node, a, b):
        return mul(a, b)

    def local_bounds(self, node, ranges):
        """Δ(ab) = Δa⊙b(x) + a(y)⊙Δb: the partial bound in a is ‖x ↦ B ⊙ broadcast(x)‖ with B the
        entrywise sup |b| over b's range (and symmetrically), ∞ where that range is unbounded."""
        out = {}
        for i in node.dynamic_indices:
            other = sup_abs(ranges[1 - i]).numpy()
            out[i] = _range_scaled_norm(other, node.input_shapes[i], node.output_shapes[0], "product-range")
        return out

    def certified_norm(self, node):
        i = _analysed_index(node)
        return scaled_broadcast_norm(node.const(1 - i), node.input_shapes[i], node.output_shapes[0])

    def conv_form(self, node):
        """A per-channel constant factor is a per-channel scale (segment folding)."""
        from lipgraph.certify.convfold import ConvForm
        i = _analysed_index(node)
        c = _channel_factor(node.const(1 - i), node.input_shapes[i], node.output_shapes[0])
        return None if c is None else ConvForm.channel_scale(c, node.input_shapes[i][1])


@rule("Div", versions=(7, 13, 14), kind=Kind.AFFINE)
class Div(Rule):
    """Div by a constant c: norm max|1/c|, or max_j √(Σ c⁻² over the copies of x_j) when c
    broadcasts x to a larger shape.

    Bound: x ↦ (1/c) ⊙ broadcast(x), as Mul (see there).
    Exactness: certified (1/c rounded in float64, plus margin); equal to the true norm.
    Assumptions: the dividend is the analysed input and the divisor a constant with no zero
      entry; a computed divisor (x ↦ c/x is not globally Lipschitz) or a zero divisor is not
      applicable. Floating-point division only.
    References: ONNX Div.
    """

    box_only = True     # refused only as a product/quotient of computed tensors

    def check(self, node):
        if node.has_input(1) and node.dynamic[1]:
            raise RuleNotApplicable("no global Lipschitz bound: Div by a tensor computed from the input "
                                    "(x ↦ c/x has slope −c/x², unbounded near 0)")
        c = node.const(1)
        if c is not None and np.any(np.asarray(c) == 0):
            raise RuleNotApplicable("Div by a constant with a zero entry")
        if c is not None and not np.issubdtype(np.asarray(c).dtype, np.floating):
            raise RuleNotApplicable("integer Div (truncating) is not affine")

    def forward(self, node, a, b):
        if not a.is_floating_point():
            return torch.div(a, b, rounding_mode="trunc")
        return a / b

    def interval(self, node, a, b):
        if not a[0].is_floating_point():
            return None
        return mul(a, reciprocal(b))

    def local_bounds(self, node, ranges):
        """∂/∂a: sup|1/b|; ∂/∂b: sup|a|/inf|b|² (Δ(a/b) = Δa/b(x) − a(y)Δb/(b(x)b(y))), entrywise over
        the ranges; a divisor range containing 0 is not applicable."""
        if not ranges[0][0].is_floating_point():
            raise RuleNotApplicable("integer Div (truncating) is not Lipschitz")
        d = abs_range(ranges[1])[0].numpy()
        if node.dynamic[1] and not (d > 0).all():
            raise RuleNotApplicable("the divisor's range on the box contains 0")
        out = {}
        with np.errstate(divide="ignore"):
            inv = 1.0 / d
        if node.dynamic[0]:
            out[0] = _range_scaled_norm(inv, node.input_shapes[0], node.output_shapes[0], "quotient-range")
        if node.dynamic[1]:
            out[1] = _range_scaled_norm(sup_abs(ranges[0]).numpy() * inv * inv, node.input_shapes[1],
                                        node.output_shapes[0], "quotient-range")
        return out

    def certified_norm(self, node):
        inv = 1.0 / np.asarray(node.const(1), dtype=np.float64)
        b = scaled_broadcast_norm(inv, node.input_shapes[0], node.output_shapes[0])
        return Bound(certify(b.value), Label.CERTIFIED, b.method, slack=2 * CERT_MARGIN)

    def conv_form(self, node):
        """Division by a per-channel constant is a per-channel scale 1/c (segment folding)."""
        from lipgraph.certify.convfold import ConvForm
        c = _channel_factor(node.const(1), node.input_shapes[0], node.output_shapes[0])
        return None if c is None else ConvForm.channel_scale(1.0 / c, node.input_shapes[0][1])
