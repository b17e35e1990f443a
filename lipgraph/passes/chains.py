"""Chains and SeqLip on the graph (design §4, SeqLip).

A *chain* is a maximal alternating run ``segment → ACTIVATION → segment → … → segment`` of
AutoLip units, with at least one activation, where every intermediate tensor (a segment's
exit feeding the activation, the activation's output feeding the next segment) has exactly
one consumer and is not the analysed output. Detection uses rule kinds only, so user rules
take part: any ACTIVATION rule with a usable ``slopes`` (status ``ok``) can sit inside a
chain. Chains also live inside residual branches: only the *intermediate* tensors must have
one consumer; the chain's entry and exit may fan out or feed an Add.

Slopes: ``rule.slopes(view)`` → (lo, hi), floats or arrays broadcastable to the activation's
input; they are broadcast and flattened to per-neuron arrays. :func:`seqlip_chain` handles
any box ``lo ≤ hi`` (negative slopes too: GELU, SELU, ELU with α > 1 …); a rule whose
slopes cannot be broadcast, are not finite or have ``lo > hi`` ends the chain there (the
activation stays an ordinary AutoLip unit) with a ``seqlip-slopes`` diagnostic. An
activation with an assumed or missing rule also ends the chain.

Maps: a segment whose smaller side is ≤ ``SeqLipOptions.dense_limit`` and whose in·out
entries are within ``--materialize-limit`` and ``DENSE_ENTRIES`` (2²⁰) is materialised in
float64 (its SVD is exact up to a margin); otherwise it is handed over as an :class:`OperatorMap` with the unit's
certified norm, so its factors are certified by the AutoLip factor and estimated by top-k.

Values: the chain's certified SeqLip value, capped by the chain's own AutoLip product (the
min is taken, so SeqLip never exceeds AutoLip), replaces the chain's units by one unit in
:func:`compose`; ``seqlip-greedy`` is the estimate composition (``use_estimates``) with the
chain's greedy value in place of the chain. The certified value is deterministic for a
given model and options (see :func:`seqlip_chain`); the seconds budget is only a safety net
and says so in a diagnostic when it fires.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from lipgraph.context import Context, MethodResult, PassResult
from lipgraph.diagnostics import Diagnostic
from lipgraph.labels import Bound, Label, certify, weakest
from lipgraph.options import WHOLE_SPACE
from lipgraph.certify.dense import materialise
from lipgraph.certify.patterns import SignPatterns
from lipgraph.registry import Kind
from lipgraph.passes.autolip import Unit, compose
from lipgraph.certify.seqlip_chain import OperatorMap, seqlip_chain


#: Most in·out entries of a segment materialised for SeqLip. A dense factor costs full SVDs
#: and a handful of spectral norms of its size (single-threaded, see certify.threads):
#: about a second at 1024×1024, about half a minute per chain at 2048×2048 (resnet_small),
#: so larger maps take the operator route (certified by the AutoLip factor, top-k estimate).
DENSE_ENTRIES = 1 << 20


@dataclass
class ChainResult:
    """One chain: its units, AutoLip product, SeqLip certified and greedy values."""

    units: list[Unit]
    nodes: list[str]
    entry: str
    exit: str
    autolip: float
    autolip_label: Label
    seqlip: float             # min(certified SeqLip, AutoLip product)
    greedy: float             # estimate
    label: Label              # label of ``seqlip``
    method: str               # "seqlip" or "autolip" (which one gave ``seqlip``)
    factors: list = field(default_factory=list)   # FactorReport per activation
    maps: list[str] = field(default_factory=list)  # "dense" | "operator" per segment
    seconds: float = 0.0
    matrices: list = field(default_factory=list, repr=False)  # dense maps (float64), None for operators
    slopes: list = field(default_factory=list, repr=False)    # per activation: (lo, hi) per neuron
    witness: tuple | None = field(default=None, repr=False)   # (x, direction, radius): see ChainPass.witness

    @property
    def id(self) -> str:
        return f"chain {self.units[0].id}…{self.units[-1].id}"

    def to_json(self) -> dict:
        def num(v):
            return float(v) if v is not None and math.isfinite(v) else None
        return {"id": self.id, "nodes": list(self.nodes), "entry": self.entry, "exit": self.exit,
                "autolip": num(self.autolip), "seqlip": num(self.seqlip),
                "seqlip_greedy": num(self.greedy), "label": self.label.value, "method": self.method,
                "maps": list(self.maps), "seconds": round(self.seconds, 4),
                "factors": [{"n": f.n, "method": f.method, "certified": num(f.certified),
                             "greedy": num(f.greedy), "greedy_method": f.greedy_method,
                             "seconds": round(f.seconds, 4)} for f in self.factors]}


# ----------------------------------------------------------------------------- detection


def find_chains(units: list[Unit], infos, graph, slopes_of: Callable | None = None) -> list[list[Unit]]:
    """Maximal chains over ``units`` (topological order), each a list of units
    ``[segment, activation, segment, …, segment]`` with at least one activation."""
    uses: dict[str, int] = {}
    for u in units:
        for t in u.inputs:
            uses[t] = uses.get(t, 0) + 1
    consumer: dict[str, Unit] = {}
    for u in units:
        for t in u.inputs:
            consumer[t] = u

    def single(t: str) -> Unit | None:
        """The only consumer unit of ``t``, if it has exactly one (also in the graph)."""
        if t == graph.output or uses.get(t, 0) != 1 or len(set(graph.consumers.get(t, []))) != 1:
            return None
        return consumer[t]

    def is_segment(u: Unit) -> bool:
        return u.role == "segment" and len(u.inputs) == 1 and len(u.outputs) == 1

    def is_activation(u: Unit) -> bool:
        if u.role != "node" or len(u.inputs) != 1 or len(u.outputs) != 1:
            return False
        info = infos.get(u.nodes[0])
        if info is None or info.status != "ok" or info.kind is not Kind.ACTIVATION:
            return False
        return slopes_of is None or slopes_of(u) is not None

    chains, claimed = [], set()
    for u in units:
        if u.id in claimed or not is_segment(u):
            continue
        run = [u]
        while True:
            act = single(run[-1].outputs[0])
            if act is None or not is_activation(act):
                break
            nxt = single(act.outputs[0])
            if nxt is None or not is_segment(nxt):
                break
            run += [act, nxt]
        if len(run) >= 3:
            chains.append(run)
            claimed.update(x.id for x in run)
    return chains


# ----------------------------------------------------------------------------- the pass


class ChainPass:
    """SeqLip on every chain. ``on_box``: the box's units and per-neuron slopes (artefacts
    ``units`` and ``local_slopes`` of the AutoLip pass on a domain); otherwise the global ones."""

    def __init__(self, ctx: Context, progress: Callable[[str], None] = lambda s: None, on_box: bool = True):
        self.ctx = ctx
        self.graph, self.infos = ctx.graph, ctx.infos
        boxed = on_box and ctx.artefact("local_slopes") is not None
        self.units = ctx.artefact("units") if boxed or ctx.artefact("global_units") is None else ctx.artefact("global_units")
        self.local = ctx.artefact("local_slopes", {}) if boxed else {}
        self.progress = progress
        self.opts = ctx.options.seqlip
        self.exact = ctx.exact
        self.diagnostics: list[Diagnostic] = []
        self._slopes: dict[str, tuple | None] = {}

    def slopes(self, unit: Unit):
        """Per-neuron (lo, hi) float64 arrays of an activation unit, or None (diagnosed)."""
        nid = unit.nodes[0]
        if nid in self._slopes:
            return self._slopes[nid]
        g, info = self.graph, self.infos[nid]
        shape = g.shape(unit.inputs[0])
        try:
            lo, hi = self.local[nid] if nid in self.local else info.rule.slopes(g.views[nid])
            lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), shape).reshape(-1).copy()
            hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), shape).reshape(-1).copy()
            if not (np.isfinite(lo).all() and np.isfinite(hi).all()) or (lo > hi).any():
                raise ValueError("slopes not finite or lo > hi")
            result = (lo, hi)
        except Exception as exc:  # noqa: BLE001 - a user rule's slopes we cannot use
            self.diagnostics.append(Diagnostic(nid, "seqlip-slopes", f"slope range unusable for SeqLip ({exc}); the chain ends here"))
            result = None
        self._slopes[nid] = result
        return result

    def segment_map(self, unit: Unit):
        g = self.graph
        entry, exit_ = unit.inputs[0], unit.outputs[0]
        n_in, n_out = int(np.prod(g.shape(entry))), int(np.prod(g.shape(exit_)))
        fn = self.exact.function(list(unit.nodes), entry, exit_)
        limit = self.ctx.options.norms.materialize_limit
        if min(n_in, n_out) <= self.opts.dense_limit and n_in * n_out <= min(limit, DENSE_ENTRIES):
            self.progress(f"seqlip: materialising segment {unit.id} ({n_out}×{n_in})")
            return materialise(fn, g.shape(entry), device="cpu"), "dense"
        bound = unit.bounds[0]
        cost = sum(g.rules[n].cost(g.views[n]) for n in unit.nodes if g.rules.get(n) is not None)
        fast = self.ctx.fast
        return OperatorMap(fn, tuple(g.shape(entry)), bound if bound.label.is_bound else None, cost=cost,
                           fast=(fast.function(list(unit.nodes), entry, exit_), fast.dtype, fast.device)), "operator"

    def patterns(self, run: list[Unit], first_map, kind: str) -> list | None:
        """On a box: the realisability oracle of the first activation's patterns, when that
        activation has a kink (ReLU-like) and the first segment is dense — its pre-activation is
        then ``G x + c`` exactly, with x in the box pass's range of the chain's entry."""
        ranges = self.ctx.artefact("ranges") if self.local else None
        entry, act = run[0].inputs[0], run[1].nodes[0]
        if ranges is None or kind != "dense" or entry not in ranges:
            return None
        kink = self.infos[act].rule.kink(self.graph.views[act])
        lo, hi = (np.asarray(r, dtype=np.float64).reshape(-1) for r in ranges[entry])
        if kink is None or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            return None
        shape = self.graph.shape(run[1].inputs[0])
        at, below, above = (np.broadcast_to(np.asarray(v, dtype=np.float64), shape).reshape(-1) for v in kink)
        fn = self.exact.function(list(run[0].nodes), entry, run[0].outputs[0])
        with torch.no_grad():
            c = fn(torch.zeros(self.graph.shape(entry), dtype=torch.float64)).reshape(-1).numpy()
        return [SignPatterns(first_map, c, lo, hi, at, above >= below)] + [None] * (len(run) // 2 - 1)

    def run(self) -> list[ChainResult]:
        deadline = time.perf_counter() + self.opts.budget
        results = []
        for run in find_chains(self.units, self.infos, self.graph, self.slopes):
            t0 = time.perf_counter()
            segs, acts = run[0::2], run[1::2]
            auto_bound = Bound(1.0, Label.EXACT, "product")
            for u in run:
                auto_bound = auto_bound.times(u.bounds[0])
            slope_label = weakest(*(u.bounds[0].label for u in acts))
            maps, kinds = zip(*(self.segment_map(u) for u in segs))
            boxes = [self.slopes(u) for u in acts]
            left = max(0.0, deadline - time.perf_counter())
            chain_id = f"{run[0].id}…{run[-1].id}"
            self.progress(f"seqlip: chain {chain_id} ({len(acts)} activations)")
            patterns = self.patterns(run, maps[0], kinds[0])
            res = seqlip_chain(list(maps), boxes, exact_max=self.opts.exact_max, time_budget=left,
                               topk=self.opts.topk, seed=self.ctx.options.seed, progress=self.progress,
                               dense_max=0, bnb_nodes=self.opts.bnb_nodes,
                               greedy_max=self.opts.greedy_max, patterns=patterns)
            self.diagnostics.extend(replace(d, node=run[0].nodes[0], message=f"chain {chain_id}: {d.message}")
                                    for d in res.diagnostics)
            cert = res.certified.value
            fixed = _fixed_chain_norm(maps, kinds, boxes)
            if fixed is not None and fixed < cert:
                cert = fixed
                self.diagnostics.append(Diagnostic(run[0].nodes[0], "seqlip-factor", f"chain {chain_id}: every "
                                                   "activation has one slope per neuron on the box: the chain is linear "
                                                   "there, its norm certified by SVD"))
            if math.isfinite(cert) and cert <= auto_bound.value:
                value, method = cert, "seqlip"
                label = weakest(Label.CERTIFIED, slope_label,
                                *(u.bounds[0].label for u, k in zip(segs, kinds) if k == "operator"))
            else:
                value, method, label = auto_bound.value, "autolip", auto_bound.label
            greedy = min(res.greedy.value, value) if math.isfinite(res.greedy.value) else value
            results.append(ChainResult(
                units=run, nodes=[n for u in run for n in u.nodes], entry=run[0].inputs[0],
                exit=run[-1].outputs[0], autolip=auto_bound.value, autolip_label=auto_bound.label,
                seqlip=value, greedy=greedy, label=label, method=method, factors=res.factors,
                maps=list(kinds), seconds=time.perf_counter() - t0,
                matrices=[m if k == "dense" else None for m, k in zip(maps, kinds)], slopes=boxes,
                witness=_witness(patterns, maps, kinds, boxes)))
        return results


def _witness(patterns, maps, kinds, boxes) -> tuple | None:
    """For a dense chain with one activation whose pattern search ran: (x, v, r) with the ball of
    radius r around the chain input x inside the box and inside the region of the best pattern
    found, and v the top right singular vector of that pattern's Jacobian M₂DM₁ — a pair
    x ± (r/2)v realises the pattern's norm (the lower pass tries it). None otherwise."""
    if not patterns or patterns[0] is None or patterns[0].best is None or len(maps) != 2 or kinds != ("dense", "dense"):
        return None
    oracle, (lo, hi) = patterns[0], boxes[0]
    sides = oracle.best[1]
    inside = oracle.interior(sides)
    if inside is None:
        return None
    d = np.where(sides < 0, lo, hi)
    _, _, vt = np.linalg.svd(maps[1] @ (d[:, None] * maps[0]))
    return inside[0], vt[0], inside[1]


def _fixed_chain_norm(maps, kinds, boxes) -> float | None:
    """When every neuron's slope range is a point (stable ReLUs on a small box) and every map is
    dense, the chain is the linear map M_K D_{K−1} … D_1 M_1 on the box: its σ_max in float64,
    rounded up (``certify``) — the exact local constant. None otherwise."""
    if any(k != "dense" for k in kinds) or any(not np.array_equal(lo, hi) for lo, hi in boxes):
        return None
    prod = np.asarray(maps[0], dtype=np.float64)
    for (d, _), m in zip(boxes, maps[1:]):
        prod = np.asarray(m, dtype=np.float64) @ (d[:, None] * prod)
    return certify(float(np.linalg.norm(prod, 2))) if prod.size else 0.0


def replaced_units(units: list[Unit], chains: list[ChainResult], bound_of=None) -> list[Unit]:
    """``units`` with each chain's units replaced by one unit (at the chain's last position)
    whose bound is ``bound_of(chain)`` (default: its SeqLip value) and whose estimate is its
    greedy value."""
    member = {u.id: c for c in chains for u in c.units}
    out = []
    for u in units:
        c = member.get(u.id)
        if c is None:
            out.append(u)
        elif u is c.units[-1]:
            bound = bound_of(c) if bound_of else Bound(c.seqlip, c.label, c.method)
            out.append(Unit(id=c.id, nodes=tuple(c.nodes), inputs=(c.entry,), outputs=(c.exit,),
                            bounds=(bound,), estimates=(c.greedy,), role="chain"))
    return out


def run(ctx: Context, progress: Callable[[str], None] = lambda s: None) -> PassResult:
    """The SeqLip pass: finds chains and bounds them; methods ``seqlip`` (certified when every
    part is) and ``seqlip-greedy`` (estimate), artefact ``chains``."""
    t0 = time.perf_counter()
    chain_pass = ChainPass(ctx, progress)
    chains = chain_pass.run()
    cert, est = _composed(ctx, chains, ctx.artefact("units"), ctx.artefact("autolip"))
    seconds = time.perf_counter() - t0
    detail = {"chains": len(chains)}
    boxed = ctx.artefact("local_slopes") is not None
    domain = ctx.options.domain.name if boxed else WHOLE_SPACE
    diagnostics = chain_pass.diagnostics
    extra = {}
    if boxed and ctx.options.domain_also_global:
        progress("seqlip: the global bound too (--domain-also-global)")
        global_pass = ChainPass(ctx, progress, on_box=False)
        gc, ge = _composed(ctx, global_pass.run(), ctx.artefact("global_units"), ctx.artefact("global_autolip"))
        extra = {"seqlip": {"global": _finite(gc[0])}, "seqlip-greedy": {"global": _finite(ge)}}
    methods = [MethodResult("seqlip", cert[0], cert[1], seconds, {**detail, **extra.get("seqlip", {})}, domain)]
    if "seqlip-greedy" in ctx.options.methods:
        methods.append(MethodResult("seqlip-greedy", est, Label.ESTIMATE, seconds,
                                    {**detail, **extra.get("seqlip-greedy", {})}, domain))
    return PassResult(methods, {"chains": chains}, diagnostics)


def _composed(ctx: Context, chains: list[ChainResult], units: list[Unit], autolip) -> tuple[tuple, float]:
    """((certified value, label), greedy estimate) of the composition with the chains' values,
    never above ``autolip`` (monotone, so equal unless rounding)."""
    g = ctx.graph
    units = replaced_units(units, chains)
    cert = compose(units, g.analysed, g.output)
    pair = (cert.value, cert.label) if cert.value <= autolip.value else (autolip.value, autolip.label)
    est = compose(units, g.analysed, g.output, use_estimates=True).value if "seqlip-greedy" in ctx.options.methods else math.nan
    return pair, est


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
