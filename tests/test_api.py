"""The Python API (issue 14 item 1): ``lipgraph.analyze`` returns the command line's JSON
document as typed objects, in-memory models and torch modules included; errors are exceptions
carrying the command line's one-line messages."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch

import lipgraph
from conftest import MODELS
from lipgraph.cli import main

#: Deterministic and quick: AutoLip (certified) and a fixed number of lower-bound rounds (the
#: plumbing under test is the same for every method; SeqLip's chains are compared on mlp below).
METHODS = "autolip,lower"
CLI_FLAGS = ["--methods", METHODS, "--lower-restarts", "1", "--seed", "3", "--format", "json", "-q"]
OPTIONS = lipgraph.options.Options(methods=tuple(METHODS.split(",")), seed=3,
                                   lower=lipgraph.options.LowerOptions(restarts=1))


def without_seconds(doc):
    """The document with every wall-clock field removed (they differ run to run)."""
    if isinstance(doc, dict):
        return {k: without_seconds(v) for k, v in doc.items() if k not in ("seconds",)}
    if isinstance(doc, list):
        return [without_seconds(v) for v in doc]
    return doc


def cli_json(capsys, path, *extra):
    code = main(["analyze", str(path), *CLI_FLAGS, *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else None, err


@pytest.mark.parametrize("name", sorted(p.stem for p in MODELS.glob("*.onnx")))
def test_analyze_equals_the_cli_json(capsys, name):
    path = MODELS / f"{name}.onnx"
    code, doc, _ = cli_json(capsys, path)
    report = lipgraph.analyze(str(path), options=OPTIONS)
    assert without_seconds(report.to_json()) == without_seconds(doc)
    # the typed view reads the same document
    assert report.certified == (code == 0) == (doc["upper_bound"] is not None)
    if report.certified:
        assert report.upper.value == doc["upper_bound"]["value"] and report.upper.is_bound
        assert report.upper.label.value == doc["upper_bound"]["label"]
    assert report.lower == (doc["lower_bound"] or {}).get("value")
    assert [m.name for m in report.methods] == [m["name"] for m in doc["methods"]]
    assert all((m.value == math.inf) == (d["value"] is None) for m, d in zip(report.methods, doc["methods"]))
    assert [(r.name, r.bound) for r in report.nodes] == [(r["name"], r["bound"]) for r in doc["table"]]
    assert [(d.code, d.node, d.severity) for d in report.diagnostics] == \
        [(d["code"], d["node"], d["severity"]) for d in doc["diagnostics"]]
    assert report.to_text().startswith("lipgraph ")


def test_in_memory_model_equals_its_file():
    path = MODELS / "mlp.onnx"
    from_file = lipgraph.analyze(path, options=OPTIONS).to_json()
    in_memory = lipgraph.analyze(onnx.load(path), options=OPTIONS).to_json()
    assert in_memory["model"].startswith("<in-memory model")
    assert without_seconds({**in_memory, "model": ""}) == without_seconds({**from_file, "model": ""})


def test_keywords_match_the_cli_flags(capsys):
    path = MODELS / "mlp.onnx"
    _, doc, _ = cli_json(capsys, path, "--input-box", "0,1", "--methods", "autolip,seqlip,lower")
    assert doc["chains"]
    report = lipgraph.analyze(path, methods=["autolip", "seqlip", "lower"], seed=3, box=(0, 1),
                              options=lipgraph.options.Options(lower=lipgraph.options.LowerOptions(restarts=1)))
    assert without_seconds(report.to_json()) == without_seconds(doc)


class SmallMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("dynamo", [False, True])
def test_analyze_module_equals_its_exported_file(capsys, tmp_path, dynamo):
    module, x = SmallMLP().eval(), torch.zeros(1, 6)
    report = lipgraph.analyze_module(module, x, dynamo=dynamo, options=OPTIONS)
    path = tmp_path / "mlp.onnx"
    if dynamo:
        torch.onnx.export(module, (x,), str(path), dynamo=True, opset_version=18, external_data=False,
                          input_names=["x"], output_names=["y"], verbose=False)
    else:
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"])
    _, doc, _ = cli_json(capsys, path)
    assert without_seconds({**report.to_json(), "model": ""}) == without_seconds({**doc, "model": ""})
    # and the bound is a bound: ‖W2‖·‖W1‖ ≥ it ≥ sampled ratios
    w1, w2 = (module.net[k].weight.detach().double().numpy() for k in (0, 2))
    assert report.upper.value <= np.linalg.norm(w2, 2) * np.linalg.norm(w1, 2) * (1 + 1e-6)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for _ in range(200):
            a, b = (torch.tensor(rng.normal(size=(1, 6)) * 3, dtype=torch.float32) for _ in range(2))
            ratio = float(torch.linalg.norm(module(a) - module(b)) / torch.linalg.norm(a - b))
            assert ratio <= report.upper.value * (1 + 1e-5)


@pytest.mark.parametrize("argv, call", [
    (["analyze", "missing.onnx"], lambda: lipgraph.analyze("missing.onnx")),
    (["analyze", str(MODELS / "mlp.onnx"), "--methods", "nope"],
     lambda: lipgraph.analyze(MODELS / "mlp.onnx", methods=["nope"])),
    (["analyze", str(MODELS / "mlp.onnx"), "--input", "zz"], lambda: lipgraph.analyze(MODELS / "mlp.onnx", input="zz")),
])
def test_errors_are_exceptions_with_the_cli_message(capsys, argv, call):
    assert main(argv) == 2
    line = capsys.readouterr().err.strip()
    with pytest.raises(lipgraph.InputError) as info:
        call()
    assert line == f"lipgraph: error: {info.value}"
