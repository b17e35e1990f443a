"""AutoLip over the DAG (Virmaux & Scaman 2018, Alg. 1, generalised to any graph).

With L(analysed input) = 1 and L(constant or free input) = 0, every unit u (an affine
segment or a single node) gets L_out = Σ_i ℓ_{u,i}·L_i (``sum``) or √(Σ_i (ℓ_{u,i}·L_i)²)
(``l2``, Concat), where ℓ_{u,i} bounds the unit's partial Lipschitz constant in input i.
The composition is a certified bound when every ℓ is; its label is the weakest of the
labels of the units that contribute.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lipgraph.labels import Bound, Label, weakest


@dataclass
class Unit:
    """One step of the composition: a segment or a node."""

    id: str
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]          # one entry per analysed input (repeats allowed)
    outputs: tuple[str, ...]
    bounds: tuple[Bound, ...]        # certified ℓ per input
    estimates: tuple[float, ...]     # the power-iteration version (autolip-power)
    combine: str = "sum"
    role: str = "node"               # "segment" | "node"
    info: dict = field(default_factory=dict)


@dataclass
class Composition:
    value: float
    label: Label
    lipschitz: dict[str, float]      # L per tensor
    shares: dict[str, float]         # unit id → share of log(bound)


def compose(units: list[Unit], source: str, target: str, use_estimates: bool = False) -> Composition:
    """L(target) by AutoLip over ``units`` (in topological order), with each unit's share of
    log L(target): ∂log L/∂log ℓ_u · log ℓ_u / log L (for a chain, log ℓ_u / log L)."""
    values = {u.id: u.estimates if use_estimates else tuple(b.value for b in u.bounds) for u in units}
    logs = {u.id: torch.tensor([math.log(v) if 0 < v < math.inf else 0.0 for v in values[u.id]],
                               dtype=torch.float64, requires_grad=True) for u in units}
    lip: dict[str, torch.Tensor] = {source: torch.tensor(1.0, dtype=torch.float64)}
    labels: dict[str, Label] = {source: Label.EXACT}
    for u in units:
        terms, term_labels = [], []
        for k, t in enumerate(u.inputs):
            l_in, value = lip.get(t), values[u.id][k]
            if l_in is None or float(l_in.detach()) == 0.0 or value == 0.0:
                continue
            ell = torch.exp(logs[u.id][k]) if value < math.inf else torch.tensor(math.inf, dtype=torch.float64)
            terms.append(ell * l_in)
            term_labels.append(Label.ESTIMATE if use_estimates else weakest(u.bounds[k].label, labels[t]))
        if not terms:
            continue
        stacked = torch.stack(terms)
        out = stacked.sum() if u.combine == "sum" else torch.sqrt((stacked * stacked).sum())
        for t in u.outputs:
            lip[t], labels[t] = out, weakest(*term_labels)
    if target not in lip:
        return Composition(0.0, Label.EXACT, {}, {})
    final = lip[target]
    value = float(final.detach())
    shares: dict[str, float] = {}
    if 0 < value < math.inf and abs(math.log(value)) > 1e-12 and final.requires_grad:
        grads = torch.autograd.grad(torch.log(final), [logs[u.id] for u in units], allow_unused=True)
        for u, g in zip(units, grads):
            if g is not None:
                shares[u.id] = float((g * logs[u.id].detach()).sum()) / math.log(value)
    return Composition(value, labels[target], {t: float(v.detach()) for t, v in lip.items()}, shares)
