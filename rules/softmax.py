"""Softmax: ℓ2 Lipschitz constant 1/2 (0 over slices of length 1); LogSoftmax: √n. The fused
Softmax and LogSoftmax (rules/fused.py) use the same maths: ``softmax_over``, ``softmax_bound``,
``logsoftmax_bound``, and on a box ``softmax_range``, ``logsoftmax_range``, ``softmax_local``,
``logsoftmax_local``."""
from __future__ import annotations

import math

import torch

from lipgraph.labels import Bound, Label, certify
from lipgraph.registry import Kind, Rule, rule


def _slices(node, shape) -> tuple[int, int]:
    """(start dim, end dim) of the block softmax normalises over: the single axis (opset 13+)
    or every dim from ``axis`` on (opset < 13 coerces the input to 2-D at ``axis``)."""
    rank = len(shape)
    if node.since_version >= 13:
        axis = node.attr("axis", -1) % rank
        return axis, axis + 1
    return node.attr("axis", 1) % rank, rank


def _flat(x, dims):
    """(x with the block of ``dims`` flattened into its last dim, an inverse of that move)."""
    dims = sorted(dims)
    end = list(range(x.dim() - len(dims), x.dim()))
    moved = torch.movedim(x, dims, end)
    return (moved.reshape(*moved.shape[:x.dim() - len(dims)], -1),
            lambda y: torch.movedim(y.reshape(moved.shape), end, dims))


def softmax_over(x, dims, log: bool = False):
    """Softmax (log-softmax) of ``x`` over the block of ``dims`` taken together, contiguous or not."""
    flat, back = _flat(x, dims)
    return back(torch.log_softmax(flat, dim=-1) if log else torch.softmax(flat, dim=-1))


def logsoftmax_range(x_range, dims):
    """Ranges of log softmax over ``dims``: l_i − log(e^{l_i} + Σ_{j≠i} e^{u_j}) ≤ y_i ≤ min(0, u_i −
    log(e^{u_i} + Σ_{j≠i} e^{l_j})), loosened to l_i − log(e^{l_i} + Σ_j e^{u_j}) and u_i − LSE(l)
    (the denominator Σ_j e^{x_j} lies between Σ_{j≠i} e^{l_j} + e^{x_i} and Σ_{j≠i} e^{u_j} + e^{x_i};
    counting x_i's own term at its other end only loosens them)."""
    (L, back), (U, _) = _flat(x_range[0], dims), _flat(x_range[1], dims)
    y_lo = L - torch.logaddexp(L, torch.logsumexp(U, dim=-1, keepdim=True))
    y_hi = torch.clamp(U - torch.logsumexp(L, dim=-1, keepdim=True), max=0.0)
    return back(y_lo), back(y_hi)


def softmax_range(x_range, dims):
    """p_i ∈ [exp of the log-softmax lower end, exp of its upper end] (``logsoftmax_range``)."""
    y_lo, y_hi = logsoftmax_range(x_range, dims)
    return torch.exp(y_lo), torch.exp(y_hi)


def softmax_local(x_range, dims) -> Bound:
    """Softmax on a box: the Gershgorin bound max_i 2p_i(1 − p_i) (the Softmax rule's Bound) with
    each p_i in its range: 1/2 where the range contains 1/2, else the larger end value of 2p(1 − p)."""
    p_lo, p_hi = softmax_range(x_range, dims)
    f = lambda p: 2 * p * (1 - p)  # noqa: E731
    g = torch.where((p_lo <= 0.5) & (p_hi >= 0.5), 0.5, torch.maximum(f(p_lo), f(p_hi)))
    return Bound(min(0.5, certify(float(g.max()))), Label.CERTIFIED, "softmax-range")


def logsoftmax_local(x_range, dims, n: int) -> Bound:
    """LogSoftmax on a box: ‖J‖ = √n‖p‖₂ (the LogSoftmax rule's Bound) ≤ √n·‖p̄‖₂ per slice, p̄ the
    upper ends of softmax's range."""
    p_hi, _ = _flat(softmax_range(x_range, dims)[1], dims)
    norm = float(torch.linalg.vector_norm(p_hi, dim=-1).max())
    return Bound(min(math.sqrt(n), certify(math.sqrt(n) * norm)), Label.CERTIFIED, "logsoftmax-range")


def softmax_bound(n: int) -> Bound:
    """Softmax over slices of n entries (the Softmax rule's docstring proves it)."""
    return Bound(0.5 if n >= 2 else 0.0, Label.EXACT, "softmax-jacobian")


def logsoftmax_bound(n: int) -> Bound:
    """LogSoftmax over slices of n entries (the LogSoftmax rule's docstring proves it)."""
    return Bound(math.sqrt(n) if n >= 2 else 0.0, Label.EXACT, "logsoftmax-jacobian")


@rule("Softmax", versions=(1, 11, 13), kind=Kind.NONLINEAR)
class Softmax(Rule):
    """Softmax: L = 1/2 (ℓ2), 0 when each normalised slice has a single entry.

    Bound: on one slice of length n, J(x) = diag(p) − ppᵀ with p = softmax(x). J is symmetric
      positive semidefinite; by Gershgorin each eigenvalue is at most max_i (p_i − p_i² +
      Σ_{j≠i} p_i p_j) = max_i 2p_i(1 − p_i) ≤ 1/2. The input domain is convex, so by the mean
      value inequality softmax is sup_x ‖J(x)‖ ≤ 1/2 Lipschitz. Slices are independent (J is
      block diagonal over them), so 1/2 holds for the whole tensor. Opset < 13 normalises
      over the flattened block of dims axis…rank−1: the same statement with n that block's size.
    Exactness: exact for n ≥ 2: at p = (1/2, 1/2, 0, …) (two equal entries, the rest → −∞;
      attained at x = 0 when n = 2) J has the eigenvector (1, −1, 0, …)/√2 with eigenvalue 1/2.
    Assumptions: none.
    References: ONNX Softmax; Gao & Pavel, "On the properties of the softmax function with
      application in game theory and reinforcement learning" (2017), Prop. 4 (softmax is
      1-Lipschitz with inverse temperature 1 — the 1/2 here is the sharper Gershgorin bound).
    """

    def forward(self, node, x):
        return softmax_over(x, range(*_slices(node, x.shape)))

    def bounds(self, node):
        shape = node.input_shapes[0]
        start, end = _slices(node, shape)
        return {0: softmax_bound(math.prod(shape[start:end]))}

    def interval(self, node, x_range):
        return softmax_range(x_range, range(*_slices(node, x_range[0].shape)))

    def local_bounds(self, node, ranges):
        start, end = _slices(node, node.input_shapes[0])
        if math.prod(node.input_shapes[0][start:end]) < 2:
            return self.bounds(node)
        return {0: softmax_local(ranges[0], range(start, end))}


@rule("LogSoftmax", versions=(1, 11, 13), kind=Kind.NONLINEAR)
class LogSoftmax(Rule):
    """LogSoftmax: L = √n (ℓ2), n the length of each normalised slice (0 when n = 1).

    Bound: on one slice, y = x − logsumexp(x)·1 has Jacobian J = I − 1pᵀ, p = softmax(x). Since
      pᵀ1 = 1, Q = 1pᵀ is idempotent (Q² = 1(pᵀ1)pᵀ = Q), neither 0 nor I for n ≥ 2, and for
      such a projection ‖I − Q‖₂ = ‖Q‖₂ (Szyld 2006); Q has rank one, so ‖J‖ = ‖1‖‖p‖ = √n‖p‖₂
      < √n (‖p‖₂ < ‖p‖₁ = 1 with every p_i > 0). Mean value inequality on the convex domain:
      √n-Lipschitz. Slices are independent (block-diagonal Jacobian). Opset < 13 normalises
      over the flattened block of dims axis…rank−1 (n that block's size), as Softmax.
    Exactness: exact as a supremum (not attained): at x = (T, 0, …, 0), p → e_1 as T → ∞ and
      ‖J‖ = √n‖p‖ → √n. For n = 1 the output is identically 0.
    Assumptions: none.
    References: ONNX LogSoftmax; D. B. Szyld, "The many proofs of an identity on the norm of
      oblique projections", Numer. Algorithms 42 (2006).
    """

    def forward(self, node, x):
        return softmax_over(x, range(*_slices(node, x.shape)), log=True)

    def bounds(self, node):
        shape = node.input_shapes[0]
        start, end = _slices(node, shape)
        return {0: logsoftmax_bound(math.prod(shape[start:end]))}

    def interval(self, node, x_range):
        return logsoftmax_range(x_range, range(*_slices(node, x_range[0].shape)))

    def local_bounds(self, node, ranges):
        start, end = _slices(node, node.input_shapes[0])
        n = math.prod(node.input_shapes[0][start:end])
        return self.bounds(node) if n < 2 else {0: logsoftmax_local(ranges[0], range(start, end), n)}
