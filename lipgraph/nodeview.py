"""NodeView: the read-only face of one ONNX node that rules see.

Rules know nothing about protobuf or networkx: they get attributes (schema defaults filled
in), the constant value of every input that is a constant, the shapes of all inputs and
outputs, and which inputs depend on the analysed input (``dynamic``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

Shape = tuple[int, ...]


@dataclass(frozen=True)
class NodeView:
    name: str
    op_type: str
    domain: str
    since_version: int
    attrs: Mapping[str, Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_shapes: tuple[Shape | None, ...]
    output_shapes: tuple[Shape | None, ...]
    dynamic: tuple[bool, ...]
    constants: Mapping[int, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.attrs.get(name)
        return default if value is None else value

    def const(self, i: int) -> np.ndarray | None:
        """The constant value of input ``i`` (read-only), or None if it is computed or absent."""
        return self.constants.get(i)

    def has_input(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] != ""

    @property
    def dynamic_indices(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.dynamic) if d)

    def numel_in(self, i: int) -> int:
        return int(np.prod(self.input_shapes[i]))

    def numel_out(self, i: int = 0) -> int:
        return int(np.prod(self.output_shapes[i]))


def readonly(array: np.ndarray) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


def attributes_with_defaults(node_proto, since_version: int) -> dict[str, Any]:
    """The node's attributes as Python values, with the schema's defaults filled in."""
    import onnx
    from onnx import helper, numpy_helper

    values: dict[str, Any] = {}
    try:
        schema = onnx.defs.get_schema(node_proto.op_type, max_inclusive_version=since_version,
                                      domain=node_proto.domain if node_proto.domain != "ai.onnx" else "")
        for name, attr in schema.attributes.items():
            if attr.default_value is not None and attr.default_value.name:
                values[name] = _attr_value(attr.default_value, helper, numpy_helper)
    except onnx.defs.SchemaError:
        pass
    for attr in node_proto.attribute:
        values[attr.name] = _attr_value(attr, helper, numpy_helper)
    return values


def _attr_value(attr, helper, numpy_helper) -> Any:
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    if hasattr(value, "data_type") and hasattr(value, "dims"):
        return readonly(numpy_helper.to_array(value))
    return value


def make_nodeview(node_proto, since_version: int, input_shapes, output_shapes, dynamic,
                  constants: Mapping[int, np.ndarray]) -> NodeView:
    return NodeView(
        name=node_proto.name,
        op_type=node_proto.op_type,
        domain=node_proto.domain if node_proto.domain != "ai.onnx" else "",
        since_version=since_version,
        attrs=MappingProxyType(attributes_with_defaults(node_proto, since_version)),
        inputs=tuple(node_proto.input),
        outputs=tuple(node_proto.output),
        input_shapes=tuple(tuple(s) if s is not None else None for s in input_shapes),
        output_shapes=tuple(tuple(s) if s is not None else None for s in output_shapes),
        dynamic=tuple(bool(d) for d in dynamic),
        constants=MappingProxyType({i: readonly(v) for i, v in constants.items()}),
    )
