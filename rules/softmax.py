"""Softmax: ℓ2 Lipschitz constant 1/2 (0 over slices of length 1); LogSoftmax: √n."""
from __future__ import annotations

import math

import torch

from lipgraph.labels import Bound, Label, certify
from lipgraph.registry import Kind, Rule, rule


def _rows(node, t: torch.Tensor) -> torch.Tensor:
    """The normalised slices of ``t`` as the last dim (a view for Softmax's block)."""
    start, end = _slices(node, t.shape)
    flat = t.reshape(*t.shape[:start], -1, *t.shape[end:])
    return flat.movedim(start, -1)


def _unrows(node, t: torch.Tensor, shape) -> torch.Tensor:
    start, end = _slices(node, shape)
    return t.movedim(-1, start).reshape(shape)


def _log_ranges(node, lo, hi):
    """Ranges of log softmax on slices: l_i − log(e^{l_i} + Σ_j e^{u_j}) ≤ y_i ≤ min(0, u_i − LSE(l))
    (the denominator Σ_j e^{x_j} lies between Σ_{j≠i} e^{l_j} + e^{x_i} and Σ_{j≠i} e^{u_j} + e^{x_i};
    counting x_i's own term at its other end only loosens them)."""
    L, U = _rows(node, lo), _rows(node, hi)
    lse_u = torch.logsumexp(U, dim=-1, keepdim=True)
    lse_l = torch.logsumexp(L, dim=-1, keepdim=True)
    y_lo = L - torch.logaddexp(L, lse_u)
    y_hi = torch.clamp(U - lse_l, max=0.0)
    return _unrows(node, y_lo, lo.shape), _unrows(node, y_hi, lo.shape)


def _slices(node, shape) -> tuple[int, int]:
    """(start dim, end dim) of the block softmax normalises over: the single axis (opset 13+)
    or every dim from ``axis`` on (opset < 13 coerces the input to 2-D at ``axis``)."""
    rank = len(shape)
    if node.since_version >= 13:
        axis = node.attr("axis", -1) % rank
        return axis, axis + 1
    return node.attr("axis", 1) % rank, rank


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
        start, end = _slices(node, x.shape)
        if end - start == 1:
            return torch.softmax(x, dim=start)
        flat = x.reshape(*x.shape[:start], -1)
        return torch.softmax(flat, dim=-1).reshape(x.shape)

    def bounds(self, node):
        shape = node.input_shapes[0]
        start, end = _slices(node, shape)
        n = math.prod(shape[start:end])
        return {0: Bound(0.5 if n >= 2 else 0.0, Label.EXACT, "softmax-jacobian")}

    def interval(self, node, x_range):
        """p_i ∈ [exp of the LogSoftmax lower end, exp of its upper end] (see ``_log_ranges``)."""
        y_lo, y_hi = _log_ranges(node, *x_range)
        return torch.exp(y_lo), torch.exp(y_hi)

    def local_bounds(self, node, ranges):
        """On a box: the Gershgorin bound max_i 2p_i(1 − p_i) (see Bound) with each p_i in its range:
        1/2 where the range contains 1/2, else the larger end value of 2p(1 − p)."""
        shape = node.input_shapes[0]
        start, end = _slices(node, shape)
        if math.prod(shape[start:end]) < 2:
            return self.bounds(node)
        p_lo, p_hi = self.interval(node, ranges[0])
        f = lambda p: 2 * p * (1 - p)  # noqa: E731
        g = torch.where((p_lo <= 0.5) & (p_hi >= 0.5), 0.5, torch.maximum(f(p_lo), f(p_hi)))
        return {0: Bound(min(0.5, certify(float(g.max()))), Label.CERTIFIED, "softmax-range")}


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
        start, end = _slices(node, x.shape)
        if end - start == 1:
            return torch.log_softmax(x, dim=start)
        flat = x.reshape(*x.shape[:start], -1)
        return torch.log_softmax(flat, dim=-1).reshape(x.shape)

    def bounds(self, node):
        shape = node.input_shapes[0]
        start, end = _slices(node, shape)
        n = math.prod(shape[start:end])
        return {0: Bound(math.sqrt(n) if n >= 2 else 0.0, Label.EXACT, "logsoftmax-jacobian")}

    def interval(self, node, x_range):
        return _log_ranges(node, *x_range)

    def local_bounds(self, node, ranges):
        """On a box: ‖J‖ = √n‖p‖₂ (see Bound) ≤ √n·‖p̄‖₂ per slice, p̄ the upper ends of softmax's range."""
        shape = node.input_shapes[0]
        start, end = _slices(node, shape)
        n = math.prod(shape[start:end])
        if n < 2:
            return self.bounds(node)
        p_hi = _rows(node, torch.exp(_log_ranges(node, *ranges[0])[1]))
        norm = float(torch.linalg.vector_norm(p_hi, dim=-1).max())
        return {0: Bound(min(math.sqrt(n), certify(math.sqrt(n) * norm)), Label.CERTIFIED, "logsoftmax-range")}
