"""The table of decomposed activations that exporters write, each with the one op of the
private domain ``lipgraph.fused`` it becomes (rules in ``rules/fused.py``).

Spellings seen in ``models/zoo``: torch's two exporters (TorchScript ``_ts``, dynamo
``_dynamo``), Keras via tf2onnx, jax2onnx. GELU's ½ is applied last (TorchScript), to the
bracket (dynamo) or first (jax2onnx); x/√2 is a Div (torch) or a Mul by 1/√2 (jax2onnx).
"""
from __future__ import annotations

import math

from lipgraph.ir.fuse.match import X, Const, Op, Param, Pattern

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_CUBIC = 0.044715


def _halves(name: str, bracket: Op, fused: str, attrs: dict, spelling: str) -> list[Pattern]:
    """0.5·x·bracket with the ½ last, on the bracket, or first."""
    forms = {"half-last": Op("Mul", Op("Mul", X, bracket), Const(0.5)),
             "half-bracket": Op("Mul", X, Op("Mul", bracket, Const(0.5))),
             "half-first": Op("Mul", Op("Mul", X, Const(0.5)), bracket)}
    return [Pattern(f"{name}/{form}", root, fused, spelling, lambda params, a=attrs: dict(a))
            for form, root in forms.items()]


def _gelu_erf() -> list[Pattern]:
    out = []
    for scaled in (Op("Div", X, Const(SQRT2)), Op("Mul", X, Const(1.0 / SQRT2))):
        bracket = Op("Add", Op("Erf", scaled), Const(1.0))
        out += _halves(f"gelu-erf/{scaled.op_type.lower()}", bracket, "Gelu", {"approximate": "none"},
                       "0.5·x·(1 + Erf(x/√2))")
    return out


def _gelu_tanh() -> list[Pattern]:
    out = []
    for cube in (Op("Pow", X, Const(3.0)), Op("Mul", Op("Mul", X, X), X)):
        inner = Op("Mul", Op("Add", X, Op("Mul", cube, Const(GELU_TANH_CUBIC))), Const(SQRT_2_OVER_PI))
        bracket = Op("Add", Op("Tanh", inner), Const(1.0))
        out += _halves(f"gelu-tanh/{cube.op_type.lower()}", bracket, "Gelu", {"approximate": "tanh"},
                       "0.5·x·(1 + Tanh(√(2/π)·(x + 0.044715·x³)))")
    return out


def _hard_swish() -> list[Pattern]:
    relu6 = Op("Clip", Op("Add", X, Const(3.0)), Const(0.0), Const(6.0))
    spelling = "x·Clip(x + 3, 0, 6)/6"
    roots = [Op("Div", Op("Mul", X, relu6), Const(6.0)), Op("Mul", Op("Mul", X, relu6), Const(1.0 / 6.0)),
             Op("Mul", X, Op("Div", relu6, Const(6.0))), Op("Mul", X, Op("Mul", relu6, Const(1.0 / 6.0)))]
    out = [Pattern(f"hardswish/relu6-{k}", root, "HardSwish", spelling) for k, root in enumerate(roots)]
    gate = Op("HardSigmoid", X, attrs={"alpha": 1.0 / 6.0, "beta": 0.5})
    return out + [Pattern("hardswish/hardsigmoid", Op("Mul", X, gate), "HardSwish", "x·HardSigmoid(x)")]


#: Larger patterns first; the matcher also visits roots from the outputs backwards, so a
#: pattern inside a larger one never claims its nodes first.
PATTERNS: list[Pattern] = [
    *_gelu_tanh(),
    *_gelu_erf(),
    *_hard_swish(),
    Pattern("mish", Op("Mul", X, Op("Tanh", Op("Softplus", X))), "Mish", "x·Tanh(Softplus(x))"),
    Pattern("swish", Op("Mul", X, Op("Sigmoid", Op("Mul", X, Param("beta")))), "Swish", "x·Sigmoid(β·x)",
            lambda params: {"beta": params["beta"]}),
    Pattern("silu", Op("Mul", X, Op("Sigmoid", X)), "SiLU", "x·Sigmoid(x)"),
]
