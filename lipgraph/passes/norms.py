"""Turn annotated nodes and affine segments into AutoLip units with certified bounds and
power-iteration estimates.

Certified norm of a segment: the smallest of (a) the segment folded into one convolution
(``lipgraph.certify.convfold``, when every node's rule gives a ``conv_form``) and certified by
``convnorm``, or the rule's own closed form for a one-node segment without one, (b) the
materialised operator's σ_max (float64, plus a margin) when it is small enough, (c) AutoLip
inside the segment from its nodes' certified norms. The
estimate (for ``autolip-power``) is power iteration through autograd on the whole segment.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

import lipgraph.budget as budget
from lipgraph.passes.annotate import NodeInfo
from lipgraph.ir.execute import Executor
from lipgraph.diagnostics import Diagnostic
from lipgraph.ir.graph import Graph
from lipgraph.labels import LADDER_SLACK, Bound, Label
from lipgraph.certify import convfold
from lipgraph.certify.dense import OVERFLOW, certified_materialised_norm, linear_part, power_iteration
from lipgraph.options import NormOptions
from lipgraph.registry import Kind, slope_range
from lipgraph.passes.autolip import Unit, compose
from lipgraph.passes.segments import Segment, find_segments

UNBOUNDED = Bound(math.inf, Label.CERTIFIED, "none")


class UnitBuilder:
    def __init__(self, graph: Graph, infos: dict[str, NodeInfo], exact: Executor, fast: Executor,
                 options: NormOptions, progress: Callable[[str], None] = lambda s: None, seed: int = 0):
        self.graph, self.infos, self.exact, self.fast = graph, infos, exact, fast
        self.options, self.progress, self.seed = options, progress, seed
        self.node_bounds: dict[str, Bound | None] = {}
        self.diagnostics: list[Diagnostic] = []

    def build(self, nodes: list[str]) -> tuple[list[Unit], list[Segment]]:
        eligible = {nid for nid in nodes if self._linear(nid)}
        segments = find_segments(self.graph, eligible)
        by_last: dict[str, list[Segment]] = {}
        for seg in segments:
            by_last.setdefault(seg.nodes[-1], []).append(seg)
        members = {n for s in segments for n in s.nodes}
        units = []
        for k, nid in enumerate(nodes):
            budget.check()
            for seg in by_last.get(nid, []):
                self.progress(f"norming segment {seg.id} ({k + 1}/{len(nodes)} nodes)")
                units.append(self.segment_unit(seg))
            if nid not in members:
                units.append(self.node_unit(nid))
        return units, segments

    def _linear(self, nid: str) -> bool:
        info = self.infos[nid]
        return info.status == "ok" and info.kind.is_linear

    def _dynamic_inputs(self, nid: str) -> tuple[tuple[int, str], ...]:
        view = self.graph.views[nid]
        return tuple((i, t) for i, (t, d) in enumerate(zip(view.inputs, view.dynamic)) if d)

    # ---- single nodes -------------------------------------------------------------------
    def node_unit(self, nid: str) -> Unit:
        info, view = self.infos[nid], self.graph.views[nid]
        dyn = self._dynamic_inputs(nid)
        combine = "sum"
        if info.status == "assumed":
            per_input = {i: Bound(info.assumed, Label.ASSUMED, "assumed") for i, _ in dyn}
        elif info.status != "ok":
            per_input = {i: UNBOUNDED for i, _ in dyn}
        elif info.kind is Kind.ACTIVATION:
            lo, hi, label = slope_range(info.rule, view)
            slope = float(max(np.max(np.abs(lo)), np.max(np.abs(hi))))
            per_input = {i: Bound(slope, label, "slopes") for i, _ in dyn}
        elif info.kind in (Kind.NONLINEAR, Kind.COMBINE):
            per_input = info.rule.bounds(view)
            combine = info.rule.combine
            for i, t in dyn:
                if i not in per_input:
                    self.diagnostics.append(Diagnostic(nid, "no-bound", f"rule gives no bound for input '{t}'"))
            per_input = {i: per_input.get(i, UNBOUNDED) for i, _ in dyn}
        else:  # linear node outside any segment (several outputs, or several entries)
            bound = self.node_norm(nid)
            per_input = {i: bound for i, _ in dyn}
        bounds = tuple(per_input[i] for i, _ in dyn)
        self.node_bounds[nid] = max(bounds, key=lambda b: b.value) if bounds else None
        return Unit(id=nid, nodes=(nid,), inputs=tuple(t for _, t in dyn),
                    outputs=tuple(o for o in view.outputs if o), bounds=bounds,
                    estimates=tuple(b.value for b in bounds), combine=combine)

    def node_norm(self, nid: str) -> Bound:
        """Certified norm of one linear node: the smaller of its rule's closed form and the
        materialised operator (not tried when the closed form is ``exact``: nothing is smaller)."""
        view, rule = self.graph.views[nid], self.infos[nid].rule
        candidates = [rule.certified_norm(view)]
        dyn = self._dynamic_inputs(nid)
        closed_exact = candidates[0] is not None and candidates[0].label is Label.EXACT
        if not closed_exact and len(dyn) == 1 and sum(1 for o in view.outputs if o) == 1:
            fn = self.exact.function([nid], dyn[0][1], view.outputs[0])
            candidates.append(self._materialised(fn, dyn[0][1], view.outputs[0]))
        return self._smallest(candidates, nid)

    # ---- segments -------------------------------------------------------------------------
    def segment_unit(self, seg: Segment) -> Unit:
        """min(folded convolution, materialised, product of parts — or the rule's closed form for
        one node without a conv form).

        Certificate first: the cheap one (the fold's DFT bound or SVD, the rule's closed form),
        then the estimate (started from the fold's DFT plane wave, ``convfold.start_vector``),
        which stops as soon as it comes within ``agree_tol`` of it — the
        certificate is then proven tight and nothing more is computed. Otherwise the fold's Gram
        proof (steered by the estimate), and, unless a near-exact certificate exists (within
        ~1 % of ‖A‖, below any product of parts, which is ≥ ‖A‖), materialising and the product
        of parts."""
        found: dict[str, Bound] = {}
        form = self.folded_form(seg)
        limit = min(self.options.materialize_limit, 4_000_000)
        shape = self.graph.shape(seg.entry)
        if form is not None:
            found["folded"] = convfold.certified_norm(form, shape, materialize_limit=limit, prove=False)
        elif len(seg.nodes) == 1:
            found["rule"] = self.infos[seg.nodes[0]].rule.certified_norm(self.graph.views[seg.nodes[0]])
        first = min((b.value for b in found.values() if b is not None), default=None)
        estimate = self._power(seg, first, convfold.start_vector(form, shape) if form is not None else None)
        if not estimate.met_target and form is not None and "dft" in found["folded"].method:
            found["folded"] = convfold.certified_norm(form, shape, materialize_limit=limit, estimate=estimate.sigma,
                                                      first=found["folded"])
        near_exact = estimate.met_target or any(b is not None and b.tightness is not None and b.tightness <= LADDER_SLACK
                                                for b in found.values())
        if not near_exact:
            fn = self.exact.function(list(seg.nodes), seg.entry, seg.exit)
            found["materialised"] = self._materialised(fn, seg.entry, seg.exit, estimate.sigma)
            if found["materialised"] is None and all(b is None for b in found.values()):
                found["product of parts"] = self._inner_autolip(seg)
        bound = self._smallest(list(found.values()), seg.id)
        if len(seg.nodes) == 1:
            self.node_bounds[seg.nodes[0]] = bound
        return Unit(id=seg.id, nodes=seg.nodes, inputs=(seg.entry,), outputs=(seg.exit,), bounds=(bound,),
                    estimates=(estimate.sigma,), role="segment",
                    info={"power_iterations": estimate.iterations, "power_converged": estimate.converged,
                          "estimate": estimate.sigma,
                          "candidates": {k: b.value for k, b in found.items() if b is not None}})

    def folded_form(self, seg: Segment) -> "convfold.ConvForm | None":
        """The segment as one convolution / per-channel scale from its rules' ``conv_form``, checked
        against the segment's float64 torch function on a random input; None if it does not fold."""
        steps = []
        for nid in seg.nodes:
            view, rule = self.graph.views[nid], self.infos[nid].rule
            form = rule.conv_form(view)
            dyn = self._dynamic_inputs(nid)
            if form is None:
                return None
            if not isinstance(form, dict):
                if len(dyn) != 1:
                    return None
                form = {dyn[0][0]: form}
            if set(form) != {i for i, _ in dyn}:
                return None
            steps.append((view.outputs[0], [(t, form[i]) for i, t in dyn]))
        folded = convfold.fold(steps, seg.entry, seg.exit, self.graph.shape)
        if folded is None:
            return None
        shape = self.graph.shape(seg.entry)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)
        with torch.no_grad():
            lin = linear_part(self.exact.function(list(seg.nodes), seg.entry, seg.exit), shape, torch.float64, "cpu")
            want, got = lin(x), convfold.apply(folded, x)
        if got.shape != want.shape or float((got - want).norm()) > 1e-9 * max(float(want.norm()), 1e-300):
            self.diagnostics.append(Diagnostic(seg.id, "fold-mismatch", "the rules' conv forms do not reproduce the segment; "
                                                     "not folded (report this rule)"))
            return None
        return folded

    def _materialised(self, fn, entry: str, exit_: str, estimate: float | None = None) -> Bound | None:
        shape = self.graph.shape(entry)
        return certified_materialised_norm(fn, shape, int(np.prod(self.graph.shape(exit_))),
                                           self.options.materialize_limit, device=self.exact.device,
                                           estimate=estimate)

    def _inner_autolip(self, seg: Segment) -> Bound:
        inner = []
        for nid in seg.nodes:
            kind = self.infos[nid].kind
            inner.append(self.node_unit(nid) if kind is Kind.COMBINE else self._norm_unit(nid))
        result = compose(inner, seg.entry, seg.exit)
        return Bound(result.value, result.label, "product of parts")

    def _norm_unit(self, nid: str) -> Unit:
        bound = self.node_norm(nid)
        self.node_bounds[nid] = bound
        dyn = self._dynamic_inputs(nid)
        return Unit(id=nid, nodes=(nid,), inputs=tuple(t for _, t in dyn), outputs=(self.graph.views[nid].outputs[0],),
                    bounds=tuple(bound for _ in dyn), estimates=tuple(bound.value for _ in dyn))

    def _power(self, seg: Segment, target: float | None = None, init: torch.Tensor | None = None):
        fn = self.fast.function(list(seg.nodes), seg.entry, seg.exit)
        o = self.options
        result = power_iteration(fn, self.graph.shape(seg.entry), dtype=self.fast.dtype, device=self.fast.device,
                                 tol=o.power_tol, max_iter=o.power_iters, seed=self.seed, target=target,
                                 agree=o.agree_tol, init=init)
        if math.isinf(result.sigma):
            self.diagnostics.append(Diagnostic(seg.id, "overflow", "the norm estimate overflowed in "
                                               f"{self.fast.dtype} (huge weights): no estimate"))
        elif not result.converged and not result.met_target:
            self.diagnostics.append(Diagnostic(seg.id, "power-not-converged", f"power iteration stopped after {result.iterations} steps "
                                                     "without reaching the tolerance"))
        return result

    def _smallest(self, candidates: list[Bound | None], where: str) -> Bound:
        found = [c for c in candidates if c is not None]
        if any(c.method == OVERFLOW for c in found):
            self.diagnostics.append(Diagnostic(where, "overflow", "float64 arithmetic overflowed materialising the "
                                               "operator (huge weights): that certificate is ∞"))
        if not found:
            self.diagnostics.append(Diagnostic(where, "no-certified-norm",
                                               "no certified norm: too large to materialise and the rule has no "
                                               "closed form (raise --materialize-limit or add certified_norm to the rule)"))
            return UNBOUNDED
        return min(found, key=lambda b: b.value)
