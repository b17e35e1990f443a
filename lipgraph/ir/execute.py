"""lipgraph's own execution of a graph in torch, through the rules' torch semantics.

This is what lets lipgraph run power iteration through autograd, search lower bounds and
check itself against onnxruntime. A subgraph (an affine segment, a chain, the whole model
from the analysed tensor) becomes a plain torch function.
"""
from __future__ import annotations

import warnings
from typing import Callable, Iterable

import numpy as np
import torch

from lipgraph.ir.graph import Graph
from lipgraph.registry import Kind

TorchFn = Callable[[torch.Tensor], torch.Tensor]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from lipgraph.errors import InputError
        raise InputError("--device cuda: no CUDA device is available")
    return torch.device(device)


#: A constant whose tensor is a new CPU copy of more bytes than this is made again at each use
#: instead of kept: a float64 executor then holds no float64 copy of large weights (AlexNet's
#: fully connected ones: 0.9 GB), for one conversion per run of the node that reads it.
KEEP_LIMIT = 32 << 20


class Executor:
    """Runs nodes of ``graph`` in torch with floats in ``dtype`` on ``device``.

    A constant becomes a tensor the first time a node reading it runs, so an executor holds only
    the weights of what it executed; a constant already of this dtype on the CPU shares the graph's
    array instead of copying it (rules never write to their inputs), and a CPU copy larger than
    ``KEEP_LIMIT`` is not kept."""

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        self.graph = graph
        self.dtype = dtype
        self.device = torch.device(device)
        self._consts: dict[str, torch.Tensor] = {}

    def const(self, name: str) -> torch.Tensor:
        """The constant ``name`` as this executor's tensor."""
        if name in self._consts:
            return self._consts[name]
        value = np.asarray(self.graph.constants[name])
        if not value.flags.c_contiguous:    # (np.ascontiguousarray alone would make a 0-d array 1-d)
            value = np.ascontiguousarray(value)
        t = self._tensor(value)
        if self.device.type != "cpu" or t.nbytes <= KEEP_LIMIT or t.data_ptr() == value.ctypes.data:
            self._consts[name] = t
        return t

    def _tensor(self, value: np.ndarray) -> torch.Tensor:
        with warnings.catch_warnings():   # read-only arrays (onnx's): shared, never written
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            t = torch.as_tensor(value)
        if t.is_floating_point():
            t = t.to(self.dtype)
        return t.to(self.device)

    def run_nodes(self, nodes: Iterable[str], feeds: dict[str, torch.Tensor], smooth: float | None = None,
                  keep: set[str] | None = None) -> dict[str, torch.Tensor]:
        env: dict[str, torch.Tensor] = {}
        env.update(feeds)
        for nid in nodes:
            view, rule = self.graph.views[nid], self.graph.rules[nid]
            if rule is None:
                raise RuntimeError(f"node '{nid}' ({view.op_type}) has no rule, so lipgraph cannot execute it")
            args = [None if not t else env[t] if t in env else self.const(t) for t in view.inputs]
            if smooth is not None and rule.kind is Kind.ACTIVATION:
                out = rule.smooth(view, args[0], smooth)
            else:
                out = rule.forward(view, *args)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            for name, value in zip(view.outputs, outs):
                if name:
                    env[name] = value
        return env if keep is None else {k: env[k] for k in keep}

    def function(self, nodes: list[str], entry: str, exit_: str, smooth: float | None = None) -> TorchFn:
        """x ↦ value of ``exit_`` when ``entry`` = x, running ``nodes`` (in order)."""
        def fn(x: torch.Tensor) -> torch.Tensor:
            return self.run_nodes(nodes, {entry: x}, smooth=smooth, keep={exit_})[exit_]
        return fn

    def model_function(self, smooth: float | None = None) -> TorchFn:
        """The analysed input ↦ the analysed output."""
        return self.function(self.graph.nodes_between(), self.graph.analysed, self.graph.output, smooth)

