"""The Python API: ``lipgraph.analyze`` (an ONNX file or ``ModelProto``) and
``lipgraph.analyze_module`` (a torch module, exported in memory), returning a ``Report``.

A ``Report`` is a typed view of the report document (``lipgraph.report.document``), the same
dict the command line prints with ``--format json``: ``Report.to_json()`` *is* that document.
Errors are exceptions with the command line's one-line messages: ``InputError`` for bad input
(the CLI's exit 2), ``SemanticMismatch`` when lipgraph's reading of a node disagrees with
onnxruntime's (exit 3).
"""
from __future__ import annotations

import copy
import dataclasses
import io
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx

from lipgraph.diagnostics import Diagnostic
from lipgraph.errors import InputError
from lipgraph.labels import Label
from lipgraph.options import Domain, Options, check_methods


@dataclass(frozen=True)
class MethodValue:
    """One method's value for the model: ``value`` is ``math.inf`` when it gave no finite one."""

    name: str
    value: float
    label: Label
    seconds: float

    @property
    def is_bound(self) -> bool:
        return self.label.is_bound


@dataclass(frozen=True)
class NodeRow:
    """One analysed node (or multi-node affine segment) of the per-node table."""

    name: str
    op: str
    kind: str
    bound: float | None          # None: no bound of its own (inside a segment) or ∞ (see ``label``)
    label: Label | None
    method: str
    segment: str | None
    share: float | None          # share of log(bound) in the AutoLip product


@dataclass(frozen=True)
class Report:
    """The result of an analysis; every field is read from ``document`` (the JSON report)."""

    document: dict

    @property
    def upper(self) -> MethodValue | None:
        """The headline certified upper bound (the best bound-labelled method), or None."""
        up = self.document["upper_bound"]
        return next((m for m in self.methods if m.name == up["method"]), None) if up else None

    @property
    def lower(self) -> float | None:
        low = self.document["lower_bound"]
        return low["value"] if low else None

    @property
    def gap(self) -> float | None:
        return self.document["gap"]

    @property
    def certified(self) -> bool:
        return self.upper is not None

    @property
    def methods(self) -> list[MethodValue]:
        return [MethodValue(m["name"], math.inf if m["value"] is None else m["value"], Label(m["label"]),
                            m["seconds"]) for m in self.document["methods"]]

    @property
    def nodes(self) -> list[NodeRow]:
        return [NodeRow(r["name"], r["op"], r["kind"], r["bound"], Label(r["label"]) if r["label"] else None,
                        r["method"], r["segment"], r["share"]) for r in self.document["table"]]

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [Diagnostic(d["node"], d["code"], d["message"], d.get("data", {})) for d in self.document["diagnostics"]]

    def to_json(self) -> dict:
        """The command line's JSON document (a copy)."""
        return copy.deepcopy(self.document)

    def to_text(self, verbose: bool = False) -> str:
        from lipgraph.report import text
        return text.render(self.document, verbose)


def analyze(model: str | os.PathLike | onnx.ModelProto, *, input: str | None = None, output: str | None = None,
            input_shape: Mapping[str, Sequence[int]] | None = None, fix: Mapping[str, Any] | None = None,
            methods: Sequence[str] | None = None, box: tuple[Any, Any] | None = None, seed: int | None = None,
            device: str | None = None, assume: Mapping[str, float] | None = None, plugins: Sequence[str] = (),
            options: Options | None = None, progress: Callable[[str], None] | None = None) -> Report:
    """Analyse ``model`` (a path, or a ``ModelProto`` held in memory) and return its ``Report``.

    Keywords mirror the command line: ``input``/``output`` (names), ``input_shape`` ({name: dims},
    ``--input-shape``), ``fix`` ({name: number or .npy path}, ``--fix``), ``methods`` (default: all),
    ``box`` ((lo, hi): numbers or arrays of the input's shape, ``--input-box``; every bound is then
    on that box), ``seed``, ``device``, ``assume`` ({op: L}), ``plugins``
    (modules of rules). ``options`` gives every other setting; keywords override it.
    """
    from lipgraph.pipeline import analyze as run_pipeline
    from lipgraph.report.document import to_json

    opts = _options(options or Options(), input=input, output=output, input_shape=input_shape, fix=fix,
                    methods=methods, box=box, seed=seed, device=device, assume=assume, plugins=plugins)
    if isinstance(model, onnx.ModelProto):
        name = f"<in-memory model '{model.graph.name or 'graph'}'>"
        with tempfile.TemporaryDirectory(prefix="lipgraph-") as folder:
            path = Path(folder) / "model.onnx"
            path.write_bytes(model.SerializeToString())
            try:
                analysis = run_pipeline(path, opts, progress or (lambda s: None))
            except InputError as exc:
                raise InputError(str(exc).replace(str(path), name)) from None
            return Report(to_json(analysis, name))
    analysis = run_pipeline(model, opts, progress or (lambda s: None))
    return Report(to_json(analysis, str(model)))


def analyze_module(module, example_input, *, dynamo: bool = False, opset: int = 17, **kwargs) -> Report:
    """Export the torch ``module`` on ``example_input`` to ONNX in memory (TorchScript exporter by
    default, ``dynamo=True`` for the dynamo one; the module is exported in eval mode) and analyse it
    with ``analyze``'s keywords."""
    import torch

    if dynamo:
        try:
            import onnxscript  # noqa: F401 - the dynamo exporter's dependency
        except ImportError:
            raise InputError("analyze_module(dynamo=True) needs onnxscript: pip install 'lipgraph[export]'") from None
    buffer = io.BytesIO()
    with torch.no_grad():
        if dynamo:
            program = torch.onnx.export(module, (example_input,), dynamo=True, opset_version=max(opset, 18),
                                        input_names=["x"], output_names=["y"], verbose=False)
            proto = program.model_proto
        else:
            torch.onnx.export(module, (example_input,), buffer, dynamo=False, opset_version=opset,
                              input_names=["x"], output_names=["y"])
            proto = onnx.load_from_string(buffer.getvalue())
    return analyze(proto, **kwargs)


def _options(base: Options, *, input, output, input_shape, fix, methods, box, seed, device, assume,
             plugins) -> Options:
    changes: dict[str, Any] = {}
    if input is not None:
        changes["input"] = input
    if output is not None:
        changes["output"] = output
    if input_shape is not None:
        changes["input_shapes"] = {k: tuple(int(d) for d in v) for k, v in input_shape.items()}
    if fix is not None:
        changes["fixed"] = {k: v if isinstance(v, (str, np.ndarray)) else str(v) for k, v in fix.items()}
    if methods is not None:
        changes["methods"] = check_methods(tuple(methods))
    if seed is not None:
        changes["seed"] = seed
    if device is not None:
        changes["device"] = device
    if assume is not None:
        changes["assume"] = dict(assume)
    if plugins:
        changes["plugins"] = tuple(plugins)
    if box is not None:
        lo, hi = (np.asarray(v, np.float64) if np.ndim(v) else float(v) for v in box)
        changes["domain"] = Domain(lo, hi, "box=(lo, hi)").checked()
    return dataclasses.replace(base, **changes)
