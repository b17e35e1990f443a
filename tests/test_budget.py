"""Budgets (issue 15 item 3): --time-limit stops the whole analysis with a partial report (exit 4)
listing what did not finish; --memory-limit makes a large convolution take the cheaper route
(the DFT bound in frequency chunks) or refuse, with a note — never an out-of-memory kill."""
from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS
from lipgraph import budget
from lipgraph.certify.conv import conv_certified_norm
from lipgraph.certify.dense import power_iteration
from lipgraph.cli import EXIT_PARTIAL, _memory, main

#: Seconds past the limit a run may take: the step running when it fires (one factorisation),
#: lazy imports torch makes on first use, the report.
SLACK = 2.5


def test_time_limit_on_the_resnet_style_network_gives_a_partial_report(tmp_path, capsys):
    """models/resnet_small.onnx (residual blocks, BatchNorm, ReLU; ~20 s with every method) under
    --time-limit 2: back within 2 s + slack, exit 4, the report says which methods did not finish."""
    out = tmp_path / "r.json"
    t0 = time.perf_counter()
    code = main(["analyze", str(MODELS / "resnet_small.onnx"), "--time-limit", "2", "--format", "json",
                 "-o", str(out), "-q"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert elapsed < 2 + SLACK, elapsed
    assert code == EXIT_PARTIAL and "partial result" in err and "Traceback" not in err
    doc = json.loads(out.read_text())
    assert doc["partial"] is True and doc["unfinished"]
    assert {"seqlip", "lipsdp", "lower"} & set(doc["unfinished"])
    assert not {m["name"] for m in doc["methods"]} & set(doc["unfinished"])
    assert any(d["code"] == "time-limit" for d in doc["diagnostics"])


def test_a_generous_time_limit_changes_nothing(capsys):
    args = ["analyze", str(MODELS / "mlp.onnx"), "--methods", "autolip", "-q", "--format", "json"]
    docs = []
    for extra in ([], ["--time-limit", "600"]):
        assert main(args + extra) == 0
        doc = json.loads(capsys.readouterr().out)
        docs.append({k: v for k, v in doc.items() if k not in ("methods", "checks")})
        assert doc["partial"] is False and doc["unfinished"] == []
    assert docs[0] == docs[1]


def test_power_iteration_stops_at_the_deadline():
    w = torch.randn(50, 50, generator=torch.Generator().manual_seed(0))
    with budget.active(budget.Budget(deadline=time.monotonic() - 1)), pytest.raises(budget.TimeUp):
        power_iteration(lambda x: x @ w.T, (1, 50))


@pytest.mark.parametrize("spec, want", [("4096", 4096), ("2K", 2048), ("1.5M", 3 << 19), ("1G", 1 << 30),
                                        ("2GiB", 2 << 30)])
def test_memory_limit_sizes(spec, want):
    assert _memory(spec) == want


def test_bad_limits_are_bad_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(MODELS / "mlp.onnx"), "--memory-limit", "lots"])
    assert exc.value.code == 2 and "not a size" in capsys.readouterr().err
    assert main(["analyze", str(MODELS / "mlp.onnx"), "--time-limit", "0"]) == 2


def _large_conv(tmp_path, channels=32, size=40):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) / 10
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "conv.onnx"
    onnx.save(model, path)
    return path, w.astype(np.float64)


def test_memory_limit_makes_a_large_conv_take_the_cheaper_route(tmp_path, capsys):
    """32→32 channels, 3×3, on 40×40: the DFT bound over all 840 frequencies at once needs ~80 MiB;
    with --memory-limit 4M it is computed in chunks — the same certified value as the FFT route
    (independently: conv_certified_norm without limit, DFT only), with a [memory-limit] note."""
    path, w = _large_conv(tmp_path)
    code = main(["analyze", str(path), "--methods", "autolip", "--memory-limit", "4M", "--format", "json", "-q"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    notes = [d["message"] for d in doc["diagnostics"] if d["code"] == "memory-limit"]
    assert any("computed in smaller chunks" in n for n in notes), notes
    dft = conv_certified_norm(w, (40, 40), strides=[1, 1], dilations=[1, 1], pads=[1, 1, 1, 1], materialize_limit=0,
                              proof_flops=0)
    assert doc["upper_bound"]["value"] == pytest.approx(dft.value, rel=1e-9)


def test_memory_limit_below_one_frequency_refuses_that_certificate(tmp_path, capsys):
    path, _ = _large_conv(tmp_path, channels=8, size=12)
    code = main(["analyze", str(path), "--methods", "autolip", "--memory-limit", "1K", "--format", "json", "-q"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["upper_bound"] is None
    assert any("no DFT bound" in d["message"] for d in doc["diagnostics"] if d["code"] == "memory-limit")
