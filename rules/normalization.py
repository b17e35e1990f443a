"""Normalisation layers: BatchNormalization in inference form (affine with constant statistics),
and LayerNormalization, InstanceNormalization, GroupNormalization (statistics computed from the
input: NONLINEAR, with the exact global constant ‖diag(γ)P‖/√ε and a note that it is huge).
The fused LayerNorm and RMSNorm (rules/fused.py) use the same maths: ``slice_scales``,
``normalisation_bound``, ``normalise``, ``normalisation_note``, and on a box ``normalised_interval``,
``normalised_local``."""
from __future__ import annotations

import math

import numpy as np
import torch

from lipgraph.certify.intervals import mul, rms_scaled, standardised
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

    def abs_linear(self, node, r):
        """|scale_c|/√(var_c + eps)·r per channel."""
        scale = torch.as_tensor(np.asarray(node.const(1), dtype=np.float64))
        var = torch.as_tensor(np.asarray(node.const(4), dtype=np.float64))
        return r * (scale / torch.sqrt(var + node.attr("epsilon", 1e-5))).abs().reshape((1, -1) + (1,) * (r.dim() - 2))

    def conv_form(self, node):
        """Per-channel scale scale_c/√(var_c + eps) (rank ≥ 3 inputs), for segment folding."""
        from lipgraph.certify.convfold import ConvForm
        shape = node.input_shapes[0]
        if shape is None or len(shape) < 3:
            return None
        scale = np.asarray(node.const(1), dtype=np.float64)
        var = np.asarray(node.const(4), dtype=np.float64)
        return ConvForm.channel_scale(scale / np.sqrt(var + node.attr("epsilon", 1e-5)), shape[1])


# --- normalisations with statistics computed from the input (issue #10) -------------------------
#
# One normalised slice of n entries: y = γ ⊙ ẑ + β, ẑ = (x − μ1)/s, s = √(var + ε), var the
# population variance. Its Jacobian is J = (1/s)·Γ·M with Γ = diag(γ), M = P − ẑẑᵀ/n and
# P = I − 11ᵀ/n. Since Pẑ = ẑ and ‖ẑ‖² = n·var/s² < n, M is symmetric with eigenvalues 1 (on
# the complement of 1 and ẑ), ε/s² ∈ (0, 1] (on ẑ) and 0 (on 1): 0 ⪯ M ⪯ P and M² ⪯ M ⪯ P.
# Hence ‖ΓM‖² = λ_max(ΓM²Γ) ≤ λ_max(ΓPΓ) = ‖ΓP‖², so ‖J(x)‖ ≤ ‖ΓP‖/s ≤ ‖ΓP‖/√ε for every x;
# the domain is convex, so the mean value inequality makes ‖ΓP‖/√ε a Lipschitz constant. It is
# the supremum: at a constant slice x = c1, M = P and s = √ε, so J = ΓP/√ε there, and the
# ratio of the pair (c1, c1 + tv), v the top right singular vector of ΓP (v ⊥ 1), tends to
# ‖ΓP‖/√ε as t → 0. Slices are independent (block-diagonal Jacobian): the max over slices.
# ‖ΓP‖ ≤ max|γ| (design §9's closed form); computing it: ‖ΓP‖² = λ_max(Γ² − γγᵀ/n). If γ takes
# the distinct values a_k with multiplicities m_k, the eigenvalues are a_k² (multiplicity
# m_k − 1, eigenvectors ⊥ 1 inside class k) and those of the k×k matrix diag(a²) − wwᵀ,
# w_k = a_k√(m_k/n) (vectors constant on classes, orthonormal basis 1_k/√m_k).
# For n = 1, P = 0: the output is constant (β), constant 0.
#
# RMSNorm (no centring): y = γ ⊙ x/s with s = √(‖x‖²/n + ε) has J = (1/s)·Γ·(I − x̂x̂ᵀ/n), x̂ = x/s.
# ‖x̂‖²/n = (s² − ε)/s² < 1, so I − x̂x̂ᵀ/n has eigenvalues 1 (⊥ x) and ε/s² ∈ (0, 1] (on x):
# ‖J(x)‖ ≤ ‖Γ‖/s ≤ max|γ|/√ε, and at x = 0, J = Γ/√ε exactly: the constant is max|γ|/√ε, for
# every n (n = 1 included).

NORM_EIG_LIMIT = 2048   # distinct scale values up to which ‖ΓP‖ is computed; beyond, max|γ|


def projected_scale_norm(gamma: np.ndarray) -> tuple[float, bool]:
    """(‖diag(γ)·P‖₂ in float64, computed exactly?) for one slice with per-entry scales γ, P the
    projection orthogonal to 1; (max|γ|, False) when γ has too many distinct values."""
    g = np.asarray(gamma, dtype=np.float64).reshape(-1)
    n = g.size
    if n <= 1:
        return 0.0, True
    values, counts = np.unique(np.abs(g), return_counts=True)   # |γ|: ‖ΓP‖ = ‖|Γ|P‖ (sign flips DΓ, D = ±1)
    if values.size > NORM_EIG_LIMIT:
        return float(values.max()), False
    w = values * np.sqrt(counts / n)
    top = float(np.linalg.eigvalsh(np.diag(values ** 2) - np.outer(w, w))[-1])
    repeated = values[counts >= 2]
    top = max(top, float((repeated ** 2).max(initial=0.0)))
    return math.sqrt(max(top, 0.0)), True


def slice_scales(shape, dims, scale) -> list[np.ndarray]:
    """The distinct per-entry scale vectors γ_s of the slices over ``dims`` of a tensor of
    ``shape``, the scale broadcast against it as numpy does (aligned right); one vector of ones
    when ``scale`` is None."""
    rank, dims = len(shape), sorted(dims)
    g = np.ones(()) if scale is None else np.asarray(scale, np.float64)
    g = g.reshape((1,) * (rank - g.ndim) + g.shape)
    g = np.broadcast_to(g, [shape[d] if d in dims else g.shape[d] for d in range(rank)])
    rows = np.moveaxis(g, dims, range(rank - len(dims), rank)).reshape(-1, math.prod(shape[d] for d in dims))
    return list(np.unique(rows, axis=0))


def normalisation_bound(gammas, eps: float, method: str, centred: bool = True) -> Bound:
    """Certified max over slices of ‖Γ_s P‖/√ε (``centred``, LayerNorm) or ‖Γ_s‖/√ε (RMSNorm),
    see the comment above; ``gammas`` yields the per-entry scale vector of each distinct kind of
    slice."""
    best, exact = 0.0, True
    for g in gammas:
        value, ok = projected_scale_norm(g) if centred else (float(np.abs(g).max(initial=0.0)), True)
        best, exact = max(best, value), exact and ok
    if best == 0.0:   # every slice has one entry (or γ = 0): the output is constant
        return Bound(0.0, Label.EXACT, method)
    if eps <= 0:
        return Bound(math.inf, Label.CERTIFIED, method)
    value = certify(best / math.sqrt(eps), 4 * CERT_MARGIN)
    return Bound(value, Label.CERTIFIED, method, slack=4 * CERT_MARGIN if exact else None)


NORMALISATION_NOTE = ("normalization-global",
                      "{op}: its global Lipschitz constant ({value:.4g}, of the order max|γ|/√ε) is reached only "
                      "where a normalised slice has zero variance — huge and rarely relevant; a bound on a box "
                      "of inputs (which bounds the variance from below) is what you want")


def normalisation_note(node, bound: Bound):
    code, text = NORMALISATION_NOTE
    return [(code, text.format(op=node.op_type, value=bound.value))]


def normalise(x, dims, eps):
    """((x − mean)/√(var + ε), mean, var) over ``dims``."""
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps), mean, var


def scale_shift(y, scale=None, bias=None):
    """y·scale + bias, either omitted (None), broadcast as numpy does."""
    y = y if scale is None else y * scale.to(y.dtype)
    return y if bias is None else y + bias.to(y.dtype)


def _check_stats(node, *indices):
    require_constant(node, *indices)
    if any(o for o in node.outputs[1:]):
        raise RuleNotApplicable(f"{node.op_type}'s Mean/InvStdDev outputs are not analysed")


# On an input box (design §9): each slice's variance has a certified lower bound v (the exact
# minimum of the variance over the box, ``certify.intervals.variance_lower``), so s ≥ √(v + ε)
# and the Jacobian bound ‖ΓP‖/s above becomes ‖ΓP‖/√(v + ε): the global bound times
# √(ε/(v + ε)) with v the least over slices. The output range is γ·z + β with z's range from
# ``certify.intervals.standardised`` (|z_i| ≤ √(n − 1) even where the input range is unknown).
# RMSNorm likewise with v the least mean square over the box (``certify.intervals.rms_scaled``):
# ‖J‖ ≤ max|γ|/√(v + ε), the global bound max|γ|/√ε times √(ε/(v + ε)).


def box_statistics(x_range, dims, eps: float, centred: bool = True):
    """(range of the normalised z, lower bound on each slice's variance — mean square when not
    ``centred`` —) for the input range ``x_range`` normalised over ``dims`` taken together."""
    dims = sorted(dims)
    rank = x_range[0].dim()
    end = list(range(rank - len(dims), rank))
    moved = [torch.movedim(t, dims, end) for t in x_range]
    shape = moved[0].shape
    lo, hi = (t.reshape(-1, math.prod(shape[rank - len(dims):])) for t in moved)
    (z_lo, z_hi), v = standardised(lo, hi, eps) if centred else rms_scaled(lo, hi, eps)
    back = lambda t: torch.movedim(t.reshape(shape), end, dims)  # noqa: E731
    return (back(z_lo), back(z_hi)), v


def normalised_interval(x_range, dims, eps: float, scale=None, bias=None, centred: bool = True):
    """The output range of γ ⊙ z + β (``scale``/``bias``: constant ranges (c, c) or None)."""
    z, _ = box_statistics(x_range, dims, eps, centred)
    y = z if scale is None else mul(z, scale)
    return y if bias is None else (y[0] + bias[0], y[1] + bias[1])


def normalised_local(global_bound: Bound, x_range, dims, eps: float, centred: bool = True) -> dict[int, Bound]:
    """The global bound ‖ΓP‖/√ε (max|γ|/√ε) scaled to ‖ΓP‖/√(v + ε), v the least lower bound on a
    slice's variance (mean square) over the box."""
    _, v = box_statistics(x_range, dims, eps, centred)
    vmin = float(v.min()) if v.numel() else 0.0
    if eps <= 0 or not math.isfinite(global_bound.value):
        return {0: Bound(math.inf if vmin <= 0 else certify(global_bound.value), Label.CERTIFIED, "variance-range")}
    value = certify(global_bound.value * math.sqrt(eps / (vmin + eps)), 4 * CERT_MARGIN)
    return {0: Bound(min(value, global_bound.value), Label.CERTIFIED, "variance-range")}


@rule("LayerNormalization", versions=(17,), kind=Kind.NONLINEAR)
class LayerNormalization(Rule):
    """LayerNormalization: L = ‖diag(γ)·P‖₂/√ε ≤ max|γ|/√ε, P = I − 11ᵀ/n (exact supremum).

    Bound: per slice of n = Π shape[axis:] entries, J(x) = (1/s)Γ(P − ẑẑᵀ/n) with s = √(var+ε);
      0 ⪯ P − ẑẑᵀ/n ⪯ P, so ‖J(x)‖ ≤ ‖ΓP‖/s ≤ ‖ΓP‖/√ε (proof in the comment above the rules in
      rules/normalization.py); γ broadcast to the slice; 0 for n = 1.
    Exactness: certified, equal to the supremum up to rounding: at a constant slice J = ΓP/√ε,
      so a pair (c1, c1 + tv), v the top singular vector of ΓP, realises it as t → 0. (With more
      than 2048 distinct |γ| values the closed form max|γ|/√ε is used: sound, maybe loose.)
    Assumptions: scale and bias constant (scale omitted = 1); the Mean and InvStdDev outputs
      are not analysed (not applicable when named); stash_type ignored (real arithmetic).
    References: ONNX LayerNormalization; Ba et al. 2016; design §9.
    """

    def check(self, node):
        _check_stats(node, 1, 2)

    def forward(self, node, x, scale=None, bias=None):
        axis = node.attr("axis", -1) % x.dim()
        dims = tuple(range(axis, x.dim()))
        z, mean, var = normalise(x, dims, node.attr("epsilon", 1e-5))
        y = scale_shift(z, scale, bias)
        if any(node.outputs[1:]):
            return y, mean.to(x.dtype), (1.0 / torch.sqrt(var + node.attr("epsilon", 1e-5))).to(x.dtype)
        return y

    def bounds(self, node):
        shape = node.input_shapes[0]
        dims = range(node.attr("axis", -1) % len(shape), len(shape))
        gammas = slice_scales(shape, dims, node.const(1) if node.has_input(1) else None)
        return {0: normalisation_bound(gammas, node.attr("epsilon", 1e-5), "layernorm-jacobian")}

    def notes(self, node):
        return normalisation_note(node, self.bounds(node)[0])

    def interval(self, node, x_range, scale=None, bias=None):
        dims = range(node.attr("axis", -1) % x_range[0].dim(), x_range[0].dim())
        return normalised_interval(x_range, dims, node.attr("epsilon", 1e-5), scale, bias)

    def local_bounds(self, node, ranges):
        dims = range(node.attr("axis", -1) % ranges[0][0].dim(), ranges[0][0].dim())
        return normalised_local(self.bounds(node)[0], ranges[0], dims, node.attr("epsilon", 1e-5))


@rule("InstanceNormalization", versions=(6, 22), kind=Kind.NONLINEAR)
class InstanceNormalization(Rule):
    """InstanceNormalization: L = max_c |scale_c|/√ε (0 with one spatial entry; exact supremum).

    Bound: a LayerNorm over each (n, c) plane of m spatial entries with Γ = scale_c·I, so
      ‖ΓP‖ = |scale_c| for m ≥ 2 (see LayerNormalization and the proof in the source).
    Exactness: certified, equal to the supremum up to rounding (constant plane, as LayerNorm).
    Assumptions: scale and B constant.
    References: ONNX InstanceNormalization; Ulyanov et al. 2016; design §9.
    """

    def check(self, node):
        require_constant(node, 1, 2)

    def forward(self, node, x, scale, bias):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        z, _, _ = normalise(x, tuple(range(2, x.dim())), node.attr("epsilon", 1e-5))
        return z * scale.to(x.dtype).reshape(shape) + bias.to(x.dtype).reshape(shape)

    def bounds(self, node):
        m = math.prod(node.input_shapes[0][2:])
        gammas = [np.full(m, c) for c in np.unique(np.asarray(node.const(1), np.float64))]
        return {0: normalisation_bound(gammas, node.attr("epsilon", 1e-5), "layernorm-jacobian")}

    def notes(self, node):
        return normalisation_note(node, self.bounds(node)[0])

    def interval(self, node, x_range, scale, bias):
        per = (1, -1) + (1,) * (x_range[0].dim() - 2)
        scale, bias = ((t[0].reshape(per), t[0].reshape(per)) for t in (scale, bias))
        return normalised_interval(x_range, range(2, x_range[0].dim()), node.attr("epsilon", 1e-5), scale, bias)

    def local_bounds(self, node, ranges):
        return normalised_local(self.bounds(node)[0], ranges[0], range(2, ranges[0][0].dim()),
                                node.attr("epsilon", 1e-5))


def _group_scale(node, x_shape, scale) -> np.ndarray:
    """Per-channel scale (C,) of a GroupNormalization: v18 has one value per group, v21 per channel."""
    c, groups = x_shape[1], node.attr("num_groups")
    scale = np.asarray(scale, np.float64).reshape(-1)
    return np.repeat(scale, c // groups) if node.since_version < 21 else scale


@rule("GroupNormalization", versions=(18, 21), kind=Kind.NONLINEAR)
class GroupNormalization(Rule):
    """GroupNormalization: L = max over groups of ‖diag(γ_g)·P‖₂/√ε ≤ max|scale|/√ε (exact supremum).

    Bound: a LayerNorm over each group of C/G channels × spatial entries, γ_g the channel scales
      repeated over the spatial entries (see LayerNormalization and the proof in the source).
    Exactness: certified, equal to the supremum up to rounding (constant group, as LayerNorm).
    Assumptions: scale and bias constant; v18 has one scale/bias per group, v21 one per channel;
      stash_type ignored (real arithmetic). Torch exporters often write GroupNorm as Reshape →
      InstanceNormalization → Reshape → Mul/Add instead, which the other rules bound.
    References: ONNX GroupNormalization; Wu & He 2018; design §9.
    """

    def check(self, node):
        require_constant(node, 1, 2)

    def forward(self, node, x, scale, bias):
        n, c, groups = x.shape[0], x.shape[1], node.attr("num_groups")
        g = x.reshape(n, groups, -1)
        z, _, _ = normalise(g, (2,), node.attr("epsilon", 1e-5))
        shape = (1, c) + (1,) * (x.dim() - 2)
        return (z.reshape(x.shape) * torch.as_tensor(_group_scale(node, x.shape, scale.cpu()), dtype=x.dtype,
                                                      device=x.device).reshape(shape)
                + torch.as_tensor(_group_scale(node, x.shape, bias.cpu()), dtype=x.dtype,
                                  device=x.device).reshape(shape))

    def bounds(self, node):
        shape = node.input_shapes[0]
        groups, m = node.attr("num_groups"), math.prod(shape[2:])
        per_channel = _group_scale(node, shape, node.const(1)).reshape(groups, -1)
        return {0: normalisation_bound([np.repeat(g, m) for g in per_channel], node.attr("epsilon", 1e-5),
                                       "layernorm-jacobian")}

    def notes(self, node):
        return normalisation_note(node, self.bounds(node)[0])

    def interval(self, node, x_range, scale, bias):
        shape = x_range[0].shape
        groups = (shape[0], node.attr("num_groups"), -1)
        z, _ = box_statistics(tuple(t.reshape(groups) for t in x_range), (2,), node.attr("epsilon", 1e-5))
        per = (1, shape[1]) + (1,) * (len(shape) - 2)
        gamma, beta = (torch.as_tensor(_group_scale(node, shape, t[0].numpy())).reshape(per) for t in (scale, bias))
        y = mul((z[0].reshape(shape), z[1].reshape(shape)), (gamma, gamma))
        return y[0] + beta, y[1] + beta

    def local_bounds(self, node, ranges):
        groups = (ranges[0][0].shape[0], node.attr("num_groups"), -1)
        return normalised_local(self.bounds(node)[0], tuple(t.reshape(groups) for t in ranges[0]), (2,),
                                node.attr("epsilon", 1e-5))
