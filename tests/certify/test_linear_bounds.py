"""Backward linear bounds (certify/linear_bounds.py): on random ReLU, tanh and sigmoid MLPs and
random boxes, every sampled pre-activation lies in its range (alone and intersected with the
interval ones); with ReLU (triangle relaxation) the ranges are inside the interval ones and
tighter in total after the first layer; the first layer equals the exact range."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lipgraph.certify.linear_bounds import crown_preactivations
import lipgraph.rules  # noqa: F401 - registers the rules
from lipgraph.registry import REGISTRY
from onnx import helper
from lipgraph.nodeview import make_nodeview


def _relax_for(op, sizes):
    rule, version = REGISTRY.resolve("", op, 13)
    views = [make_nodeview(helper.make_node(op, ["x"], ["y"]), version, [(n,)], [(n,)], [True], {}) for n in sizes]

    def relax(j, lo, hi):
        return tuple(np.asarray(v, np.float64) for v in
                     rule.linear_relaxation(views[j], (torch.as_tensor(lo), torch.as_tensor(hi))))
    return rule, views, relax


@pytest.mark.parametrize("op", ["Relu", "Tanh", "Sigmoid"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_preactivation_ranges_hold_and_beat_intervals(op, seed):
    rng = np.random.default_rng(seed)
    sizes = [8, 20, 20, 20, 4]
    layers = [(rng.standard_normal((o, i)) / np.sqrt(i), 0.1 * rng.standard_normal(o)) for i, o in zip(sizes, sizes[1:])]
    rule, views, relax = _relax_for(op, sizes[1:-1])
    x0 = rng.standard_normal(sizes[0])
    lo, hi = x0 - 0.3, x0 + 0.3
    # interval arithmetic
    ibp, l, u = [], lo, hi
    for k, (m, b) in enumerate(layers):
        c, r = (l + u) / 2, (u - l) / 2
        zl, zu = m @ c + b - np.abs(m) @ r, m @ c + b + np.abs(m) @ r
        ibp.append((zl, zu))
        if k < len(layers) - 1:
            f = lambda z: rule.forward(views[k], torch.as_tensor(z)).numpy()  # noqa: E731
            l, u = f(zl), f(zu)           # monotone activations
    found = crown_preactivations(layers, relax, lo, hi)
    assert np.allclose(found[0][0], ibp[0][0], rtol=1e-8, atol=1e-8) and np.allclose(found[0][1], ibp[0][1], rtol=1e-8, atol=1e-8)
    if op == "Relu":   # the triangle relaxation: inside the interval ranges, and tighter in total
        for (cl, cu), (il, iu) in zip(found, ibp):
            assert np.all(cl >= il - 1e-7 * (1 + np.abs(il))) and np.all(cu <= iu + 1e-7 * (1 + np.abs(iu)))
        assert sum(float(np.sum((iu - il) - (cu - cl))) for (cl, cu), (il, iu) in zip(found[1:], ibp[1:])) > 1e-3
    joint = crown_preactivations(layers, relax, lo, hi, prior=ibp)
    for (jl, ju), (il, iu) in zip(joint, ibp):
        assert np.all(jl >= il) and np.all(ju <= iu)
    xs = lo + rng.random((2000, sizes[0])) * (hi - lo)
    xs = np.vstack([xs, lo, hi])
    h = xs
    for k, (m, b) in enumerate(layers):
        z = h @ m.T + b
        for rl, ru in (found[k], joint[k]):
            assert np.all(z >= rl - 1e-12) and np.all(z <= ru + 1e-12), f"layer {k}"
        if k < len(layers) - 1:
            h = rule.forward(views[k], torch.as_tensor(z)).numpy()
