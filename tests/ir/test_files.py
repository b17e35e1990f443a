"""File-level safety (lipgraph/ir/files.py): external data that escapes the model's folder — a
'..', an absolute path, a symlink that resolves outside — or that is shorter than declared is
refused with one line (exit 2), and nothing outside the folder is opened."""
from __future__ import annotations

import builtins
import io
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lipgraph.cli import main

FAST = ["--methods", "autolip", "-q"]


def _model_with_external(folder: Path) -> Path:
    """models/…/m.onnx whose weight lives in m.data next to it."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, location="m.data", size_threshold=0)
    return path


def _relocate(path: Path, **info) -> None:
    model = onnx.load(path, load_external_data=False)
    entries = model.graph.initializer[0].external_data
    for key, value in info.items():
        found = [e for e in entries if e.key == key]
        entry = found[0] if found else entries.add()
        entry.key, entry.value = key, str(value)
    onnx.save(model, path)


@pytest.fixture
def opened(monkeypatch):
    """Every path the analysis opens through Python's open()."""
    seen: list[str] = []
    real = builtins.open

    def spy(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)):
            seen.append(os.path.realpath(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)
    return seen


def _refused(path, capsys, opened, outside: Path, *words):
    opened.clear()   # what the test's own setup opened does not count
    code = main(["analyze", str(path), *FAST])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("lipgraph: error:"), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not [p for p in opened if p.startswith(str(outside.resolve()))], opened


def test_external_data_inside_the_folder_loads(tmp_path, capsys):
    assert main(["analyze", str(_model_with_external(tmp_path / "models")), *FAST]) == 0


def test_dotdot_is_refused(tmp_path, capsys, opened):
    path = _model_with_external(tmp_path / "models")
    secret = tmp_path / "secret"
    secret.mkdir()
    (tmp_path / "models" / "m.data").rename(secret / "m.data")
    _relocate(path, location="../secret/m.data")
    _refused(path, capsys, opened, secret, "outside the model's folder", "..")


def test_dotdot_that_comes_back_inside_is_refused_too(tmp_path, capsys, opened):
    path = _model_with_external(tmp_path / "models")
    _relocate(path, location="../models/m.data")
    _refused(path, capsys, opened, tmp_path / "nowhere", "outside the model's folder")


def test_absolute_path_is_refused(tmp_path, capsys, opened):
    path = _model_with_external(tmp_path / "models")
    secret = tmp_path / "secret"
    secret.mkdir()
    target = (tmp_path / "models" / "m.data").rename(secret / "m.data")
    _relocate(path, location=str(target.resolve()))
    _refused(path, capsys, opened, secret, "outside the model's folder")


def test_symlink_leaving_the_folder_is_refused(tmp_path, capsys, opened):
    path = _model_with_external(tmp_path / "models")
    secret = tmp_path / "secret"
    secret.mkdir()
    target = (tmp_path / "models" / "m.data").rename(secret / "m.data")
    (tmp_path / "models" / "m.data").symlink_to(target)
    _refused(path, capsys, opened, secret, "outside the model's folder", "resolves to")


def test_symlink_inside_the_folder_is_fine(tmp_path, capsys):
    path = _model_with_external(tmp_path / "models")
    (tmp_path / "models" / "m.data").rename(tmp_path / "models" / "real.data")
    (tmp_path / "models" / "m.data").symlink_to(tmp_path / "models" / "real.data")
    assert main(["analyze", str(path), *FAST]) == 0


@pytest.mark.parametrize("info", [{"length": 10_000}, {"offset": 40, "length": 48}, {"offset": -4}])
def test_declared_length_past_the_end_of_the_file(tmp_path, capsys, opened, info):
    path = _model_with_external(tmp_path / "models")
    _relocate(path, **info)
    _refused(path, capsys, opened, tmp_path / "nowhere", "past the end", "too short")


def test_data_file_that_is_not_a_regular_file(tmp_path, capsys, opened):
    path = _model_with_external(tmp_path / "models")
    (tmp_path / "models" / "m.data").unlink()
    (tmp_path / "models" / "m.data").mkdir()
    _refused(path, capsys, opened, tmp_path / "nowhere", "missing (or not a regular file)")


def test_tensor_in_a_subgraph_is_checked_too(tmp_path, capsys, opened):
    """onnx's own loader would read tensors inside subgraph attributes; lipgraph checks them all."""
    path = _model_with_external(tmp_path / "models")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "s.data").write_bytes(b"\0" * 16)
    model = onnx.load(path, load_external_data=False)
    t = helper.make_tensor("c", TensorProto.FLOAT, [4], [0.0] * 4)
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../secret/s.data"), ("length", "16")):
        e = t.external_data.add()
        e.key, e.value = k, v
    body = helper.make_graph([helper.make_node("Constant", [], ["b"], value=t)], "body", [],
                             [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    model.graph.node.append(helper.make_node("If", ["cond"], ["z"], then_branch=body, else_branch=body))
    onnx.save(model, path)
    _refused(path, capsys, opened, secret, "outside the model's folder")
