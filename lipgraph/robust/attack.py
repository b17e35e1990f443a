"""An ℓ2 PGD attack on lipgraph's float64 torch execution of the model (fixed seed): the
empirical side of ``lipgraph certify``. An example it returns changes the class in that
execution; ``certify`` counts it only if onnxruntime agrees.
"""
from __future__ import annotations

import numpy as np
import torch

STEPS = 40


def pgd(fn, x: np.ndarray, label: int, eps: float, seed: int, box: tuple[torch.Tensor, torch.Tensor] | None = None,
        steps: int = STEPS, restarts: int = 2) -> np.ndarray | None:
    """An input within ℓ2 distance ``eps`` of ``x`` (and inside ``box``: per-element float64 ``lo``, ``hi``
    tensors of ``x``'s shape) that ``fn`` does not
    classify as ``label``, or None if the attack finds none. Ascends the largest wrong logit
    minus the right one by normalised gradient steps, projecting on the ball (then the box)."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(x, dtype=torch.float64)
    step = 2.5 * eps / steps
    for _ in range(restarts):
        delta = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        delta = _project(x0, delta * (eps / 2) / delta.norm().clamp_min(1e-300), eps, box)
        for _ in range(steps):
            delta.requires_grad_(True)
            logits = fn(x0 + delta).reshape(-1)
            if int(torch.argmax(logits)) != label:
                return (x0 + delta).detach().numpy()
            wrong = torch.cat([logits[:label], logits[label + 1:]])
            (grad,) = torch.autograd.grad(wrong.max() - logits[label], delta)
            with torch.no_grad():
                delta = _project(x0, delta + step * grad / grad.norm().clamp_min(1e-300), eps, box)
        with torch.no_grad():
            if int(torch.argmax(fn(x0 + delta).reshape(-1))) != label:
                return (x0 + delta).numpy()
    return None


def _project(x0: torch.Tensor, delta: torch.Tensor, eps: float, box) -> torch.Tensor:
    delta = delta.detach()
    norm = delta.norm()
    if norm > eps:
        delta = delta * (eps / norm)
    if box is not None:   # clipping into a box that holds x0 only shortens delta: still in the ball
        delta = torch.minimum(torch.maximum(x0 + delta, box[0]), box[1]) - x0
    return delta
