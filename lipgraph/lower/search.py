"""Realised lower bounds on the Lipschitz constant: search for a steep spot, then show a pair.

Guaranteed: ``search_lower(...).value`` is ``‖f(y) − f(x)‖ / ‖y − x‖`` for the actual pair
``x = result.x``, ``y = x + result.eps · result.direction`` (both float32-representable, both
inside ``box`` when one is given), evaluated in float64 (and in float32 by ``check32`` when
given, keeping the smaller). Any such ratio is ≤ the Lipschitz constant of ``f`` on
``result.domain``, so the value is a true lower bound — up to the float64 rounding of two
forward passes, relative error ~1e-12 for the ε chosen here.

Not guaranteed: how close the value is to the constant. The search is a heuristic; the
power-iteration σ_max(J(x)) that guides it is an estimate and is never reported.

Searches (``search=``), all batched over ``batch`` starting points and restarted in rounds:

``smooth``   gradient ascent on σ_max(J_t(x)) of the surrogate ``f_smooth(x, t)`` with the
             temperature annealed geometrically from ``t0`` to ``t1``; the true network is
             measured at checkpoints. Needs ``f_smooth``.
``ratio``    gradient ascent, jointly in x and the direction v, on the finite-difference
             ratio ‖f(x+εv) − f(x)‖/ε with ε annealed from large to small; works on
             piecewise-linear networks directly, because a finite ε sees the next region.
``jacobian`` gradient ascent on σ_max(J(x)) of the true network. On piecewise-linear
             networks J is piecewise constant, its gradient is zero, and this stalls at the
             starting points: it is kept as the baseline that shows it.
``anneal``   simulated annealing on x with energy σ_max(J(x)) (the seed paper's method):
             Gaussian proposals with a shrinking step, Metropolis acceptance with a cooling
             temperature.
``sample``   σ_max(J(x)) at random inputs only.
``auto``     rounds alternate ``smooth`` and ``anneal`` when ``f_smooth`` is given, else
             ``anneal`` and ``ratio``; the method of the round that won is reported.

Every round first screens SCREEN × batch random points and starts from the steepest
``batch`` of them, so each search is at least as good as that much sampling.

Measured (2 CPU cores shared with other jobs, one torch thread, float64, seed 0; the nets
are built in tests/test_lower.py):

    net                               budget  smooth  ratio   jacobian anneal  sample  auto
    784-50-10 ReLU, N(0,1/fan_in)     3 s     1.4930  1.4719  1.4395   1.4473  1.4441  1.4913
      (best of 3000 random inputs: 1.4186; product of spectral norms: 1.7508;
       smooth reaches 1.4882 after its first round, 0.3 s)
    4-d bump, L = 20.5183 in an ℓ1    5 s     20.5183 1.0     —        1.0     1.0     20.5183
      ball of radius 0.05 (tests)             (found in the first round, 0.25 s)
    24 random small MLPs (ReLU, Leaky, 0.3 s  0.996   —       —        1.019   —       1.016
      Tanh; widths ≤ 32): mean of value /     (min    0.66             0.94            0.80)
      best of 1e5 random inputs

``smooth`` wins where it matters (wide inputs, steep spots in small regions); ``anneal``
is a little better on tiny low-dimensional nets, where the annealed surrogate can settle in
a wide region and miss a thin steeper one; ``jacobian`` stalls at its screened starts, as
expected. ``auto`` therefore alternates rounds of ``smooth`` and ``anneal``.

Reproducibility: round r draws from ``numpy.random.default_rng([seed, r])`` and never reads
the clock except to stop, so with ``restarts=R`` the result depends only on (f, seed, R).
With a time budget only, the number of rounds that fit can vary from run to run; the
reported pair itself is always recorded and can be re-evaluated.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.fx.experimental.symbolic_shapes  # noqa: F401 - autograd.grad imports it lazily (~1 s) on first use; pay it here, not from the budget
import lipgraph.budget as budget
from torch.func import vmap

from lipgraph.options import WHOLE_SPACE, box_name

RATIO_EPS = (1.0, 0.1)  # ε from 1 to 0.1 × the typical ‖x‖, measured best on 784-50-10
RATIO_LR = 0.2
SCREEN = 32  # each round starts from the steepest 1/SCREEN of its random points
PROGRESS = 1e-3  # a round that raises the best by less than this (relative) counts as stale for ``patience``
SEARCHES = ("auto", "smooth", "ratio", "jacobian", "anneal", "sample")


@dataclass
class LowerResult:
    """A realised lower bound: ``value`` = ‖f(x + eps·direction) − f(x)‖ / ‖eps·direction‖."""

    value: float
    method: str
    seed: int
    eps: float
    x: np.ndarray
    direction: np.ndarray
    seconds: float
    domain: str
    evaluations: int
    trace: list = field(default_factory=list)  # (seconds, best realised value so far)
    rounds: int = 0
    chains: list | None = None  # per-chain lower bounds ({"chain", "value", "upper", "label"}), when searched

    @property
    def y(self) -> np.ndarray:
        """The second point of the realising pair."""
        return (self.x.astype(np.float64) + self.eps * self.direction).astype(np.float32)


# ----------------------------------------------------------------------------- batching


class _Counter:
    """Counts batched forward evaluations (one per input point)."""

    def __init__(self) -> None:
        self.n = 0


def _vmappable(f: Callable, shape: tuple, dtype: torch.dtype) -> bool:
    """Whether ``vmap(f)`` runs (every op has a batching rule)."""
    try:
        vmap(f)(torch.zeros((2, *shape), dtype=dtype))
        return True
    except Exception:  # noqa: BLE001 - any failure means: loop instead
        return False


def _batched(f: Callable, use_vmap: bool, counter: _Counter) -> Callable:
    """``F(X)`` for a batch ``X`` of shape (B, *shape): ``vmap(f)``, or a loop over samples."""
    def F(X):
        counter.n += X.shape[0]
        if use_vmap:
            return vmap(f)(X)
        return torch.stack([f(x) for x in X])

    return F


def _norms(T: torch.Tensor) -> torch.Tensor:
    """Per-sample ℓ2 norms of a batch, shape (B, 1, ..., 1) for broadcasting."""
    n = T.flatten(1).norm(dim=1)
    return n.reshape(-1, *([1] * (T.dim() - 1)))


def _unit(T: torch.Tensor) -> torch.Tensor:
    return T / _norms(T).clamp_min(1e-300)


# ----------------------------------------------------------------------------- σ_max(J)


class _Linearised:
    """J(X) and Jᵀ(X) of a batched F at X by reverse mode only (jvp = vjp of the vjp).

    Forward-mode AD is avoided on purpose: its first use in a process compiles
    decompositions for about a second, which is most of a small budget.
    """

    def __init__(self, F: Callable, X: torch.Tensor, differentiable: bool = False):
        self.X = X.detach().requires_grad_()
        self.Y = F(self.X)
        self.w = torch.zeros_like(self.Y, requires_grad=True)
        (self.g,) = torch.autograd.grad(self.Y, self.X, self.w, create_graph=True)
        self.differentiable = differentiable

    def jvp(self, V: torch.Tensor) -> torch.Tensor:
        (JV,) = torch.autograd.grad(self.g, self.w, V, retain_graph=True, create_graph=self.differentiable)
        return JV

    def vjp(self, U: torch.Tensor) -> torch.Tensor:
        (JtU,) = torch.autograd.grad(self.Y, self.X, U, retain_graph=True)
        return JtU


def _power(F: Callable, X: torch.Tensor, V: torch.Tensor, iters: int):
    """Per-sample top singular triplet of J(X) by power iteration warm-started at ``V``.

    Returns (σ (B,), U (B, *out) unit, V (B, *in) unit). σ is an estimate from below.
    """
    lin, V = _Linearised(F, X), _unit(V)
    for _ in range(iters):
        U = _unit(lin.jvp(V))
        JtU = lin.vjp(U)
        sigma = JtU.flatten(1).norm(dim=1)
        V = _unit(JtU)
    return sigma.detach(), U.detach(), V.detach()


def _sigma_grad(F: Callable, X: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """∇_X Σ_b ⟨U_b, J(X_b) V_b⟩, which is ∇σ_max at converged singular vectors."""
    lin = _Linearised(F, X, differentiable=True)
    out = (U * lin.jvp(V)).sum()
    if not out.requires_grad:  # J does not depend on X (an affine network): nothing to climb
        return torch.zeros_like(X)
    (g,) = torch.autograd.grad(out, lin.X, allow_unused=True)
    return torch.zeros_like(X) if g is None else g


# ----------------------------------------------------------------------------- domain


class _Domain:
    """R^n or a box; draws starting points and projects onto the domain."""

    def __init__(self, shape, box, data, dtype):
        self.shape, self.dtype = tuple(shape), dtype
        self.lo = self.hi = None
        if box is not None:
            self.lo = torch.as_tensor(np.broadcast_to(np.asarray(box[0], float), shape).copy(), dtype=dtype)
            self.hi = torch.as_tensor(np.broadcast_to(np.asarray(box[1], float), shape).copy(), dtype=dtype)
            if bool((self.lo > self.hi).any()) or not bool((self.lo < self.hi).any()):
                raise ValueError("box needs lo ≤ hi in every coordinate and lo < hi in one")
        self.data = None if data is None else np.asarray(data, float).reshape(-1, *self.shape)

    @property
    def name(self) -> str:
        return WHOLE_SPACE if self.lo is None else box_name(self.lo.numpy(), self.hi.numpy())

    @property
    def scale(self) -> float:
        """Typical coordinate spread of starting points (step sizes are relative to it)."""
        if self.lo is not None:
            return float((self.hi - self.lo).mean()) / 2
        if self.data is not None:
            return max(float(self.data.std()), 1e-6)
        return 1.0

    def sample(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        if self.data is not None:
            X = torch.as_tensor(self.data[rng.integers(0, len(self.data), n)], dtype=self.dtype)
            if len(self.data) < n:  # jitter repeated rows so the starts differ
                X = X + 0.01 * self.scale * self.gauss(rng, n)
        elif self.lo is not None:
            u = torch.as_tensor(rng.random((n, *self.shape)), dtype=self.dtype)
            X = self.lo + u * (self.hi - self.lo)
        else:
            X = self.gauss(rng, n)
        return self.project(X)

    def gauss(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        return torch.as_tensor(rng.standard_normal((n, *self.shape)), dtype=self.dtype)

    def project(self, X: torch.Tensor) -> torch.Tensor:
        if self.lo is None:
            return X
        return torch.maximum(torch.minimum(X, self.hi), self.lo)

    def float32_point(self, X: torch.Tensor) -> np.ndarray:
        """X projected into the domain and rounded to float32 without leaving it: the box
        ends are rounded inwards to float32 first (float64 array of float32 values)."""
        x = self.project(X).numpy().astype(np.float32)
        if self.lo is not None:
            lo, hi = self.lo.numpy(), self.hi.numpy()
            lo32 = np.where(lo.astype(np.float32) < lo, np.nextafter(lo.astype(np.float32), np.float32(np.inf)),
                            lo.astype(np.float32))
            hi32 = np.where(hi.astype(np.float32) > hi, np.nextafter(hi.astype(np.float32), np.float32(-np.inf)),
                            hi.astype(np.float32))
            x = np.clip(x, lo32, hi32)
        return x.astype(np.float64)


# ----------------------------------------------------------------------------- realisation


def _default_ratio(f: Callable) -> Callable:
    def ratio(x: np.ndarray, y: np.ndarray) -> float:
        with torch.no_grad():
            fx = f(torch.as_tensor(x, dtype=torch.float64)).double()
            fy = f(torch.as_tensor(y, dtype=torch.float64)).double()
        return float((fy - fx).norm() / np.linalg.norm((y - x).ravel()))

    return ratio


def _realise(x, v, dom: _Domain, eps_list, realise64, check32):
    """Best realised ratio over ε in ``eps_list`` and ±v: (value, x, direction, eps).

    The pair is rounded to float32 first so that the float64 and float32 evaluations see
    the same two points; ``direction`` is then (y − x)/‖y − x‖ exactly as realised.
    """
    x32 = dom.float32_point(torch.as_tensor(x, dtype=dom.dtype))
    best = (-math.inf, x32, np.zeros_like(x32), 0.0)
    for eps in eps_list:
        for sign in (1.0, -1.0):
            y = dom.float32_point(torch.as_tensor(x32 + sign * eps * v, dtype=dom.dtype))
            d = float(np.linalg.norm((y - x32).ravel()))
            if d == 0.0:
                continue
            r = realise64(x32, y)
            if check32 is not None:
                r = min(r, check32(x32, y))
            if math.isfinite(r) and r > best[0]:
                best = (r, x32, (y - x32) / d, d)
    return best


# ----------------------------------------------------------------------------- searches


@dataclass
class _Ctx:
    F: Callable
    Fs: Callable | None
    dom: _Domain
    batch: int
    steps: int
    deadline: float | None
    screen: int
    t0: float
    t1: float
    lr: float

    def out_of_time(self) -> bool:
        return budget.expired() or self.deadline is not None and time.perf_counter() > self.deadline


class _Adam:
    """Elementwise Adam ascent on tensors (torch.optim would import dynamo: seconds of start-up)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-12):
        self.params, self.lr, self.betas, self.eps, self.k = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def ascend(self, grads) -> None:
        self.k += 1
        b1, b2 = self.betas
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            mhat, vhat = m / (1 - b1 ** self.k), v / (1 - b2 ** self.k)
            p.add_(self.lr * mhat / (vhat.sqrt() + self.eps))


def _geom(a: float, b: float, i: int, n: int) -> float:
    return a * (b / a) ** (i / max(n - 1, 1))


def _round_sample(ctx: _Ctx, rng, n: int | None = None) -> tuple:
    """σ_max(J) at ``n`` random points (default: the batch size)."""
    X = ctx.dom.sample(rng, n or ctx.batch)
    s, _, V = _power(ctx.F, X, ctx.dom.gauss(rng, len(X)), 8)
    return X, V, s


def _starts(ctx: _Ctx, rng) -> tuple:
    """The ``batch`` steepest of ``SCREEN × batch`` random points: (X, V, σ)."""
    X, V, s = _round_sample(ctx, rng, ctx.screen * ctx.batch)
    keep = torch.argsort(s, descending=True)[: ctx.batch]
    return X[keep], V[keep], s[keep]


def _ascend(ctx: _Ctx, rng, grad_of) -> tuple:
    """Adam ascent on x; ``grad_of(X, V, step)`` returns (grad, new V)."""
    X, V, best_s = _starts(ctx, rng)
    best_X, best_V = X.clone(), V
    opt = _Adam([X], lr=ctx.lr * ctx.dom.scale)
    for step in range(ctx.steps):
        g, V = grad_of(X, V, step)
        opt.ascend([g])
        X.copy_(ctx.dom.project(X))
        if step % 10 == 9 or step == ctx.steps - 1:
            best_X, best_V, best_s = _keep_best(ctx, X.clone(), V, best_X, best_V, best_s)
        if ctx.out_of_time():
            break
    return best_X, best_V, best_s


def _keep_best(ctx, X, V, best_X, best_V, best_s):
    """Measure σ_max(J) of the true network at X; keep, per sample, the best point so far."""
    s, _, Vt = _power(ctx.F, X, V, 5)
    better = s > best_s
    m = better.reshape(-1, *([1] * (X.dim() - 1)))
    return torch.where(m, X, best_X), torch.where(m, Vt, best_V), torch.where(better, s, best_s)


def _round_smooth(ctx: _Ctx, rng) -> tuple:
    def grad_of(X, V, step):
        t = _geom(ctx.t0, ctx.t1, step, ctx.steps)
        Ft = lambda Z: ctx.Fs(Z, t)  # noqa: E731
        _, U, V = _power(Ft, X, V, 2)
        return _sigma_grad(Ft, X, U, V), V

    return _ascend(ctx, rng, grad_of)


def _round_jacobian(ctx: _Ctx, rng) -> tuple:
    def grad_of(X, V, step):
        _, U, V = _power(ctx.F, X, V, 2)
        return _sigma_grad(ctx.F, X, U, V), V

    return _ascend(ctx, rng, grad_of)


def _round_ratio(ctx: _Ctx, rng) -> tuple:
    """Joint ascent on (x, v) of log ‖F(x + εv̂) − F(x)‖/ε, ε annealed, x + εv̂ kept in the domain."""
    X, V, best_s = _starts(ctx, rng)
    best_X, best_V = X.clone(), V.clone()
    opt = _Adam([X, V], lr=RATIO_LR * ctx.dom.scale)
    size = ctx.dom.scale * math.sqrt(X[0].numel())
    eps0, eps1 = RATIO_EPS[0] * size, RATIO_EPS[1] * size
    for step in range(ctx.steps):
        eps = _geom(eps0, eps1, step, ctx.steps)
        Xg, Vg = X.clone().requires_grad_(), V.clone().requires_grad_()
        Y = ctx.dom.project(Xg + eps * _unit(Vg))
        r = _norms(ctx.F(Y) - ctx.F(Xg)).flatten() / _norms(Y - Xg).flatten().clamp_min(1e-300)
        opt.ascend(torch.autograd.grad(r.clamp_min(1e-300).log().sum(), (Xg, Vg)))
        X.copy_(ctx.dom.project(X))
        if step % 10 == 9 or step == ctx.steps - 1:
            best_X, best_V, best_s = _keep_best(ctx, X.clone(), _unit(V), best_X, best_V, best_s)
        if ctx.out_of_time():
            break
    return best_X, best_V, best_s


def _round_anneal(ctx: _Ctx, rng) -> tuple:
    """Simulated annealing on x, energy σ_max(J(x)); proposals x + step·N(0, I)."""
    X, V, s = _starts(ctx, rng)
    best_X, best_V, best_s = X, V, s
    step0 = 3.0 * ctx.dom.scale / math.sqrt(X[0].numel())  # per-coordinate; a proposal moves ~3·scale
    for k in range(ctx.steps):
        step = _geom(step0, step0 * 1e-2, k, ctx.steps)
        temp = _geom(0.1, 1e-4, k, ctx.steps) * float(best_s.max())
        Xp = ctx.dom.project(X + step * ctx.dom.gauss(rng, ctx.batch))
        sp, _, Vp = _power(ctx.F, Xp, V, 3)
        u = torch.as_tensor(rng.random(ctx.batch), dtype=s.dtype)
        accept = (sp >= s) | (u < torch.exp((sp - s) / temp))
        m = accept.reshape(-1, *([1] * (X.dim() - 1)))
        X, V, s = torch.where(m, Xp, X), torch.where(m, Vp, V), torch.where(accept, sp, s)
        better = s > best_s
        mb = better.reshape(-1, *([1] * (X.dim() - 1)))
        best_X, best_V, best_s = torch.where(mb, X, best_X), torch.where(mb, V, best_V), torch.where(better, s, best_s)
        if ctx.out_of_time():
            break
    return best_X, best_V, best_s


_ROUNDS = {"smooth": _round_smooth, "ratio": _round_ratio, "jacobian": _round_jacobian,
           "anneal": _round_anneal, "sample": _round_sample}


# ----------------------------------------------------------------------------- driver


def search_lower(
    f: Callable,
    input_shape,
    *,
    f_smooth: Callable | None = None,
    budget_s: float = 5.0,
    seed: int = 0,
    box=None,
    data=None,
    search: str = "auto",
    restarts: int | None = None,
    realise64: Callable | None = None,
    check32: Callable | None = None,
    progress: Callable[[str], None] | None = None,
    batch: int = 32,
    steps: int = 100,
    t0: float = 2.0,
    t1: float = 0.01,
    lr: float = 0.05,
    top: int = 4,
    screen: int = SCREEN,
    patience: int | None = None,
) -> LowerResult:
    """Search for a pair of inputs with a large ratio ‖f(x) − f(y)‖/‖x − y‖ and realise it.

    Guaranteed: the returned ``value`` is realised by the recorded pair (see the module
    docstring), hence a true lower bound on the Lipschitz constant of ``f`` on ``domain``
    (R^n, or ``box = (lo, hi)`` with scalar or per-coordinate bounds; both points lie in it).
    Not guaranteed: closeness to the constant.

    ``f`` maps a tensor of ``input_shape`` (float32 or float64) to a tensor; the search
    runs in float64. ``f_smooth(x, t)`` is a smoothed surrogate (ReLU → softplus with
    temperature t). Starting points are Gaussian N(0, I), uniform in ``box``, or rows of
    ``data``. Rounds of ``batch`` starts and ``steps`` steps run until ``budget_s``
    seconds have passed, or exactly ``restarts`` rounds when given (reproducible then).
    The ``top`` best points of each round are realised. ``realise64(x, y)`` and
    ``check32(x, y)`` return the ratio for a pair of float64 arrays (float32-representable);
    by default the ratio is ``f`` evaluated in float64. Each round screens ``screen × batch``
    random points first. With ``patience``, a budgeted search also stops after that many
    rounds in a row that improve the best by less than ``PROGRESS`` (relative); that is a
    round count, so the result does not depend on the clock when it stops that way.
    """
    if search not in SEARCHES:
        raise ValueError(f"unknown search {search!r}; choose from {', '.join(SEARCHES)}")
    cycle = [search]
    if search == "auto":
        cycle = ["smooth", "anneal"] if f_smooth is not None else ["anneal", "ratio"]
    if "smooth" in cycle and f_smooth is None:
        raise ValueError("search='smooth' needs f_smooth")
    start = time.perf_counter()
    shape, dtype, counter = tuple(input_shape), torch.float64, _Counter()
    dom = _Domain(shape, box, data, dtype)
    F = _batched(f, _vmappable(f, shape, dtype), counter)
    Fs = None
    if f_smooth is not None:
        smooth_vmap = _vmappable(lambda x: f_smooth(x, 1.0), shape, dtype)
        Fs = lambda X, t: _batched(lambda x: f_smooth(x, t), smooth_vmap, counter)(X)  # noqa: E731
    ctx = _Ctx(F, Fs, dom, batch, steps, None if restarts else start + budget_s, screen, t0, t1, lr)
    realise64 = realise64 or _default_ratio(f)
    best, method = (-math.inf, None, None, 0.0), cycle[0]
    trace, r, stale = [], 0, 0
    while (r < restarts) if restarts else (r == 0 or not (ctx.out_of_time() or (patience and stale >= patience))):
        rng = np.random.default_rng([seed, r])
        X, V, s = _ROUNDS[cycle[r % len(cycle)]](ctx, rng)
        stale += 1
        for i in torch.argsort(s, descending=True)[:top].tolist():
            cand = _realise(X[i].numpy(), V[i].numpy(), dom, _eps_list(X[i], dom), realise64, check32)
            if cand[0] > best[0]:
                if cand[0] > best[0] * (1 + PROGRESS) + 1e-300:
                    stale = 0
                best, method = cand, cycle[r % len(cycle)]
        r += 1
        trace.append((time.perf_counter() - start, best[0]))
        if progress is not None:
            progress(f"lower/{cycle[(r - 1) % len(cycle)]}: round {r}, best {best[0]:.6g} after {trace[-1][0]:.1f} s")
    if best[1] is None:  # no usable steep direction (e.g. a constant function): any pair realises a ratio
        x0 = X[0].numpy()
        best = _realise(x0, np.full_like(x0, 1.0 / math.sqrt(x0.size)), dom, _eps_list(X[0], dom), realise64, check32)
    value, x, direction, eps = best
    return LowerResult(float(value), f"lower-{method}", seed, float(eps), x.astype(np.float32),
                       direction, time.perf_counter() - start, dom.name, counter.n, trace, r)


def _eps_list(x: torch.Tensor, dom: _Domain) -> list:
    """Step lengths to realise with: 1e-2 … 1e-5 of the input's scale (‖x‖ or the domain's)."""
    s = max(float(x.norm()), dom.scale * math.sqrt(x.numel()), 1e-3)
    return [s * 10.0 ** -k for k in (2, 3, 4, 5)]
