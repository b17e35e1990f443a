"""The ops of the private domain ``lipgraph.fused``: activations that exporters write as
several nodes (``x·Sigmoid(x)``, GELU's erf and tanh forms, hard-swish, Mish), and
normalisations written out with reductions (LayerNorm, RMSNorm, softmax, log-softmax), that
``lipgraph.ir.fuse`` has rewritten into one node after proving the rewrite numerically. The
normalisations reuse the maths of rules/normalization.py and rules/softmax.py.

The fusion matches constants (0.5, √2, 3, 6, 1/6, 0.044715, √(2/π) …) within a relative
``REL_TOL`` = 1e-6 (``lipgraph.ir.fuse.match``), so the subgraph's real-valued function may be
the ideal activation with constants perturbed by that much. Where such constants change the
slope range (GELU, hard-swish), the range is widened by ``CONSTANT_MARGIN`` = 1e-5, which
covers a change of up to 10·REL_TOL in each end (tests perturb every constant and check).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lipgraph.labels import Label
from lipgraph.registry import FUSED_DOMAIN, Kind, Rule, Slopes, default_interval, require_constant, rule
from lipgraph.rules.activations import (GELU_ERF_SLOPES, GELU_MIN, GELU_TANH_SLOPES, MISH_MIN, MISH_SLOPES,
                                        _hard_sigmoid_smooth, gelu_local, hard_swish_local, local_slopes,
                                        mish_local, valley_interval, valley_min)
from lipgraph.rules.normalization import (normalisation_bound, normalisation_note, normalise, normalised_interval,
                                          normalised_local, scale_shift, slice_scales)
from lipgraph.rules.softmax import (logsoftmax_bound, logsoftmax_local, logsoftmax_range, softmax_bound,
                                    softmax_local, softmax_over, softmax_range)

#: SiLU slope range, rounded outward at 1e-9. s(x) = x·σ(x), s'(x) = σ(x)(1 + x(1 − σ(x))) =: g(x);
#: s''(x) = σ(x)(1 − σ(x))(2 + x(1 − 2σ(x))) vanishes where x·tanh(x/2) = 2, i.e. at
#: x = ±2.3993572805154676678…, where g = 1.0998393201288669170… and g(−x) = 1 − g(x) =
#: −0.0998393201288669170… (mpmath findroot, 40 digits); g → 0 and 1 at ∓∞, inside.
SILU_SLOPES = (-0.099839321, 1.099839321)
CONSTANT_MARGIN = 1e-5
#: SiLU′'s extrema and SiLU's minimum point / certified minimum.
SILU_EXTREMA = 2.3993572805154676678
SILU_MIN = valley_min(F.silu, -3.0, 0.0)


def silu_prime(x):
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _fused_range(pair, x_range):
    """An ideal op's range widened for the matched constants' tolerance: CONSTANT_MARGIN·(1 + |x|)
    covers the output change when each constant moves by up to 10·REL_TOL (the op's value moves by
    at most about |x| times the relative change of its constants)."""
    lo, hi = pair
    pad = CONSTANT_MARGIN * (1 + torch.maximum(x_range[0].abs(), x_range[1].abs()))
    return lo - pad, hi + pad


def _widen(pair: tuple[float, float]) -> Slopes:
    return Slopes(pair[0] - CONSTANT_MARGIN, pair[1] + CONSTANT_MARGIN, Label.CERTIFIED)


def _silu_local(rule_, node, x_range, beta: float) -> Slopes:
    """x·σ(βx) has derivative g(βx), g = SiLU′, monotone between its extrema ±2.3994 (in βx)."""
    p = SILU_EXTREMA / abs(beta)
    ends = {-p: SILU_SLOPES[0], p: SILU_SLOPES[1]} if beta > 0 else {p: SILU_SLOPES[0], -p: SILU_SLOPES[1]}
    return local_slopes(rule_, node, x_range, lambda x: silu_prime(beta * x), [(q, (v,)) for q, v in ends.items()],
                        margin=CONSTANT_MARGIN)


@rule("SiLU", versions=(1,), kind=Kind.ACTIVATION, domain=FUSED_DOMAIN)
class SiLU(Rule):
    """SiLU x·σ(x) (fused from x·Sigmoid(x)): slopes [−0.099839321, 1.099839321].

    Bound: the derivative's global extrema at x ≈ ±2.3994, to 40 digits, rounded outward at 1e-9
      (SILU_SLOPES in the source).
    Exactness: tight to 1e-9 (both extrema are attained).
    Assumptions: the fusion proved the subgraph equal to x·σ(x) on sampled inputs; onnxruntime's
      run of the original subgraph is compared with this node by the differential guard.
    References: Elfwing et al. 2018 (SiLU); Ramachandran et al. 2017 (Swish).
    """

    def forward(self, node, x):
        return F.silu(x)

    def slopes(self, node):
        return Slopes(*SILU_SLOPES, Label.CERTIFIED)

    def local_slopes(self, node, x_range):
        return _silu_local(self, node, x_range, 1.0)

    def interval(self, node, x_range):
        """Decreasing, then increasing after x* ≈ −1.28 (the ideal op, widened as _fused_range)."""
        return _fused_range(valley_interval(F.silu, x_range, *SILU_MIN), x_range)


@rule("Swish", versions=(1,), kind=Kind.ACTIVATION, domain=FUSED_DOMAIN)
class Swish(Rule):
    """Swish x·σ(βx) (fused from x·Sigmoid(β·x), β the model's constant): SiLU's slopes for any
    β ≠ 0, exactly 1/2 for β = 0.

    Bound: d/dx[x·σ(βx)] = σ(βx) + βx·σ'(βx) = g(βx), g the SiLU derivative; for β ≠ 0 (either
      sign) βx ranges over all reals, so the range is g's, [−0.099839321, 1.099839321] rounded
      outward (SILU_SLOPES); for β = 0 the op is x/2.
    Exactness: tight to 1e-9 (β ≠ 0); exact (β = 0).
    Assumptions: β is read from the model's constant as it is (no tolerance).
    References: Ramachandran et al. 2017.
    """

    def forward(self, node, x):
        return x * torch.sigmoid(node.attr("beta") * x)

    def slopes(self, node):
        if node.attr("beta") == 0.0:
            return Slopes(0.5, 0.5)
        return Slopes(*SILU_SLOPES, Label.CERTIFIED)

    def local_slopes(self, node, x_range):
        beta = node.attr("beta")
        return self.slopes(node) if beta == 0.0 else _silu_local(self, node, x_range, beta)

    def interval(self, node, x_range):
        """β > 0: SiLU(βx)/β, a valley at x*/β; otherwise the default (slopes) range."""
        beta = node.attr("beta")
        if beta <= 0:
            return _fused_range(default_interval(self, node, (x_range,)), x_range)
        xstar, fmin = SILU_MIN
        return _fused_range(valley_interval(lambda x: self.forward(node, x), x_range, xstar / beta, fmin / beta),
                            x_range)


@rule("HardSwish", versions=(1,), kind=Kind.ACTIVATION, domain=FUSED_DOMAIN)
class HardSwish(Rule):
    """HardSwish x·relu6(x + 3)/6 (fused from x·HardSigmoid(x) or x·Clip(x + 3, 0, 6)/6):
    slopes [−0.5 − 1e-5, 1.5 + 1e-5].

    Bound: derivative 0 for x < −3, (2x + 3)/6 on (−3, 3), 1 for x > 3: hull [−1/2, 3/2], widened
      by CONSTANT_MARGIN for the matched constants' tolerance (e.g. a Mul by float32(1/6) scales
      the slopes by 1 + 3e-8).
    Exactness: certified (1e-5 above the ideal op's exact range).
    Assumptions: the fusion proved the subgraph equal to the op on sampled inputs, kinks included.
    References: Howard et al. 2019 (MobileNetV3); ONNX HardSwish.
    """

    def forward(self, node, x):
        return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)

    def slopes(self, node):
        return _widen((-0.5, 1.5))

    def smooth(self, node, x, t):
        return x * _hard_sigmoid_smooth(x, 1.0 / 6.0, 0.5, t)

    def local_slopes(self, node, x_range):
        return hard_swish_local(self, node, x_range, margin=CONSTANT_MARGIN)

    def interval(self, node, x_range):
        return _fused_range(valley_interval(lambda x: self.forward(node, x), x_range, -1.5, -0.375), x_range)


@rule("Mish", versions=(1,), kind=Kind.ACTIVATION, domain=FUSED_DOMAIN)
class Mish(Rule):
    """Mish x·tanh(softplus(x)) (fused from x·Tanh(Softplus(x))): slopes [−0.112526123, 1.088498162].

    Bound: as the ONNX Mish rule (MISH_SLOPES in rules/activations.py: extrema to 40 digits,
      rounded outward at 1e-9).
    Exactness: tight to 1e-9.
    Assumptions: the fusion proved the subgraph equal to the op on sampled inputs.
    References: Misra 2019.
    """

    def forward(self, node, x):
        return F.mish(x)

    def slopes(self, node):
        return Slopes(*MISH_SLOPES, Label.CERTIFIED)

    def local_slopes(self, node, x_range):
        return mish_local(self, node, x_range, margin=CONSTANT_MARGIN)

    def interval(self, node, x_range):
        return _fused_range(valley_interval(F.mish, x_range, *MISH_MIN), x_range)


@rule("Gelu", versions=(1,), kind=Kind.ACTIVATION, domain=FUSED_DOMAIN)
class Gelu(Rule):
    """GELU (fused from 0.5·x·(1 + Erf(x/√2)) or the tanh form): the ONNX Gelu rule's slopes
    widened by 1e-5.

    Bound: GELU_ERF_SLOPES / GELU_TANH_SLOPES (rules/activations.py) widened by CONSTANT_MARGIN
      for the matched constants' tolerance (a perturbed √2 only rescales x and changes nothing;
      0.5, 1, √(2/π) and 0.044715 move the ends by a few times their relative error).
    Exactness: certified (1e-5 above the ideal op's range, which is tight to 1e-9).
    Assumptions: the fusion proved the subgraph equal to the op on sampled inputs.
    References: Hendrycks & Gimpel 2016; ONNX Gelu.
    """

    def forward(self, node, x):
        return F.gelu(x, approximate=node.attr("approximate", "none"))

    def slopes(self, node):
        return _widen(GELU_TANH_SLOPES if node.attr("approximate", "none") == "tanh" else GELU_ERF_SLOPES)

    def local_slopes(self, node, x_range):
        return gelu_local(self, node, x_range, margin=CONSTANT_MARGIN)

    def interval(self, node, x_range):
        approx = "tanh" if node.attr("approximate", "none") == "tanh" else "none"
        return _fused_range(valley_interval(lambda x: self.forward(node, x), x_range, *GELU_MIN[approx]), x_range)

# --- normalisations: statistics over the ``axes`` of the matched reductions ---------------------


def _dims(node, shape) -> list[int]:
    return [a % len(shape) for a in node.attr("axes")]


class _Normalisation(Rule):
    """Shared hooks of LayerNorm and RMSNorm: γ (input 1) and β (input 2) constant, optional."""

    centred = True

    def check(self, node):
        require_constant(node, 1, 2)

    def forward(self, node, x, scale=None, bias=None):
        dims, eps = _dims(node, x.shape), node.attr("epsilon")
        y = normalise(x, dims, eps)[0] if self.centred else x / torch.sqrt((x * x).mean(dim=dims, keepdim=True) + eps)
        return scale_shift(y, scale, bias)

    def bounds(self, node):
        shape = node.input_shapes[0]
        gammas = slice_scales(shape, _dims(node, shape), node.const(1) if node.has_input(1) else None)
        method = "layernorm-jacobian" if self.centred else "rmsnorm-jacobian"
        return {0: normalisation_bound(gammas, node.attr("epsilon"), method, centred=self.centred)}

    def notes(self, node):
        return normalisation_note(node, self.bounds(node)[0])

    def interval(self, node, x_range, scale=None, bias=None):
        return normalised_interval(x_range, _dims(node, x_range[0].shape), node.attr("epsilon"), scale, bias,
                                   centred=self.centred)

    def local_bounds(self, node, ranges):
        """On a box: the global bound times √(ε/(v + ε)), v the least variance (LayerNorm) or mean
        square (RMSNorm) of a slice over the box (rules/normalization.py, ``normalised_local``)."""
        return normalised_local(self.bounds(node)[0], ranges[0], _dims(node, ranges[0][0].shape),
                                node.attr("epsilon"), centred=self.centred)


@rule("LayerNorm", versions=(1,), kind=Kind.NONLINEAR, domain=FUSED_DOMAIN)
class LayerNorm(_Normalisation):
    """LayerNorm over ``axes`` (fused from ReduceMean, Sub, Pow or Mul, ReduceMean, Add ε, Sqrt,
    Div, ·γ + β): L = max over slices of ‖diag(γ_s)·P‖₂/√ε ≤ max|γ|/√ε (exact supremum).

    Bound: the LayerNormalization rule's (rules/normalization.py, proof in the comment there), the
      slices being the blocks over ``axes`` (any set of dims, e.g. the channels of NCHW) and γ_s
      the scale constant broadcast over each slice (slices with different γ_s: the max); the
      E[x²] − E[x]² spelling of the variance is the same real function.
    Exactness: certified, equal to the supremum up to rounding (a constant slice realises it as
      for LayerNormalization; max|γ|/√ε beyond 2048 distinct |γ| values).
    Assumptions: γ and β constant; the fusion proved the subgraph equal to this op in float64 on
      sampled inputs (zero-variance slices included); ε as matched, no tolerance.
    References: Ba et al. 2016; design §9.
    """


@rule("RMSNorm", versions=(1,), kind=Kind.NONLINEAR, domain=FUSED_DOMAIN)
class RMSNorm(_Normalisation):
    """RMSNorm y = γ ⊙ x/√(E[x²] + ε) + β over ``axes`` (fused from Pow or Mul, ReduceMean,
    Add ε, Sqrt, Div or Reciprocal and Mul, ·γ): L = max|γ|/√ε (exact, attained at x = 0).

    Bound: on a slice of n entries, s = √(‖x‖²/n + ε) and x̂ = x/s, J(x) = (1/s)·diag(γ)·(I −
      x̂x̂ᵀ/n); ‖x̂‖²/n = 1 − ε/s² < 1, so I − x̂x̂ᵀ/n has eigenvalues 1 (⊥ x) and ε/s² ∈ (0, 1] (on
      x), and ‖J(x)‖ ≤ max|γ|/s ≤ max|γ|/√ε. The domain is convex (mean value inequality) and
      slices are independent: the max over slices (comment in rules/normalization.py).
    Exactness: exact: J(0) = diag(γ)/√ε, whose norm is max|γ|/√ε; the pair (0, t·e_i), i the entry
      of largest |γ|, has ratio |γ_i|/√(t²/n + ε) → max|γ|/√ε (tests check the SVD of J).
    Assumptions: γ and β constant; the fusion proved the subgraph equal to this op in float64 on
      sampled inputs; ε as matched, no tolerance (ε ≤ 0: no finite bound).
    References: Zhang & Sennrich 2019 (RMSNorm); design §9.
    """

    centred = False


@rule("Softmax", versions=(1,), kind=Kind.NONLINEAR, domain=FUSED_DOMAIN)
class Softmax(Rule):
    """Softmax over ``axes`` (fused from Exp(x − ReduceMax(x)) / ReduceSum(Exp(…)), the shift
    optional): L = 1/2 (ℓ2), 0 when each normalised slice has one entry.

    Bound: the ai.onnx Softmax rule's (rules/softmax.py), the slices being the blocks over
      ``axes`` taken together (n = Π shape[axes]); subtracting a per-slice constant (the max)
      does not change the function.
    Exactness: exact for n ≥ 2 (as Softmax).
    Assumptions: the fusion proved the subgraph equal to this op in float64 on sampled inputs.
    References: ONNX Softmax; Gao & Pavel 2017.
    """

    def forward(self, node, x):
        return softmax_over(x, _dims(node, x.shape))

    def bounds(self, node):
        shape = node.input_shapes[0]
        return {0: softmax_bound(math.prod(shape[d] for d in _dims(node, shape)))}

    def interval(self, node, x_range):
        return softmax_range(x_range, _dims(node, x_range[0].shape))

    def local_bounds(self, node, ranges):
        """On a box: max_i 2p_i(1 − p_i) over each p_i's range (as Softmax, ``softmax_local``)."""
        shape = node.input_shapes[0]
        if math.prod(shape[d] for d in _dims(node, shape)) < 2:
            return self.bounds(node)
        return {0: softmax_local(ranges[0], _dims(node, shape))}


@rule("LogSoftmax", versions=(1,), kind=Kind.NONLINEAR, domain=FUSED_DOMAIN)
class LogSoftmax(Rule):
    """LogSoftmax over ``axes`` (fused from x' − Log(ReduceSum(Exp(x'))), x' = x or x −
    ReduceMax(x)): L = √n (ℓ2), n the number of entries of a normalised slice (0 when n = 1).

    Bound: the ai.onnx LogSoftmax rule's (rules/softmax.py), the slices being the blocks over
      ``axes`` taken together.
    Exactness: exact as a supremum, not attained (as LogSoftmax).
    Assumptions: the fusion proved the subgraph equal to this op in float64 on sampled inputs.
    References: ONNX LogSoftmax; Szyld 2006.
    """

    def forward(self, node, x):
        return softmax_over(x, _dims(node, x.shape), log=True)

    def bounds(self, node):
        shape = node.input_shapes[0]
        return {0: logsoftmax_bound(math.prod(shape[d] for d in _dims(node, shape)))}

    def interval(self, node, x_range):
        return logsoftmax_range(x_range, _dims(node, x_range[0].shape))

    def local_bounds(self, node, ranges):
        """On a box: √n·‖p̄‖₂ over the slices, p̄ the upper ends of softmax's range (``logsoftmax_local``)."""
        shape = node.input_shapes[0]
        n = math.prod(shape[d] for d in _dims(node, shape))
        return self.bounds(node) if n < 2 else {0: logsoftmax_local(ranges[0], _dims(node, shape), n)}
