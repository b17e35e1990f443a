"""The command line: bad input gets one line and exit 2, unsupported ops are listed at once,
JSON follows the contract, exit codes follow --fail-above, rules can be added and assumed."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS
from lipgraph.cli import main

FAST = ["--methods", "autolip,autolip-power", "-q"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def mlp_model(op="Relu", dim="1", n_ops=1, extra_nodes=()):
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(2, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h0"], transB=1)]
    for k in range(n_ops):
        nodes.append(helper.make_node(op, [f"h{k}"], [f"h{k + 1}"]))
    nodes += list(extra_nodes)
    nodes.append(helper.make_node("Gemm", [f"h{n_ops}", "w2"], ["y"], transB=1))
    shape = [dim if not dim.isdigit() else int(dim), 3]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def assert_one_line_error(code, out, err, *words):
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lipgraph: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


def test_missing_file(capsys, tmp_path):
    assert_one_line_error(*run(["analyze", str(tmp_path / "nope.onnx")], capsys), "no such file")


def test_not_onnx(capsys, tmp_path):
    p = tmp_path / "text.onnx"
    p.write_text("this is not a model\n" * 10)
    assert_one_line_error(*run(["analyze", str(p)], capsys), "not")


def test_truncated(capsys, tmp_path):
    data = (MODELS / "lenet.onnx").read_bytes()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    assert_one_line_error(*run(["analyze", str(p)], capsys))


def _external(tmp_path):
    model = mlp_model()
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)
    return path


def test_external_data_loads(capsys, tmp_path):
    code, out, _ = run(["analyze", str(_external(tmp_path)), *FAST], capsys)
    assert code == 0 and "certified upper" in out


def test_missing_external_data(capsys, tmp_path):
    path = _external(tmp_path)
    (tmp_path / "ext.data").unlink()
    assert_one_line_error(*run(["analyze", str(path)], capsys), "missing")


def test_external_data_outside_folder(capsys, tmp_path):
    path = _external(tmp_path)
    sub = tmp_path / "sub"
    sub.mkdir()
    model = onnx.load(path, load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../ext.data"
    onnx.save(model, sub / "m.onnx")
    assert_one_line_error(*run(["analyze", str(sub / "m.onnx")], capsys), "outside")


def test_unknown_input_name(capsys):
    assert_one_line_error(*run(["analyze", str(MODELS / "mlp.onnx"), "--input", "nope"], capsys), "nope")


def test_dynamic_batch_dim_then_pinned(capsys, tmp_path):
    p = tmp_path / "dyn.onnx"
    onnx.save(mlp_model(dim="batch"), p)
    code, out, _ = run(["analyze", str(p), *FAST], capsys)
    assert code == 0 and "[1, 3]" in out and "batch-dim" in out
    code, out, _ = run(["analyze", str(p), "--input-shape", "x:2,3", *FAST], capsys)
    assert code == 0 and "[2, 3]" in out and "batch-dim" not in out


def test_nan_weight(capsys, tmp_path):
    model = mlp_model()
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[0, 0] = np.nan
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w1"))
    p = tmp_path / "nan.onnx"
    onnx.save(model, p)
    assert_one_line_error(*run(["analyze", str(p)], capsys), "NaN", "w1")


@pytest.mark.parametrize("op", ["If", "Loop"])
def test_control_flow(capsys, tmp_path, op):
    body = helper.make_graph([helper.make_node("Identity", ["h0"], ["b"])], "body", [],
                             [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    if op == "If":   # a condition computed from the analysed input (a constant one selects its branch)
        extra = [helper.make_node("ReduceSum", ["h0"], ["s"], keepdims=0),
                 helper.make_node("Cast", ["s"], ["c"], to=TensorProto.BOOL),
                 helper.make_node("If", ["c"], ["h1x"], then_branch=body, else_branch=body)]
    else:
        extra = [helper.make_node("Loop", ["", ""], ["h1x"], body=body)]
    model = mlp_model(n_ops=0, extra_nodes=extra)
    p = tmp_path / "cf.onnx"
    onnx.save(model, p)
    assert_one_line_error(*run(["analyze", str(p)], capsys), op)


def test_nothing_written_on_bad_input(capsys, tmp_path):
    out = tmp_path / "report.json"
    code, _, _ = run(["analyze", str(tmp_path / "missing.onnx"), "-o", str(out)], capsys)
    assert code == 2 and not out.exists()


def test_unsupported_ops_listed_at_once(capsys, tmp_path):
    p = tmp_path / "sin.onnx"
    model = mlp_model(op="Sin", n_ops=2, extra_nodes=[helper.make_node("Cos", ["h2"], ["h2c"])])
    model.graph.node[-1].input[0] = "h2c"
    onnx.save(model, p)
    code, out, err = run(["analyze", str(p), *FAST], capsys)
    assert code == 1
    line = next(l for l in out.splitlines() if "[unsupported-op]" in l)
    assert "Sin ×2" in line and "Cos ×1" in line and "--plugin" in line and "--assume" in line
    assert sum("[unsupported-op]" in l for l in out.splitlines()) == 1
    assert "NOT CERTIFIED" in out


def test_bundled_unsupported_model_exit_1(capsys):
    code, out, _ = run(["analyze", str(MODELS / "unsupported.onnx"), *FAST], capsys)
    assert code == 1 and "Sin ×1" in out


def test_assume_makes_it_finite(capsys):
    code, out, _ = run(["analyze", str(MODELS / "unsupported.onnx"), "--assume", "Sin=1", "--format", "json", *FAST],
                       capsys)
    report = json.loads(out)
    assert code == 0
    assert report["upper_bound"]["label"] == "assumed"
    assert any(d["code"] == "assumed" for d in report["diagnostics"])


def test_plugin_rule(capsys, tmp_path, monkeypatch, isolated_registry):
    (tmp_path / "my_sin_rule.py").write_text(textwrap.dedent('''
        import torch
        from lipgraph import Kind, Rule, rule

        @rule("Sin", versions=(7,), kind=Kind.ACTIVATION)
        class Sin(Rule):
            """sin is 1-Lipschitz: slopes in [-1, 1]."""
            def forward(self, node, x):
                return torch.sin(x)
            def slopes(self, node):
                return -1.0, 1.0
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run(["analyze", str(MODELS / "unsupported.onnx"), "--plugin", "my_sin_rule", "--format", "json",
                        *FAST], capsys)
    report = json.loads(out)
    assert code == 0 and report["upper_bound"]["label"] == "certified"
    code, out, _ = run(["rules", "--plugin", "my_sin_rule"], capsys)
    assert any(l.startswith("Sin ") and "my_sin_rule" in l for l in out.splitlines())


def test_duplicate_rule_is_an_error():
    from lipgraph import Kind, Rule, rule
    from lipgraph.registry import Registry
    reg = Registry()
    hooks = {"forward": lambda self, node, x: x, "slopes": lambda self, node: (0.0, 1.0)}
    rule("Foo", versions=(1,), kind=Kind.ACTIVATION, domain="x.test", registry=reg)(type("A", (Rule,), hooks))
    with pytest.raises(ValueError, match="already registered"):
        rule("Foo", versions=(1,), kind=Kind.ACTIVATION, domain="x.test", registry=reg)(type("B", (Rule,), hooks))
    rule("Foo", versions=(1,), kind=Kind.ACTIVATION, domain="x.test", registry=reg,
         override=True)(type("C", (Rule,), hooks))
    assert type(reg.resolve("x.test", "Foo", 3)[0]).__name__ == "C"


@pytest.mark.parametrize("kind, hooks, missing", [
    ("ACTIVATION", {"forward"}, "slopes"), ("NONLINEAR", {"forward"}, "bounds"),
    ("COMBINE", {"forward"}, "bounds"), ("AFFINE", set(), "forward")])
def test_rule_missing_a_hook_its_kind_requires_is_refused(kind, hooks, missing):
    from lipgraph import Kind, Rule, rule
    from lipgraph.registry import Registry
    body = {h: (lambda self, *a: None) for h in hooks}
    with pytest.raises(TypeError, match=rf"rule Bad .*does not define {missing}"):
        rule("Bad", versions=(1,), kind=Kind[kind], domain="x.test", registry=Registry())(type("Bad", (Rule,), body))


def test_plugin_activation_without_slopes_is_exit_2(capsys, tmp_path, monkeypatch, isolated_registry):
    (tmp_path / "noslopes.py").write_text(
        "import torch\nfrom lipgraph import Kind, Rule, rule\n"
        "@rule('Softsign', versions=(1,), kind=Kind.ACTIVATION, domain='x.plugin')\n"
        "class MySoftsign(Rule):\n    def forward(self, node, x):\n        return x / (1 + x.abs())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run(["analyze", str(MODELS / "mlp.onnx"), "--plugin", "noslopes", *FAST], capsys)
    assert_one_line_error(code, out, err, "MySoftsign", "slopes")


def test_json_contract(capsys, tmp_path):
    out_file = tmp_path / "r.json"
    code, out, _ = run(["analyze", str(MODELS / "mlp.onnx"), "--format", "json", "-o", str(out_file), *FAST], capsys)
    assert code == 0 and out == ""
    report = json.loads(out_file.read_text())
    for key in ["lipgraph", "model", "norm", "input", "output", "upper_bound", "lower_bound", "gap", "methods",
                "nodes", "chains", "diagnostics"]:
        assert key in report
    assert report["norm"] == "l2" and report["input"] == "x" and report["output"] == "y"
    assert report["upper_bound"]["label"] in ("certified", "exact")
    names = {m["name"]: m for m in report["methods"]}
    assert names["autolip-power"]["label"] == "estimate"
    assert report["upper_bound"]["value"] == names["autolip"]["value"]
    assert {"name", "op", "kind", "bound", "label", "method"} <= set(report["nodes"][0])


def test_fail_above(capsys):
    code, out, _ = run(["analyze", str(MODELS / "mlp.onnx"), "--format", "json", *FAST], capsys)
    bound = json.loads(out)["upper_bound"]["value"]
    assert run(["analyze", str(MODELS / "mlp.onnx"), "--fail-above", str(bound * 1.01), *FAST], capsys)[0] == 0
    assert run(["analyze", str(MODELS / "mlp.onnx"), "--fail-above", str(bound * 0.99), *FAST], capsys)[0] == 1


def test_text_report_has_table_total_and_summary(capsys):
    code, out, _ = run(["analyze", str(MODELS / "lenet.onnx"), *FAST], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("lipgraph ") and "opset 17" in lines[0]
    assert any(l.startswith("Total") for l in lines)
    assert lines[-1].startswith("certified upper")
    assert sum(" MaxPool " in f" {l} " for l in lines) == 2


def test_rule_docs(capsys):
    code, out, _ = run(["rule", "Conv"], capsys)
    assert code == 0 and "Bound" in out and "Conv" in out
    code, out, err = run(["rule", "NoSuchOp"], capsys)
    assert code == 2 and "no rule" in err


def test_console_script_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lipgraph", "analyze", str(tmp_path / "x.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_gpu_is_bad_input(capsys):
    assert_one_line_error(*run(["analyze", str(MODELS / "mlp.onnx"), "--device", "cuda"], capsys), "cuda")


def test_progress_goes_to_stderr_after_the_threshold():
    import io
    from lipgraph.progress import Progress
    quiet, loud = io.StringIO(), io.StringIO()
    Progress(after=3600, stream=quiet)("norming")
    Progress(after=0, stream=loud)("norming segment x")
    assert quiet.getvalue() == "" and "norming segment x" in loud.getvalue()
