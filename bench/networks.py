"""The benchmark's networks, built deterministically as ONNX files in a scratch folder.

``NETWORKS`` lists every network; ``quick=True`` marks the ``--quick`` subset. ``build(net, dir)``
writes ``dir/<name>.onnx`` (and returns notes such as a trained model's test accuracy).
Random weights unless the family says trained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import onnxutil

ANCHORS = Path(__file__).resolve().parents[1] / "models" / "anchors"
ANCHOR_NPZ = "lipsdp_random_2-10-30-20-2.npz"


@dataclass
class Network:
    name: str
    family: str
    describe: str
    builder: Callable[[Path], dict]   # writes the file, returns notes
    quick: bool = False
    trace: bool = False               # lower-bound-vs-time section (b)
    convs: bool = False               # per-convolution certified-norm section (c)
    timeout: float = 300.0            # seconds for its whole worker
    small_input: bool = True          # bench runs search_lower itself when analyze() has no lower pass
    notes: dict = field(default_factory=dict)


def _he(rng: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    return rng.standard_normal((n_out, n_in)) * math.sqrt(2.0 / n_in)


# ----------------------------------------------------------------------------- builders

def anchor(path: Path) -> dict:
    npz = np.load(ANCHORS / ANCHOR_NPZ)
    ws = [npz[f"W{i}"] for i in range(1, 5)]
    onnxutil.mlp(path, ws, name="anchor")
    return {"exact constant": 36.48223, "source": "models/anchors (LipSDP random weights)"}


PAPER_WIDTH = 50


def paper_mlp(depth: int) -> Callable[[Path], dict]:
    """784 → 50 → … → 50 → 10 ReLU MLP with `depth` linear layers, He-normal weights, small biases."""
    def build(path: Path) -> dict:
        rng = np.random.default_rng(1000 + depth)
        widths = [784] + [PAPER_WIDTH] * (depth - 1) + [10]
        ws = [_he(rng, widths[i + 1], widths[i]) for i in range(depth)]
        bs = [0.01 * rng.standard_normal(widths[i + 1]) for i in range(depth)]
        onnxutil.mlp(path, ws, bs, name=f"paper_mlp{depth}")
        return {"widths": "-".join(map(str, widths))}
    return build


def eclipse_weights(depth: int) -> list[np.ndarray]:
    """The weights of ``eclipse_net(depth)``."""
    rng = np.random.default_rng(2000 + depth)
    widths = [4] + [80] * (depth - 1) + [1]
    ws = []
    for i in range(depth):
        w = rng.standard_normal((widths[i + 1], widths[i]))
        ws.append(w * (rng.uniform(0.4, 1.8) / np.linalg.norm(w, 2)))
    return ws


def eclipse_net(depth: int) -> Callable[[Path], dict]:
    """ECLipsE's random family: 4 → 80 → … → 80 → 1 with `depth` linear layers (depth − 1 ReLU
    layers), Gaussian weights each rescaled to a spectral norm drawn uniformly in [0.4, 1.8],
    no biases (following ECLipsE_paper/generate_random_weights.py as described)."""
    def build(path: Path) -> dict:
        ws = eclipse_weights(depth)
        onnxutil.mlp(path, ws, name=f"eclipse{depth}")
        return {"widths": f"4-80×{depth - 1}-1", "product of norms": float(np.prod([np.linalg.norm(w, 2) for w in ws]))}
    return build


def digits(kind: str) -> Callable[[Path], dict]:
    def build(path: Path) -> dict:
        import torch
        from . import torchnets
        torch.manual_seed(3000)
        if kind.startswith("mlp"):
            widths = {"mlp16": (64, 16, 16, 10), "mlp64": (64, 64, 64, 10)}[kind]
            model, image = torchnets.digits_mlp(widths), False
            shape = (1, 64)
        else:
            model = {"cnn": torchnets.digits_cnn_strided, "cnnpool": torchnets.digits_cnn_pool}[kind]()
            image, shape = True, (1, 1, 8, 8)
        acc = torchnets.train_digits(model, image)
        torchnets.export(model, shape, path)
        return {"test accuracy": round(acc, 4)}
    return build


def mnist_cnn(path: Path) -> dict:
    """The paper's MNIST CNN shape, trained briefly on the 8×8 digits upsampled to 28×28."""
    import torch
    from . import torchnets
    torch.manual_seed(3100)
    model = torchnets.mnist_cnn()
    acc = torchnets.train_digits(model, True, epochs=8, side=28)
    torchnets.export(model, (1, 1, 28, 28), path)
    return {"test accuracy": round(acc, 4), "data": "sklearn digits upsampled to 28×28"}


def torch_random(kind: str) -> Callable[[Path], dict]:
    def build(path: Path) -> dict:
        import torch
        from . import torchnets
        torch.manual_seed(4000)
        if kind == "lenet":
            torchnets.export(torchnets.lenet(), (1, 1, 28, 28), path)
        elif kind == "alexnet":
            torchnets.export(torchnets.alexnet(), (1, 3, 224, 224), path)
        elif kind == "resnet18":
            torchnets.export(torchnets.randomise_batchnorm(torchnets.ResNet18(), 4001), (1, 3, 224, 224), path)
        else:
            raise ValueError(kind)
        return {}
    return build


def transformer(path: Path) -> dict:
    """One encoder block on 8 tokens × 16 features: single-head self-attention with a
    residual, then a ReLU feed-forward (16 → 32 → 16) with a residual. LayerNorm is left out
    (lipgraph has no LayerNormalization rule); softmax(QKᵀ/√d)·V multiplies computed tensors."""
    rng = np.random.default_rng(5000)
    T, d, h = 8, 16, 32
    b = onnxutil.Builder()
    w = lambda i, o: (rng.standard_normal((i, o)) / math.sqrt(i)).astype(np.float32)  # noqa: E731
    q = b.node("MatMul", ["x", b.const("Wq", w(d, d))])
    k = b.node("MatMul", ["x", b.const("Wk", w(d, d))])
    v = b.node("MatMul", ["x", b.const("Wv", w(d, d))])
    kt = b.node("Transpose", [k], perm=[0, 2, 1])
    s = b.node("MatMul", [q, kt])
    s = b.node("Mul", [s, b.const("scale", np.array(1.0 / math.sqrt(d), np.float32))])
    p = b.node("Softmax", [s], axis=-1)
    o = b.node("MatMul", [p, v])
    o = b.node("MatMul", [o, b.const("Wo", w(d, d))])
    r = b.node("Add", ["x", o])
    f = b.node("MatMul", [r, b.const("W1", w(d, h))])
    f = b.node("Add", [f, b.const("b1", 0.01 * rng.standard_normal(h))])
    f = b.node("Relu", [f])
    f = b.node("MatMul", [f, b.const("W2", w(h, d))])
    b.node("Add", [r, f], output="y")
    b.save(path, [1, T, d], [1, T, d], "transformer_block")
    return {"tokens": T, "features": d}


# ----------------------------------------------------------------------------- the list

NETWORKS: list[Network] = [
    Network("anchor-lipsdp", "anchor", "LipSDP 2-10-30-20-2 ReLU (exact L = 36.48223)", anchor, quick=True),
    *[Network(f"paper-mlp{d}", "paper MLP", f"784-50×{d - 1}-10 ReLU, {d} layers, random", paper_mlp(d),
              quick=d == 4, trace=d in (4, 10)) for d in (4, 5, 7, 10)],
    *[Network(f"eclipse-d{d}", "ECLipsE random", f"4-80×{d - 1}-1 ReLU, {d} layers, ‖W‖∈[0.4,1.8]", eclipse_net(d),
              quick=d == 10, timeout=90 if d >= 50 else 300) for d in (2, 5, 10, 20, 50, 100)],
    Network("digits-mlp16", "digits-trained", "64-16-16-10 ReLU MLP, trained", digits("mlp16"), quick=True, trace=True),
    Network("digits-mlp64", "digits-trained", "64-64-64-10 ReLU MLP, trained", digits("mlp64"), trace=True),
    Network("digits-cnn", "digits-trained", "1×8×8 conv3(8)-conv3/2(16)-fc10 CNN, trained", digits("cnn"), quick=True),
    Network("digits-cnnpool", "digits-trained", "1×8×8 conv3(16)-pool-conv3(32)-pool-fc10 CNN, trained",
            digits("cnnpool")),
    Network("mnist-cnn", "digits-trained", "paper's MNIST CNN shape (5 convs), 1×28×28, digits upsampled, trained",
            mnist_cnn, timeout=240),
    Network("lenet", "CNN", "LeNet-5 shape, 1×28×28, random", torch_random("lenet")),
    Network("transformer", "attention", "encoder block, 8 tokens × 16, single head, random", transformer, quick=True),
    Network("alexnet", "ImageNet-shaped", "AlexNet shape, 3×224×224, random", torch_random("alexnet"), timeout=300,
            small_input=False),
    Network("resnet18", "ImageNet-shaped", "ResNet-18 shape, 3×224×224, random, BN random stats",
            torch_random("resnet18"), convs=True, timeout=300, small_input=False),
]


def select(quick: bool, only: list[str] | None = None) -> list[Network]:
    nets = [n for n in NETWORKS if (n.quick or not quick)]
    if only:
        nets = [n for n in NETWORKS if n.name in only]
    return nets


def build(net: Network, folder: Path) -> Path:
    path = folder / f"{net.name}.onnx"
    net.notes = net.builder(path) or {}
    return path
