"""The pipeline: load → graph → annotate → norms → passes, returning one ``Analysis``."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .annotate import NodeInfo, annotate
from .execute import Executor, resolve_device
from .graph import Graph, build_graph
from .labels import Label
from .load import load_model
from .passes.autolip import Composition, Unit, compose
from .passes.segments import Segment
from .passes.units import NormOptions, UnitBuilder
from .registry import load_plugins

ALL_METHODS = ("autolip", "autolip-power", "seqlip", "seqlip-greedy", "lower")
DEFAULT_METHODS = ("autolip", "autolip-power", "seqlip", "seqlip-greedy", "lower")


@dataclass
class SeqLipOptions:
    exact_max: int = 24            # widest layer enumerated (capped at ENUM_MAX=18; branch and bound beyond, to 64)
    topk: int = 200                # singular triplets kept for layers whose SVD cannot be formed
    budget: float = 30.0           # seconds for all exact enumerations; past it, certified relaxation
    dense_limit: int = 2048        # widest segment materialised for its SVD (larger: top-k)
    bnb_nodes: int = 2048          # branch-and-bound node evaluations per neuron (deterministic, not seconds)
    greedy_max: int = 1 << 18      # n·p·q up to which greedy is the paper's; above: alternating ascent


@dataclass
class LowerOptions:
    budget: float = 5.0            # seconds of search
    search: str = "auto"
    box: tuple[float, float] | None = None
    data: str | None = None        # .npy file of inputs to start from
    restarts: int | None = None    # exactly this many search rounds (reproducible), else the budget


@dataclass
class Options:
    input: str | None = None
    output: str | None = None
    input_shapes: dict = field(default_factory=dict)
    methods: tuple[str, ...] = DEFAULT_METHODS
    device: str = "auto"
    seed: int = 0
    assume: dict = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    norms: NormOptions = field(default_factory=NormOptions)
    seqlip: SeqLipOptions = field(default_factory=SeqLipOptions)
    lower: LowerOptions = field(default_factory=LowerOptions)
    verbose: bool = False


@dataclass
class MethodResult:
    name: str
    value: float
    label: Label
    seconds: float
    detail: dict = field(default_factory=dict)


@dataclass
class Analysis:
    graph: Graph
    infos: dict[str, NodeInfo]
    units: list[Unit]
    segments: list[Segment]
    node_bounds: dict
    autolip: Composition
    methods: list[MethodResult]
    device: str
    options: Options
    executor: Executor                          # float32 on the analysis device
    lower: object | None = None                 # a LowerResult when the lower pass ran
    chains: list = field(default_factory=list)  # per-chain results of the SeqLip pass

    @property
    def upper(self) -> MethodResult | None:
        """The headline: the smallest finite value among methods whose label is a bound."""
        bounds = [m for m in self.methods if m.label.is_bound and math.isfinite(m.value)]
        return min(bounds, key=lambda m: m.value, default=None)

    @property
    def certified(self) -> bool:
        return self.upper is not None


def analyze(path, options: Options | None = None, progress: Callable[[str], None] = lambda s: None) -> Analysis:
    options = options or Options()
    load_plugins(options.plugins)
    progress("loading")
    model = load_model(path, options.input_shapes)
    graph = build_graph(model, options.input, options.output)
    device = resolve_device(options.device)
    exact = Executor(graph, torch.float64, "cpu")
    fast = Executor(graph, torch.float32, device)
    nodes = graph.nodes_between()
    infos = annotate(graph, nodes, options.assume)

    t0 = time.perf_counter()
    builder = UnitBuilder(graph, infos, exact, fast, options.norms, progress)
    units, segments = builder.build(nodes)
    autolip = compose(units, graph.analysed, graph.output)
    t_auto = time.perf_counter() - t0
    methods = [MethodResult("autolip", autolip.value, autolip.label, t_auto)]
    if "autolip-power" in options.methods:
        power = compose(units, graph.analysed, graph.output, use_estimates=True)
        methods.append(MethodResult("autolip-power", power.value, Label.ESTIMATE, t_auto))
    analysis = Analysis(graph=graph, infos=infos, units=units, segments=segments,
                        node_bounds=builder.node_bounds, autolip=autolip, methods=methods, device=str(device),
                        options=options, executor=fast)
    for name, run in passes():
        if name in options.methods:
            run(analysis, progress)
    return analysis


def passes():
    """The passes that follow AutoLip, each adding its MethodResults to the Analysis:
    (method name that switches it on, run(analysis, progress))."""
    from .passes.chains import run_seqlip   # chains + SeqLip: "seqlip" and "seqlip-greedy"
    from .passes.lower_pass import run_lower  # realised lower bound: "lower"
    return [("seqlip", run_seqlip), ("lower", run_lower)]
