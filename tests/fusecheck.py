"""Helpers shared by the fusion tests: the fused ops of a model, and lipgraph's torch execution
of a fused model against onnxruntime on the original."""
from __future__ import annotations

import numpy as np
import torch
from onnx import helper

from lipgraph.ir.differential import ort_session
from lipgraph.ir.execute import Executor
from lipgraph.ir.graph import build_graph
from lipgraph.registry import FUSED_DOMAIN


def fused_ops(model) -> list[tuple]:
    """(op, attributes) of every node of the private domain, in graph order."""
    return [(n.op_type, {a.name: helper.get_attribute_value(a) for a in n.attribute})
            for n in model.proto.graph.node if n.domain == FUSED_DOMAIN]


def assert_torch_matches_ort_on_original(model, shape, seed=0, scales=(0.3, 3.0, 30.0)):
    """The fused graph run by lipgraph's rules (float32) against onnxruntime on the original."""
    g = build_graph(model)
    fn = Executor(g, torch.float32).model_function()
    sess = ort_session(model.ort_proto, initializers=model.initializers)
    rng = np.random.default_rng(seed)
    for scale in scales:
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        want = sess.run([g.output], {g.analysed: x})[0]
        with torch.no_grad():
            got = fn(torch.as_tensor(x)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
