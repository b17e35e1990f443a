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

import onnx.defs

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
    """

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

    @property
    def origin(self) -> str:
        module = type(self).__module__
        return "builtin" if module.startswith("lipgraph.rules") else module

    @property
    def doc(self) -> str:
        return inspect.cleandoc(type(self).__doc__ or "(no documentation)")


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
