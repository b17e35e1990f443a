"""What the passes share: the analysis context (read-only for them) and what a pass returns.

A pass is ``run(ctx, progress) -> PassResult``: it reads the context — the graph, the
annotations, the AutoLip units and the results of the passes it requires — and returns its
methods, artefacts and diagnostics. It never changes another pass's data; the pipeline adds
its result to the context for the passes after it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lipgraph.diagnostics import Diagnostic
from lipgraph.ir.execute import Executor
from lipgraph.ir.graph import Graph
from lipgraph.labels import Label
from lipgraph.options import WHOLE_SPACE, Options


@dataclass
class MethodResult:
    name: str
    value: float
    label: Label
    seconds: float
    detail: dict = field(default_factory=dict)
    domain: str = WHOLE_SPACE       # the inputs the value is about: "R^n" or the box's name


@dataclass
class PassResult:
    methods: list[MethodResult] = field(default_factory=list)
    artefacts: dict[str, Any] = field(default_factory=dict)   # e.g. "chains", "lower"
    diagnostics: list[Diagnostic] = field(default_factory=list)


@dataclass
class Context:
    graph: Graph
    options: Options
    device: torch.device
    infos: dict = field(default_factory=dict)          # node → annotate.NodeInfo
    box: tuple | None = None                           # (lo, hi) float64 arrays of the analysed input's shape; None: R^n
    results: dict[str, PassResult] = field(default_factory=dict)
    _executors: dict = field(default_factory=dict)

    def executor(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Executor:
        """The one executor per (dtype, device) of this analysis (``Executor`` says which weights it holds)."""
        key = (dtype, torch.device(device))
        if key not in self._executors:
            self._executors[key] = Executor(self.graph, dtype, key[1])
        return self._executors[key]

    @property
    def fast(self) -> Executor:
        """float32 on the analysis device: norm estimates and the lower-bound search."""
        return self.executor(torch.float32, self.device)

    @property
    def exact(self) -> Executor:
        """float64 on the CPU: certificates and realised pairs."""
        return self.executor(torch.float64, "cpu")

    def artefact(self, name: str, default: Any = None) -> Any:
        for result in self.results.values():
            if name in result.artefacts:
                return result.artefacts[name]
        return default

    @property
    def methods(self) -> list[MethodResult]:
        return [m for r in self.results.values() for m in r.methods]

    def best_bound(self) -> MethodResult | None:
        bounds = [m for m in self.methods if m.label.is_bound and math.isfinite(m.value)]
        return min(bounds, key=lambda m: m.value, default=None)
