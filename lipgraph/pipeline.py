"""The pipeline: load → fuse → graph → annotate → cross-check → passes, returning one ``Analysis``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import lipgraph.budget as budget
from lipgraph.ir import differential
from lipgraph.passes.annotate import annotate
from lipgraph.context import Context, MethodResult
from lipgraph.diagnostics import Diagnostic
from lipgraph.ir.execute import Executor, resolve_device
from lipgraph.ir.graph import Graph, build_graph
from lipgraph.ir.fuse import fuse
from lipgraph.ir.load import load_model
from lipgraph.options import WHOLE_SPACE, Options
from lipgraph.passes import scheduled
from lipgraph.passes.lower_pass import guard
from lipgraph.registry import load_plugins


@dataclass
class Analysis:
    """Everything a report needs, assembled once from the passes' results."""

    graph: Graph
    infos: dict
    units: list
    segments: list
    node_bounds: dict
    autolip: object                              # the certified Composition
    methods: list[MethodResult]
    device: str
    options: Options
    executor: Executor                           # float32 on the analysis device
    diagnostics: list[Diagnostic]
    guard: differential.GuardResult | None = None  # the onnxruntime cross-check
    lower: object | None = None                  # a LowerResult when the lower pass ran
    chains: list = field(default_factory=list)   # per-chain results of the SeqLip pass
    unfinished: list[str] = field(default_factory=list)   # methods --time-limit stopped (a partial result)
    box_seconds: float | None = None             # time of the box pass (value ranges), with a domain

    @property
    def upper(self) -> MethodResult | None:
        """The headline: the smallest finite value among methods whose label is a bound."""
        bounds = [m for m in self.methods if m.label.is_bound and math.isfinite(m.value)]
        return min(bounds, key=lambda m: m.value, default=None)

    @property
    def domain(self) -> str:
        """The stated domain: the box's name, or R^n."""
        return self.options.domain.name if self.options.domain is not None else WHOLE_SPACE

    @property
    def certified(self) -> bool:
        return self.upper is not None

    @property
    def partial(self) -> bool:
        """--time-limit stopped some methods before they finished."""
        return bool(self.unfinished)

    @property
    def inconsistent(self) -> bool:
        """A realised lower bound above a certified upper bound: a bug, the run fails."""
        return any(d.code == "lower-above-upper" for d in self.diagnostics)


def analyze(path, options: Options | None = None, progress: Callable[[str], None] = lambda s: None) -> Analysis:
    """The whole analysis within ``options.time_limit`` and ``options.memory_limit``: when the time
    limit fires, the passes that finished are reported and the others are listed in ``unfinished``."""
    options = options or Options()
    with budget.active(budget.Budget.start(options.time_limit, options.memory_limit)) as limits:
        analysis = _analyze(path, options, progress)
    analysis.diagnostics += [Diagnostic("", "memory-limit", note) for note in dict.fromkeys(limits.notes)]
    return analysis


def _analyze(path, options: Options, progress: Callable[[str], None]) -> Analysis:
    load_plugins(options.plugins)
    progress("loading")
    model = fuse(load_model(path, options.input_shapes, input=options.input, fixed=options.fixed))
    graph = build_graph(model, options.input, options.output)
    box = options.domain.bounds(graph.shape(graph.analysed)) if options.domain is not None else None
    ctx = Context(graph, options, resolve_device(options.device), box=box)
    nodes = graph.nodes_between()
    ctx.infos = annotate(graph, nodes, options.assume)
    passes, checked, unfinished = scheduled(options.methods), None, []
    try:
        progress("cross-checking lipgraph's execution with onnxruntime")
        checked = differential.check(graph, ctx.fast, nodes, box=box, seed=options.seed)
        for p in passes:
            ctx.results[p.name] = p.run(ctx, progress)
    except budget.TimeUp:
        unfinished = [m for p in passes if p.name not in ctx.results for m in p.produces
                      if m in options.methods or m == "autolip"]
    diagnostics = list(graph.diagnostics) + [d for r in ctx.results.values() for d in r.diagnostics]
    if unfinished:
        diagnostics.append(Diagnostic("", "time-limit", f"--time-limit {options.time_limit:g}s reached: "
                                      f"{', '.join(unfinished)} did not finish (partial result)"
                                      + ("" if checked else "; the onnxruntime cross-check did not finish either"),
                                      {"unfinished": unfinished}))
    lower = ctx.artefact("lower")
    if lower is not None:
        diagnostics += guard(ctx.methods, lower)
    return Analysis(graph=graph, infos=ctx.infos, units=ctx.artefact("units"), segments=ctx.artefact("segments"),
                    node_bounds=ctx.artefact("node_bounds"), autolip=ctx.artefact("autolip"),
                    methods=[m for m in ctx.methods if m.name in options.methods or m.name == "autolip"],
                    device=str(ctx.device), options=options, executor=ctx.fast, diagnostics=diagnostics,
                    guard=checked, lower=lower, chains=ctx.artefact("chains", []), unfinished=unfinished,
                    box_seconds=ctx.artefact("box_seconds"))
