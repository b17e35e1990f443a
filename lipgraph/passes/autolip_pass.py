"""The AutoLip pass: norms of every affine segment and node bound (``units``), composed over
the DAG — ``autolip`` (certified) and ``autolip-power`` (the paper's power-iteration version,
an estimate).

With an input box (artefact ``ranges`` of the box pass) the node units get their local bounds
(:mod:`lipgraph.passes.local`) and both methods are reported on the box; the global values stay
in each method's ``global`` detail, and the global units in the artefact ``global_units``."""
from __future__ import annotations

import math
import time

from lipgraph.context import Context, MethodResult, PassResult
from lipgraph.labels import Label
from lipgraph.options import WHOLE_SPACE
from lipgraph.passes.autolip import compose
from lipgraph.passes.local import box_units
from lipgraph.passes.norms import UnitBuilder


def run(ctx: Context, progress) -> PassResult:
    g, options = ctx.graph, ctx.options
    t0 = time.perf_counter()
    builder = UnitBuilder(g, ctx.infos, ctx.exact, ctx.fast, options.norms, progress, seed=options.seed)
    units, segments = builder.build(g.nodes_between())
    certified = compose(units, g.analysed, g.output)
    artefacts = {"units": units, "segments": segments, "node_bounds": builder.node_bounds, "autolip": certified}
    diagnostics = list(builder.diagnostics)
    ranges, domain, glob = ctx.artefact("ranges"), WHOLE_SPACE, {}
    if ranges is not None:
        domain = options.domain.name
        local = box_units(units, g, ctx.infos, ranges, builder.node_bounds)
        glob = {"autolip": certified.value, "autolip-power": compose(units, g.analysed, g.output, use_estimates=True).value}
        units, certified = local.units, compose(local.units, g.analysed, g.output)
        artefacts.update(units=units, global_units=artefacts["units"], node_bounds=local.node_bounds,
                         autolip=certified, global_autolip=artefacts["autolip"], local_slopes=local.slopes)
        diagnostics += local.diagnostics
    seconds = time.perf_counter() - t0
    methods = [MethodResult("autolip", certified.value, certified.label, seconds, _global(glob, "autolip"), domain)]
    if "autolip-power" in options.methods:
        power = compose(units, g.analysed, g.output, use_estimates=True)
        methods.append(MethodResult("autolip-power", power.value, Label.ESTIMATE, seconds,
                                    _global(glob, "autolip-power"), domain))
    return PassResult(methods, artefacts, diagnostics)


def _global(glob: dict, name: str) -> dict:
    """The method's global value as a detail ({} without a box; null for ∞)."""
    if name not in glob:
        return {}
    v = glob[name]
    return {"global": v if math.isfinite(v) else None}
