"""Helpers shared by the zoo's export scripts (numpy only, so every exporter venv can import it).

Reference files: ``<name>.npz`` beside ``<name>.onnx`` holds every graph input under its ONNX
input name and the exporting framework's own outputs as ``y`` (one output) or ``y0``, ``y1``, …
(several, in graph-output order).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ZOO = Path(__file__).resolve().parent
OPSET = 18
MAX_BYTES = 300_000


def save_reference(name: str, inputs: dict[str, np.ndarray], outputs) -> Path:
    """Write ``<name>.npz``: the inputs by name and the framework's outputs as y / y0, y1, …"""
    outputs = [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    if len(outputs) == 1:
        arrays["y"] = outputs[0]
    else:
        arrays.update({f"y{i}": o for i, o in enumerate(outputs)})
    path = ZOO / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def check_size(path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path.name}: {size} bytes, over the zoo's {MAX_BYTES}-byte budget")
    print(f"wrote {path.name} ({size} bytes)")
