"""The differential guard: lipgraph's reading of the model against onnxruntime's.

Every bound lipgraph computes rests on its own torch execution of the rules and on the shapes
it inferred. A misreading of the ONNX semantics there would be shared by the bound *and* by
every self-check (the lower-bound search runs the same execution), so before any value is
called certified or exact, the analysed part of the model is run once in onnxruntime — an
independent executor — on a few seeded random inputs with every analysed tensor exposed, and:

* every analysed tensor's shape must equal lipgraph's inferred shape exactly;
* every analysed node, fed onnxruntime's values of its inputs, must reproduce onnxruntime's
  values of its outputs (float outputs to ``RTOL``·max|output| + ``ATOL``, others exactly);
* every folded constant that an analysed node reads must equal onnxruntime's value of it.

Node by node, so a mismatch names the node that misreads and errors do not accumulate. A node
whose rule refuses it (``check`` raises) and does not implement its configuration
(``NotImplementedError``, e.g. an LSTM with ``clip``) is skipped: no bound rests on it.
A mismatch raises ``SemanticMismatch`` (exit 3: a bug to report, no number is certified); a
model that onnxruntime refuses to load or run is invalid (``InputError``, exit 2). Models with
ops onnxruntime cannot know (custom domains) are not checked, with a note. onnxruntime runs the model
as loaded (``LoadedModel.ort_proto``): a node that ``lipgraph.ir.fuse`` made keeps the output
name of the subgraph it replaces, so it is checked against that subgraph like any other node.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import torch

import lipgraph.budget as budget
from lipgraph.errors import InputError, RuleNotApplicable, SemanticMismatch
from lipgraph.ir.execute import Executor
from lipgraph.diagnostics import Diagnostic
from lipgraph.ir.graph import Graph
from lipgraph.ir.inputs import FLOAT_TYPES
from lipgraph.ir.load import ARRAY_DTYPES, detached, large_initializers, without_initializers

#: Domains onnxruntime's CPU provider implements.
ORT_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
SAMPLES = 2
RTOL, ATOL = 1e-3, 1e-5


@dataclass
class GuardResult:
    status: str            # "passed" | "skipped"
    seconds: float
    tensors: int = 0       # tensors compared (shapes and values)
    samples: int = 0

    def to_json(self) -> dict:
        return {"status": self.status, "seconds": round(self.seconds, 4), "tensors": self.tensors,
                "samples": self.samples}


def ort_session(proto: onnx.ModelProto, outputs: list[str] | None = None,
                initializers: dict[str, np.ndarray] | None = None):
    """An onnxruntime CPU session on ``proto`` (single-threaded, quiet), exposing ``outputs``
    (tensor names with known element types) as extra graph outputs.

    With ``initializers`` (the loaded values, ``LoadedModel.initializers``) the model's large ones
    (``load.large_initializers``) come from those arrays, never serialised with the model: they
    are graph inputs fed at each run (``_WeightFed``), which onnxruntime reads in place, so the
    session holds no copy of the weights (AlexNet: 26 MiB instead of 261 MiB as external
    initializers, which onnxruntime copies; ~15 % more time per run: weight-dependent constant
    folding and prepacking are off). A loaded model's weights are detached from its proto
    (``load.detach_weights``), so it needs ``initializers``."""
    import onnxruntime as ort

    missing = [t.name for t in detached(proto) if t.name not in (initializers or {})]
    if missing:
        raise ValueError(f"ort_session: the values of the detached weights {missing[:3]} were not given")
    given = [t for t in large_initializers(proto)
             if t.name in (initializers or {}) and initializers[t.name].dtype in ARRAY_DTYPES]
    model = proto
    if outputs or given:
        model = without_initializers(proto, {t.name for t in given})
        have = {o.name for o in model.graph.output}
        for name, elem in outputs or []:
            if name not in have:
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    declared = {i.name for i in model.graph.input}
    model.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in given if t.name not in declared)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    if not given:
        return session
    return _WeightFed(session, {t.name: np.ascontiguousarray(initializers[t.name]) for t in given})


class _WeightFed:
    """An onnxruntime session whose weights are graph inputs: ``run`` feeds them; ``get_inputs``
    lists the model's own inputs only."""

    def __init__(self, session, weights: dict[str, np.ndarray]):
        self._session, self._weights = session, weights

    def run(self, outputs, feeds: dict) -> list:
        return self._session.run(outputs, {**feeds, **self._weights})

    def get_inputs(self) -> list:
        return [i for i in self._session.get_inputs() if i.name not in self._weights]

    def get_outputs(self) -> list:
        return self._session.get_outputs()


def check(graph: Graph, executor: Executor, nodes: list[str], box=None, seed: int = 0) -> GuardResult:
    """Run the guard on the analysed ``nodes``; raise on a mismatch (see the module docstring)."""
    t0 = time.perf_counter()
    custom = sorted({n.domain for n in graph.model.ort_proto.graph.node if n.domain not in ORT_DOMAINS})
    if custom:
        graph.diagnostics.append(Diagnostic("", "guard-skipped", f"no onnxruntime cross-check: the model uses op domain(s) "
                                            f"{', '.join(custom)} that onnxruntime does not know"))
        return GuardResult("skipped", time.perf_counter() - t0)
    types = graph.model.elem_types
    dynamic = [o for n in nodes for o in graph.views[n].outputs if o]
    folded = sorted({t for n in nodes for i, t in enumerate(graph.views[n].inputs)
                     if t and i in graph.views[n].constants and t not in graph.model.initializers})
    exposed = [(t, types[t]) for t in dynamic + folded if types.get(t)]
    try:
        sess = ort_session(graph.model.ort_proto, exposed, graph.model.initializers)
        names = [o.name for o in sess.get_outputs()]
        runs = [{**feeds, **dict(zip(names, sess.run(None, feeds)))} for feeds in _feeds(graph, sess, box, seed)]
    except Exception as exc:  # noqa: BLE001 - onnxruntime's verdict on the model
        raise InputError(f"{graph.model.path}: onnxruntime rejects the model: {_first_line(exc)}") from None
    compared = 0
    for values in runs:
        for t in folded:
            if t in values:
                _compare(graph, f"constant '{t}'", t, values[t], graph.constants[t], "folded value")
        for nid in nodes:
            budget.check()
            compared += _check_node(graph, executor, nid, values)
    return GuardResult("passed", time.perf_counter() - t0, compared // max(len(runs), 1), len(runs))


def _feeds(graph: Graph, sess, box, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng([seed, 0x6a7d])
    out = []
    for _ in range(SAMPLES):
        feeds = {}
        for i in sess.get_inputs():
            elem = graph.model.elem_types.get(i.name, onnx.TensorProto.FLOAT)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
            shape = graph.model.shapes[i.name]
            if i.name == graph.analysed and elem in FLOAT_TYPES:
                x = rng.uniform(box[0], box[1], shape) if box else rng.standard_normal(shape)
                feeds[i.name] = x.astype(dtype)
            else:  # a non-float analysed input (redirected): held at zero
                feeds[i.name] = np.zeros(shape, dtype=dtype)
        out.append(feeds)
    return out


def _check_node(graph: Graph, executor: Executor, nid: str, values: dict) -> int:
    view, rule = graph.views[nid], graph.rules[nid]
    outputs = [o for o in view.outputs if o]
    for o in outputs:
        if o in values and tuple(values[o].shape) != tuple(graph.shape(o)):
            raise InputError(f"{graph.model.path}: node '{nid}' ({view.op_type}) gives '{o}' the shape "
                             f"{list(values[o].shape)} in onnxruntime but {list(graph.shape(o))} by ONNX shape "
                             "inference: the model is outside the ONNX spec there")
    if rule is None or any(t and t not in values and t not in graph.constants for t in view.inputs):
        return len(outputs)
    feeds = {t: _tensor(values[t], executor) for t in view.inputs if t and t in values}
    try:
        with torch.no_grad():
            ours = executor.run_nodes([nid], feeds, keep=set(outputs))
    except NotImplementedError:
        if _not_applicable(rule, view):   # a configuration the rule refuses: no bound rests on it
            return len(outputs)
        raise SemanticMismatch(f"node '{nid}' ({view.op_type}): lipgraph's rule admits a configuration its "
                               "execution does not implement") from None
    except Exception as exc:  # noqa: BLE001 - the rule cannot execute what onnxruntime executes
        raise SemanticMismatch(f"node '{nid}' ({view.op_type}): lipgraph's execution fails where onnxruntime's "
                               f"succeeds: {_first_line(exc)}") from None
    for o in outputs:
        if o in values:
            _compare(graph, f"node '{nid}' ({view.op_type})", o, values[o], ours[o].detach().cpu().numpy(), "output",
                     lambda: _huge_inputs(view.inputs, values, graph.constants))
    return len(outputs)


def _huge_inputs(inputs, values: dict, constants: dict) -> bool:
    """Whether a float input of the node reaches √(float32 max / 2²⁰) ≈ 1.8·10¹⁶ (or is ±∞): its
    products and sums inside the node may overflow float32 even where its output is bounded (a
    GRU's gates), and the two executions round to ±∞ at different places. Read without copies."""
    big = math.sqrt(float(np.finfo(np.float32).max) / 2 ** 20)
    for t in inputs:
        v = np.asarray(values.get(t, constants.get(t))) if t else None
        if v is not None and v.dtype.kind == "f" and v.size and max(float(v.max()), -float(v.min())) >= big:
            return True
    return False


def _not_applicable(rule, view) -> bool:
    """The rule refuses the node (``check`` raises): the annotate pass has given it no bound, so it
    is reported like an op without a rule, and the lower bound of a model holding it comes from
    onnxruntime alone; a rule may leave such configurations unimplemented (NotImplementedError)."""
    try:
        rule.check(view)
    except RuleNotApplicable:
        return True
    return False


def _tensor(value: np.ndarray, executor: Executor) -> torch.Tensor:
    t = torch.as_tensor(np.array(value))
    return (t.to(executor.dtype) if t.is_floating_point() else t).to(executor.device)


def _compare(graph, where: str, name: str, want: np.ndarray, got: np.ndarray, what: str,
             huge_inputs: Callable[[], bool] = lambda: False) -> None:
    """Raise ``SemanticMismatch`` where ``got`` is not ``want`` (float: to RTOL of the scale, NaNs and
    infinities alike); a difference that overflow explains (huge values in or out: ``huge_inputs()``
    is asked only then) is noted ([overflow]) instead."""
    want, got = np.asarray(want), np.asarray(got)
    if want.shape != got.shape:
        raise SemanticMismatch(f"{where}: {what} '{name}' has shape {list(got.shape)} in lipgraph's execution "
                               f"but {list(want.shape)} in onnxruntime's")
    if want.dtype.kind in "fc":
        w, g = want.astype(np.float64), got.astype(np.float64)
        same_nan = np.isnan(w) == np.isnan(g)
        scale = float(np.max(np.abs(w[np.isfinite(w)]), initial=0.0))
        finite = np.isfinite(w) & np.isfinite(g)
        err = float(np.max(np.abs(w[finite] - g[finite]), initial=0.0))
        ok = same_nan.all() and np.array_equal(w[~finite & ~np.isnan(w)], g[~finite & ~np.isnan(w)]) \
            and err <= RTOL * scale + ATOL
    else:
        err, scale = float("nan"), float("nan")
        ok = np.array_equal(want, got.astype(want.dtype))
    if not ok and want.dtype.kind in "fc" and (_near_overflow(want, got) or huge_inputs()):
        graph.diagnostics.append(Diagnostic("", "overflow", f"{where}: {what} '{name}' overflows float32 (huge "
                                            "weights): onnxruntime's value could not be compared with lipgraph's"))
        return
    if not ok:
        raise SemanticMismatch(f"{where}: {what} '{name}' differs from onnxruntime's (max abs error {err:.3g}, "
                               f"scale {scale:.3g})")


def _near_overflow(want: np.ndarray, got: np.ndarray) -> bool:
    """Either side non-finite, or within a factor 2¹⁰ of float32's largest value: the two executions
    may round to ±∞ differently; a difference there is overflow, not semantics."""
    big = float(np.finfo(np.float32).max) / 1024
    w, g = np.abs(want.astype(np.float64)), np.abs(got.astype(np.float64))
    return not (np.isfinite(w).all() and np.isfinite(g).all()) or max(float(w.max(initial=0)), float(g.max(initial=0))) > big


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:300]
