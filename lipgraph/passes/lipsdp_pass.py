"""The LipSDP pass: every SeqLip chain whose maps are dense gets a LipSDP bound
(``lipgraph.certify.lipsdp``: solved, then proven in float64); method ``lipsdp`` is the AutoLip
composition with each chain replaced by its best certified value (AutoLip product, SeqLip or
LipSDP). A value LipSDP cannot prove stays an estimate and is never used as a bound."""
from __future__ import annotations

import math
import time

import lipgraph.budget as budget
from lipgraph.certify.lipsdp import lipsdp
from lipgraph.context import Context, MethodResult, PassResult
from lipgraph.options import WHOLE_SPACE
from lipgraph.diagnostics import Diagnostic
from lipgraph.labels import Bound, Label, weakest
from lipgraph.passes.autolip import compose
from lipgraph.passes.chains import replaced_units


def run(ctx: Context, progress) -> PassResult:
    t0 = time.perf_counter()
    opts = ctx.options.lipsdp
    chains = ctx.artefact("chains", [])
    diagnostics, results = [], {}
    for c in chains:
        why = _unsuitable(c, opts.max_neurons)
        if why:
            diagnostics.append(Diagnostic(c.units[0].nodes[0], "lipsdp-skipped", f"{c.id}: {why}"))
            continue
        progress(f"lipsdp: {c.id}")
        res = lipsdp(c.matrices, [lo for lo, _ in c.slopes], [hi for _, hi in c.slopes], variant=opts.variant,
                     route=opts.route, device=ctx.device, max_iter=opts.max_iter)
        results[c.id] = res
        for note in res.notes:
            diagnostics.append(Diagnostic(c.units[0].nodes[0], "lipsdp-skipped" if res.bound is None
                                          else "lipsdp-note", f"{c.id}: {note}"))

    def best(c) -> Bound:
        found = [Bound(c.seqlip, c.label, c.method)]
        res = results.get(c.id)
        if res is not None and res.bound is not None and res.bound.label.is_bound:
            found.append(Bound(res.bound.value, weakest(res.bound.label, *_slope_labels(c)), res.bound.method))
        return min(found, key=lambda b: b.value)

    g, autolip = ctx.graph, ctx.artefact("autolip")
    composed = compose(replaced_units(ctx.artefact("units"), chains, best), g.analysed, g.output)
    value, label = (composed.value, composed.label) if composed.value <= autolip.value else (autolip.value,
                                                                                            autolip.label)
    certified = sum(1 for r in results.values() if r.bound is not None and r.bound.label.is_bound)
    detail = {"chains": len(chains), "solved": len(results), "certified": certified,
              "chain_values": {k: (r.bound.value if r.bound is not None and math.isfinite(r.bound.value) else None)
                               for k, r in results.items()}}
    domain = ctx.options.domain.name if ctx.artefact("local_slopes") is not None else WHOLE_SPACE
    method = MethodResult("lipsdp", value, label, time.perf_counter() - t0, detail, domain)
    return PassResult([method], {"lipsdp": results}, diagnostics)


def _unsuitable(chain, max_neurons: int) -> str:
    if any(m is None for m in chain.matrices):
        return "a map is too large to materialise (operator map): no LipSDP bound"
    neurons = sum(len(lo) for lo, _ in chain.slopes)
    if neurons > max_neurons:
        return f"{neurons} hidden neurons > --lipsdp-max-neurons {max_neurons}: no LipSDP bound"
    widths = [m.shape[1] for m in chain.matrices] + [chain.matrices[-1].shape[0]]
    need = 8 * 8 * sum(a * b for a, b in zip(widths, widths[1:])) + 8 * 8 * sum(n * n for n in widths)
    if not budget.fits(need, f"the LipSDP matrices of {chain.id}", "no LipSDP bound for it"):
        return "its matrices would exceed --memory-limit: no LipSDP bound"
    return ""


def _slope_labels(chain) -> list[Label]:
    return [u.bounds[0].label for u in chain.units[1::2]]
