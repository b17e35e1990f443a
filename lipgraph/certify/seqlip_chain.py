"""SeqLip on whole chains: decompose each map (SVD, or top-k triplets of an operator), bound
every factor with the best certified method (exact enumeration or branch and bound, relaxation,
AutoLip factor) and estimate it greedily; multiply. Graph-free: see :mod:`lipgraph.certify.seqlip`
for the factor maths and :mod:`lipgraph.certify.seqlip_bnb` for the branch and bound."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

import lipgraph.budget as budget
from lipgraph.certify.dense import materialise
from lipgraph.certify.margins import ldexp_up, pow2_normalise
from lipgraph.certify.seqlip import (_DT, BudgetExhausted, OverMemory, _box, _event, _t, _vertex_estimate,
                                     factor_bnb, factor_exact, factor_relaxation, factor_topk, topk_triplets)
from lipgraph.certify.seqlip_bnb import ENUM_MAX, factor_exact_auto
from lipgraph.certify.threads import single_threaded
from lipgraph.diagnostics import Diagnostic
from lipgraph.labels import Bound, Label, certify

#: Power steps of the randomised top-k SVD inside a chain, on k + TOPK_OVERSAMPLE columns: it
#: only guides the greedy estimate, so a rough subspace is enough (each step costs 2(k + p)
#: operator applications; measured on resnet_small's chains: SeqLip-greedy 13.18 after 4 steps,
#: 13.34 after 8, 13.44 after 20).
TOPK_ITERS = 8
TOPK_OVERSAMPLE = 10
#: Largest top-k basis (input dimension × (k + p) entries) worth computing.
TOPK_MAX_ENTRIES = 1 << 23
#: Most multiply-adds one top-k decomposition may take ((2·TOPK_ITERS + 1)·(k + p) applications
#: of the map, float32 on the analysis device: about a second per 2·10¹⁰ on a 2-core CPU): a
#: count, not seconds, so that the estimate never depends on load. A map too costly for the
#: requested k gets the largest k that fits, and none only below TOPK_MIN.
TOPK_MAX_MACS = 1e11
TOPK_MIN = 16

# ----------------------------------------------------------------------------- chains


@dataclass(frozen=True)
class OperatorMap:
    """A linear map given as a torch callable on tensors of ``in_shape``.

    ``norm_bound`` is a certified bound on its spectral norm when the engine has one
    (e.g. the DFT bound of a convolution); without it a chain containing the operator
    has no certified SeqLip value unless the map is small enough to materialise.
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    in_shape: tuple[int, ...]
    norm_bound: Bound | None = None
    adjoint: Callable[[torch.Tensor], torch.Tensor] | None = None
    cost: float | None = None  # multiply-adds of one application (the rules' ``cost``); None: as a dense matrix
    #: the same map in a faster arithmetic (e.g. float32 on the analysis device), for the top-k
    #: estimate only: (callable, dtype, device)
    fast: tuple | None = None


@dataclass(frozen=True)
class FactorReport:
    """One SeqLip factor: width n, method of the certified value, both values, seconds."""

    n: int
    method: str
    certified: float
    greedy: float
    seconds: float
    greedy_method: str = "greedy"


@dataclass
class ChainBounds:
    """SeqLip result for one chain: ``certified`` (label certified) and ``greedy`` (estimate)."""

    certified: Bound
    greedy: Bound
    factors: list[FactorReport] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)   # structured events, node ""


@dataclass
class _Svd:
    U: torch.Tensor | None  # None when only top-k triplets are known
    S: torch.Tensor
    V: torch.Tensor | None  # None when the top-k triplets were skipped (time budget)
    norm: float  # certified spectral norm (inf if unknown)
    dense: bool


def _topk_size(M: OperatorMap, n_in: int, topk: int) -> tuple[int, str]:
    """(k, note): the number of top-k triplets of ``M`` worth computing — ``topk``, or fewer so
    that the basis stays within TOPK_MAX_ENTRIES and (2·TOPK_ITERS + 1)·(k + TOPK_OVERSAMPLE)
    applications within TOPK_MAX_MACS multiply-adds; 0 (with the reason) below TOPK_MIN.
    Deterministic (no timing); it only decides how the *estimate* is made."""
    cost = M.cost
    if cost is None:
        with torch.no_grad():
            cost = float(n_in * M.fn(torch.zeros(M.in_shape, dtype=_DT)).numel())
    k_entries = TOPK_MAX_ENTRIES // max(n_in, 1) - TOPK_OVERSAMPLE
    k_macs = int(TOPK_MAX_MACS // max(cost * (2 * TOPK_ITERS + 1), 1.0)) - TOPK_OVERSAMPLE
    k = min(topk, n_in, k_entries, k_macs)
    if k >= min(TOPK_MIN, topk, n_in):
        return k, "" if k == min(topk, n_in) else f" (k reduced from {topk} to fit {TOPK_MAX_MACS:.3g} multiply-adds " \
            f"and {TOPK_MAX_ENTRIES} basis entries)"
    why = f"{n_in}×{TOPK_MIN + TOPK_OVERSAMPLE} basis entries > {TOPK_MAX_ENTRIES}" if k_entries < k_macs else \
        f"{cost * (TOPK_MIN + TOPK_OVERSAMPLE) * (2 * TOPK_ITERS + 1):.3g} multiply-adds > {TOPK_MAX_MACS:.3g} even at k = {TOPK_MIN}"
    return 0, why


def _decompose(M, *, topk: int, seed: int, dense_max: int, diags: list[str], idx: int) -> _Svd:
    if isinstance(M, OperatorMap):
        n_in = int(np.prod(M.in_shape))
        fn, dtype, device = M.fast if M.fast is not None else (M.fn, _DT, "cpu")
        with torch.no_grad():   # in the faster arithmetic: a float64 run would convert every weight of the map
            n_out = fn(torch.zeros(M.in_shape, dtype=dtype, device=device)).numel()
        if n_in <= dense_max and budget.fits(8 * 3 * n_in * n_out, f"materialising map {idx + 1} ({n_out}×{n_in})",
                                             "top-k triplets instead"):
            M = torch.from_numpy(materialise(M.fn, M.in_shape))
            diags.append(_event("seqlip-factor", f"map {idx + 1}: operator materialised ({tuple(M.shape)})", map=idx + 1))
        else:
            nb = M.norm_bound
            norm = nb.value if nb is not None and nb.label.is_bound else math.inf
            k, why = _topk_size(M, n_in, topk)
            if not k:
                diags.append(_event("seqlip-factor", f"map {idx + 1}: top-k skipped, {why} (the greedy estimate uses the AutoLip factor)", map=idx + 1))
                return _Svd(torch.empty((n_out, 0), dtype=_DT), torch.empty(0, dtype=_DT), None, norm, False)
            U, S, V = (t.to("cpu", _DT) for t in topk_triplets(fn, M.in_shape, k, adjoint=M.adjoint, seed=seed, iters=TOPK_ITERS,
                                                                oversample=TOPK_OVERSAMPLE, dtype=dtype, device=device))
            diags.append(_event("seqlip-factor", f"map {idx + 1}: top-{S.numel()} triplets by block power iteration "
                                f"({TOPK_ITERS} steps on {S.numel() + TOPK_OVERSAMPLE} columns, {dtype}, {device}){why}"
                                + ("" if math.isfinite(norm) else ", no certified norm"), map=idx + 1, k=int(S.numel())))
            return _Svd(U, S, V, norm, False)
    M = _t(M)
    if M.ndim != 2:
        raise ValueError(f"map {idx + 1}: dense maps must be 2-D matrices, got {tuple(M.shape)}")
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    return _Svd(U, S, Vh.T, float(S[0]) if S.numel() else 0.0, True)


def seqlip_factors(maps) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The SeqLip factor matrices ``(A_i, B_i) = (Σ̃_{i+1}V_{i+1}ᵀ, U_iΣ̃_i)`` of dense maps."""
    svds = [_decompose(M, topk=0, seed=0, dense_max=0, diags=[], idx=i) for i, M in enumerate(maps)]
    K = len(svds)
    out = []
    for i in range(K - 1):
        s_in = svds[i].S if i == 0 else svds[i].S.sqrt()
        s_out = svds[i + 1].S if i + 1 == K - 1 else svds[i + 1].S.sqrt()
        out.append((s_out[:, None] * svds[i + 1].V.T, svds[i].U * s_in[None, :]))
    return out


@single_threaded
def seqlip_chain(maps, slopes, *, exact_max: int = 20, time_budget: float | None = None,
                 topk: int = 200, seed: int = 0, progress: Callable[[str], None] | None = None,
                 bnb_max: int = 64, bnb_nodes: int = 1 << 11, dense_max: int = 4096,
                 greedy_max: int = 1 << 18, patterns=None) -> ChainBounds:
    """SeqLip bounds for ``M_K ∘ ρ_{K−1} ∘ … ∘ ρ_1 ∘ M_1``.

    ``maps``: K dense matrices (out × in) or :class:`OperatorMap`; ``slopes``: K−1 pairs
    ``(lo, hi)`` (scalars or per-neuron arrays; any box ``lo ≤ hi``, negative slopes included).
    Per factor the certified value is the smallest of: the exact maximum
    (:func:`lipgraph.certify.seqlip_bnb.factor_exact_auto`: vertex enumeration up to
    ``min(exact_max, ENUM_MAX)``, else Lagrangian branch and bound while n ≤ ``bnb_max``, whose
    anytime bound counts when it stops early), :func:`factor_relaxation`, and the AutoLip factor
    ``max|slope|·‖Σ̃_{i+1}‖‖Σ̃_i‖`` — so the product is never above AutoLip's
    ``Π‖M_i‖·max|slope_i|``. ``certified`` multiplies the per-factor values (label
    ``certified``; ∞ when an operator has no certified norm). ``greedy`` multiplies vertex
    estimates: the paper's coordinate greedy when ``n·p·q ≤ greedy_max``, else
    :func:`factor_ascent`; top-k truncations for operator maps (label ``estimate``).

    ``patterns``: per activation, None or a realisability oracle of its activation patterns on
    an input box (:class:`lipgraph.certify.patterns.SignPatterns`); a dense factor with one is
    maximised by branch and bound over the realisable vertices only (n ≤ ``bnb_max``; method
    ``exact-bnb-patterns`` when finished) — still a bound on every Jacobian the box realises.

    Determinism: branch and bound is limited to ``n·bnb_nodes`` node evaluations (scaled down
    by ``(64/(p+q))³`` for factors with p + q > 64, at least 256) and enumeration by
    ``exact_max``, never by seconds, so the certified value depends only on the inputs and the options.
    ``time_budget`` (seconds for the whole chain) is an outer safety net only: when it fires,
    the remaining exact work falls back to certified relaxations and a diagnostic containing
    "time budget exhausted" says that the result may depend on machine load.
    """
    t0 = time.perf_counter()
    deadline = None if time_budget is None else t0 + time_budget
    diags: list[str] = []
    K = len(maps)
    if K == 0:
        raise ValueError("empty chain")
    if len(slopes) != K - 1 or (patterns is not None and len(patterns) != K - 1):
        raise ValueError(f"{K} maps need {K - 1} slope boxes (and pattern oracles if any), got {len(slopes)}")
    # SeqLip is homogeneous in each map: dense maps are scaled by powers of four (exact, and exact
    # square roots for the Σ^{1/2} of middle maps) so that huge and subnormal weights stay exact
    scaled = [(M, 1.0) if isinstance(M, OperatorMap) else pow2_normalise(_t(M), even=True) for M in maps]
    scales = [c for _, c in scaled]
    if math.inf in scales:
        diags.append(_event("overflow", "a map of the chain is not finite in float64 (huge weights): no SeqLip bound"))
        return ChainBounds(Bound(math.inf, Label.CERTIFIED, "overflow"), Bound(math.inf, Label.ESTIMATE, "overflow"),
                           [], diags)
    if 0.0 in scales:
        return ChainBounds(Bound(0.0, Label.EXACT, "zero"), Bound(0.0, Label.EXACT, "zero"), [], diags)
    maps, exps = [M for M, _ in scaled], [math.frexp(c)[1] - 1 for c in scales]
    svds = [_decompose(M, topk=topk, seed=seed, dense_max=dense_max, diags=diags, idx=i)
            for i, M in enumerate(maps)]
    if K == 1:
        v = ldexp_up(svds[0].norm, exps[0])
        cert = Bound(certify(v), Label.CERTIFIED, "svd") if svds[0].dense else (
            Bound(v, Label.CERTIFIED, "norm-bound") if math.isfinite(v) else
            Bound(math.inf, Label.CERTIFIED, "none"))
        est = Bound(ldexp_up(float(svds[0].S[0]), exps[0]) if svds[0].S.numel() else v, Label.ESTIMATE, "svd")
        return ChainBounds(cert, est, [], diags)

    reports: list[FactorReport] = []
    cert_prod, greedy_prod = 1.0, 1.0
    for i in range(K - 1):
        budget.check()
        ts = time.perf_counter()
        prev, nxt = svds[i], svds[i + 1]
        first, last = i == 0, i + 1 == K - 1
        n = int(prev.U.shape[0])
        lo, hi = _box(slopes[i][0], slopes[i][1], n)
        smax = float(torch.maximum(lo.abs(), hi.abs()).max()) if n else 0.0
        norm_in = prev.norm if first else math.sqrt(prev.norm)
        norm_out = nxt.norm if last else math.sqrt(nxt.norm)
        cap = certify(smax * norm_in * norm_out)
        if prev.V is None or nxt.V is None:  # top-k skipped (budget): estimate = AutoLip factor
            g, cval, method = Bound(cap, Label.ESTIMATE, "autolip-factor"), cap, "autolip-factor"
        elif not (prev.dense and nxt.dense):
            g = factor_topk((prev.U, prev.S, prev.V), (nxt.U, nxt.S, nxt.V), lo, hi,
                            first=first, last=last, seed=seed, greedy_max=greedy_max)
            cval, method = cap, "autolip-factor"
            diags.append(_event("seqlip-factor", f"factor {i + 1}: n={n}, operator map: top-k "
                                f"{g.method.split('-')[-1]} estimate, certified by the AutoLip factor", factor=i + 1, n=n))
        else:
            s_in = prev.S if first else prev.S.sqrt()
            s_out = nxt.S if last else nxt.S.sqrt()
            A = s_out[:, None] * nxt.V.T
            B = prev.U * s_in[None, :]
            g = _vertex_estimate(A, B, lo, hi, seed=seed, greedy_max=greedy_max)
            oracle = patterns[i] if patterns else None
            cval, method = _certified_factor(A, B, lo, hi, n, i, g.value, exact_max, bnb_max,
                                             bnb_nodes, deadline, progress, diags, oracle)
            if cap < cval:
                cval, method = cap, "autolip-factor"
        # back to the maps' own scale: 2^(e_i + e_{i+1}), halved for the middle maps (even exponents)
        shift = (exps[i] if first else exps[i] // 2) + (exps[i + 1] if last else exps[i + 1] // 2)
        cval, g = ldexp_up(cval, shift), dataclasses.replace(g, value=ldexp_up(g.value, shift))
        cert_prod *= cval
        greedy_prod *= g.value
        reports.append(FactorReport(n, method, cval, g.value, time.perf_counter() - ts, g.method))
    methods = sorted({r.method for r in reports})
    cert = Bound(certify(cert_prod, 1e-15 * K), Label.CERTIFIED, "seqlip[" + ",".join(methods) + "]")
    est = Bound(greedy_prod, Label.ESTIMATE, "seqlip-greedy")
    return ChainBounds(cert, est, reports, diags)


def _certified_factor(A, B, lo, hi, n, i, incumbent, exact_max, bnb_max, bnb_nodes, deadline,
                      progress, diags, oracle=None) -> tuple[float, str]:
    """Certified value of one dense factor and the method that produced it (deterministic
    unless the outer ``deadline`` fires, which is reported). With a realisability ``oracle``
    the greedy ``incumbent`` (maybe an unrealisable vertex) is not used."""
    def left():
        return None if deadline is None else max(0.0, deadline - time.perf_counter())

    def fired():
        return deadline is not None and time.perf_counter() >= deadline

    relax = factor_relaxation(A, B, lo, hi)
    if n > bnb_max:   # enumeration (n ≤ exact_max) takes no oracle
        oracle = None
    if n > bnb_max and n > exact_max:
        diags.append(_event("seqlip-factor", f"factor {i + 1}: n={n} > exact_max={exact_max}, used relaxation",
                            factor=i + 1, n=n))
        return relax.value, relax.method
    if fired():
        diags.append(_event("seqlip-budget", f"factor {i + 1}: n={n}: time budget exhausted before the exact search; "
                            "certified relaxation used (result depends on machine load)", factor=i + 1, n=n))
        return relax.value, relax.method
    # enumeration up to min(exact_max, ENUM_MAX) (the measured crossover), branch and bound
    # beyond; its node budget decides, the deadline only guards against a runaway
    p, q = A.shape[0], B.shape[1]
    try:
        b, done = factor_exact_auto(A, B, lo, hi, enum_max=exact_max if n > bnb_max else min(exact_max, ENUM_MAX),
                                    max_nodes=max(256, n * bnb_nodes * 64 ** 3 // max(64, p + q) ** 3),
                                    time_budget=left(), incumbent=None if oracle else incumbent,
                                    progress=progress, oracle=oracle)
    except OverMemory:   # the memory guard's note says so
        return relax.value, relax.method
    except BudgetExhausted:
        diags.append(_event("seqlip-budget", f"factor {i + 1}: n={n}: time budget exhausted during enumeration; "
                            "certified relaxation used (result depends on machine load)", factor=i + 1, n=n))
        return relax.value, relax.method
    if oracle is not None:
        diags.append(_event("seqlip-factor", f"factor {i + 1}: n={n}: vertices restricted to the activation "
                            f"patterns the box realises ({oracle.lps} linear programs"
                            + (", the limit: later patterns admitted unchecked)" if oracle.exhausted else ")"),
                            factor=i + 1, n=n))
        b = Bound(b.value, b.label, b.method + "-patterns")
    if done:
        return b.value, b.method
    gap = b.value / incumbent - 1 if incumbent else math.inf
    diags.append(_event("seqlip-budget" if fired() else "seqlip-factor",
                        f"factor {i + 1}: n={n}: " + ("time budget exhausted during branch and bound (result "
                        "depends on machine load)" if fired() else "branch-and-bound node budget spent")
                        + f", certified gap bound/greedy {gap:.2e}", factor=i + 1, n=n, gap=gap))
    return (b.value, b.method) if b.value < relax.value else (relax.value, relax.method)


def time_exact_factor(n: int, seed: int = 0, *, p: int | None = None, q: int | None = None,
                      method: str = "enumeration") -> tuple[float, float]:
    """Seconds for one exact SeqLip factor of width n (ReLU box) and its value.

    The factor is that of a random Gaussian chain ``q → n → p`` (defaults p = q = n, the
    hardest shape): ``A = Σ₂V₂ᵀ`` (p×n), ``B = U₁Σ₁`` (n×q). ``method``: ``"enumeration"``
    (:func:`factor_exact`) or ``"bnb"`` (:func:`factor_bnb` without limits).
    """
    rng = np.random.default_rng(seed)
    p = n if p is None else p
    q = n if q is None else q
    (A, B), = seqlip_factors([rng.standard_normal((n, q)), rng.standard_normal((p, n))])
    t = time.perf_counter()
    if method == "bnb":
        b, done = factor_bnb(A, B, 0.0, 1.0, time_budget=None, max_nodes=1 << 40)
        assert done
        v = b.value
    else:
        v = factor_exact(A, B, 0.0, 1.0).value
    return time.perf_counter() - t, v
