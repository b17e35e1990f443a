"""The ``lower`` pass: a realised lower bound for the analysed model (design §4, Lower bounds).

The search (:func:`lipgraph.lower.search.search_lower`) runs on lipgraph's own torch execution
of the model from the analysed input to the analysed output, in float32 on the analysis device
(measured: as good as float64 and 1.5–4× faster on the bundled CNNs), with the rules' smoothed
surrogates (``Executor.model_function(smooth=t)``) for the ``smooth`` rounds. The pair it finds
is realised twice: by lipgraph in float64 and by onnxruntime in float32 on the model file
itself; the smaller ratio is reported. So the value is a ratio ‖f(x) − f(y)‖/‖x − y‖ of an
actual pair, and a true lower bound on the constant on the reported domain (R^n, or the
box of ``--input-box`` / ``--around``).

A model with a node lipgraph cannot execute (no rule) is searched by onnxruntime alone:
finite-difference Jacobians on random subspaces and simulated annealing, realised in float32
with step lengths large enough that float32 rounding is far below the reported digits
(a diagnostic says so).

Soundness guard: a lower bound above a certified upper bound (by more than 1e-6 relative) is
a bug somewhere, and is reported as an error diagnostic ``[lower-above-upper]``.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from lipgraph.errors import InputError
from lipgraph.context import Context, MethodResult, PassResult
from lipgraph.ir.differential import ort_session
from lipgraph.diagnostics import Diagnostic
from lipgraph.labels import Label
from lipgraph.lower.search import PROGRESS, LowerResult, _Domain, _realise, search_lower

#: Relative slack of the soundness guard (lower > upper · (1 + SLACK) is an error).
SLACK = 1e-6
#: Patience of a budgeted search: rounds in a row without improvement before it stops.
PATIENCE = 4
#: Search sizes (batch, steps, screen) by the model's work per evaluation (multiply-adds):
#: the full search for small nets, smaller rounds for CNNs so that a round fits a budget.
#: ImageNet-sized CNNs (≥ 2e8, e.g. ResNet-18 at 1.8e9) get one point per round: a round's
#: screening cannot be interrupted, and 64 points cost ~100 s there.
LADDER = ((2e5, (32, 100, 32)), (2e6, (16, 50, 16)), (2e8, (8, 30, 8)), (math.inf, (1, 10, 2)))


def run(ctx: Context, progress: Callable[[str], None] = lambda s: None) -> PassResult:
    """Search and realise the lower bound: method ``lower``, artefact ``lower`` (a LowerResult)."""
    opts, g = ctx.options.lower, ctx.graph
    t_start = time.perf_counter()
    shape = tuple(g.shape(g.analysed))
    data = load_data(opts.data, shape)
    notes: list[str] = []
    progress("lower: onnxruntime session and first search round")
    ort_fn = _ort_function(g, notes)
    nodes = g.nodes_between()
    missing = sorted({g.views[n].op_type for n in nodes if g.rules.get(n) is None})
    common = dict(seed=ctx.options.seed, box=ctx.box, data=data, restarts=opts.restarts)
    res = None
    if not missing:
        try:
            res, search, how = _search_torch(ctx, nodes, shape, opts, ort_fn, progress, common)
        except Exception as exc:  # noqa: BLE001 - a rule whose torch semantics fail here: onnxruntime instead
            missing = [f"the model in torch ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"]
    if res is not None:
        pass
    elif ort_fn is not None:
        notes.append(f"lower bound searched and realised by onnxruntime alone (float32, finite differences): "
                     f"lipgraph cannot execute {', '.join(missing)}")
        search = "fd-anneal"
        res = search_ort(ort_fn, shape, budget_s=opts.budget, progress=progress, **common)
        how = "realised in float32 by onnxruntime"
    else:
        notes.append(f"no lower bound: lipgraph cannot execute {', '.join(missing)} and onnxruntime cannot "
                     "evaluate the model from the analysed tensor")
    diagnostics = [Diagnostic("", "lower", n) for n in notes]
    if res is None or not math.isfinite(res.value):
        return PassResult(diagnostics=diagnostics)
    if ctx.options.verbose:
        res.chains = chain_lowers(ctx, progress)
    method = MethodResult("lower", res.value, Label.LOWER, time.perf_counter() - t_start,
                          {"seed": res.seed, "eps": res.eps, "search": search,
                           "realised": how, "rounds": res.rounds}, domain=res.domain)
    return PassResult([method], {"lower": res}, diagnostics)


# ----------------------------------------------------------------------------- the model as functions


def _search_torch(ctx, nodes, shape, opts, ort_fn, progress, common):
    """search_lower on lipgraph's execution: (LowerResult, search name, how it was realised)."""
    batch, steps, screen = _sizes(ctx.graph, nodes)
    f64, fs32, f32 = _torch_functions(ctx, nodes)
    check32 = None if ort_fn is None else _ratio(ort_fn)
    realise64 = _ratio(lambda x: f64(torch.as_tensor(x, dtype=torch.float64)).numpy())
    res = search_lower(f32, shape, f_smooth=fs32, budget_s=opts.budget, search=opts.search,
                       realise64=realise64, check32=check32, progress=progress, batch=batch, steps=steps,
                       screen=screen, patience=PATIENCE, **common)
    res, search = _pattern_pair(ctx, res, opts.search, shape, realise64, check32)
    return res, search, "realised in float64 by lipgraph" + (" and float32 by onnxruntime" if check32 else "")


def _pattern_pair(ctx, res: LowerResult, search: str, shape, realise64, check32) -> tuple[LowerResult, str]:
    """On a box, when the model is one SeqLip chain with one activation whose pattern search
    left a witness (``chains.ChainResult.witness``: a ball inside the best realisable pattern's
    region), the pair x ± (r/2)v along that pattern's top singular vector, realised like the
    search's pairs; the better of it and the search's result (and its search name)."""
    g = ctx.graph
    for chain in ctx.artefact("chains") or []:
        if chain.witness is None or chain.entry != g.analysed or chain.exit != g.output:
            continue
        x, v, r = chain.witness
        dom = _Domain(shape, ctx.box, None, torch.float64)
        value, x32, direction, eps = _realise(x.reshape(shape), v.reshape(shape), dom, (r / 2, r / 8),
                                              realise64, check32)
        if value > res.value:
            return replace(res, value=value, method="lower-pattern", x=x32, direction=direction, eps=eps), \
                "seqlip-pattern"
    return res, search


def _torch_functions(ctx, nodes):
    """(float64 f on cpu, float32 smooth surrogate, float32 f), all taking and giving float64 cpu tensors."""
    g = ctx.graph
    ex64, ex32 = ctx.exact, ctx.fast
    dev = ex32.device
    f64 = ex64.function(nodes, g.analysed, g.output)
    f32_ = ex32.function(nodes, g.analysed, g.output)

    def f32(x):
        return f32_(x.to(dev, torch.float32)).to("cpu", torch.float64)

    def fs32(x, t):
        return ex32.function(nodes, g.analysed, g.output, smooth=t)(x.to(dev, torch.float32)).to("cpu", torch.float64)

    def f64_nograd(x):
        with torch.no_grad():
            return f64(x).double()

    return f64_nograd, fs32, f32


def _sizes(g, nodes) -> tuple[int, int, int]:
    """(batch, steps, screen) from the model's multiply-adds per evaluation (deterministic),
    as each node's rule estimates them (``Rule.cost``)."""
    work = sum(g.rules[nid].cost(g.views[nid]) for nid in nodes if g.rules.get(nid) is not None)
    return next(size for limit, size in LADDER if work <= limit)


def _ratio(fn: Callable[[np.ndarray], np.ndarray]) -> Callable:
    """The ratio ‖fn(y) − fn(x)‖/‖y − x‖ of a pair of float64 arrays, computed in float64."""
    def ratio(x: np.ndarray, y: np.ndarray) -> float:
        fx, fy = (np.asarray(fn(p), dtype=np.float64) for p in (x, y))
        if not (np.all(np.isfinite(fx)) and np.all(np.isfinite(fy))):
            return -math.inf
        return float(np.linalg.norm((fy - fx).ravel()) / np.linalg.norm((y - x).ravel()))

    return ratio


def _ort_function(g, notes: list[str]):
    """x (float64 array, float32-representable) ↦ the analysed output by onnxruntime on the model
    file (the other inputs are its initializers now: ``lipgraph.ir.inputs``); None (with a note) when impossible."""
    import onnx
    if g.analysed not in g.model.inputs:
        notes.append(f"no onnxruntime check of the lower bound: the analysed tensor '{g.analysed}' is not a "
                     "graph input (a non-float input was redirected)")
        return None
    dtype = onnx.helper.tensor_dtype_to_np_dtype(g.model.elem_types.get(g.analysed, onnx.TensorProto.FLOAT))
    if dtype not in (np.float32, np.float64):
        notes.append(f"no onnxruntime check of the lower bound: input '{g.analysed}' is {np.dtype(dtype).name}")
        return None
    try:
        sess = ort_session(g.model.ort_proto, initializers=g.model.initializers)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"no onnxruntime check of the lower bound: onnxruntime cannot load the model "
                     f"({str(exc).splitlines()[0][:200]})")
        return None

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run([g.output], {g.analysed: np.asarray(x).astype(dtype)})[0]

    return run


def load_data(path: str | None, shape: tuple) -> np.ndarray | None:
    """``--data FILE.npy``: inputs of the analysed shape, one or a stack of them."""
    if path is None:
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - missing, not .npy, pickled objects
        raise InputError(f"--data {path}: cannot read a .npy array ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu" or arr.size == 0:
        raise InputError(f"--data {path}: expected a non-empty numeric array")
    arr = arr.astype(np.float64)
    inner = [shape, shape[1:] if shape and shape[0] == 1 else None]
    if not any(s is not None and (arr.shape == tuple(s) or arr.shape[1:] == tuple(s)) for s in inner):
        raise InputError(f"--data {path}: shape {list(arr.shape)} fits neither the analysed input {list(shape)} "
                         f"nor a stack of them (N, {', '.join(map(str, shape))})")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"--data {path}: contains NaN or Inf")
    return arr.reshape(-1, *shape)


# ----------------------------------------------------------------------------- onnxruntime-only search


def search_ort(fn: Callable[[np.ndarray], np.ndarray], shape, *, budget_s: float = 5.0, seed: int = 0, box=None,
               data=None, restarts: int | None = None, progress=None, batch: int = 8, steps: int = 40,
               screen: int = 8, k: int = 16, top: int = 4, patience: int = PATIENCE) -> LowerResult:
    """Lower bound for a function known only by evaluation (onnxruntime, float32).

    Energy of a point: σ_max of the finite-difference Jacobian restricted to a random
    k-dimensional subspace that always contains the best direction so far (the whole
    Jacobian when the input has ≤ k entries). Rounds: screen ``screen × batch`` random
    points, then simulated annealing from the ``batch`` steepest. The ``top`` best points
    are realised with step lengths of 10⁻¹…10⁻³ of the input's scale (float32 rounding of
    the outputs stays ≪ the ratio at these lengths). Deterministic in (fn, seed, rounds).
    """
    start = time.perf_counter()
    n = int(np.prod(shape))
    dom = _Domain(shape, box, data, torch.float64)
    size = dom.scale * math.sqrt(n)
    h = 1e-3 * size
    evals = [0]

    def f(x):
        evals[0] += 1
        return np.asarray(fn(x), dtype=np.float64).ravel()

    def energy(x, v, rng):
        """(σ, unit direction) of the FD Jacobian at x on span(v, k−1 random directions)."""
        kk = min(k, n)
        if kk == n:
            Q = np.eye(n)
        else:
            Q = np.linalg.qr(np.column_stack([v, rng.standard_normal((n, kk - 1))]))[0]
        fx = f(x)
        J = np.column_stack([(f(x + h * Q[:, j].reshape(shape)) - fx) / h for j in range(kk)])
        if not np.all(np.isfinite(J)):
            return -math.inf, v
        _, s, vt = np.linalg.svd(J, full_matrices=False)
        return float(s[0]), Q @ vt[0]

    def project(x):
        return dom.project(torch.as_tensor(x)).numpy()

    best, trace, r, stale = (-math.inf, None, None, 0.0), [], 0, 0
    while (r < restarts) if restarts else (r == 0 or (time.perf_counter() < start + budget_s and stale < patience)):
        rng = np.random.default_rng([seed, r])
        X = dom.sample(rng, screen * batch).numpy()
        cands = []
        for x in X:
            v = rng.standard_normal(n)
            s, v = energy(x, v / np.linalg.norm(v), rng)
            cands.append((s, x, v))
        cands.sort(key=lambda c: -c[0])
        chains = cands[:batch]
        bests = list(chains)
        step0 = 3.0 * dom.scale / math.sqrt(n)
        for it in range(steps):
            step = step0 * 1e-2 ** (it / max(steps - 1, 1))
            temp = 0.1 * 1e-3 ** (it / max(steps - 1, 1)) * max(c[0] for c in bests)
            for i, (s, x, v) in enumerate(chains):
                xp = project(x + step * rng.standard_normal(shape))
                sp, vp = energy(xp, v, rng)
                if sp >= s or rng.random() < math.exp(max((sp - s) / max(temp, 1e-300), -700)):
                    chains[i] = (sp, xp, vp)
                    if sp > bests[i][0]:
                        bests[i] = chains[i]
            if restarts is None and time.perf_counter() > start + budget_s:
                break
        stale += 1
        ratio = _ratio(fn)
        for s, x, v in sorted(bests, key=lambda c: -c[0])[:top]:
            cand = _realise(x, v.reshape(shape), dom, [size * 10.0 ** -e for e in (1, 2, 3)], ratio, None)
            if cand[0] > best[0]:
                if cand[0] > best[0] * (1 + PROGRESS) + 1e-300:
                    stale = 0
                best = cand
        r += 1
        trace.append((time.perf_counter() - start, best[0]))
        if progress is not None:
            progress(f"lower/fd-anneal (onnxruntime): round {r}, best {best[0]:.6g} after {trace[-1][0]:.1f} s")
    value, x, direction, eps = best
    return LowerResult(float(value), "lower-fd-anneal", seed, float(eps), x.astype(np.float32), direction,
                       time.perf_counter() - start, dom.name, evals[0], trace, r)


# ----------------------------------------------------------------------------- chains and the guard


def chain_lowers(ctx, progress) -> list[dict]:
    """A small search on every chain's subgraph (entry ↦ exit), for ``--verbose``."""
    g, out = ctx.graph, []
    chains = ctx.artefact("chains", [])
    ex64 = ctx.exact
    for c in chains:
        if any(g.rules.get(n) is None for n in c.nodes):
            continue
        f64 = ex64.function(c.nodes, c.entry, c.exit)

        def fsmooth(x, t, c=c):
            return ex64.function(c.nodes, c.entry, c.exit, smooth=t)(x)

        try:
            res = search_lower(f64, tuple(g.shape(c.entry)), f_smooth=fsmooth, restarts=1, seed=ctx.options.seed,
                               batch=8, steps=30, screen=8)
        except Exception as exc:  # noqa: BLE001 - a chain search is an extra; never fail the analysis
            progress(f"lower: chain {c.id} skipped ({exc})")
            continue
        out.append({"chain": c.id, "value": res.value, "upper": c.seqlip, "label": c.label.value})
    return out


def guard(methods, low) -> list[Diagnostic]:
    """``[lower-above-upper]`` for every certified upper bound (model or chain) that the realised
    lower bound ``low`` exceeds: a bug somewhere."""
    out = []
    for m in methods:
        if m.label.is_bound and math.isfinite(m.value) and low.value > m.value * (1 + SLACK):
            out.append(Diagnostic("", "lower-above-upper",
                                  f"realised lower bound {low.value:.9g} exceeds the {m.label.value} upper bound "
                                  f"{m.value:.9g} of {m.name}: one of them is wrong (a bug; please report it with the model)",
                                  {"lower": low.value, "upper": m.value, "method": m.name}))
    for c in low.chains or []:
        if c["label"] in ("exact", "certified", "assumed") and c["upper"] is not None and math.isfinite(c["upper"]) \
                and c["value"] > c["upper"] * (1 + SLACK):
            out.append(Diagnostic("", "lower-above-upper",
                                  f"{c['chain']}: realised lower bound {c['value']:.9g} exceeds its {c['label']} bound "
                                  f"{c['upper']:.9g} (a bug; please report it with the model)",
                                  {"lower": c["value"], "upper": c["upper"], "chain": c["chain"]}))
    return out
