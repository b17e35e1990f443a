"""Structural ops: they move, drop or copy entries, so their norm is known in closed form.

Entry-copying maps P (each output entry is one input entry or a constant) have PᵀP diagonal,
holding how often each input entry is copied; so ‖P‖ = √(max copies), exactly. Helpers:
``copies_bound`` for that, ``ints`` to read constant integer operands (tensor, array or list).
Forward semantics work on any dtype, so int64 shape tensors go through them too.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import Bound, Label
from lipgraph.registry import Kind, Rule, require_constant, rule

EXACT_ONE = Bound(1.0, Label.EXACT, "permutation")
LATEST = (21, 23, 24, 25)   # since_versions that only added element types
INT64_MAX = 2**63 - 1


def ints(value) -> list[int] | None:
    """A constant integer operand (torch tensor, numpy array, list or scalar) as a list."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return [int(v) for v in np.asarray(value).reshape(-1)]


def copies_bound(max_copies: int | float, method: str = "copies") -> Bound:
    """‖P‖ = √(largest number of copies of one input entry); 0 when nothing is copied."""
    return Bound(math.sqrt(max_copies), Label.EXACT, method)


def nonempty(node, output: int = 0) -> Bound:
    """Norm of a selection (each entry kept at most once): 1, or 0 for an empty output."""
    shape = node.output_shapes[output]
    return EXACT_ONE if shape is None or node.numel_out(output) > 0 else copies_bound(0, "empty")


class _Structural(Rule):
    """Permutations/selections of entries: norm 1 (overridden where entries are copied)."""

    def certified_norm(self, node):
        return nonempty(node)


@rule("Reshape", versions=(5, 13, 14, 19) + LATEST, kind=Kind.STRUCTURAL)
class Reshape(_Structural):
    """Reshape keeps every entry: norm 1.

    Bound: 1. Exactness: exact (a permutation of storage order: identity).
    Assumptions: the target shape is constant (folded at load time); 0 copies the input
      dimension unless allowzero = 1; −1 is inferred.
    References: ONNX Reshape.
    """

    def check(self, node):
        require_constant(node, 1)

    def forward(self, node, x, shape):
        target = ints(shape)
        if not node.attr("allowzero", 0):
            target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
        return x.reshape(target)


@rule("Flatten", versions=(11, 13) + LATEST, kind=Kind.STRUCTURAL)
class Flatten(_Structural):
    """Flatten to 2-D keeps every entry: norm 1.

    Bound: 1. Exactness: exact. Assumptions: none (axis may be negative).
    References: ONNX Flatten.
    """

    def forward(self, node, x):
        axis = node.attr("axis", 1)
        axis = axis + x.dim() if axis < 0 else axis
        return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@rule("Transpose", versions=(1, 13) + LATEST, kind=Kind.STRUCTURAL)
class Transpose(_Structural):
    """Transpose permutes entries: norm 1.

    Bound: 1. Exactness: exact. Assumptions: none (default perm reverses the axes).
    References: ONNX Transpose.
    """

    def forward(self, node, x):
        perm = node.attr("perm") or list(range(x.dim()))[::-1]
        return x.permute(tuple(perm))


@rule("Squeeze", versions=(11, 13) + LATEST, kind=Kind.STRUCTURAL)
class Squeeze(_Structural):
    """Squeeze drops size-1 axes: norm 1.

    Bound: 1. Exactness: exact. Assumptions: axes constant (attribute before v13, input since).
    References: ONNX Squeeze.
    """

    def check(self, node):
        require_constant(node, 1)

    def forward(self, node, x, axes=None):
        axes = ints(axes) if axes is not None else node.attr("axes")
        if axes is None:
            axes = [i for i, n in enumerate(x.shape) if n == 1]
        keep = [n for i, n in enumerate(x.shape) if i not in {a % x.dim() for a in axes}]
        return x.reshape(keep)


@rule("Unsqueeze", versions=(11, 13) + LATEST, kind=Kind.STRUCTURAL)
class Unsqueeze(_Structural):
    """Unsqueeze inserts size-1 axes: norm 1.

    Bound: 1. Exactness: exact. Assumptions: axes constant (attribute before v13, input since);
      negative axes count from the output's rank.
    References: ONNX Unsqueeze.
    """

    def check(self, node):
        require_constant(node, 1)

    def forward(self, node, x, axes=None):
        axes = ints(axes) if axes is not None else list(node.attr("axes"))
        rank = x.dim() + len(axes)
        shape = list(x.shape)
        for a in sorted(a % rank for a in axes):
            shape.insert(a, 1)
        return x.reshape(shape)


def identity_form(node):
    """The identity as a per-channel scale of 1, so it folds into convolution segments."""
    from lipgraph.certify.convfold import ConvForm
    shape = node.input_shapes[0]
    return ConvForm.identity(shape[1]) if shape is not None and len(shape) >= 3 else None


@rule("Identity", versions=(1, 13, 14, 16, 19) + LATEST, kind=Kind.STRUCTURAL)
class Identity(_Structural):
    """Identity: norm 1.

    Bound: 1. Exactness: exact. Assumptions: a tensor (sequence/optional values are not analysed).
    References: ONNX Identity.
    """

    def forward(self, node, x):
        return x

    def conv_form(self, node):
        return identity_form(node)


@rule("Dropout", versions=(10, 12, 13, 22), kind=Kind.STRUCTURAL)
class Dropout(_Structural):
    """Dropout in inference is the identity: norm 1.

    Bound: 1. Exactness: exact.
    Assumptions: inference — ratio and training_mode constant, and training_mode false (or
      ratio 0); otherwise random masking, not applicable. The optional mask output is all
      true and constant (as the ONNX reference; onnxruntime's v10 kernel returns all false).
    References: ONNX Dropout (v10: ratio attribute; v12+: ratio, training_mode inputs).
    """

    def check(self, node):
        require_constant(node, 1, 2)
        training = node.const(2)
        ratio = node.const(1)
        ratio = float(ratio) if ratio is not None else node.attr("ratio", 0.5)
        if training is not None and bool(np.asarray(training)) and ratio > 0:
            raise RuleNotApplicable("Dropout with training_mode = true drops entries at random")

    def forward(self, node, x, ratio=None, training_mode=None):
        if len(node.outputs) > 1 and node.outputs[1]:
            return x, torch.ones(x.shape, dtype=torch.bool, device=x.device)
        return x

    def conv_form(self, node):
        return identity_form(node)


@rule("Slice", versions=(11, 13), kind=Kind.STRUCTURAL)
class Slice(_Structural):
    """Slice keeps a subset of entries: norm 1 (0 when the output is empty).

    Bound: 1 if the output is non-empty, else 0. Exactness: exact.
    Assumptions: starts, ends, axes and steps constant; ONNX clamping of out-of-range
      starts/ends, negative steps, empty results (start past end in the step's direction).
      An end of INT64_MAX with a negative step is not applicable: the spec (and the onnx
      reference) clamp it to dim − 1, onnxruntime treats it as "to the beginning".
    References: ONNX Slice.
    """

    def check(self, node):
        require_constant(node, 1, 2, 3, 4)
        ends, steps = ints(node.const(2)), ints(node.const(4))
        if ends is not None and steps is not None and any(e == INT64_MAX and s < 0 for e, s in zip(ends, steps)):
            raise RuleNotApplicable("Slice with end INT64_MAX and a negative step: the spec clamps the end to "
                                    "dim − 1 (an empty result), onnxruntime slices to the beginning")

    def forward(self, node, x, starts, ends, axes=None, steps=None):
        starts, ends = ints(starts), ints(ends)
        axes = ints(axes) if axes is not None else list(range(len(starts)))
        steps = ints(steps) if steps is not None else [1] * len(starts)
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis %= x.dim()
            dim = x.shape[axis]
            start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
            if step > 0:
                start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            else:
                start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            # range() is empty when start is already past end (e.g. start 0, end −1, step −1)
            x = torch.index_select(x, axis, torch.tensor(range(start, end, step), dtype=torch.long, device=x.device))
        return x


@rule("Split", versions=(11, 13, 18), kind=Kind.STRUCTURAL)
class Split(_Structural):
    """Split into parts: each output is a selection, norm 1.

    Bound: 1 for every output (0 for an empty one). Exactness: exact.
    Assumptions: split sizes constant (attribute before v13, input since; else equal parts,
      or num_outputs parts of ceil(n/num_outputs) with a smaller last one, v18).
    References: ONNX Split.
    """

    def check(self, node):
        require_constant(node, 1)

    def forward(self, node, x, split=None):
        axis = node.attr("axis", 0) % x.dim()
        n = x.shape[axis]
        sizes = ints(split) if split is not None else node.attr("split")
        if not sizes:
            parts = node.attr("num_outputs") or len(node.outputs)
            chunk = -(-n // parts) if node.attr("num_outputs") else n // parts
            sizes = [chunk] * (parts - 1) + [n - chunk * (parts - 1)]
        return tuple(torch.split(x, list(sizes), dim=axis))

    def certified_norm(self, node):
        """The bound for every output (each is a selection of entries)."""
        return max((nonempty(node, i) for i in range(len(node.outputs))), key=lambda b: b.value)


FLOAT_TYPES = {1: torch.float32, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


@rule("Cast", versions=(9, 13, 19) + LATEST + (28,), kind=Kind.STRUCTURAL)
class Cast(_Structural):
    """Cast between float types is the identity on real numbers: norm 1.

    Bound: 1. Exactness: exact for the real-valued map.
    Assumptions: float → float only (float16, bfloat16, float32, float64; the analysed tensor is
      a float); any other target (integers, bool, float8, strings) is not applicable, being
      piecewise constant. Rounding assumption: lipgraph evaluates a network in one working
      precision and bounds its exact-arithmetic map, so a float → float Cast is executed as the
      identity; rounding to a narrower format (at most half an ulp per entry, not a Lipschitz
      effect) is ignored, as all floating-point rounding is. Non-float inputs (shape plumbing)
      are cast faithfully.
    References: ONNX Cast.
    """

    def check(self, node):
        if node.attr("to") not in FLOAT_TYPES:
            raise RuleNotApplicable(f"Cast to ONNX type {node.attr('to')} is not float → float: "
                                    "piecewise constant, no useful Lipschitz bound")

    def notes(self, node):
        narrow = {10: "float16", 16: "bfloat16"}.get(node.attr("to"))
        if narrow is None:
            return []
        return [("low-precision-cast", f"Cast to {narrow}: the bound is on the real-arithmetic function; "
                 f"{narrow} rounding (half an ulp per entry) can add jumps that no Lipschitz bound covers")]

    def forward(self, node, x):
        if x.is_floating_point() and node.attr("to") in FLOAT_TYPES:
            return x
        import onnx
        dtype = torch.from_numpy(np.zeros(0, onnx.helper.tensor_dtype_to_np_dtype(node.attr("to")))).dtype
        return x.to(dtype)


def pad_sources(n: int, begin: int, end: int, mode: str) -> np.ndarray:
    """For one axis of length n: the input index each output position copies (−1: the constant)."""
    j = np.arange(-begin, n + end)
    if mode == "constant" or n == 0:
        return np.where((j >= 0) & (j < n), j, -1)
    if mode == "edge":
        return np.clip(j, 0, n - 1)
    if mode == "wrap":  # negative pads crop first, then the cropped axis wraps (as onnxruntime)
        lo, hi = max(-begin, 0), n - max(-end, 0)
        k = np.arange(-max(begin, 0), hi - lo + max(end, 0))
        return lo + k % max(hi - lo, 1)
    if n == 1:  # reflect
        return np.zeros_like(j)
    period = 2 * (n - 1)
    m = j % period
    return np.where(m < n, m, period - m)


def pad_axes(node, rank: int, pads, axes) -> list[tuple[int, int, int]]:
    """(axis, begin, end) for every padded axis."""
    pads = ints(pads)
    axes = ints(axes) if axes is not None else list(range(rank))
    k = len(axes)
    return [(a % rank, pads[i], pads[k + i]) for i, a in enumerate(axes)]


@rule("Pad", versions=(11, 13, 18, 19) + LATEST, kind=Kind.STRUCTURAL)
class Pad(_Structural):
    """Pad: constant mode norm 1; reflect/edge/wrap copy entries, norm √(max copies).

    Bound: √(Π over axes of the largest number of output positions copying one input
      position on that axis); 1 for constant mode (0 if the output has no input entry).
      Negative pads crop (for wrap, before wrapping, as onnxruntime does).
    Exactness: exact (the copy map has a diagonal Gram matrix; the copies of an entry
      multiply across axes).
    Assumptions: pads, axes and constant_value constant (the value is a shift).
    References: ONNX Pad (wrap mode since v19; axes input since v18).
    """

    def check(self, node):
        require_constant(node, 1, 2, 3)

    def forward(self, node, x, pads, value=None, axes=None):
        mode = node.attr("mode", "constant")
        fill = 0 if value is None else value.reshape(()).to(x.dtype)
        for axis, b, e in pad_axes(node, x.dim(), pads, axes):
            src = torch.as_tensor(pad_sources(x.shape[axis], b, e, mode), device=x.device)
            x = torch.index_select(x, axis, src.clamp(min=0))
            if mode == "constant":
                mask = (src >= 0).reshape([-1 if i == axis else 1 for i in range(x.dim())])
                x = torch.where(mask, x, torch.as_tensor(fill, dtype=x.dtype, device=x.device))
        return x

    def certified_norm(self, node):
        shape = node.input_shapes[0]
        copies = 1 if node.numel_in(0) > 0 else 0
        for axis, b, e in pad_axes(node, len(shape), node.const(1), node.const(3)):
            src = pad_sources(shape[axis], b, e, node.attr("mode", "constant"))
            copies *= int(np.bincount(src[src >= 0], minlength=1).max())
        return copies_bound(copies)


@rule("Concat", versions=(11, 13), kind=Kind.COMBINE)
class Concat(Rule):
    """Concat stacks its inputs: partial constant 1 each, AutoLip combines √(Σ L_i²).

    Bound: 1 per analysed input (0 for an empty one), combined in ℓ2: ‖(Δa, Δb)‖ = √(‖Δa‖² + ‖Δb‖²).
    Exactness: exact per input; the ℓ2 combination is tight when the inputs move independently.
    Assumptions: none (constant inputs contribute nothing).
    References: ONNX Concat.
    """

    combine = "l2"

    def forward(self, node, *xs):
        return torch.cat([x for x in xs if x is not None], dim=node.attr("axis"))

    def bounds(self, node):
        """1 per analysed input (its entries are copied once), 0 for an empty one."""
        return {i: Bound(1.0 if node.numel_in(i) else 0.0, Label.EXACT, "concat") for i in node.dynamic_indices}


@rule("Gather", versions=(11, 13), kind=Kind.STRUCTURAL)
class Gather(Rule):
    """Gather with constant indices copies slices: norm √(max multiplicity of an index).

    Bound: √(largest number of times one position along ``axis`` is selected); 0 if nothing is.
    Exactness: exact (a copy map).
    Assumptions: indices constant (negative indices count from the end); gathering at computed
      indices is piecewise constant in them and not applicable.
    References: ONNX Gather.
    """

    def check(self, node):
        require_constant(node, 1)

    def forward(self, node, data, indices):
        axis = node.attr("axis", 0) % data.dim()
        idx = indices.to(torch.long)
        idx = torch.where(idx < 0, idx + data.shape[axis], idx)
        out = torch.index_select(data, axis, idx.reshape(-1))
        return out.reshape(tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1:]))

    def certified_norm(self, node):
        shape = node.input_shapes[0]
        axis = node.attr("axis", 0) % len(shape)
        idx = np.asarray(node.const(1), dtype=np.int64).reshape(-1) % max(shape[axis], 1)
        if idx.size == 0 or node.numel_in(0) == 0:
            return copies_bound(0, "empty")
        return copies_bound(int(np.bincount(idx).max()))


@rule("Expand", versions=(8, 13), kind=Kind.STRUCTURAL)
class Expand(Rule):
    """Expand broadcasts: every entry copied numel(out)/numel(in) times, norm √(that ratio).

    Bound: √(numel(out)/numel(in)). Exactness: exact (every entry has the same number of copies).
    Assumptions: the shape is constant (bidirectional broadcasting as in numpy).
    References: ONNX Expand.
    """

    def check(self, node):
        require_constant(node, 1)

    def forward(self, node, x, shape):
        return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))

    def certified_norm(self, node):
        n_in = node.numel_in(0)
        out = np.broadcast_shapes(tuple(node.input_shapes[0]), tuple(ints(node.const(1))))
        return copies_bound(math.prod(out) / n_in if n_in else 0)


@rule("Tile", versions=(6, 13), kind=Kind.STRUCTURAL)
class Tile(Rule):
    """Tile copies every entry Π repeats times: norm √(Π repeats) (0 for an empty output).

    Bound: √(Π_a repeats_a). Exactness: exact (every entry has the same number of copies).
    Assumptions: repeats constant.
    References: ONNX Tile.
    """

    def check(self, node):
        require_constant(node, 1)

    def forward(self, node, x, repeats):
        return x.repeat(*ints(repeats)) if x.dim() else x

    def certified_norm(self, node):
        if node.numel_out() == 0 or node.numel_in(0) == 0:
            return copies_bound(0, "empty")
        return copies_bound(math.prod(ints(node.const(1))), "tile")


def depth_to_space(x, bs: int, mode: str):
    """ONNX DepthToSpace on (N, C, H, W): DCR reads the channel as (bs, bs, C/bs²), CRD as (C/bs², bs, bs)."""
    n, c, h, w = x.shape
    if mode == "CRD":
        t = x.reshape(n, c // (bs * bs), bs, bs, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        t = x.reshape(n, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
    return t.reshape(n, c // (bs * bs), h * bs, w * bs)


@rule("DepthToSpace", versions=(11, 13, 28), kind=Kind.STRUCTURAL)
class DepthToSpace(_Structural):
    """DepthToSpace permutes entries: norm 1.

    Bound: 1. Exactness: exact (a permutation).
    Assumptions: a 4-D (N, C, H, W) input; DCR (default) and CRD modes.
    References: ONNX DepthToSpace.
    """

    def forward(self, node, x):
        return depth_to_space(x, node.attr("blocksize"), node.attr("mode", "DCR"))


@rule("SpaceToDepth", versions=(1, 13, 28), kind=Kind.STRUCTURAL)
class SpaceToDepth(_Structural):
    """SpaceToDepth permutes entries: norm 1.

    Bound: 1. Exactness: exact (a permutation; the inverse of DepthToSpace in the same mode).
    Assumptions: a 4-D (N, C, H, W) input; DCR (default) and CRD (mode attribute, v28) modes.
    References: ONNX SpaceToDepth.
    """

    def forward(self, node, x):
        n, c, h, w = x.shape
        bs = node.attr("blocksize")
        t = x.reshape(n, c, h // bs, bs, w // bs, bs)
        t = t.permute(0, 1, 3, 5, 2, 4) if node.attr("mode", "DCR") == "CRD" else t.permute(0, 3, 5, 1, 2, 4)
        return t.reshape(n, c * bs * bs, h // bs, w // bs)
