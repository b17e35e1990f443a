"""The analysed input, the inputs held fixed, and the pins of dynamic dims.

A model may have several graph inputs. One is analysed (``--input``, default the first); every
other one is held fixed (``--fix NAME=VALUE|FILE.npy``): float inputs default to zeros (with a
note), integer and bool inputs must be given. Fixed values become initializers of the model that
lipgraph analyses *and* onnxruntime runs, so whatever is computed from them alone folds to a
constant (a control-flow condition among it selects its branch: ``lipgraph.ir.controlflow``).

Dims: a dynamic leading dim of an input of rank ≥ 2 (the batch dim) is 1 unless pinned, with a
note. Any other dynamic dim must be pinned with ``--input-shape``; the error names each one and
fills in the sizes the model itself fixes (the weight of the op that first reads the input, or a
dim name shared with a pinned dim), leaving the others as ``<name>`` — never an invented size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from lipgraph.errors import InputError

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
               onnx.TensorProto.BFLOAT16}


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``NAME:d1,d2,…`` → {NAME: (d1, d2, …)}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise InputError(f"--input-shape '{spec}': expected NAME:d1,d2,… with positive integers")
        shapes[name] = shape
    return shapes


def parse_fixes(specs: list[str] | None) -> dict[str, str]:
    """``NAME=VALUE`` or ``NAME=FILE.npy`` → {NAME: VALUE-or-path} (resolved against the model by
    ``fix_inputs``, which knows each input's type and shape)."""
    fixes: dict[str, str] = {}
    for spec in specs or []:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise InputError(f"--fix '{spec}': expected NAME=VALUE or NAME=FILE.npy")
        if name in fixes:
            raise InputError(f"--fix {name} is given twice")
        fixes[name] = value
    return fixes


def analysed_input(inputs: list[str], name: str | None) -> str:
    if not inputs:
        raise InputError("the model has no input")
    if name is None:
        return inputs[0]
    if name not in inputs:
        raise InputError(f"unknown --input '{name}'; the model's inputs are: {', '.join(inputs)}")
    return name


def prepare_inputs(proto: onnx.ModelProto, inputs: list[str], analysed: str,
                   pinned: dict[str, tuple[int, ...]], fixes: dict[str, str | np.ndarray]) -> list[tuple]:
    """Pin every input's dims and turn every input but ``analysed`` into an initializer holding
    its fixed value (``proto`` is changed in place). Returns the notes (code, message)."""
    unknown = sorted((set(pinned) | set(fixes)) - set(inputs))
    if unknown:
        raise InputError(f"--input-shape/--fix name unknown input(s) {', '.join(unknown)}; "
                         f"inputs are: {', '.join(inputs)}")
    if analysed in fixes:
        raise InputError(f"--fix {analysed}: that is the analysed input (choose another with --input)")
    values = {name: _read_fix(name, spec) for name, spec in fixes.items()}
    by_name = {v.name: v for v in proto.graph.input}
    pins = dict(pinned)
    for name, value in values.items():   # an array given for an input with dynamic dims pins them
        dims = by_name[name].type.tensor_type.shape.dim
        if value.ndim and name not in pins and not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            pins[name] = value.shape
    notes = []
    for name in inputs:
        notes += _pin(proto, by_name[name], pins)
    for name in inputs:
        if name != analysed:
            notes += _fix(proto, by_name[name], values.get(name), fixes.get(name))
    return notes


def _read_fix(name: str, spec: str | np.ndarray) -> np.ndarray:
    if isinstance(spec, np.ndarray):   # the Python API's fix={name: array}
        return spec
    if spec.endswith(".npy"):
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"--fix {name}={spec}: no such file")
        try:
            value = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"--fix {name}={spec}: not a numpy .npy array ({exc})") from None
        return np.asarray(value)
    lowered = spec.strip().lower()
    if lowered in ("true", "false"):
        return np.asarray(lowered == "true")
    try:
        number = float(spec)
    except ValueError:
        raise InputError(f"--fix {name}={spec}: expected a number, true/false, or a .npy file") from None
    return np.asarray(int(number) if number.is_integer() and "." not in spec and "e" not in lowered else number)


def _pin(proto: onnx.ModelProto, value: onnx.ValueInfoProto, pins: dict[str, tuple[int, ...]]) -> list[tuple]:
    name = value.name
    tensor_type = value.type.tensor_type
    dims = tensor_type.shape.dim
    if name in pins:
        shape = pins[name]
        if tensor_type.HasField("shape") and len(shape) != len(dims):
            raise InputError(f"--input-shape {name}: rank {len(shape)} given, the model says {len(dims)}")
        for dim, size in zip(dims, shape):
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size:
                raise InputError(f"--input-shape {name}: dim {dim.dim_value} is fixed by the model, got {size}")
        _set_shape(value, shape)
        return []
    if not tensor_type.HasField("shape"):
        raise InputError(f"input '{name}' has no shape: pin it with --input-shape {name}:d1,d2,…")
    free = [k for k, d in enumerate(dims) if not (d.HasField("dim_value") and d.dim_value > 0)]
    notes = []
    if free and free[0] == 0 and len(dims) >= 2:
        label = f" ('{dims[0].dim_param}')" if dims[0].dim_param else ""
        notes.append(("batch-dim", f"input '{name}': its dynamic leading (batch) dim{label} is taken as 1 "
                      f"(pin another size with --input-shape {name}:…)"))
        free = free[1:]
    if free:
        raise InputError(_unpinned_message(proto, value, free, pins))
    _set_shape(value, tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims))
    return notes


def _set_shape(value: onnx.ValueInfoProto, shape: tuple[int, ...]) -> None:
    value.type.tensor_type.shape.Clear()
    for size in shape:
        value.type.tensor_type.shape.dim.add().dim_value = int(size)


def _unpinned_message(proto, value, free: list[int], pins) -> str:
    """Name each dynamic dim; suggest what the model says of it, a placeholder otherwise."""
    dims = value.type.tensor_type.shape.dim
    known = _sizes_the_model_fixes(proto, value.name, len(dims))
    named = {}
    for other in proto.graph.input:
        for d, size in zip(other.type.tensor_type.shape.dim, pins.get(other.name, ())):
            if d.dim_param:
                named[d.dim_param] = size
    parts, reasons = [], []
    for k, d in enumerate(dims):
        if k not in free:
            parts.append(str(d.dim_value) if d.dim_value > 0 else "1")
        elif k in known:
            parts.append(str(known[k][0]))
            reasons.append(f"dim {k} = {known[k][0]} from {known[k][1]}")
        elif d.dim_param and d.dim_param in named:
            parts.append(str(named[d.dim_param]))
            reasons.append(f"dim {k} = {named[d.dim_param]} as '{d.dim_param}' is pinned elsewhere")
        else:
            parts.append(f"<{d.dim_param or f'dim{k}'}>")
    listed = ", ".join(f"{k}" + (f" ('{dims[k].dim_param}')" if dims[k].dim_param else "") for k in free)
    why = f" ({'; '.join(reasons)})" if reasons else ""
    return (f"input '{value.name}' has dynamic dim{'s' if len(free) > 1 else ''} {listed}: pin "
            f"{'them' if len(free) > 1 else 'it'} with --input-shape {value.name}:{','.join(parts)}{why}")


def _sizes_the_model_fixes(proto: onnx.ModelProto, name: str, rank: int) -> dict[int, tuple[int, str]]:
    """Dims of input ``name`` that the weights of the ops reading it fix: {dim: (size, where)}."""
    weights = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    out: dict[int, tuple[int, str]] = {}
    for node in proto.graph.node:
        if not node.input or node.input[0] != name or len(node.input) < 2 or node.input[1] not in weights:
            continue
        w = weights[node.input[1]]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        where = f"the weight of {node.op_type} '{node.name or node.output[0]}'"
        if node.op_type == "MatMul" and len(w) >= 2 and rank >= 1:
            out.setdefault(rank - 1, (w[-2], where))
        elif node.op_type == "Gemm" and len(w) == 2 and rank == 2:
            out.setdefault(0 if attrs.get("transA", 0) else 1, (w[1] if attrs.get("transB", 0) else w[0], where))
        elif node.op_type == "Conv" and len(w) >= 3 and rank == len(w):
            out.setdefault(1, (w[1] * int(attrs.get("group", 1)), where))
        elif node.op_type == "ConvTranspose" and len(w) >= 3 and rank == len(w):
            out.setdefault(1, (w[0], where))
    return out


def _fix(proto: onnx.ModelProto, value: onnx.ValueInfoProto, given: np.ndarray | None, spec: str | None) -> list[tuple]:
    name = value.name
    elem = value.type.tensor_type.elem_type
    shape = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
    notes = []
    if given is None:
        if elem not in FLOAT_TYPES:
            raise InputError(f"input '{name}' ({np.dtype(dtype).name}) is not analysed and has no default: "
                             f"give its value with --fix {name}=VALUE or --fix {name}=FILE.npy")
        array = np.zeros(shape, dtype=dtype)
        notes.append(("input-fixed", f"input '{name}' is not analysed: held at zeros (set it with --fix {name}=…)"))
    else:
        if given.ndim and given.shape != shape:
            raise InputError(f"--fix {name}: shape {list(given.shape)} given, the input's is {list(shape)}")
        array = np.broadcast_to(given, shape).astype(dtype)
        if not np.array_equal(array.astype(np.float64), np.broadcast_to(given, shape).astype(np.float64),
                              equal_nan=True):
            raise InputError(f"--fix {name}={spec}: not representable as the input's type {np.dtype(dtype).name}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InputError(f"--fix {name}={spec}: contains NaN or ±inf")
        notes.append(("input-fixed", f"input '{name}' is not analysed: held at the value given by --fix"))
    proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    position = next(k for k, v in enumerate(proto.graph.input) if v.name == name)
    del proto.graph.input[position]
    proto.ir_version = max(proto.ir_version, 4)   # IR ≥ 4: initializers need not be graph inputs
    return notes
