"""The proof kernel: positive definiteness of symmetric float64 matrices, proven in floating point.

Every number that lipgraph labels *certified* by a matrix inequality comes through here. A
floating-point computation only approximates the matrix it is about, so each proof below says
which exact matrices it covers and argues its margin.

Conventions: u = 2⁻⁵³ is the unit roundoff of float64 (round to nearest), η = 2⁻¹⁰⁷⁴ the smallest
subnormal, γ_k = k·u / (1 − k·u). Float32 (or integer) inputs are promoted to float64 first; the
promotion is exact. LAPACK and BLAS are assumed to use conventional (not Strassen-like) products
in IEEE arithmetic; fused multiply-adds only make the error smaller. An ``err`` argument is an
absolute bound on the spectral norm of the uncertainty of the given matrix: the proof then
covers *every* symmetric matrix within ``err`` of it (how callers account for the rounding
in forming their matrices).

**Dense proof** (``prove_pd``). If the floating-point Cholesky factorisation of
fl(A − c·I) runs to completion and c ≥ γ_{n+1}/(1 − γ_{n+1}) · tr(A) + 4n(2(n+1) + max a_ii)·η,
then A is positive definite (Rump, *Verification of positive definiteness*, BIT 46, 2006;
the backward error of Cholesky is |ΔA| ≤ γ_{n+1}|Gᵀ||G|, Demmel 1989, and ‖|G|ᵀ|G|‖ ≤ tr). We
use c = 8(n+1)·u·tr(A) — four times the first term for every n·u < 1/8 — plus the tiny
underflow terms, plus ``err``: a success then proves λ_min(A) > err, so every matrix within
``err`` of A is positive definite. The trace term is only sharp when the diagonal is
balanced, so A is first *equilibrated* by a diagonal congruence with powers of two,
s_i = 2^{−⌊e_i/2⌋} for a_ii = f_i·2^{e_i}, which is exact (barring underflow, covered by an
n·η term) and preserves definiteness; then every scaled diagonal entry lies in [½, 2), the
shift is at most 16n(n+1)·u, i.e. at most 32n(n+1)·u of each diagonal entry — a per-row
margin — and ``err`` scales by max s_i². ``diag_rel`` (diagonal entries known only to a
relative accuracy, e.g. after one rounding when forming bound·I − G) adds diag_rel times the
largest scaled diagonal entry to the shift. A matrix that is not exactly symmetric is read as the symmetric matrix
of its lower triangle, and ‖D(a − aᵀ)D‖_F/2 is added to the scaled ``err``, so the proof covers
(a + aᵀ)/2.

**Block-tridiagonal proof** (``prove_block_tridiagonal``). For diagonal blocks D_0 … D_k and
sub-diagonal blocks C_i (block (i+1, i)) the quadratic form splits, for *any* symmetric Q_i
(Q_0 = 0), as

    xᵀ M x = Σ_{i<k} [x_i; x_{i+1}]ᵀ E_i [x_i; x_{i+1}] + x_kᵀ (D_k − Q_k) x_k,
    E_i = [[D_i − Q_i, C_iᵀ], [C_i, Q_{i+1}]].

If every E_i and D_k − Q_k is positive definite, M is (a nonzero x has a nonzero x_i, and the
term holding it is positive). The Q_i need no error analysis at all: they are whatever was
computed. Uncertainty: D_i − Q_i is formed with one rounding per entry (‖·‖ ≤ u‖D_i − Q_i‖_F),
added to the caller's ``diag_err[i]`` to give a_i; ΔC_i (‖ΔC_i‖ ≤ c_i = ``sub_err[i]``) adds
cross terms ≥ −c_i(‖x_i‖² + ‖x_{i+1}‖²). So E_i is positive definite for every admissible
perturbation if [[D_i − Q_i − t_iI, C_iᵀ], [C_i, Q_{i+1} − c_iI]] ≻ 0 with t_i = a_i + c_i. We
take Q_{i+1} = fl(C_i (D_i − Q_i − t_iI)⁻¹ C_iᵀ) + diag(η_{i+1}) + c_iI — the block-LDLᵀ pivot
update (taken after a slightly larger shift of the top-left block, which anticipates the
dense proof's own shift), a small margin η that pays for the dense proof of that matrix (raised
a hundredfold up to twice when the proof fails), and the next block's share of ΔC_i — so each block spends its
own uncertainty once instead of passing it down the chain, and the 2×2 block matrices are the
pivots of an LDLᵀ factorisation of M minus the uncertainty. The cost is one dense proof of
size n_i + n_{i+1} per block: the full matrix is never formed.

**Outward rounding** (``round_up``, ``round_down``, ``frobenius_upper``): a float64 result
moved two ulps outwards covers the rounding of the one or two operations that produced it.

**Banded proof** (``banded_cholesky_succeeds`` at a shift reduced by ``banded_cholesky_slack``):
θ′²I − AᵀA for a convolution, whose Gram matrix is banded; the argument is in
``lipgraph.certify.conv``'s module docstring. **Batched proof** (``batched_gram_below``): one
Cholesky per matrix of a batch of small Gram matrices (SeqLip vertices, a convolution's
frequencies); ``proven_max_eigenvalue`` turns it into a proven maximum over the batch. **Moment slack**
(``moment_slack``): the rounding bound of SeqLip's exact moment computations. The certify
margin of float64 results (``labels.CERT_MARGIN``, ``labels.certify``) stays beside ``Bound``,
where rules import it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.linalg
import torch

import lipgraph.budget as budget
from lipgraph.certify.threads import one_thread

UNIT = 2.0 ** -53
ETA = 2.0 ** -1074


@dataclass(frozen=True)
class Proof:
    """Outcome of a proof: ``ok`` only when the claim is proven; ``reason`` says why not."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def round_up(x: float, rel: float = 0.0) -> float:
    """A float64 number ≥ x + rel·|x|, computed with rounding: two ulps above the result."""
    y = float(x) + rel * abs(float(x))
    return float(np.nextafter(np.nextafter(y, np.inf), np.inf))


def round_down(x: float, rel: float = 0.0) -> float:
    """A float64 number ≤ x − rel·|x|, computed with rounding: two ulps below the result."""
    y = float(x) - rel * abs(float(x))
    return float(np.nextafter(np.nextafter(y, -np.inf), -np.inf))


def frobenius_upper(a: np.ndarray) -> float:
    """An upper bound on ‖a‖_F (and so on ‖a‖₂): the float64 norm raised by γ_{size+2}."""
    a = np.asarray(a, dtype=np.float64)
    return round_up(float(np.linalg.norm(a)), rel=2 * (a.size + 2) * UNIT) if a.size else 0.0


def as_symmetric(matrix: np.ndarray, copy: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(the float64 symmetric matrix of ``matrix``'s lower triangle, (a − aᵀ)/2 or None); without
    ``copy`` a float64 ``matrix`` that is already symmetric is returned itself."""
    a = np.array(matrix, dtype=np.float64) if copy else np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {a.shape}")
    if np.array_equal(a, a.T):   # bitwise symmetric (a NaN entry never is)
        return a, None
    with np.errstate(invalid="ignore"):
        skew = a - a.T
    return np.tril(a) + np.tril(a, -1).T, 0.5 * skew


def prove_pd(matrix: np.ndarray, err: float = 0.0, diag_rel: float = 0.0, overwrite: bool = False) -> Proof:
    """Prove that every symmetric matrix within ``err`` (spectral norm) of ``matrix``, and
    whose diagonal entries may also differ from the given ones by ``diag_rel`` relative (how a
    diagonal formed by one rounding per entry is covered), is positive definite, by a shifted
    Cholesky factorisation (see the module docstring).

    Never returns ``ok`` for a matrix that is not positive definite; may fail to prove one
    whose smallest eigenvalue is below ~16n(n+1)·u·max a_ii + err. An empty matrix is
    (vacuously) positive definite. With ``overwrite`` a float64 ``matrix`` is used as the work
    array (no copy; its contents are lost).
    """
    budget.check()
    a, skew = as_symmetric(matrix, copy=not overwrite)
    n = a.shape[0]
    if n == 0:
        return Proof(True)
    err = float(err)
    if not (np.isfinite(a).all() and math.isfinite(err) and err >= 0):
        return Proof(False, "non-finite entries or error bound")
    diag = np.diag(a)
    if (diag <= 0).any():
        return Proof(False, f"diagonal entry {int(np.argmin(diag))} is not positive")
    _, expo = np.frexp(diag)
    s = np.ldexp(1.0, -(expo // 2))
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        scaled = a                # a is this proof's own array: scaled in place, s_i·a_ij then ·s_j
        scaled *= s[:, None]
        scaled *= s[None, :]
        err_scaled = float(err * s.max() * s.max()) if err else 0.0
        err_scaled += diag_rel * float(np.diag(scaled).max()) * (1 + 4 * UNIT)
        if skew is not None:  # (a − aᵀ)/2 was computed with one rounding per entry
            err_scaled += frobenius_upper(s[:, None] * skew * s[None, :]) * (1 + 4 * UNIT)
    if not (np.isfinite(scaled).all() and math.isfinite(err_scaled)):
        return Proof(False, "entries overflow after equilibration")
    trace = float(np.trace(scaled))
    shift = round_up(8 * (n + 1) * UNIT * trace + err_scaled + (8 * n * (n + 2) + n) * ETA)
    scaled[np.diag_indices(n)] -= shift
    budget.check()   # the factorisation is the one step --time-limit cannot interrupt
    try:
        # factored in place, without a Fortran-ordered copy: ``scaled`` itself when it is Fortran-ordered
        # (its lower triangle), else its transpose, whose upper triangle is that same lower triangle
        fortran = scaled if scaled.flags.f_contiguous else scaled.T
        scipy.linalg.cholesky(fortran, lower=fortran is scaled, check_finite=False, overwrite_a=True)
    except np.linalg.LinAlgError:
        return Proof(False, f"shifted Cholesky failed (n={n}, shift {shift:.1e} on a diagonal in [1/2, 2))")
    return Proof(True)


def prove_block_tridiagonal(diag: Sequence[np.ndarray], sub: Sequence[np.ndarray],
                            diag_err: Sequence[float] | None = None,
                            sub_err: Sequence[float] | None = None) -> Proof:
    """Prove the symmetric block-tridiagonal matrix with diagonal blocks ``diag[i]`` (D_i) and
    sub-diagonal blocks ``sub[i]`` (C_i, the block in row i+1, column i) positive definite,
    and with it every matrix whose blocks lie within ``diag_err[i]`` / ``sub_err[i]``
    (spectral norm) of these, by the block LDLᵀ argument of the module docstring.
    """
    k = len(diag)
    if len(sub) != max(k - 1, 0):
        raise ValueError(f"{k} diagonal blocks need {max(k - 1, 0)} sub-diagonal blocks, got {len(sub)}")
    diag = [as_symmetric(d) for d in diag]
    sub = [np.asarray(c, dtype=np.float64) for c in sub]
    diag_err = [e if skew is None else round_up(e + frobenius_upper(skew), rel=4 * UNIT)
                for e, (_, skew) in zip(diag_err or [0.0] * k, diag)]
    sub_err = list(sub_err or [0.0] * (k - 1))
    for i, c in enumerate(sub):
        if c.shape != (diag[i + 1][0].shape[0], diag[i][0].shape[0]):
            raise ValueError(f"sub-diagonal block {i} has shape {c.shape}, expected "
                             f"{(diag[i + 1][0].shape[0], diag[i][0].shape[0])}")
    q = None
    for i in range(k):
        if q is None:
            a, e = diag[i][0], diag_err[i]
        else:
            a = diag[i][0] - q
            e = round_up(diag_err[i] + UNIT * frobenius_upper(a), rel=4 * UNIT)
        if i == k - 1:
            last = prove_pd(a, e)
            return last if last else Proof(False, f"pivot block {i}: {last.reason}")
        proof, q = _pivot(a, e, sub[i], sub_err[i], diag[i + 1][0])
        if not proof:
            return Proof(False, f"pivot block {i}: {proof.reason}")
    return Proof(True)


def _pivot(a: np.ndarray, a_err: float, c: np.ndarray, c_err: float, d_next: np.ndarray):
    """Prove E = [[a, cᵀ], [c, Q]] ≻ 0 for every a, c within ``a_err``, ``c_err``; return the
    proof and Q, by proving [[a − tI, cᵀ], [c, Q − c_err·I]] ≻ 0 with t = a_err + c_err.

    Q = c (a − tI − Δ)⁻¹ cᵀ + diag(η) + c_err·I. Δ anticipates the shift that the dense proof
    will take off the top-left block (at most 32N(N+1)u of each equilibrated diagonal entry,
    whose scale is ≤ 2a_jj): with Δ twice that, the shifted top-left block's Schur update is
    below the computed one, and η only pays for the bottom-right's own shift and rounding.
    """
    n = a.shape[0]
    t = round_up(a_err + c_err, rel=4 * UNIT)
    top = a - t * np.eye(n)
    size = n + c.shape[0]
    rel = 32 * size * (size + 1) * UNIT
    try:
        g = scipy.linalg.cholesky(top - np.diag(4 * rel * np.abs(np.diag(top))), lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return Proof(False, "not positive definite beyond its error bound (Cholesky failed)"), None
    y = scipy.linalg.solve_triangular(g, c.T, lower=True, check_finite=False)
    schur = y.T @ y
    schur = 0.5 * (schur + schur.T)
    base = np.abs(np.diag(schur)) + np.abs(np.diag(d_next))
    proof = Proof(False)
    for factor in (4.0, 4e2, 4e4):
        q = schur + np.diag(factor * rel * base + c_err)
        bottom = q - c_err * np.eye(c.shape[0])
        block = np.block([[top, c.T], [c, bottom]])
        proof = prove_pd(block, diag_rel=UNIT)  # its diagonal was formed with one rounding per entry
        if proof:
            return proof, q
    return proof, None


# ------------------------------------------------ banded, batched and moment proofs (conv, SeqLip)
#: Relative positive-definiteness slack demanded of every banded Cholesky proof.
MIN_SLACK = 1e-6


def banded_cholesky_slack(width: int, terms: int) -> float:
    """Relative slack ρ making a successful Cholesky of (1−ρ)θ′²I − Ĝ prove λ_max(G) < θ′².

    ``width``: entries per row of the factored matrix (2b+1 for band b; 4b+2 leaves room for
    the block algorithm's longer inner products); ``terms``:
    products per entry of the computed Gram matrix Ĝ. The budget bounds ‖ΔM‖/θ′² from the
    Cholesky backward error plus ‖Ĝ − G‖/θ′² (``lipgraph.certify.conv``'s module docstring), with a factor 8 to spare.
    """
    budget = UNIT * ((width + 2) * width + (terms + 2) * width + 4)
    return max(MIN_SLACK, 8 * budget)


def banded_cholesky_succeeds(ab: np.ndarray, shift: float) -> bool:
    """Whether a block Cholesky of shift·I − G (G in lower band storage, band b) completes.

    With blocks of size b the band matrix is block tridiagonal: L_i L_iᵀ = D_i − S_i S_iᵀ with
    S_i = B_i L_{i−1}⁻ᵀ. Torch's level-3 kernels are used rather than LAPACK ``pbtrf``, whose
    threaded small-block updates were measured 100× slower on a loaded 2-core machine.
    """
    band, n = ab.shape[0] - 1, ab.shape[1]
    size, previous = max(band, 1), None
    for start in range(0, n, size):
        stop, first = min(n, start + size), max(0, start - size)
        diff = np.arange(start, stop)[:, None] - np.arange(first, stop)[None, :]
        cols = np.broadcast_to(np.arange(first, stop), diff.shape)
        slab = -torch.as_tensor(np.where((diff >= 0) & (diff <= band), ab[diff.clip(0, band), cols], 0.0))
        block = slab[:, start - first:]
        block.diagonal().add_(shift)
        if previous is not None:
            coupling = torch.linalg.solve_triangular(previous.mT, slab[:, :start - first], upper=True, left=False)
            block = block - coupling @ coupling.mT
        previous, info = torch.linalg.cholesky_ex(block)
        if info != 0:
            return False
    return True


def batched_gram_below(G, c: float, xmax2: float, inner: int | None = None):
    """Per matrix of the batch G (N, p, p), whether λ_max(G_i) ≤ c is proven (a bool tensor).

    A successful float Cholesky of (c − δ)I − Ĝ proves λ_max(G) ≤ c when δ exceeds the error
    of Ĝ (≤ 2γ_n‖X‖_F², ‖X‖_F² ≤ ``xmax2`` for the factor X with G = XXᵀ) plus Cholesky's
    backward error (≤ γ_{p+1}·tr); δ = 1e-10·(p·c + xmax²) is far above both. Complex Hermitian
    G = XXᴴ is covered too: complex products and sums only raise γ_k by a factor below 4.

    With ``inner`` (n, the length of the products forming Ĝ) the margin is the derived one,
    δ = 8u·((n + 2)·xmax2 + (p + 2)·p·c): ‖Ĝ − G‖₂ ≤ ‖|Ĝ − G|‖₂ ≤ √2·γ_{n+2}·‖|X|‖₂² ≤
    √2·γ_{n+2}·‖X‖_F² (complex inner products, Higham §3.6), and the Cholesky backward error
    ‖ΔM‖₂ ≤ √2·γ_{p+2}·‖|R̂|‖_F² = √2·γ_{p+2}·tr(R̂ᴴR̂) ≤ √2·γ_{p+2}·p·c·(1 + γ) (Higham Thm 10.3,
    M = cI − Ĝ with its diagonal rounded once); 8u(k + 2) exceeds √2·γ_{k+2} + u fivefold.
    """
    p = G.shape[-1]
    if inner is None:
        delta = 1e-10 * (p * c + xmax2)
    else:
        delta = 8 * UNIT * ((inner + 2) * xmax2 + (p + 2) * p * c)
    _, info = torch.linalg.cholesky_ex((c - delta) * torch.eye(p, dtype=G.dtype) - G)
    return info == 0


def proven_max_eigenvalue(G, xmax2: float, inner: int, floor: float = 0.0, candidates: int = 4) -> float:
    """A number c ≥ max(``floor``, max_i λ_max(G_i)) for a batch of Gram matrices G = XXᴴ
    (N, p, p), real or complex, formed by products of length ``inner`` from factors with
    ‖X‖_F² ≤ ``xmax2``, proven by ``batched_gram_below`` with its derived margin δ, and within
    about 4δ of that maximum (raised tenfold should a proof fail above an exact eigenvalue).

    Exact eigenvalues are computed only where needed: 8 batched power steps rank the matrices,
    ``candidates`` of the highest get ``eigvalsh``, c = max(floor, those) + 4δ; every
    matrix is then proven ≤ c by one batched Cholesky, and any that fails gets ``eigvalsh`` and
    the whole batch is proven again at the raised c. Cheaper than ``eigvalsh`` on the whole batch
    (Cholesky is a few times faster than a Hermitian eigensolver); the eigenvalues only steer,
    the Cholesky proves. ∞ if proofs still fail after 8 rounds (non-finite entries).
    """
    if G.shape[0] == 0 or xmax2 == 0:  # no matrices, or only zero ones
        return floor
    p = G.shape[-1]
    unproven = torch.arange(G.shape[0])
    if floor > 0:   # a later batch of a set: most matrices proven below the floor by one Cholesky
        unproven = unproven[~_gram_below(G, unproven, floor, xmax2, inner)]
        if unproven.numel() == 0:
            return floor
    pending = unproven if unproven.numel() <= candidates else unproven[_power_ranked(G[unproven], candidates)]
    exact = torch.zeros(G.shape[0], dtype=torch.bool)
    top, room = floor, 4.0
    for _ in range(8):
        if bool(exact[pending].any()):  # a proof failed above an exact eigenvalue: more room
            room *= 10
        with one_thread():  # the threaded eigensolver thrashes on shared cores (see ``threads``)
            top = max(top, float(torch.linalg.eigvalsh(G[pending])[:, -1].max()))
        exact[pending] = True
        # δ at c ≈ 2·top (its p·c term then covers c itself), times ``room``
        c = top + room * 8 * UNIT * ((inner + 2) * xmax2 + (p + 2) * p * 2 * max(top, 0.0))
        unproven = unproven[~_gram_below(G, unproven, c, xmax2, inner)]   # proven below c' ≤ c: stays proven
        if unproven.numel() == 0:
            return c
        pending = unproven
    return math.inf


def _gram_below(G, idx, c: float, xmax2: float, inner: int):
    """``batched_gram_below`` on the matrices ``idx`` of the batch (no copy when that is all of it)."""
    return batched_gram_below(G if idx.numel() == G.shape[0] else G[idx], c, xmax2, inner)


def _power_ranked(G, k: int):
    """Indices of the ``k`` matrices of the batch with the largest Rayleigh quotient after 8
    batched power steps from the ones vector (a ranking, no claim)."""
    v = torch.ones(G.shape[:-1] + (1,), dtype=G.dtype)
    for _ in range(8):
        v = G @ v
        v = v / v.norm(dim=-2, keepdim=True).clamp_min(1e-300)
    return torch.topk((v.mH @ G @ v).real.reshape(-1), k).indices


def moment_slack(A, B, s: float, k: int) -> float:
    """Absolute rounding slack for every computed m_k: 1e-11 · s^{2k} tr((|A|ᵀ|A| |B||B|ᵀ)^k).

    Every float operation on the way (Ga, Gb, features, the matrix product) sums terms whose
    absolute values are dominated by the same polynomial evaluated with |A|, |B| and
    s = max|d_j|, so the error is at most γ_K times that value with K ≲ 4kn + #features ≪ 10⁴
    operations in a chain (γ_K ≈ K·2⁻⁵³ < 1e-12); 1e-11 leaves an order of magnitude.
    """
    Z = (A.abs().T @ A.abs()) @ (B.abs() @ B.abs().T)
    return 1e-11 * s ** (2 * k) * float(torch.linalg.matrix_power(Z, k).trace())


def pow2_normalise(a, even: bool = False):
    """(a / s, s) with s a power of two such that max|a / s| ∈ [½, 1) (∈ [¼, 1) with ``even``: s a
    power of four, so that √s is exact too): the division is exact (barring underflow of entries
    2⁵³ times below the largest, below every margin here), so a norm of a / s times s is the norm
    of a — finite matrices neither overflow nor lose precision as subnormals. s = 0 for a zero (or
    empty) array, s = ∞ (and a unchanged) when a has a non-finite entry. Multiply results back with
    ``ldexp_up`` where a product of scales may leave the normal range."""
    scale = pow2_scale(a, even)
    return (a / scale if scale not in (0.0, 1.0, math.inf) else a), scale


def pow2_scale(a, even: bool = False) -> float:
    """The s of ``pow2_normalise`` (numpy array or torch tensor), found without a copy of ``a``."""
    if (a.size if isinstance(a, np.ndarray) else a.numel()) == 0:
        return 0.0
    hi, lo = float(a.max()), float(a.min())
    if not (math.isfinite(hi) and math.isfinite(lo)):
        return math.inf
    top = max(abs(hi), abs(lo))
    if top == 0.0:
        return 0.0
    exponent = math.frexp(top)[1]
    return math.ldexp(1.0, exponent + (exponent % 2 if even else 0))


def ldexp_up(x: float, exponent: int) -> float:
    """A float64 number ≥ x·2^exponent: exact in the normal range, one ulp up where the product is
    subnormal (or underflows to 0), ∞ where it overflows."""
    with np.errstate(over="ignore", under="ignore"):
        y = float(np.ldexp(np.float64(x), exponent))
    if x > 0 and y < np.finfo(np.float64).tiny:
        y = float(np.nextafter(y, np.inf))
    return y
