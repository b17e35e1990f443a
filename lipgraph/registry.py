"""The rule registry: everything lipgraph knows about an ONNX op, keyed by
``(domain, op_type, since_version)``.

A model's opset is resolved to the schema's ``since_version`` with
``onnx.defs.get_schema(op, max_inclusive_version=opset, domain=domain)`` and matched
exactly, so an op version nobody reviewed is reported, never guessed. Ops without an ONNX
schema (custom domains) match the rule with the highest version not above the model's
opset for that domain.

Writing a rule (see ``rules/`` for the built-in pack)::

    from lipgraph import Kind, Rule, rule

    @rule("Relu", versions=(6, 13, 14), kind=Kind.ACTIVATION)
    class Relu(Rule):
        '''ReLU is 1-Lipschitz: slopes in [0, 1].

        Bound: slopes [0, 1]. Exactness: exact. Assumptions: none. References: —
        '''
        def forward(self, node, x):
            return torch.relu(x)

        def slopes(self, node):
            return 0.0, 1.0
"""
from __future__ import annotations

import enum
import importlib
import inspect
import math
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterable

import numpy as np
import onnx.defs
import torch

from lipgraph.errors import InputError, RuleNotApplicable
from lipgraph.labels import Bound, Label
from lipgraph.nodeview import NodeView

ENTRY_POINT_GROUP = "lipgraph.rules"
#: The private domain of the ops that ``lipgraph.ir.fuse`` writes (rules in ``rules/fused.py``).
FUSED_DOMAIN = "lipgraph.fused"


class Kind(str, enum.Enum):
    """How a node relates to the analysed input (design §2)."""

    AFFINE = "affine"            # affine in the analysed input; the engine norms x ↦ f(x) − f(0)
    STRUCTURAL = "structural"    # moves or copies entries (affine too)
    ACTIVATION = "activation"    # elementwise, slopes in [a, b]
    COMBINE = "combine"          # several analysed inputs, linear (Add, Sub, Sum, Concat)
    NONLINEAR = "nonlinear"      # its own bound per analysed input (MaxPool, Softmax, …)
    CONSTANT = "constant"        # output independent of the analysed input's values (Shape, Size)

    @property
    def is_linear(self) -> bool:
        return self in (Kind.AFFINE, Kind.STRUCTURAL, Kind.COMBINE)

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class Slopes(tuple):
    """An ACTIVATION's slope range ``(lo, hi)`` with its label: ``exact`` when both ends are the
    derivative's true infimum and supremum, ``certified`` when rounded outward. It unpacks as a
    pair; a plain ``(lo, hi)`` tuple from a plugin counts as ``certified``."""

    label: Label

    def __new__(cls, lo, hi, label: Label = Label.EXACT):
        pair = super().__new__(cls, (lo, hi))
        pair.label = label
        return pair


def slope_range(rule: "Rule", node: NodeView) -> tuple[Any, Any, Label]:
    """(lo, hi, label) of an ACTIVATION rule at ``node``."""
    pair = rule.slopes(node)
    lo, hi = pair
    return lo, hi, getattr(pair, "label", Label.CERTIFIED)


class Rule:
    """Base class of all rules. Override what your kind needs.

    - every kind: ``forward`` (torch semantics; inputs are torch tensors, ``None`` for an
      omitted optional input; return a tensor or a tuple of tensors, one per output);
      ``check`` raises ``RuleNotApplicable`` for nodes the rule cannot bound; ``notes`` lists
      assumptions about a node that the report should carry.
    - ACTIVATION: ``slopes`` → ``Slopes(lo, hi, label)``, floats or arrays broadcastable to the
      input (a plain (lo, hi) is labelled certified);
      optionally ``smooth(node, x, t)``, a smoothed surrogate used by the lower-bound search.
    - NONLINEAR and COMBINE: ``bounds`` → {input index: Bound} for every dynamic input;
      COMBINE sets ``combine`` to ``"sum"`` (AutoLip adds) or ``"l2"`` (Concat: √Σ L_i²).
    - AFFINE and STRUCTURAL: optionally ``certified_norm`` → Bound of the linear part's
      norm when the rule knows one cheaper than the engine's generic routes.
    - optionally ``conv_form`` → the linear part as a ``lipgraph.certify.convfold.ConvForm`` (a
      convolution or a per-channel scale) for an op with one analysed input, or
      ``{input index: ConvForm}`` for a COMBINE op whose output is the sum of those terms over
      its analysed inputs (plus a constant); ``None`` when it is neither. Segments whose nodes
      all have conv forms are folded into one convolution and certified as a whole.

    On an input box (``--input-box``, design §9) three more hooks apply; each has a sound default:

    - ``interval(node, *ranges)`` → the output range(s): ``ranges`` has one ``(lo, hi)`` pair of
      float64 tensors per input (a constant as ``(c, c)``, ``None`` for an omitted input, ±inf
      where nothing is known); return one pair, a tuple of pairs (one per output) or ``None``
      (unknown: the whole line). The default (:func:`default_interval`) evaluates ``forward`` at
      the ends for ``monotone`` rules and STRUCTURAL ones, centre ± ``abs_linear`` for AFFINE
      ones, the ends or centre ± max|slope|·radius for ACTIVATION ones, and says "unknown"
      otherwise — a rule without the hook is never unsound, only loose.
    - ``local_slopes(node, range)`` (ACTIVATION) → ``Slopes`` per entry over the input range;
      default: the global slopes.
    - ``local_bounds(node, ranges)`` (any kind but ACTIVATION, and rules whose ``check`` refuses
      the node globally, e.g. a product of two computed tensors) → {input index: Bound} on the
      box; default: ``bounds`` (global). Raise ``RuleNotApplicable`` when the box leaves the
      op's domain.
    - ``kink(node)`` (ACTIVATION) → ``(at, below, above)``, broadcastable to the input, when the
      activation is linear with slope ``below`` for x < at and ``above`` for x > at (ReLU: 0, 0, 1);
      default None. SeqLip on a box then keeps only the activation patterns some input of the box
      realises (``lipgraph.certify.patterns``).
    """

    #: The output is nondecreasing in every input, entry by entry (its range is ``forward`` at
    #: the ends of the input ranges).
    monotone: bool = False
    #: ``check`` refuses nodes only for want of a *global* bound (Exp, Div by a computed tensor,
    #: a product of computed tensors …): the local hooks are then valid on a box wherever they do
    #: not raise. Other refused nodes get no local bound.
    box_only: bool = False

    kind: Kind
    op_type: str
    domain: str
    versions: tuple[int, ...]
    combine: str = "sum"

    def check(self, node: NodeView) -> None:
        """Raise RuleNotApplicable if this node cannot be analysed."""

    def forward(self, node: NodeView, *inputs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no torch semantics")

    def slopes(self, node: NodeView) -> tuple[Any, Any]:
        raise NotImplementedError

    def smooth(self, node: NodeView, x: Any, t: float) -> Any:
        return self.forward(node, x)

    def bounds(self, node: NodeView) -> dict[int, Bound]:
        raise NotImplementedError

    def certified_norm(self, node: NodeView) -> Bound | None:
        return None

    def accepts_infinite(self, node: NodeView, i: int) -> bool:
        """Whether constant input ``i`` may hold ±inf without the output ever being infinite
        (a bound that never binds, e.g. Max(−inf, x)); everywhere else an infinite constant on
        the analysed path is bad input."""
        return False

    def cost(self, node: NodeView) -> float:
        """Multiply-adds of one evaluation, for sizing searches. Default: one per entry of the
        first output (elementwise and data-movement ops); rules with a weight override it."""
        shape = node.output_shapes[0] if node.output_shapes else None
        return float(math.prod(shape)) if shape is not None else 1.0

    def notes(self, node: NodeView) -> list[tuple[str, str]]:
        """(diagnostic code, message) notes the report should carry about this node, e.g. an
        assumption the bound rests on."""
        return []

    def conv_form(self, node: NodeView) -> Any:
        """``ConvForm`` | ``{input index: ConvForm}`` | None (see the class docstring)."""
        return None

    def interval(self, node: NodeView, *ranges: Any) -> Any:
        """Output range(s) from input ranges (see the class docstring)."""
        return default_interval(self, node, ranges)

    def abs_linear(self, node: NodeView, r: Any) -> Any:
        """AFFINE: |A|·r for the linear part A in the analysed input (r ≥ 0 a tensor of its
        shape), or None when the rule cannot compute it (the default interval is then unknown)."""
        return None

    def local_slopes(self, node: NodeView, x_range: Any) -> Slopes:
        """ACTIVATION: slope range per entry over ``x_range``; default: the global slopes."""
        return self.slopes(node)

    def local_bounds(self, node: NodeView, ranges: tuple) -> dict[int, Bound]:
        """Partial bounds per analysed input on the box; default: the global ``bounds``."""
        return self.bounds(node)

    def kink(self, node: NodeView) -> tuple | None:
        """ACTIVATION: (at, slope below, slope above) of a one-kink piecewise-linear op, or None."""
        return None

    def linear_relaxation(self, node: NodeView, x_range: Any) -> tuple:
        """ACTIVATION: per entry, lines a_lo·x + b_lo ≤ f(x) ≤ a_hi·x + b_hi on the finite range
        ``x_range`` = (l, u), as (a_lo, b_lo, a_hi, b_hi) float64 tensors (backward linear bounds).
        Default, from the local slopes [s_lo, s_hi] (mean value theorem from either end):
        f(l) + s_lo(x − l) ≤ f(x) ≤ f(l) + s_hi(x − l) and f(u) − s_hi(u − x) ≤ f(x) ≤ f(u) − s_lo(u − x);
        of each pair the line better at the midpoint."""
        lo, hi = x_range
        s_lo, s_hi = (torch.as_tensor(np.asarray(v, np.float64)).broadcast_to(lo.shape) for v in self.local_slopes(node, x_range))
        rest = [torch.as_tensor(np.array(node.const(i))) if node.has_input(i) else None
                for i in range(1, len(node.inputs))]   # an activation's other inputs are constants
        f_l, f_u = (self.forward(node, v, *rest).to(torch.float64) for v in (lo, hi))
        r = (hi - lo) / 2
        low_left = f_l + s_lo * r >= f_u - s_hi * r
        up_left = f_l + s_hi * r <= f_u - s_lo * r
        a_lo, b_lo = torch.where(low_left, s_lo, s_hi), torch.where(low_left, f_l - s_lo * lo, f_u - s_hi * hi)
        a_hi, b_hi = torch.where(up_left, s_hi, s_lo), torch.where(up_left, f_l - s_hi * lo, f_u - s_lo * hi)
        return a_lo, b_lo, a_hi, b_hi

    @property
    def origin(self) -> str:
        module = type(self).__module__
        return "builtin" if module.startswith("lipgraph.rules") else module

    @property
    def doc(self) -> str:
        return inspect.cleandoc(type(self).__doc__ or "(no documentation)")


def _ends(rule: Rule, node: NodeView, lows, highs):
    """forward at the low ends and at the high ends, paired per output (entrywise min/max)."""
    a, b = rule.forward(node, *lows), rule.forward(node, *highs)
    if isinstance(a, (tuple, list)):
        return tuple((torch.minimum(x, y), torch.maximum(x, y)) for x, y in zip(a, b))
    return torch.minimum(a, b), torch.maximum(a, b)


def default_interval(rule: Rule, node: NodeView, ranges: tuple) -> Any:
    """The default ``interval`` hook (sound for every rule that keeps its kind's contract):

    - ``monotone`` rules and STRUCTURAL ones (entries moved or copied: monotone): forward at the ends;
    - CONSTANT: forward (the output does not depend on the values);
    - AFFINE with one input whose range is not a point: forward(centre) ± ``abs_linear``(radius);
    - ACTIVATION with global slopes [a, b]: the ends when a ≥ 0 (nondecreasing) or b ≤ 0,
      else forward(centre) ± max(|a|, |b|)·radius (Lipschitz);
    - anything else: None (unknown)."""
    from lipgraph.certify.intervals import centre_radius
    lows = [None if r is None else r[0] for r in ranges]
    highs = [None if r is None else r[1] for r in ranges]
    if rule.monotone or rule.kind is Kind.STRUCTURAL:
        return _ends(rule, node, lows, highs)
    if rule.kind is Kind.CONSTANT:
        y = rule.forward(node, *lows)
        return tuple((v, v) for v in y) if isinstance(y, (tuple, list)) else (y, y)
    moving = [i for i, r in enumerate(ranges) if r is not None and not torch.equal(r[0], r[1])]
    if rule.kind is Kind.AFFINE and len(moving) == 1:
        c, r = centre_radius(*ranges[moving[0]])
        rad = rule.abs_linear(node, r)
        if rad is None:
            return None
        y = rule.forward(node, *[c if i == moving[0] else v for i, v in enumerate(lows)])
        return y - rad, y + rad
    if rule.kind is Kind.ACTIVATION and moving == [0]:
        lo, hi, _ = slope_range(rule, node)
        if np.all(np.asarray(lo) >= 0):
            return _ends(rule, node, lows, highs)
        if np.all(np.asarray(hi) <= 0):
            return _ends(rule, node, highs, lows)
        c, r = centre_radius(*ranges[0])
        y = rule.forward(node, c, *lows[1:])
        slope = float(max(np.max(np.abs(lo)), np.max(np.abs(hi))))
        return y - slope * r, y + slope * r
    return None


def has_own(rule: Rule, hook: str) -> bool:
    """Whether ``rule`` overrides ``hook`` of the base class."""
    return getattr(type(rule), hook, None) is not getattr(Rule, hook)


def require_constant(node: NodeView, *indices: int) -> None:
    """Raise RuleNotApplicable unless the given inputs are constants."""
    for i in indices:
        if node.has_input(i) and node.dynamic[i]:
            raise RuleNotApplicable(
                f"input {i} ('{node.inputs[i]}') of {node.op_type} is computed from the input; "
                "only a constant is supported there")


@dataclass(frozen=True)
class Key:
    domain: str
    op_type: str
    version: int


def normalise_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


class Registry:
    def __init__(self) -> None:
        self._rules: dict[Key, Rule] = {}

    def add(self, rule_obj: Rule, override: bool = False) -> None:
        for version in rule_obj.versions:
            key = Key(rule_obj.domain, rule_obj.op_type, version)
            if key in self._rules and not override:
                prev = self._rules[key]
                raise ValueError(
                    f"a rule for {key.domain or 'ai.onnx'}::{key.op_type} v{version} is already "
                    f"registered ({type(prev).__module__}.{type(prev).__name__}); "
                    "pass override=True to replace it")
            self._rules[key] = rule_obj

    def rules(self) -> list[tuple[Key, Rule]]:
        return sorted(self._rules.items(), key=lambda kv: (kv[0].domain, kv[0].op_type, kv[0].version))

    def find(self, op_type: str) -> list[Rule]:
        seen: dict[int, Rule] = {}
        for key, r in self.rules():
            if key.op_type.lower() == op_type.lower():
                seen.setdefault(id(r), r)
        return list(seen.values())

    def resolve(self, domain: str, op_type: str, opset: int) -> tuple[Rule | None, int | None]:
        """The rule for this op at this opset and the resolved since_version."""
        domain = normalise_domain(domain)
        try:
            version = onnx.defs.get_schema(op_type, max_inclusive_version=opset, domain=domain).since_version
        except onnx.defs.SchemaError:
            candidates = [k.version for k in self._rules if k.domain == domain and k.op_type == op_type
                          and k.version <= opset]
            version = max(candidates, default=None)
        if version is None:
            return None, None
        return self._rules.get(Key(domain, op_type, version)), version


REGISTRY = Registry()


#: The hooks each kind must define (design §2); checked when a rule is registered.
REQUIRED_HOOKS = {
    Kind.AFFINE: ("forward",),
    Kind.STRUCTURAL: ("forward",),
    Kind.ACTIVATION: ("forward", "slopes"),
    Kind.COMBINE: ("forward", "bounds"),
    Kind.NONLINEAR: ("forward", "bounds"),
    Kind.CONSTANT: ("forward",),
}


def missing_hooks(cls: type, kind: Kind) -> list[str]:
    """The hooks ``kind`` requires that ``cls`` leaves at the base class's default."""
    return [h for h in REQUIRED_HOOKS[kind] if getattr(cls, h, None) is getattr(Rule, h)]


def rule(op_type: str, *, versions: Iterable[int], kind: Kind, domain: str = "",
         override: bool = False, registry: Registry | None = None) -> Callable[[type], type]:
    """Class decorator registering a rule for ``op_type`` at the given since_versions.

    Raises ``TypeError`` naming the rule and the hook when a hook its kind requires is missing."""

    def deco(cls: type) -> type:
        missing = missing_hooks(cls, kind)
        if missing:
            raise TypeError(f"rule {cls.__name__} for {op_type} (kind {kind.value}) does not define "
                            f"{', '.join(missing)}, which every {kind.value} rule must")
        cls.kind = kind
        cls.op_type = op_type
        cls.domain = normalise_domain(domain)
        cls.versions = tuple(versions)
        (registry or REGISTRY).add(cls(), override=override)
        return cls

    return deco


_loaded_builtin = False


def load_builtin_rules() -> None:
    global _loaded_builtin
    if not _loaded_builtin:
        importlib.import_module("lipgraph.rules")
        _loaded_builtin = True


def load_plugins(modules: Iterable[str] = ()) -> None:
    """Import user rule modules: ``--plugin`` names and the ``lipgraph.rules`` entry points."""
    load_builtin_rules()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken third-party plugin is bad input, not a crash
            raise InputError(f"plugin entry point '{ep.name}' ({ep.value}) failed to load: {exc}") from exc
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise InputError(f"--plugin {name}: cannot import: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
