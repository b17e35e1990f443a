"""Ops with no global Lipschitz bound (Exp, Log, Sqrt, Reciprocal, Pow with an exponent other than
0 or 1) and ops that are not Lipschitz at all (Sign, Round, Floor, Ceil, ThresholdedRelu with
α ≠ 0: discontinuous).

They have rules so that a model containing them is reported per node with the reason (instead
of "unsupported op") and so that lipgraph can still execute the model (the lower-bound search,
the onnxruntime cross-check). ``check`` raises RuleNotApplicable ("no global Lipschitz bound: …")
or its subclass NotLipschitz ("not Lipschitz: …", diagnostic code ``not-lipschitz``). The few
cases that are Lipschitz (Pow with exponent 0 or 1, ThresholdedRelu with α = 0) get their exact
slopes. A bound on a box of inputs (box pass, design §9) is what these ops need: ``local_slopes``
gives the derivative's range on the input range (Exp, Log, Sqrt, Reciprocal, Pow), not applicable
where the range leaves the op's domain (Log, Sqrt of a range reaching below 0; Reciprocal of one
containing 0); the discontinuous ops have value ranges (they are monotone) but no slopes.
"""
from __future__ import annotations

import numpy as np
import torch

from lipgraph.certify.intervals import hull, reciprocal
from lipgraph.errors import NotLipschitz, RuleNotApplicable
from lipgraph.registry import Kind, Rule, Slopes, rule
from lipgraph.rules.activations import local_slopes


class _Unbounded(Rule):
    """An elementwise op without a global bound: ``reason`` says why; check always refuses."""

    reason = ""
    error = RuleNotApplicable
    box_only = True

    def check(self, node):
        raise self.error(self.reason)

    def slopes(self, node):
        raise self.error(self.reason)


def _no_bound(op, why):
    return f"no global Lipschitz bound: {op} {why}; only a bound on a box of inputs exists"


@rule("Exp", versions=(6, 13), kind=Kind.ACTIVATION)
class Exp(_Unbounded):
    """Exp: no global bound (slope eˣ is unbounded).

    Bound: none globally: exp′(x) = eˣ → ∞ (not applicable; on a box [l, u] the slope range is [eˡ, eᵘ]).
    Exactness: —. Assumptions: —. References: ONNX Exp.
    """

    reason = _no_bound("Exp", "has slope eˣ, unbounded as x → ∞")
    monotone = True

    def local_slopes(self, node, x_range):
        """eˣ, increasing: [e^l, e^u]."""
        return local_slopes(self, node, x_range, torch.exp)

    def forward(self, node, x):
        return torch.exp(x)


@rule("Log", versions=(6, 13), kind=Kind.ACTIVATION)
class Log(_Unbounded):
    """Log: no global bound (slope 1/x is unbounded near 0).

    Bound: none globally: log′(x) = 1/x → ∞ as x → 0⁺ (not applicable).
    Exactness: —. Assumptions: —. References: ONNX Log.
    """

    reason = _no_bound("Log", "has slope 1/x, unbounded as x → 0⁺")
    monotone = True

    def local_slopes(self, node, x_range):
        """1/x on x > 0 (decreasing); a range reaching 0 or below is not applicable."""
        return local_slopes(self, node, x_range, lambda x: torch.where(x > 0, 1.0 / x, torch.nan))

    def forward(self, node, x):
        return torch.log(x)


@rule("Sqrt", versions=(6, 13), kind=Kind.ACTIVATION)
class Sqrt(_Unbounded):
    """Sqrt: no global bound (slope 1/(2√x) is unbounded near 0).

    Bound: none globally: √ is continuous but not Lipschitz at 0 (|√t − 0|/t = 1/√t → ∞).
    Exactness: —. Assumptions: —. References: ONNX Sqrt.
    """

    reason = _no_bound("Sqrt", "has slope 1/(2√x), unbounded as x → 0⁺")
    monotone = True

    def local_slopes(self, node, x_range):
        """1/(2√x) on x ≥ 0 (∞ at 0); a range reaching below 0 is not applicable."""
        return local_slopes(self, node, x_range, lambda x: torch.where(x >= 0, 0.5 / torch.sqrt(x), torch.nan))

    def forward(self, node, x):
        return torch.sqrt(x)


@rule("Reciprocal", versions=(6, 13), kind=Kind.ACTIVATION)
class Reciprocal(_Unbounded):
    """Reciprocal: no global bound (slope −1/x² is unbounded near 0).

    Bound: none globally (not applicable). Exactness: —. Assumptions: —. References: ONNX Reciprocal.
    """

    reason = _no_bound("Reciprocal", "has slope −1/x², unbounded as x → 0")

    def interval(self, node, x_range):
        return reciprocal(x_range)

    def local_slopes(self, node, x_range):
        """−1/x², monotone on each side of 0; a range containing 0 is not applicable."""
        lo, hi = x_range
        return local_slopes(self, node, x_range,
                            lambda x: torch.where((lo > 0) | (hi < 0), -1.0 / (x * x), torch.nan))

    def forward(self, node, x):
        return torch.reciprocal(x)


@rule("Pow", versions=(7, 12, 13, 15), kind=Kind.ACTIVATION)
class Pow(Rule):
    """Pow(x, e) with a constant exponent of 0s and 1s: slopes [e, e] per entry; otherwise no bound.

    Bound: x¹ = x (slope 1) and x⁰ = 1 (slope 0, ONNX/IEEE pow(x, 0) = 1 for every x); any other
      exponent has no global bound: e > 1 grows faster than linearly (Pow(x, 2) has slope 2x),
      0 < e < 1 has an unbounded slope at 0, e < 0 is singular at 0.
    Exactness: exact per entry (for exponents in {0, 1}).
    Assumptions: the base is the analysed input and the exponent a constant; a computed exponent
      (cˣ, xʸ) has no global bound either (not applicable).
    References: ONNX Pow.
    """

    box_only = True

    def check(self, node):
        if node.dynamic[1] or not node.dynamic[0]:
            raise RuleNotApplicable(_no_bound("Pow", "with a computed exponent (cˣ or xʸ) is exponential in it"))
        e = np.asarray(node.const(1), dtype=np.float64)
        bad = sorted({float(v) for v in e.reshape(-1) if v not in (0.0, 1.0)})
        if bad:
            raise RuleNotApplicable(_no_bound("Pow", f"with exponent {bad[0]:g} (only exponents 0 and 1 are "
                                                     "globally Lipschitz)"))

    def forward(self, node, x, e):
        if x.is_floating_point():
            return torch.pow(x, e.to(x.dtype))
        return torch.pow(x.to(torch.float64), e.to(torch.float64)).to(x.dtype)   # integer base: T is the base's type

    def slopes(self, node):
        self.check(node)
        e = np.asarray(node.const(1), dtype=np.float64)
        return Slopes(e, e)

    def interval(self, node, x_range, e_range):
        """xᵉ is monotone on each side of 0: the hull of the ends and of 0ᵉ when 0 is inside; unknown
        for a computed exponent, and where e < 0 and the range contains 0."""
        if not torch.equal(*e_range):
            return None
        lo, hi = x_range
        e = e_range[0].to(torch.float64)
        zero = (lo <= 0) & (hi >= 0)
        at0 = torch.where(zero, torch.pow(torch.zeros_like(lo), e), torch.pow(lo, e))
        out_lo, out_hi = hull(torch.pow(lo, e), torch.pow(hi, e), at0)
        bad = zero & (e < 0)
        return torch.where(bad, -np.inf, out_lo), torch.where(bad, np.inf, out_hi)

    def local_slopes(self, node, x_range):
        """e·x^{e−1}, monotone on each side of 0 (value 0 at 0 for e > 1, ∞ for e < 1)."""
        if node.dynamic[1]:
            raise RuleNotApplicable(_no_bound("Pow", "with a computed exponent (cˣ or xʸ) is exponential in it"))
        e = torch.as_tensor(np.asarray(node.const(1), dtype=np.float64))
        at0 = torch.where(e > 1, 0.0, torch.where(e == 1, 1.0, np.inf)).to(torch.float64)
        return local_slopes(self, node, x_range, lambda x: torch.where(e == 0, 0.0, e * torch.pow(x, e - 1)),
                            [(0.0, (at0,))])


def _discontinuous(op, why):
    return f"not Lipschitz: {op} {why} (no Lipschitz bound exists, on any box containing a jump either)"


class _Discontinuous(_Unbounded):
    error = NotLipschitz
    box_only = False
    monotone = True     # Sign, Round, Floor, Ceil are nondecreasing: value ranges exist


@rule("Sign", versions=(9, 13), kind=Kind.ACTIVATION)
class Sign(_Discontinuous):
    """Sign: not Lipschitz (jumps at 0).

    Bound: none (discontinuous at 0: not applicable, code not-lipschitz).
    Exactness: —. Assumptions: —. References: ONNX Sign.
    """

    reason = _discontinuous("Sign", "jumps by 1 at 0")

    def forward(self, node, x):
        return torch.sign(x)


@rule("Round", versions=(11, 22), kind=Kind.ACTIVATION)
class Round(_Discontinuous):
    """Round: not Lipschitz (jumps at every half-integer).

    Bound: none (discontinuous: not applicable, code not-lipschitz).
    Exactness: —. Assumptions: half to even, as ONNX. References: ONNX Round.
    """

    reason = _discontinuous("Round", "jumps by 1 at every half-integer")

    def forward(self, node, x):
        return torch.round(x)


@rule("Floor", versions=(6, 13), kind=Kind.ACTIVATION)
class Floor(_Discontinuous):
    """Floor: not Lipschitz (jumps at every integer).

    Bound: none (discontinuous: not applicable, code not-lipschitz).
    Exactness: —. Assumptions: —. References: ONNX Floor.
    """

    reason = _discontinuous("Floor", "jumps by 1 at every integer")

    def forward(self, node, x):
        return torch.floor(x)


@rule("Ceil", versions=(6, 13), kind=Kind.ACTIVATION)
class Ceil(_Discontinuous):
    """Ceil: not Lipschitz (jumps at every integer).

    Bound: none (discontinuous: not applicable, code not-lipschitz).
    Exactness: —. Assumptions: —. References: ONNX Ceil.
    """

    reason = _discontinuous("Ceil", "jumps by 1 at every integer")

    def forward(self, node, x):
        return torch.ceil(x)


@rule("ThresholdedRelu", versions=(10, 22), kind=Kind.ACTIVATION)
class ThresholdedRelu(Rule):
    """ThresholdedRelu: slopes [0, 1] for α = 0 (ReLU); not Lipschitz for α ≠ 0.

    Bound: y = x for x > α, 0 otherwise: for α ≠ 0 the output jumps by |α| at x = α
      (not applicable, code not-lipschitz); for α = 0 it is ReLU, slopes [0, 1].
    Exactness: exact (α = 0).
    Assumptions: none.
    References: ONNX ThresholdedRelu (default α = 1).
    """

    def check(self, node):
        alpha = node.attr("alpha", 1.0)
        if alpha != 0:
            raise NotLipschitz(_discontinuous("ThresholdedRelu", f"with alpha = {alpha:g} jumps by {abs(alpha):g} "
                                                                 f"at x = {alpha:g}"))

    def forward(self, node, x):
        return torch.where(x > node.attr("alpha", 1.0), x, torch.zeros_like(x))

    def slopes(self, node):
        self.check(node)
        return Slopes(0.0, 1.0)

    def interval(self, node, x_range):
        """x where x > α, else 0: 0 when the range reaches α or below, and (α, hi] ∩ range above it."""
        a = node.attr("alpha", 1.0)
        lo, hi = x_range
        low_part = lo <= a
        above = hi > a
        zero = torch.zeros_like(lo)
        out_lo = torch.where(low_part, torch.where(above, torch.minimum(zero, torch.clamp(lo, min=a)), zero),
                             lo)
        out_hi = torch.where(above, torch.maximum(hi, torch.where(low_part, zero, hi)), zero)
        return out_lo, out_hi

    def local_slopes(self, node, x_range):
        self.check(node)
        return local_slopes(self, node, x_range, lambda x: (x > 0).to(x.dtype), [(0.0, (0.0, 1.0))], exact=True)
