"""Certified ℓ2 operator norms of convolutions and pooling, standalone (numpy in, ``Bound`` out).

Bound: ‖A‖₂ of the linear part of Conv / ConvTranspose (1-D, 2-D; any stride, dilation,
groups, zero padding), of AveragePool, and the ℓ2 Lipschitz constant of MaxPool and
GlobalAveragePool.

Exactness: every convolution/average-pool value is ``certified`` (a proven upper bound: with the
float64 margin of ``labels.certify``, or, for the ``dft`` route, with its own rounding terms);
max-pool is ``exact`` when its windows cannot overlap,
global average pooling is ``exact``.

Assumptions: ONNX semantics (``pads`` = (x1_begin, x2_begin, …, x1_end, x2_end), weight
(C_out, C_in/groups, k…) for Conv and (C_in, C_out/groups, k…) for ConvTranspose), zero
padding, float64 arithmetic with IEEE rounding (unit roundoff u = 2⁻⁵³).

Routes for a convolution A (the cheapest that is good enough wins; the minimum of what is
proven is reported):

* ``materialized-svd`` — build A column by column (each entry is one weight times 1: exact)
  and take the top float64 eigenvalue of the smaller Gram matrix (error ≲ n·u ≪ the margin).
* ``dft`` — Sedghi et al.: the zero-padded (strided) convolution is a restriction of a
  circular convolution, so ‖A‖ ≤ max_ω σ_max(K̂(ω)); strides are folded into channels
  (polyphase) so that strided convolutions are not overestimated; every K̂(ω)ᴴK̂(ω) is a sum of
  the kernel's autocorrelation H_Δ with phases, and the maximum over frequencies is proven by
  batched Cholesky factorisations of θ²I − K̂(ω)ᴴK̂(ω) at θ a hair above the largest σ_max
  (exact eigenvalues only for the few top-ranked frequencies and any that fail).
* ``gram-proof`` — an estimate θ of ‖A‖ (the caller's ``estimate``, else Lanczos on AᵀA),
  then a Cholesky factorisation of θ′²I − AᵀA (θ′ = θ(1+δ), δ = 2e-4, ×8 on failure) proves
  ‖A‖ < θ′: near-exact on small/mid maps. AᵀA is banded in spatial-major, channel-minor order
  (band b ≈ C·(k_eff−1)·n_minor), is read off C·Π(2k_eff−1) probe vectors, and is factorised
  as a block-tridiagonal matrix with blocks of size b (cost ≈ n·b²).

Why a successful floating-point Cholesky proves positive definiteness (``gram-proof``):
if Cholesky of a Hermitian M (band b, or dense with b = n − 1) runs to completion, then
R̂ᴴR̂ = M + ΔM with |ΔM_ij| ≤ γ·√(M_ii M_jj), γ = (b+2)u/(1−(b+2)u) (Higham, *Accuracy and
Stability*, Thm 10.5, and ‖r_i‖² ≤ M_ii/(1−γ)); hence λ_min(M) ≥ −γ(2b+1)·max_i M_ii. With
M = (1−ρ)θ′²I − Ĝ and Ĝ the computed Gram matrix (error ≤ γ_m·√(G_ii G_jj) per entry by
Cauchy–Schwarz on |A|ᵀ|A|), λ_max(G) ≤ θ′²(1 − ρ + budget) where ``budget`` is a few units of
u·b² + u·m·(entries per row); the slack ρ is chosen ≥ 8·budget and ≥ 1e-6, so λ_max(G) < θ′².

References: H. Sedghi, V. Gupta, P. Long, *The singular values of convolutional layers*, ICLR
2019; B. Delattre et al., *Efficient bound of Lipschitz constant for convolutional layers by
Gram iteration*, ICML 2023; S. Rump, *Verification of positive definiteness*, BIT 2006;
A. Virmaux, K. Scaman, *Lipschitz regularity of deep neural networks*, NeurIPS 2018.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse.linalg
import torch
import torch.nn.functional as F

import lipgraph.budget as budget
from lipgraph.certify.margins import (UNIT, banded_cholesky_slack, banded_cholesky_succeeds, proven_max_eigenvalue,
                                      round_up)
from lipgraph.labels import CERT_MARGIN, Bound, Label, certify

_GRAM_DELTA = 2e-4  # first θ′ = θ(1+δ) tried by the gram proof; multiplied by 8 on failure
_GRAM_TRIES = 3
_GRAM_FLOPS = 1e10  # default budget (≈ n·b²) of the banded factorisation (≈ 2 s)
_GRAM_MEMORY = 2e7  # most float64 entries of the banded Gram matrix


# --------------------------------------------------------------------------- the operator
@dataclass(frozen=True)
class _Conv:
    """A zero-padded ONNX convolution x (B, C_in, *spatial) -> (B, C_out, *out_spatial)."""

    weight: torch.Tensor  # (C_out, C_in/groups, *k), float64
    spatial: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # ONNX order
    groups: int

    @property
    def dim(self) -> int:
        return len(self.spatial)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.weight.shape[1] * self.groups, *self.spatial)

    @property
    def k_eff(self) -> tuple[int, ...]:
        return tuple(d * (k - 1) + 1 for d, k in zip(self.dilations, self.weight.shape[2:]))

    @property
    def padded(self) -> tuple[int, ...]:
        return tuple(n + self.pads[i] + self.pads[i + self.dim] for i, n in enumerate(self.spatial))

    @property
    def out_shape(self) -> tuple[int, ...]:
        out = [max(0, (p - k) // s + 1) for p, k, s in zip(self.padded, self.k_eff, self.strides)]
        return (self.weight.shape[0], *out)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        torch_pads: list[int] = []
        for i in reversed(range(self.dim)):
            torch_pads += [self.pads[i], self.pads[i + self.dim]]
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dim - 1]
        return conv(F.pad(x, torch_pads), self.weight, stride=self.strides,
                    dilation=self.dilations, groups=self.groups)


def _as_conv(weight, input_spatial, strides, dilations, pads, groups, transpose, output_padding) -> _Conv:
    """The Conv whose norm is the requested one (a ConvTranspose is the adjoint of a Conv)."""
    dim = len(input_spatial)
    w = torch.as_tensor(np.asarray(weight, dtype=np.float64))
    strides = _per_dim(strides, dim, 1)
    dilations = _per_dim(dilations, dim, 1)
    pads = tuple(int(p) for p in (pads if pads is not None else (0,) * 2 * dim))
    spatial = tuple(int(n) for n in input_spatial)
    if not transpose:
        return _Conv(w, spatial, strides, dilations, pads, int(groups))
    return _adjoint_of_transpose(w, spatial, strides, dilations, pads, int(groups),
                                 _per_dim(output_padding, dim, 0))


def _adjoint_of_transpose(w, spatial, strides, dilations, pads, groups, output_padding) -> _Conv:
    """ConvTranspose(w) = P·Convᵀ(w): its adjoint is Conv(w) on the ConvTranspose's output.

    The full ConvTranspose output has s(n−1) + k_eff touched positions (+ output_padding zero
    rows); ONNX pads crop it. The adjoint Conv reads the cropped output embedded at offset
    pads_begin, with the untouched tail dropped (zero rows do not change the norm).
    """
    dim = len(spatial)
    conv_spatial, begin, end = [], [], []
    for i, n in enumerate(spatial):
        touched = strides[i] * (n - 1) + dilations[i] * (w.shape[2 + i] - 1) + 1
        full = touched + output_padding[i]
        stop = min(full - pads[i + dim], touched)
        m = max(0, stop - pads[i])
        conv_spatial.append(m)
        begin.append(min(pads[i], touched))
        end.append(touched - begin[-1] - m)
    return _Conv(w, tuple(conv_spatial), strides, dilations, tuple(begin + end), groups)


def _per_dim(value, dim: int, default: int) -> tuple[int, ...]:
    if value is None:
        return (default,) * dim
    value = np.atleast_1d(np.asarray(value, dtype=np.int64))
    return tuple(int(v) for v in (np.repeat(value, dim) if value.size == 1 else value))


# ------------------------------------------------------------------------ public: convolution
def conv_certified_norm(weight: np.ndarray, input_spatial: tuple[int, ...], *, strides, dilations, pads,
                        groups: int = 1, transpose: bool = False, output_padding=None,
                        materialize_limit: int = 4_000_000, estimate: float | None = None,
                        proof_flops: float = _GRAM_FLOPS, dft: Bound | None = None) -> Bound:
    """Certified upper bound on ‖A‖₂, A the linear part (bias excluded) of a Conv/ConvTranspose.

    Bound: ``materialized-svd`` when input·output numel ≤ ``materialize_limit``; otherwise the
    minimum of the DFT bound (``dft``) and, when a banded factorisation of
    AᵀA costs ≤ ``proof_flops`` (≈ n·b²), the near-exact ``gram-proof``.

    Exactness: ``certified`` (never ``exact``); ``gram-proof`` is within ≈ 0.02 % of ‖A‖,
    ``dft`` is tight on large maps (+0.2–0.6 % for 3×3 at 28×28) and loose on small ones.
    A zero operator (no output, or zero weight) is ``exact`` 0.

    Assumptions: see the module docstring; ``estimate`` (optional) is any guess of ‖A‖, e.g.
    from power iteration; it only steers the proof, a wrong guess costs time, never soundness.
    ``dft`` (optional) is this function's own earlier ``dft`` result for the same operator
    (e.g. a first call with ``proof_flops=0``): it is reused instead of recomputed, and only the
    Gram proof is tried against it.

    References: Sedghi et al. 2019 (DFT), Higham Thm 10.5 (Cholesky proofs).
    """
    conv = _as_conv(weight, input_spatial, strides, dilations, pads, groups, transpose, output_padding)
    n_in, n_out = math.prod(conv.in_shape), math.prod(conv.out_shape)
    if n_in * n_out == 0 or not torch.any(conv.weight != 0):
        return Bound(0.0, Label.EXACT, "zero")
    if n_in * n_out <= materialize_limit and budget.fits(
            8 * (n_in * n_out + min(n_in, n_out) ** 2), f"materialising a {n_out}×{n_in} convolution",
            "the DFT bound instead"):
        return Bound(certify(_materialized_norm(conv.apply, conv.in_shape)), Label.CERTIFIED, "materialized-svd",
                     slack=CERT_MARGIN)
    if dft is not None and dft.method == "dft" and dft.label is Label.CERTIFIED:
        first = dft
    else:
        value = _dft_bound(conv)
        if not math.isfinite(value):
            return Bound(math.inf, Label.CERTIFIED, "memory-limit")
        first = Bound(value, Label.CERTIFIED, "dft")  # its rounding is already inside (see ``_dft_bound``)
    proven = _gram_proof(conv, estimate, cap=first.value, flops=proof_flops)
    if proven is not None and certify(proven[0]) < first.value:
        (value, delta) = proven
        return Bound(certify(value), Label.CERTIFIED, "gram-proof", slack=(1 + delta) * (1 + CERT_MARGIN) - 1)
    return first


def _materialized_norm(apply: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...]) -> float:
    """σ_max of the matrix of ``apply`` (float64 eigenvalues of the smaller Gram matrix)."""
    n = math.prod(in_shape)
    chunk = max(1, 2**22 // n)
    at = torch.cat([apply(_basis(n, i, min(i + chunk, n)).reshape(-1, *in_shape)).reshape(min(chunk, n - i), -1)
                    for i in range(0, n, chunk)])  # Aᵀ, one row per basis vector
    gram = at.T @ at if at.shape[1] < at.shape[0] else at @ at.T
    return math.sqrt(max(float(torch.linalg.eigvalsh(gram)[-1]), 0.0))


# ------------------------------------------------------------------------------ DFT bound
def _polyphase_kernel(conv: _Conv) -> torch.Tensor:
    """Stride-1 kernel acting on the Πs polyphase components: (C_out, C_in/g·Πs, *⌈k_eff/s⌉).

    y[i] = Σ_j K[j] x[s·i + j] = Σ_r Σ_q K[s·q + r] x_r[i + q] with x_r[t] = x[s·t + r].
    """
    w = conv.weight
    k_r = [-(-k // s) for k, s in zip(conv.k_eff, conv.strides)]
    full = w.new_zeros(*w.shape[:2], *[r * s for r, s in zip(k_r, conv.strides)])
    full[(slice(None), slice(None)) + tuple(slice(0, k, d) for k, d in zip(conv.k_eff, conv.dilations))] = w
    split = [dim for r, s in zip(k_r, conv.strides) for dim in (r, s)]
    perm = [0, 1] + [3 + 2 * i for i in range(conv.dim)] + [2 + 2 * i for i in range(conv.dim)]
    return full.reshape(*w.shape[:2], *split).permute(perm).reshape(w.shape[0], -1, *k_r)


#: The DFT bound takes its frequencies in chunks of at most about this many bytes (the Gram
#: matrices, their parts, a copy); measured on 512×512 and 256×384 kernels, no slower than all at once.
DFT_CHUNK_BYTES = 256 << 20


def _dft_bound(conv: _Conv) -> float:
    """A proven upper bound on max_ω σ_max(K̂(ω)) ≥ ‖A‖, rounding included (no ``certify``
    margin is needed on top), within about 1e-9 relative of that maximum.

    Sound because A = P_out · Circ_N · E_in with E_in (zero padding, polyphase split) an
    isometry and P_out (cropping) a projection, and ‖Circ_N‖ = max_ω σ_max(K̂(ω)). The grid
    N = ⌈padded/s⌉ suffices: a valid correlation never reads past the padded input, so the
    circular one on N agrees with it on every kept output (no wrap-around). Frequencies ω and
    −ω give conjugate matrices (real kernel), so half the grid is enough.

    σ_max(K̂(ω))² is the top eigenvalue of the Gram matrix G(ω) = K̂ᴴK̂ = Σ_Δ H_Δ·e^{−2πi ω·Δ/N}
    (or of K̂K̂ᴴ, the smaller: its conjugate is the same sum for the transposed taps), where
    H_Δ = Σ_t K_tᵀK_{t+Δ} is the kernel's autocorrelation (``_autocorrelation``): computed once,
    then two real (F×D)·(D×p²) products per chunk of frequencies give every G(ω) — about
    T²·rows·p²/2 multiply-adds for H instead of F·rows·p² complex ones for the Gram products
    (ResNet-18's 512-channel 7×7 layers: F = 45, T² = 81). The rounding of the computed Ĝ (``_gram_rounding``) is added to the
    maximum over the chunks of λ_max(Ĝ), which ``margins.proven_max_eigenvalue`` proves (its
    Cholesky margin included; ``inner=0``: Ĝ is taken as given).
    """
    kernel, grid, freqs = _polyphase_grid(conv)
    taps = _group_taps(kernel, conv.groups)
    g, p = taps.shape[0], taps.shape[-1]
    k = list(kernel.shape[2:])
    per_freq = 16 * 5 * g * p * p    # Ĝ(ω) complex, its real and imaginary parts, Cholesky's input and factor
    autocorr_bytes = 8 * g * p * p * (math.prod(2 * n - 1 for n in k) + math.prod(k))   # H, one offset's pairs
    if not budget.fits(autocorr_bytes + per_freq,
                       f"the DFT bound of a {kernel.shape[0]}×{kernel.shape[1]} convolution (even one frequency)",
                       "no DFT bound (∞)"):
        return math.inf
    offsets, autocorr = _autocorrelation(taps, k)
    chunk = max(1, min(freqs, DFT_CHUNK_BYTES // per_freq))
    if not budget.fits(chunk * per_freq, f"the DFT bound's {chunk} frequencies at once", "computed in smaller chunks"):
        chunk = max(1, int(budget.memory_limit() // per_freq))
    top = 0.0
    for start in range(0, freqs, chunk):
        budget.check()
        gram = _frequency_grams(offsets, autocorr, grid, torch.arange(start, min(start + chunk, freqs)))
        xmax2 = round_up(float(gram.diagonal(dim1=-2, dim2=-1).real.sum(-1).max()), rel=1e-6)
        top = proven_max_eigenvalue(gram, xmax2, 0, floor=top)
        del gram
    return round_up(math.sqrt(round_up(top + _gram_rounding(taps))))


def _group_taps(kernel: torch.Tensor, groups: int) -> torch.Tensor:
    """The polyphase kernel's taps per group, (g, *k, rows, p), transposed where that makes the
    Gram matrix the smaller one (p = min of the group's output and input channels)."""
    c_out, c_in, k = kernel.shape[0], kernel.shape[1], kernel.shape[2:]
    taps = kernel.reshape(groups, c_out // groups, c_in, *k).movedim((1, 2), (-2, -1))   # (g, *k, o, c)
    return taps if c_in <= c_out // groups else taps.transpose(-1, -2)


def _autocorrelation(taps: torch.Tensor, k: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The offsets Δ ∈ Π_d (−k_d, k_d) (D, dim, integers) and H_Δ = Σ_t K_tᵀK_{t+Δ} (g, D, p, p):
    per offset, the products of the overlapping pairs of taps (length rows each), then their sum.
    The list of offsets is symmetric (entry D−1−j is −Δ_j) and H_{−Δ} = H_Δᵀ: half are transposes."""
    g, p = taps.shape[0], taps.shape[-1]
    offsets = list(itertools.product(*(range(1 - n, n) for n in k)))
    out = taps.new_empty(g, len(offsets), p, p)
    for j, delta in enumerate(offsets):
        if j > len(offsets) - 1 - j:
            out[:, j] = out[:, len(offsets) - 1 - j].mT
            continue
        first = (slice(None),) + tuple(slice(max(0, -e), n - max(0, e)) for e, n in zip(delta, k))
        second = (slice(None),) + tuple(slice(max(0, e), n - max(0, -e)) for e, n in zip(delta, k))
        pairs = taps[first].flatten(1, len(k)).mT @ taps[second].flatten(1, len(k))   # (g, pairs, p, p)
        out[:, j] = pairs.sum(1)
    return torch.tensor(offsets, dtype=torch.long).reshape(len(offsets), len(k)), out


def _frequency_grams(offsets: torch.Tensor, autocorr: torch.Tensor, grid: list[int], idx: torch.Tensor) -> torch.Tensor:
    """Ĝ(ω) = Σ_Δ H_Δ·e^{−2πi ω·Δ/N} for the half-grid frequencies ``idx``, per group:
    (F_c·g, p, p), frequency-major. The phase θ = 2π·(Σ_d ω_dΔ_d/N_d mod 1) has its numerator
    exact in integers, so θ ∈ [0, 2π) whatever Δ (``_gram_rounding``)."""
    g, p = autocorr.shape[0], autocorr.shape[-1]
    period = math.prod(grid)
    turns = (_frequencies(grid, idx) * torch.tensor([period // n for n in grid])) @ offsets.T % period    # (F_c, D)
    angle = turns.to(torch.float64) / period * (2 * math.pi)
    flat = autocorr.reshape(g, -1, p * p)
    gram = torch.complex(torch.cos(angle) @ flat, -torch.sin(angle) @ flat)                            # (g, F_c, p²)
    return (gram[0] if g == 1 else gram.transpose(0, 1)).reshape(-1, p, p)


def _gram_rounding(taps: torch.Tensor) -> float:
    """A bound on ‖Ĝ(ω) − G(ω)‖₂ for every ω, for Ĝ as ``_dft_bound`` computes it.

    Entrywise, with S = Σ_t |K_t| (rows × p): Ĥ_Δ, products of length rows summed over ≤ T pairs,
    is off by ≤ γ_{rows+T}·Σ_t |K_t|ᵀ|K_{t+Δ}|; each phase e^{−iθ} has θ = 2π·(r/M) with the
    integer r < M exact, so θ̂ carries 3 roundings of a number below 2π and cos θ̂, sin θ̂ (≤ 2u
    each) are off by ≤ (6π + 2)·u < 21u, the complex phase by < 30u; the length-D real sums of
    the two parts add √2·γ_D·Σ_Δ |Ĥ_Δ|. The sums over Δ of Σ_t |K_t|ᵀ|K_{t+Δ}| add up to SᵀS, so
    |Ĝ − G| ≤ ε·SᵀS with ε ≤ (rows + T + 1.5·D + 45)·u·(1 + 1e-6), and ‖Ĝ − G‖₂ ≤ ‖|Ĝ − G|‖₂ ≤
    ε·‖S‖₂² ≤ ε·‖S‖_F². Returned: 2u·(rows + T + 2D + 30)·‖Ŝ‖_F², which exceeds that with the
    rounding of Ŝ and of ‖Ŝ‖_F² included."""
    k = list(taps.shape[1:-2])
    absum = taps.abs().sum(dim=tuple(range(1, 1 + len(k))))                   # (g, rows, p)
    terms = taps.shape[-2] + math.prod(k) + 2 * math.prod(2 * n - 1 for n in k) + 30
    return 2 * UNIT * terms * float(absum.square().sum())


def _polyphase_grid(conv: _Conv) -> tuple[torch.Tensor, list[int], int]:
    """The polyphase kernel, the circulant grid N = ⌈padded/s⌉ and its number of frequencies
    on the half grid (the last dimension halved: ω and −ω give conjugate blocks)."""
    grid = [-(-p // s) for p, s in zip(conv.padded, conv.strides)]
    return _polyphase_kernel(conv), grid, math.prod(grid[:-1]) * (grid[-1] // 2 + 1)


def _frequency_blocks(kernel: torch.Tensor, grid: list[int], groups: int,
                      idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frequencies ω (F_c, dim) of the half grid with flat indices ``idx``, and the blocks
    K̂(ω) = Σ_t K_t e^{−2πi ω·t/N} per group: (F_c·g, C_out/g, C_in·Πs), frequency-major."""
    c_out, c_in = kernel.shape[:2]
    taps = torch.as_tensor(list(itertools.product(*(range(k) for k in kernel.shape[2:]))), dtype=torch.float64)
    flat = kernel.reshape(c_out * c_in, -1).T.to(torch.complex128)                        # (T, C_out·C_in)
    omega = _frequencies(grid, idx).to(torch.float64)
    phase = torch.exp(-2j * math.pi * ((omega / torch.tensor(grid, dtype=torch.float64)) @ taps.T))  # (F_c, T)
    return omega, (phase @ flat).reshape(-1, c_out // groups, c_in)


def _frequencies(grid: list[int], idx: torch.Tensor) -> torch.Tensor:
    """The frequencies ω (F_c, dim; integers) of the half grid (the last dimension halved) with
    flat indices ``idx``."""
    axes = [torch.arange(n) for n in grid[:-1]] + [torch.arange(grid[-1] // 2 + 1)]
    return torch.stack([a[i] for a, i in zip(axes, _unravel(idx, [len(a) for a in axes]))], 1)


def conv_start_vector(weight: np.ndarray, input_spatial: tuple[int, ...], *, strides, dilations, pads,
                      groups: int = 1) -> torch.Tensor | None:
    """A unit input (C_in, *spatial) near the top right singular vector of a Conv on a large map:
    a start for power iteration (no claim is made on it), or None when the DFT does not fit in
    memory.

    The circulant's top frequency ω and its top right singular vector v (by 10 batched power
    steps on every frequency's K̂(ω)ᴴK̂(ω), then an SVD of the best): the plane wave
    x_r[t] = Re(v̄_r·e^{2πi ω·t/N}) on the polyphase components r (K̂(ω) v = σu makes
    conj(K̂(ω)), the matrix a plane wave of frequency +ω meets, send v̄ to σū), times a sine
    window that vanishes towards the zero-padded border. Measured: 5–6 AᵀA products instead of
    ~30 to reach the DFT bound within 0.1 % on 56×56 and 224×224 maps.
    """
    conv = _as_conv(weight, input_spatial, strides, dilations, pads, groups, False, None)
    kernel, grid, freqs = _polyphase_grid(conv)
    c_out, c_in, g = kernel.shape[0], kernel.shape[1], conv.groups
    if min(math.prod(conv.in_shape), c_out * c_in) == 0 or not budget.fits(48 * c_out * c_in * freqs):
        return None
    omega, blocks = _frequency_blocks(kernel, grid, g, torch.arange(freqs))
    v = torch.ones(blocks.shape[0], c_in, 1, dtype=blocks.dtype)
    for _ in range(10):
        v = ((blocks @ v).mH @ blocks).mH  # K̂ᴴ(K̂v) with the conjugate on the small side (3× faster)
        v = v / v.norm(dim=-2, keepdim=True).clamp_min(1e-300)
    best = int((blocks @ v).norm(dim=(-2, -1)).argmax())
    conj_right = torch.linalg.svd(blocks[best])[2][0]                 # the first row of Vᴴ: v̄
    polyphase = conj_right.reshape(c_in // math.prod(conv.strides), *conv.strides)
    x = torch.zeros(conv.in_shape, dtype=torch.complex128)
    group = best % g
    pos = [torch.arange(n) + conv.pads[d] for d, n in enumerate(conv.spatial)]  # padded coordinates
    index = tuple(torch.meshgrid(*[q % s for q, s in zip(pos, conv.strides)], indexing="ij"))
    phase = sum(torch.meshgrid(*[(2j * math.pi * omega[best // g, d] / grid[d]) * (q // s)
                                 for d, (q, s) in enumerate(zip(pos, conv.strides))], indexing="ij"))
    window = math.prod(torch.meshgrid(*[torch.sin(math.pi * (torch.arange(n) + 0.5) / n) for n in conv.spatial],
                                      indexing="ij"))
    per_group = c_in // math.prod(conv.strides)
    x[group * per_group:(group + 1) * per_group] = polyphase[(slice(None),) + index] * (torch.exp(phase) * window)
    x = x.real
    norm = torch.linalg.vector_norm(x)
    return x / norm if norm > 0 else None


def _unravel(index: torch.Tensor, shape: list[int]) -> list[torch.Tensor]:
    out = []
    for n in reversed(shape):
        out.append(index % n)
        index = index // n
    return out[::-1]


def _basis(n: int, start: int, stop: int) -> torch.Tensor:
    """Rows start..stop−1 of the n×n identity."""
    rows = torch.zeros(stop - start, n, dtype=torch.float64)
    rows[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
    return rows


# --------------------------------------------------------------------------- gram proof
def _gram_proof(conv: _Conv, estimate: float | None, cap: float, flops: float) -> tuple[float, float] | None:
    """(θ′, δ): the smallest θ′ = θ(1 + δ) of a few tries with θ′²I − AᵀA proven ≻ 0 by a banded
    Cholesky (θ the estimate, ≤ ‖A‖), or None."""
    order, band = _band_order(conv)
    n = math.prod(conv.in_shape)
    if n < 3 or n * band * band > flops or n * (band + 1) > _GRAM_MEMORY:
        return None
    if not budget.fits(8 * n * (band + 1) * 2, f"the banded Gram matrix of a convolution ({n}×{band + 1})",
                       "no gram proof (the DFT bound)"):
        return None
    theta = estimate if estimate is not None else _lanczos_norm(conv)
    if theta is None or theta * (1 + _GRAM_DELTA) >= cap:
        return None
    ab = _banded_gram(conv, order, band)
    terms = conv.weight.shape[0] * math.prod(conv.weight.shape[2:])
    slack = banded_cholesky_slack(4 * band + 2, terms)  # block tridiagonal: ≤ 2b terms per product
    delta = _GRAM_DELTA
    for _ in range(_GRAM_TRIES):
        budget.check()
        bound = theta * (1 + delta)
        if bound >= cap:
            return None
        if banded_cholesky_succeeds(ab, (1 - slack) * bound * bound):
            return bound, delta
        delta *= 8
    return None


def _band_order(conv: _Conv) -> tuple[tuple[int, ...], int]:
    """Spatial-major, channel-minor order of the unknowns with the smallest bandwidth of AᵀA.

    x_i and x_j share a window only if |i_d − j_d| ≤ k_eff_d − 1 in every dimension.
    """
    c, radius = conv.in_shape[0], [k - 1 for k in conv.k_eff]
    best = None
    for order in itertools.permutations(range(conv.dim)):
        stride, offset = 1, 0
        for d in reversed(order):
            offset += min(radius[d], conv.spatial[d] - 1) * stride
            stride *= conv.spatial[d]
        band = offset * c + c - 1
        if best is None or band < best[1]:
            best = (order, band)
    return best


def _banded_gram(conv: _Conv, order: tuple[int, ...], band: int) -> np.ndarray:
    """AᵀA in LAPACK lower band storage ab[i−j, j], from C·Π(2r+1) probes instead of n columns.

    A probe is channel c set to 1 at every position ≡ o (mod 2r+1); two such positions are
    > 2r apart, so each entry of AᵀA·probe comes from exactly one of them.
    """
    c_in, spatial = conv.in_shape[0], conv.spatial
    radius = [k - 1 for k in conv.k_eff]
    period = [min(2 * r + 1, n) for r, n in zip(radius, spatial)]
    n = math.prod(conv.in_shape)
    ab = np.zeros((band + 1, n))
    pos_index = _position_index(spatial, order)  # flat spatial index in the band order, per position
    for color in np.ndindex(*period):
        probe_sp = torch.as_tensor(_outer_and([np.arange(s) % p == o for s, p, o in zip(spatial, period, color)]))
        probes = torch.zeros(c_in, *conv.in_shape, dtype=torch.float64)
        probes[torch.arange(c_in), torch.arange(c_in)] = probe_sp.to(torch.float64)
        result = _gram_apply(conv.apply, probes).numpy()  # (c_src, c_dst, *spatial)
        source, valid = _probe_sources(spatial, radius, period, color)
        rows = pos_index[..., None] * c_in + np.arange(c_in)  # (*spatial, c_dst)
        cols = pos_index[source][..., None] * c_in + np.arange(c_in)  # (*spatial, c_src)
        rows, cols = rows[valid][:, :, None], cols[valid][:, None, :]  # (m, c_dst, c_src)
        values = np.moveaxis(result, (0, 1), (-1, -2)).reshape(-1, c_in, c_in)[valid.reshape(-1)]
        keep = rows >= cols
        rows, cols = np.broadcast_to(rows, keep.shape)[keep], np.broadcast_to(cols, keep.shape)[keep]
        ab[rows - cols, cols] = values[keep]
    return ab


def _position_index(spatial: tuple[int, ...], order: tuple[int, ...]) -> np.ndarray:
    """Flat index of every spatial position when dimensions are ordered major → minor by ``order``."""
    perm_shape = [spatial[d] for d in order]
    flat = np.arange(math.prod(spatial)).reshape(perm_shape)
    return np.transpose(flat, np.argsort(order))


def _probe_sources(spatial, radius, period, color) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """For every position j, the probe position i ≡ color (mod period) with |i − j| ≤ r, and validity."""
    per_dim = []
    for n, r, p, o in zip(spatial, radius, period, color):
        j = np.arange(n)
        i = np.full(n, o) if p == n else j - r + (o - j + r) % p
        per_dim.append((i, (i >= 0) & (i < n) & (np.abs(i - j) <= r)))
    grids = np.ix_(*[i for i, _ in per_dim])
    source = tuple(np.broadcast_to(g, spatial).clip(0, n - 1) for g, n in zip(grids, spatial))
    return source, _outer_and([v for _, v in per_dim])


def _outer_and(masks: list[np.ndarray]) -> np.ndarray:
    """The boolean tensor product of per-dimension masks."""
    out = masks[0]
    for mask in masks[1:]:
        out = np.logical_and.outer(out, mask)
    return out


def _gram_apply(apply: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """AᵀA x for a linear ``apply``, through one forward and one backward pass."""
    x = x.detach().requires_grad_(True)
    y = apply(x)
    (grad,) = torch.autograd.grad(y, x, grad_outputs=y.detach())
    return grad


def _lanczos_norm(conv: _Conv) -> float | None:
    """Estimate of ‖A‖ (Lanczos on AᵀA; converges from below; never used unproven); None when
    ARPACK fails (e.g. error −9 on a tiny operator whose Krylov space it exhausts)."""
    n = math.prod(conv.in_shape)

    def matvec(v: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.ascontiguousarray(v, dtype=np.float64)).reshape(1, *conv.in_shape)
        return _gram_apply(conv.apply, x).reshape(-1).numpy()

    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n)
    try:
        lam = scipy.sparse.linalg.eigsh(op, k=1, which="LA", v0=v0, ncv=min(n, 24), tol=1e-10,
                                        return_eigenvectors=False)
    except scipy.sparse.linalg.ArpackNoConvergence as err:
        lam = err.eigenvalues if len(err.eigenvalues) else [0.0]
    except scipy.sparse.linalg.ArpackError:
        return None
    return math.sqrt(max(float(np.max(lam)), 0.0))


# ------------------------------------------------------------------------------ pooling
def maxpool_bound(kernel, strides, dilations=None) -> Bound:
    """ℓ2 Lipschitz bound of MaxPool: √(Π_d ⌈k_d·gcd(d_d, s_d)/s_d⌉) (= √(Π⌈k_eff/s⌉) undilated).

    Bound: |max_W x − max_W x′| ≤ max_W |x − x′| ≤ ‖(x − x′)_W‖₂ per window W, so
    ‖y − y′‖² ≤ Σ_W ‖(x − x′)_W‖² = Σ_p (number of windows holding p)·(x_p − x′_p)². Position p
    is in window w iff p − s·w = d·j for some tap j < k; the taps j that fit one residue of p
    mod s form one class mod s/gcd(d, s), so at most ⌈k·gcd(d, s)/s⌉ windows per dimension.

    Exactness: ``exact`` (1) when no position lies in two windows; otherwise ``certified`` and
    attained on inputs large enough to have a position shared by the maximal number of windows
    (perturb the maximum sitting there).

    Assumptions: any padding (−∞ pads only shrink windows), ceil_mode, storage order.

    References: Virmaux & Scaman 2018; Gouk et al., *Regularisation of neural networks by
    enforcing Lipschitz continuity*, 2021 (pooling bounds).
    """
    kernel = np.atleast_1d(np.asarray(kernel, dtype=np.int64))
    strides = _per_dim(strides, kernel.size, 1)
    dilations = _per_dim(dilations, kernel.size, 1)
    windows = math.prod(-(-int(k) * math.gcd(d, s) // s) for k, s, d in zip(kernel, strides, dilations))
    if windows == 1:
        return Bound(1.0, Label.EXACT, "maxpool-disjoint")
    return Bound(certify(math.sqrt(windows)), Label.CERTIFIED, "maxpool-overlap")


def avgpool_certified_norm(kernel, strides, pads, input_spatial, count_include_pad: bool, ceil_mode: bool,
                           dilations=None) -> Bound:
    """Certified ‖A‖₂ of AveragePool: Π_d σ_max(A_d), A_d the 1-D pooling matrix of dimension d.

    Bound: y[w₁,w₂] = Σ_{p ∈ W₁(w₁)×W₂(w₂)} x[p] / (c₁(w₁)·c₂(w₂)) — windows and divisors are
    products over dimensions — so A = A₁ ⊗ A₂ and ‖A‖ = Π‖A_d‖ exactly; each small 1-D matrix
    (out_d × n_d) is materialised and its σ_max taken from float64 eigenvalues (``separable-svd``).

    Exactness: ``certified`` (float64 eigenvalues plus the ``certify`` margin); tight.

    Assumptions: zero padding; divisor = taps inside the input (count_include_pad=0) or inside
    the padded input (=1; taps of a ceil_mode window past the padded end are not counted, as in
    torch/onnxruntime). A runtime dividing by more (e.g. always Πk) has an entrywise smaller
    nonnegative matrix, hence a smaller norm: the bound still holds. A ceil_mode window starting
    past the padded input is dropped (it would be an empty or zero row).

    References: ONNX AveragePool; Van Loan, *The ubiquitous Kronecker product*, 2000 (σ of A⊗B).
    """
    spatial = tuple(int(n) for n in input_spatial)
    dim = len(spatial)
    kernel = _per_dim(kernel, dim, 1)
    strides, dilations = _per_dim(strides, dim, 1), _per_dim(dilations, dim, 1)
    pads = tuple(int(p) for p in (pads if pads is not None else (0,) * 2 * dim))
    value = 1.0
    for i in range(dim):
        factor = _avgpool_matrix(spatial[i], kernel[i], strides[i], dilations[i], (pads[i], pads[i + dim]),
                                 count_include_pad, ceil_mode)
        if factor.size == 0 or not factor.any():
            return Bound(0.0, Label.EXACT, "zero")
        value *= _materialized_norm(lambda x, a=torch.as_tensor(factor): x @ a.T, (spatial[i],))
    return Bound(certify(value), Label.CERTIFIED, "separable-svd")


def _avgpool_matrix(n: int, k: int, s: int, d: int, pads: tuple[int, int], include_pad: bool,
                    ceil_mode: bool) -> np.ndarray:
    """The (out × n) matrix of 1-D average pooling with ONNX pads and ceil_mode."""
    span = n + pads[0] + pads[1] - (d * (k - 1) + 1)
    out = (-(-span // s) if ceil_mode else span // s) + 1   # ceil_mode: ≥ 1 window even if span < 0
    if ceil_mode and (out - 1) * s >= n + pads[0]:
        out -= 1
    if out <= 0:
        return np.zeros((0, n))
    taps = (np.arange(out) * s - pads[0])[:, None] + d * np.arange(k)[None, :]  # input positions
    inside = (taps >= 0) & (taps < n)
    domain = (taps >= -pads[0]) & (taps < n + pads[1]) if include_pad else inside
    count = np.maximum(domain.sum(1, keepdims=True), 1)
    matrix = np.zeros((out, n))
    rows = np.broadcast_to(np.arange(out)[:, None], taps.shape)
    np.add.at(matrix, (rows[inside], taps[inside]), np.broadcast_to(1.0 / count, taps.shape)[inside])
    return matrix


def global_avgpool_norm(m: int) -> Bound:
    """‖A‖₂ of GlobalAveragePool over m entries per channel: 1/√m.

    Bound: y = (1/m)·1ᵀx per channel, ‖(1/m)·1‖₂ = 1/√m; channels are independent.

    Exactness: ``exact`` (rounded up by two ulps so the float is never below 1/√m).

    Assumptions: m ≥ 1 entries per channel.

    References: ONNX GlobalAveragePool.
    """
    value = 1.0 / math.sqrt(m)
    return Bound(math.nextafter(math.nextafter(value, math.inf), math.inf), Label.EXACT, "global-avgpool")
