"""Dense affine ops with a constant weight: Gemm, MatMul, Einsum (one computed operand)."""
from __future__ import annotations

import math

import numpy as np
import torch

from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import LADDER_SLACK, Bound, Label, certify
from lipgraph.certify.dense import matrix_norm
from lipgraph.certify.intervals import matmul, sup_abs
from lipgraph.registry import Kind, Rule, default_interval, require_constant, rule


def spectral_norm(matrix: np.ndarray) -> float:
    """An upper bound on the largest singular value, tight to ~1e-7 (float64; small matrices
    by eigenvalues, large ones by a Cholesky proof at a Lanczos estimate — see
    ``lipgraph.certify.dense.matrix_norm``). A stack of matrices (batched MatMul weight) acts
    block-diagonally: the largest over the stack. Blocks go to ``matrix_norm`` in their own dtype
    (it forms float64 Gram matrices from them without a float64 copy of the weight)."""
    m = np.asarray(matrix)
    if m.size == 0:
        return 0.0
    blocks = m.reshape(-1, *m.shape[-2:])
    return float(max(matrix_norm(b) for b in blocks))


def matmul_norm(weight: np.ndarray, x_shape: tuple[int, ...], weight_left: bool) -> float:
    """‖x ↦ x·W‖ (or ‖x ↦ W·x‖ when ``weight_left``) for numpy-matmul broadcasting.

    Rows of x (columns when W is on the left) and x's batch entries touch disjoint outputs,
    so the norm is the largest over x's batch entries of σ_max of the W matrices that entry
    meets, side by side: [W_1 W_2 …] when x is broadcast over W's batch (stacked vertically
    for W on the left, the same by transposition)."""
    w = np.asarray(weight)
    x_shape = tuple(x_shape)
    if weight_left:  # W·x = (xᵀ·Wᵀ)ᵀ; a 1-D operand is a row (W) or a column (x)
        w = w[None, :] if w.ndim == 1 else np.swapaxes(w, -1, -2)
        x_shape = (1,) + x_shape if len(x_shape) == 1 else x_shape[:-2] + (x_shape[-1], x_shape[-2])
    else:
        w = w[:, None] if w.ndim == 1 else w
        x_shape = (1,) + x_shape if len(x_shape) == 1 else x_shape
    if w.size == 0 or 0 in x_shape:
        return 0.0
    batch = np.broadcast_shapes(x_shape[:-2], w.shape[:-2])
    w = np.broadcast_to(w, batch + w.shape[-2:])
    xb = (1,) * (len(batch) - len(x_shape[:-2])) + x_shape[:-2]
    copy = [a for a in range(len(batch)) if xb[a] == 1 and batch[a] > 1]   # x broadcast along these
    keep = [a for a in range(len(batch)) if a not in copy]
    k, n = w.shape[-2:]
    w = np.transpose(w, keep + copy + [len(batch), len(batch) + 1])
    w = w.reshape(-1, int(np.prod([batch[a] for a in copy], dtype=np.int64)), k, n)
    side_by_side = np.transpose(w, (0, 2, 1, 3)).reshape(w.shape[0], k, -1)
    return spectral_norm(side_by_side)


@rule("Gemm", versions=(7, 9, 11, 13), kind=Kind.AFFINE)
class Gemm(Rule):
    """Y = alpha·A'·B' + beta·C with constant B: ‖linear part‖ = |alpha|·σ_max(B).

    Bound: |alpha|·σ_max(B) (B transposed or not, the norm is the same).
    Exactness: certified, within ~1e-7 of the true constant (float64 eigenvalues or a Cholesky
      proof just above a Lanczos estimate, plus margin).
    Assumptions: B constant; A is the analysed input (transA allowed); C constant.
    References: ONNX Gemm.
    """

    def check(self, node):
        require_constant(node, 1, 2)

    def forward(self, node, a, b, c=None):
        if node.attr("transA"):
            a = a.transpose(-1, -2)
        if node.attr("transB"):
            b = b.transpose(-1, -2)
        y = node.attr("alpha", 1.0) * (a @ b)
        if c is not None:
            y = y + node.attr("beta", 1.0) * c
        return y

    def cost(self, node):
        """Multiply-adds: each output entry is a dot product of length K (A's columns, or rows if transA)."""
        a = node.input_shapes[0]
        return float(math.prod(node.output_shapes[0]) * (a[0] if node.attr("transA") else a[-1]))

    def certified_norm(self, node):
        sigma = abs(node.attr("alpha", 1.0)) * spectral_norm(node.const(1))
        return Bound(certify(sigma), Label.CERTIFIED, "svd", slack=LADDER_SLACK)

    def abs_linear(self, node, r):
        """|alpha|·r·|B| (transposes as the node's)."""
        return self.forward(node, r, torch.as_tensor(np.abs(np.asarray(node.const(1), np.float64)))).abs()


@rule("MatMul", versions=(9, 13), kind=Kind.AFFINE)
class MatMul(Rule):
    """Y = X·W or W·X with one constant operand: ‖linear part‖ = σ_max(W) (broadcast-aware).

    Bound: σ_max of W, in float64; with a batched W, the largest over the batch, and where
      the analysed operand is broadcast over W's batch, σ_max of those W side by side
      ([W_1 … W_b] on the right, stacked on the left). 1-D operands follow numpy matmul.
    Exactness: certified, within ~1e-7 of the true constant (float64 eigenvalues or a Cholesky
      proof just above a Lanczos estimate, plus margin).
    Assumptions: exactly one operand is computed from the analysed input; a product of two
      computed tensors is bilinear, has no global bound, and is not applicable.
    References: ONNX MatMul (numpy.matmul semantics).
    """

    box_only = True     # refused only as a product of two computed tensors

    def check(self, node):
        if node.dynamic[0] and node.dynamic[1]:
            raise RuleNotApplicable("MatMul of two tensors computed from the input is bilinear: "
                                    "no global Lipschitz bound")

    def forward(self, node, a, b):
        return a @ b

    def abs_linear(self, node, r):
        left = not node.dynamic[0]
        w = torch.as_tensor(np.abs(np.asarray(node.const(0 if left else 1), np.float64)))
        return w @ r if left else r @ w

    def interval(self, node, a, b):
        """One constant operand: centre ± |W|·radius (the default); two ranges: midpoint–radius product."""
        if node.dynamic[0] and node.dynamic[1]:
            return matmul(a, b)
        return default_interval(self, node, (a, b))

    def local_bounds(self, node, ranges):
        """Two computed operands: Δ(AB) = ΔA·B(x) + A(y)·ΔB, and ‖X ↦ X·B‖ ≤ ‖X ↦ X·B̄‖ for the
        entrywise sup B̄ = sup|B| over B's range (σ_max is monotone in |entries|), so the partial
        bounds are ``matmul_norm`` of the other operand's sup (∞ when that range is unbounded)."""
        out = {}
        for i in node.dynamic_indices:
            other = sup_abs(ranges[1 - i]).numpy()
            if not np.isfinite(other).all():
                out[i] = Bound(math.inf, Label.CERTIFIED, "matmul-range")
                continue
            sigma = matmul_norm(other, node.input_shapes[i], weight_left=(i == 1))
            out[i] = Bound(certify(sigma), Label.CERTIFIED, "matmul-range")
        return out

    def cost(self, node):
        """Multiply-adds: each output entry is a dot product over A's last axis."""
        return float(math.prod(node.output_shapes[0] or (1,)) * node.input_shapes[0][-1])

    def certified_norm(self, node):
        left = not node.dynamic[0]          # the constant weight is the left operand
        w = node.const(0 if left else 1)
        sigma = matmul_norm(w, node.input_shapes[1 if left else 0], weight_left=left)
        return Bound(certify(sigma), Label.CERTIFIED, "svd", slack=LADDER_SLACK)


def _einsum_terms(equation: str) -> tuple[list[str], str]:
    """(input terms, output term) of an einsum equation without ellipsis; the implicit output is
    the letters appearing once, in alphabetical (ASCII) order, as numpy and the ONNX spec say."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    if not arrow:
        rhs = "".join(sorted(c for c in set(lhs) if c.isalpha() and lhs.count(c) == 1))
    return lhs.split(","), rhs


def einsum_norm(node) -> float | None:
    """‖x ↦ einsum(…, x, …)‖ with every other operand constant, or None for an equation with an
    ellipsis or a repeated letter in x's term (the engine then materialises the operator).

    Contract the constants into one tensor K over their letters that x or the output keeps. Split
    x's letters into batch b (in K and the output), contracted c (in K only), kept f (in the
    output only) and summed s (nowhere else), and K's other letters into o. Then
    y[b, f, o] = Σ_{c,s} x[b, f, c, s]·K[b, c, o]: for each b the map is I_f ⊗ K_bᵀ ⊗ 1_sᵀ, of
    norm ‖K_b‖·√n_s, and the b blocks are independent: the largest over b."""
    terms, out = _einsum_terms(node.attr("equation"))
    (i,) = node.dynamic_indices
    xt = terms[i]
    if "." in node.attr("equation") or len(set(xt)) != len(xt):
        return None
    others = [k for k in range(len(terms)) if k != i]
    keep = "".join(c for c in dict.fromkeys("".join(terms[k] for k in others)) if c in xt or c in out)
    spec = ",".join(terms[k] for k in others)
    kernel = np.einsum(f"{spec}->{keep}", *[np.asarray(node.const(k), np.float64) for k in others]) \
        if others else np.ones(())
    size = dict(zip(xt, node.input_shapes[i]))
    size.update(zip(keep, kernel.shape))
    batch = [c for c in xt if c in keep and c in out]
    contracted = [c for c in xt if c in keep and c not in out]
    summed = [c for c in xt if c not in keep and c not in out]
    kept = [c for c in keep if c not in xt]
    kernel = np.einsum(f"{keep}->{''.join(batch + contracted + kept)}", kernel)
    blocks = kernel.reshape(math.prod(size[c] for c in batch), math.prod(size[c] for c in contracted),
                            math.prod(size[c] for c in kept))
    return spectral_norm(blocks) * math.sqrt(math.prod(size[c] for c in summed))


@rule("Einsum", versions=(12, 28), kind=Kind.AFFINE)
class Einsum(Rule):
    """Einsum with one computed operand: ‖linear part‖ = max_b ‖K_b‖·√n_s (K the other operands contracted).

    Bound: with every other operand constant the output is linear in the computed one; grouping
      its letters into batch, contracted, kept and summed ones gives a block-diagonal map of
      blocks I ⊗ K_bᵀ ⊗ 1ᵀ (``einsum_norm``): the largest σ_max(K_b) times √(number of entries
      summed away). Equations with an ellipsis or a repeated letter in the computed operand's
      term (a diagonal) are normed by materialising the operator.
    Exactness: certified, within ~1e-7 of the true constant (float64 eigenvalues or a Cholesky
      proof, plus margin).
    Assumptions: exactly one operand is computed from the analysed input; a product of two
      computed operands is multilinear, has no global bound, and is not applicable.
    References: ONNX Einsum (numpy.einsum semantics).
    """

    def check(self, node):
        if len(node.dynamic_indices) > 1:
            raise RuleNotApplicable("Einsum of two or more tensors computed from the input is a product "
                                    "(multilinear): no global Lipschitz bound")

    def forward(self, node, *operands):
        return torch.einsum(node.attr("equation").replace(" ", ""), *operands)

    def certified_norm(self, node):
        value = einsum_norm(node)
        return None if value is None else Bound(certify(value), Label.CERTIFIED, "einsum-svd", slack=LADDER_SLACK)

    def abs_linear(self, node, r):
        """The einsum with every constant operand replaced by its absolute value: each entry of the
        linear part A is a sum of products of constant entries, so |A| ≤ that entrywise."""
        k = node.dynamic_indices[0]
        ops = [r if i == k else torch.as_tensor(np.abs(np.asarray(node.const(i), np.float64)))
               for i in range(len(node.inputs))]
        return self.forward(node, *ops)
