"""Issue 10's acceptance on the zoo (models/zoo/): every model loads, is fused and annotated with a
rule for every node on the analysed path — no `unsupported-op` — for every output."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from lipgraph.ir.fuse import fuse
from lipgraph.ir.graph import build_graph
from lipgraph.ir.load import load_model
from lipgraph.passes.annotate import annotate
from lipgraph.registry import load_builtin_rules

ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"
MODELS = sorted(p.stem for p in ZOO.glob("*.onnx"))


@pytest.mark.parametrize("name", MODELS)
def test_every_zoo_node_has_a_rule(name):
    load_builtin_rules()
    path = ZOO / f"{name}.onnx"
    ref = np.load(path.with_suffix(".npz"))
    proto = onnx.load(path, load_external_data=False)
    pins = {i.name: tuple(ref[i.name].shape) for i in proto.graph.input}   # keras_cnn's dynamic batch
    model = fuse(load_model(path, pins))
    for out in model.outputs:
        graph = build_graph(model, None, out)
        infos = annotate(graph, graph.nodes_between(), {})
        assert not [i.op for i in infos.values() if i.status == "unsupported"], out
        assert not [d for d in graph.diagnostics if d.code == "unsupported-op"]
