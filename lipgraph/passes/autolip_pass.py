"""The AutoLip pass: norms of every affine segment and node bound (``units``), composed over
the DAG — ``autolip`` (certified) and ``autolip-power`` (the paper's power-iteration version,
an estimate)."""
from __future__ import annotations

import time

from lipgraph.context import Context, MethodResult, PassResult
from lipgraph.labels import Label
from lipgraph.passes.autolip import compose
from lipgraph.passes.norms import UnitBuilder


def run(ctx: Context, progress) -> PassResult:
    g, options = ctx.graph, ctx.options
    t0 = time.perf_counter()
    builder = UnitBuilder(g, ctx.infos, ctx.exact, ctx.fast, options.norms, progress)
    units, segments = builder.build(g.nodes_between())
    certified = compose(units, g.analysed, g.output)
    seconds = time.perf_counter() - t0
    methods = [MethodResult("autolip", certified.value, certified.label, seconds)]
    if "autolip-power" in options.methods:
        power = compose(units, g.analysed, g.output, use_estimates=True)
        methods.append(MethodResult("autolip-power", power.value, Label.ESTIMATE, seconds))
    artefacts = {"units": units, "segments": segments, "node_bounds": builder.node_bounds, "autolip": certified}
    return PassResult(methods, artefacts, builder.diagnostics)
