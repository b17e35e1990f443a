"""The analysed domain: ``--input-box LO,HI``, ``--input-box FILE.npz``, ``--around FILE.npy
--radius R``; bad boxes are bad input (exit 2, one line)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import MODELS
from lipgraph.cli import main

BASE = ["analyze", str(MODELS / "mlp.onnx"), "-q", "--methods", "autolip,lower", "--lower-restarts", "1"]
SHAPE = (1, 20)   # mlp.onnx's input


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def bad(argv, capsys, *words):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err
    return err


@pytest.mark.parametrize("spec, words", [
    ("1,0", ("lo > hi",)), ("nan,1", ("NaN",)), ("0,inf", ("finite",)), ("0", ("LO,HI",)),
    ("1,1", ("single point",)), ("a,b", ("LO,HI",))])
def test_bad_scalar_box(spec, words, capsys):
    bad([*BASE, "--input-box", spec], capsys, "--input-box", *words)


def test_bad_box_files(tmp_path, capsys):
    z = tmp_path / "b.npz"
    np.savez(z, lo=np.zeros(SHAPE))
    bad([*BASE, "--input-box", str(z)], capsys, "'hi'")
    np.savez(z, lo=np.ones(SHAPE), hi=np.zeros(SHAPE))
    bad([*BASE, "--input-box", str(z)], capsys, "lo > hi")
    np.savez(z, lo=np.zeros((1, 7)), hi=np.ones((1, 7)))
    bad([*BASE, "--input-box", str(z)], capsys, "does not match")
    hi = np.ones(SHAPE)
    hi[0, 3] = np.nan
    np.savez(z, lo=np.zeros(SHAPE), hi=hi)
    bad([*BASE, "--input-box", str(z)], capsys, "NaN")
    bad([*BASE, "--input-box", str(tmp_path / "missing.npz")], capsys, "cannot read")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 5)))
    bad([*BASE, "--around", str(x), "--radius", "0.1"], capsys, "does not match")
    np.save(x, np.zeros(SHAPE))
    bad([*BASE, "--around", str(x), "--radius", "-1"], capsys, "positive")
    bad([*BASE, "--around", str(x)], capsys, "go together")
    bad([*BASE, "--around", str(x), "--radius", "1", "--input-box", "0,1"], capsys, "use one")


def test_box_forms_agree(tmp_path, capsys):
    """The same box given three ways gives the same domain for the lower search and its points."""
    x0 = np.full(SHAPE, 0.5)
    np.save(tmp_path / "x.npy", x0)
    np.savez(tmp_path / "b.npz", lo=np.zeros(SHAPE), hi=np.ones(SHAPE))
    docs = []
    for extra in (["--input-box", "0,1"], ["--input-box", str(tmp_path / "b.npz")],
                  ["--around", str(tmp_path / "x.npy"), "--radius", "0.5"]):
        code, out, _ = run([*BASE, *extra, "--format", "json"], capsys)
        assert code == 0
        docs.append(json.loads(out))
    assert {d["lower_bound"]["domain"] for d in docs} == {"box [0, 1]"}
    assert len({d["lower_bound"]["value"] for d in docs}) == 1
