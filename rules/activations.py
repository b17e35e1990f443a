"""Elementwise activations: each rule states its slope range [lo, hi].

AutoLip uses max(|lo|, |hi|); SeqLip uses the range itself. A range must contain every
derivative value, one-sided derivatives at kinks included (closed hull of the derivative's
range). Activations with kinks also give ``smooth(node, x, t)``: the op with every kink
``relu`` replaced by ``t·softplus(·/t)`` (``_soft_relu``), which is the op itself at t = 0.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lipgraph.certify.intervals import REL, abs_range, derivative_range, valley
from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import Label
from lipgraph.registry import Kind, Rule, Slopes, require_constant, rule


def _soft_relu(x, t: float):
    """relu(x) smoothed with temperature t: t·softplus(x/t) → relu(x) as t → 0."""
    return t * F.softplus(x / t) if t > 0 else torch.relu(x)


def _hull(*values: float) -> tuple[float, float]:
    """The smallest closed range containing the given slope values."""
    return float(min(values)), float(max(values))


def local_slopes(rule_, node, x_range, fprime, points=(), exact: bool = False, margin: float = 0.0) -> Slopes:
    """Slopes per entry on ``x_range`` from the derivative ``fprime`` (monotone between ``points``,
    see :func:`lipgraph.certify.intervals.derivative_range`), intersected with the global slopes
    when the rule has them. ``exact``: the derivative values are exact constants (piecewise-linear
    ops), else they are widened by ``REL`` (relative) plus ``margin``. NaN (the range leaves the
    op's domain) is not applicable."""
    lo, hi = derivative_range(fprime, x_range, points)
    if bool(torch.isnan(lo).any() | torch.isnan(hi).any()):
        raise RuleNotApplicable(f"{node.op_type}: the input range on the box leaves the op's domain")
    if not exact:
        lo, hi = lo - REL * lo.abs() - margin, hi + REL * hi.abs() + margin
    lo, hi = lo.numpy(), hi.numpy()
    try:
        glo, ghi = rule_.slopes(node)
        lo, hi = np.maximum(lo, glo), np.minimum(hi, ghi)
    except RuleNotApplicable:
        pass
    return Slopes(lo, hi, Label.EXACT if exact else Label.CERTIFIED)


def valley_min(f, a: float, b: float) -> tuple[float, float]:
    """(x*, a certified lower value of min f) for f unimodal with its minimum in [a, b]: golden
    section in float64, then f(x*) lowered by 1e-9 (f is flat at x*: the error of x* is squared)."""
    g = (5 ** 0.5 - 1) / 2
    for _ in range(200):
        c, d = b - g * (b - a), a + g * (b - a)
        fc, fd = (float(f(torch.tensor(v, dtype=torch.float64))) for v in (c, d))
        a, b = (a, d) if fc < fd else (c, b)
    x = (a + b) / 2
    return x, float(f(torch.tensor(x, dtype=torch.float64))) - 1e-9


#: Half-width around an approximate minimum point within which it counts as inside a range.
VALLEY_SLACK = 1e-6


def valley_interval(f, x_range, xstar: float, fmin: float):
    """Range of a unimodal activation (nonincreasing, then nondecreasing after x*) on ``x_range``."""
    lo, hi = x_range
    vlo, vhi = valley(f, (lo, hi), xstar, fmin)
    near = (lo <= xstar + VALLEY_SLACK) & (hi >= xstar - VALLEY_SLACK)
    return torch.where(near, torch.minimum(vlo, torch.full_like(vlo, fmin)), vlo), vhi


def _step(x, at: float, left, right):
    """left below ``at``, right above (piecewise-constant derivatives)."""
    return torch.where(x > at, torch.as_tensor(right, dtype=x.dtype), torch.as_tensor(left, dtype=x.dtype))


@rule("Relu", versions=(6, 13, 14), kind=Kind.ACTIVATION)
class Relu(Rule):
    """ReLU is 1-Lipschitz: slopes in [0, 1].

    Bound: slopes [0, 1], Lipschitz constant 1.
    Exactness: exact (any input with a positive entry realises slope 1).
    Assumptions: none.
    References: ONNX Relu.
    """

    def forward(self, node, x):
        return torch.relu(x)

    def slopes(self, node):
        return Slopes(0.0, 1.0)

    def smooth(self, node, x, t):
        return _soft_relu(x, t)

    def kink(self, node):
        return 0.0, 0.0, 1.0

    def local_slopes(self, node, x_range):
        """Exactly 1 where the range is positive, 0 where negative, [0, 1] across 0."""
        return local_slopes(self, node, x_range, lambda x: _step(x, 0.0, 0.0, 1.0), [(0.0, (0.0, 1.0))], exact=True)

    def linear_relaxation(self, node, x_range):
        """The triangle relaxation across 0 (l < 0 < u): above by the chord u(x − l)/(u − l) (ReLU is
        convex), below by 0 or x, whichever leaves the smaller area (u ≤ −l: 0); exact elsewhere."""
        lo, hi = x_range
        across = (lo < 0) & (hi > 0)
        chord = torch.where(across, hi / torch.where(across, hi - lo, 1.0), 0.0)
        a_hi = torch.where(hi <= 0, 0.0, torch.where(lo >= 0, 1.0, chord))
        a_lo = torch.where(hi <= 0, 0.0, torch.where(lo >= 0, 1.0, (hi > -lo).to(torch.float64)))
        return a_lo, torch.zeros_like(lo), a_hi, torch.where(across, -lo * chord, 0.0)


@rule("LeakyRelu", versions=(6, 16), kind=Kind.ACTIVATION)
class LeakyRelu(Rule):
    """LeakyRelu: slopes [min(α, 1), max(α, 1)], Lipschitz constant max(|α|, 1).

    Bound: derivative α on x < 0, 1 on x > 0; one-sided derivatives at 0 are α and 1.
    Exactness: exact (both slopes are attained), for any α (α > 1 and α < 0 included).
    Assumptions: none.
    References: ONNX LeakyRelu (y = x for x ≥ 0, αx otherwise).
    """

    def forward(self, node, x):
        return torch.where(x >= 0, x, node.attr("alpha", 0.01) * x)

    def slopes(self, node):
        return Slopes(*_hull(node.attr("alpha", 0.01), 1.0))

    def smooth(self, node, x, t):
        alpha = node.attr("alpha", 0.01)
        return alpha * x + (1.0 - alpha) * _soft_relu(x, t)

    def kink(self, node):
        return 0.0, node.attr("alpha", 0.01), 1.0

    def local_slopes(self, node, x_range):
        a = node.attr("alpha", 0.01)
        return local_slopes(self, node, x_range, lambda x: _step(x, 0.0, a, 1.0), [(0.0, (a, 1.0))], exact=True)


@rule("PRelu", versions=(7, 9, 16), kind=Kind.ACTIVATION)
class PRelu(Rule):
    """PRelu: slopes [min(s, 1), max(s, 1)] per entry of the constant slope tensor s.

    Bound: as LeakyRelu with α = s broadcast (unidirectionally) to the input; lo and hi are
      arrays of s's shape, broadcastable to the input. Lipschitz constant max(|s|, 1).
    Exactness: exact per entry.
    Assumptions: the slope input is a constant (a computed slope makes the op non-elementwise
      in the analysed input: not applicable), and it broadcasts to the input's shape: a slope
      that would broadcast the input instead (slope (3, 4) on input (1, 4) — onnxruntime then
      returns (3, 4), copying each entry) makes the op not elementwise: not applicable.
    References: ONNX PRelu (unidirectional broadcasting of the slope to X).
    """

    def check(self, node):
        require_constant(node, 1)
        x_shape, out_shape = node.input_shapes[0], node.output_shapes[0]
        if x_shape is not None and out_shape is not None and tuple(out_shape) != tuple(x_shape):
            raise RuleNotApplicable(f"PRelu output {tuple(out_shape)} differs from its input {tuple(x_shape)}: "
                                    "the slope broadcasts the input, so the op is not elementwise")
        slope = node.const(1)
        if x_shape is not None and slope is not None:
            try:
                broadcast = np.broadcast_shapes(tuple(x_shape), np.shape(slope))
            except ValueError:
                broadcast = None
            if broadcast != tuple(x_shape):
                raise RuleNotApplicable(f"PRelu slope {np.shape(slope)} does not broadcast to the input "
                                        f"{tuple(x_shape)} (unidirectional broadcasting)")

    def forward(self, node, x, slope):
        return torch.where(x >= 0, x, slope * x)

    def slopes(self, node):
        s = np.asarray(node.const(1), dtype=np.float64)
        return Slopes(np.minimum(s, 1.0), np.maximum(s, 1.0))

    def smooth(self, node, x, t):
        s = torch.as_tensor(np.array(node.const(1)), dtype=x.dtype, device=x.device)
        return s * x + (1.0 - s) * _soft_relu(x, t)

    def kink(self, node):
        return 0.0, np.asarray(node.const(1), dtype=np.float64), 1.0

    def local_slopes(self, node, x_range):
        s = torch.as_tensor(np.array(node.const(1)), dtype=torch.float64)
        return local_slopes(self, node, x_range, lambda x: torch.where(x > 0, torch.ones_like(s), s),
                            [(0.0, (s, 1.0))], exact=True)


@rule("Sigmoid", versions=(6, 13), kind=Kind.ACTIVATION)
class Sigmoid(Rule):
    """Sigmoid: slopes [0, 1/4].

    Bound: σ'(x) = σ(x)(1 − σ(x)) ∈ (0, 1/4], maximal at 0.
    Exactness: exact (1/4 at x = 0; 0 is the infimum).
    Assumptions: none.
    References: ONNX Sigmoid.
    """

    def forward(self, node, x):
        return torch.sigmoid(x)

    def slopes(self, node):
        return Slopes(0.0, 0.25)

    def local_slopes(self, node, x_range):
        """σ′ = σ(1 − σ): increasing below 0, decreasing above, 1/4 at 0."""
        return local_slopes(self, node, x_range, lambda x: torch.sigmoid(x) * torch.sigmoid(-x), [(0.0, (0.25,))])


@rule("Tanh", versions=(6, 13), kind=Kind.ACTIVATION)
class Tanh(Rule):
    """Tanh: slopes [0, 1].

    Bound: tanh'(x) = 1 − tanh²(x) ∈ (0, 1], maximal at 0.
    Exactness: exact (1 at x = 0; 0 is the infimum).
    Assumptions: none.
    References: ONNX Tanh.
    """

    def forward(self, node, x):
        return torch.tanh(x)

    def slopes(self, node):
        return Slopes(0.0, 1.0)

    def local_slopes(self, node, x_range):
        """tanh′ = 1 − tanh²: increasing below 0, decreasing above, 1 at 0."""
        return local_slopes(self, node, x_range, lambda x: 1.0 - torch.tanh(x) ** 2, [(0.0, (1.0,))])


@rule("Softplus", versions=(1, 22), kind=Kind.ACTIVATION)
class Softplus(Rule):
    """Softplus: slopes [0, 1].

    Bound: d/dx log(1 + eˣ) = σ(x) ∈ (0, 1).
    Exactness: exact (both ends are the supremum/infimum, approached as x → ±∞).
    Assumptions: none.
    References: ONNX Softplus.
    """

    def forward(self, node, x):
        return F.softplus(x)

    def slopes(self, node):
        return Slopes(0.0, 1.0)

    def local_slopes(self, node, x_range):
        """softplus′ = σ, increasing."""
        return local_slopes(self, node, x_range, torch.sigmoid)


def _elu_slopes(alpha: float) -> tuple[float, float]:
    """ELU's derivative: αeˣ on x < 0 (values between 0 and α), 1 on x > 0, one-sided α and 1
    at 0: hull [min(0, α), max(1, α)]."""
    return _hull(0.0, alpha, 1.0)


def _elu_smooth(x, alpha: float, t: float):
    """ELU = relu(x) + α(exp(−relu(−x)) − 1), both relus smoothed."""
    return _soft_relu(x, t) + alpha * (torch.exp(-_soft_relu(-x, t)) - 1.0)


def _elu_prime(alpha: float, gamma: float = 1.0):
    """(ELU′ scaled by γ, its kink): γαeˣ below 0 (monotone), γ above; one-sided γα and γ at 0."""
    return (lambda x: gamma * torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(torch.clamp(x, max=0.0))),
            [(0.0, (gamma * alpha, gamma))])


@rule("Elu", versions=(6, 22), kind=Kind.ACTIVATION)
class Elu(Rule):
    """Elu: slopes [min(0, α), max(1, α)].

    Bound: derivative αeˣ on x < 0 (strictly between 0 and α), 1 on x ≥ 0; at 0 the one-sided
      derivatives are α and 1. So α > 1 gives hi = α, α < 0 gives lo = α.
    Exactness: exact: both ends are attained or are the infimum (αeˣ → 0 as x → −∞).
    Assumptions: none.
    References: ONNX Elu (y = α(eˣ − 1) for x < 0, x otherwise).
    """

    def forward(self, node, x):
        return F.elu(x, node.attr("alpha", 1.0))

    def slopes(self, node):
        return Slopes(*_elu_slopes(node.attr("alpha", 1.0)))

    def smooth(self, node, x, t):
        return _elu_smooth(x, node.attr("alpha", 1.0), t)

    def local_slopes(self, node, x_range):
        return local_slopes(self, node, x_range, *_elu_prime(node.attr("alpha", 1.0)))


SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875


@rule("Selu", versions=(6, 22), kind=Kind.ACTIVATION)
class Selu(Rule):
    """Selu: slopes γ·[min(0, α), max(1, α)] (ends swapped when γ < 0); default ≈ [0, 1.7581].

    Bound: Selu = γ·Elu_α, so its derivative is γ times Elu's (see Elu).
    Exactness: exact (as Elu).
    Assumptions: none.
    References: ONNX Selu (defaults α = 1.67326…, γ = 1.05070…).
    """

    def forward(self, node, x):
        return node.attr("gamma", SELU_GAMMA) * F.elu(x, node.attr("alpha", SELU_ALPHA))

    def slopes(self, node):
        gamma = node.attr("gamma", SELU_GAMMA)
        lo, hi = _elu_slopes(node.attr("alpha", SELU_ALPHA))
        return Slopes(*_hull(gamma * lo, gamma * hi))

    def smooth(self, node, x, t):
        return node.attr("gamma", SELU_GAMMA) * _elu_smooth(x, node.attr("alpha", SELU_ALPHA), t)

    def local_slopes(self, node, x_range):
        return local_slopes(self, node, x_range, *_elu_prime(node.attr("alpha", SELU_ALPHA), node.attr("gamma", SELU_GAMMA)))


#: GELU (erf) slope range, rounded outward at 1e-9. d(x) = Φ(x) + xφ(x); d'(x) = φ(x)(2 − x²),
#: so the extrema are at x = ±√2: d(√2) = 1.1289041451851547863…, d(−√2) = 1 − d(√2) =
#: −0.1289041451851547863… (mpmath, 40 digits). Limits 0 and 1 at ∓∞ lie inside.
GELU_ERF_SLOPES = (-0.128904146, 1.128904146)
#: GELU (tanh approximation) slope range, rounded outward at 1e-9. g(x) = x/2·(1 + tanh(u)),
#: u = √(2/π)(x + 0.044715x³); g(x) − g(−x) = x, so g'(−x) = 1 − g'(x). g'' vanishes at
#: x = ±1.4185040087908283…, where g' = 1.1289930686587717654… and −0.1289930686587717654…
#: (mpmath findroot, 40 digits; tests check a dense grid finds no other extremum).
GELU_TANH_SLOPES = (-0.128993069, 1.128993069)
#: Where GELU's derivative has its extrema (−/+): √2 (erf), 1.4185040087908283 (tanh form).
GELU_EXTREMA = {"none": 2 ** 0.5, "tanh": 1.4185040087908283}


def gelu_prime(approximate: str):
    """GELU′: Φ(x) + xφ(x) (erf), or the tanh form's derivative."""
    if approximate == "tanh":
        k = (2 / np.pi) ** 0.5

        def d(x):
            t = torch.tanh(k * (x + 0.044715 * x ** 3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
        return d
    return lambda x: 0.5 * (1 + torch.erf(x / 2 ** 0.5)) + x * torch.exp(-x * x / 2) / (2 * np.pi) ** 0.5


def gelu_local(rule_, node, x_range, margin: float = 0.0) -> Slopes:
    """GELU's slopes on a range: its derivative is monotone between its two extrema ±p."""
    approx = node.attr("approximate", "none")
    p = GELU_EXTREMA["tanh" if approx == "tanh" else "none"]
    lo, hi = GELU_TANH_SLOPES if approx == "tanh" else GELU_ERF_SLOPES
    return local_slopes(rule_, node, x_range, gelu_prime(approx), [(-p, (lo,)), (p, (hi,))], margin=margin)


#: GELU's minimum point and a certified lower value of its minimum, per form.
GELU_MIN = {a: valley_min(lambda x, a=a: F.gelu(x, approximate=a), -2.0, 0.0) for a in ("none", "tanh")}


@rule("Gelu", versions=(20,), kind=Kind.ACTIVATION)
class Gelu(Rule):
    """Gelu: slopes [−0.128904146, 1.128904146] (erf), [−0.128993069, 1.128993069] (tanh).

    Bound: the derivative's global extrema, computed to 40 digits and rounded outward at 1e-9
      (see GELU_ERF_SLOPES and GELU_TANH_SLOPES in the source for the derivation).
    Exactness: tight to 1e-9 (both extrema are attained at x ≈ ±1.41).
    Assumptions: none.
    References: ONNX Gelu (approximate = "none" | "tanh"); Hendrycks & Gimpel 2016.
    """

    def forward(self, node, x):
        return F.gelu(x, approximate=node.attr("approximate", "none"))

    def slopes(self, node):
        pair = GELU_TANH_SLOPES if node.attr("approximate", "none") == "tanh" else GELU_ERF_SLOPES
        return Slopes(*pair, Label.CERTIFIED)

    def local_slopes(self, node, x_range):
        return gelu_local(self, node, x_range)

    def interval(self, node, x_range):
        """Decreasing, then increasing after x* ≈ −0.75: the ends, or the minimum when x* is inside."""
        return valley_interval(lambda x: self.forward(node, x), x_range,
                               *GELU_MIN["tanh" if node.attr("approximate", "none") == "tanh" else "none"])


#: Mish slope range, rounded outward at 1e-9. m(x) = x·tanh(softplus(x)); m'' has two real zeros,
#: at x = −2.2563763963607931200… (m' = −0.1125261223894625564…, the minimum) and at
#: x = 1.4905711794854284593… (m' = 1.0884981612517278612…, the maximum) (mpmath findroot, 40
#: digits, from a sign scan of m'' on [−20, 20]); m' → 0 as x → −∞ and → 1 as x → +∞, inside.
MISH_SLOPES = (-0.112526123, 1.088498162)
MISH_EXTREMA = (-2.2563763963607931200, 1.4905711794854284593)
MISH_MIN = valley_min(F.mish, -3.0, 0.0)


def mish_prime(x):
    sp = F.softplus(x)
    t = torch.tanh(sp)
    return t + x * (1 - t * t) * torch.sigmoid(x)


def mish_local(rule_, node, x_range, margin: float = 0.0) -> Slopes:
    """Mish′ is monotone between its two extrema (MISH_EXTREMA)."""
    return local_slopes(rule_, node, x_range, mish_prime,
                        [(MISH_EXTREMA[0], (MISH_SLOPES[0],)), (MISH_EXTREMA[1], (MISH_SLOPES[1],))], margin=margin)


@rule("Mish", versions=(18, 22), kind=Kind.ACTIVATION)
class Mish(Rule):
    """Mish: slopes [−0.112526123, 1.088498162].

    Bound: the derivative's global extrema, computed to 40 digits and rounded outward at 1e-9
      (see MISH_SLOPES in the source for the derivation).
    Exactness: tight to 1e-9 (both extrema are attained, at x ≈ −2.256 and x ≈ 1.491).
    Assumptions: none.
    References: ONNX Mish (opset 18); Misra 2019.
    """

    def forward(self, node, x):
        return F.mish(x)

    def slopes(self, node):
        return Slopes(*MISH_SLOPES, Label.CERTIFIED)

    def local_slopes(self, node, x_range):
        return mish_local(self, node, x_range)

    def interval(self, node, x_range):
        """Decreasing, then increasing after x* ≈ −1.19."""
        return valley_interval(F.mish, x_range, *MISH_MIN)


def _hard_sigmoid_smooth(x, alpha: float, beta: float, t: float):
    """clip(αx + β, 0, 1) = relu(z) − relu(z − 1), z = αx + β, both relus smoothed."""
    z = alpha * x + beta
    return _soft_relu(z, t) - _soft_relu(z - 1.0, t)


@rule("HardSigmoid", versions=(6, 22), kind=Kind.ACTIVATION)
class HardSigmoid(Rule):
    """HardSigmoid: slopes [min(0, α), max(0, α)] (= [0, α] for the usual α ≥ 0).

    Bound: y = max(0, min(1, αx + β)) has derivative α where 0 < αx + β < 1 and 0 elsewhere.
    Exactness: exact (for α ≠ 0 the ramp is non-empty, so both values are attained).
    Assumptions: none.
    References: ONNX HardSigmoid (defaults α = 0.2, β = 0.5).
    """

    def forward(self, node, x):
        return torch.clamp(node.attr("alpha", 0.2) * x + node.attr("beta", 0.5), 0.0, 1.0)

    def slopes(self, node):
        return Slopes(*_hull(0.0, node.attr("alpha", 0.2)))

    def smooth(self, node, x, t):
        return _hard_sigmoid_smooth(x, node.attr("alpha", 0.2), node.attr("beta", 0.5), t)

    def local_slopes(self, node, x_range):
        """α between the kinks (−β/α, (1 − β)/α), 0 outside."""
        a, b = node.attr("alpha", 0.2), node.attr("beta", 0.5)
        if a == 0:
            return Slopes(0.0, 0.0)
        k1, k2 = sorted((-b / a, (1 - b) / a))
        return local_slopes(self, node, x_range, lambda x: torch.where((x > k1) & (x < k2), torch.full_like(x, a), torch.zeros_like(x)),
                            [(k1, (0.0, a)), (k2, (0.0, a))], exact=True)


@rule("HardSwish", versions=(14, 22), kind=Kind.ACTIVATION)
class HardSwish(Rule):
    """HardSwish: slopes [−1/2, 3/2].

    Bound: y = x·max(0, min(1, x/6 + 1/2)): derivative 0 for x < −3, x/3 + 1/2 on (−3, 3)
      (from −1/2 to 3/2), 1 for x > 3; one-sided derivatives at ±3 are 0, −1/2 and 3/2, 1.
    Exactness: exact (−1/2 and 3/2 are the one-sided derivatives at −3 and 3).
    Assumptions: none.
    References: ONNX HardSwish (α = 1/6, β = 1/2); Howard et al. 2019 (MobileNetV3).
    """

    def forward(self, node, x):
        return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)

    def slopes(self, node):
        return Slopes(-0.5, 1.5)

    def smooth(self, node, x, t):
        return x * _hard_sigmoid_smooth(x, 1.0 / 6.0, 0.5, t)

    def local_slopes(self, node, x_range):
        return hard_swish_local(self, node, x_range)

    def interval(self, node, x_range):
        """0 up to −3, x(x + 3)/6 (minimum −3/8 at −3/2), then x."""
        return valley_interval(lambda x: self.forward(node, x), x_range, -1.5, -0.375)


_FLT_MAX = float(np.finfo(np.float32).max)


def hard_swish_local(rule_, node, x_range, margin: float = 0.0) -> Slopes:
    """HardSwish′: 0 below −3, x/3 + 1/2 (increasing) on (−3, 3), 1 above; kinks at ±3."""
    return local_slopes(rule_, node, x_range,
                        lambda x: torch.where(x < -3, 0.0, torch.where(x > 3, 1.0, x / 3 + 0.5)),
                        [(-3.0, (0.0, -0.5)), (3.0, (1.5, 1.0))], margin=margin)


def _clip_limits(node) -> tuple[float | None, float | None]:
    """Clip's (min, max) from attributes (opset < 11) or constant inputs (11+); None if absent."""
    if node.since_version < 11:
        lims = [node.attr("min"), node.attr("max")]
    else:
        lims = [node.const(i) if node.has_input(i) else None for i in (1, 2)]
    lims = [None if v is None else float(np.asarray(v).reshape(())) for v in lims]
    # opset 6 defaults (±FLT_MAX) and infinite limits clip nothing a float32 can hold
    return tuple(None if v is None or abs(v) >= _FLT_MAX else v for v in lims)


@rule("Clip", versions=(6, 11, 12, 13), kind=Kind.ACTIVATION)
class Clip(Rule):
    """Clip: slopes [0, 1] ([0, 0] when min ≥ max: the output is constant).

    Bound: derivative 1 strictly between min and max, 0 outside.
    Exactness: exact (min < max: slope 1 attained inside; min ≥ max: constant output).
    Assumptions: min and max are constants (attributes before opset 11, inputs from 11).
    References: ONNX Clip (min > max sets every value to max).
    """

    def check(self, node):
        require_constant(node, 1, 2)

    def accepts_infinite(self, node, i):
        """A −inf min or +inf max clips nothing."""
        value = node.const(i)
        return value is not None and bool(np.all(value == (-np.inf if i == 1 else np.inf)))

    def forward(self, node, x, lo=None, hi=None):
        if node.since_version < 11:
            lo, hi = node.attr("min"), node.attr("max")
        return torch.clamp(x, min=lo, max=hi) if (lo is not None or hi is not None) else x

    def slopes(self, node):
        lo, hi = _clip_limits(node)
        if lo is not None and hi is not None and lo >= hi:
            return Slopes(0.0, 0.0)
        return Slopes(0.0, 1.0)

    def smooth(self, node, x, t):
        lo, hi = _clip_limits(node)
        if lo is not None and hi is not None and lo >= hi:
            return torch.full_like(x, hi)
        y = x
        if lo is not None:
            y = lo + _soft_relu(x - lo, t)
        if hi is not None:
            y = y - _soft_relu(x - hi, t)
        return y

    def local_slopes(self, node, x_range):
        """1 strictly between the limits, 0 outside."""
        lo, hi = _clip_limits(node)
        if lo is not None and hi is not None and lo >= hi:
            return Slopes(0.0, 0.0)
        lo = -np.inf if lo is None else lo
        hi = np.inf if hi is None else hi
        return local_slopes(self, node, x_range, lambda x: ((x > lo) & (x < hi)).to(x.dtype),
                            [(p, (0.0, 1.0)) for p in (lo, hi) if np.isfinite(p)], exact=True)


@rule("Abs", versions=(6, 13), kind=Kind.ACTIVATION)
class Abs(Rule):
    """Abs: slopes [−1, 1].

    Bound: derivative −1 on x < 0, 1 on x > 0 (one-sided −1 and 1 at 0).
    Exactness: exact (both slopes attained).
    Assumptions: none.
    References: ONNX Abs.
    """

    def forward(self, node, x):
        return torch.abs(x)

    def slopes(self, node):
        return Slopes(-1.0, 1.0)

    def smooth(self, node, x, t):
        return _soft_relu(x, t) + _soft_relu(-x, t)

    def local_slopes(self, node, x_range):
        return local_slopes(self, node, x_range, lambda x: _step(x, 0.0, -1.0, 1.0), [(0.0, (-1.0, 1.0))], exact=True)

    def interval(self, node, x_range):
        return abs_range(x_range)


@rule("Softsign", versions=(1, 22), kind=Kind.ACTIVATION)
class Softsign(Rule):
    """Softsign: slopes [0, 1].

    Bound: d/dx x/(1 + |x|) = 1/(1 + |x|)² ∈ (0, 1], 1 at x = 0.
    Exactness: exact (1 at 0; 0 is the infimum as |x| → ∞).
    Assumptions: none.
    References: ONNX Softsign.
    """

    def forward(self, node, x):
        return x / (1.0 + torch.abs(x))

    def slopes(self, node):
        return Slopes(0.0, 1.0)

    def local_slopes(self, node, x_range):
        """1/(1 + |x|)²: increasing below 0, decreasing above."""
        return local_slopes(self, node, x_range, lambda x: 1.0 / (1.0 + x.abs()) ** 2, [(0.0, (1.0,))])


@rule("Celu", versions=(12, 28), kind=Kind.ACTIVATION)
class Celu(Rule):
    """Celu (α > 0): slopes [0, 1].

    Bound: y = max(0, x) + min(0, α(e^{x/α} − 1)). For α > 0 the second term is α(e^{x/α} − 1)
      on x < 0 and 0 on x ≥ 0, so the derivative is e^{x/α} ∈ (0, 1) on x < 0 and 1 on x > 0
      (both one-sided derivatives at 0 are 1: Celu is C¹).
    Exactness: exact (1 attained; 0 the infimum as x → −∞).
    Assumptions: α > 0. For α < 0 the x < 0 branch is α(e^{x/α} − 1) with x/α → +∞: derivative
      unbounded, no global bound (not applicable); α = 0 is undefined.
    References: ONNX Celu; Barron 2017.
    """

    def check(self, node):
        if not node.attr("alpha", 1.0) > 0:
            raise RuleNotApplicable(f"no global Lipschitz bound: Celu with alpha = {node.attr('alpha', 1.0)} ≤ 0 "
                                    "has an unbounded derivative (or is undefined)")

    def forward(self, node, x):
        alpha = node.attr("alpha", 1.0)
        return torch.relu(x) + torch.clamp(alpha * torch.expm1(x / alpha), max=0.0)

    def slopes(self, node):
        self.check(node)    # [0, 1] holds for α > 0 only
        return Slopes(0.0, 1.0)

    def local_slopes(self, node, x_range):
        """e^{x/α} below 0 (increasing), 1 above (C¹ at 0); α > 0 (as check)."""
        self.check(node)
        a = node.attr("alpha", 1.0)
        return local_slopes(self, node, x_range, lambda x: torch.exp(torch.clamp(x, max=0.0) / a), [(0.0, (1.0,))])


#: 2/√π = 1.1283791670955125738961589… rounded up to the next float64.
ERF_MAX_SLOPE = float(np.nextafter(2.0 / np.sqrt(np.pi), np.inf))


@rule("Erf", versions=(9, 13), kind=Kind.ACTIVATION)
class Erf(Rule):
    """Erf: slopes [0, 2/√π] (2/√π ≈ 1.1283791671, rounded up).

    Bound: erf′(x) = (2/√π)e^{−x²} ∈ (0, 2/√π], maximal at 0.
    Exactness: certified (the float64 value of 2/√π rounded one ulp up; 0 is the infimum).
    Assumptions: none.
    References: ONNX Erf.
    """

    def forward(self, node, x):
        return torch.erf(x)

    def slopes(self, node):
        return Slopes(0.0, ERF_MAX_SLOPE, Label.CERTIFIED)

    def local_slopes(self, node, x_range):
        """(2/√π)e^{−x²}: increasing below 0, decreasing above."""
        return local_slopes(self, node, x_range, lambda x: 2 / np.pi ** 0.5 * torch.exp(-x * x),
                            [(0.0, (ERF_MAX_SLOPE,))])
