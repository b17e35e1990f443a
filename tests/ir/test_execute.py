"""lipgraph's torch execution: weights made tensors on first use, shared where the dtype matches."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from conftest import MODELS
from lipgraph.ir.execute import Executor
from lipgraph.ir.graph import build_graph
from lipgraph.ir.load import load_model
from lipgraph.registry import load_builtin_rules


def _graph(name: str):
    load_builtin_rules()
    return build_graph(load_model(MODELS / f"{name}.onnx"), None, None)


def test_executors_hold_only_what_they_ran_and_float32_weights_are_not_copied():
    g = _graph("lenet")
    fast, exact = Executor(g, torch.float32), Executor(g, torch.float64)
    assert not fast._consts and not exact._consts
    first = g.order[0]
    exact.run_nodes([first], {g.analysed: torch.zeros(g.shape(g.analysed), dtype=torch.float64)})
    read = {t for t in g.views[first].inputs if t in g.constants}
    assert read and set(exact._consts) == read
    x = np.random.default_rng(0).standard_normal(g.shape(g.analysed)).astype(np.float32)
    y32 = fast.model_function()(torch.from_numpy(x))
    for name, t in fast._consts.items():
        if g.constants[name].dtype == np.float32:
            assert np.shares_memory(t.numpy(), g.constants[name])
    y64 = exact.model_function()(torch.from_numpy(x.astype(np.float64)))
    assert all(t.dtype == torch.float64 for t in exact._consts.values() if t.is_floating_point())
    sess = ort.InferenceSession(str(MODELS / "lenet.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run([g.output], {g.analysed: x})[0]
    np.testing.assert_allclose(y32.detach().numpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y64.detach().numpy(), want, rtol=1e-4, atol=1e-5)
