"""Recurrent layers: RNN, GRU, LSTM (forward, reverse, bidirectional; layouts 0 and 1; the
default activations). NONLINEAR, with a finite global bound in the sequence X (ℓ2 over the
whole tensor), unrolled over time.

**Derivation.** Compare two inputs X, X′ and write δ_t = ‖x′_t − x_t‖ (one batch entry, one
step), η_t = ‖h′_t − h_t‖, γ_t = ‖c′_t − c_t‖. The gates are sigmoid (values in [0, 1], slope
≤ ¼) and tanh (values in [−1, 1], slope ≤ 1), so by the mean value theorem a gate's difference
is D·Δz with D diagonal, 0 ≤ D ≤ slope, Δz the difference of its pre-activation. A product of
two computed vectors splits as Δ(a ⊙ b) = Δa ⊙ b′ + a ⊙ Δb, bounded by max|b|·‖Δa‖ + max|a|·‖Δb‖
(design §9, products with bounded factors). Every weight block enters by its certified spectral
norm (float64 eigenvalues plus a margin, ``rules.linear.spectral_norm``): ‖W_k‖ = w_k,
‖R_k‖ = r_k. Initial states are constants (zeros when omitted), so η_0 = γ_0 = 0.

- RNN: h_t = tanh(W x_t + R h_{t−1} + b): η_t ≤ w δ_t + r η_{t−1}.
- GRU (gates z, r, h): |h_t| ≤ (1 − z)|ĥ| + z|h_{t−1}| ≤ H := max(1, max|h_0|) elementwise.
  Δz, Δr ≤ ¼(w δ_t + r η_{t−1}) (their own w, r). ĥ = tanh(W_h x_t + R_h (r ⊙ h_{t−1}) + …):
  ‖Δĥ‖ ≤ w_h δ_t + r_h (H‖Δr‖ + η_{t−1}); with linear_before_reset, ĥ = tanh(W_h x_t +
  r ⊙ (R_h h_{t−1} + Rb_h) + …) and |R_h h + Rb_h| ≤ K := max_j(H Σ_k|R_h[j,k]| + |Rb_h[j]|),
  so ‖Δĥ‖ ≤ w_h δ_t + K‖Δr‖ + r_h η_{t−1}. h_t = ĥ + z ⊙ (h_{t−1} − ĥ) gives
  Δh_t = (1 − z)Δĥ + zΔh_{t−1} + Δz ⊙ (h′_{t−1} − ĥ′): η_t ≤ ‖Δĥ‖ + η_{t−1} + (H + 1)‖Δz‖.
- LSTM (gates i, o, f, c; peepholes p_i, p_o, p_f): |c_t| = |f c_{t−1} + i g| ≤ |c_{t−1}| + 1,
  so |c_{t−1}| ≤ C_{t−1} := max|c_0| + t − 1. Δc_t = Δf ⊙ c′_{t−1} + f ⊙ Δc_{t−1} + Δi ⊙ g′
  + i ⊙ Δg = Σ_k s_k E_k Δz_k + f ⊙ Δc_{t−1} with s_f = C_{t−1}/4, s_i = ¼, s_g = 1 and
  diagonal |E_k| ≤ I, Δz_k = W_k Δx_t + R_k Δh_{t−1} + P_k Δc_{t−1} (P_g = 0). The x part
  Σ_k s_k E_k W_k Δx_t is bounded both gate by gate, Σ_k s_k w_k, and jointly,
  ‖[s_f E_f, s_i E_i, s_g E_g]‖·‖W_fig‖ ≤ √(Σ s_k²)·‖W_fig‖ (W_fig the three blocks stacked);
  the smaller counts (likewise for R). So γ_t ≤ (1 + s_f p_f + s_i p_i) γ_{t−1} + ρ η_{t−1} + ξ δ_t
  with ξ, ρ those minima and p_k = max|P_k|. Then h_t = o ⊙ tanh(c_t) with
  Δz_o = W_o Δx_t + R_o Δh_{t−1} + P_o Δc_t: η_t ≤ ¼(w_o δ_t + r_o η_{t−1} + p_o γ_t) + γ_t.

Each recursion has non-negative coefficients, so η_t = Σ_s A_ts δ_s and γ_t = Σ_s G_ts δ_s with
lower-triangular non-negative T×T matrices A, G over the processed steps. For the output Y
(every h_t): ‖ΔY‖² = Σ_t η_t² ≤ ‖A δ‖² ≤ ‖A‖₂² ‖δ‖² = ‖A‖₂² ‖ΔX‖² (Cauchy–Schwarz in the
matrix form: ‖A‖₂ ≤ the Frobenius norm of the per-step rows); beyond ``ROWS_LIMIT`` steps
‖A‖₂ ≤ √(‖A‖₁‖A‖_∞) (Hölder), from column and row sums. Y_h = h_T: the row A_T; Y_c:
G_T. Both directions of a bidirectional layer see the same δ (the reverse one in reverse
order), so the rows of both are stacked into one matrix before its norm. Batch entries are
independent sequences: the bound of the batch is the largest over its sequence lengths. One
bound per analysed input covers all the node's outputs (AutoLip gives every output of a node
the same constant): the largest over the outputs the node names.

**On a box** (``local_bounds``): X's range, hulled over steps and batch, bounds every x_t. From the
initial state, interval arithmetic follows each step's pre-activations, gates, cell and hidden
state (per unit; a GRU's h_t is also kept in the hull of [−1, 1] and h_0). The recursions above
then take, at step t, the largest derivative of each gate over its pre-activation interval instead
of ¼ or 1, and each product's largest factor magnitude instead of 1 or C_{t−1}: LSTM s_f =
max(|c_{t−1}|·σ′_f), s_i = max(|g|·σ′_i), s_g = max(i·tanh′_g), the γ coefficient max f instead of
1, and η_t ≤ max(|tanh c_t|·σ′_o)(…) + max(o·tanh′(c_t))γ_t; GRU max(1 − z), max z, max r and
max_j(σ′_z|h − ĥ|); RNN ‖S_tW‖, ‖S_tR‖ with S_t the per-unit tanh′ maxima. The same mean-value
argument holds with these constants (each is a bound on the same quantity over the box).
Every interval end is widened for rounding (1e-10 of the absolute sums for affine maps, 1e-12
for sigmoid/tanh values and slopes).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from lipgraph.errors import RuleNotApplicable
from lipgraph.labels import CERT_MARGIN, Bound, Label, certify
from lipgraph.registry import Kind, Rule, require_constant, rule
from lipgraph.rules.linear import spectral_norm

VERSIONS = (7, 14, 22)
DEFAULT_ACTIVATIONS = {"RNN": ("tanh",), "GRU": ("sigmoid", "tanh"), "LSTM": ("sigmoid", "tanh", "tanh")}
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
#: Optional constant inputs after X, W, R: B, sequence_lens, initial_h, initial_c, P.
CONSTANT_INPUTS = (1, 2, 3, 4, 5, 6, 7)


def _directions(node) -> int:
    return 2 if node.attr("direction", "forward") == "bidirectional" else 1


def _unsupported(node) -> str | None:
    """Why this node is outside what the rule models (the attributes it refuses), or None."""
    op = node.op_type
    if node.attr("direction", "forward") not in ("forward", "reverse", "bidirectional"):
        return f"{op} direction '{node.attr('direction')}' is not supported"
    acts, default = node.attr("activations"), DEFAULT_ACTIVATIONS[op]
    if acts and [a.lower() for a in acts] != [default[k % len(default)] for k in range(len(acts))]:
        return f"{op} with activations {list(acts)} is not supported (only the defaults)"
    if node.attr("activation_alpha") or node.attr("activation_beta"):
        return f"{op} with activation_alpha/activation_beta is not supported"
    if node.attr("clip") is not None:
        return f"{op} with clip is not supported"
    if node.attr("input_forget", 0):
        return f"{op} with input_forget = 1 is not supported"
    return None


# ------------------------------------------------------------------------------ torch semantics
def _to_layout0(t, layout):
    """Inputs of layout 1 to layout 0: X [B,S,I] → [S,B,I]; states [B,D,H] → [D,B,H]."""
    return t if t is None or layout == 0 else t.transpose(0, 1)


def _cell(op, node, params, x_t, state):
    """One step of one direction. ``params``: W, R, Wb, Rb, P of that direction; ``state``: (h, c)."""
    w, r, wb, rb, p = params
    h, c = state
    if op == "RNN":
        return torch.tanh(x_t @ w.T + wb + h @ r.T + rb), c
    if op == "GRU":
        gx = x_t @ w.T + wb
        xz, xr, xh = gx.chunk(3, dim=-1)
        rz, rr, rh = r.chunk(3)
        bz, br, bh = rb.chunk(3)
        z = torch.sigmoid(xz + h @ rz.T + bz)
        reset = torch.sigmoid(xr + h @ rr.T + br)
        if node.attr("linear_before_reset", 0):
            hh = torch.tanh(xh + reset * (h @ rh.T + bh))
        else:
            hh = torch.tanh(xh + (reset * h) @ rh.T + bh)
        return (1 - z) * hh + z * h, c
    gi, go, gf, gc = (x_t @ w.T + wb + h @ r.T + rb).chunk(4, dim=-1)
    pi, po, pf = p.chunk(3)
    i = torch.sigmoid(gi + pi * c)
    f = torch.sigmoid(gf + pf * c)
    c_new = f * c + i * torch.tanh(gc)
    o = torch.sigmoid(go + po * c_new)
    return o * torch.tanh(c_new), c_new


def recurrent_forward(node, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
    """Y, Y_h (, Y_c) of an ONNX RNN/GRU/LSTM node, as onnxruntime computes them: steps past a
    sequence's length leave the state unchanged and give zeros in Y."""
    reason = _unsupported(node)
    if reason:
        raise NotImplementedError(reason)
    op, layout = node.op_type, node.attr("layout", 0)
    x, h0, c0 = (_to_layout0(t, layout) for t in (x, h0, c0))
    steps, batch, hidden = x.shape[0], x.shape[1], r.shape[-1]     # R: [D, gates·H, H]
    dirs, gates = _directions(node), GATES[op]
    zeros = x.new_zeros((dirs, batch, hidden))
    h0 = zeros if h0 is None else h0.to(x.dtype)
    c0 = zeros if c0 is None else c0.to(x.dtype)
    b = x.new_zeros((dirs, 2 * gates * hidden)) if b is None else b.to(x.dtype)
    p = x.new_zeros((dirs, 3 * hidden)) if p is None else p.to(x.dtype)
    lengths = torch.full((batch,), steps) if seq_lens is None else seq_lens.to(torch.int64).cpu()
    ys, hs, cs = [], [], []
    for d in range(dirs):
        reverse = node.attr("direction", "forward") == "reverse" or d == 1
        params = (w[d].to(x.dtype), r[d].to(x.dtype), *b[d].chunk(2), p[d])
        state, out = (h0[d], c0[d]), [None] * steps
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            live = (t < lengths).to(x.device)[:, None]
            h, c = _cell(op, node, params, x[t], state)
            state = (torch.where(live, h, state[0]), torch.where(live, c, state[1]))
            out[t] = torch.where(live, h, torch.zeros_like(h))
        ys.append(torch.stack(out) if steps else x.new_zeros((0, batch, hidden)))
        hs.append(state[0])
        cs.append(state[1])
    y, y_h, y_c = torch.stack(ys, dim=1), torch.stack(hs), torch.stack(cs)   # [S,D,B,H], [D,B,H]
    if layout:
        y, y_h, y_c = y.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
    return (y, y_h, y_c) if op == "LSTM" else (y, y_h)


# ------------------------------------------------------------------------------ the bound
def _norm(block: np.ndarray) -> float:
    return certify(spectral_norm(block))


def _blocks(m: np.ndarray, gates: int) -> list[np.ndarray]:
    return np.split(np.asarray(m, np.float64), gates, axis=0)


def _state_max(node, i: int, d: int) -> float:
    """max |initial state i| of direction d (0 when omitted); states are [D,B,H], or [B,D,H] in layout 1."""
    v = node.const(i) if node.has_input(i) else None
    if v is None:
        return 0.0
    v = np.asarray(v, np.float64)
    return float(np.max(np.abs(v[:, d] if node.attr("layout", 0) else v[d]), initial=0.0))


def _step_coefficients(node, d: int):
    """A function (t, δ-row e_t, η_{t−1}, γ_{t−1}) → (η_t, γ_t) of one direction's recursion
    (module docstring), with every weight norm certified."""
    op, hidden = node.op_type, node.input_shapes[2][-1]
    w, r = _blocks(node.const(1)[d], GATES[op]), _blocks(node.const(2)[d], GATES[op])
    wn, rn = [_norm(m) for m in w], [_norm(m) for m in r]
    if op == "RNN":
        return lambda t, e, eta, gam: (wn[0] * e + rn[0] * eta, gam)
    if op == "GRU":
        bound_h = max(1.0, _state_max(node, 5, d))
        (wz, wr, wh), (rz, rr, rh) = wn, rn
        if node.attr("linear_before_reset", 0):
            rb = np.zeros(hidden) if not node.has_input(3) else np.asarray(node.const(3)[d], np.float64)[-hidden:]
            k = certify(float(np.max(bound_h * np.abs(r[2]).sum(axis=1) + np.abs(rb))), 4 * CERT_MARGIN)
            via_r, on_eta = k, rh
        else:
            via_r, on_eta = rh * bound_h, rh

        def gru(t, e, eta, gam):
            dz = 0.25 * (wz * e + rz * eta)
            dr = 0.25 * (wr * e + rr * eta)
            dh = wh * e + via_r * dr + on_eta * eta
            return dh + eta + (bound_h + 1.0) * dz, gam
        return gru
    (wi, wo, wf, wg), (ri, ro, rf, rg) = wn, rn
    w_fig = _norm(np.concatenate([w[2], w[0], w[3]]))
    r_fig = _norm(np.concatenate([r[2], r[0], r[3]]))
    pi, po, pf = ((float(np.max(np.abs(v), initial=0.0)) for v in np.split(np.asarray(node.const(7)[d], np.float64), 3))
                  if node.has_input(7) else (0.0, 0.0, 0.0))
    c_max = _state_max(node, 6, d)

    def lstm(t, e, eta, gam):
        s = np.array([(c_max + t - 1) / 4, 0.25, 1.0])      # s_f, s_i, s_g
        joint = math.sqrt(float(s @ s))
        xi = min(s @ [wf, wi, wg], joint * w_fig)
        rho = min(s @ [rf, ri, rg], joint * r_fig)
        gam_t = (1.0 + s[0] * pf + s[1] * pi) * gam + rho * eta + xi * e
        return 0.25 * (wo * e + ro * eta + po * gam_t) + gam_t, gam_t
    return lstm


# ------------------------------------------------------------------------------ on a box
def _affine(m: np.ndarray, lo: np.ndarray, hi: np.ndarray, bias) -> tuple[np.ndarray, np.ndarray]:
    """Interval of m·v + bias for v ∈ [lo, hi] (centre ± |m|·radius), widened by 1e-10 of the
    sum of absolute terms (far above float64's rounding of these sums)."""
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    centre = m @ mid + bias
    slack = 1e-10 * (np.abs(m) @ np.maximum(np.abs(lo), np.abs(hi)) + np.abs(bias)) + 1e-300
    spread = np.abs(m) @ rad + slack
    return centre - spread, centre + spread


def _times(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Interval product, entrywise."""
    ends = np.stack([a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]])
    return ends.min(0), ends.max(0)


def _plus(a, b) -> tuple[np.ndarray, np.ndarray]:
    return a[0] + b[0], a[1] + b[1]


def _sig(z):
    return 0.5 * (1.0 + np.tanh(z / 2))


def _squash(z, f) -> tuple[np.ndarray, np.ndarray]:
    """f (sigmoid or tanh, increasing) of an interval, widened by 1e-12 for its rounding."""
    return f(z[0]) - 1e-12, f(z[1]) + 1e-12


def _peak(z, f_prime) -> np.ndarray:
    """max of a bell-shaped derivative (even, decreasing in |z|) over each interval: at the point
    nearest 0, plus 1e-12 for rounding."""
    return f_prime(np.clip(0.0, z[0], z[1])) + 1e-12


def _dsig(z):
    s = _sig(z)
    return s * (1.0 - s)


def _dtanh(z):
    return 1.0 - np.tanh(z) ** 2


def _absmax(v) -> np.ndarray:
    return np.maximum(np.abs(v[0]), np.abs(v[1]))


def _initial(node, i: int, d: int, hidden: int):
    """Per-unit hull over the batch of initial state i of direction d (zeros when omitted)."""
    if not node.has_input(i):
        return np.zeros(hidden), np.zeros(hidden)
    v = np.asarray(node.const(i), np.float64)
    v = v[:, d] if node.attr("layout", 0) else v[d]
    return v.min(0), v.max(0)


def _local_step_coefficients(node, d: int, x_lo: np.ndarray, x_hi: np.ndarray, steps: int):
    """As :func:`_step_coefficients`, with every constant of the derivation replaced by its value
    over the box: the steps' states are followed by interval arithmetic from the initial state
    (x_t in the hull of X's range over steps and batch), and at step t each gate's slope is the
    largest derivative over its pre-activation interval, each factor of a product its largest
    magnitude (``_rnn_box``, ``_gru_box``, ``_lstm_box``)."""
    op, hidden = node.op_type, node.input_shapes[2][-1]
    gates = GATES[op]
    w, r = _blocks(node.const(1)[d], gates), _blocks(node.const(2)[d], gates)
    b = np.zeros(2 * gates * hidden) if not node.has_input(3) else np.asarray(node.const(3)[d], np.float64)
    wb, rb = np.split(b[:gates * hidden], gates), np.split(b[gates * hidden:], gates)
    h = _initial(node, 5, d, hidden)
    x_in = [_affine(w[k], x_lo, x_hi, wb[k]) for k in range(gates)]     # W_k x_t + Wb_k, every step
    if op == "RNN":   # its per-step norms replace the blocks' norms
        return _rnn_box(w, x_in, r, rb, h, steps)
    wn, rn = [_norm(m) for m in w], [_norm(m) for m in r]
    if op == "GRU":
        return _gru_box(node, x_in, r, rb, h, wn, rn, steps)
    p = np.split(np.asarray(node.const(7)[d], np.float64), 3) if node.has_input(7) else [np.zeros(hidden)] * 3
    return _lstm_box(node, x_in, w, r, rb, p, h, _initial(node, 6, d, hidden), wn, rn, steps)


def _rnn_box(w, x_in, r, rb, h, steps):
    """η_t ≤ ‖S_tW‖δ_t + ‖S_tR‖η_{t−1}, S_t = diag(max tanh′ over each unit's pre-activation)."""
    norms = []
    for _ in range(steps):
        z = _plus(x_in[0], _affine(r[0], *h, rb[0]))
        s = _peak(z, _dtanh)[:, None]
        norms.append((_norm(s * w[0]), _norm(s * r[0])))
        h = _squash(z, np.tanh)
    return lambda t, e, eta, gam: (norms[t - 1][0] * e + norms[t - 1][1] * eta, gam)


def _gru_box(node, x_in, r, rb, h, wn, rn, steps):
    """dz = max σ′_z·(‖W_z‖δ + ‖R_z‖η), dr likewise; ‖Δĥ‖ ≤ max tanh′·(‖W_h‖δ + ‖R_h‖(max|h|·dr +
    max r·η)) (linear_before_reset: K_t·dr + max r·‖R_h‖η, K_t = max|R_h h + Rb_h|);
    η_t ≤ max(1 − z)‖Δĥ‖ + max z·η + max_j(σ′_z|h − ĥ|)_j(‖W_z‖δ + ‖R_z‖η)."""
    lbr = node.attr("linear_before_reset", 0)
    hull = np.minimum(h[0], -1.0), np.maximum(h[1], 1.0)    # every h_t (see ``interval``)
    coef = []
    for _ in range(steps):
        zz = _plus(x_in[0], _affine(r[0], *h, rb[0]))
        zr = _plus(x_in[1], _affine(r[1], *h, rb[1]))
        z, reset = _squash(zz, _sig), _squash(zr, _sig)
        if lbr:
            inner = _affine(r[2], *h, rb[2])
            zh = _plus(x_in[2], _times(reset, inner))
            via_r = float(_absmax(inner).max())
        else:
            zh = _plus(x_in[2], _affine(r[2], *_times(reset, h), rb[2]))
            via_r = float(_absmax(h).max()) * rn[2]
        hh = _squash(zh, np.tanh)
        gap = _absmax((h[0] - hh[1], h[1] - hh[0]))
        coef.append((float(_peak(zz, _dsig).max()), float(_peak(zr, _dsig).max()), float(_peak(zh, _dtanh).max()),
                     via_r, float(np.abs(reset).max()), float(1.0 - z[0].min()), float(z[1].max()),
                     float((_peak(zz, _dsig) * gap).max())))
        h = _plus(hh, _times(z, (h[0] - hh[1], h[1] - hh[0])))
        h = np.maximum(h[0], hull[0]), np.minimum(h[1], hull[1])   # a convex combination stays in the hull
    (wz, wr, wh), (rz, rr, rh) = wn, rn

    def gru(t, e, eta, gam):
        sz, sr, sh, via_r, r_max, one_minus_z, z_max, z_gap = coef[t - 1]
        dr = sr * (wr * e + rr * eta)
        dh = sh * (wh * e + via_r * dr + r_max * rh * eta)
        return one_minus_z * dh + z_max * eta + z_gap * (wz * e + rz * eta), gam
    return gru


def _lstm_box(node, x_in, w, r, rb, p, h, c, wn, rn, steps):
    """γ_t ≤ (max f + s_f p_f + s_i p_i)γ_{t−1} + ρη_{t−1} + ξδ_t with s_f = max(|c_{t−1}|σ′_f),
    s_i = max(|g|σ′_i), s_g = max(i·tanh′_g) (ξ, ρ as globally); η_t ≤ max(|tanh c_t|σ′_o)(‖W_o‖δ +
    ‖R_o‖η + p_oγ_t) + max(o·tanh′(c_t))γ_t."""
    w_fig = _norm(np.concatenate([w[2], w[0], w[3]]))
    r_fig = _norm(np.concatenate([r[2], r[0], r[3]]))
    (wi, wo, wf, wg), (ri, ro, rf, rg) = wn, rn
    pi, po, pf = (float(np.abs(v).max(initial=0.0)) for v in p)
    coef = []
    for _ in range(steps):
        gi, go, gf, gc = (_plus(x_in[k], _affine(r[k], *h, rb[k])) for k in range(4))
        zi = _plus(gi, _times((p[0], p[0]), c))
        zf = _plus(gf, _times((p[2], p[2]), c))
        i, f, g = _squash(zi, _sig), _squash(zf, _sig), _squash(gc, np.tanh)
        c_new = _plus(_times(f, c), _times(i, g))
        zo = _plus(go, _times((p[1], p[1]), c_new))
        o, tc = _squash(zo, _sig), _squash(c_new, np.tanh)
        s = np.array([float((_absmax(c) * _peak(zf, _dsig)).max()), float((_absmax(g) * _peak(zi, _dsig)).max()),
                      float((_absmax(i) * _peak(gc, _dtanh)).max())])
        coef.append((s, float(_absmax(f).max()), float((_absmax(tc) * _peak(zo, _dsig)).max()),
                     float((_absmax(o) * _peak(c_new, _dtanh)).max())))
        h, c = _times(o, tc), c_new

    def lstm(t, e, eta, gam):
        s, f_max, out_gate, out_cell = coef[t - 1]
        joint = math.sqrt(float(s @ s))
        xi = min(s @ [wf, wi, wg], joint * w_fig)
        rho = min(s @ [rf, ri, rg], joint * r_fig)
        gam_t = (f_max + s[0] * pf + s[1] * pi) * gam + rho * eta + xi * e
        return out_gate * (wo * e + ro * eta + po * gam_t) + out_cell * gam_t, gam_t
    return lstm


def local_recurrent_bound(node, x_range) -> float:
    """The certified constant of the node's named outputs in X over the box ``x_range`` (X's
    per-entry range): as :func:`recurrent_bound` with :func:`_local_step_coefficients`."""
    layout = node.attr("layout", 0)
    lo, hi = (np.asarray(v, np.float64) for v in x_range)
    lo, hi = (np.broadcast_to(v, node.input_shapes[0]).reshape(-1, node.input_shapes[0][-1]) for v in (lo, hi))
    x_lo, x_hi = lo.min(0), hi.max(0)         # hull over steps and batch
    steps = node.input_shapes[0][1 if layout else 0]
    if not (np.isfinite(x_lo).all() and np.isfinite(x_hi).all()):
        return math.inf
    with np.errstate(over="ignore", invalid="ignore"):
        steppers = [_local_step_coefficients(node, d, x_lo, x_hi, steps) for d in range(_directions(node))]
        value = max(_length_bound(node, steppers, n) for n in _lengths(node))
    return certify(value, 4 * CERT_MARGIN) if value < math.inf else math.inf


#: Sequence lengths up to which ‖A‖₂ is computed from A itself (T×T floats); beyond, the
#: Hölder bound ‖A‖₂ ≤ √(‖A‖₁‖A‖_∞) from column and row sums, in O(T) memory.
ROWS_LIMIT = 2048


def _length_bound(node, steppers, n: int) -> float:
    """The bound of the node's named outputs for sequences of n steps: the rows η_t (γ_t) of every
    direction, each a function of the input steps in their original order."""
    reverse = node.attr("direction", "forward") == "reverse"
    rows, col_sums, max_row, last_h, last_c = [], np.zeros(n), 0.0, [], []
    for d, step in enumerate(steppers):
        eta = gam = np.zeros(n)
        for k in range(n):
            e = np.zeros(n)
            e[n - 1 - k if reverse or d == 1 else k] = 1.0
            eta, gam = step(k + 1, e, eta, gam)
            if not (np.isfinite(eta).all() and np.isfinite(gam).all()):
                return math.inf
            if n <= ROWS_LIMIT:
                rows.append(eta)
            col_sums += eta
            max_row = max(max_row, float(eta.sum()))
        last_h.append(eta)
        last_c.append(gam)
    every = spectral_norm(np.array(rows)) if n <= ROWS_LIMIT else math.sqrt(float(col_sums.max(initial=0.0)) * max_row)
    named = {0: every, 1: spectral_norm(np.array(last_h)), 2: spectral_norm(np.array(last_c))}   # Y, Y_h, Y_c
    return max(named[k] for k, name in enumerate(node.outputs) if name)


def recurrent_bound(node) -> float:
    """The certified constant of the node's named outputs in X (module docstring): the largest over
    the sequence lengths present; ∞ when it overflows float64."""
    steppers = [_step_coefficients(node, d) for d in range(_directions(node))]
    with np.errstate(over="ignore", invalid="ignore"):
        value = max(_length_bound(node, steppers, n) for n in _lengths(node))
    return certify(value, 4 * CERT_MARGIN) if value < math.inf else math.inf


def _lengths(node) -> set[int]:
    """The sequence lengths present (sequence_lens clipped to [0, steps], or all steps)."""
    steps = node.input_shapes[0][1 if node.attr("layout", 0) else 0]
    lens = node.const(4) if node.has_input(4) else None
    return {steps} if lens is None else {min(max(int(v), 0), steps) for v in np.asarray(lens).reshape(-1)}


class _Recurrent(Rule):
    def check(self, node):
        require_constant(node, *CONSTANT_INPUTS)
        reason = _unsupported(node)
        if reason:
            raise RuleNotApplicable(reason)
        if node.input_shapes[0] is None:
            raise RuleNotApplicable(f"{node.op_type}: the shape of X (sequence length) is unknown")
        if recurrent_bound(node) == math.inf:
            raise RuleNotApplicable(f"{node.op_type}: the unrolled product-rule bound exceeds float64 over "
                                    f"{node.input_shapes[0][1 if node.attr('layout', 0) else 0]} steps; only a bound on "
                                    "a box of inputs can help")

    def forward(self, node, *inputs):
        return recurrent_forward(node, *inputs)

    def bounds(self, node):
        return {0: Bound(recurrent_bound(node), Label.CERTIFIED, "unrolled-product-rule")}

    def local_bounds(self, node, ranges):
        """The unrolled recursion with the gates' slopes and values over the box (module docstring,
        *On a box*); the local pass keeps the smaller of it and the global bound."""
        return {0: Bound(local_recurrent_bound(node, ranges[0]), Label.CERTIFIED, "unrolled-product-rule-on-box")}

    def interval(self, node, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
        """Default activations, any weights: every h_t lies in hull([−1, 1], initial_h) — RNN's
        tanh and LSTM's o ⊙ tanh(c) are in [−1, 1], a GRU step (1 − z) ⊙ ĥ + z ⊙ h_{t−1} with
        z ∈ [0, 1] is a convex combination — and Y's padded steps are 0, a length-0 sequence
        leaves Y_h = initial_h; so Y and Y_h lie there. LSTM: |c_t| ≤ |c_{t−1}| + 1 (f, i ∈ [0, 1],
        |tanh| ≤ 1), so |Y_c| ≤ max|initial_c| + T."""
        if _unsupported(node):
            return None
        ends = (-1.0, 1.0) if h0 is None else (min(-1.0, float(h0[0].min())), max(1.0, float(h0[1].max())))
        h = tuple(torch.tensor(e, dtype=torch.float64) for e in ends)
        if node.op_type != "LSTM":
            return [h, h]
        steps = x[0].shape[1 if node.attr("layout", 0) else 0]
        c_max = steps + (0.0 if c0 is None else float(torch.maximum(c0[0].abs(), c0[1].abs()).max()))
        return [h, h, (torch.tensor(-c_max, dtype=torch.float64), torch.tensor(c_max, dtype=torch.float64))]

    def cost(self, node):
        shape = node.input_shapes[0] or (1, 1, 1)
        hidden = node.input_shapes[2][-1] if node.input_shapes[2] else 1
        return float(math.prod(shape[:2]) * _directions(node) * GATES[node.op_type] * hidden * (shape[2] + hidden))


@rule("RNN", versions=VERSIONS, kind=Kind.NONLINEAR)
class RNN(_Recurrent):
    """RNN (tanh): L ≤ ‖A‖₂ with η_t = ‖W‖δ_t + ‖R‖η_{t−1} unrolled over the sequence.

    Bound: the spectral norm of the T×T lower-triangular matrix A of the recursion
      η_t ≤ ‖W‖δ_t + ‖R‖η_{t−1} (δ_t, η_t: ℓ2 differences of x_t and h_t) — for Y, all rows of
      both directions stacked; for Y_h the last rows; the largest over the named outputs and the
      sequence lengths (derivation in rules/recurrent.py's docstring).
    Exactness: certified (certified block norms, non-negative float64 recursion, margin); not
      tight in general (‖W‖·‖R‖^k along each path, tanh slope 1).
    Assumptions: W, R, B, sequence_lens, initial_h constant; default activation (Tanh) only;
      activation_alpha/beta, clip refused, and a bound
      beyond float64 (long sequences) — not applicable.
    References: ONNX RNN; Virmaux & Scaman 2018 (AutoLip); design §9.
    """


@rule("GRU", versions=VERSIONS, kind=Kind.NONLINEAR)
class GRU(_Recurrent):
    """GRU: L ≤ ‖A‖₂ of the unrolled product-rule recursion, |h_t| ≤ max(1, max|h_0|).

    Bound: η_t ≤ ‖Δĥ‖ + η_{t−1} + (H + 1)‖Δz‖ with ‖Δz‖, ‖Δr‖ ≤ ¼(‖W_·‖δ_t + ‖R_·‖η_{t−1}) and
      ‖Δĥ‖ ≤ ‖W_h‖δ_t + ‖R_h‖(H‖Δr‖ + η_{t−1}) (or, linear_before_reset, K‖Δr‖ + ‖R_h‖η_{t−1},
      K = max_j(H·Σ|R_h[j,:]| + |Rb_h[j]|)); the spectral norm of the T×T matrix of the
      recursion (rows of both directions stacked for Y, last rows for Y_h); derivation in
      rules/recurrent.py's docstring.
    Exactness: certified; loose (a product-rule bound, growing with the sequence length).
    Assumptions: W, R, B, sequence_lens, initial_h constant; default activations (Sigmoid, Tanh);
      activation_alpha/beta, clip refused, and a bound
      beyond float64 (long sequences) — not applicable.
    References: ONNX GRU; Cho et al. 2014; design §9 (products with bounded factors).
    """


@rule("LSTM", versions=VERSIONS, kind=Kind.NONLINEAR)
class LSTM(_Recurrent):
    """LSTM: L ≤ ‖A‖₂ of the unrolled product-rule recursion, |c_t| ≤ max|c_0| + t.

    Bound: γ_t ≤ (1 + s_f p_f + s_i p_i)γ_{t−1} + ρη_{t−1} + ξδ_t and
      η_t ≤ ¼(‖W_o‖δ_t + ‖R_o‖η_{t−1} + p_oγ_t) + γ_t, with s_f = |c_{t−1}|/4 ≤ (max|c_0| + t − 1)/4,
      s_i = ¼, s_g = 1, ξ = min(Σ s_k‖W_k‖, √(Σ s_k²)·‖W_fig‖) (ρ likewise with R), p_k = max|P_k|;
      the spectral norm of the T×T matrix of η (Y: both directions stacked; Y_h: last rows) or
      γ (Y_c: last rows); derivation in rules/recurrent.py's docstring.
    Exactness: certified; loose (a product-rule bound, growing with the sequence length).
    Assumptions: W, R, B, sequence_lens, initial_h, initial_c, P constant; default activations
      (Sigmoid, Tanh, Tanh); activation_alpha/beta, clip, input_forget refused, and a
      bound beyond float64 (long sequences) — not applicable.
    References: ONNX LSTM; Hochreiter & Schmidhuber 1997; design §9 (products with bounded factors).
    """
