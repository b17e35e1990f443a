"""Comparisons, logical ops, Where, ArgMax/ArgMin.

Comparisons (Greater, Less, Equal, GreaterOrEqual, LessOrEqual) and logical ops (Not, And, Or,
Xor) have boolean outputs, ArgMax/ArgMin integer ones: piecewise constant functions that jump,
so nothing computed through them from the analysed input is Lipschitz. They have rules so that
lipgraph executes such models and reports each node with the code ``not-lipschitz`` (instead of
"unsupported op"); with constant inputs they are folded like any other node.

Where(cond, X, Y) with a constant condition is a selection: each output entry is an entry of X
(where cond holds) or of Y, so its partial norm in X is √(the largest number of output entries
copying one entry of X where cond holds) — 1 without broadcasting, 0 when cond never holds —
and likewise for Y (exact). A condition computed from the input makes Where jump where it
flips: not Lipschitz, unless both branches are the same tensor (or equal constants), when the
output is X whatever the condition.
"""
from __future__ import annotations

import numpy as np
import torch

from lipgraph.errors import NotLipschitz
from lipgraph.labels import Bound, Label
from lipgraph.registry import Kind, Rule, rule
from lipgraph.rules.shape import copies_bound

ZERO = Bound(0.0, Label.EXACT, "constant")


def _jumps(op: str, what: str) -> str:
    return f"not Lipschitz: {op} {what} (no Lipschitz bound exists)"


class _Discrete(Rule):
    """An op whose output is boolean or integer: not Lipschitz in a computed input."""

    what = "has a boolean output, a step function of its computed input"

    def check(self, node):
        if node.dynamic_indices:
            raise NotLipschitz(_jumps(node.op_type, self.what))

    def bounds(self, node):
        self.check(node)
        return {}


def _comparable(t):
    """torch compares no uint16/32/64 tensors: widen the first two to int64, and map uint64 to int64
    by flipping the sign bit of its bits (an order-preserving bijection)."""
    if t.dtype in (torch.uint16, torch.uint32):
        return t.to(torch.int64)
    if t.dtype == torch.uint64:
        return torch.bitwise_xor(t.view(torch.int64), torch.iinfo(torch.int64).min)
    return t


def _binary(fn):
    class Binary(_Discrete):
        def forward(self, node, a, b):
            return fn(_comparable(a), _comparable(b))
    return Binary


_DOC = """{op}: boolean output — not Lipschitz in a computed input.

    Bound: none (a step function: it jumps where the inputs cross; not applicable, code not-lipschitz).
    Exactness: —. Assumptions: none (constant inputs are folded). References: ONNX {op}.
    """

COMPARISONS = {"Greater": ((7, 9, 13), torch.gt), "Less": ((7, 9, 13), torch.lt),
               "Equal": ((7, 11, 13, 19), torch.eq), "GreaterOrEqual": ((12, 16), torch.ge),
               "LessOrEqual": ((12, 16), torch.le), "And": ((7,), torch.logical_and),
               "Or": ((7,), torch.logical_or), "Xor": ((7,), torch.logical_xor)}

for _op, (_versions, _fn) in COMPARISONS.items():
    rule(_op, versions=_versions, kind=Kind.NONLINEAR)(type(_op, (_binary(_fn),), {"__doc__": _DOC.format(op=_op)}))


@rule("Not", versions=(1,), kind=Kind.NONLINEAR)
class Not(_Discrete):
    """Not: boolean output — not Lipschitz in a computed input.

    Bound: none (a step function of a boolean; not applicable, code not-lipschitz).
    Exactness: —. Assumptions: none (constant inputs are folded). References: ONNX Not.
    """

    def forward(self, node, x):
        return torch.logical_not(x)


class _ArgExtreme(_Discrete):
    what = "has an integer output that jumps where the extreme entry changes place"
    pick = staticmethod(torch.argmax)

    def forward(self, node, x):
        axis = node.attr("axis", 0) % x.dim()
        if node.attr("select_last_index", 0):
            idx = x.shape[axis] - 1 - self.pick(torch.flip(x, (axis,)), dim=axis, keepdim=True)
        else:
            idx = self.pick(x, dim=axis, keepdim=True)
        return idx if node.attr("keepdims", 1) else idx.squeeze(axis)


@rule("ArgMax", versions=(1, 11, 12, 13), kind=Kind.NONLINEAR)
class ArgMax(_ArgExtreme):
    """ArgMax: integer output (also through a Cast to float) — not Lipschitz in a computed input.

    Bound: none (the index jumps where the largest entry changes place; not applicable, code
      not-lipschitz).
    Exactness: —. Assumptions: none (constant inputs are folded). References: ONNX ArgMax.
    """


@rule("ArgMin", versions=(1, 11, 12, 13), kind=Kind.NONLINEAR)
class ArgMin(_ArgExtreme):
    """ArgMin: integer output (also through a Cast to float) — not Lipschitz in a computed input.

    Bound: none (the index jumps where the smallest entry changes place; not applicable, code
      not-lipschitz).
    Exactness: —. Assumptions: none (constant inputs are folded). References: ONNX ArgMin.
    """

    what = "has an integer output that jumps where the smallest entry changes place"
    pick = staticmethod(torch.argmin)


def _branches_equal(node) -> bool:
    """Both branches are the same tensor, or equal constants: Where's output ignores the condition."""
    if node.inputs[1] == node.inputs[2]:
        return True
    x, y = node.const(1), node.const(2)
    if x is None or y is None:
        return False
    shape = node.output_shapes[0]
    return bool(np.array_equal(np.broadcast_to(x, shape), np.broadcast_to(y, shape)))


def selection_copies(in_shape, out_shape, mask) -> int:
    """The largest number of output entries (where ``mask`` holds) that copy one entry of an input
    of ``in_shape`` broadcast to ``out_shape``."""
    index = np.broadcast_to(np.arange(int(np.prod(in_shape))).reshape(in_shape), out_shape)
    picked = index[np.broadcast_to(mask, out_shape)]
    return int(np.bincount(picked).max()) if picked.size else 0


@rule("Where", versions=(9, 16), kind=Kind.COMBINE)
class Where(Rule):
    """Where with a constant condition: a selection, partial norms √(max copies) per branch (exact).

    Bound: for X, √(the largest number of output entries where cond holds that copy one entry of
      X under broadcasting) — 1 without broadcasting, 0 when cond never holds; for Y the same
      where cond does not hold. AutoLip adds the two partial constants (the output is
      M⊙X + (1 − M)⊙Y); a segment of one source norms them jointly.
    Exactness: exact per input.
    Assumptions: cond constant; a computed condition makes the output jump where it flips (not
      applicable, code not-lipschitz) unless both branches are the same tensor or equal constants
      (then the output is X broadcast: √(max copies), 0 for the condition).
    References: ONNX Where.
    """

    def check(self, node):
        if node.dynamic[0] and not _branches_equal(node):
            raise NotLipschitz(_jumps("Where", "selects by a condition computed from the input: the output jumps "
                                               "where the condition flips"))

    def forward(self, node, cond, x, y):
        return torch.where(cond.to(torch.bool), x, y)

    def interval(self, node, cond, x, y):
        """A condition known on the box (a point range): each branch's range where it is selected;
        otherwise each entry is an entry of X or of Y, so the hull of both ranges."""
        if torch.equal(cond[0], cond[1]):
            return self.forward(node, cond[0], x[0], y[0]), self.forward(node, cond[0], x[1], y[1])
        return torch.minimum(x[0], y[0]), torch.maximum(x[1], y[1])   # broadcast to the output by the pass

    def bounds(self, node):
        self.check(node)
        out = node.output_shapes[0]
        if node.dynamic[0]:   # equal branches: the output is X (input 1) whatever the condition
            every = np.ones(out, dtype=bool)
            result = {0: ZERO, 2: ZERO}
            if node.dynamic[1]:
                result[1] = copies_bound(selection_copies(node.input_shapes[1], out, every), "selection")
            return {i: b for i, b in result.items() if node.dynamic[i]}
        cond = np.asarray(node.const(0), dtype=bool)
        masks = {1: cond, 2: ~cond}
        return {i: copies_bound(selection_copies(node.input_shapes[i], out, masks[i]), "selection")
                for i in (1, 2) if node.dynamic[i]}
