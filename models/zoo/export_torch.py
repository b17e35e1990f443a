#!/usr/bin/env python
"""Export the zoo's torch models with both torch exporters.

    <venvs>/zoo-torch/bin/python models/zoo/export_torch.py [NAME ...]
    # <venvs>: where models/zoo/setup_venvs.sh put the exporter venvs

Each model in ``MODELS`` is a small random-weight network built from ``torch.nn`` modules
(seeded, eval mode, BatchNorm statistics and norm affines randomised so nothing is an identity).
It is written twice, at opset 18:

* ``<name>_dynamo.onnx`` — ``torch.onnx.export(..., dynamo=True, external_data=False)``
* ``<name>_ts.onnx``     — ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter)

with ``<name>_{dynamo,ts}.npz`` holding the reference input and torch's own output on it.
Inputs are named ``x``, outputs ``y`` (``y0``, ``y1``, … when there are several); all shapes
are fixed (batch 1).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_common import OPSET, ZOO, check_size, save_reference  # noqa: E402


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
def conv_bn(cin, cout, k=3, stride=1, groups=1, act=None):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act] if act is not None else []))


class HardSwishMul(nn.Module):
    """hard-swish spelled as x * hardsigmoid(x)."""

    def forward(self, x):
        return x * F.hardsigmoid(x)


class HardSwishRelu6(nn.Module):
    """hard-swish spelled out as x * relu6(x + 3) / 6."""

    def forward(self, x):
        return x * F.relu6(x + 3.0) / 6.0


class SqueezeExcite(nn.Module):
    def __init__(self, c, r, act, gate):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)
        self.act, self.gate = act, gate

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
class MobileNetV3Block(nn.Module):
    """Stem conv 3→16 s2 + Hardswish; inverted residual 16→48→16 (1×1 expand, depthwise 3×3,
    squeeze-and-excitation with hardsigmoid gate, 1×1 project, residual); 1×1 conv 16→32;
    global average pool; Linear 10. The three hard-swish spellings: nn.Hardswish (stem),
    x*F.hardsigmoid(x) (expand, depthwise), x*relu6(x+3)/6 (head)."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.Hardswish())
        self.expand = conv_bn(16, 48, 1, act=HardSwishMul())
        self.dw = conv_bn(48, 48, 3, groups=48, act=HardSwishMul())
        self.se = SqueezeExcite(48, 12, nn.ReLU(), nn.Hardsigmoid())
        self.project = conv_bn(48, 16, 1)
        self.head = conv_bn(16, 32, 1, act=HardSwishRelu6())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.se(self.dw(self.expand(x))))
        x = self.head(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class MBConv(nn.Module):
    """EfficientNet: stem conv 3→16 s2 + SiLU; MBConv 16→64→16 (1×1 expand + SiLU, depthwise
    3×3 + SiLU, SE with SiLU and sigmoid gate, 1×1 project, residual); 1×1 conv 16→32 + SiLU;
    global average pool; Linear 10."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.SiLU())
        self.expand = conv_bn(16, 64, 1, act=nn.SiLU())
        self.dw = conv_bn(64, 64, 3, groups=64, act=nn.SiLU())
        self.se = SqueezeExcite(64, 4, nn.SiLU(), nn.Sigmoid())
        self.project = conv_bn(64, 16, 1)
        self.head = conv_bn(16, 32, 1, act=nn.SiLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.se(self.dw(self.expand(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.head(x), 1), 1))


class ViTBlock(nn.Module):
    """Pre-norm transformer encoder block on 8 tokens of width 16: x + MHA(LN(x)) with
    nn.MultiheadAttention (2 heads), then x + MLP(LN(x)) with Linear 16→64, GELU, Linear 64→16."""

    def __init__(self, d=16, heads=2, hidden=64):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class ConvNeXtBlock(nn.Module):
    """Patchify stem conv 3→16 4×4 s4 + LayerNorm over channels; ConvNeXt block (depthwise 7×7,
    LayerNorm over channels in NHWC, Linear 16→64, GELU, Linear 64→16, layer scale γ, residual);
    global average pool, LayerNorm, Linear 10."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, 4)
        self.stem_ln = nn.LayerNorm(c)
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.ln = nn.LayerNorm(c)
        self.pw1, self.act, self.pw2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.empty(c).uniform_(0.1, 1.0))
        self.head_ln, self.fc = nn.LayerNorm(c), nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem_ln(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        h = self.ln(self.dw(x).permute(0, 2, 3, 1))
        h = self.gamma * self.pw2(self.act(self.pw1(h)))
        x = x + h.permute(0, 3, 1, 2)
        return self.fc(self.head_ln(x.mean((2, 3))))


class C2f(nn.Module):
    """YOLOv8's C2f: 1×1 conv, split in two, a bottleneck on one half, concat all, 1×1 conv."""

    def __init__(self, cin, cout):
        super().__init__()
        self.c = cout // 2
        self.cv1 = conv_bn(cin, 2 * self.c, 1, act=nn.SiLU())
        self.m = nn.Sequential(conv_bn(self.c, self.c, 3, act=nn.SiLU()), conv_bn(self.c, self.c, 3, act=nn.SiLU()))
        self.cv2 = conv_bn(3 * self.c, cout, 1, act=nn.SiLU())

    def forward(self, x):
        a, b = self.cv1(x).split((self.c, self.c), 1)
        return self.cv2(torch.cat([a, b, self.m(b)], 1))


class YoloNeck(nn.Module):
    """Backbone of three SiLU convs (3→8 s2, 8→16 s2, 16→32 s2: P3 16×16, P4 8×8, P5 4×4);
    top-down neck: nearest upsample ×2 of P5, concat P4, C2f → upsample ×2, concat P3, C2f;
    two outputs (the P3 and P4 feature maps)."""

    def __init__(self):
        super().__init__()
        self.p3 = conv_bn(3, 8, 3, 2, act=nn.SiLU())
        self.p4 = conv_bn(8, 16, 3, 2, act=nn.SiLU())
        self.p5 = conv_bn(16, 32, 3, 2, act=nn.SiLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.c4 = C2f(32 + 16, 16)
        self.c3 = C2f(16 + 8, 8)

    def forward(self, x):
        p3 = self.p3(x)
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        n4 = self.c4(torch.cat([self.up(p5), p4], 1))
        n3 = self.c3(torch.cat([self.up(n4), p3], 1))
        return n3, n4


def conv_gn(cin, cout, groups, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(groups, cout), nn.ReLU())


class UNetDecoder(nn.Module):
    """Encoder conv+GroupNorm+ReLU 3→8 (32×32), 8→16 s2 (16×16), 16→32 s2 (8×8); decoder:
    ConvTranspose 2×2 s2 32→16, concat skip, conv+GN+ReLU 32→16; F.interpolate bilinear ×2,
    concat skip, conv+GN+ReLU 24→8; 1×1 conv → 2 classes."""

    def __init__(self):
        super().__init__()
        self.e1, self.e2, self.e3 = conv_gn(3, 8, 2), conv_gn(8, 16, 4, 2), conv_gn(16, 32, 4, 2)
        self.up = nn.ConvTranspose2d(32, 16, 2, 2)
        self.d2 = conv_gn(32, 16, 4)
        self.d1 = conv_gn(24, 8, 2)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        e1 = self.e1(x)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        d2 = self.d2(torch.cat([self.up(e3), e2], 1))
        d1 = F.interpolate(d2, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(self.d1(torch.cat([d1, e1], 1)))


class LSTMModel(nn.Module):
    """Two-layer nn.LSTM (16 → 24, batch_first) over 8 steps; Linear 10 on the last step."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(16, 24, num_layers=2, batch_first=True)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


class BiGRUModel(nn.Module):
    """Bidirectional nn.GRU (16 → 2×16, batch_first) over 8 steps; Linear 5 per step (tagging)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(16, 16, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


class MishEluMLP(nn.Module):
    """Linear 32→64, Mish, Linear 64→64, ELU, Linear 64→10, LogSoftmax."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.Mish(), nn.Linear(64, 64), nn.ELU(),
                                 nn.Linear(64, 10), nn.LogSoftmax(dim=-1))

    def forward(self, x):
        return self.net(x)


IMAGE = (1, 3, 32, 32)
TOKENS = (1, 8, 16)
#: name -> (module class, input shape, output names)
MODELS = {
    "mobilenetv3": (MobileNetV3Block, IMAGE, ["y"]),
    "mbconv": (MBConv, IMAGE, ["y"]),
    "vit_block": (ViTBlock, TOKENS, ["y"]),
    "convnext": (ConvNeXtBlock, IMAGE, ["y"]),
    "yolo_neck": (YoloNeck, IMAGE, ["y0", "y1"]),
    "unet_decoder": (UNetDecoder, IMAGE, ["y"]),
    "lstm": (LSTMModel, TOKENS, ["y"]),
    "bigru": (BiGRUModel, TOKENS, ["y"]),
    "mlp_mish_elu": (MishEluMLP, (1, 32), ["y"]),
}


def build(name: str, seed: int) -> nn.Module:
    """The model with seeded weights; norms get random statistics and affines."""
    torch.manual_seed(seed)
    model = MODELS[name][0]()
    g = torch.Generator().manual_seed(seed + 1000)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            m.weight.data = torch.empty_like(m.weight).uniform_(0.5, 1.5, generator=g)
            m.bias.data = torch.empty_like(m.bias).uniform_(-0.2, 0.2, generator=g)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = torch.empty_like(m.running_mean).uniform_(-0.5, 0.5, generator=g)
            m.running_var = torch.empty_like(m.running_var).uniform_(0.5, 2.0, generator=g)
    return model.eval()


def strip_stack_traces(path: Path) -> None:
    """Drop the dynamo exporter's per-node Python stack traces (absolute paths of this machine);
    the other metadata (module hierarchy, FX node) stays."""
    model = onnx.load(path)
    for node in model.graph.node:
        keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    onnx.save(model, path)


def export(name: str, seed: int) -> None:
    _, shape, outputs = MODELS[name]
    model = build(name, seed)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 2000))
    with torch.no_grad():
        y = model(x)
    y = [t.numpy() for t in (y if isinstance(y, tuple) else (y,))]
    for tag, kwargs in (("dynamo", dict(dynamo=True, external_data=False, optimize=True, verbose=False)),
                        ("ts", dict(dynamo=False))):
        path = ZOO / f"{name}_{tag}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=outputs,
                              opset_version=OPSET, **kwargs)
        strip_stack_traces(path)
        check_size(path)
        save_reference(path.stem, {"x": x.numpy()}, y)


def main(argv: list[str]) -> None:
    names = argv or list(MODELS)
    for name in names:
        export(name, seed=list(MODELS).index(name))


if __name__ == "__main__":
    main(sys.argv[1:])
