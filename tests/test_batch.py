"""Audits of many models (issue 14 item 4): one row per model, one model's failure never stops
the others, the exit code is the worst, per-model reports on request, local processes or Ray."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import MODELS
from lipgraph.cli import main

FAST = ["--methods", "autolip", "-q"]


@pytest.fixture
def folder(tmp_path):
    """Two good models, one with an op lipgraph has no rule for, one corrupt file."""
    shutil.copy(MODELS / "mlp.onnx", tmp_path / "a_mlp.onnx")
    shutil.copy(MODELS / "affine.onnx", tmp_path / "b_affine.onnx")
    shutil.copy(MODELS / "unsupported.onnx", tmp_path / "c_unsupported.onnx")
    (tmp_path / "d_corrupt.onnx").write_bytes((MODELS / "mlp.onnx").read_bytes()[:200])
    return tmp_path


def rows_of(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, json.loads(out)["models"], err


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_folder_gives_one_row_per_model_and_the_worst_exit_code(capsys, folder, jobs):
    code, rows, err = rows_of(capsys, ["analyze", str(folder), *FAST, "--format", "json", "--jobs", jobs])
    assert code == 2 and "Traceback" not in err
    assert [r["model"].rsplit("/", 1)[1] for r in rows] == ["a_mlp.onnx", "b_affine.onnx", "c_unsupported.onnx",
                                                           "d_corrupt.onnx"]
    assert [r["status"] for r in rows] == ["certified", "certified", "not certified", "bad input"]
    assert [r["code"] for r in rows] == [0, 0, 1, 2]
    assert rows[0]["upper"] > 0 and rows[0]["label"] == "certified"
    assert "not a valid ONNX model" in rows[3]["message"] or "not an ONNX model" in rows[3]["message"]
    # the rows agree with analysing each model alone
    main(["analyze", str(folder / "a_mlp.onnx"), *FAST, "--format", "json"])
    alone = json.loads(capsys.readouterr().out)
    assert rows[0]["upper"] == alone["upper_bound"]["value"]


def test_text_table_and_reports(capsys, folder, tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    code = main(["analyze", str(folder / "a_mlp.onnx"), str(folder / "c_unsupported.onnx"),
                 str(folder / "missing.onnx"), *FAST, "--reports", str(reports), "--format", "html"])
    out, _ = capsys.readouterr()
    assert code == 2
    lines = out.strip().splitlines()
    assert lines[0].split()[:7] == ["model", "upper", "label", "lower", "gap", "seconds", "status"]
    assert "certified" in lines[1] and "not certified" in lines[2] and "bad input: " in lines[3]
    assert lines[-1] == "3 models: 1 certified, 1 not certified, 1 bad input"
    written = sorted(p.name for p in reports.iterdir())
    assert written == ["000-a_mlp.html", "001-c_unsupported.html"]


def test_fail_above_applies_per_model(capsys, folder):
    code, rows, _ = rows_of(capsys, ["analyze", str(folder / "a_mlp.onnx"), str(folder / "b_affine.onnx"), *FAST,
                                     "--format", "json", "--fail-above", "3"])
    by = {r["model"].rsplit("/", 1)[1]: r for r in rows}
    assert code == max(r["code"] for r in rows) == 1
    for r in rows:
        assert (r["code"] == 1) == (r["upper"] > 3) and (r["code"] == 1) == ("--fail-above" in r["message"])
    assert any(r["code"] == 0 for r in by.values())


def test_ray_backend(capsys, folder):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'lipgraph[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        code, rows, _ = rows_of(capsys, ["analyze", str(folder), *FAST, "--format", "json", "--ray", "auto"])
    finally:
        ray.shutdown()
    assert code == 2 and [r["status"] for r in rows] == ["certified", "certified", "not certified", "bad input"]
