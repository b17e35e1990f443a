"""lipgraph's torch execution: weights made tensors on first use, shared where the dtype matches."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from conftest import MODELS
from lipgraph.ir import execute
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


def test_large_float64_copies_are_made_at_each_use_not_kept(monkeypatch):
    g = _graph("lenet")
    sizes = {n: v.nbytes for n, v in g.constants.items() if v.dtype == np.float32}
    limit = sorted(sizes.values())[-1] * 2 - 1          # the largest weight's float64 copy is over it
    monkeypatch.setattr(execute, "KEEP_LIMIT", limit)
    exact, fast = Executor(g, torch.float64), Executor(g, torch.float32)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal(g.shape(g.analysed)))
    first = exact.model_function()(x)
    fast.model_function()(x.float())
    big = {n for n, b in sizes.items() if 2 * b > limit}
    assert big and not big & set(exact._consts) and big <= set(fast._consts)   # float32: shared, kept
    assert all(tuple(t.shape) == np.shape(g.constants[n]) for n, t in exact._consts.items())   # 0-d stay 0-d
    assert torch.equal(exact.model_function()(x), first)
