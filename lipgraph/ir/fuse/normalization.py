"""The table of decomposed normalisations that exporters and hand-written modules produce, each
with the op of the private domain ``lipgraph.fused`` it becomes (rules in ``rules/fused.py``):
LayerNorm, RMSNorm, Softmax, LogSoftmax, all over the reduction's axes (any set of dims; an
attribute before opset 18, 13 for ReduceSum, a constant input after), with keepdims = 1.

Spellings: torch's TorchScript exporter writes ``1/√v`` as ``Div(1, Sqrt)``, dynamo as
``Reciprocal(Sqrt)``; ``d²`` is ``Pow(d, 2)`` or ``Mul(d, d)``; the TorchScript exporter at
opset ≤ 16 writes ``nn.LayerNorm`` as ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add.
The softmax shift (ReduceMax) is matched over its own axes: any shift that is constant on each
normalised slice gives the same function, and the numerical proof rejects the others.
"""
from __future__ import annotations

import itertools

from lipgraph.ir.fuse.match import X, Const, Op, Param, Pattern, Reduce, Weight

EPS = Param("epsilon")


def _squares(t) -> dict[str, Op]:
    return {"pow": Op("Pow", t, Const(2.0)), "mul": Op("Mul", t, t)}


def _scalings(t, std: Op) -> dict[str, Op]:
    """t / std, spelled as a Div or as a product with 1/std."""
    return {"div": Op("Div", t, std), "reciprocal": Op("Mul", t, Op("Reciprocal", std)),
            "one-over": Op("Mul", t, Op("Div", Const(1.0), std))}


def _affines(core: Op) -> dict[str, Op]:
    """core, core·γ, core·γ + β, core + β (γ, β constants broadcast against the input)."""
    scaled = Op("Mul", core, Weight("scale"))
    return {"": core, "/scale": scaled, "/scale-bias": Op("Add", scaled, Weight("bias")),
            "/bias": Op("Add", core, Weight("bias"))}


def _norm_attrs(params: dict) -> dict:
    return {"axes": list(params["axes"]), "epsilon": params["epsilon"]}


def _layer_norms() -> list[Pattern]:
    """(x − E[x]) / √(Var[x] + ε), the variance as E[(x − E[x])²] or E[x²] − E[x]² (clamped at
    0 by jax2onnx: the same real function)."""
    mean = Reduce("ReduceMean", X, "axes")
    d = Op("Sub", X, mean)
    variances = {f"centred-{k}": Reduce("ReduceMean", sq, "axes") for k, sq in _squares(d).items()}
    for (a, sq), (b, m2) in itertools.product(_squares(X).items(), _squares(mean).items()):
        moments = Op("Sub", Reduce("ReduceMean", sq, "axes"), m2)
        variances[f"moments-{a}-{b}"] = moments
        variances[f"moments-{a}-{b}-clamped"] = Op("Max", moments, Const(0.0))   # jax2onnx
    out = []
    for v, var in variances.items():
        std = Op("Sqrt", Op("Add", var, EPS))
        for s, core in _scalings(d, std).items():
            out += [Pattern(f"layernorm/{v}/{s}{a}", root, "LayerNorm", "(x − E[x])/√(Var[x] + ε)·γ + β",
                            _norm_attrs, ("scale", "bias")) for a, root in _affines(core).items()]
    return out


def _rms_norms() -> list[Pattern]:
    """x / √(E[x²] + ε)."""
    out = []
    for q, sq in _squares(X).items():
        std = Op("Sqrt", Op("Add", Reduce("ReduceMean", sq, "axes"), EPS))
        for s, core in _scalings(X, std).items():
            out += [Pattern(f"rmsnorm/{q}/{s}{a}", root, "RMSNorm", "x/√(E[x²] + ε)·γ + β", _norm_attrs,
                            ("scale", "bias")) for a, root in _affines(core).items()]
    return out


def _softmaxes() -> list[Pattern]:
    """exp(x') / Σ exp(x') and x' − log Σ exp(x'), x' = x or x − max x."""
    out = []
    for shift, xs in (("shifted", Op("Sub", X, Reduce("ReduceMax", X, "shift"))), ("unshifted", X)):
        e = Op("Exp", xs)
        total = Reduce("ReduceSum", e, "axes")
        for s, root in {"div": Op("Div", e, total), "reciprocal": Op("Mul", e, Op("Reciprocal", total))}.items():
            out.append(Pattern(f"softmax/{shift}/{s}", root, "Softmax", "Exp(x')/ReduceSum(Exp(x'))",
                               lambda params: {"axes": list(params["axes"])}))
        out.append(Pattern(f"logsoftmax/{shift}", Op("Sub", xs, Op("Log", total)), "LogSoftmax",
                           "x' − Log(ReduceSum(Exp(x')))", lambda params: {"axes": list(params["axes"])}))
    return out


#: LayerNorm before RMSNorm: RMSNorm of d = x − E[x] is the inner part of a LayerNorm.
PATTERNS: list[Pattern] = [*_layer_norms(), *_rms_norms(), *_softmaxes()]
