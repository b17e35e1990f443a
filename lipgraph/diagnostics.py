"""Diagnostics as data: one table of codes, structured events, no parsing of message text.

Every diagnostic lipgraph emits has a code from ``CODES`` (its severity and one-line meaning
live there, nowhere else), the node, chain or factor it is about, the numbers it carries, and a
message for people. ``lipgraph codes`` prints the table; the README's table is generated from it
(a test keeps them equal).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Code:
    severity: str          # "error" | "warning" | "note"
    meaning: str


CODES: dict[str, Code] = {
    "unsupported-op": Code("error", "ops without a rule: the bound is not certified (∞); add a rule or --assume"),
    "no-global-bound": Code("error", "a rule cannot bound this node globally (e.g. a product of two computed tensors)"),
    "not-lipschitz": Code("error", "an op is discontinuous (Sign, Round, Floor, Ceil, comparisons, ArgMax, Where on a computed condition, …): no Lipschitz bound exists"),
    "no-bound": Code("error", "a rule gives no bound for one of the node's analysed inputs"),
    "no-certified-norm": Code("error", "an affine segment has no certified norm (too large to materialise, no closed form)"),
    "not-certified": Code("error", "no finite certified upper bound for the model"),
    "lower-above-upper": Code("error", "a realised lower bound exceeds a certified upper bound: a bug, the run fails"),
    "assumed": Code("warning", "a bound rests on a value supplied with --assume"),
    "fold-mismatch": Code("warning", "the rules' convolution forms do not reproduce a segment; it is not folded"),
    "seqlip-slopes": Code("warning", "an activation's slope range is unusable for SeqLip; its chain ends there"),
    "seqlip-budget": Code("warning", "SeqLip's time safety net fired; the value may depend on machine load"),
    "seqlip-factor": Code("note", "how a SeqLip factor was bounded (relaxation, operator map, top-k)"),
    "lipsdp-skipped": Code("note", "a chain gets no LipSDP bound (operator maps, too many neurons, solver missing)"),
    "lipsdp-note": Code("note", "how a LipSDP bound was solved or why it stayed an estimate"),
    "power-not-converged": Code("note", "a norm estimate stopped at its iteration cap before its tolerance"),
    "lower": Code("note", "how the lower bound was searched and realised, or why it was not"),
    "batch-dim": Code("note", "an input's dynamic leading (batch) dim was taken as 1"),
    "input-fixed": Code("note", "a non-analysed input is held at a fixed value (--fix, or zeros for a float input)"),
    "branch-taken": Code("note", "an If node whose condition is constant once the inputs are fixed became its taken branch"),
    "input-redirected": Code("note", "a non-float input is analysed from the first float tensor computed from it"),
    "guard-skipped": Code("note", "the onnxruntime cross-check could not run on this model"),
    "declared-shapes": Code("note", "some shapes come from the model's value_info (no inference knows their ops)"),
    "fused": Code("note", "a decomposed activation (x·Sigmoid(x), GELU, hard-swish, Mish) or normalisation (LayerNorm, "
                          "RMSNorm, softmax, log-softmax) was recognised and analysed as one op"),
    "fusion-rejected": Code("note", "a subgraph looked like a decomposed activation or normalisation but is not one "
                                    "numerically; not rewritten into it"),
    "normalization-global": Code("note", "a normalisation's global constant (max|γ|/√ε-type) is huge; a box bound is what you want"),
    "box-range": Code("note", "a node's value range on the input box is unknown (the whole line is used)"),
    "box-bound": Code("warning", "a node has no bound on the input box (its range leaves the op's domain, or is unknown)"),
    "low-precision-cast": Code("note", "a cast to float16/bfloat16: rounding jumps are outside the bound"),
    "input-initializer": Code("note", "a graph input also has an initializer: it is analysed as that constant"),
    "overflow": Code("warning", "float arithmetic overflowed on huge weights: the affected bound is ∞ or the estimate is missing"),
    "time-limit": Code("warning", "--time-limit fired: the methods that had not finished are not reported (partial result)"),
    "memory-limit": Code("note", "an allocation would exceed --memory-limit: a cheaper route was taken, or the step was skipped"),
}


@dataclass(frozen=True)
class Diagnostic:
    """One event: ``code`` (a key of ``CODES``), the node/segment/chain it is about (``node``,
    "" for the model), a message for people, and the numbers it carries (``data``)."""

    node: str
    code: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown diagnostic code '{self.code}' (add it to lipgraph.diagnostics.CODES)")

    @property
    def severity(self) -> str:
        return CODES[self.code].severity

    def to_json(self) -> dict:
        out = {"node": self.node, "code": self.code, "severity": self.severity, "message": self.message}
        return {**out, **({"data": dict(self.data)} if self.data else {})}


def table_markdown() -> str:
    """The README's table of codes."""
    rows = ["| code | severity | meaning |", "|---|---|---|"]
    rows += [f"| `{code}` | {c.severity} | {c.meaning} |" for code, c in CODES.items()]
    return "\n".join(rows)


def table_text() -> str:
    """``lipgraph codes``."""
    width = max(map(len, CODES))
    return "\n".join(f"{code.ljust(width)}  {c.severity:<7}  {c.meaning}" for code, c in CODES.items())
