"""``lipgraph certify`` (issue 14 item 2): certified radii from margins and margin bounds,
checked against an attack (no input certified at a radius where an adversarial example exists),
against sampled margin gradients, and against √2 × the model bound."""
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
from lipgraph.robust.margin import margin_model

CLASSES = 3


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A 64-24-3 ReLU MLP trained on digits 0, 1, 2 (pixels / 16), its file, 24 test inputs."""
    from digits import train_digits_mlp
    folder = tmp_path_factory.mktemp("digits")
    path, net, x, y = train_digits_mlp([24], folder, classes=CLASSES, holdout=24)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    return path, folder / "x.npy", folder / "y.npy", net


def certify_json(capsys, *argv):
    code = main(["certify", *map(str, argv), "--format", "json", "-q"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_certified_radius_never_exceeds_an_adversarial_distance(capsys, digits):
    path, x, y, net = digits
    doc = certify_json(capsys, path, "--data", x, "--labels", y, "--attack", "--eps", "0,0.25,0.5,1,2,4")
    samples = doc["samples"]
    assert len(samples) == 24 and doc["clean_accuracy"] > 0.9
    found = [s for s in samples if s["attack_distance"] is not None]
    assert found, "the attack must break some inputs at these radii for the test to mean anything"
    for s in found:
        assert s["radius"] <= s["attack_distance"]
    for row in doc["table"]:
        assert row["certified_accuracy"] <= row["attacked_accuracy"] <= doc["clean_accuracy"]
    assert any(row["certified_accuracy"] > 0 for row in doc["table"][1:])
    # the radii, recomputed here from the logits and the margin bounds
    bounds = {(b["i"], b["j"]): b["value"] for b in doc["margin_bounds"]}
    data, labels = np.load(x), np.load(y)
    with torch.no_grad():
        logits = net(torch.as_tensor(data)).double().numpy()
    for s, z, label in zip(samples, logits, labels):
        want = min((z[label] - z[j]) / bounds[(min(label, j), max(label, j))] for j in range(CLASSES) if j != label) \
            if z.argmax() == label else 0.0
        assert s["radius"] == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_on_the_input_box_radii_grow_and_the_attack_stays_inside(capsys, digits, monkeypatch):
    """--input-box 0,1: every bound is on the box (the domain says so), so radii are ≥ the global
    ones; the attack's examples lie in the box and no radius exceeds their distance."""
    import sys
    certify_module = sys.modules["lipgraph.robust.certify"]
    path, x, y, _ = digits
    whole = certify_json(capsys, path, "--data", x, "--labels", y, "--eps", "0.5,1")
    seen = []
    pgd = certify_module.pgd
    monkeypatch.setattr(certify_module, "pgd", lambda *a, **k: seen.append(pgd(*a, **k)) or seen[-1])
    box = certify_json(capsys, path, "--data", x, "--labels", y, "--eps", "0.5,1", "--attack", "--input-box", "0,1")
    assert whole["domain"] == "R^n" and box["domain"] == "box [0, 1]"
    assert box["model_bound"]["value"] <= whole["model_bound"]["value"]
    for s, g in zip(box["samples"], whole["samples"]):
        assert s["radius"] >= g["radius"] * (1 - 1e-9)
        assert s["attack_distance"] is None or s["radius"] <= s["attack_distance"]
    adversarial = [a for a in seen if a is not None]
    assert adversarial and all(a.min() >= 0 and a.max() <= 1 for a in adversarial)


def test_margin_bounds_hold_and_beat_the_product(capsys, digits):
    path, x, y, net = digits
    doc = certify_json(capsys, path, "--data", x, "--labels", y)
    model_bound = doc["model_bound"]["value"]
    rng = np.random.default_rng(0)
    pts = torch.tensor(rng.uniform(-1, 2, size=(400, 64)), dtype=torch.float32, requires_grad=True)
    logits = net(pts)
    for b in doc["margin_bounds"]:
        assert b["label"] == "certified"
        assert b["value"] <= math.sqrt(2) * model_bound * (1 + 1e-9)
        (grad,) = torch.autograd.grad((logits[:, b["i"]] - logits[:, b["j"]]).sum(), pts, retain_graph=True)
        assert float(grad.norm(dim=1).max()) <= b["value"] * (1 + 1e-5)
    assert min(b["value"] for b in doc["margin_bounds"]) < math.sqrt(2) * model_bound * 0.99


@pytest.mark.parametrize("name", sorted(p.stem for p in MODELS.glob("*.onnx") if p.stem != "unsupported"))
def test_margin_network_bound_is_at_most_sqrt2_times_the_model_bound(name):
    """Every bundled model read as a classifier (each has ≥ 2 outputs): the margin network's own
    certified bound, before any min with √2·L."""
    proto = onnx.load(MODELS / f"{name}.onnx")
    options = lipgraph.options.Options(methods=("autolip", "seqlip") if name in ("mlp", "anchor_lipsdp")
                                       else ("autolip",))
    model_bound = lipgraph.analyze(proto, options=options).upper.value
    classes = int(np.prod([d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]))
    for i, j in [(0, 1), (classes - 2, classes - 1)]:
        margin = lipgraph.analyze(margin_model(proto, proto.graph.output[0].name, classes, i, j), options=options)
        # (equal up to the certified rounding of ‖e_i − e_j‖ = √2 where the logits come out of a sum
        # of branches, as in concat: the row then cannot fold into an affine segment)
        assert margin.upper.value <= math.sqrt(2) * model_bound * (1 + 1e-7)


@pytest.mark.parametrize("case, words", [
    ("labels-range", ["out of range"]),
    ("shape", ["not a stack of inputs"]),
    ("nan", ["NaN"]),
    ("count", ["24 inputs", "labels"]),
    ("labels-float", ["integer class indices"]),
    ("outside-box", ["input 3", "outside --input-box 0,0.5"]),
])
def test_bad_input(capsys, digits, tmp_path, case, words):
    path, x, y, _ = digits
    data, labels = np.load(x), np.load(y)
    if case == "labels-range":
        labels = labels + 5
    elif case == "shape":
        data = data[:, :60]
    elif case == "nan":
        data = data.copy()
        data[3, 7] = np.nan
    elif case == "count":
        labels = labels[:-1]
    elif case == "outside-box":
        data = np.clip(data, 0.0, 0.5)
        data[3, 7] = 0.75
    else:
        labels = labels + 0.5
    np.save(tmp_path / "x.npy", data)
    np.save(tmp_path / "y.npy", labels)
    box = ["--input-box", "0,0.5"] if case == "outside-box" else []
    code = main(["certify", str(path), "--data", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "-q",
                 *box])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("lipgraph: error:"), err
    for w in words:
        assert w in lines[0]
