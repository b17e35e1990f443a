"""Resize (nearest, linear, cubic) and the deprecated Upsample (Resize with asymmetric coordinates
and floor rounding): linear and separable, so AFFINE with an exact norm.

Along each axis a the op applies a fixed interpolation matrix R_a (n_out × n_in) built from the
ONNX spec (``axis_matrix``); the whole map is R_1 ⊗ … ⊗ R_d and ‖⊗R_a‖₂ = Π‖R_a‖₂ (design §9).
``forward`` applies the very matrices ``certified_norm`` norms, so the two cannot disagree, and
the tests check both against onnxruntime and an explicit SVD of the materialised operator.
Coordinates of nearest mode are computed in float32 as onnxruntime does (ties decide the index).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import LADDER_SLACK, Bound, Label, certify
from lipgraph.registry import Kind, Rule, require_constant, rule
from lipgraph.rules.pooling import _apply_along
from lipgraph.rules.shape import ints

MODES = ("nearest", "linear", "cubic")
COORDINATES = ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel")


def _source_coordinates(n_in: int, n_out: int, scale: float, ctm: str, dtype) -> np.ndarray:
    """x_original for every output position (ONNX coordinate_transformation_mode)."""
    o = np.arange(n_out, dtype=dtype)
    s, half = dtype(scale), dtype(0.5)
    if ctm == "align_corners":
        return o * dtype(n_in - 1) / dtype(n_out - 1) if n_out > 1 else np.zeros(n_out, dtype)
    if ctm == "asymmetric":
        return o / s
    if ctm == "pytorch_half_pixel" and n_out <= 1:
        return np.zeros(n_out, dtype)
    return (o + half) / s - half


def _cubic_matrix(n_in: int, x: np.ndarray, a: float, exclude_outside: bool) -> np.ndarray:
    """Cubic convolution (Keys) weights on the 4 neighbours floor(x)−1 … floor(x)+2: edge-clamped,
    or with exclude_outside the weights of outside neighbours dropped and the rest renormalised."""
    fl = np.floor(x)
    t = (x - fl)[:, None] + np.array([1.0, 0.0, -1.0, -2.0])[None, :]   # distances to the 4 neighbours
    d = np.abs(t)
    w = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                 np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
    idx = fl.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    if exclude_outside:
        w = np.where((idx >= 0) & (idx < n_in), w, 0.0)
        w = w / w.sum(axis=1, keepdims=True)
    r = np.zeros((x.size, n_in))
    np.add.at(r, (np.repeat(np.arange(x.size), 4), np.clip(idx, 0, n_in - 1).reshape(-1)), w.reshape(-1))
    return r


def axis_matrix(n_in: int, n_out: int, scale: float, mode: str, ctm: str, nearest_mode: str,
                a: float = -0.75, exclude_outside: bool = False) -> np.ndarray:
    """The (n_out, n_in) interpolation matrix of one axis."""
    r = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if mode == "nearest":
        x = _source_coordinates(n_in, n_out, scale, ctm, np.float32).astype(np.float64)
        fl = np.floor(x)
        frac = x - fl
        idx = {"round_prefer_floor": np.where(frac <= 0.5, fl, fl + 1),
               "round_prefer_ceil": np.where(frac < 0.5, fl, fl + 1),
               "floor": fl, "ceil": np.ceil(x)}[nearest_mode]
        r[rows, np.clip(idx, 0, n_in - 1).astype(np.int64)] = 1.0
        return r
    if mode == "cubic":
        return _cubic_matrix(n_in, _source_coordinates(n_in, n_out, scale, ctm, np.float64), a, exclude_outside)
    x = np.clip(_source_coordinates(n_in, n_out, scale, ctm, np.float64), 0, n_in - 1)
    i0 = np.floor(x).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = x - i0
    np.add.at(r, (rows, i0), 1.0 - w)
    np.add.at(r, (rows, i1), w)
    return r


def _plan(node, in_shape, scales, sizes) -> list[tuple[int, int, int, float]]:
    """(axis, n_in, n_out, scale) for every axis; output sizes as onnxruntime computes them
    (floor(n·scale) in float32 for scales; the scale of sizes is n_out/n_in)."""
    rank = len(in_shape)
    axes = list(node.attr("axes") or range(rank)) if node.since_version >= 18 else list(range(rank))
    axes = [a % rank for a in axes]
    scales = None if scales is None or np.size(scales) == 0 else np.asarray(scales, np.float32).reshape(-1)
    sizes = None if sizes is None or np.size(sizes) == 0 else ints(sizes)
    plan = []
    for a in range(rank):
        n = int(in_shape[a])
        if a not in axes:
            plan.append((a, n, n, 1.0))
        elif sizes is not None:
            m = sizes[axes.index(a)]
            plan.append((a, n, m, float(np.float32(m) / np.float32(n))))
        else:
            s = scales[axes.index(a)]
            plan.append((a, n, int(np.floor(np.float32(n) * s)), float(s)))
    return plan


def _matrices(node, in_shape, scales, sizes, settings):
    """(axis, R_a) for every axis that changes; ``settings``: (mode, coordinate transform, nearest
    mode, cubic_coeff_a, exclude_outside)."""
    return [(a, axis_matrix(n, m, s, *settings)) for a, n, m, s in _plan(node, in_shape, scales, sizes)
            if not (n == m and s == 1.0)]   # scale 1 and same size: the identity in every mode here


def _to_numpy(t):
    return None if t is None else t.detach().cpu().numpy()


class _Separable(Rule):
    """Resize and Upsample: ``settings``, ``unsupported`` and ``operands`` (the constant scales and
    sizes) say which interpolation; forward and certified_norm apply and norm the same matrices."""

    def settings(self, node) -> tuple:
        raise NotImplementedError

    def unsupported(self, node) -> str | None:
        raise NotImplementedError

    def operands(self, node) -> tuple:
        raise NotImplementedError

    def interpolate(self, node, x, scales, sizes):
        reason = self.unsupported(node)
        if reason:
            raise NotImplementedError(reason)
        for a, matrix in _matrices(node, tuple(x.shape), _to_numpy(scales), _to_numpy(sizes), self.settings(node)):
            x = _apply_along(x, a, matrix)
        return x

    def abs_linear(self, node, r):
        """The separable interpolation with |R_a| on every axis (cubic weights can be negative)."""
        for a, matrix in _matrices(node, tuple(r.shape), *self.operands(node), self.settings(node)):
            r = _apply_along(r, a, np.abs(matrix))
        return r

    def certified_norm(self, node):
        from lipgraph.certify.dense import matrix_norm
        mats = _matrices(node, node.input_shapes[0], *self.operands(node), self.settings(node))
        value = math.prod(matrix_norm(m) for _, m in mats)
        return Bound(certify(value), Label.CERTIFIED, "separable-svd", slack=LADDER_SLACK)


def _unsupported(node) -> str | None:
    mode = node.attr("mode", "nearest")
    ctm = node.attr("coordinate_transformation_mode", "half_pixel")
    if mode not in MODES:
        return f"Resize mode '{mode}' is not supported"
    if ctm not in COORDINATES:
        return f"Resize coordinate_transformation_mode '{ctm}' is not supported ({', '.join(COORDINATES)} are)"
    if node.attr("antialias", 0):
        return "Resize with antialias = 1 is not supported"
    if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        return f"Resize keep_aspect_ratio_policy '{node.attr('keep_aspect_ratio_policy')}' is not supported"
    return None


@rule("Resize", versions=(11, 13, 18, 19), kind=Kind.AFFINE)
class Resize(_Separable):
    """Resize (nearest, linear, cubic): norm Π_a ‖R_a‖₂ over the per-axis interpolation matrices.

    Bound: the map is R_1 ⊗ … ⊗ R_d (separable interpolation, each R_a built from the spec's
      coordinate transform and nearest rounding, linear weights or cubic (Keys, cubic_coeff_a,
      exclude_outside) weights, edge-clamped), and
      ‖⊗R_a‖ = Π‖R_a‖ (Kronecker norm identity). Nearest with integer upscale s per axis gives
      √s per axis.
    Exactness: certified (float64 norms of each small R_a, plus margin); equal to the true norm.
    Assumptions: scales or sizes constant (roi unused in these modes); mode nearest, linear or cubic;
      coordinate_transformation_mode half_pixel, asymmetric, align_corners or pytorch_half_pixel;
      antialias = 0; keep_aspect_ratio_policy stretch; v18 axes supported. Anything else
      (tf_crop_and_resize, tf_half_pixel_for_nn, half_pixel_symmetric, antialias) is not applicable.
    References: ONNX Resize; Horn & Johnson, Topics in Matrix Analysis, Thm 4.2.15; design §9.
    """

    def check(self, node):
        require_constant(node, 1, 2, 3)
        reason = _unsupported(node)
        if reason:
            raise RuleNotApplicable(reason)

    def settings(self, node):
        return (node.attr("mode", "nearest"), node.attr("coordinate_transformation_mode", "half_pixel"),
                node.attr("nearest_mode", "round_prefer_floor"), node.attr("cubic_coeff_a", -0.75),
                bool(node.attr("exclude_outside", 0)))

    def unsupported(self, node):
        return _unsupported(node)

    def operands(self, node):
        return (node.const(2) if node.has_input(2) else None, node.const(3) if node.has_input(3) else None)

    def forward(self, node, x, roi=None, scales=None, sizes=None):
        return self.interpolate(node, x, scales, sizes)


@rule("Upsample", versions=(7, 9), kind=Kind.AFFINE)
class Upsample(_Separable):
    """Upsample (deprecated; nearest, linear): Resize with asymmetric coordinates and floor rounding.

    Bound: Π_a ‖R_a‖₂ over the per-axis interpolation matrices, as Resize (the same code):
      nearest reads x[floor(o/s)], linear interpolates at o/s (edge-clamped), as onnxruntime.
    Exactness: certified (float64 norms of each small R_a, plus margin); equal to the true norm.
    Assumptions: scales constant (the attribute before v9, an input since); mode nearest or
      linear (anything else is not applicable). Upsample-10 is deprecated (onnx and onnxruntime
      refuse such models), so it has no rule.
    References: ONNX Upsample (opsets 7–9, deprecated in 10); design §9.
    """

    def check(self, node):
        require_constant(node, 1)
        reason = self.unsupported(node)
        if reason:
            raise RuleNotApplicable(reason)

    def settings(self, node):
        return (node.attr("mode", "nearest"), "asymmetric", "floor")

    def unsupported(self, node):
        mode = node.attr("mode", "nearest")
        return None if mode in ("nearest", "linear") else f"Upsample mode '{mode}' is not supported"

    def operands(self, node):
        return (node.attr("scales") if node.since_version < 9 else node.const(1), None)

    def forward(self, node, x, scales=None):
        if node.since_version < 9:
            scales = torch.tensor(node.attr("scales"), dtype=torch.float32)
        return self.interpolate(node, x, scales, None)
