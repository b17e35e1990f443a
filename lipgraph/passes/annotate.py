"""The annotate pass: give every analysed node its rule, or say why it has none.

It never stops at the first problem: unsupported ops and inapplicable rules are all
collected, grouped by op type with counts, and reported at once. A node without a usable
rule gets no bound (∞) unless the user vouches for one with ``--assume Op=L``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from lipgraph.errors import InputError, NotLipschitz, RuleNotApplicable
from lipgraph.diagnostics import Diagnostic
from lipgraph.ir.graph import Graph
from lipgraph.registry import Kind, Rule

HOW_TO_ADD = ("add a rule with the @lipgraph.rule decorator in a module passed with --plugin MODULE "
              "(or registered under the 'lipgraph.rules' entry-point group), or vouch for a constant "
              "with --assume OP=L")


@dataclass
class NodeInfo:
    node: str
    op: str
    rule: Rule | None
    kind: Kind | None
    status: str            # "ok" | "unsupported" | "not-applicable" | "assumed"
    reason: str = ""
    assumed: float | None = None
    code: str = "no-global-bound"   # the diagnostic of a "not-applicable" node


def parse_assumptions(specs: list[str] | None) -> dict[str, float]:
    out = {}
    for spec in specs or []:
        op, sep, value = spec.partition("=")
        try:
            bound = float(value)
        except ValueError:
            bound = -1.0
        if not sep or not op or not bound >= 0:
            raise InputError(f"--assume '{spec}': expected OP=L with L a non-negative number")
        out[op] = bound
    return out


def annotate(graph: Graph, nodes: list[str], assume: dict[str, float]) -> dict[str, NodeInfo]:
    infos: dict[str, NodeInfo] = {}
    for nid in nodes:
        view, rule = graph.views[nid], graph.rules[nid]
        _check_constants(nid, view, rule)
        op = view.op_type if not view.domain else f"{view.domain}::{view.op_type}"
        if view.op_type in assume:
            infos[nid] = NodeInfo(nid, op, rule, Kind.NONLINEAR, "assumed", assumed=assume[view.op_type])
            continue
        if rule is None:
            infos[nid] = NodeInfo(nid, op, None, None, "unsupported",
                                  f"no rule for {op} at opset {graph.model.opsets.get(view.domain, 0)}")
            continue
        try:
            rule.check(view)
            _check_kind_shapes(rule, view)
        except RuleNotApplicable as exc:
            infos[nid] = NodeInfo(nid, op, rule, rule.kind, "not-applicable", exc.reason,
                                  code="not-lipschitz" if isinstance(exc, NotLipschitz) else "no-global-bound")
            continue
        infos[nid] = NodeInfo(nid, op, rule, rule.kind, "ok")
        graph.diagnostics.extend(Diagnostic(nid, code, text) for code, text in rule.notes(view))
    graph.diagnostics.extend(_summarise(infos, graph))
    return infos


def _check_constants(nid: str, view, rule: Rule | None) -> None:
    """A constant on the analysed path with NaN, or with ±inf where the rule does not accept it
    (``Rule.accepts_infinite``), is bad input naming the tensor (folded constants included)."""
    for i, value in view.constants.items():
        if value.dtype.kind != "f" or np.isfinite(value).all():
            continue
        if np.isnan(value).any():
            raise InputError(f"constant '{view.inputs[i]}' (input {i} of node '{nid}', {view.op_type}) contains NaN")
        if rule is not None and not rule.accepts_infinite(view, i):
            raise InputError(f"weight '{view.inputs[i]}' contains ±inf and feeds node '{nid}' ({view.op_type}) on "
                             "the analysed path: its output would not be finite")


def _check_kind_shapes(rule: Rule, view) -> None:
    """An ACTIVATION is elementwise: its output must have its input's shape (a PRelu slope that
    broadcasts the input copies entries, which a slope range does not bound)."""
    if rule.kind is Kind.ACTIVATION and view.output_shapes[0] != view.input_shapes[0]:
        raise RuleNotApplicable(f"output shape {list(view.output_shapes[0] or [])} differs from the input's "
                                f"{list(view.input_shapes[0] or [])}: not elementwise")


def _summarise(infos: dict[str, NodeInfo], graph: Graph) -> list[Diagnostic]:
    diags = []
    unsupported = Counter(i.op for i in infos.values() if i.status == "unsupported")
    if unsupported:
        listed = ", ".join(f"{op} ×{n}" for op, n in sorted(unsupported.items()))
        diags.append(Diagnostic("", "unsupported-op", f"no rule for {sum(unsupported.values())} node(s): {listed}; {HOW_TO_ADD}"))
    for info in infos.values():
        if info.status == "not-applicable":
            diags.append(Diagnostic(info.node, info.code, f"{info.op}: {info.reason}"))
        elif info.status == "assumed":
            diags.append(Diagnostic(info.node, "assumed", f"{info.op}: Lipschitz constant {info.assumed:g} assumed by the user (--assume)"))
    return diags
