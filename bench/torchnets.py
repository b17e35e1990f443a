"""Torch-built networks exported to ONNX: digits-trained MLPs/CNNs, LeNet, AlexNet, ResNet-18.

Everything is seeded; the digits models train for a fixed number of epochs (a few seconds on
a shared 2-core CPU), so the same code gives the same weights on the same machine.
Export: ``torch.onnx.export(..., dynamo=False, do_constant_folding=False)`` at opset 17, so
BatchNormalization stays a node of its own (constant folding would merge it into the Conv).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


def export(model: nn.Module, in_shape, path: Path) -> Path:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(*in_shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], do_constant_folding=False)
    return path


# ----------------------------------------------------------------------------- digits

def digits_data():
    """sklearn's 8×8 digits, scaled to [0, 1]; a fixed 80/20 split."""
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(X))
    X, y = X[perm], y[perm]
    n = int(0.8 * len(X))
    return X[:n], y[:n], X[n:], y[n:]


def train_digits(model: nn.Module, image: bool, epochs: int = 15, seed: int = 0, side: int = 8) -> float:
    """Adam, batch 64, fixed epochs, one thread (tiny ops; measured 2–10× faster than two
    threads on the shared 2-core machine); returns test accuracy. ``side``: images upsampled to
    side × side (28: MNIST-shaped)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(model, image, epochs, seed, side)
    finally:
        torch.set_num_threads(threads)


def _train(model: nn.Module, image: bool, epochs: int, seed: int, side: int = 8) -> float:
    Xtr, ytr, Xte, yte = digits_data()
    shape = (-1, 1, 8, 8) if image else (-1, 64)
    Xtr_t, Xte_t = torch.from_numpy(Xtr).reshape(shape), torch.from_numpy(Xte).reshape(shape)
    if side != 8:   # MNIST-sized inputs: the 8×8 digits upsampled bilinearly
        Xtr_t, Xte_t = (nn.functional.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
                        for t in (Xtr_t, Xte_t))
    ytr_t = torch.from_numpy(ytr).long()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(Xtr_t), generator=g)
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(Xtr_t[idx]), ytr_t[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(Xte_t).argmax(1).numpy() == yte).mean())


def digits_mlp(widths) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def digits_cnn_strided() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def mnist_cnn() -> nn.Module:
    """The layer shapes of Virmaux & Scaman's MNIST CNN (their ``models/mnist_5.py``) on 1×28×28:
    conv5/2(32)-conv3/2(64)-conv3(64, pad 1)-conv3/2(128)-conv2(10), ReLU between: one chain
    of five convolutions and four activations, no pooling."""
    return nn.Sequential(nn.Conv2d(1, 32, 5, stride=2), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, stride=2), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 128, 3, stride=2), nn.ReLU(),
                         nn.Conv2d(128, 10, 2), nn.Flatten())


def digits_cnn_pool() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


# ----------------------------------------------------------------------------- image nets

def lenet() -> nn.Module:
    """LeNet-5 shape on 1×28×28 (ReLU, 2×2 max-pool)."""
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def alexnet(classes: int = 1000, hidden: int = 4096) -> nn.Module:
    """torchvision's AlexNet layer shapes at 3×224×224 (the 6×6 adaptive pool is the identity
    there and is left out; dropout is the identity in inference)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Linear(256 * 6 * 6, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """torchvision's ResNet-18 shapes (BasicBlock ×[2, 2, 2, 2]) at 3×224×224."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine parameters (as if trained)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
    return model
