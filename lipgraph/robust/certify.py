"""``lipgraph certify``: certified radii, certified and attacked accuracy (see the package
docstring for the maths). The result is one document (dict) that the text and JSON outputs
render, like ``lipgraph analyze``'s."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from lipgraph.version import __version__
from lipgraph.errors import InputError, SemanticMismatch
from lipgraph.options import WHOLE_SPACE, Options
from lipgraph.robust.attack import pgd
from lipgraph.robust.margin import margin_bounds

DEFAULT_EPS_POINTS = 5


def certify(path, data: str, labels: str, options: Options, eps: list[float] | None = None, attack: bool = False,
            progress=lambda s: None) -> dict:
    from lipgraph.api import analyze
    from lipgraph.ir.differential import ort_session
    from lipgraph.ir.execute import Executor
    from lipgraph.ir.fuse import fuse
    from lipgraph.ir.graph import build_graph
    from lipgraph.ir.load import load_model, with_weights
    from lipgraph.registry import load_plugins

    load_plugins(options.plugins)
    model = fuse(load_model(path, options.input_shapes, input=options.input, fixed=options.fixed))
    graph = build_graph(model, options.input, options.output)
    if graph.analysed not in model.inputs:
        raise InputError(f"certify needs a float input to perturb; '{graph.analysed}' is computed from a non-float input")
    shape = graph.shape(graph.analysed)
    x, y = _read_data(data, shape), _read_labels(labels)
    if len(x) != len(y):
        raise InputError(f"--data has {len(x)} inputs but --labels has {len(y)} labels")
    box = None
    if options.domain is not None:
        lo, hi = options.domain.bounds(shape)
        outside = np.flatnonzero(((x < lo) | (x > hi)).reshape(len(x), -1).any(axis=1))
        if len(outside):
            raise InputError(f"--data: input {int(outside[0])} has values outside {options.domain.spec}")
        box = (torch.as_tensor(lo), torch.as_tensor(hi))
    fn = Executor(graph, torch.float64).model_function()
    with torch.no_grad():
        logits = np.stack([fn(torch.as_tensor(xi, dtype=torch.float64)).reshape(-1).numpy() for xi in x])
    classes = logits.shape[1]
    if y.min() < 0 or y.max() >= classes:
        raise InputError(f"--labels: a label out of range [0, {classes - 1}] (the output '{graph.output}' has "
                         f"{classes} logits)")
    predicted = logits.argmax(axis=1)

    progress("bounding the model")
    bound_options = dataclasses.replace(options, methods=tuple(m for m in options.methods if m != "lower") or ("autolip",))
    base = analyze(path, options=bound_options)
    correct = np.flatnonzero(predicted == y)
    pairs = sorted({(min(int(y[n]), j), max(int(y[n]), j)) for n in correct for j in range(classes) if j != y[n]})
    fixed_options = dataclasses.replace(bound_options, input_shapes={}, fixed={}, input=graph.analysed)
    bounds = margin_bounds(with_weights(model.ort_proto, model.initializers), graph.output, classes, pairs,
                           fixed_options, base.upper, progress)

    radii = np.zeros(len(x))
    for n in correct:
        label = int(y[n])
        radii[n] = min((logits[n, label] - logits[n, j]) / bounds[(min(label, j), max(label, j))].value
                       for j in range(classes) if j != label)
    grid = sorted(set(eps)) if eps else _default_grid(radii[correct])
    attack_distance = np.full(len(x), math.inf)
    attacked = None
    if attack:
        sess = ort_session(model.ort_proto, initializers=model.initializers)
        dtype = sess.get_inputs()[0].type
        attacked = []
        broken = np.zeros(len(x), bool)
        for k, e in enumerate(grid):
            progress(f"attack: ε = {e:g} ({k + 1}/{len(grid)})")
            for n in correct:
                if broken[n] or e <= 0:
                    continue
                adv = pgd(fn, x[n], int(y[n]), e, seed=options.seed + int(n), box=box)
                if adv is not None and _ort_class(sess, graph.analysed, adv, dtype, graph.output) != y[n]:
                    broken[n] = True
                    attack_distance[n] = float(np.linalg.norm((adv - x[n]).ravel()))
            attacked.append(float(np.mean((predicted == y) & ~broken)))
        unsound = np.flatnonzero(radii > attack_distance)
        if len(unsound):
            n = int(unsound[0])
            raise SemanticMismatch(f"input {n}: certified radius {radii[n]:.6g} exceeds the distance {attack_distance[n]:.6g} "
                                   "of an adversarial example")
    return {
        "lipgraph": __version__,
        "model": str(path),
        "input": graph.analysed,
        "output": graph.output,
        "inputs": len(x),
        "classes": classes,
        "domain": options.domain.name if options.domain is not None else WHOLE_SPACE,
        "model_bound": base.to_json()["upper_bound"],
        "margin_bounds": [b.to_json() for b in bounds.values()],
        "clean_accuracy": float(np.mean(predicted == y)),
        "table": [{"eps": e, "certified_accuracy": float(np.mean(radii > e)),
                   "attacked_accuracy": attacked[k] if attacked is not None else None} for k, e in enumerate(grid)],
        "samples": [{"index": n, "label": int(y[n]), "predicted": int(predicted[n]), "radius": float(radii[n]),
                     "attack_distance": float(attack_distance[n]) if math.isfinite(attack_distance[n]) else None}
                    for n in range(len(x))],
    }


def _read_array(flag: str, spec: str) -> np.ndarray:
    if not Path(spec).is_file():
        raise InputError(f"{flag} {spec}: no such file")
    try:
        return np.asarray(np.load(spec, allow_pickle=False))
    except (ValueError, OSError) as exc:
        raise InputError(f"{flag} {spec}: not a numpy .npy array ({str(exc).splitlines()[0]})") from None


def _read_data(spec: str, shape: tuple[int, ...]) -> np.ndarray:
    x = _read_array("--data", spec)
    if x.dtype.kind not in "fiu":
        raise InputError(f"--data {spec}: expected numbers, got {x.dtype}")
    if tuple(x.shape[1:]) == tuple(shape):
        stacked = x
    elif shape and shape[0] == 1 and tuple(x.shape[1:]) == tuple(shape[1:]):
        stacked = x.reshape((len(x), *shape))
    else:
        raise InputError(f"--data {spec}: shape {list(x.shape)} is not a stack of inputs of shape {list(shape)} "
                         f"(or {list(shape[1:])} without the batch dim)")
    if not len(stacked):
        raise InputError(f"--data {spec}: no inputs")
    stacked = stacked.astype(np.float64)
    if not np.isfinite(stacked).all():
        raise InputError(f"--data {spec}: contains NaN or ±inf")
    return stacked


def _read_labels(spec: str) -> np.ndarray:
    y = _read_array("--labels", spec)
    if y.ndim != 1 or y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise InputError(f"--labels {spec}: expected a 1-D array of integer class indices")
    return y.astype(np.int64)


def _default_grid(radii: np.ndarray) -> list[float]:
    """0 and evenly spaced ε up to the largest certified radius (or 1 when none is positive)."""
    top = float(radii.max()) if len(radii) and radii.max() > 0 else 1.0
    return [round(top * k / (DEFAULT_EPS_POINTS - 1), 6) for k in range(DEFAULT_EPS_POINTS)]


def _ort_class(sess, name: str, x: np.ndarray, type_name: str, output: str) -> int:
    dtype = np.float64 if "double" in type_name else np.float32
    return int(np.argmax(sess.run([output], {name: x.astype(dtype)})[0].reshape(-1)))
